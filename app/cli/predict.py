"""`python -m app predict`: classify files and folders with the server's core and settings (sha256 pin, torch
threads, batch pixel cap, top-k default), and print a table, CSV or JSON.

Exit status: 0 when every file was classified; 1 when one could not be (without --keep-going the first such file
ends the run; with it every file is tried and each failure reported in its row); 2 for a usage problem (no such
path, an empty folder, no model).
"""

from __future__ import annotations

import asyncio
import csv
import json
import sys
from pathlib import Path
from typing import Any, TextIO

from app.cli.explain_files import write_overlays
from app.config import Settings
from app.core.files import classify_files
from app.core.prediction import ItemError, Mask
from app.core.repository import open_model
from app.scoring.output import Row, columns, csv_row, ranked, row_of, write_mask


def collect(paths: list[Path]) -> list[Path]:
    """Files as given; folders walked recursively (every file is tried: the content decides, not the suffix)."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found += sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
        else:
            found.append(path)
    return found


async def predict_rows(
    settings: Settings,
    files: list[Path],
    top_k: int,
    keep_going: bool,
    explain: Path | None = None,
    masks: Path = Path("masks"),
) -> tuple[list[Row], list[str], int]:
    """One row per file (scoring's row shape), in order, the table's columns for the model's kind, and how many
    classified files could not be explained; without `keep_going`, up to the first failure. With `explain`, one
    overlay per classified file is written there; a segmentation's masks are written into `masks` (scoring's
    `mask_file` names)."""
    from tqdm import tqdm

    rows: list[Row] = []
    bar = tqdm(
        total=len(files), unit="img", file=sys.stderr, disable=len(files) < 50 or not sys.stderr.isatty()
    )
    async with open_model(settings) as unit:
        k = min(top_k, len(unit.classes))
        manifest = unit.manifest
        names = columns(k, manifest.kind, manifest.classes)
        async for paths, outcomes in classify_files(unit, files, settings.max_upload_bytes):
            for path, outcome in zip(paths, outcomes, strict=True):
                rows.append(row_of(str(path), outcome, unit.classes, k, manifest.labels_threshold))
                if isinstance(outcome, Mask):
                    rows[-1]["mask"] = write_mask(masks, str(path), outcome)
                if isinstance(outcome, ItemError) and not keep_going:
                    bar.close()
                    return rows, names, 0
            bar.update(len(paths))
        unexplained = 0
        if explain is not None:
            classified = [Path(r["path"]) for r in rows if "error" not in r]
            unexplained = await write_overlays(unit, classified, explain, settings.max_upload_bytes)
    bar.close()
    return rows, names, unexplained


def outputs(row: Row, names: list[str]) -> list[str]:
    """A regression's, key points' or segmentation's number columns present in a row (everything but path, mask,
    error, detail)."""
    return [n for n in names if n in row and n not in ("path", "mask", "error", "detail")]


def as_json(row: Row, names: list[str]) -> dict[str, Any]:
    """The API's shapes: a prediction with `top` (and `labels`), values, points, or `error: {code, detail}`."""
    if "error" in row:
        return {"path": row["path"], "error": {"code": row["error"], "detail": row["detail"]}}
    if "mask" in names:  # segmentation: the shares by code, and the mask file written
        shares = {n[len("share_") :]: round(row[n], 6) for n in outputs(row, names)}
        return {"path": row["path"], "shares": shares, "mask": row.get("mask")}
    if "label" not in row and names[1:2] and names[1].endswith("_x"):  # key points, as the API answers them
        pairs = outputs(row, names)
        points = [{"name": x[: -len("_x")], "x": round(row[x], 6), "y": round(row[y], 6)}
                  for x, y in zip(pairs[::2], pairs[1::2], strict=True)]  # fmt: skip
        return {"path": row["path"], "points": points}
    if "label" not in row:  # regression: the values, by name
        return {
            "path": row["path"],
            "values": [{"name": n, "value": round(row[n], 6)} for n in outputs(row, names)],
        }
    top = [{"label": label, "probability": round(p, 6)} for label, p in ranked(row)]
    labels = {"labels": row["labels"].split()} if "labels" in row else {}
    return {
        "path": row["path"],
        **labels,
        "label": row["label"],
        "probability": round(row["probability"], 6),
        "top": top,
    }


def write(rows: list[Row], fmt: str, names: list[str], out: TextIO) -> None:
    if fmt == "json":
        json.dump([as_json(r, names) for r in rows], out, indent=2)
        out.write("\n")
    elif fmt == "csv":
        writer = csv.DictWriter(out, names, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(csv_row(r) for r in rows)
    else:
        out.write(table(rows, names))


def table(rows: list[Row], names: list[str]) -> str:
    """Aligned columns: path, label (or labels), probability, then the other classes, the outputs or the error."""
    cells = []
    for r in rows:
        if "error" in r:
            cells.append((r["path"], "-", "-", f"error: {r['error']} ({r['detail']})"))
        elif "label" not in r:  # regression, key points or segmentation (then the mask file too)
            numbers = ", ".join(f"{n} {r[n]:.4g}" for n in outputs(r, names))
            cells.append((r["path"], "-", "-", numbers + (f" -> {r['mask']}" if "mask" in r else "")))
        elif "labels" in r:  # multi-label: the labels over the threshold, then every label's probability
            every = ", ".join(f"{label} {p:.3f}" for label, p in ranked(r))
            cells.append((r["path"], r["labels"] or "(none)", f"{r['probability']:.4f}", every))
        else:
            others = ", ".join(f"{label} {p:.3f}" for label, p in ranked(r)[1:])
            cells.append((r["path"], str(r["label"]), f"{r['probability']:.4f}", others))
    header = (
        "path",
        "labels" if "labels" in names else "label",
        "prob",
        "top" if "label" in names else "outputs",
    )
    widths = [max(len(row[i]) for row in [header, *cells]) for i in range(3)]
    lines = [
        f"{row[0]:<{widths[0]}}  {row[1]:<{widths[1]}}  {row[2]:>{widths[2]}}  {row[3]}".rstrip()
        for row in [header, *cells]
    ]
    return "\n".join(lines) + "\n"


def run_predict(
    settings: Settings,
    paths: list[Path],
    fmt: str,
    top_k: int | None,
    keep_going: bool,
    model_given: bool,
    explain: Path | None = None,
    masks: Path = Path("masks"),
) -> int:
    missing = [p for p in paths if not p.exists()]
    if missing:
        print(f"error: no such file or folder: {', '.join(map(str, missing))}", file=sys.stderr)
        return 2
    files = collect(paths)
    if not files:
        print(f"error: no files to classify in {', '.join(map(str, paths))}", file=sys.stderr)
        return 2
    if not model_given and settings.model_dir is None and not settings.model_path.exists():
        print(
            f"error: no model: pass --model models/NAME.pkl ({settings.model_path} does not exist)",
            file=sys.stderr,
        )
        return 2
    k = top_k or settings.top_k
    rows, names, unexplained = asyncio.run(predict_rows(settings, files, k, keep_going, explain, masks))
    write(rows, fmt, names, sys.stdout)
    if unexplained:  # each one's reason is on stderr already
        print(f"{unexplained} of {len(rows)} files could not be explained", file=sys.stderr)
    failed = sum("error" in r for r in rows)
    if failed and not keep_going:
        print(f"error: stopped at {rows[-1]['path']}: {rows[-1]['detail']} (--keep-going tries every file)",
              file=sys.stderr)  # fmt: skip
    elif failed:
        print(f"{failed} of {len(rows)} files could not be classified", file=sys.stderr)
    return 1 if failed or unexplained else 0
