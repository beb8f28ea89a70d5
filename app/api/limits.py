"""Request-body limits enforced while the body streams in, with or without a Content-Length header.

FastAPI parses a multipart upload completely before the route runs, so a size check in the route comes too
late to protect memory and disk. This ASGI middleware counts bytes as they arrive and answers 413 the moment a
body passes its route's limit.
"""

from __future__ import annotations

from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.errors import send_error


class BodySizeLimit:
    def __init__(self, app: ASGIApp, limit_for: Callable[[str], int]) -> None:
        self.app = app
        self.limit_for = limit_for

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope["path"])
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await self._reject(send, scope["path"], limit)
            return
        received = 0
        exceeded = False
        started = False

        async def limited_receive() -> Message:
            nonlocal received, exceeded
            if exceeded:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    exceeded = True  # the app sees a disconnect and stops parsing
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if exceeded and not started:
                return  # whatever the app answers to the "disconnect", the client gets our 413
            started = started or message["type"] == "http.response.start"
            await send(message)

        await self.app(scope, limited_receive, guarded_send)
        if exceeded and not started:
            await self._reject(send, scope["path"], limit)

    @staticmethod
    async def _reject(send: Send, path: str, limit: int) -> None:
        detail = f"The request body is larger than the limit of {limit:,} bytes."
        await send_error(send, path, 413, "request_too_large", detail, {"Connection": "close"})
