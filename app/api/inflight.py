"""The limit on requests in progress (LEARNSERVE_MAX_REQUESTS): past it, a new request gets 503 + Retry-After at
once instead of queueing.

A request is in progress from the moment its headers are complete until its answer is sent. Connections that are
idle (kept alive between requests) or half-open (still sending headers) are not requests and cost nothing here:
uvicorn's own `limit_concurrency` counts connections, so a few hundred sockets that never finish their headers
would lock every other client out until the header deadline closed them (app/api/protocol.py).
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from app.api.errors import ERRORS, send_error


class InFlightLimit:
    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit
        self.in_progress = 0  # one event loop: a plain counter needs no lock

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.in_progress >= self.limit:
            _, headers = ERRORS["overloaded"]
            detail = f"{self.in_progress} requests are in progress, the server's limit (MAX_REQUESTS); retry shortly."
            # Connection: close, as the body (if any) is left unread.
            await send_error(
                send, scope, 503, "overloaded", detail, {**(headers or {}), "Connection": "close"}
            )
            return
        self.in_progress += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_progress -= 1
