"""The demo page at GET /: static HTML, one script and one stylesheet, served with a strict CSP."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse
from starlette.exceptions import HTTPException

STATIC = Path(__file__).resolve().parent.parent / "static" / "demo"
ASSETS = {"demo.js": "text/javascript; charset=utf-8", "demo.css": "text/css; charset=utf-8"}

# No inline script or style anywhere on the page, so the policy can forbid both.
CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data: blob:",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    )
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-cache",
}

router = APIRouter(include_in_schema=False)


def page_file(name: str, media_type: str) -> FileResponse:
    return FileResponse(STATIC / name, media_type=media_type, headers=SECURITY_HEADERS)


@router.get("/")
async def demo_page() -> FileResponse:
    return page_file("index.html", "text/html; charset=utf-8")


@router.get("/static/demo/{name}")
async def demo_asset(name: str) -> FileResponse:
    if name not in ASSETS:
        raise HTTPException(404, f"no demo asset named {name!r}")
    return page_file(name, ASSETS[name])
