"""Datasets: the bundled digits set, class folders and CSV files, checked and turned into fastai DataLoaders.

Every source becomes one table of absolute `path,label` rows, so splitting, training, the reload check and
`interpret` all see the same items in the same order.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, UnidentifiedImageError

from training.errors import TrainingError

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp", ".tif", ".tiff"}
REMOVED_DIR = "_removed"  # where `clean` moves deleted files; never read as a class


@dataclass
class ImageTable:
    """The verified items of a dataset, in a stable order."""

    source: str
    frame: pd.DataFrame  # columns: path (absolute str), label (str)
    corrupt: list[str] = field(default_factory=list)
    ignored_non_image: int = 0

    @property
    def classes(self) -> list[str]:
        return sorted(self.frame["label"].unique())

    def counts(self) -> dict[str, int]:
        return {str(k): int(v) for k, v in self.frame["label"].value_counts().sort_index().items()}

    def report(self) -> str:
        lines = [f"{len(self.frame)} images in {len(self.classes)} classes from {self.source}"]
        if self.ignored_non_image:
            lines.append(f"ignored {self.ignored_non_image} non-image files")
        if self.corrupt:
            shown = ", ".join(self.corrupt[:5]) + (" ..." if len(self.corrupt) > 5 else "")
            lines.append(f"skipped {len(self.corrupt)} corrupt images: {shown}")
        return "\n".join(lines)


def digits_home() -> Path:
    """Where `train digits` writes the bundled set when no folder is given."""
    base = os.environ.get("LEARNSERVE_DATA_HOME") or Path.home() / ".cache" / "learnserve"
    return Path(base) / "digits"


def write_digits(dest: Path, size: int = 28) -> int:
    """Write scikit-learn's 1,797 8x8 digits as `size`x`size` grayscale PNGs in class folders 0..9."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    try:
        for label in range(10):
            (dest / str(label)).mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise TrainingError(f"cannot write to {dest}: {e.strerror}") from e
    for i, (pixels, label) in enumerate(zip(digits.images, digits.target, strict=True)):
        gray = (pixels * (255.0 / 16.0)).round().astype(np.uint8)  # 0..16 -> 0..255
        img = Image.fromarray(gray, mode="L").resize((size, size), Image.Resampling.BICUBIC)
        img.save(dest / str(label) / f"{i:04d}.png")
    return len(digits.images)


def resolve_source(data: str) -> Path:
    """The word `digits` means the bundled set (written on first use); anything else is a path."""
    if data == "digits":
        home = digits_home()
        if not (home / "9").is_dir():
            write_digits(home)
        return home
    path = Path(data).expanduser()
    if not path.exists():
        raise TrainingError(f"DATA path '{data}' does not exist")
    return path.resolve()


def load_table(data: str) -> ImageTable:
    source = resolve_source(data)
    if source.is_dir():
        rows, ignored = _scan_folder(source)
    elif source.suffix.lower() == ".csv":
        rows, ignored = _read_csv(source), 0
    else:
        raise TrainingError(f"DATA '{data}' must be a folder of class subfolders, a .csv file, or 'digits'")
    good, corrupt = _verify(rows)
    frame = pd.DataFrame(good, columns=["path", "label"])
    table = ImageTable(str(source), frame, corrupt, ignored)
    _check_classes(table, source, rows)
    return table


def _scan_folder(root: Path) -> tuple[list[tuple[str, str]], int]:
    class_dirs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith((".", "_")))
    rows: list[tuple[str, str]] = []
    ignored = 0
    for class_dir in class_dirs:
        for f in sorted(class_dir.rglob("*")):
            if not f.is_file():
                continue
            if f.suffix.lower() in IMAGE_EXTENSIONS:
                rows.append((str(f.resolve()), class_dir.name))
            else:
                ignored += 1
    # Classes with no image at all still count, so the user hears about an empty class by name.
    for class_dir in class_dirs:
        if not any(label == class_dir.name for _, label in rows):
            rows.append(("", class_dir.name))
    return rows, ignored


def _read_csv(path: Path) -> list[tuple[str, str]]:
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames or not {"path", "label"} <= set(reader.fieldnames):
            raise TrainingError(f"{path} needs a header row with 'path' and 'label' columns")
        rows = []
        for row in reader:
            p = Path(row["path"]).expanduser()
            p = p if p.is_absolute() else path.parent / p
            rows.append((str(p.resolve()), row["label"].strip()))
    return rows


def _verify(rows: list[tuple[str, str]]) -> tuple[list[tuple[str, str]], list[str]]:
    """Drop files PIL cannot decode (as fastai's verify_images does), keeping the list of them."""
    from fastprogress.fastprogress import progress_bar

    good, corrupt = [], []
    items = progress_bar(rows, leave=False) if len(rows) > 2000 else rows
    for path, label in items:
        if not path:
            continue
        try:
            with Image.open(path) as im:
                im.draft("RGB", (64, 64))
                im.load()
            good.append((path, label))
        except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError):
            corrupt.append(path)
    return good, corrupt


def _check_classes(table: ImageTable, source: Path, rows: list[tuple[str, str]]) -> None:
    labels = sorted({label for _, label in rows})
    if len(labels) < 2:
        raise TrainingError(
            f"{source} has {len(labels)} class(es); put images in at least two class subfolders"
        )
    empty = [label for label in labels if label not in set(table.frame["label"])]
    if empty:
        raise TrainingError(f"class(es) with no readable images in {source}: {', '.join(empty)}")


def split_indices(n: int, valid_pct: float, seed: int) -> tuple[list[int], list[int]]:
    """The same split as fastai's RandomSplitter(valid_pct, seed), reproducible from the manifest."""
    from fastai.data.transforms import RandomSplitter

    if not 0 < valid_pct < 1:
        raise TrainingError(f"--valid-pct must be between 0 and 1, got {valid_pct}")
    train, valid = RandomSplitter(valid_pct, seed=seed)(list(range(n)))
    if not valid or not train:
        raise TrainingError(f"{n} images are too few to split with --valid-pct {valid_pct}")
    return [int(i) for i in train], [int(i) for i in valid]
