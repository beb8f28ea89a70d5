"""`interpret`'s Grad-CAM (training/gradcam.py), held to the same honest test as the service's: on held-out images
of noise with one coloured mark, the map of the mark's class peaks inside the mark, the map of another class does
not. It runs through the learner's own validation pipeline (test_dl), as `interpret` uses it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.test_explain import MARKS, SIZE, held_out, inside, marks_data, model  # noqa: F401 (fixtures)


def peak(cam: np.ndarray) -> tuple[int, int]:
    """The map's peak in input pixels (the model input is the image: SIZE x SIZE, no resize)."""
    y, x = np.unravel_index(int(cam.argmax()), cam.shape)
    scale = SIZE / cam.shape[0]
    return int((x + 0.5) * scale), int((y + 0.5) * scale)


def test_the_training_side_map_peaks_inside_the_mark_of_its_class(model: Path, tmp_path: Path) -> None:  # noqa: F811
    from fastai.learner import load_learner

    from training.gradcam import class_maps

    learn = load_learner(model)
    vocab = list(learn.dls.vocab)
    images = held_out()
    files = []
    for i, (image, _, _) in enumerate(images):
        files.append(tmp_path / f"{i:02d}.png")
        image.save(files[-1])
    right, pixels = class_maps(learn, files, [vocab.index(mark) for _, mark, _ in images])
    others = [vocab.index(next(m for m in MARKS if m != mark)) for _, mark, _ in images]
    wrong, _ = class_maps(learn, files, others)
    hits = sum(inside(peak(cam), box) for cam, (_, _, box) in zip(right, images, strict=True))
    wrong_hits = sum(
        cam.max() > 0 and inside(peak(cam), box) for cam, (_, _, box) in zip(wrong, images, strict=True)
    )
    n = len(images)
    print(f"true-class peak in the mark {hits}/{n}; wrong-class peak in it {wrong_hits}/{n}")
    assert right.shape[0] == n
    assert right.min() >= 0
    assert right.max() <= 1
    assert pixels.shape == (n, SIZE, SIZE, 3)
    assert pixels.dtype == np.uint8
    assert (
        np.abs(pixels.astype(int) - np.stack([np.asarray(im) for im, _, _ in images])).max() <= 1
    )  # what it saw
    assert hits >= 0.9 * n
    assert wrong_hits <= 0.2 * n


def test_interpret_draws_where_the_top_losses_looked(model: Path, marks_data: Path, tmp_path: Path) -> None:  # noqa: F811
    from tests.conftest import run_cli

    code, stdout, stderr = run_cli(
        "interpret", str(model), str(marks_data), "--out", str(tmp_path), "--top", "4"
    )
    assert code == 0, stderr
    assert "top_losses_why.png" in stdout
    from PIL import Image

    with Image.open(tmp_path / "top_losses_why.png") as im:
        assert im.format == "PNG"
        assert im.width > 200


def test_a_model_without_a_spatial_map_is_refused_with_a_sentence() -> None:
    import torch
    from torch import nn

    from training.gradcam import spatial_map

    children = [nn.Flatten(), nn.Linear(12, 3)]
    with pytest.raises(ValueError, match="no spatial map after a convolution"):
        spatial_map(children, [torch.zeros(1, 12), torch.zeros(1, 3)])
