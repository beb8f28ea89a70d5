"""The predictor gives learn.predict's answers exactly, in batches, on the chosen device."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from fastai.learner import load_learner

from app.core.backends.fastai import FastaiBackend, resolve_device
from app.core.errors import ModelLoadError
from app.core.imaging import decode_image
from tests.backends import classify, fastai_backend
from tests.images import many_formats, sample


@pytest.fixture(scope="module")
def reference(tiny_model: Path):  # type: ignore[no-untyped-def]
    return load_learner(tiny_model)


@pytest.fixture(scope="module")
def predictor(tiny_model: Path) -> FastaiBackend:
    return fastai_backend(tiny_model, "cpu")


def test_batched_predictions_match_learn_predict(reference, predictor: FastaiBackend) -> None:  # type: ignore[no-untyped-def]
    files = many_formats()
    assert len(files) >= 30
    images = [decode_image(data, 10_000_000) for data in files.values()]
    ours = classify(predictor, images)  # one batch of mixed sizes, formats and modes
    for name, img, pred in zip(files, images, ours, strict=True):
        with reference.no_bar():
            label, _, probs = reference.predict(img)
        assert pred.label == label, name
        assert max(abs(a - b) for a, b in zip(pred.probabilities, probs.tolist(), strict=True)) < 1e-5, name
        assert pred.probability == max(pred.probabilities)


def test_batch_composition_does_not_change_answers(predictor: FastaiBackend) -> None:
    images = [sample(label, seed=i) for i, label in enumerate(["red", "green", "blue"] * 4)]
    together = classify(predictor, images)
    alone = [classify(predictor, [img])[0] for img in images]
    for a, b in zip(together, alone, strict=True):
        assert a.label == b.label
        assert max(abs(x - y) for x, y in zip(a.probabilities, b.probabilities, strict=True)) < 1e-5


def test_the_tiny_model_learned_its_classes(predictor: FastaiBackend) -> None:
    images = [sample(label, seed=50 + i) for i, label in enumerate(predictor.classes)]
    assert [p.label for p in classify(predictor, images)] == predictor.classes


def test_top_is_sorted_and_sums_to_one(predictor: FastaiBackend) -> None:
    [pred] = classify(predictor, [sample("green")])
    top = pred.top(predictor.classes, 3)
    assert next(c for c, _ in top) == pred.label
    assert [p for _, p in top] == sorted((p for _, p in top), reverse=True)
    assert sum(pred.probabilities) == pytest.approx(1.0, abs=1e-5)


def test_empty_batch(predictor: FastaiBackend) -> None:
    assert classify(predictor, []) == []


@pytest.mark.parametrize(
    ("requested", "cuda", "expected"),
    [("auto", False, "cpu"), ("auto", True, "cuda"), ("cpu", True, "cpu"), ("cuda", True, "cuda")],
)
def test_device_selection(requested: str, cuda: bool, expected: str) -> None:
    assert resolve_device(requested, cuda).type == expected


def test_cuda_requested_without_a_gpu_stops_startup() -> None:
    with pytest.raises(ModelLoadError, match="no CUDA device"):
        resolve_device("cuda", cuda_available=False)


@pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA GPU (the device check script runs this)"
)
def test_cuda_path_matches_cpu(tiny_model: Path, predictor: FastaiBackend) -> None:
    gpu = fastai_backend(tiny_model, "cuda")
    images = [decode_image(d, 10_000_000) for d in many_formats().values()]
    for a, b in zip(classify(gpu, images), classify(predictor, images), strict=True):
        assert a.label == b.label
        assert max(abs(x - y) for x, y in zip(a.probabilities, b.probabilities, strict=True)) < 1e-4
