"""`python -m app predict`: classify files and folders with the server's core and settings (sha256 pin, torch
threads, batch pixel cap, top-k default), and print a table, CSV or JSON."""

from __future__ import annotations

import asyncio
import csv
import json
import sys
from pathlib import Path
from typing import Any, TextIO

from app.config import Settings
from app.core.files import classify_files
from app.core.prediction import ItemError
from app.core.repository import open_model


def collect(paths: list[Path]) -> list[Path]:
    """Files as given; folders walked recursively (every file is tried: the content decides, not the suffix)."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found += sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
        else:
            found.append(path)
    return found


async def predict_rows(settings: Settings, files: list[Path], top_k: int) -> list[dict[str, Any]]:
    from tqdm import tqdm

    rows: list[dict[str, Any]] = []
    bar = tqdm(
        total=len(files), unit="img", file=sys.stderr, disable=len(files) < 50 or not sys.stderr.isatty()
    )
    async with open_model(settings) as unit:
        async for paths, outcomes in classify_files(unit, files, settings.max_upload_bytes):
            for path, outcome in zip(paths, outcomes, strict=True):
                row: dict[str, Any] = {"path": str(path)}
                if isinstance(outcome, ItemError):
                    row.update(error=outcome.code, detail=outcome.detail)
                else:
                    row.update(label=outcome.label, probability=round(outcome.probability, 6))
                    row["top"] = [
                        {"label": c, "probability": round(p, 6)} for c, p in outcome.top(unit.classes, top_k)
                    ]
                rows.append(row)
            bar.update(len(paths))
    bar.close()
    return rows


def write(rows: list[dict[str, Any]], fmt: str, out: TextIO) -> None:
    if fmt == "json":
        json.dump(rows, out, indent=2)
        out.write("\n")
    elif fmt == "csv":
        writer = csv.writer(out)
        writer.writerow(["path", "label", "probability", "error"])
        for r in rows:
            writer.writerow([r["path"], r.get("label", ""), r.get("probability", ""), r.get("error", "")])
    else:
        width = min(60, max([len(r["path"]) for r in rows] + [4]))
        out.write(f"{'path':<{width}}  {'label':<16} {'prob':>7}  top\n")
        for r in rows:
            if "error" in r:
                out.write(f"{r['path']:<{width}}  error: {r['error']} ({r['detail']})\n")
            else:
                top = ", ".join(f"{t['label']} {t['probability']:.3f}" for t in r["top"][1:])
                out.write(f"{r['path']:<{width}}  {r['label']:<16} {r['probability']:>7.4f}  {top}\n")


def run_predict(settings: Settings, paths: list[Path], fmt: str, top_k: int | None) -> int:
    missing = [p for p in paths if not p.exists()]
    if missing:
        print(f"error: no such file or folder: {', '.join(map(str, missing))}", file=sys.stderr)
        return 2
    rows = asyncio.run(predict_rows(settings, collect(paths), top_k or settings.top_k))
    write(rows, fmt, sys.stdout)
    return 1 if rows and all("error" in r for r in rows) else 0
