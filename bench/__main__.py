"""`python -m bench` (make bench): every contender on every model, one at a time, medians of several runs.

In process: the limit (decode + the backend's pipelines + forward, batches of 1/8/32) for the fastai and the ONNX
Runtime backends, a `learn.predict` loop, and `python -m app score` (the local engine) over a few seconds of files.
Servers under wrk at c=1 and c=16 (multipart uploads rotating over 64 real PNG/JPEG files, every answer checked):
the HTTP floor (a bare FastAPI endpoint that reads the upload), a minimal batching server (bench/minimal_server.py),
the tutorial server (FastAPI + learn.predict), and learnserve with each backend, started as `make serve` does, in one
process and with LEARNSERVE_WORKERS=auto (`-workers`; `-workers-N` for N processes).

`--cuda` (make bench CUDA=1) runs the CUDA contenders on the GPU instead: the in-process limit at batches up to 64,
learnserve in one process and with WORKERS=auto (a process per two cores), at 1 and 64 clients, resnet34 at 224 px;
the report goes to bench/RESULTS-cuda.md.
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
from bench.load import WORKERS_CONTENDER, memory_mb, running_server, wrk
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
    "learnserve-onnx-workers",
)
CONTENDERS = ("limit", "limit-onnx", "predict", "score", *SERVERS)
CUDA_CONTENDERS = ("limit", "learnserve", "learnserve-workers")
CPU_BATCHES = (1, 8, 32)
CUDA_BATCHES = (1, 8, 16, 32, 64)


def inprocess(
    what: str, m: BenchModel, seconds: float, backend: str = "fastai", device: str = "cpu",
    batches: tuple[int, ...] = CPU_BATCHES,
) -> dict[str, float]:  # fmt: skip
    cmd = [sys.executable, "-m", "bench.inprocess", what, str(m.path), str(m.images), "--seconds", str(seconds),
           "--backend", backend, "--device", device, "--batches", ",".join(map(str, batches))]  # fmt: skip
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
    contender: str,
    m: BenchModel,
    seconds: float,
    repeats: int,
    log: Path,
    device: str = "cpu",
    clients: int = 16,
) -> dict[str, float]:
    """One server: c=1, then c=`clients` (reported under the c16 keys, whatever `clients` is)."""
    with running_server(contender, m, log, device) as server:
        time.sleep(0.5)
        idle = memory_mb(server.pid, "VmRSS")
        wrk(server.port, m, clients, 2)  # warm-up: every process of a multi-process server gets requests
        c1 = median_of([wrk(server.port, m, 1, seconds) for _ in range(repeats)])
        c16 = median_of([wrk(server.port, m, clients, seconds) for _ in range(repeats)])
        rss = memory_mb(server.pid)
    return {"rps_c16": c16["rps"], "p50_c1_ms": c1["p50_us"] / 1000, "p99_c1_ms": c1["p99_us"] / 1000,
            "p50_c16_ms": c16["p50_us"] / 1000, "rps_c1": c1["rps"], "rss_mb": rss, "idle_rss_mb": idle,
            "ready_s": server.ready_seconds}  # fmt: skip


def _fastai_workers(contender: str) -> bool:
    found = WORKERS_CONTENDER.fullmatch(contender)
    return found is not None and found.group(1) is None


def cuda_card() -> str:
    """The GPU's name, or exit with why there is none (a CUDA run on a machine without one measures nothing)."""
    probe = "import torch; print(torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')"
    name = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout.strip()
    if not name:
        sys.exit(
            "python -m bench --cuda: torch sees no CUDA device here (torch.cuda.is_available() is False)"
        )
    return name


def main() -> int:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument(
        "--models", help=f"comma-separated, from: {', '.join(MODELS)} (all; resnet34-224 with --cuda)"
    )
    p.add_argument("--seconds", type=float, default=6.0, help="length of each load run (6)")
    p.add_argument("--repeats", type=int, default=3, help="runs per measurement; the median is reported (3)")
    p.add_argument("--contenders", help=f"from: {', '.join(CONTENDERS)}, learnserve[-onnx]-workers-N "
                                        f"(all; with --cuda: {', '.join(CUDA_CONTENDERS)})")  # fmt: skip
    p.add_argument("--cuda", action="store_true", help="the CUDA contenders on the GPU (make bench CUDA=1)")
    p.add_argument("--clients", type=int, help="connections of the loaded runs (16; 64 with --cuda)")
    p.add_argument(
        "--out", type=Path, help="the report (bench/RESULTS.md; bench/RESULTS-cuda.md with --cuda)"
    )
    args = p.parse_args()
    device, batches = ("cuda", CUDA_BATCHES) if args.cuda else ("cpu", CPU_BATCHES)
    args.models = args.models or ("resnet34-224" if args.cuda else ",".join(MODELS))
    args.contenders = args.contenders or ",".join(CUDA_CONTENDERS if args.cuda else CONTENDERS)
    args.clients = args.clients or (64 if args.cuda else 16)
    here = Path(__file__).parent
    args.out = args.out or here / ("RESULTS-cuda.md" if args.cuda else "RESULTS.md")
    WORK.mkdir(exist_ok=True)
    log = WORK / "bench.log"
    contenders = args.contenders.split(",")
    servers = [c for c in contenders if c in SERVERS or WORKERS_CONTENDER.fullmatch(c)]
    unknown = set(contenders) - set(CONTENDERS) - set(servers)
    if unknown or not set(args.models.split(",")) <= set(MODELS):
        p.error(f"unknown contender or model: {', '.join(sorted(unknown)) or args.models}")
    on_cpu = [c for c in contenders if c not in ("limit", "learnserve") and not _fastai_workers(c)]
    if args.cuda and on_cpu:
        p.error(f"with --cuda: limit, learnserve, learnserve-workers[-N] (not {', '.join(on_cpu)})")
    args.card = cuda_card() if args.cuda else None
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
                    [
                        inprocess("limit", m, args.seconds / 2, backend, device, batches)
                        for _ in range(args.repeats)
                    ]
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
            # about eight seconds of work at the in-process limit, so that the rate is not the first chunk's nor the
            # second scoring process's start (3 s gave 0.74 of the limit on a slow machine, 10,240 files 0.94-0.96)
            copies = (
                max(4, round(max(row["limit"][f"ips_b{b}"] for b in batches) * 8 / 64))
                if "limit" in row
                else 16
            )
            row["score"] = median_of([score(m, copies) for _ in range(args.repeats)]) | {"files": 64 * copies}
            print(f"[{name}] score (local engine): {row['score']}", flush=True)
        for contender in servers:
            row[contender] = serve_and_load(
                contender, m, args.seconds, args.repeats, log, device, args.clients
            )
            print(f"[{name}] {contender}: {row[contender]}", flush=True)
        results[name] = row
    (WORK / "results.json").write_text(json.dumps(results, indent=2))
    write_report(results, args.out, args, time.perf_counter() - started)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
