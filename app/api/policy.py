"""Per-route policy, declared where each route is defined and compiled once when the app is built.

A route states, with the `@policy(...)` decorator on its endpoint (or `declare(app, ...)` on a mounted app):
which key it needs (none, the API key, the admin key), which body limit applies (none, a single upload, a batch or
request, an Open Inference Protocol JSON body), which error shape it answers (ours `{"detail","code"}` or the v2
protocol's `{"error"}`); its metrics name is its route template. `RoutePolicies.compile` walks `app.routes` once,
resolves those declarations against the settings (the keys and limits configured), and refuses to build an app
with a route that declares nothing.

Per request, `PolicyMiddleware` (outermost) finds the route the router will pick, with Starlette's own
`route.matches(scope)`, which strips the root path exactly as the router does (`--root-path`, or the app mounted
under another), and puts its rule in the scope. KeyGuard, BodyGuard, the error handlers and HttpMetrics read that
rule: none of them looks at the URL. A path no route matches has no rule: the router answers 404.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from enum import Enum
from typing import Any, TypeVar

from fastapi.routing import RouteContext, iter_route_contexts
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Receive, Scope, Send

from app.config import Settings

T = TypeVar("T")
ATTRIBUTE = "__learnserve_policy__"
SCOPE_KEY = "learnserve.rule"
UNMATCHED = "unmatched"  # the metrics name of a request no route matches


class Key(Enum):
    NONE = "none"
    API = "api"  # LEARNSERVE_API_KEY, when one is configured
    ADMIN = "admin"  # LEARNSERVE_ADMIN_KEY; such routes exist only when it is configured


class Body(Enum):
    NONE = "none"  # the route reads no body
    SINGLE = "single"  # one upload: MAX_UPLOAD_BYTES + room for multipart headers
    REQUEST = "request"  # several uploads: MAX_REQUEST_BYTES
    V2_JSON = "v2_json"  # an Open Inference Protocol JSON body: MAX_V2_REQUEST_BYTES
    SMALL_JSON = "small_json"  # a few fields of JSON (POST /feedback): SMALL_JSON_BYTES


class Shape(Enum):
    DEFAULT = "default"  # {"detail": ..., "code": ...}
    V2 = "v2"  # {"error": ...}


@dataclass(frozen=True, slots=True)
class Policy:
    key: Key
    body: Body = Body.NONE
    shape: Shape = Shape.DEFAULT


OPEN = Policy(Key.NONE)
V2_OPEN = Policy(Key.NONE, shape=Shape.V2)


def policy(key: Key, body: Body = Body.NONE, shape: Shape = Shape.DEFAULT) -> Callable[[T], T]:
    """Declare an endpoint's policy: put it under the route decorator (`@router.post(...)` then `@policy(...)`)."""

    def mark(endpoint: T) -> T:
        return declare(endpoint, Policy(key, body, shape))

    return mark


def declare(target: T, declared: Policy) -> T:
    """Attach a policy to an endpoint or to an ASGI app about to be mounted."""
    setattr(target, ATTRIBUTE, declared)
    return target


def declared_policy(route: RouteContext) -> Policy | None:
    target = route.endpoint or getattr(route, "app", None)  # a route's endpoint, or a mount's app
    found = getattr(target, ATTRIBUTE, None)
    return found if isinstance(found, Policy) else None


@dataclass(frozen=True, slots=True)
class Rule:
    """A policy resolved against the settings: what the middlewares enforce for one route."""

    name: str  # the metrics name: the route's template
    key: str | None  # the secret a request must send, or None
    key_kind: Key
    body_limit: int | None  # bytes, or None: the route reads no body
    shape: Shape
    full: bool = True  # False: the path matched but not the method (the router answers 405)
    limit_setting: str | None = None  # the setting that sets body_limit, named in a 413


SMALL_JSON_BYTES = 16 * 1024
LIMIT_SETTINGS = {
    Body.SINGLE: "LEARNSERVE_MAX_UPLOAD_BYTES",
    Body.REQUEST: "LEARNSERVE_MAX_REQUEST_BYTES",
    Body.V2_JSON: "LEARNSERVE_MAX_V2_REQUEST_BYTES",
}


def body_limit(body: Body, settings: Settings) -> int | None:
    """The one place body kinds become byte limits."""
    return {
        Body.NONE: None,
        Body.SINGLE: settings.max_single_bytes,
        Body.REQUEST: settings.max_request_bytes,
        Body.V2_JSON: settings.max_v2_request_bytes,
        Body.SMALL_JSON: SMALL_JSON_BYTES,
    }[body]


class RoutePolicies:
    """Every route of an app with its rule, in the router's order (FastAPI's included routers flattened with
    `iter_route_contexts`, as its OpenAPI generator walks them)."""

    def __init__(self, table: list[tuple[RouteContext, Rule]]) -> None:
        self.table = table
        # Each route's own `matches` (the prefixed route FastAPI's router matches), bound once.
        self._matchers = [(route.matches, rule) for route, rule in table]

    @classmethod
    def compile(cls, routes: list[BaseRoute], settings: Settings, openapi_url: str | None) -> RoutePolicies:
        keys = {
            Key.NONE: None,
            Key.API: settings.api_key.get_secret_value() if settings.api_key else None,
            Key.ADMIN: settings.admin_key.get_secret_value() if settings.admin_key else None,
        }
        table = []
        for route in iter_route_contexts(routes):
            path = route.path or repr(route.original_route)
            found = declared_policy(route)
            if found is None and path == openapi_url:  # FastAPI's own route: the OpenAPI document
                found = OPEN
            if found is None:
                raise RuntimeError(f"route {path} declares no policy: add @policy(...) where it is defined")
            if found.key is Key.ADMIN and keys[Key.ADMIN] is None:
                raise RuntimeError(f"route {path} needs the admin key, and none is configured")
            name = route.path_format or path
            limit = body_limit(found.body, settings)
            setting = LIMIT_SETTINGS.get(found.body)
            rule = Rule(name, keys[found.key], found.key, limit, found.shape, limit_setting=setting)
            table.append((route, rule))
        return cls(table)

    def match(self, scope: Scope) -> Rule | None:
        """The rule of the route the router will pick: the first full match, else the first partial one."""
        partial: Rule | None = None
        for matches, rule in self._matchers:
            matched, _ = matches(scope)
            if matched is Match.FULL:
                return rule
            if matched is Match.PARTIAL and partial is None:
                partial = rule
        if partial is None:
            return None
        return replace(partial, full=False)


def rule_of(scope: Scope) -> Rule | None:
    """The rule PolicyMiddleware found for this request (None: no route matches it)."""
    found: Any = scope.get(SCOPE_KEY)
    return found if isinstance(found, Rule) else None


def is_v2(scope: Scope) -> bool:
    rule = rule_of(scope)
    return rule is not None and rule.shape is Shape.V2


class PolicyMiddleware:
    """Outermost: matches the request to its route once and leaves the rule in the scope for the others."""

    def __init__(self, app: ASGIApp, policies: RoutePolicies) -> None:
        self.app = app
        self.policies = policies

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            scope[SCOPE_KEY] = self.policies.match(scope)
        await self.app(scope, receive, send)
