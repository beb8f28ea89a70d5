"""The optional API key and the admin key: `Authorization: Bearer KEY` or `X-API-Key: KEY`, compared in
constant time, checked by an ASGI middleware before any byte of the body is read.

Guarded with LEARNSERVE_API_KEY: prediction, model metadata and v2 model routes. Never guarded: health, metrics,
docs and the demo page (probes and Prometheus scrapers cannot send secrets, and none of them runs a model or
reveals one) and v2 readiness. `/admin/*` needs LEARNSERVE_ADMIN_KEY and does not exist without it.
The OpenAPI document declares a key only when one is configured (`docs_dependencies`).
"""

from __future__ import annotations

import hashlib
import hmac

from fastapi import Depends
from fastapi.params import Depends as DependsParam
from fastapi.security import APIKeyHeader, HTTPBearer
from starlette.types import ASGIApp, Receive, Scope, Send

from app.api.errors import send_error

HINT = "send `Authorization: Bearer KEY` or `X-API-Key: KEY`"


def same_secret(given: str, expected: str) -> bool:
    """Constant time, and hashing first hides the expected key's length too."""
    return hmac.compare_digest(
        hashlib.sha256(given.encode()).digest(), hashlib.sha256(expected.encode()).digest()
    )


def needs_api_key(path: str) -> bool:
    if path in ("/predict", "/predict/batch", "/metadata", "/models") or path.startswith("/models/"):
        return True
    return path.startswith("/v2/models/") and not path.endswith("/ready")


def key_of(headers: list[tuple[bytes, bytes]]) -> str | None:
    """The key a request sends: a Bearer token, else X-API-Key."""
    bearer = api_key = None
    for name, value in headers:
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                bearer = token.strip()
        elif name == b"x-api-key":
            api_key = value.decode("latin-1")
    return bearer or api_key or None


class KeyGuard:
    def __init__(self, app: ASGIApp, api_key: str | None, admin_key: str | None) -> None:
        self.app = app
        self.api_key = api_key
        self.admin_key = admin_key

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] != "OPTIONS":
            path: str = scope["path"]
            expected = (
                self.admin_key
                if path.startswith("/admin/")
                else self.api_key
                if needs_api_key(path)
                else None
            )
            if expected is not None:
                given = key_of(scope["headers"])
                if given is None or not same_secret(given, expected):
                    what = "admin key" if expected is self.admin_key else "API key"
                    detail = (
                        f"This endpoint needs an {what}: {HINT}."
                        if given is None
                        else f"The {what} is not valid."
                    )
                    await send_error(send, path, 401, "unauthorized", detail, {"WWW-Authenticate": "Bearer"})
                    return
        await self.app(scope, receive, send)


def docs_dependencies(admin: bool = False) -> list[DependsParam]:
    """Dependencies that only document a key in OpenAPI (KeyGuard enforces it): Swagger's Authorize button."""
    which = "LEARNSERVE_ADMIN_KEY" if admin else "LEARNSERVE_API_KEY"
    bearer = HTTPBearer(
        auto_error=False, scheme_name="AdminBearer" if admin else None,
        description=f"`Authorization: Bearer KEY` ({which})",
    )  # fmt: skip
    header = APIKeyHeader(
        name="X-API-Key", auto_error=False, scheme_name="AdminHeader" if admin else None,
        description=f"`X-API-Key: KEY` ({which})",
    )  # fmt: skip
    return [Depends(bearer), Depends(header)]
