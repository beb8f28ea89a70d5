"""Request bodies, guarded while they stream in (with or without a Content-Length header): a size limit per route,
a minimum upload rate and a deadline for the whole body to arrive, and the process's memory budget.

FastAPI parses an upload completely before the route runs, so checks in the route come too late to protect memory
and disk. This ASGI middleware charges the body's bytes to the memory budget as they arrive (never what
Content-Length merely announces: a client that announces 64 MiB and sends nothing holds nothing) and releases them
when the request is answered, so bodies held in memory by all requests together never pass the budget: past it, a
request waits briefly, then gets 503. A body over its route's limit gets 413; one that falls below
MIN_UPLOAD_BYTES_PER_SECOND on average after its first second, or does not arrive within BODY_TIMEOUT_SECONDS,
gets 408, and the connection is closed.
"""

from __future__ import annotations

import asyncio

from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.errors import ERRORS, send_error
from app.api.policy import rule_of
from app.core.budget import MemoryBudget, request_scope
from app.core.errors import CoreError

CLOSE = {"Connection": "close"}
RATE_GRACE_SECONDS = 1.0  # a body's first second is not held to the minimum rate (a slow start, a busy loop)


class BodyGuard:
    def __init__(self, app: ASGIApp, budget: MemoryBudget, timeout: float, min_rate: float = 0.0) -> None:
        self.app = app
        self.budget = budget
        self.timeout = timeout
        self.min_rate = min_rate  # bytes per second, on average, after RATE_GRACE_SECONDS (0: no minimum)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        rule = rule_of(scope)  # the route's declared body limit (app/api/policy.py); None: it reads no body
        if scope["type"] != "http" or rule is None or not rule.full or rule.body_limit is None:
            await self.app(scope, receive, send)
            return
        with request_scope():
            await self._guard(scope, receive, send, rule.body_limit)

    async def _guard(self, scope: Scope, receive: Receive, send: Send, limit: int) -> None:
        length = declared_length(scope["headers"])
        if length is not None and length > limit:
            await _too_large(send, scope, limit)
            return
        held = 0  # charged as the bytes arrive, never on announcement
        received = 0
        failure: tuple[int, str, str, dict[str, str] | None] | None = None
        started = False
        loop = asyncio.get_running_loop()
        started_at = loop.time()
        deadline = started_at + self.timeout

        body_done = False
        timed_out = False
        receiving = False
        task = asyncio.current_task()

        timer: asyncio.TimerHandle | None = None

        def due() -> float:
            """When the body is late: its deadline, or the moment what arrived falls below the minimum rate."""
            if not self.min_rate:
                return deadline
            return min(deadline, started_at + RATE_GRACE_SECONDS + received / self.min_rate)

        def expire() -> None:
            """The body is late: interrupt the receive the app is waiting on. A route that is not reading the body
            (one without a body, or busy after reading part of it) is never cancelled: its next read ends the
            body instead. Bytes that arrived since the timer was set move it on."""
            nonlocal timed_out, timer
            if body_done:
                return
            if (at := due()) > loop.time():
                timer = loop.call_at(at, expire)
                return
            timed_out = True
            if receiving and task is not None:
                task.cancel()

        # One timer per request (moved on while the body keeps coming, cancelled once it is in), not a timeout
        # context per receive: cheaper.
        timer = loop.call_at(due(), expire)

        def timeout() -> Message:
            nonlocal failure
            if loop.time() < deadline:
                detail = (
                    f"The request body arrived at {received / (loop.time() - started_at):,.0f} bytes per second; "
                    f"the minimum is {self.min_rate:,.0f}."
                )
            else:
                detail = f"The request body did not arrive within {self.timeout:g} seconds."
            failure = (408, "request_timeout", detail, CLOSE)
            return {"type": "http.disconnect"}  # the app stops reading; the client gets our answer

        async def guarded_receive() -> Message:
            nonlocal received, held, failure, body_done, receiving
            if failure:
                return {"type": "http.disconnect"}
            if body_done:  # e.g. listening for a disconnect while answering: no deadline then
                return await receive()
            if timed_out:
                return timeout()
            receiving = True
            try:
                message = await receive()
                receiving = False
                if message["type"] == "http.request":
                    body_done = not message.get("more_body", False)
                    if body_done:
                        timer.cancel()
                    received += len(message.get("body", b""))
                    if received > limit:
                        detail = too_large_detail(scope, limit)
                        failure = (413, "request_too_large", detail, CLOSE)
                        return {"type": "http.disconnect"}
                    if received > held:  # no Content-Length, or more than it said: charge as it comes
                        try:
                            await self.budget.acquire(received - held, "this request's body")
                        except CoreError as e:  # Overloaded: 503 + Retry-After
                            status, headers = ERRORS[e.code]
                            failure = (status, e.code, e.detail, {**(headers or {}), **CLOSE})
                            return {"type": "http.disconnect"}
                        held = received
                return message
            except asyncio.CancelledError:
                if not timed_out or task is None:
                    raise
                task.uncancel()
                return timeout()
            finally:
                receiving = False

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if failure and not started:
                return  # whatever the app answers to the "disconnect", the client gets our answer
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            try:
                await self.app(scope, guarded_receive, guarded_send)
            # A cut-off body broke the app's reading of it: answer our 413/408/503. Anything else is a server
            # fault and goes on to the 500 handler.
            except ClientDisconnect:
                if not failure or started:
                    raise
            if failure and not started:
                await send_error(send, scope, *failure)
        finally:
            if timer is not None:
                timer.cancel()
            self.budget.release(held)


def declared_length(headers: list[tuple[bytes, bytes]]) -> int | None:
    """Content-Length as a number; None when absent or not digits. Past 18 digits it is more than any limit:
    a huge number, not parsed (Python refuses to convert more than 4,300 digits)."""
    declared = next((v for k, v in headers if k == b"content-length"), None)
    if declared is None or not declared.isdigit():
        return None
    return int(declared) if len(declared) <= 18 else 10**18


async def _too_large(send: Send, scope: Scope, limit: int) -> None:
    await send_error(send, scope, 413, "request_too_large", too_large_detail(scope, limit), CLOSE)


def too_large_detail(scope: Scope, limit: int) -> str:
    rule = rule_of(scope)
    setting = f" ({rule.limit_setting})" if rule is not None and rule.limit_setting else ""
    return f"The request body is larger than the limit of {limit:,} bytes{setting}."
