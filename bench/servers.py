"""Start a server on a free loopback port, wait until it answers, stop it afterwards."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def running(command: list[str], log: Path, timeout: float = 300.0, cwd: Path = ROOT, env: dict | None = None):
    """Yield the base URL of `command` (which takes --port), run from `cwd`, once its /health answers 200."""
    port = free_port()
    if command[:2] == ["-m", "service"] and "--grpc-port" not in command and Path(cwd).resolve() == ROOT:
        # Servers side by side would all want gRPC's default port (another checkout's may not know the flag).
        command = [*command, "--grpc-port", "-1"]
    with log.open("w") as sink:
        process = subprocess.Popen(
            [sys.executable, *command, "--port", str(port)], cwd=cwd, stdout=sink, stderr=subprocess.STDOUT, env=env
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"{' '.join(command)} exited with {process.returncode}:\n{log.read_text()[-3000:]}")
            try:
                if httpx.get(url + "/health", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{' '.join(command)} did not become healthy:\n{log.read_text()[-3000:]}")
            time.sleep(0.2)
        yield url
    finally:
        stop(process)


def stop(process: subprocess.Popen, timeout: float = 30.0) -> None:
    """SIGTERM, then SIGKILL if it has not exited within `timeout` seconds."""
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
