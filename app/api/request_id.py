"""Request IDs: accept the caller's `X-Request-ID` (or make one), answer it on every response, log it on every line.

The ID lives in a context variable for the duration of the request, so any log line written while handling it
(routes, error handlers, uvicorn's access line, code in the thread pool) carries it through `RequestIdFilter`.
A caller's ID is kept only if it is 1 to 128 visible ASCII characters: anything else (control characters that
could forge log lines, very long values) is replaced by a fresh one.
"""

from __future__ import annotations

import itertools
import logging
import re
import secrets
from contextvars import ContextVar

from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

HEADER = "X-Request-ID"
_HEADER_KEY = HEADER.lower().encode()
_ACCEPTABLE = re.compile(r"[!-~]{1,128}")  # visible ASCII, no spaces

REQUEST_ID: ContextVar[str | None] = ContextVar("learnserve_request_id", default=None)


_PREFIX = secrets.token_hex(8)  # this process's: IDs stay unique across processes and restarts
_COUNTER = itertools.count(1)


def accept_or_make(given: str | None) -> str:
    """The caller's ID when it is safe to log, else a new one: 16 random hex digits for the process, then a
    counter (as unique as a uuid4 across processes, without a system call per request)."""
    if given is not None and _ACCEPTABLE.fullmatch(given):
        return given
    return f"{_PREFIX}{next(_COUNTER):016x}"


def of(request: Request) -> str | None:
    """The ID of a request, also where the context variable is gone (the outermost 500 handler)."""
    value = getattr(request.state, "request_id", None)
    return value if isinstance(value, str) else None


class RequestIdMiddleware:
    """Outermost middleware, so that every answer carries the ID: errors, 413s from the body limit, CORS."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = next((v for k, v in scope["headers"] if k == _HEADER_KEY), None)
        request_id = accept_or_make(given.decode("latin-1") if given is not None else None)
        scope.setdefault("state", {})["request_id"] = request_id

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message)[HEADER] = request_id
            await send(message)

        token = REQUEST_ID.set(request_id)
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            REQUEST_ID.reset(token)


class RequestIdFilter(logging.Filter):
    """Adds `record.request_id` ("-" outside a request) for the log formatters."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = REQUEST_ID.get() or "-"
        return True
