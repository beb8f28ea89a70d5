"""Numeric targets per image, read from a CSV: a regression's values, or key points' coordinates (issue 22).

A CSV with a `path` column and no `label`/`labels` column holds numbers. Its target columns are every column but
`path` and `is_valid`, or those `--targets` names (comma-separated, in that order). When the chosen columns come in
pairs `NAME_x, NAME_y` (in that order) they are key points named NAME, in pixels of the ORIGINAL image (x to the
right, y down, from the top-left corner); otherwise each column is one value of a regression, named by its header.
`--targets NAME` also names a key point whose `NAME_x` and `NAME_y` columns exist.

Every cell must be a finite number: an empty cell, text or nan is refused naming its line and column, so a model is
never trained on a silently dropped or zero-filled target.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pandas as pd

from training.datasets import ImageTable, Row, _parse_is_valid, _verify
from training.errors import TrainingError
from training.manifest import POINTS, REGRESSION

NOT_TARGETS = ("path", "is_valid")


def choose_columns(fields: list[str], targets: str | None, source: Path) -> tuple[str, list[str], list[str]]:
    """(kind, columns, names): which columns are the targets, and whether they are values or key points."""
    candidates = [f for f in fields if f not in NOT_TARGETS]
    if targets is None:
        columns = candidates
    else:
        columns = []
        for name in (n.strip() for n in targets.split(",")):
            if name in candidates:
                columns.append(name)
            elif f"{name}_x" in candidates and f"{name}_y" in candidates:
                columns += [f"{name}_x", f"{name}_y"]
            else:
                raise TrainingError(
                    f"--targets: {source} has no column '{name}' (nor '{name}_x' and '{name}_y'); its columns are "
                    f"{', '.join(candidates) or '(none but path)'}"
                )
    if not columns:
        raise TrainingError(
            f"{source} has no target columns: besides 'path' it needs a 'label' column (classes), a 'labels' "
            "column (multi-label), or numeric columns (regression values, or NAME_x,NAME_y key points)"
        )
    if len(set(columns)) != len(columns):
        raise TrainingError(f"--targets names a column twice: {', '.join(columns)}")
    pairs = list(zip(columns[::2], columns[1::2], strict=False))
    if len(columns) % 2 == 0 and all(x.endswith("_x") and y == x[:-2] + "_y" for x, y in pairs):
        return POINTS, columns, [x[:-2] for x, _ in pairs]
    return REGRESSION, columns, list(columns)


def number(cell: str | None, source: Path, line: int, column: str) -> float:
    text = (cell or "").strip()
    if not text:
        raise TrainingError(f"{source} line {line}, column '{column}': empty; every image needs every target")
    try:
        value = float(text)
    except ValueError:
        raise TrainingError(f"{source} line {line}, column '{column}': '{text}' is not a number") from None
    if not math.isfinite(value):
        raise TrainingError(f"{source} line {line}, column '{column}': '{text}' is not a finite number")
    return value


def load_numeric_table(source: Path, targets: str | None) -> ImageTable:
    """The verified table of a numeric CSV: path, label (empty), is_valid when given, and the target columns."""
    with source.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        fields = list(reader.fieldnames or ())
        if "path" not in fields:
            raise TrainingError(f"{source} needs a header row with a 'path' column")
        kind, columns, names = choose_columns(fields, targets, source)
        has_split = "is_valid" in fields
        rows, values = [], {}
        for line, row in enumerate(reader, start=2):
            p = Path(row["path"]).expanduser()
            p = (p if p.is_absolute() else source.parent / p).resolve()
            is_valid = _parse_is_valid(row["is_valid"], source, line) if has_split else None
            values[str(p)] = [number(row[c], source, line, c) for c in columns]
            rows.append(Row(str(p), "", is_valid))
    good, corrupt, missing = _verify(rows)
    if not good:
        raise TrainingError(
            f"{source} has no readable images ({len(missing)} missing, {len(corrupt)} corrupt)"
        )
    frame = pd.DataFrame([r[:3] if has_split else r[:2] for r in good],
                         columns=["path", "label", "is_valid"] if has_split else ["path", "label"])  # fmt: skip
    frame[columns] = pd.DataFrame([values[r.path] for r in good], columns=columns)
    split_by = "column" if has_split else None
    return ImageTable(str(source), frame, corrupt, 0, split_by, [], missing, False, kind, columns, names)
