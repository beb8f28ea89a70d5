"""Why this answer? (issue 24): Grad-CAM maps checked against where the evidence is, served over real HTTP.

The honest test: a tiny learner is trained here on images of noise with ONE coloured mark (training/marks.py's
marks, one per image, anywhere), whose class is the mark; on held-out images the peak of the map for the true class
must fall inside the mark's box, and the map for a wrong class must not peak there.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from app.core.overlay import upsample
from tests.conftest import run_cli
from training.marks import MARKS, draw_mark

SIZE = 32
SIDE = 10
Box = tuple[int, int, int, int]


def marked(rng: np.random.Generator, mark: str, size: int = SIZE) -> tuple[Image.Image, Box]:
    """Gray noise with one mark anywhere; the mark's box (x0, y0, x1, y1, inclusive)."""
    pixels = rng.normal(128, 30, (size, size, 3)).clip(0, 255).astype(np.uint8)
    image = Image.fromarray(pixels)
    x0, y0 = (int(v) for v in rng.integers(0, size - SIDE + 1, 2))
    box = (x0, y0, x0 + SIDE - 1, y0 + SIDE - 1)
    draw_mark(ImageDraw.Draw(image), mark, box)
    return image, box


def held_out(n: int = 40) -> list[tuple[Image.Image, str, Box]]:
    rng = np.random.default_rng(2024)
    images = []
    for mark in MARKS:
        for _ in range(n // len(MARKS)):
            image, box = marked(rng, mark)
            images.append((image, mark, box))
    return images


def png(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small CNN trained with the project's `train` (fastai) on 60 images a mark."""
    root = tmp_path_factory.mktemp("single_marks") / "marks"
    rng = np.random.default_rng(0)
    for mark in MARKS:
        (root / mark).mkdir(parents=True)
        for i in range(60):
            marked(rng, mark)[0].save(root / mark / f"{mark}_{i:02d}.png")
    out = tmp_path_factory.mktemp("models") / "marks.pkl"
    code, _, stderr = run_cli(
        "train", str(root), "--out", str(out), "--arch", "cnn", "--size", str(SIZE), "--epochs", "4",
        "--bs", "16", "--lr", "1e-2", "--no-verify", "--reports", str(out.parent / "reports"),
    )  # fmt: skip
    assert code == 0, stderr
    return out


@pytest.fixture(scope="module")
def backend(model: Path):  # type: ignore[no-untyped-def]
    from app.core.backends.fastai import FastaiBackend
    from app.core.verify import verify_model_file

    return FastaiBackend.load(verify_model_file(model), device="cpu")


def peak(cam: np.ndarray, size: int = SIZE) -> tuple[int, int]:
    full = upsample(cam, "squish", size, size, size)
    y, x = np.unravel_index(int(full.argmax()), full.shape)
    return int(x), int(y)


def inside(point: tuple[int, int], box: Box) -> bool:
    return box[0] <= point[0] <= box[2] and box[1] <= point[1] <= box[3]


def test_the_map_of_the_true_class_peaks_inside_its_mark_and_a_wrong_class_does_not(backend) -> None:  # type: ignore[no-untyped-def]
    from app.core.explain import explain_prepared

    images = held_out()
    hits = wrong_hits = correct = 0
    for image, mark, box in images:
        prepared = backend.prepare(image)
        right = explain_prepared(backend, prepared, mark)
        correct += right.prediction.label == mark
        hits += inside(peak(right.map), box)
        wrong = explain_prepared(backend, prepared, next(m for m in MARKS if m != mark))
        wrong_hits += wrong.map.max() > 0 and inside(peak(wrong.map), box)
    n = len(images)
    print(
        f"accuracy {correct}/{n}; true-class peak in the mark {hits}/{n}; wrong-class peak in it {wrong_hits}/{n}"
    )
    assert correct >= 0.9 * n  # the learner learnt the marks: its maps are worth checking
    assert hits >= 0.9 * n
    assert wrong_hits <= 0.2 * n
