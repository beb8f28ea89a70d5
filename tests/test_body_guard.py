"""The body deadline at the ASGI level: it interrupts a route waiting for body bytes, ends the body for a route that
is busy between reads, and never touches a route that does not read its body."""

from __future__ import annotations

import asyncio
import json

from starlette.types import Message, Receive, Scope, Send

from app.api.limits import BodyGuard
from app.api.policy import SCOPE_KEY, Key, Rule, Shape
from app.core.budget import MemoryBudget

RULE = Rule("/predict", None, Key.NONE, body_limit=100, shape=Shape.DEFAULT)  # what PolicyMiddleware leaves


def scope() -> Scope:
    return {"type": "http", "method": "POST", "path": "/predict", "headers": [(b"content-length", b"20")],
            SCOPE_KEY: RULE}  # fmt: skip


async def serve(
    app, chunks: list[tuple[float, bytes, bool]], timeout: float = 0.2
) -> tuple[list[Message], MemoryBudget]:  # type: ignore[no-untyped-def]
    """Run BodyGuard(app) with a client that sends `chunks` (delay, bytes, more_body)."""
    budget = MemoryBudget(1000, 0.1)
    guard = BodyGuard(app, budget, timeout)
    pending = list(chunks)
    sent: list[Message] = []

    async def receive() -> Message:
        if not pending:
            await asyncio.sleep(3600)  # the client sends nothing more
        delay, body, more = pending.pop(0)
        await asyncio.sleep(delay)
        return {"type": "http.request", "body": body, "more_body": more}

    async def send(message: Message) -> None:
        sent.append(message)

    await guard(scope(), receive, send)
    return sent, budget


def status_and_code(sent: list[Message]) -> tuple[int, str | None]:
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return sent[0]["status"], json.loads(body).get("code") if body else None


async def answer(send: Send, status: int = 200) -> None:
    await send({"type": "http.response.start", "status": status, "headers": []})
    await send({"type": "http.response.body", "body": b"{}"})


def test_a_route_waiting_for_the_body_is_interrupted_with_408() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        while (await receive())["type"] == "http.request":
            pass
        await answer(send, 400)  # what a route answers to a disconnect; the client gets the 408

    sent, budget = asyncio.run(serve(app, [(0, b"0123456789", True)]))  # the rest never comes
    assert status_and_code(sent) == (408, "request_timeout")
    assert budget.in_use == 0


def test_a_route_busy_between_reads_is_not_cancelled_and_its_next_read_ends_the_body() -> None:
    finished = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await asyncio.sleep(0.4)  # working past the deadline: must not be cancelled
        finished.append(True)
        message = await receive()
        await answer(send, 200 if message["type"] == "http.request" else 400)

    sent, _ = asyncio.run(serve(app, [(0, b"0123456789", True), (0, b"0123456789", False)]))
    assert finished == [True]
    assert status_and_code(sent) == (408, "request_timeout")


def test_a_route_that_never_reads_its_body_is_left_alone() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await asyncio.sleep(0.4)  # e.g. POST /admin/reload loading a large model
        await answer(send)

    sent, _ = asyncio.run(serve(app, [(0, b"0123456789", False)]))
    assert sent[0]["status"] == 200


def test_a_body_in_time_is_passed_through() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        await answer(send, 200 if body == b"01234567890123456789" else 500)

    sent, budget = asyncio.run(serve(app, [(0.05, b"0123456789", True), (0.05, b"0123456789", False)]))
    assert sent[0]["status"] == 200
    assert budget.in_use == 0
