"""Rows of the output table, written as CSV or Parquet, with `--resume`.

Columns: path, (a regression) its values, (key points) NAME_x and NAME_y, (segmentation) share_CODE for each code and
`mask`, the mask PNG written for the input (`mask_file`); (a classifier) (multi-label) labels: those over its threshold, separated by spaces, then label,
probability, label_2, probability_2, ... label_K, probability_K (the top-k beyond the first), error (the API's stable
codes) and detail; a failed file has only path, error and detail. CSV cells that
a spreadsheet would run as a formula are escaped (csv_cell); Parquet holds the values as they are. While a job
runs, finished rows are appended to OUT.partial.csv (flushed each chunk), so an interrupted job loses at most a
chunk; at the end the output is written in input order and the journal removed. `--resume` reads both.
"""

from __future__ import annotations

import csv
import hashlib
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from app.core.prediction import ItemError, Mask, Outcome, Points, Values
from training.manifest import MULTI_LABEL, POINTS, REGRESSION, SEGMENTATION, SINGLE_LABEL

Row = dict[str, Any]


def columns(top_k: int, kind: str = SINGLE_LABEL, names: Sequence[str] = ()) -> list[str]:
    """The table's columns for a model of this kind whose outputs are `names` (the manifest's `classes`)."""
    if kind == REGRESSION:
        middle = list(names)
    elif kind == POINTS:
        middle = [f"{name}_{axis}" for name in names for axis in "xy"]
    elif (
        kind == SEGMENTATION
    ):  # the share of the pixels of each code, and the mask file written for the image
        middle = [*(share_column(name) for name in names), "mask"]
    else:
        extra = [c for i in range(2, top_k + 1) for c in (f"label_{i}", f"probability_{i}")]
        middle = [*(["labels"] if kind == MULTI_LABEL else []), "label", "probability", *extra]
    return ["path", *middle, "error", "detail"]


def row_of(
    path: str, outcome: Outcome, classes: Sequence[str], top_k: int, threshold: float | None = None
) -> Row:
    """`threshold`: a multi-label model's; its `labels` are those over it (learn.predict's), joined by spaces."""
    if isinstance(outcome, ItemError):
        return {"path": path, "error": outcome.code, "detail": outcome.detail}
    row: Row = {"path": path}
    if isinstance(outcome, Values):
        return row | dict(zip(classes, outcome.values, strict=True))
    if isinstance(outcome, Points):
        return row | {
            f"{n}_{axis}": v
            for n, p in zip(classes, outcome.points, strict=True)
            for axis, v in zip("xy", p, strict=False)
        }
    if isinstance(outcome, Mask):
        return row | {share_column(n): v for n, v in zip(classes, outcome.shares(len(classes)), strict=True)}
    if threshold is not None:
        row["labels"] = " ".join(label for label, _ in outcome.over(classes, threshold))
    for rank, (label, probability) in enumerate(outcome.top(classes, top_k), start=1):
        row[f"label{suffix(rank)}"] = label
        row[f"probability{suffix(rank)}"] = probability
    return row


def share_column(code: str) -> str:
    return f"share_{code}"


def mask_file(folder: Path, path: str) -> Path:
    """Where a segmentation's mask of the input `path` goes in `folder`: NAME-HASH.png, the input's name and 8 hex
    characters of its path's sha256 (inputs of one name in several folders get files of their own; a rerun or
    --resume writes the same file)."""
    digest = hashlib.sha256(path.encode()).hexdigest()[:8]
    return folder / f"{Path(path).stem}-{digest}.png"


def chunk_rows(
    paths: Sequence[Path | str],
    outcomes: Sequence[Outcome],
    classes: Sequence[str],
    top_k: int,
    threshold: float | None,
    masks: Path | None,
) -> list[Row]:
    """The rows of one chunk of files; a segmentation's masks written into `masks` (the `mask` column)."""
    rows = [row_of(str(p), o, classes, top_k, threshold) for p, o in zip(paths, outcomes, strict=True)]
    for row, outcome in zip(rows, outcomes, strict=True):
        if isinstance(outcome, Mask) and masks is not None:
            row["mask"] = write_mask(masks, row["path"], outcome)
    return rows


def write_mask(folder: Path, path: str, mask: Mask) -> str:
    """The mask PNG of `path` written into `folder` (atomically); its path, for the `mask` column."""
    target = mask_file(folder, path)
    folder.mkdir(parents=True, exist_ok=True)
    staged = target.with_name(f".{target.name}.{os.getpid()}.tmp")  # several scoring processes: their own
    staged.write_bytes(mask.png)
    os.replace(staged, target)
    return str(target)


# A cell starting with one of these is a formula to a spreadsheet (OWASP "CSV injection"): a file named
# `=2+5+cmd|' -C calc'!A0.png` would run when the CSV is opened. Such cells get a leading ', which a spreadsheet
# shows as text; a cell that is ' before such a start gets one more, so that reading the CSV back is exact.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _formula_like(text: str) -> bool:
    return text.lstrip("'").startswith(FORMULA_STARTS)


def csv_cell(value: Any) -> Any:
    """A cell made safe to open in a spreadsheet; anything but text as it is."""
    return f"'{value}" if isinstance(value, str) and _formula_like(value) else value


def from_csv_cell(text: str) -> str:
    """The inverse of csv_cell."""
    return text[1:] if text.startswith("'") and _formula_like(text[1:]) else text


def csv_row(row: Row) -> Row:
    return {k: csv_cell(v) for k, v in row.items()}


def ranked(row: Row) -> list[tuple[Any, float]]:
    """A prediction row's (label, probability) pairs, best first: label/probability, then label_2, ..."""
    pairs = []
    rank = 1
    while f"label{suffix(rank)}" in row:
        pairs.append((row[f"label{suffix(rank)}"], row[f"probability{suffix(rank)}"]))
        rank += 1
    return pairs


def suffix(rank: int) -> str:
    """The column suffix of the rank-th class: '' for the first, '_2', '_3', ... after it."""
    return "" if rank == 1 else f"_{rank}"


def journal_path(out: Path) -> Path:
    return out.with_name(out.name + ".partial.csv")


def read_rows(path: Path) -> list[Row]:
    if not path.exists():
        return []
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return [{k: v for k, v in r.items() if v is not None} for r in pq.read_table(path).to_pylist()]
    with path.open(newline="", encoding="utf-8") as f:
        return [{k: _typed(k, v) for k, v in r.items() if v not in ("", None)} for r in csv.DictReader(f)]


def is_text(column: str) -> bool:
    """path, labels, label, label_N, mask, error, detail hold text; every other column a number (probabilities,
    a regression's values, key points' coordinates)."""
    return (
        column in ("path", "labels", "error", "detail", "mask")
        or column == "label"
        or column.startswith("label_")
    )


def _typed(column: str, value: str) -> Any:
    return from_csv_cell(value) if is_text(column) else float(value)


def done_rows(out: Path) -> dict[str, Row]:
    """Rows already written by an earlier run (for --resume): path -> row."""
    rows = read_rows(out) + read_rows(journal_path(out))
    return {r["path"]: r for r in rows}


class Journal:
    """OUT.partial.csv, appended and flushed chunk by chunk."""

    def __init__(self, out: Path, names: list[str]) -> None:
        self.path = journal_path(out)
        self.columns = names
        fresh = not self.path.exists()
        self._file = self.path.open("a", newline="", encoding="utf-8")
        self._writer = csv.DictWriter(self._file, self.columns, extrasaction="ignore")
        if fresh:
            self._writer.writeheader()

    def add(self, rows: Iterable[Row]) -> None:
        self._writer.writerows(csv_row(r) for r in rows)
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def write_table(out: Path, rows: list[Row], names: list[str]) -> None:
    """The whole table (`names`: its columns), atomically (written beside, then renamed into place)."""
    staged = out.with_name(f".{out.name}.tmp")
    if out.suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        types = {n: pa.string() if is_text(n) else pa.float64() for n in names}
        table = pa.table({n: pa.array([r.get(n) for r in rows], type=types[n]) for n in names})
        pq.write_table(table, staged)
    else:
        with staged.open("w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, names, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(csv_row(r) for r in rows)
    os.replace(staged, out)
    journal_path(out).unlink(missing_ok=True)
