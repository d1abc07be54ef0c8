"""The endpoint table: which typed REST path serves which model, with the task's request and response.

It is made from the model repository's manifests (each model's `serving.route`) and the `--routes`
setting, once the registry has read them. The lean routes (service/routes/typed.py), their OpenAPI
entries (service/openapi.py) and the request metrics' model label all come from this one table.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from pydantic import BaseModel

from service.registry import ModelRegistry, RepositoryError, task_class
from service.tasks.base import Task

log = logging.getLogger("service.endpoints")


@dataclass(frozen=True)
class TaskEndpoint:
    path: str  # POST
    model: str  # the model's name; the newest ready version serves
    task: type[Task]

    @property
    def request_model(self) -> type[BaseModel]:
        return self.task.request_model

    @property
    def response_model(self) -> type[BaseModel]:
        return self.task.response_model

    @property
    def media_type(self) -> str:
        return self.task.http.media_type


def endpoint_table(registry: ModelRegistry, routes: dict[str, str]) -> dict[str, TaskEndpoint]:
    """path -> endpoint: every model's route from the newest manifest that names one, then `routes`
    (path -> model) on top. Two models claiming one path, or a route to a model the repository lacks,
    stop start-up: a misconfigured table is no state to serve in."""
    claimed: dict[str, str] = {}
    kinds: dict[str, str] = {}
    for (name, _), entry in sorted(registry.entries.items(), key=lambda item: int(item[0][1])):
        manifest = entry.manifest
        if manifest is None:
            continue
        kinds[name] = manifest.task
        if manifest.serving.route:
            owner = claimed.get(manifest.serving.route)
            if owner is not None and owner != name:
                raise RepositoryError(f"{name} and {owner} both declare the route {manifest.serving.route}")
            claimed[manifest.serving.route] = name
    for path, name in routes.items():
        if not path.startswith("/") or path.startswith("/v2"):
            raise RepositoryError(f"route {path!r} must start with / and stay outside /v2")
        if name not in kinds:
            raise RepositoryError(f"route {path} names {name!r}, which is not in the model repository")
        claimed[path] = name
    table = {}
    for path, name in sorted(claimed.items()):
        try:
            table[path] = TaskEndpoint(path, name, task_class(kinds[name]))
        except ValueError as exc:  # a task kind no module serves: the model fails to load, on its own
            log.warning("no endpoint for %s: %s", name, exc)
    return table
