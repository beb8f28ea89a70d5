"""`python -m bench` (make bench): every contender on every model, one at a time, medians of several runs.

Contenders: the in-process limit (decode + the learner's pipelines + learn.model, batches of 1/8/32), a
`learn.predict` loop, the tutorial server (FastAPI + learn.predict), and learnserve started as `make serve` does.
Load: wrk on loopback posting real PNG/JPEG uploads, rotating over 64 images; every answer is checked.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.assets import MODELS, WORK, BenchModel, ensure_images, ensure_model
from bench.load import peak_rss_mb, running_server, wrk
from bench.report import write_report


def inprocess(what: str, m: BenchModel, seconds: float) -> dict[str, float]:
    cmd = [
        sys.executable,
        "-m",
        "bench.inprocess",
        what,
        str(m.path),
        str(m.images),
        "--seconds",
        str(seconds),
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return dict(json.loads(out.strip().splitlines()[-1]))


def median_of(runs: list[dict[str, float]]) -> dict[str, float]:
    return {k: statistics.median(r[k] for r in runs) for k in runs[0]}


def serve_and_load(
    contender: str, m: BenchModel, seconds: float, repeats: int, log: Path
) -> dict[str, float]:
    with running_server(contender, m, log) as (port, pid):
        wrk(port, m, 4, 2)  # warm-up
        c1 = median_of([wrk(port, m, 1, seconds) for _ in range(repeats)])
        c16 = median_of([wrk(port, m, 16, seconds) for _ in range(repeats)])
        rss = peak_rss_mb(pid)
    return {"rps_c16": c16["rps"], "p50_c1_ms": c1["p50_us"] / 1000, "p99_c1_ms": c1["p99_us"] / 1000,
            "p50_c16_ms": c16["p50_us"] / 1000, "rps_c1": c1["rps"], "rss_mb": rss}  # fmt: skip


def main() -> int:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, from: {', '.join(MODELS)}")
    p.add_argument("--seconds", type=float, default=8.0, help="length of each load run (8)")
    p.add_argument("--repeats", type=int, default=3, help="runs per measurement; the median is reported (3)")
    p.add_argument("--contenders", default="limit,predict,tutorial,learnserve")
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
        if "limit" in contenders:
            row["limit"] = median_of([inprocess("limit", m, args.seconds / 2) for _ in range(args.repeats)])
            row["plain_rss_mb"] = inprocess("rss", m, 0)["rss_mb"]
            print(f"[{name}] in-process limit: {row['limit']}", flush=True)
        if "predict" in contenders:
            row["predict"] = median_of(
                [inprocess("predict", m, args.seconds / 2) for _ in range(args.repeats)]
            )
            print(f"[{name}] learn.predict loop: {row['predict']}", flush=True)
        for contender in ("tutorial", "learnserve"):
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
