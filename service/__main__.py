"""python -m service [--host ...] [--port ...] [--model-repository ...]; see --help."""

from __future__ import annotations

import importlib.util
import sys
import threading

import uvicorn

from service.app import create_app
from service.auth import KeyFileError, read_keys
from service.endpoints import endpoint_table
from service.http_protocol import ConnectionLimits, IncompatibleUvicorn, check_uvicorn_protocol, service_protocol
from service.logs import configure_logging
from service.registry import ModelRegistry, RepositoryError
from service.runtime import ProviderUnavailable, plan_providers
from service.settings import Settings
from service.tracing import TracingUnavailable


def preflight(settings: Settings) -> str | None:
    """The start-up checks of the lifespan, run first so that a user's mistake reads as one line."""
    try:
        endpoint_table(ModelRegistry(settings, plan_providers(settings), cpus=1), settings.routes)
        read_keys(settings.api_keys, settings.api_keys_file)
        read_keys(settings.admin_keys, settings.admin_keys_file)
    except (ProviderUnavailable, RepositoryError, KeyFileError) as exc:
        return str(exc)
    return None


class DrainingServer(uvicorn.Server):
    """On SIGTERM or SIGINT readiness turns 503 at once, while requests are still taken for `unready_s`
    (load balancers stop sending meanwhile, and requests already on the wire are read); then uvicorn stops
    accepting connections, lets every accepted request finish (up to `drain_s`) and runs the lifespan
    shutdown. A second signal skips the wait."""

    def __init__(self, config: uvicorn.Config, unready_s: float):
        super().__init__(config)
        self.unready_s = unready_s
        self.draining = False

    def handle_exit(self, sig, frame) -> None:
        if self.draining or self.unready_s <= 0:
            return super().handle_exit(sig, frame)
        self.draining = True
        self.config.app.state.draining = True
        timer = threading.Timer(self.unready_s, super().handle_exit, (sig, frame))
        timer.daemon = True
        timer.start()


def http_protocol(settings: Settings):
    """The service's httptools protocol (bounds and timeouts) unless h11 is asked for or httptools is missing."""
    if settings.http == "h11" or importlib.util.find_spec("httptools") is None:
        return "h11"
    check_uvicorn_protocol()
    return service_protocol(
        ConnectionLimits(
            max_head_bytes=settings.max_header_kb * 1024,
            idle_s=settings.idle_timeout_s,
            head_s=settings.head_timeout_s,
            body_s=settings.body_timeout_s,
            max_connections=settings.max_connections,
        )
    )


def main(argv: list[str] | None = None) -> int:
    settings = Settings(_cli_parse_args=sys.argv[1:] if argv is None else argv)
    configure_logging(settings.log_level, settings.log_format)
    problem = preflight(settings)
    try:
        protocol = http_protocol(settings)
        app = create_app(settings)
    except (IncompatibleUvicorn, TracingUnavailable) as exc:
        problem = problem or str(exc)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        # Access lines are logged at info: above it uvicorn would still format each one, to drop it.
        access_log=settings.log_level in ("debug", "info"),
        http=protocol,
        h11_max_incomplete_event_size=settings.max_header_kb * 1024,
        timeout_keep_alive=settings.idle_timeout_s,
        loop=settings.loop,
        timeout_graceful_shutdown=settings.drain_s,
        log_config=None,  # configure_logging: text or JSON lines, with request ids
    )
    server = DrainingServer(config, settings.unready_s)
    server.run()
    # uvicorn returns when start-up failed (the lifespan raised): say so with a non-zero exit.
    return 0 if server.started else 1


if __name__ == "__main__":
    sys.exit(main())
