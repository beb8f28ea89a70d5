"""The ONNX Runtime backend: the model exported by `python -m training export-onnx` (learn.model and its softmax),
with the learner's validation pipeline reproduced in PIL and numpy (app/core/preprocess.py). Needs neither fastai
nor torch: this is what the slim image runs.

`prepare` resizes one image to a uint8 [3, S, S] array (thread-safe: PIL and numpy only); `predict` scales,
normalises and runs the batch through the session on the model thread.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from app.core.backends import BackendKind
from app.core.errors import ModelLoadError
from app.core.prediction import Answer, decode
from app.core.preprocess import Preprocessor
from app.core.verify import VerifiedFile, check_unchanged
from training.manifest import ACTIVATION


class OnnxBackend:
    kind: BackendKind = "onnx"

    def __init__(self, session: Any, file: VerifiedFile) -> None:
        manifest = file.manifest
        if manifest.onnx is None:
            raise ModelLoadError(f"{file.path}: the manifest has no onnx section")
        expected = ACTIVATION[manifest.kind]
        if manifest.onnx.activation != expected:
            raise ModelLoadError(
                f"{file.path}: the graph applies a {manifest.onnx.activation}, but a {manifest.kind} needs a "
                f"{expected}; export it again with `python -m training export-onnx`"
            )
        self.session = session
        self.model_kind = manifest.kind
        self.classes = list(manifest.classes)
        self.input_size = manifest.preprocessing.size
        self.input_name = manifest.onnx.input.name
        self.output_name = manifest.onnx.output.name
        providers = session.get_providers()
        self.device = "cuda" if "CUDAExecutionProvider" in providers else "cpu"
        self.threads = session.get_session_options().intra_op_num_threads or None
        try:
            self.preprocess = Preprocessor(manifest.preprocessing)
        except (KeyError, ValueError) as e:
            raise ModelLoadError(f"{file.path}: cannot reproduce its preprocessing ({e})") from None

    @classmethod
    def load(cls, file: VerifiedFile, device: str = "auto", threads: int | None = None) -> OnnxBackend:
        import onnxruntime as ort

        available = ort.get_available_providers()
        if device == "cuda" and "CUDAExecutionProvider" not in available:
            raise ModelLoadError(
                "LEARNSERVE_DEVICE=cuda but ONNX Runtime has no CUDA provider here (install onnxruntime-gpu); "
                "use auto or cpu"
            )
        providers = ["CPUExecutionProvider"]
        if device in ("cuda", "auto") and "CUDAExecutionProvider" in available:
            providers.insert(0, "CUDAExecutionProvider")
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.inter_op_num_threads = 1  # one batch at a time, on the model thread
        if threads:
            options.intra_op_num_threads = threads
        try:
            session = ort.InferenceSession(str(file.path), options, providers=providers)
        except Exception as e:  # a corrupt or foreign file: onnxruntime raises its own exception types
            raise ModelLoadError(f"cannot load {file.path}: {type(e).__name__}: {e}") from None
        check_unchanged(file)  # the file read is the file verified (same size, time and inode throughout)
        return cls(session, file)

    def prepare(self, image: Image.Image) -> NDArray[np.uint8]:
        return self.preprocess.item(image)

    def predict(self, inputs: Sequence[NDArray[np.uint8]]) -> list[Answer]:
        if not inputs:
            return []
        batch = self.preprocess.batch(inputs)
        [outputs] = self.session.run([self.output_name], {self.input_name: batch})
        return decode(self.model_kind, np.asarray(outputs, dtype=np.float32), self.classes, self.input_size)

    def warm_up(self) -> None:
        blank = self.prepare(Image.new("RGB", (self.input_size, self.input_size), (255, 255, 255)))
        for _ in range(2):
            self.predict([blank, blank])

    def describe(self) -> dict[str, Any]:
        return {"backend": self.kind, "device": self.device, "threads": self.threads}
