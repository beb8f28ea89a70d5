"""The learner's own exported preprocessing, run in batches through `learn.model`: exact `learn.predict` answers,
without its per-call DataLoader, lock, callbacks and progress bar. Knows nothing of HTTP.

Not thread-safe (fastai's random transforms keep per-call state): one worker thread calls `predict`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from app.errors import ModelLoadError
from app.loading import load_learner_file, resolve_device, verify_model_file
from training.manifest import Manifest


@dataclass(frozen=True, slots=True)
class Prediction:
    label: str
    probability: float
    probabilities: tuple[float, ...]  # in the order of Predictor.classes

    def top(self, classes: Sequence[str], k: int) -> list[tuple[str, float]]:
        ranked = sorted(zip(classes, self.probabilities, strict=True), key=lambda cp: cp[1], reverse=True)
        return ranked[:k]


class Predictor:
    def __init__(self, learn: Any, device: torch.device, manifest: Manifest | None = None) -> None:
        dls = learn.dls
        self.manifest = manifest
        self.device = device
        self.classes: list[str] = [str(c) for c in dls.vocab]
        self.model = learn.model.eval().to(device)
        if device.type != "cpu":
            dls.to(device)  # moves the batch transforms' tensors (Normalize stats) too
        self.to_image = dls.valid_ds.tls[0].tfms.fs[-1]  # the type transform, e.g. PILImage.create
        self.item_tfms = dls.valid.after_item  # e.g. Resize -> ToTensor
        self.batch_tfms = dls.valid.after_batch  # e.g. IntToFloatTensor -> (augmentations) -> Normalize
        self.item_tfms.split_idx = 1  # validation behaviour: centre crops, augmentation off
        self.batch_tfms.split_idx = 1
        self.activation = getattr(learn.loss_func, "activation", lambda x: torch.softmax(x, dim=-1))
        if int(getattr(dls, "c", len(self.classes))) != len(self.classes):
            raise ModelLoadError("only single-label classifiers are supported (the vocab and outputs differ)")

    @classmethod
    def load(cls, path: Path, device: str = "auto", pinned_sha256: str | None = None) -> Predictor:
        manifest = verify_model_file(path, pinned_sha256)
        chosen = resolve_device(device, torch.cuda.is_available())
        return cls(load_learner_file(path), chosen, manifest)

    @property
    def input_size(self) -> int:
        return self.manifest.input_size if self.manifest else 224

    def preprocess(self, images: Sequence[Image.Image]) -> torch.Tensor:
        items = [self.item_tfms(self.to_image(img)) for img in images]
        batch = torch.stack(items)  # keeps the TensorImage type the batch transforms dispatch on
        out: torch.Tensor = self.batch_tfms(batch.to(self.device, non_blocking=True))
        return out

    def predict(self, images: Sequence[Image.Image]) -> list[Prediction]:
        """RGB images in, one Prediction each, in order."""
        if not images:
            return []
        with torch.inference_mode():
            # A plain tensor skips fastai's per-op __torch_function__ dispatch of TensorImage: same numbers, faster.
            batch = self.preprocess(images).as_subclass(torch.Tensor)
            probs = self.activation(self.model(batch)).float().cpu()
        best = probs.argmax(dim=1).tolist()
        rows: list[list[float]] = probs.tolist()
        return [Prediction(self.classes[i], row[i], tuple(row)) for i, row in zip(best, rows, strict=True)]

    def warm_up(self, rounds: int = 2) -> float:
        """Run a couple of blank batches so the first client does not pay for lazy initialisation."""
        started = time.perf_counter()
        blank = Image.new("RGB", (self.input_size, self.input_size), (255, 255, 255))
        for _ in range(rounds):
            self.predict([blank, blank])
        return time.perf_counter() - started
