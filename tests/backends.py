"""Backends loaded the way the server loads them (verified first), and classifying images with them in one call."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from PIL import Image

from app.core.backends import Backend, predict_images
from app.core.backends.fastai import FastaiBackend
from app.core.imaging import decode_image
from app.core.prediction import Prediction
from app.core.verify import verify_model_file


def fastai_backend(model: Path, device: str = "cpu") -> FastaiBackend:
    return FastaiBackend.load(verify_model_file(model), device)


def classify(backend: Backend, images: Sequence[Image.Image]) -> list[Prediction]:
    return predict_images(backend, images)


def classify_files(backend: Backend, files: Sequence[bytes]) -> list[Prediction]:
    return predict_images(backend, [decode_image(f, 10**8) for f in files])
