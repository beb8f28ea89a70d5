"""Idle connections are cheap: the limit counts requests in progress (MAX_REQUESTS), not connections. Unit test of
the limit on ASGI; a process test with 1,000 half-open and idle keep-alive sockets against a real server."""

from __future__ import annotations

import asyncio
import resource
import socket
import time
from pathlib import Path

import httpx
import pytest
from starlette.types import Message, Receive, Scope, Send

from app.api.inflight import InFlightLimit
from tests.images import encode, sample
from tests.live_server import live_server

CONNECTIONS = 1000  # half-open, held open by a long header deadline
IDLE = 50  # idle keep-alive, opened last: uvicorn closes them after its 5 s keep-alive timeout


def test_requests_past_the_limit_get_503_with_retry_after_and_the_slot_is_freed() -> None:
    async def scenario() -> list[int]:
        release = asyncio.Event()
        entered = 0
        both_in = asyncio.Event()

        async def app(scope: Scope, receive: Receive, send: Send) -> None:
            nonlocal entered
            entered += 1
            if entered == 2:
                both_in.set()
            if entered <= 2:
                await release.wait()
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b""})

        limit = InFlightLimit(app, limit=2)
        statuses: list[int] = []
        headers: list[dict[bytes, bytes]] = []
        bodies: list[bytes] = []

        async def request() -> None:
            sent: list[Message] = []

            async def send(message: Message) -> None:
                sent.append(message)

            async def receive() -> Message:
                return {"type": "http.request", "body": b"", "more_body": False}

            await limit({"type": "http", "method": "GET", "path": "/", "headers": []}, receive, send)
            statuses.append(sent[0]["status"])
            bodies.append(sent[1]["body"])
            headers.append(dict(sent[0]["headers"]))

        held = [asyncio.create_task(request()) for _ in range(2)]
        await both_in.wait()
        await request()  # a third while two are in progress
        assert headers[-1][b"retry-after"] == b"1"
        assert b'"code":"overloaded"' in bodies[-1]
        release.set()
        await asyncio.gather(*held)
        await request()  # the slots are free again
        assert limit.in_progress == 0
        return statuses

    assert asyncio.run(scenario()) == [503, 200, 200, 200]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def open_fds(pid: int) -> int:
    return len(list(Path(f"/proc/{pid}/fd").iterdir()))


@pytest.fixture
def enough_file_descriptors() -> None:
    """The test and the server (which inherits this limit) each hold one descriptor per connection."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 2 * (CONNECTIONS + IDLE) + 500
    if soft < wanted:
        if hard != resource.RLIM_INFINITY and hard < wanted:
            pytest.skip(f"the file-descriptor limit ({hard}) is below {wanted}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


@pytest.mark.slow
@pytest.mark.usefixtures("enough_file_descriptors")
def test_a_thousand_half_open_and_idle_connections_do_not_lock_anyone_out(
    tiny_model: Path, tmp_path: Path
) -> None:
    env = {"HEADER_TIMEOUT_SECONDS": "120", "MAX_REQUESTS": "16"}
    with live_server(tiny_model, tmp_path / "server.log", **env) as server:
        host, port = "127.0.0.1", int(server.base.rsplit(":", 1)[1])
        pid = server.proc.pid
        before_fds, before_rss = open_fds(pid), rss_mb(pid)
        sockets: list[socket.socket] = []
        try:
            for _ in range(CONNECTIONS):  # half-open: half a request's headers, then nothing
                sock = socket.create_connection((host, port), timeout=10)
                sock.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: ima")
                sockets.append(sock)
            # The server's other descriptors come and go (the readiness probe's socket may still be open in
            # `before_fds`), so allow a few either way.
            accepted = before_fds + CONNECTIONS - 10
            deadline = time.monotonic() + 60
            while open_fds(pid) < accepted and time.monotonic() < deadline:
                time.sleep(0.05)  # polling: the server accepts on its own schedule
            assert open_fds(pid) >= accepted, "the server did not accept them all"
            for _ in range(IDLE):  # idle keep-alive: one request answered, then nothing (closed after 5 s)
                sock = socket.create_connection((host, port), timeout=10)
                sock.sendall(b"GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n")
                assert sock.recv(4096).startswith(b"HTTP/1.1 200")
                sockets.append(sock)
            png = encode(sample("red"), "PNG")
            started = time.perf_counter()
            live = httpx.get(f"{server.base}/health/live", timeout=30)
            live_seconds = time.perf_counter() - started
            started = time.perf_counter()
            predicted = httpx.post(
                f"{server.base}/predict", files={"file": ("x.png", png, "image/png")}, timeout=30
            )
            predict_seconds = time.perf_counter() - started
            grown = rss_mb(pid) - before_rss
            print(f"\n{CONNECTIONS} half-open + {IDLE} idle connections open: /health/live {live_seconds * 1000:.1f} ms, "
                  f"/predict {predict_seconds * 1000:.1f} ms, server RSS +{grown:.1f} MB")  # fmt: skip
            assert live.status_code == 200
            assert predicted.status_code == 200
            assert live_seconds < 5  # generous: a process test on a shared machine; measured far below
            assert grown < 200, f"{CONNECTIONS} idle connections grew the server by {grown:.0f} MB"
        finally:
            for sock in sockets:
                sock.close()
