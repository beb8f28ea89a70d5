"""`python -m app predict`: the same Predictor as the service, for files and folders on disk."""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

from app.errors import ApiError
from app.imaging import decode_image
from app.predictor import Predictor


def collect(paths: list[Path]) -> list[Path]:
    """Files as given; folders walked recursively (every file is tried: the content decides, not the suffix)."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found += sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
        else:
            found.append(path)
    return found


def chunks(items: list[Path], size: int) -> Iterator[list[Path]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def predict_files(
    predictor: Predictor, files: list[Path], batch_size: int, top_k: int, max_pixels: int
) -> Iterator[dict[str, Any]]:
    for chunk in chunks(files, batch_size):
        rows: list[dict[str, Any]] = []
        images = []
        for path in chunk:
            row: dict[str, Any] = {"path": str(path)}
            try:
                images.append(decode_image(path.read_bytes(), max_pixels))
            except ApiError as e:
                row["error"] = e.code
                row["detail"] = e.detail
            except OSError as e:
                row["error"] = "unreadable"
                row["detail"] = e.strerror or str(e)
            rows.append(row)
        predictions = iter(predictor.predict(images))
        for row in rows:
            if "error" not in row:
                pred = next(predictions)
                row.update(label=pred.label, probability=round(pred.probability, 6))
                row["top"] = [
                    {"label": c, "probability": round(p, 6)} for c, p in pred.top(predictor.classes, top_k)
                ]
            yield row


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


def run_predict(
    model: Path, paths: list[Path], fmt: str, device: str, batch_size: int, top_k: int, max_pixels: int
) -> int:
    from tqdm import tqdm

    files = collect(paths)
    missing = [p for p in paths if not p.exists()]
    if missing:
        print(f"error: no such file or folder: {', '.join(map(str, missing))}", file=sys.stderr)
        return 2
    predictor = Predictor.load(model, device)
    bar = tqdm(
        total=len(files), unit="img", file=sys.stderr, disable=len(files) < 50 or not sys.stderr.isatty()
    )
    rows = []
    for row in predict_files(predictor, files, batch_size, top_k, max_pixels):
        rows.append(row)
        bar.update(1)
    bar.close()
    write(rows, fmt, sys.stdout)
    return 1 if rows and all("error" in r for r in rows) else 0
