"""The lean JSON task routes answer every bad request exactly as the FastAPI declarations they shadow."""

from __future__ import annotations

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from service.errors import install_error_handlers
from service.routes import typed

BAD_BODIES = [
    b"",
    b"{",
    b"[" * 5000 + b"]" * 5000,
    b"null",
    b'"a sentence"',
    b"[1, 2]",
    b"\xff\xfe\x00",
    b"{}",
    b'{"text": 5}',
    b'{"text": "fine", "texts": ["both"]}',
    b'{"texts": []}',
    b'{"text": ""}',
    b'{"series": [1, 2]}',
    b'{"series": "12"}',
    b'{"series": [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24], "horizon": -1}',
    b'{"series": [1, 2, 3], "period": "weekly", "unknown": true}',
]
CONTENT_TYPES = ["application/json", "application/json; charset=utf-8", None, "text/plain"]


def app_with(lean: bool):
    """The FastAPI declarations alone, or with the lean task routes in front of them as the service has them."""
    app = FastAPI()
    install_error_handlers(app)
    app.include_router(typed.router)
    return typed.TaskRoutes(app, typed.TASK_ROUTES) if lean else app


@pytest.fixture(scope="module")
def clients():
    with TestClient(app_with(lean=True)) as lean, TestClient(app_with(lean=False)) as declared:
        yield lean, declared


@pytest.mark.parametrize("path", ["/sentiment", "/predict-sequence"])
def test_bad_requests_get_the_same_answer(clients, path):
    lean, declared = clients
    for body in BAD_BODIES:
        for content_type in CONTENT_TYPES:
            headers = {"content-type": content_type} if content_type else {}
            ours, theirs = lean.post(path, content=body, headers=headers), declared.post(path, content=body, headers=headers)
            assert ours.status_code >= 400, (path, body[:40], content_type)
            assert (ours.status_code, ours.json()) == (theirs.status_code, theirs.json()), (path, body[:40], content_type)


def test_other_methods_still_get_405(clients):
    lean, _ = clients
    response = lean.get("/sentiment")
    assert response.status_code == 405 and response.json()["error"]["code"] == "method_not_allowed"
