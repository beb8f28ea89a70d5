"""The markdown table in bench/RESULTS.md (and the README), with the machine and library versions."""

from __future__ import annotations

import argparse
import os
import platform
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def fmt(x: float | None, digits: int = 1) -> str:
    return "-" if x is None else f"{x:,.{digits}f}"


def table(results: dict[str, dict[str, Any]]) -> str:
    lines = [
        "| model | contender | img/s at c=16 | p50 / p99 ms at c=1 | peak RSS MB | ratio to limit |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for model, row in results.items():
        limit = row.get("limit")
        best = max(limit[f"ips_b{b}"] for b in (1, 8, 32)) if limit else None
        if limit:
            lines.append(
                f"| {model} | in-process limit (batch 1 / 8 / 32) | "
                f"{fmt(limit['ips_b1'])} / {fmt(limit['ips_b8'])} / {fmt(limit['ips_b32'])} | "
                f"{fmt(limit['ms_b1'], 2)} (batch of 1) | {fmt(row.get('plain_rss_mb'), 0)} (plain process) | 1.00 |"
            )
        if "predict" in row:
            p = row["predict"]
            ratio = f"{p['ips'] / best:.2f}" if best else "-"
            lines.append(f"| {model} | `learn.predict` loop | {fmt(p['ips'])} (c=1) | {fmt(p['ms'], 2)} | "
                         f"{fmt(p['rss_mb'], 0)} | {ratio} |")  # fmt: skip
        for name, label in (
            ("tutorial", "tutorial server (FastAPI + learn.predict)"),
            ("learnserve", "**learnserve**"),
        ):
            if name in row:
                s = row[name]
                ratio = f"{s['rps_c16'] / best:.2f}" if best else "-"
                lines.append(
                    f"| {model} | {label} | {fmt(s['rps_c16'])} | {fmt(s['p50_c1_ms'], 2)} / {fmt(s['p99_c1_ms'], 2)} | "
                    f"{fmt(s['rss_mb'], 0)} | {ratio} |"
                )
    return "\n".join(lines)


def targets(results: dict[str, dict[str, Any]]) -> str:
    lines = []
    for model, row in results.items():
        if not {"limit", "learnserve"} <= set(row):
            continue
        limit, ls = row["limit"], row["learnserve"]
        best = max(limit[f"ips_b{b}"] for b in (1, 8, 32))
        checks = [
            f"throughput {ls['rps_c16'] / best:.0%} of the limit (target 90%)",
            f"p50 {ls['p50_c1_ms']:.2f} ms vs batch-of-1 {limit['ms_b1']:.2f} ms + 3 (target met: "
            f"{'yes' if ls['p50_c1_ms'] <= limit['ms_b1'] + 3 else 'no'})",
            f"RSS {ls['rss_mb'] / row['plain_rss_mb']:.2f}x a plain process (target 1.3x)"
            if "plain_rss_mb" in row
            else "",
        ]
        if "tutorial" in row:
            checks.append(
                f"{ls['rps_c16'] / row['tutorial']['rps_c16']:.1f}x the tutorial server (target 5x)"
            )
        lines.append(f"- **{model}**: " + "; ".join(c for c in checks if c))
    return "\n".join(lines)


def write_report(
    results: dict[str, dict[str, Any]], out: Path, args: argparse.Namespace, seconds: float
) -> None:
    libs = ", ".join(f"{n} {version(n)}" for n in ("torch", "fastai", "fastapi", "uvicorn", "pillow"))
    text = f"""# Benchmark results

{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {cpu_model()}, {os.cpu_count()} cores, Python {platform.python_version()},
{libs}. Command: `make bench` (`python -m bench --seconds {args.seconds:g} --repeats {args.repeats}`), {seconds / 60:.1f} min.
Medians of {args.repeats} runs. Load: wrk on loopback (2 threads at c=16, 1 at c=1), multipart uploads rotating over
64 PNG/JPEG files, every answer checked for 200 and a label. Servers run one at a time on the same 2 cores as wrk.

{table(results)}

Against the targets:

{targets(results)}
"""
    out.write_text(text)
