"""python -m service [--host ...] [--port ...] [--model-repository ...]; see --help."""

from __future__ import annotations

import logging
import sys

import uvicorn

from service.app import create_app
from service.registry import ModelRegistry, RepositoryError
from service.runtime import ProviderUnavailable, plan_providers
from service.settings import Settings


def preflight(settings: Settings) -> str | None:
    """The start-up checks of the lifespan, run first so that a user's mistake reads as one line."""
    try:
        ModelRegistry(settings, plan_providers(settings), cpus=1)
    except (ProviderUnavailable, RepositoryError) as exc:
        return str(exc)
    return None


def main(argv: list[str] | None = None) -> int:
    settings = Settings(_cli_parse_args=sys.argv[1:] if argv is None else argv)
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    problem = preflight(settings)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    config = uvicorn.Config(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        http=settings.http,
        loop=settings.loop,
        timeout_graceful_shutdown=10,
    )
    server = uvicorn.Server(config)
    server.run()
    # uvicorn returns when start-up failed (the lifespan raised): say so with a non-zero exit.
    return 0 if server.started else 1


if __name__ == "__main__":
    sys.exit(main())
