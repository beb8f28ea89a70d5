"""The fastai backend: the learner's own exported pipelines, run in batches through `learn.model`. Exact
`learn.predict` answers, without its per-call DataLoader, lock, callbacks and progress bar.

`prepare` runs the validation item transforms (e.g. Resize -> ToTensor); `predict` stacks, runs the batch
transforms (IntToFloatTensor -> Normalize) and the model under `torch.inference_mode()`, on the one model thread.

The item transforms of nearly every learner are `Resize` then `ToTensor`. For those, `prepare` runs the same
steps with PIL and numpy (app/core/preprocess.py, with the parameters read from the learner's own `Resize`):
8x less work per image (130 vs 16 us for a 28 px digit), most of it Python holding the GIL. Only after a check at
load shows the two give the same pixels on images of many shapes; otherwise, and for any other item transform,
fastai's pipeline runs itself (under a lock: fastai transforms may keep per-call state).
"""

from __future__ import annotations

import io
import logging
import pickle
import threading
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image

from app.core.backends import BackendKind
from app.core.errors import ModelLoadError
from app.core.prediction import Answer, Mask, decode, mask_ids
from app.core.preprocess import Preprocessor
from app.core.verify import VerifiedFile, verified_bytes
from training.manifest import ACTIVATION, SEGMENTATION, Preprocessing, item_pipeline, manifest_path

logger = logging.getLogger("learnserve")

# (width, height) of the images the fast item path is checked on: tiny, thin, tall, wide, square, odd.
CHECK_SIZES = [
    (1, 1),
    (2, 5),
    (5, 2),
    (7, 7),
    (17, 33),
    (33, 17),
    (28, 28),
    (64, 48),
    (97, 131),
    (300, 41),
    (41, 300),
]


class FastaiBackend:
    kind: BackendKind = "fastai"

    def __init__(
        self, learn: Any, device: torch.device, input_size: int, kind: str, classes: Sequence[str]
    ) -> None:
        dls = learn.dls
        self.device = str(device)
        self._device = device
        self.input_size = input_size
        self.model_kind = kind
        self.classes = list(classes)  # checked against the learner's own at load (check_manifest)
        self.model = learn.model.eval().to(device)
        if device.type != "cpu":
            dls.to(device)  # moves the batch transforms' tensors (Normalize stats) too
        self.to_image = dls.valid_ds.tls[0].tfms.fs[-1]  # the type transform, e.g. PILImage.create
        self.item_tfms = dls.valid.after_item  # e.g. Resize -> ToTensor
        self.batch_tfms = dls.valid.after_batch  # e.g. IntToFloatTensor -> (augmentations) -> Normalize
        self.item_tfms.split_idx = 1  # validation behaviour: centre crops, augmentation off
        self.batch_tfms.split_idx = 1
        # The loss's activation, as learn.predict applies it (softmax, sigmoid, or none for regression and key
        # points). A plain torch loss has none: fastai then applies nothing, except that a classifier's answers
        # are probabilities (its kind's own activation).
        default = {
            "softmax": lambda x: torch.softmax(x, dim=1),  # the class axis: [N, classes], or [N, codes, H, W]
            "sigmoid": torch.sigmoid,
            "none": lambda x: x,
        }
        self.activation = getattr(learn.loss_func, "activation", default[ACTIVATION[kind]])
        self._item_lock = threading.Lock()
        self._tensor_type = type(
            self._fastai_item(Image.new("RGB", (3, 3)))
        )  # TensorImage: what batch tfms expect
        self.fast_items = self._verified_fast_path()

    @classmethod
    def load(cls, file: VerifiedFile, device: str = "auto", threads: int | None = None) -> FastaiBackend:
        chosen = resolve_device(device, torch.cuda.is_available())
        if threads:
            torch.set_num_threads(threads)  # process-wide: every fastai model shares the one model thread
        learn = load_learner_file(file)
        check_manifest(file, learn)
        manifest = file.manifest
        return cls(learn, chosen, manifest.input_size, manifest.kind, manifest.classes)

    def prepare(self, image: Image.Image) -> torch.Tensor:
        if self.fast_items is not None:
            return torch.from_numpy(self.fast_items.item(image)).as_subclass(self._tensor_type)
        return self._fastai_item(image)

    def _fastai_item(self, image: Image.Image) -> torch.Tensor:
        with self._item_lock:
            prepared: torch.Tensor = self.item_tfms(self.to_image(image))
        return prepared

    def _verified_fast_path(self) -> Preprocessor | None:
        """A PIL/numpy twin of the learner's item transforms, when they are Resize -> ToTensor and the twin gives
        the same pixels as fastai on images of every awkward shape; else None (fastai's own pipeline runs)."""
        try:
            spec = item_pipeline(self.item_tfms)
            twin = Preprocessor(Preprocessing(normalize=None, augment=False, **spec))
        except (ValueError, KeyError):
            return None
        rng = np.random.default_rng(0)
        for width, height in CHECK_SIZES:
            image = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
            if not np.array_equal(twin.item(image), self._fastai_item(image).numpy()):
                logger.warning(
                    "the learner's item transforms are not reproduced exactly; running fastai's own"
                )
                return None
        return twin

    def predict(self, inputs: Sequence[torch.Tensor]) -> list[Answer]:
        if not inputs:
            return []
        with torch.inference_mode():
            batch = torch.stack(list(inputs))  # keeps the TensorImage type the batch transforms dispatch on
            batch = self.batch_tfms(batch.to(self._device, non_blocking=True))
            # A plain tensor skips fastai's per-op __torch_function__ dispatch of TensorImage: same numbers, faster.
            outputs = self.activation(self.model(batch.as_subclass(torch.Tensor)))
            if (
                self.model_kind == SEGMENTATION
            ):  # the codes, decided on the device: N x H x W ids, not N x C x H x W
                ids = (
                    outputs.argmax(dim=1).cpu().numpy()
                )  # the first of equal ones, as learn.predict's decodes
                return [Mask(m) for m in mask_ids(ids, len(self.classes))]
            outputs = outputs.float().cpu()
        return decode(self.model_kind, outputs.numpy(), self.classes, self.input_size)

    def warm_up(self) -> None:
        blank = self.prepare(Image.new("RGB", (self.input_size, self.input_size), (255, 255, 255)))
        for _ in range(2):
            self.predict([blank, blank])

    def describe(self) -> dict[str, Any]:
        return {"backend": self.kind, "device": self.device, "threads": torch.get_num_threads(),
                "item_transforms": "PIL/numpy twin (verified)" if self.fast_items else "fastai"}  # fmt: skip


def load_learner_file(file: VerifiedFile) -> Any:
    """fastai's load_learner, with its swallowed-ImportError trap (fastai 2.8.12) turned into the real cause."""
    from fastai.learner import load_learner

    path = file.path
    data = verified_bytes(file)
    with warnings.catch_warnings():
        # These bytes' sha256 is the one checked against the manifest: this is the exported file.
        warnings.filterwarnings("ignore", message=".*insecure pickle module.*")
        try:
            return load_learner(io.BytesIO(data), cpu=True)
        except UnboundLocalError:
            try:  # fastai hides ModuleNotFoundError this way; load again without it to surface the cause
                torch.load(io.BytesIO(data), map_location="cpu", pickle_module=pickle, weights_only=False)
            except Exception as e:
                raise ModelLoadError(f"cannot load {path}: {type(e).__name__}: {e}") from None
            raise
        except Exception as e:
            raise ModelLoadError(f"cannot load {path}: {type(e).__name__}: {e}") from None


def check_manifest(file: VerifiedFile, learn: Any) -> None:
    """The manifest is a claim about the pickle: its kind, classes, input size, preprocessing and model must be
    what the learner itself holds, or the model is refused with every field that disagrees."""
    from training.import_facts import NotServable, disagreements, facts_of

    try:
        facts = facts_of(learn)
    except NotServable as e:
        raise ModelLoadError(f"{file.path} is {e}") from None
    found = disagreements(file.manifest, facts)
    if found:
        raise ModelLoadError(
            f"manifest {manifest_path(file.path).name} does not describe {file.path.name}: {'; '.join(found)}; "
            "refusing to serve it (restore the manifest its export wrote, or import the file again)"
        )


def resolve_device(requested: str, cuda_available: bool) -> torch.device:
    """auto: CUDA when available, else CPU; cuda: CUDA or a startup error; cpu: CPU."""
    if requested == "cuda" and not cuda_available:
        raise ModelLoadError("LEARNSERVE_DEVICE=cuda but no CUDA device is available; use auto or cpu")
    if requested == "cuda" or (requested == "auto" and cuda_available):
        return torch.device("cuda")
    return torch.device("cpu")
