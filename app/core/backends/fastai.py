"""The fastai backend: the learner's own exported pipelines, run in batches through `learn.model`. Exact
`learn.predict` answers, without its per-call DataLoader, lock, callbacks and progress bar.

`prepare` runs the validation item transforms (e.g. Resize -> ToTensor) under a lock (fastai transforms may keep
per-call state); `predict` stacks, runs the batch transforms (IntToFloatTensor -> Normalize) and the model under
`torch.inference_mode()`, on the one model thread.
"""

from __future__ import annotations

import pickle
import threading
import warnings
from collections.abc import Sequence
from typing import Any

import torch
from PIL import Image

from app.core.backends import BackendKind
from app.core.errors import ModelLoadError
from app.core.prediction import Prediction, from_probabilities
from app.core.verify import VerifiedFile


class FastaiBackend:
    kind: BackendKind = "fastai"

    def __init__(self, learn: Any, device: torch.device, input_size: int) -> None:
        dls = learn.dls
        self.device = str(device)
        self._device = device
        self.input_size = input_size
        self.classes: list[str] = [str(c) for c in dls.vocab]
        if int(getattr(dls, "c", len(self.classes))) != len(self.classes):
            raise ModelLoadError("only single-label classifiers are supported (the vocab and outputs differ)")
        self.model = learn.model.eval().to(device)
        if device.type != "cpu":
            dls.to(device)  # moves the batch transforms' tensors (Normalize stats) too
        self.to_image = dls.valid_ds.tls[0].tfms.fs[-1]  # the type transform, e.g. PILImage.create
        self.item_tfms = dls.valid.after_item  # e.g. Resize -> ToTensor
        self.batch_tfms = dls.valid.after_batch  # e.g. IntToFloatTensor -> (augmentations) -> Normalize
        self.item_tfms.split_idx = 1  # validation behaviour: centre crops, augmentation off
        self.batch_tfms.split_idx = 1
        self.activation = getattr(learn.loss_func, "activation", lambda x: torch.softmax(x, dim=-1))
        self._item_lock = threading.Lock()

    @classmethod
    def load(cls, file: VerifiedFile, device: str = "auto", threads: int | None = None) -> FastaiBackend:
        chosen = resolve_device(device, torch.cuda.is_available())
        if threads:
            torch.set_num_threads(threads)  # process-wide: every fastai model shares the one model thread
        return cls(load_learner_file(file), chosen, file.manifest.input_size)

    def prepare(self, image: Image.Image) -> torch.Tensor:
        with self._item_lock:
            prepared: torch.Tensor = self.item_tfms(self.to_image(image))
        return prepared

    def predict(self, inputs: Sequence[torch.Tensor]) -> list[Prediction]:
        if not inputs:
            return []
        with torch.inference_mode():
            batch = torch.stack(list(inputs))  # keeps the TensorImage type the batch transforms dispatch on
            batch = self.batch_tfms(batch.to(self._device, non_blocking=True))
            # A plain tensor skips fastai's per-op __torch_function__ dispatch of TensorImage: same numbers, faster.
            probs = self.activation(self.model(batch.as_subclass(torch.Tensor))).float().cpu()
        return from_probabilities(probs.numpy(), self.classes)

    def warm_up(self) -> None:
        blank = self.prepare(Image.new("RGB", (self.input_size, self.input_size), (255, 255, 255)))
        for _ in range(2):
            self.predict([blank, blank])

    def describe(self) -> dict[str, Any]:
        return {"backend": self.kind, "device": self.device, "threads": torch.get_num_threads()}


def load_learner_file(file: VerifiedFile) -> Any:
    """fastai's load_learner, with its swallowed-ImportError trap (fastai 2.8.12) turned into the real cause."""
    from fastai.learner import load_learner

    path = file.path
    with warnings.catch_warnings():
        # The file's sha256 was checked against its manifest just before: this is the exported file.
        warnings.filterwarnings("ignore", message=".*insecure pickle module.*")
        try:
            return load_learner(path, cpu=True)
        except UnboundLocalError:
            try:  # fastai hides ModuleNotFoundError this way; load again without it to surface the cause
                torch.load(path, map_location="cpu", pickle_module=pickle, weights_only=False)
            except Exception as e:
                raise ModelLoadError(f"cannot load {path}: {type(e).__name__}: {e}") from None
            raise
        except Exception as e:
            raise ModelLoadError(f"cannot load {path}: {type(e).__name__}: {e}") from None


def resolve_device(requested: str, cuda_available: bool) -> torch.device:
    """auto: CUDA when available, else CPU; cuda: CUDA or a startup error; cpu: CPU."""
    if requested == "cuda" and not cuda_available:
        raise ModelLoadError("LEARNSERVE_DEVICE=cuda but no CUDA device is available; use auto or cpu")
    if requested == "cuda" or (requested == "auto" and cuda_available):
        return torch.device("cuda")
    return torch.device("cpu")
