"""A real `python -m app serve` process on a free port, its log in a file the tests can read while it runs."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx


@dataclass
class LiveServer:
    base: str
    log: Path
    proc: subprocess.Popen[bytes]

    def log_text(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def live_server(model: Path, log: Path, **env: str) -> Iterator[LiveServer]:
    """Serve `model`: one .pkl (LEARNSERVE_MODEL_PATH), or a folder of them (LEARNSERVE_MODEL_DIR)."""
    port = free_port()
    source = "LEARNSERVE_MODEL_DIR" if model.is_dir() else "LEARNSERVE_MODEL_PATH"
    environ = {
        **{k: v for k, v in os.environ.items() if not k.startswith("LEARNSERVE_")},
        source: str(model),
        "LEARNSERVE_WORKERS": "1",  # one process, as these tests were written for; tests/test_workers.py asks for 2
        **{f"LEARNSERVE_{k}": v for k, v in env.items()},
    }
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "app", "serve", "--port", str(port)], env=environ, stdout=out, stderr=out
        )
    server = LiveServer(f"http://127.0.0.1:{port}", log, proc)
    try:
        wait_ready(server)
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def wait_ready(server: LiveServer, timeout: float = 90) -> None:
    wait_until_ready(server.base, server.proc, server.log_text, timeout)


def wait_until_ready(
    base: str, proc: subprocess.Popen[Any], output: Callable[[], str], timeout: float = 90
) -> None:
    """Poll /health/ready until 200; fail with the server's output if it exits or never gets there."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited early:\n{output()}")
        try:
            if httpx.get(f"{base}/health/ready", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"server did not become ready:\n{output()}")
