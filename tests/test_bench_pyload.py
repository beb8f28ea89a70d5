"""bench/pyload.py, the load generator for machines without wrk: against a real uvicorn serving the HTTP floor
(bench/floor_server.py), it returns wrk_multipart.lua's stats, and an answer that is not 200 with a label is bad."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest

from bench import load, pyload
from tests.live_server import free_port

KEYS = {"requests", "duration_us", "p50_us", "p99_us", "mean_us", "errors", "bad"}


@pytest.fixture(scope="module")
def floor_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    port = free_port()
    log = tmp_path_factory.mktemp("floor") / "server.log"
    cmd = [sys.executable, "-m", "uvicorn", "bench.floor_server:app", "--port", str(port), "--no-access-log"]
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, env={**os.environ, "MODEL": "unused"}, stdout=out, stderr=out)
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            try:
                if httpx.get(f"http://127.0.0.1:{port}/docs", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.05)
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture(scope="module")
def bodies(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("bodies")
    for i in range(3):
        payload = bytes([i]) * (1000 + 5000 * i)  # the floor server reads the upload, it does not decode it
        body = (
            (
                f'--{pyload.BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="img_{i}.png"\r\n'
                "Content-Type: image/png\r\n\r\n"
            ).encode()
            + payload
            + f"\r\n--{pyload.BOUNDARY}--\r\n".encode()
        )
        (folder / f"body_{i:03d}.bin").write_bytes(body)
    return folder


@pytest.mark.slow
@pytest.mark.parametrize("processes", [1, 2])
def test_every_answer_is_counted_with_wrks_stats(floor_port: int, bodies: Path, processes: int) -> None:
    stats = pyload.run(floor_port, bodies, 4, 1.0, processes=processes)
    assert set(stats) == KEYS
    assert stats["requests"] > 20
    assert stats["errors"] == stats["bad"] == 0
    assert 0 < stats["p50_us"] <= stats["p99_us"]
    assert stats["mean_us"] > 0
    assert 0.9e6 < stats["duration_us"] < 3e6


@pytest.mark.slow
def test_an_answer_that_is_not_200_with_a_label_is_bad(floor_port: int, bodies: Path) -> None:
    stats = pyload.run(floor_port, bodies, 2, 0.5, path="/nothing-here")  # 404
    assert stats["requests"] > 0
    assert stats["bad"] == stats["requests"]
    assert stats["errors"] == 0


def test_a_refused_connection_is_an_error_not_a_latency(bodies: Path) -> None:
    stats = pyload.run(free_port(), bodies, 1, 0.2)  # nobody listens there
    assert stats["requests"] == 0
    assert stats["errors"] > 0


@pytest.mark.slow
def test_wrk_falls_back_to_pyload_and_says_so(
    floor_port: int, bodies: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    model = SimpleNamespace(bodies=bodies)  # what wrk() reads of a BenchModel
    monkeypatch.setenv("BENCH_LOAD", "python")
    monkeypatch.setattr(pyload, "_announced", set())
    stats = load.wrk(floor_port, model, 2, 1)  # type: ignore[arg-type]
    assert set(stats) == KEYS | {"rps"}
    assert stats["rps"] > 0
    load.wrk(floor_port, model, 1, 1)  # type: ignore[arg-type]
    assert capsys.readouterr().err.count("bench: load generator: python") == 1
