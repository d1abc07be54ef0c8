"""One serving process: uvicorn with the service's HTTP protocol, and a drain on SIGTERM."""

from __future__ import annotations

import importlib.util
import threading

import uvicorn

from service.app import create_app
from service.http_protocol import ConnectionLimits, check_uvicorn_protocol, service_protocol
from service.settings import Settings

STARTUP_FAILED = 3  # a process's exit status when its lifespan start-up failed


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


def uvicorn_config(settings: Settings, app) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        # Access lines are logged at info: above it uvicorn would still format each one, to drop it.
        access_log=settings.log_level in ("debug", "info"),
        http=http_protocol(settings),
        h11_max_incomplete_event_size=settings.max_header_kb * 1024,
        timeout_keep_alive=settings.idle_timeout_s,
        loop=settings.loop,
        timeout_graceful_shutdown=settings.drain_s,
        log_config=None,  # configure_logging: text or JSON lines, with request ids
    )


def serve(settings: Settings, sockets=None) -> int:
    """Serve until signalled; 0, or STARTUP_FAILED when the lifespan start-up failed."""
    server = DrainingServer(uvicorn_config(settings, create_app(settings)), settings.unready_s)
    server.run(sockets=sockets)
    return 0 if server.started else STARTUP_FAILED
