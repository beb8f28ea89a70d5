"""`show`: one batch as the model sees it, after the item and batch transforms, saved as PNG."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli
from PIL import Image

pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning"),
]

OPTS = ("--size", "32", "--bs", "16")


def show(dataset: Path, out: Path, *argv: str) -> np.ndarray:
    code, stdout, err = run_cli("show", str(dataset), *OPTS, "--out", str(out), *argv)
    assert code == 0, err
    assert f"wrote {out}" in stdout
    with Image.open(out) as im:
        assert im.format == "PNG"
        return np.asarray(im.convert("RGB"))


def below_title(pixels: np.ndarray) -> np.ndarray:
    return pixels[60:]  # the grid; the title above differs between training and augmented


def test_training_batch_grid(dataset: Path, tmp_path: Path) -> None:
    pixels = show(dataset, tmp_path / "batch.png", "-n", "9")
    height, width, _ = pixels.shape
    assert 400 <= width <= 2000
    assert 400 <= height <= 2000
    again = show(dataset, tmp_path / "again.png", "-n", "9")
    assert np.array_equal(pixels, again)  # the seed fixes which images and in what order


def test_augment_changes_the_training_batch_but_never_validation(dataset: Path, tmp_path: Path) -> None:
    plain = show(dataset, tmp_path / "plain.png", "-n", "9")
    augmented = show(dataset, tmp_path / "aug.png", "-n", "9", "--augment")
    assert plain.shape == augmented.shape
    assert changed(below_title(plain), below_title(augmented)) > 0.1  # rotated, zoomed, warped squares

    valid = show(dataset, tmp_path / "valid.png", "-n", "9", "--valid")
    valid_augmented = show(dataset, tmp_path / "valid-aug.png", "-n", "9", "--valid", "--augment")
    # Augmentation is for training only. (fastai still passes validation batches through the identity warp, whose
    # resampling moves a few pixel values by a level or two; the model sees the same in serving.)
    assert changed(valid, valid_augmented) == 0
    assert changed(below_title(valid), below_title(plain)) > 0.1  # other images


def changed(a: np.ndarray, b: np.ndarray) -> float:
    """The share of pixel values that differ by more than resampling noise."""
    return float((np.abs(a.astype(int) - b.astype(int)) > 8).mean())


def test_show_asks_for_at_most_one_batch(dataset: Path, tmp_path: Path) -> None:
    code, stdout, err = run_cli("show", str(dataset), *OPTS, "--out", str(tmp_path / "b.png"), "-n", "40")
    assert code == 0, err
    assert "(16 training images)" in stdout  # --bs 16


def test_show_with_missing_data_is_a_clean_error(tmp_path: Path) -> None:
    code, _, err = run_cli("show", str(tmp_path / "nowhere"), "--out", str(tmp_path / "b.png"))
    assert code == 2
    assert err.startswith("error:")
    assert "does not exist" in err
    assert not (tmp_path / "b.png").exists()
