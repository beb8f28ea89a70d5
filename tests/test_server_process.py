"""A real `python -m app serve` process on a free port: HTTP uploads, concurrency, overload, drain on SIGTERM."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from PIL import Image

from tests.backends import classify_files, fastai_backend
from tests.images import encode, many_formats, sample
from tests.live_server import free_port, wait_until_ready
from training.manifest import manifest_path

pytestmark = pytest.mark.slow


def start(model: Path, port: int, **env: str) -> subprocess.Popen[str]:
    environ = {
        **os.environ,
        "LEARNSERVE_MODEL_PATH": str(model),
        **{f"LEARNSERVE_{k}": v for k, v in env.items()},
    }
    return subprocess.Popen(
        [sys.executable, "-m", "app", "serve", "--port", str(port)],
        env=environ,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def stop(proc: subprocess.Popen[str]) -> str:
    """Kill if still running, then collect the output (which also closes the pipe)."""
    if proc.poll() is None:
        proc.kill()
    out, _ = proc.communicate(timeout=30)
    return out


def wait_ready(base: str, proc: subprocess.Popen[str]) -> None:
    wait_until_ready(base, proc, lambda: proc.stdout.read() if proc.stdout else "")


@pytest.fixture(scope="module")
def server(tiny_model: Path) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    port = free_port()
    proc = start(tiny_model, port, MAX_WAIT_MS="400", MAX_BATCH_SIZE="32", MAX_QUEUE="8", MAX_FILES="8")
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base, proc)
        yield base, proc
    finally:
        stop(proc)


def post(base: str, name: str, data: bytes) -> httpx.Response:
    return httpx.post(f"{base}/predict", files={"file": (name, data, "application/octet-stream")}, timeout=30)


def test_real_uploads_over_http(server: tuple[str, subprocess.Popen[str]]) -> None:
    base, _ = server
    for name, data in list(many_formats().items())[:6]:
        r = post(base, name, data)
        assert r.status_code == 200, r.text
        assert r.json()["label"] in ("red", "green", "blue")
    assert post(base, "x.txt", b"plain text").status_code == 415
    assert httpx.get(f"{base}/docs").status_code == 200


def test_concurrent_requests_get_their_sequential_answers(
    server: tuple[str, subprocess.Popen[str]], tiny_model: Path
) -> None:
    base, _ = server
    labels = ["red", "green", "blue"]
    images = [encode(sample(labels[i % 3], seed=200 + i), "PNG") for i in range(24)]
    backend = fastai_backend(tiny_model)
    sequential = [classify_files(backend, [d])[0] for d in images]
    with ThreadPoolExecutor(max_workers=8) as pool:  # 8 = MAX_QUEUE: none of them may be refused
        answers = list(pool.map(lambda d: post(base, "c.png", d), images))
    for r, want in zip(answers, sequential, strict=True):
        assert r.status_code == 200, r.text
        assert r.json()["label"] == want.label
        assert r.json()["probability"] == pytest.approx(want.probability, abs=1e-5)


def test_overload_answers_503_with_retry_after(server: tuple[str, subprocess.Popen[str]]) -> None:
    """Bursts of batch uploads that cannot all fit MAX_QUEUE=8: some wait their turn, the rest get 503."""
    base, _ = server
    big = encode(
        Image.new("RGB", (1500, 1500), (40, 60, 210)), "PNG"
    )  # small file, slow to decode and resize
    files = [("files", (f"{i}.png", big, "image/png")) for i in range(6)]
    statuses: list[int] = []
    refused: list[httpx.Response] = []
    with ThreadPoolExecutor(max_workers=6) as pool:
        for _ in range(5):  # each burst: 6 requests x 6 images against room for 8
            burst = list(
                pool.map(lambda _: httpx.post(f"{base}/predict/batch", files=files, timeout=60), range(6))
            )
            statuses += [r.status_code for r in burst]
            refused += [r for r in burst if r.status_code == 503]
            if refused:
                break
    assert set(statuses) <= {200, 503}, statuses
    assert 200 in statuses
    assert refused, "no request was ever refused"
    assert refused[0].json()["code"] == "overloaded"
    assert refused[0].headers["retry-after"] == "1"


def poll(condition: Callable[[], bool], what: str, seconds: float = 20.0) -> None:
    """Until `condition` holds, or fail at the deadline."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"still not {what} after {seconds} s"
        time.sleep(0.02)  # a polling interval


def body_arriving(port: int) -> bool:
    """Whether the server holds a request's body bytes (charged to its memory budget as they arrive)."""
    metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    in_use = next(
        x for x in metrics.splitlines() if x.startswith('learnserve_memory_budget_bytes{kind="in_use"}')
    )
    return float(in_use.split()[-1]) > 0


def refuses_connections(port: int) -> bool:
    try:
        httpx.get(f"http://127.0.0.1:{port}/health/live", timeout=2)
    except httpx.TransportError:
        return True
    return False


def multipart_request(port: int, data: bytes) -> tuple[bytes, bytes]:
    boundary = "b0undary"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="s.png"\r\n'
            "Content-Type: image/png\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    head = (
        f"POST /predict HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: {len(body)}\r\n"
        f"Content-Type: multipart/form-data; boundary={boundary}\r\n\r\n"
    ).encode()
    return head, body


def test_sigterm_finishes_in_flight_request_then_exits_cleanly(tiny_model: Path) -> None:
    port = free_port()
    proc = start(tiny_model, port)
    try:
        wait_ready(f"http://127.0.0.1:{port}", proc)
        head, body = multipart_request(port, encode(sample("green"), "PNG"))
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            sock.sendall(head + body[: len(body) // 2])  # the request is in flight ...
            poll(lambda: body_arriving(port), "reading the body")
            proc.send_signal(signal.SIGTERM)  # ... when the server is told to stop
            poll(lambda: refuses_connections(port), "refusing new connections while draining")
            sock.sendall(body[len(body) // 2 :])
            response = b""
            while chunk := sock.recv(65536):
                response += chunk
        assert response.startswith(b"HTTP/1.1 200"), response[:200]
        assert b'"label":"green"' in response
        output, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0, output
    finally:
        stop(proc)
    assert "Shutting down" in output


def run_to_exit(model: Path) -> tuple[int, str]:
    proc = start(model, free_port())
    try:
        out, _ = proc.communicate(timeout=90)
    finally:
        stop(proc)
    return proc.returncode, out


def test_tampered_model_stops_startup_with_a_clear_line(tiny_model: Path, tmp_path: Path) -> None:
    model = tmp_path / "tampered.pkl"
    shutil.copy(tiny_model, model)
    shutil.copy(manifest_path(tiny_model), manifest_path(model))
    with model.open("ab") as f:
        f.write(b"x")
    code, out = run_to_exit(model)
    assert code != 0
    assert "cannot start: sha256" in out
    assert "changed after export" in out
    assert "Traceback" not in out


def test_missing_model_stops_startup_with_a_clear_line(tmp_path: Path) -> None:
    code, out = run_to_exit(tmp_path / "missing.pkl")
    assert code != 0
    assert "cannot start: model file" in out
    assert "does not exist" in out
    assert "Traceback" not in out


def test_readiness_reports_draining(settings) -> None:  # type: ignore[no-untyped-def]
    from fastapi.testclient import TestClient

    from app.api.deps import ServerState
    from app.main import create_app

    state = ServerState()
    with TestClient(create_app(settings, state)) as client:
        assert client.get("/health/ready").status_code == 200
        state.begin_drain()  # what DrainingServer.handle_exit does on SIGTERM
        r = client.get("/health/ready")
        assert r.status_code == 503
        assert r.json()["code"] == "not_ready"
        assert client.get("/health/live").status_code == 200


def test_drain_seconds_below_one_is_honoured(tiny_model: Path) -> None:
    """DRAIN_SECONDS=0.3: a request that never finishes is cut off after 0.3 s, not waited for forever."""
    port = free_port()
    proc = start(tiny_model, port, DRAIN_SECONDS="0.3")
    try:
        wait_ready(f"http://127.0.0.1:{port}", proc)
        head, body = multipart_request(port, encode(sample("green"), "PNG"))
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            sock.sendall(head + body[: len(body) // 2])  # in flight, and it will never complete
            poll(lambda: body_arriving(port), "reading the body")
            proc.send_signal(signal.SIGTERM)
            # cut off after its 0.3 s drain: the default drain (20 s) would run past this deadline
            output, _ = proc.communicate(timeout=10)
        assert proc.returncode == 0, output
        assert "timeout graceful shutdown exceeded" in output
    finally:
        stop(proc)
