"""Servers under load: start one, drive it with wrk (C, on loopback), read its memory, stop it."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from bench.assets import BOUNDARY, BenchModel

LUA = Path(__file__).parent / "wrk_multipart.lua"
UVICORN = [sys.executable, "-m", "uvicorn", "--host", "127.0.0.1", "--no-access-log"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# learnserve with LEARNSERVE_WORKERS=auto (`-workers`) or N processes (`-workers-N`), either backend
WORKERS_CONTENDER = re.compile(r"learnserve(-onnx)?-workers(?:-(\d+))?")


def learnserve_env(contender: str, model: BenchModel, device: str) -> dict[str, str]:
    """learnserve exactly as `make serve` starts it, with the contender's backend, processes and capture."""
    workers = WORKERS_CONTENDER.fullmatch(contender)
    env = {
        "LEARNSERVE_MODEL_PATH": str(model.path),
        "LEARNSERVE_BACKEND": "onnx" if contender.startswith("learnserve-onnx") else "fastai",
        "LEARNSERVE_DEVICE": device,
        "MALLOC_ARENA_MAX": "2",
        # one process, comparable with every earlier run; `-workers` is the default `auto`, `-workers-N` N processes
        "LEARNSERVE_WORKERS": (workers.group(2) or "auto") if workers else "1",
    }
    # capture on, at its default policy (issue 25: within 10% of capture off). The bench's models are untrained
    # (bench/assets.py): every answer is under 0.6, so the default policy keeps every input, the worst case;
    # `-capture-5pct` keeps a random 5%, what the default keeps of a model that is right and sure most of the time.
    if contender.startswith("learnserve-capture"):
        env["LEARNSERVE_CAPTURE_DIR"] = tempfile.mkdtemp(prefix="learnserve-bench-capture-")
    if contender == "learnserve-capture-5pct":
        env["LEARNSERVE_CAPTURE"] = "sample:0.05"
    if device == "cuda":  # batches as large as the in-process limit's (the default cap is sized for CPU RAM)
        env |= {"LEARNSERVE_MAX_BATCH_SIZE": "64", "LEARNSERVE_MAX_BATCH_PIXELS": str(64 * model.size**2)}
    return env


def server_command(
    contender: str, model: BenchModel, port: int, device: str = "cpu"
) -> tuple[list[str], dict[str, str], str]:
    """(command, environment, readiness path) of a contender."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEARNSERVE_")}
    if contender.startswith("learnserve"):
        env |= learnserve_env(contender, model, device)
        cmd = [sys.executable, "-m", "app", "serve", "--host", "127.0.0.1", "--port", str(port)]
        return cmd, env, "/health/ready"
    env["MODEL"] = str(model.path)
    module = {
        "tutorial": "bench.tutorial_server",
        "floor": "bench.floor_server",
        "minimal": "bench.minimal_server",
    }
    return [*UVICORN, f"{module[contender]}:app", "--port", str(port)], env, "/docs"


@dataclass
class Running:
    port: int
    pid: int
    ready_seconds: float


@contextmanager
def running_server(contender: str, model: BenchModel, log: Path, device: str = "cpu") -> Iterator[Running]:
    port = free_port()
    cmd, env, probe = server_command(contender, model, port, device)
    with log.open("a") as out:
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            while True:
                if proc.poll() is not None or time.perf_counter() - started > 120:
                    raise RuntimeError(f"{contender} did not start; see {log}")
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}{probe}", timeout=1):
                        break
                except OSError:
                    time.sleep(0.05)
            yield Running(port, proc.pid, time.perf_counter() - started)
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def process_tree(pid: int) -> list[int]:
    """pid and its descendants (a multi-process server's supervisor and its server processes)."""
    pids = [pid]
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            children = task.read_text().split()
        except OSError:
            continue
        for child in children:
            pids += process_tree(int(child))
    return pids


def memory_mb(pid: int, key: str = "VmHWM") -> float:
    """VmHWM: the peak resident set; VmRSS: now. Summed over the process and its descendants (for several
    processes, the sum of each one's peak)."""
    total = 0.0
    for one in process_tree(pid):
        try:
            lines = Path(f"/proc/{one}/status").read_text().splitlines()
        except OSError:
            continue
        total += sum(int(line.split()[1]) / 1024 for line in lines if line.startswith(f"{key}:"))
    return total or float("nan")


def wrk(port: int, model: BenchModel, connections: int, seconds: float) -> dict[str, float]:
    """wrk (C), or bench/pyload.py where wrk is missing or BENCH_LOAD=python: the same uploads, checks and stats."""
    from bench import pyload

    choice = os.environ.get("BENCH_LOAD", "")
    if choice == "python" or (choice != "wrk" and not shutil.which("wrk")):
        pyload.announce("python (bench/pyload.py: wrk is not on PATH or BENCH_LOAD=python)")
        stats: dict[str, float] = pyload.run(port, model.bodies, connections, seconds, boundary=BOUNDARY)
    else:
        if not shutil.which("wrk"):
            raise RuntimeError(
                "wrk is not installed: `apt-get install wrk` (make bench does this when it can)"
            )
        pyload.announce("wrk")
        env = {**os.environ, "BENCH_BODIES": str(model.bodies), "BENCH_BOUNDARY": BOUNDARY}
        threads = min(connections, max(2, (os.cpu_count() or 2) // 4))  # 4 threads at 64 clients on 16 cores
        cmd = [
            "wrk", "-t", str(threads), "-c", str(connections), "-d", f"{max(1, round(seconds))}s", "--timeout", "30s",
            "-s", str(LUA), f"http://127.0.0.1:{port}/predict",
        ]  # fmt: skip
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
        line = next(x for x in out.splitlines() if x.startswith("WRKJSON "))
        stats = json.loads(line.removeprefix("WRKJSON "))
    stats["rps"] = stats["requests"] / (stats["duration_us"] / 1e6)
    if stats["errors"] or stats["bad"]:
        raise RuntimeError(f"{stats['errors']} transport errors and {stats['bad']} bad answers: {stats}")
    return stats
