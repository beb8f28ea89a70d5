"""Datasets: the bundled digits and marks sets, class folders and CSV files, checked and turned into one table of images.

Every source becomes one table of absolute `path,label` rows (plus `is_valid` when the data says which images
validate), so splitting, training, the reload check and `interpret` all see the same items in the same order.
A multi-label table (a CSV `labels` column, PASCAL's layout, or `--multi-label`) keeps each image's labels in
`label`, separated by spaces (possibly none).
"""

from __future__ import annotations

import csv
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import pandas as pd
from PIL import Image, UnidentifiedImageError

from training.bundled import resolve_source
from training.errors import TrainingError

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp", ".tif", ".tiff"}
REMOVED_DIR = "_removed"  # where `clean` moves deleted files; never read as a class
SPLIT_DIRS = (
    "train",
    "valid",
)  # DATA/train/<class>/..., DATA/valid/<class>/... (fastai's GrandparentSplitter names)
TRUE_WORDS, FALSE_WORDS = {"1", "true", "yes"}, {"0", "false", "no"}


class Row(NamedTuple):
    path: str  # absolute; "" stands for a class folder without a single image file
    label: str
    is_valid: bool | None = None  # None: the data does not say


@dataclass
class ImageTable:
    """The verified items of a dataset, in a stable order."""

    source: str
    frame: pd.DataFrame  # columns: path (absolute str), label (str), and is_valid (bool) when split_by is set
    corrupt: list[str] = field(default_factory=list)
    ignored_non_image: int = 0
    split_by: str | None = None  # "folders" (train/ and valid/) or "column" (a CSV is_valid column)
    ignored_dirs: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # CSV rows naming files that do not exist
    multi_label: bool = False  # `label` holds space-separated labels, any number of them
    target_kind: str | None = None  # regression or key points: numbers per image (training/targets.py)
    target_columns: list[str] = field(default_factory=list)  # the frame's columns holding them
    target_names: list[str] = field(default_factory=list)  # the values' or the points' names

    @property
    def has_classes(self) -> bool:
        """Single-label: one class per image, which a split can stratify by."""
        return not self.multi_label and self.target_kind is None

    @property
    def classes(self) -> list[str]:
        if self.target_kind:
            return list(self.target_names)
        if self.multi_label:
            return sorted({x for text in self.frame["label"] for x in text.split()})
        return sorted(self.frame["label"].unique())

    def counts(self) -> dict[str, int]:
        """Images per class (multi-label: images per label; an image counts once for each of its labels; numeric
        targets: every image has each value or point)."""
        if self.target_kind:
            return {name: len(self.frame) for name in self.target_names}
        labels = (
            self.frame["label"].str.split().explode().dropna() if self.multi_label else self.frame["label"]
        )
        return {str(k): int(v) for k, v in labels.value_counts().sort_index().items()}

    def report(self) -> str:
        what = "labels (multi-label)" if self.multi_label else "classes"
        if self.target_kind:
            what = "values (regression)" if self.target_kind == "regression" else "key points"
        lines = [f"{len(self.frame)} images in {len(self.classes)} {what} from {self.source}"]
        if self.ignored_dirs:
            lines.append(f"ignored folders beside train/ and valid/: {', '.join(self.ignored_dirs)}")
        if self.ignored_non_image:
            lines.append(f"ignored {self.ignored_non_image} non-image files")
        if self.missing:
            lines.append(
                f"skipped {len(self.missing)} missing files (in the CSV, not on disk): {shorten(self.missing)}"
            )
        if self.corrupt:
            lines.append(f"skipped {len(self.corrupt)} corrupt images: {shorten(self.corrupt)}")
        return "\n".join(lines)


def shorten(items: list[str], n: int = 5) -> str:
    return ", ".join(items[:n]) + (f" and {len(items) - n} more" if len(items) > n else "")


def load_table(data: str, multi_label: bool = False, targets: str | None = None) -> ImageTable:
    """The verified table; `multi_label`: read a CSV's `label` column as space-separated labels (a `labels`
    column always is). A CSV without either holds numbers (training/targets.py); `targets` picks its columns."""
    source = resolve_source(data)
    from training.segmentation_data import is_segmentation_dir  # it imports this module

    if is_segmentation_dir(source):  # else images/ and masks/ would read as two classes
        raise TrainingError(
            f"{data} is a segmentation set (images/ and masks/): only `train` reads it so far"
        )
    if source.suffix.lower() == ".csv" and not multi_label and not _has_label_column(source):
        from training.targets import load_numeric_table

        return load_numeric_table(source, targets)
    if targets is not None:
        raise TrainingError(
            f"--targets picks the numeric columns of a regression or key point CSV; {data} has classes: drop it"
        )
    split_by, ignored_dirs = None, []
    if multi_label and source.suffix.lower() != ".csv":
        raise TrainingError(f"--multi-label needs a CSV of path,labels rows; {data} is not a .csv file")
    if source.is_dir() and is_split_layout(source):
        rows: list[Row] = []
        ignored = 0
        for name in SPLIT_DIRS:
            found, n = _scan_folder(source / name, is_valid=name == "valid")
            rows, ignored = rows + found, ignored + n
        split_by, ignored_dirs = "folders", [d.name for d in class_dirs(source) if d.name not in SPLIT_DIRS]
    elif source.is_dir():
        rows, ignored = _scan_folder(source)
    elif source.suffix.lower() == ".csv":
        (rows, multi_label), ignored = _read_csv(source, multi_label), 0
        split_by = "column" if rows and rows[0].is_valid is not None else None
    else:
        raise TrainingError(f"DATA '{data}' must be a folder of class subfolders, a .csv file, or 'digits'")
    good, corrupt, missing = _verify(rows)
    columns = ["path", "label", "is_valid"] if split_by else ["path", "label"]
    frame = pd.DataFrame([r[: len(columns)] for r in good], columns=columns)
    table = ImageTable(str(source), frame, corrupt, ignored, split_by, ignored_dirs, missing, multi_label)
    _check_classes(table, source, rows)
    return table


def class_dirs(root: Path) -> list[Path]:
    return sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith((".", "_")))


def is_split_layout(root: Path) -> bool:
    """DATA/train/ and DATA/valid/ both hold class folders (and no loose images): a split the user made."""
    for name in SPLIT_DIRS:
        d = root / name
        if not d.is_dir() or not class_dirs(d):
            return False
        if any(f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS for f in d.iterdir()):
            return False  # images directly in train/: then `train` is a class
    return True


def _scan_folder(root: Path, is_valid: bool | None = None) -> tuple[list[Row], int]:
    dirs = class_dirs(root)
    rows: list[Row] = []
    ignored = 0
    for class_dir in dirs:
        for f in sorted(class_dir.rglob("*")):
            if not f.is_file():
                continue
            if f.suffix.lower() in IMAGE_EXTENSIONS:
                rows.append(Row(str(f.resolve()), class_dir.name, is_valid))
            else:
                ignored += 1
    # Classes with no image at all still count, so the user hears about an empty class by name.
    for class_dir in dirs:
        if not any(row.label == class_dir.name for row in rows):
            rows.append(Row("", class_dir.name, is_valid))
    return rows, ignored


def _has_label_column(path: Path) -> bool:
    with path.open(newline="", encoding="utf-8") as f:
        header = next(csv.reader(f), [])
    return bool({"label", "labels"} & set(header))


def _read_csv(path: Path, multi_label: bool) -> tuple[list[Row], bool]:
    """The rows, and whether they are multi-label: a `labels` column (PASCAL's name), or `label` when asked."""
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        fields = set(reader.fieldnames or ())
        if "path" not in fields or not fields & {"label", "labels"}:
            raise TrainingError(
                f"{path} needs a header row with 'path' and 'label' columns "
                "(or 'labels', space-separated, for multi-label data)"
            )
        column = "labels" if "labels" in fields else "label"
        multi_label = multi_label or column == "labels"
        has_split = "is_valid" in fields
        rows = []
        for line, row in enumerate(reader, start=2):
            p = Path(row["path"]).expanduser()
            p = p if p.is_absolute() else path.parent / p
            is_valid = _parse_is_valid(row["is_valid"], path, line) if has_split else None
            text = row[column] or ""
            label = " ".join(sorted(set(text.split()))) if multi_label else text.strip()
            rows.append(Row(str(p.resolve()), label, is_valid))
    return rows, multi_label


def _parse_is_valid(value: str | None, path: Path, line: int) -> bool:
    word = (value or "").strip().lower()
    if word in TRUE_WORDS | FALSE_WORDS:
        return word in TRUE_WORDS
    raise TrainingError(f"{path} line {line}: is_valid must be true or false (or 1/0, yes/no), got '{value}'")


def _verify(rows: list[Row]) -> tuple[list[Row], list[str], list[str]]:
    """Drop files that do not exist and files PIL cannot decode (as fastai's verify_images does), listing both."""
    from fastprogress.fastprogress import progress_bar

    good, corrupt, missing = [], [], []
    show_bar = len(rows) > 2000 and sys.stdout.isatty()
    for row in progress_bar(rows, leave=False) if show_bar else rows:
        if not row.path:
            continue
        if not os.path.isfile(row.path):
            missing.append(row.path)
            continue
        try:
            with Image.open(row.path) as im:
                im.draft("RGB", (64, 64))
                im.load()
            good.append(row)
        except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError):
            corrupt.append(row.path)
    return good, corrupt, missing


def labels_of(row: Row, multi_label: bool) -> set[str]:
    return set(row.label.split()) if multi_label else {row.label}


def _check_classes(table: ImageTable, source: Path, rows: list[Row]) -> None:
    labels = sorted(set().union(*(labels_of(row, table.multi_label) for row in rows)))
    if table.multi_label and not labels:
        raise TrainingError(
            f"{source} has no labels: its labels column is empty in every row; give each image its labels "
            "separated by spaces (e.g. 'cat dog')"
        )
    if len(labels) < 2 and not table.multi_label:
        raise TrainingError(
            f"{source} has {len(labels)} class(es); put images in at least two class subfolders"
        )
    readable = set(table.classes)
    empty = [label for label in labels if label not in readable]
    if empty:
        # The skipped files are named here too: the report that lists them is never printed after this error.
        details = []
        for why, paths in (("corrupt", set(table.corrupt)), ("missing", set(table.missing))):
            skipped = [
                row.path
                for row in rows
                if labels_of(row, table.multi_label) & set(empty) and row.path in paths
            ]
            if skipped:
                details.append(f"skipped as {why}: {shorten(skipped)}")
        detail = f" ({'; '.join(details)})" if details else ""
        raise TrainingError(f"class(es) with no readable images in {source}: {', '.join(empty)}{detail}")
