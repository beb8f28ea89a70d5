"""GET /: a one-page demo (plain HTML, CSS and JS from app/static, no build step, nothing from a CDN).

The page talks to the same /metadata and /predict as any client. Its Content-Security-Policy allows only this
server's own scripts, styles and API, so even a bug that let text through as markup could not run a script.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

from app.api.policy import OPEN, Key, declare, policy

STATIC = Path(__file__).resolve().parents[2] / "static"

PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}

router = APIRouter(include_in_schema=False)


@router.get("/")
@policy(Key.NONE)
async def demo_page() -> FileResponse:
    return FileResponse(STATIC / "index.html", media_type="text/html; charset=utf-8", headers=PAGE_HEADERS)


def static_files() -> StaticFiles:
    return declare(StaticFiles(directory=STATIC), OPEN)
