"""The bundled datasets, written on first use into the data home (LEARNSERVE_DATA_HOME, else ~/.cache/learnserve):
`digits` (scikit-learn's handwritten digits as class folders), `marks` (a generated multi-label set, see
training/marks.py), `discs` (regression, training/discs.py) and `spots` (key points, training/spots.py). `train digits` / `train marks` name them; `data NAME DEST` writes them elsewhere.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from training.errors import TrainingError


def data_home(name: str = "digits") -> Path:
    """Where `train digits` (or `train marks`) writes the bundled set when no folder is given."""
    base = os.environ.get("LEARNSERVE_DATA_HOME") or Path.home() / ".cache" / "learnserve"
    return Path(base) / name


def digits_home() -> Path:
    return data_home("digits")


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
    """The words `digits`, `marks`, `discs` and `spots` mean the bundled sets (written on first use); anything else is a path."""
    if data == "digits":
        home = digits_home()
        if not (home / "9").is_dir():
            write_digits(home)
        return home
    if data == "marks":
        from training.marks import write_marks

        table = data_home("marks") / "labels.csv"
        return table if table.is_file() else write_marks(table.parent)
    if data in ("discs", "spots"):  # regression and key points (training/discs.py, training/spots.py)
        from training.discs import write_discs
        from training.spots import write_spots

        write, csv_name = (write_discs, "values.csv") if data == "discs" else (write_spots, "points.csv")
        table = data_home(data) / csv_name
        return table if table.is_file() else write(table.parent)
    path = Path(data).expanduser()
    if not path.exists():
        raise TrainingError(f"DATA path '{data}' does not exist")
    return path.resolve()
