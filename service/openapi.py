"""The OpenAPI contract: FastAPI's for its own routes (health, models, V2, docs), plus one operation per
row of the endpoint table, generated from the task's request and response models."""

from __future__ import annotations

from typing import Any, Iterable

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic.json_schema import models_json_schema

from service.endpoints import TaskEndpoint
from service.routes.typed import ERROR_STATUSES, MULTIPART, ErrorResponse

REF = "#/components/schemas/{model}"


def task_operations(endpoints: Iterable[TaskEndpoint]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(paths, component schemas) for the task endpoints."""
    endpoints = list(endpoints)
    keys = [(e.request_model, "validation") for e in endpoints if e.media_type != MULTIPART]
    keys += [(e.response_model, "serialization") for e in endpoints] + [(ErrorResponse, "serialization")]
    refs, top = models_json_schema(list(dict.fromkeys(keys)), ref_template=REF)
    error = {"content": {"application/json": {"schema": refs[(ErrorResponse, "serialization")]}}}
    paths: dict[str, Any] = {}
    for endpoint in endpoints:
        operation: dict[str, Any] = {
            "tags": ["tasks"],
            "summary": f"{endpoint.task.summary or endpoint.task.kind} ({endpoint.model})",
            "operationId": f"{endpoint.path.strip('/').replace('/', '_').replace('-', '_')}_post",
            "responses": {
                "200": {"description": "Successful Response",
                        "content": {"application/json": {"schema": refs[(endpoint.response_model, "serialization")]}}},
                **{str(status): {"description": description, **error} for status, description in ERROR_STATUSES.items()},
            },
        }
        if endpoint.media_type == MULTIPART:
            body, parameters = multipart_body(endpoint)
            operation["requestBody"], operation["parameters"] = body, parameters
        else:
            operation["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": refs[(endpoint.request_model, "validation")]}},
            }
        paths[endpoint.path] = {"post": operation}
    return paths, top.get("$defs", {})


def multipart_body(endpoint: TaskEndpoint) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A multipart request model as a form (bytes fields as files) and its query parameters."""
    schema = endpoint.request_model.model_json_schema(by_alias=True)
    query = set(endpoint.task.http.query)
    properties, required = {}, []
    parameters = []
    for name, field in schema.get("properties", {}).items():
        if name in query:
            parameters.append({"name": name, "in": "query", "required": name in schema.get("required", []), "schema": field})
            continue
        if field.get("format") == "binary" or field.get("type") == "string" and "contentMediaType" in field:
            field = {"type": "string", "format": "binary", **({"description": field["description"]} if "description" in field else {})}
        properties[name] = field
        if name in schema.get("required", []):
            required.append(name)
    form = {"type": "object", "properties": properties, "required": required}
    return {"required": True, "content": {MULTIPART: {"schema": form}}}, parameters


def install_openapi(app: FastAPI) -> None:
    """/openapi.json: made on first request, once the endpoint table exists (the lifespan makes it)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, summary=app.summary, routes=app.routes)
            paths, schemas = task_operations(getattr(app.state, "endpoints", {}).values())
            schema["paths"] = {**paths, **schema.get("paths", {})}
            schema.setdefault("components", {}).setdefault("schemas", {}).update(schemas)
            if getattr(app.state, "endpoints", None) is None:
                return schema  # not kept: the table is not there yet
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
