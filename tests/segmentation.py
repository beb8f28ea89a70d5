"""A tiny segmentation learner for the tests, trained as a notebook would (DataBlock(ImageBlock, MaskBlock(codes)),
CrossEntropyLossFlat(axis=1)) in about a second of CPU, and the images it knows: dark noise with a red square
(code 1) and a green disc (code 2). Its model is a few 3x3 convolutions: it colours each pixel by its neighbourhood,
so it segments an image of any shape, whatever the resize did to it.

Import `segmentation_export` (and the helpers) from here; `exports` is a session-scoped pytest fixture.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

CODES = ["background", "square", "disc"]
SIZE = 32
SQUARE, DISC = (230, 50, 50), (50, 220, 60)


def scene(
    rng: np.random.Generator,
    width: int = SIZE,
    height: int = SIZE,
    square: tuple[int, int, int] | None = None,
    disc: tuple[int, int, int] | None = None,
) -> tuple[Image.Image, np.ndarray]:
    """An image and its mask: a square (x, y, side) of code 1 and a disc (cx, cy, radius) of code 2, placed at
    random unless given."""
    pixels = rng.integers(0, 70, (height, width, 3)).astype(np.uint8)
    mask = np.zeros((height, width), np.uint8)
    if square is None:
        side = int(rng.integers(6, 11))
        square = (int(rng.integers(0, width - side)), int(rng.integers(0, height - side)), side)
    x, y, side = square
    pixels[y : y + side, x : x + side] = SQUARE
    mask[y : y + side, x : x + side] = 1
    if disc is None:
        r = int(rng.integers(3, 6))
        disc = (int(rng.integers(r, width - r)), int(rng.integers(r, height - r)), r)
    cx, cy, r = disc
    yy, xx = np.mgrid[:height, :width]
    inside = (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r
    pixels[inside] = DISC
    mask[inside] = 2
    return Image.fromarray(pixels), mask


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def write_scenes(root: Path, n: int = 48, seed: int = 0) -> Path:
    """images/I.png and masks/I.png (8-bit, pixel value = code), as the CamVid layout keeps them."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(exist_ok=True)
    for i in range(n):
        image, mask = scene(rng)
        image.save(root / "images" / f"{i:02d}.png")
        Image.fromarray(mask).save(root / "masks" / f"{i:02d}.png")
    return root


def train_segmenter(data: Path, out: Path, method: str = "squish", epochs: int = 20) -> Any:
    """A learner resizing with `method` to 32 px, fitted and exported with learn.export() to `out` (its label
    function is a local lambda, as in a notebook: only training needs it). Returns the learner."""
    from fastai.losses import CrossEntropyLossFlat
    from fastai.torch_core import set_seed
    from fastai.vision.all import (
        DataBlock,
        ImageBlock,
        Learner,
        MaskBlock,
        RandomSplitter,
        Resize,
        get_image_files,
    )
    from torch import nn

    set_seed(0)
    block = DataBlock(
        blocks=(ImageBlock, MaskBlock(CODES)),
        get_items=get_image_files,
        get_y=lambda p: data / "masks" / p.name,
        splitter=RandomSplitter(0.2, seed=0),
        item_tfms=Resize(SIZE, method=method, pad_mode="zeros"),
    )
    dls = block.dataloaders(data / "images", bs=16, num_workers=0)
    model = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(),
        nn.Conv2d(16, len(CODES), 1),
    )  # fmt: skip
    learn = Learner(dls, model, loss_func=CrossEntropyLossFlat(axis=1))
    with learn.no_bar(), learn.no_logging():
        learn.fit_one_cycle(epochs, 1e-2)
    out.parent.mkdir(parents=True, exist_ok=True)
    learn.export(out)
    return learn


def with_resize(learn: Any, method: str) -> None:
    """The same learner resizing with another method: its model is fully convolutional, so it segments whatever
    the resize does (one fit serves the three methods)."""
    for loader in (learn.dls.train, learn.dls.valid):
        for tfm in loader.after_item.fs:
            if type(tfm).__name__ == "Resize":
                tfm.method = method


@pytest.fixture(scope="session")
def exports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """method -> a notebook-style export of the tiny segmenter that resizes with it (squish, crop, pad)."""
    data = write_scenes(tmp_path_factory.mktemp("scenes"))
    out = tmp_path_factory.mktemp("exports")
    learn = train_segmenter(data, out / "squish.pkl")
    for method in ("crop", "pad"):
        with_resize(learn, method)
        learn.export(out / f"{method}.pkl")
    return {method: out / f"{method}.pkl" for method in ("squish", "crop", "pad")}
