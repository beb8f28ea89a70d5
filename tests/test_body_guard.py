"""The body deadline and minimum rate at the ASGI level: they interrupt a route waiting for body bytes, end the body
for a route that is busy between reads, and never touch a route that does not read its body; bodies are charged to
the budget as they arrive."""

from __future__ import annotations

import asyncio
import json

import pytest
from starlette.types import Message, Receive, Scope, Send

from app.api import limits
from app.api.limits import BodyGuard
from app.api.policy import SCOPE_KEY, Key, Rule, Shape
from app.core.budget import MemoryBudget

RULE = Rule("/predict", None, Key.NONE, body_limit=100, shape=Shape.DEFAULT)  # what PolicyMiddleware leaves


def scope() -> Scope:
    return {"type": "http", "method": "POST", "path": "/predict", "headers": [(b"content-length", b"20")],
            SCOPE_KEY: RULE}  # fmt: skip


async def serve(
    app, chunks: list[tuple[float, bytes, bool]], timeout: float = 0.2, min_rate: float = 0.0
) -> tuple[list[Message], MemoryBudget]:  # type: ignore[no-untyped-def]
    """Run BodyGuard(app) with a client that sends `chunks` (delay, bytes, more_body)."""
    budget = MemoryBudget(1000, 0.1)
    guard = BodyGuard(app, budget, timeout, min_rate)
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


async def read_all(receive: Receive) -> bytes:
    body = b""
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return body
        body += message.get("body", b"")
        if not message.get("more_body"):
            return body


def test_an_announced_body_is_charged_as_it_arrives_not_on_announcement() -> None:
    """Content-Length says 20 bytes: nothing is charged before a byte arrives, then what arrived."""
    charged: list[int] = []
    budget_of: list[MemoryBudget] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        charged.append(budget_of[0].in_use)
        await receive()
        charged.append(budget_of[0].in_use)
        await read_all(receive)
        await answer(send)

    async def run() -> list[Message]:
        budget = MemoryBudget(1000, 0.1)
        budget_of.append(budget)
        chunks = [(0, b"0123456789", True), (0, b"0123456789", False)]
        pending, sent = list(chunks), []

        async def receive() -> Message:
            _, body, more = pending.pop(0)
            return {"type": "http.request", "body": body, "more_body": more}

        async def send(message: Message) -> None:
            sent.append(message)

        await BodyGuard(app, budget, 5.0)(scope(), receive, send)
        assert budget.in_use == 0
        return sent

    sent = asyncio.run(run())
    assert sent[0]["status"] == 200
    assert charged == [0, 10]


def test_a_body_below_the_minimum_rate_gets_408_before_the_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(limits, "RATE_GRACE_SECONDS", 0.05)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await read_all(receive)
        await answer(send, 400)

    # 10 bytes, then nothing: at 100 bytes per second that is 0.1 s of credit, far before the 60 s deadline
    sent, budget = asyncio.run(serve(app, [(0, b"0123456789", True)], timeout=60, min_rate=100))
    assert status_and_code(sent) == (408, "request_timeout")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    assert b"bytes per second" in body
    assert budget.in_use == 0


def test_a_body_that_keeps_the_minimum_rate_passes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(limits, "RATE_GRACE_SECONDS", 0.05)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        body = await read_all(receive)
        await answer(send, 200 if body == b"0123456789" * 2 else 500)

    # 10 bytes, then 10 more 0.05 s later: 20 bytes a second would allow 0.55 s; the timer moves on with each chunk
    chunks = [(0, b"0123456789", True), (0.05, b"0123456789", False)]
    sent, _ = asyncio.run(serve(app, chunks, timeout=60, min_rate=20))
    assert sent[0]["status"] == 200
