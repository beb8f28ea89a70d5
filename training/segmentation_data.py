"""Segmentation data: the CamVid layout, checked pair by pair and turned into one table of images and their masks.

DATA/images/NAME.png holds an image, DATA/masks/NAME.png its mask (CamVid's DATA/labels/ and NAME_P.png are read
too): one value per pixel, the index of its code in DATA/codes.txt (one code per line, the code of value 0 first).
DATA/valid.txt, when there (CamVid ships one), names the validation images, one file name per line; otherwise a
random share validates. Every mistake that would otherwise surface minutes later inside fastai (a missing mask, a
mask of another size, a value with no code) is refused here, naming the files.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, UnidentifiedImageError

from training.bundled import data_home
from training.datasets import IMAGE_EXTENSIONS, shorten
from training.errors import TrainingError

MASK_DIRS = ("masks", "labels")  # ours, CamVid's
MASK_SUFFIXES = ("", "_P")  # NAME.png, CamVid's NAME_P.png
MASK_MODES = ("L", "P", "I", "I;16", "1")  # one channel of integers; an RGB mask is a picture, not codes
SHAPES = "shapes"  # the bundled generated set (training/shapes.py)


def segmentation_source(data: str) -> Path | None:
    """DATA's folder when it is a segmentation set (images/ beside masks/ or labels/), writing the bundled `shapes`
    set into the data home on first use; None for every other kind of data."""
    if data == SHAPES:
        home = data_home(SHAPES)
        if not (home / "codes.txt").is_file():
            from training.shapes import write_shapes

            write_shapes(home)
        return home
    path = Path(data).expanduser()
    return path.resolve() if is_segmentation_dir(path) else None


def is_segmentation_dir(path: Path) -> bool:
    return path.is_dir() and (path / "images").is_dir() and any((path / d).is_dir() for d in MASK_DIRS)


@dataclass
class MaskTable:
    """The checked pairs, in file-name order."""

    source: Path
    codes: list[str]
    frame: (
        pd.DataFrame
    )  # columns: path (the image), mask (absolute str), is_valid (bool) when valid.txt splits
    present: dict[str, int] = field(default_factory=dict)  # images whose mask shows each code
    split_by_file: bool = False

    def report(self) -> str:
        return f"{len(self.frame)} images with masks of {len(self.codes)} codes from {self.source}"


def read_codes(source: Path) -> list[str]:
    codes_file = source / "codes.txt"
    if not codes_file.is_file():
        raise TrainingError(
            f"{source} has images/ and masks/ but no codes.txt: write one code per line, the code of mask value 0 first"
        )
    codes = [line.strip() for line in codes_file.read_text(encoding="utf-8").splitlines() if line.strip()]
    if len(codes) < 2:
        raise TrainingError(f"{codes_file} names {len(codes)} code(s); a mask needs at least two")
    if len(set(codes)) < len(codes):
        raise TrainingError(f"{codes_file} names a code twice")
    return codes


def find_mask(masks: Path, image: Path) -> Path | None:
    for suffix in MASK_SUFFIXES:
        for candidate in (masks / f"{image.stem}{suffix}.png", masks / f"{image.stem}{suffix}{image.suffix}"):
            if candidate.is_file():
                return candidate
    return None


def load_masks(source: Path) -> MaskTable:
    """Every image of DATA/images/ with its mask, each pair checked: refuses the whole set, naming the files, when a
    mask is missing, unreadable, not one channel, of another size than its image, or holds a value with no code."""
    codes = read_codes(source)
    masks = next(source / d for d in MASK_DIRS if (source / d).is_dir())
    images = sorted(f for f in (source / "images").iterdir() if f.suffix.lower() in IMAGE_EXTENSIONS)
    if not images:
        raise TrainingError(f"{source / 'images'} holds no images")
    rows, present = [], np.zeros(len(codes), dtype=np.int64)
    missing, unreadable, modes, sizes, values = [], [], [], [], []
    for image in images:
        mask = find_mask(masks, image)
        if mask is None:
            missing.append(image.name)
            continue
        try:
            with Image.open(image) as im:
                image_size = im.size
            with Image.open(mask) as m:
                mode, mask_size, pixels = m.mode, m.size, np.asarray(m)
        except (OSError, UnidentifiedImageError, ValueError) as e:
            unreadable.append(f"{image.name} ({type(e).__name__})")
            continue
        if mode not in MASK_MODES:
            modes.append(f"{mask.name} ({mode})")
        elif mask_size != image_size:
            sizes.append(
                f"{mask.name} {mask_size[0]}x{mask_size[1]} vs {image.name} {image_size[0]}x{image_size[1]}"
            )
        else:
            found = np.unique(pixels)
            outside = found[(found < 0) | (found >= len(codes))]
            if outside.size:
                values.append(f"{mask.name} ({', '.join(str(v) for v in outside[:3].tolist())})")
            else:
                present[found.astype(np.int64)] += 1
                rows.append((str(image.resolve()), str(mask.resolve())))
    problems = [
        (missing, f"images without a mask in {masks} (looked for NAME.png and NAME_P.png)"),
        (unreadable, "unreadable images or masks"),
        (modes, "masks that are not one channel of code indices (mode L or P)"),
        (sizes, "masks of another size than their image"),
        (values, f"masks with values outside the {len(codes)} codes of codes.txt (0..{len(codes) - 1})"),
    ]
    found_problems = [f"{len(items)} {what}: {shorten(items)}" for items, what in problems if items]
    if found_problems:
        raise TrainingError(f"{source}: " + "; ".join(found_problems))
    frame = pd.DataFrame(rows, columns=["path", "mask"])
    table = MaskTable(source, codes, frame, {c: int(n) for c, n in zip(codes, present, strict=True)})
    read_valid_file(table)
    return table


def read_valid_file(table: MaskTable) -> None:
    """CamVid's valid.txt (one image file name per line) marks the validation images in `is_valid`."""
    valid_file = table.source / "valid.txt"
    if not valid_file.is_file():
        return
    names = {line.strip() for line in valid_file.read_text(encoding="utf-8").splitlines() if line.strip()}
    known = {Path(p).name for p in table.frame["path"]}
    unknown = sorted(names - known)
    if unknown:
        raise TrainingError(f"{valid_file} names images not in images/: {shorten(unknown)}")
    table.frame["is_valid"] = [Path(p).name in names for p in table.frame["path"]]
    table.split_by_file = True
