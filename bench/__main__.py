"""`python -m bench` (make bench): every contender on every model, one at a time, medians of several runs.

In process: the limit (decode + the backend's pipelines + forward, batches of 1/8/32) for the fastai and the ONNX
Runtime backends, a `learn.predict` loop, and `python -m app score` (the local engine) over 1,024 files.
Servers under wrk at c=1 and c=16 (multipart uploads rotating over 64 real PNG/JPEG files, every answer checked):
the HTTP floor (a bare FastAPI endpoint that reads the upload), a minimal batching server (bench/minimal_server.py),
the tutorial server (FastAPI + learn.predict), and learnserve with each backend, started as `make serve` does.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.assets import MODELS, WORK, BenchModel, ensure_images, ensure_model
from bench.load import memory_mb, running_server, wrk
from bench.report import write_report

SERVERS = (
    "floor",
    "minimal",
    "tutorial",
    "learnserve",
    "learnserve-workers",
    "learnserve-capture",
    "learnserve-capture-5pct",
    "learnserve-onnx",
)
CONTENDERS = ("limit", "limit-onnx", "predict", "score", *SERVERS)


def inprocess(what: str, m: BenchModel, seconds: float, backend: str = "fastai") -> dict[str, float]:
    cmd = [sys.executable, "-m", "bench.inprocess", what, str(m.path), str(m.images), "--seconds", str(seconds),
           "--backend", backend]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return dict(json.loads(out.strip().splitlines()[-1]))


def score(m: BenchModel, copies: int) -> dict[str, float]:
    """`python -m app score` over the 64 images listed `copies` times: the local engine's img/s, load excluded."""
    listing = WORK / f"{m.name}-paths.txt"
    listing.write_text("".join(f"{p}\n" for _ in range(copies) for p in sorted(m.images.iterdir())))
    out = WORK / f"{m.name}-scores.csv"
    cmd = [sys.executable, "-m", "app", "score", str(listing), "--model", str(m.path), "--out", str(out)]
    err = subprocess.run(cmd, capture_output=True, text=True, check=True).stderr
    rate = re.search(r"([\d,.]+) img/s", err)
    assert rate, err
    return {"ips": float(rate.group(1).replace(",", ""))}


def median_of(runs: list[dict[str, float]]) -> dict[str, float]:
    return {k: statistics.median(r[k] for r in runs) for k in runs[0]}


def serve_and_load(
    contender: str, m: BenchModel, seconds: float, repeats: int, log: Path
) -> dict[str, float]:
    with running_server(contender, m, log) as server:
        time.sleep(0.5)
        idle = memory_mb(server.pid, "VmRSS")
        wrk(server.port, m, 4, 2)  # warm-up
        c1 = median_of([wrk(server.port, m, 1, seconds) for _ in range(repeats)])
        c16 = median_of([wrk(server.port, m, 16, seconds) for _ in range(repeats)])
        rss = memory_mb(server.pid)
    return {"rps_c16": c16["rps"], "p50_c1_ms": c1["p50_us"] / 1000, "p99_c1_ms": c1["p99_us"] / 1000,
            "p50_c16_ms": c16["p50_us"] / 1000, "rps_c1": c1["rps"], "rss_mb": rss, "idle_rss_mb": idle,
            "ready_s": server.ready_seconds}  # fmt: skip


def main() -> int:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, from: {', '.join(MODELS)}")
    p.add_argument("--seconds", type=float, default=6.0, help="length of each load run (6)")
    p.add_argument("--repeats", type=int, default=3, help="runs per measurement; the median is reported (3)")
    p.add_argument("--contenders", default=",".join(CONTENDERS), help=f"from: {', '.join(CONTENDERS)}")
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "RESULTS.md")
    args = p.parse_args()
    WORK.mkdir(exist_ok=True)
    log = WORK / "bench.log"
    contenders = args.contenders.split(",")
    results: dict[str, dict[str, Any]] = {}
    started = time.perf_counter()
    for name in args.models.split(","):
        m = MODELS[name]
        print(f"[{name}] preparing model and images", flush=True)
        ensure_model(m, log)
        ensure_images(m)
        row: dict[str, Any] = {}
        for what, backend in (("limit", "fastai"), ("limit-onnx", "onnx")):
            if what in contenders:
                row[what] = median_of(
                    [inprocess("limit", m, args.seconds / 2, backend) for _ in range(args.repeats)]
                )
                print(f"[{name}] {what}: {row[what]}", flush=True)
        if "limit" in contenders:
            row["plain_rss_mb"] = inprocess("rss", m, 0)["rss_mb"]
        if "predict" in contenders:
            row["predict"] = median_of(
                [inprocess("predict", m, args.seconds / 2) for _ in range(args.repeats)]
            )
            print(f"[{name}] learn.predict loop: {row['predict']}", flush=True)
        if "score" in contenders:
            # about three seconds of work at the in-process limit, so that the rate is not the first chunk's
            copies = (
                max(4, round(max(row["limit"][f"ips_b{b}"] for b in (1, 8, 32)) * 3 / 64))
                if "limit" in row
                else 16
            )
            row["score"] = median_of([score(m, copies) for _ in range(args.repeats)]) | {"files": 64 * copies}
            print(f"[{name}] score (local engine): {row['score']}", flush=True)
        for contender in SERVERS:
            if contender in contenders:
                row[contender] = serve_and_load(contender, m, args.seconds, args.repeats, log)
                print(f"[{name}] {contender}: {row[contender]}", flush=True)
        results[name] = row
    (WORK / "results.json").write_text(json.dumps(results, indent=2))
    write_report(results, args.out, args, time.perf_counter() - started)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
