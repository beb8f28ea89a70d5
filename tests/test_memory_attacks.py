"""Issue 20, findings 2-5, over real HTTP against a real server process, memory read from /proc.

The property (README, Memory): a request of N bytes makes the server's peak RSS grow by at most GROWTH_PER_BYTE x N
(the copies of its body) plus what the memory budget allows (MAX_INFLIGHT_BYTES: decoding and parsing are charged
to it before they allocate) plus the model's working set for a batch. Each test warms the server with a normal
request (the model's working set is then in the peak), resets the peak (`/proc/PID/clear_refs`), sends the attack
and checks the peak's growth against that bound; each attack grew the server by 0.9 to 1.3 GB before the fixes
(bench/RESULTS.md), far past the bound.
"""

from __future__ import annotations

import io
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image

from bench.security_rss import png_with_text, thin_png
from tests.conftest import train_tiny
from tests.live_server import LiveServer, live_server
from tests.test_memory_process import memory, read_response

pytestmark = pytest.mark.slow

MB = 2**20
BUDGET = 64 * MB
GROWTH_PER_BYTE = 4  # the body as received, as parsed by multipart, as read by the route, and one spare
SLACK = 24 * MB  # the allocator's own rounding and arenas, Python's caches, a thread's stack


@pytest.fixture(scope="module")
def pad_model(dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("pad") / "colors.pkl"
    return train_tiny(dataset, out, "--size", "32", "--epochs", "1", "--resize-method", "pad")


@pytest.fixture(scope="module")
def server(pad_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    log = tmp_path_factory.mktemp("log") / "server.log"
    with live_server(pad_model, log, MAX_INFLIGHT_BYTES=str(BUDGET), LOG_LEVEL="warning") as running:
        yield running


def small_png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (32, 32), (200, 40, 40)).save(buf, "PNG")
    return buf.getvalue()


def reset_peak(server: LiveServer) -> float:
    """A normal request first (the model's working set), then the peak reset to the resident set now."""
    r = httpx.post(f"{server.base}/predict", files={"file": ("ok.png", small_png(), "image/png")}, timeout=60)
    assert r.status_code == 200, r.text
    Path(f"/proc/{server.proc.pid}/clear_refs").write_text("5")
    return memory(server, "VmHWM")


def assert_within_bound(server: LiveServer, start: float, sent: int) -> None:
    growth = memory(server, "VmHWM") - start
    bound = GROWTH_PER_BYTE * sent + BUDGET + SLACK
    assert growth <= bound, (
        f"peak grew by {growth / MB:,.0f} MB for {sent:,} bytes; the bound is {bound / MB:,.0f}"
    )


def test_png_text_chunks_are_refused_past_pillows_lowered_limit_and_stay_in_bounds(
    server: LiveServer,
) -> None:
    start = reset_peak(server)
    image = png_with_text(62, 1_000_000)  # 62 chunks of 1 MB of text: Pillow's old limits allowed it
    files = [("files", (f"{i}.png", image, "image/png")) for i in range(16)]
    r = httpx.post(f"{server.base}/predict/batch", files=files, timeout=120)
    assert_within_bound(server, start, 16 * len(image))
    assert r.status_code == 200, r.text
    assert {x["error"]["code"] for x in r.json()["results"]} == {"corrupt_image"}


def test_png_text_within_the_limits_is_read_charged_and_dropped(server: LiveServer) -> None:
    start = reset_peak(server)
    image = png_with_text(3, 200_000)  # 600 KB of text in all: a legal file, classified
    files = [("files", (f"{i}.png", image, "image/png")) for i in range(64)]
    r = httpx.post(f"{server.base}/predict/batch", files=files, timeout=120)
    assert_within_bound(server, start, 64 * len(image))
    assert r.status_code == 200, r.text
    assert all("label" in x for x in r.json()["results"])
    assert 'learnserve_memory_budget_bytes{kind="in_use"} 0.0' in httpx.get(f"{server.base}/metrics").text


def test_padding_a_thin_image_is_charged_and_refused_when_it_cannot_fit(server: LiveServer) -> None:
    start = reset_peak(server)
    thin = thin_png(12000, 2)  # padded to 12000x12000: 432 MB a copy
    r = httpx.post(f"{server.base}/predict", files={"file": ("thin.png", thin, "image/png")}, timeout=60)
    assert_within_bound(server, start, len(thin))
    assert r.status_code == 413, r.text
    assert r.json()["code"] == "over_memory_budget"
    fits = thin_png(1500, 20)  # padded to 1500x1500: 13.5 MB of pixels, within the budget
    r = httpx.post(f"{server.base}/predict", files={"file": ("fits.png", fits, "image/png")}, timeout=60)
    assert_within_bound(server, start, len(fits))
    assert r.status_code == 200, r.text


def test_v2_json_is_charged_as_parsed(server: LiveServer) -> None:
    start = reset_peak(server)
    head = b'{"inputs":[{"name":"image","datatype":"BYTES","shape":[1],"data":['
    body = head + b",".join([b"{}"] * (8 * MB // 3)) + b"]}]}"  # 8 MiB: 2.8 million dicts once parsed
    r = httpx.post(f"{server.base}/v2/models/colors/infer", content=body, timeout=60)
    assert_within_bound(server, start, len(body))
    assert r.status_code == 413, r.text
    assert "parsed json" in r.json()["error"].lower()


def test_v2_bodies_have_a_limit_of_their_own(server: LiveServer) -> None:
    start = reset_peak(server)
    head = b'{"inputs":[{"name":"image","datatype":"BYTES","shape":[1],"data":['
    body = head + b",".join([b"{}"] * (48 * MB // 3)) + b"]}]}"  # over MAX_V2_REQUEST_BYTES (32 MiB)
    r = httpx.post(f"{server.base}/v2/models/colors/infer", content=body, timeout=60)
    assert_within_bound(server, start, len(body))
    assert r.status_code == 413, r.text
    assert "LEARNSERVE_MAX_V2_REQUEST_BYTES" in r.json()["error"]


def test_announced_bodies_hold_nothing_and_too_slow_ones_get_408(tiny_model: Path, tmp_path: Path) -> None:
    """Default settings (a 512 MiB budget): 8 connections announce 64 MiB each and send nothing. Before, their
    announcements took the whole budget and a normal /predict got 503; now they hold nothing, and each gets 408
    once it falls below the minimum upload rate."""
    with live_server(tiny_model, tmp_path / "server.log") as server:
        port = int(server.base.rsplit(":", 1)[1])
        head = (
            f"POST /predict/batch HTTP/1.1\r\nHost: x\r\nContent-Length: {64 * MB}\r\n"
            "Content-Type: multipart/form-data; boundary=b\r\n\r\n--b\r\n"
        ).encode()
        socks = [socket.create_connection(("127.0.0.1", port), timeout=30) for _ in range(8)]
        try:
            for sock in socks:
                sock.sendall(head)
            r = httpx.post(f"{server.base}/predict", files={"file": ("ok.png", small_png(), "image/png")})
            assert r.status_code == 200, r.text
            for sock in socks:
                answer = read_response(sock)
                assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
                assert b"bytes per second" in answer
        finally:
            for sock in socks:
                sock.close()
