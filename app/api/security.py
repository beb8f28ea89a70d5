"""The optional API key and the admin key: `Authorization: Bearer KEY` or `X-API-Key: KEY`, compared in
constant time, checked by an ASGI middleware before any byte of the body is read.

Which key a route needs is its declared policy (app/api/policy.py, `@policy(Key.API, ...)` where the route is
defined), resolved to the configured secrets once at app build; KeyGuard reads the rule of the route the router
matched, never the URL, so a root path or a mount cannot move a route out from under its key. Keyed with
LEARNSERVE_API_KEY: prediction, model metadata and v2 model routes. Never keyed: health, metrics, docs, the demo
page (probes and Prometheus scrapers cannot send secrets, and none of them runs a model) and v2 readiness (which
then names no other model). `/admin/*` needs LEARNSERVE_ADMIN_KEY and does not exist without it.
The OpenAPI document declares a key on exactly the routes that need one, and only when one is configured.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

from fastapi import FastAPI
from fastapi.routing import APIRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from app.api.errors import send_error
from app.api.policy import Key, RoutePolicies, Shape, rule_of

HINT = "send `Authorization: Bearer KEY` or `X-API-Key: KEY`"


def same_secret(given: str, expected: str) -> bool:
    """Constant time, and hashing first hides the expected key's length too."""
    return hmac.compare_digest(
        hashlib.sha256(given.encode()).digest(), hashlib.sha256(expected.encode()).digest()
    )


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
    """Refuses with 401, before the app reads a byte, a request whose route needs a key it did not send."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        rule = rule_of(scope) if scope["type"] == "http" and scope["method"] != "OPTIONS" else None
        if rule is not None and rule.key is not None:
            given = key_of(scope["headers"])
            if given is None or not same_secret(given, rule.key):
                what = "admin key" if rule.key_kind is Key.ADMIN else "API key"
                detail = (
                    f"This endpoint needs an {what}: {HINT}."
                    if given is None
                    else f"The {what} is not valid."
                )
                await send_error(send, scope, 401, "unauthorized", detail, {"WWW-Authenticate": "Bearer"})
                return
        await self.app(scope, receive, send)


SCHEMES = {Key.API: ("HTTPBearer", "APIKeyHeader"), Key.ADMIN: ("AdminBearer", "AdminHeader")}
SETTING = {Key.API: "LEARNSERVE_API_KEY", Key.ADMIN: "LEARNSERVE_ADMIN_KEY"}


def document_keys(app: FastAPI, policies: RoutePolicies) -> None:
    """Declare in the OpenAPI document (Swagger's Authorize button) the key each keyed route needs, with its 401."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = build()
        used: set[Key] = set()
        for route, rule in policies.table:
            api = route.original_route
            if not (isinstance(api, APIRoute) and api.include_in_schema and rule.key is not None):
                continue
            used.add(rule.key_kind)
            bearer, header = SCHEMES[rule.key_kind]
            error = "ErrorV2" if rule.shape is Shape.V2 else "ErrorResponse"
            for method in api.methods or ():
                operation = schema["paths"][route.path_format][method.lower()]
                operation["security"] = [{bearer: []}, {header: []}]
                operation["responses"]["401"] = {
                    "description": f"missing or wrong key ({SETTING[rule.key_kind]})",
                    "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{error}"}}},
                }
        for kind in used:
            schemes = schema.setdefault("components", {}).setdefault("securitySchemes", {})
            bearer, header = SCHEMES[kind]
            schemes[bearer] = {"type": "http", "scheme": "bearer",
                               "description": f"`Authorization: Bearer KEY` ({SETTING[kind]})"}  # fmt: skip
            schemes[header] = {"type": "apiKey", "in": "header", "name": "X-API-Key",
                               "description": f"`X-API-Key: KEY` ({SETTING[kind]})"}  # fmt: skip
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
