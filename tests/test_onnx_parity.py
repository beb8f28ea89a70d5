"""Both backends give learn.predict's answers: on 277 images of every format and mode the decoder accepts, for a
small CNN with each resize method and a resnet, top-1 is equal on every image and no probability differs by more
than 1e-4, for ONNX Runtime (PIL + numpy preprocessing) and for the fastai backend (its verified fast item path);
and the PIL + numpy item pipeline gives exactly fastai's own pixels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from app.core.backends.onnx import OnnxBackend
from app.core.imaging import decode_image
from app.core.verify import verify_model_file
from tests.backends import classify
from tests.conftest import train_tiny
from tests.onnx_corpus import corpus
from training.onnx_export import export_onnx

VARIANTS = {
    "cnn-squish-augment": (
        "--arch",
        "cnn",
        "--size",
        "32",
        "--resize-method",
        "squish",
        "--augment",
        "--epochs",
        "2",
    ),
    "cnn-crop": ("--arch", "cnn", "--size", "28", "--resize-method", "crop", "--epochs", "2"),
    "cnn-pad": ("--arch", "cnn", "--size", "30", "--resize-method", "pad", "--epochs", "2"),
    "resnet18-pad": ("--arch", "resnet18", "--size", "32", "--resize-method", "pad", "--epochs", "1"),
}


@pytest.fixture(scope="module")
def images() -> dict[str, object]:
    return {name: decode_image(data, 10**8) for name, data in corpus().items()}


@pytest.fixture(scope="module", params=list(VARIANTS))
def exported(request: pytest.FixtureRequest, dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    model = train_tiny(dataset, tmp_path_factory.mktemp("onnx") / "model.pkl", *VARIANTS[request.param])
    export_onnx(model)
    return model


@pytest.mark.parametrize("kind", ["onnx", "fastai"])
def test_answers_equal_learn_predict(kind: str, exported: Path, images: dict[str, object]) -> None:
    from fastai.learner import load_learner

    from tests.backends import fastai_backend

    assert len(images) >= 200
    learn = load_learner(exported)
    if kind == "onnx":
        backend = OnnxBackend.load(verify_model_file(exported.with_suffix(".onnx")), "cpu")
    else:
        backend = fastai_backend(exported)
        assert backend.fast_items is not None  # the verified PIL/numpy item path is what is being tested
    ours = classify(backend, list(images.values()))  # one batch of every size, format and mode
    worst = 0.0
    for name, image, pred in zip(images, images.values(), ours, strict=True):
        with learn.no_bar():
            label, _, probs = learn.predict(image)
        assert pred.label == label, name
        worst = max(worst, float(np.abs(np.array(pred.probabilities) - probs.numpy()).max()))
    assert worst <= 1e-4, worst


def test_item_pipeline_is_pixel_identical_to_fastais(exported: Path, images: dict[str, object]) -> None:
    """Before any float arithmetic: the resized uint8 input equals fastai's Resize -> ToTensor output exactly."""
    from tests.backends import fastai_backend

    fastai = fastai_backend(exported)
    onnx = OnnxBackend.load(verify_model_file(exported.with_suffix(".onnx")), "cpu")
    for name, image in images.items():
        assert np.array_equal(onnx.prepare(image), fastai._fastai_item(image).numpy()), name  # fastai's own


def test_other_item_transforms_run_through_fastai(tiny_model: Path) -> None:
    from fastai.vision.augment import CropPad

    from tests.backends import fastai_backend

    backend = fastai_backend(tiny_model)
    assert backend.fast_items is not None
    backend.item_tfms.add(CropPad(20))  # a learner with an item transform the twin does not know
    assert backend._verified_fast_path() is None
