"""Request bodies, guarded while they stream in (with or without a Content-Length header): a size limit per path,
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
from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.errors import ERRORS, send_error
from app.core.budget import MemoryBudget, request_scope
from app.core.errors import CoreError

CLOSE = {"Connection": "close"}
RATE_GRACE_SECONDS = 1.0  # a body's first second is not held to the minimum rate (a slow start, a busy loop)


class BodyGuard:
    def __init__(
        self,
        app: ASGIApp,
        limit_for: Callable[[str], int],
        budget: MemoryBudget,
        timeout: float,
        min_rate: float = 0.0,
    ) -> None:
        self.app = app
        self.limit_for = limit_for
        self.budget = budget
        self.timeout = timeout
        self.min_rate = min_rate  # bytes per second, on average, after RATE_GRACE_SECONDS (0: no minimum)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        with request_scope():
            await self._guard(scope, receive, send, path)

    async def _guard(self, scope: Scope, receive: Receive, send: Send, path: str) -> None:
        limit = self.limit_for(path)
        declared = next((v for k, v in scope["headers"] if k == b"content-length"), None)
        length = int(declared) if declared is not None and declared.isdigit() else None
        if length is not None and length > limit:
            await _too_large(send, path, limit)
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
                        detail = f"The request body is larger than the limit of {limit:,} bytes."
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
            except Exception:
                if not failure or started:
                    raise  # a real error; a cut-off body merely broke the app's reading of it
            if failure and not started:
                await send_error(send, path, *failure)
        finally:
            if timer is not None:
                timer.cancel()
            self.budget.release(held)


async def _too_large(send: Send, path: str, limit: int) -> None:
    detail = f"The request body is larger than the limit of {limit:,} bytes."
    await send_error(send, path, 413, "request_too_large", detail, CLOSE)
