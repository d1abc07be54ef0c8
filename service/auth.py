"""Optional API keys: `Authorization: Bearer <key>`, compared in constant time, never logged.

- Inference and model metadata need an inference key (or an admin key) once any inference key is set.
- Model control (/v2/repository/...) needs an admin key, and is off until one is set.
- Health and /metrics stay open unless `protect_health` is set; the demo page and the API docs hold no
  data and stay open (the page's calls then need a key like any other client's).
Missing key: 401 with `WWW-Authenticate: Bearer`; a key that does not match: 403.
"""

from __future__ import annotations

import hmac
import json
from pathlib import Path

from service.errors import error_body

HEALTH_PATHS = frozenset({"/health", "/health/live", "/health/ready", "/v2/health/live", "/v2/health/ready", "/metrics"})
PUBLIC_PATHS = frozenset({"/", "/docs", "/openapi.json", "/favicon.ico"})
PUBLIC_PREFIXES = ("/static/",)
ADMIN_PREFIX = "/v2/repository"


class KeyFileError(ValueError):
    """A configured key file cannot be read."""


def read_keys(keys: list[str], key_file: Path | None) -> tuple[bytes, ...]:
    """Keys from settings plus one per line of the file (blank lines and # comments skipped)."""
    found = [k.strip() for k in keys if k.strip()]
    if key_file is not None:
        try:
            lines = key_file.read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise KeyFileError(f"cannot read key file {key_file}: {exc.strerror or exc}") from None
        found += [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    return tuple(k.encode("utf-8") for k in found)


def matches(given: bytes, keys: tuple[bytes, ...]) -> bool:
    """Compare against every key, each in constant time, without stopping at the first match."""
    matched = False
    for key in keys:
        matched |= hmac.compare_digest(given, key)
    return matched


class ApiKeys:
    """ASGI middleware enforcing the rules above."""

    def __init__(self, app, inference_keys: tuple[bytes, ...], admin_keys: tuple[bytes, ...], protect_health: bool):
        self.app = app
        self.inference_keys = inference_keys
        self.admin_keys = admin_keys
        self.protect_health = protect_health

    def _required(self, path: str) -> tuple[bytes, ...] | None:
        """The keys that open this path; None when it is open; () when nothing can open it."""
        if path.startswith(ADMIN_PREFIX):
            return self.admin_keys
        if path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES):
            return None
        any_key = self.inference_keys + self.admin_keys
        if path in HEALTH_PATHS:
            return (any_key or None) if self.protect_health else None
        return any_key if self.inference_keys else None

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope.get("method") == "OPTIONS":  # CORS pre-flight carries no key
            return await self.app(scope, receive, send)
        path = scope.get("path", "")
        keys = self._required(path)
        if keys is None:
            return await self.app(scope, receive, send)
        if not keys:
            return await self._refuse(send, path, 403, "forbidden", "model control is off: the server has no admin key")
        scheme, _, given = dict(scope["headers"]).get(b"authorization", b"").decode("latin-1").partition(" ")
        if scheme.lower() != "bearer" or not given.strip():
            return await self._refuse(send, path, 401, "unauthorized", "this endpoint needs 'Authorization: Bearer <key>'")
        if not matches(given.strip().encode("latin-1"), keys):
            return await self._refuse(send, path, 403, "forbidden", "the key is not valid for this endpoint")
        return await self.app(scope, receive, send)

    @staticmethod
    async def _refuse(send, path: str, status: int, code: str, message: str) -> None:
        # The Open Inference Protocol's routes answer in its own shape, {"error": "..."}.
        payload = {"error": message} if path.startswith("/v2") else error_body(code, message)
        body = json.dumps(payload).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        if status == 401:
            headers.append((b"www-authenticate", b"Bearer"))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
