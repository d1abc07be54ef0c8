"""python -m service [--host ...] [--port ...] [--model-repository ...]; see --help."""

from __future__ import annotations

import sys

from service.app import create_app
from service.auth import KeyFileError, read_keys
from service.endpoints import endpoint_table
from service.http_protocol import IncompatibleUvicorn
from service.logs import configure_logging
from service.registry import ModelRegistry, RepositoryError
from service.runtime import ProviderUnavailable, plan_providers
from service.server import http_protocol, serve
from service.settings import Settings
from service.tracing import TracingUnavailable
from service.workers import default_workers, serve_workers


def preflight(settings: Settings) -> str | None:
    """The start-up checks of the lifespan, run first so that a user's mistake reads as one line."""
    try:
        endpoint_table(ModelRegistry(settings, plan_providers(settings), cpus=1), settings.routes)
        read_keys(settings.api_keys, settings.api_keys_file)
        read_keys(settings.admin_keys, settings.admin_keys_file)
        http_protocol(settings)
        create_app(settings)  # --otel without its packages, say
    except (ProviderUnavailable, RepositoryError, KeyFileError, IncompatibleUvicorn, TracingUnavailable) as exc:
        return str(exc)
    return None


def main(argv: list[str] | None = None) -> int:
    settings = Settings(_cli_parse_args=sys.argv[1:] if argv is None else argv)
    configure_logging(settings.log_level, settings.log_format)
    problem = preflight(settings)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    if not settings.workers:
        settings = settings.model_copy(update={"workers": default_workers(plan_providers(settings))})
    if settings.workers > 1:
        return serve_workers(settings)
    # uvicorn returns when start-up failed (the lifespan raised): say so with a non-zero exit.
    return 1 if serve(settings) else 0


if __name__ == "__main__":
    sys.exit(main())
