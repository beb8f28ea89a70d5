"""`export-onnx`: learn.model and its activation (softmax, over the codes of each pixel for segmentation; sigmoid for
multi-label) as an ONNX graph, and the learner's validation pipeline written into the
manifest precisely enough for app/core/preprocess.py to reproduce it without fastai.

Only what the ONNX path can reproduce is exported: item transforms Resize and ToTensor; batch transforms
IntToFloatTensor, Normalize, augmentations that run at training only (split_idx 0) and the affine ones of
`aug_transforms` (Warp, Rotate, Zoom, Flip), which resample through an identity grid at validation; the loss's
activation when it is the softmax or sigmoid of the learner's kind.
Anything else is refused, naming the transform (the `.pkl` still serves such a learner). The export is checked
before it is written: ONNX Runtime's probabilities against learn.model's on real-sized inputs.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from training.errors import TrainingError
from training.loading import load_verified
from training.manifest import (
    ACTIVATION,
    POINTS,
    SEGMENTATION,
    Manifest,
    Normalization,
    OnnxExport,
    Preprocessing,
    TensorSpec,
    item_pipeline,
    sha256_file,
    write_manifest,
)

OPSET = 17
MAX_ABS_DIFF = 1e-4  # probabilities, ONNX Runtime vs learn.model, on the same preprocessed batch


def preprocessing_of(learn: Any, manifest: Manifest) -> Preprocessing:
    """The validation pipeline as data, read from the learner's own transforms (not from training options)."""
    from fastai.vision.augment import AffineCoordTfm

    dls = learn.dls
    spec: dict[str, Any] = {"augment": manifest.preprocessing.augment, "normalize": None}
    try:
        spec |= item_pipeline(dls.valid.after_item)
    except ValueError as e:
        raise TrainingError(f"{e}: the ONNX path cannot reproduce it; serve the .pkl") from None
    for tfm in dls.valid.after_batch.fs:
        name = type(tfm).__name__
        if name == "IntToFloatTensor":
            spec["scale"] = float(tfm.div)
        elif name == "Normalize":
            spec["normalize"] = Normalization(
                mean=tfm.mean.flatten().tolist(), std=tfm.std.flatten().tolist()
            )
        elif getattr(tfm, "split_idx", None) == 0:
            continue  # training only (Brightness, Contrast, ...): skipped at validation
        elif isinstance(tfm, AffineCoordTfm) and tfm.size is None:
            continue  # Warp, Rotate, Zoom, Flip: an identity grid at validation (within 1e-6 of the input)
        else:
            raise TrainingError(
                f"the batch transform {name} changes images at validation and cannot be reproduced by the ONNX "
                "path; serve the .pkl"
            )
    return Preprocessing(**spec)


ACTIVATIONS: dict[str, Any] = {
    "softmax": lambda x: torch.softmax(x, dim=1),
    "sigmoid": torch.sigmoid,
    "none": lambda x: (
        x
    ),  # regression, key points: the model's outputs as they are (MSELossFlat has no activation)
}


class WithActivation(nn.Module):
    """learn.model followed by its loss's activation: softmax over axis 1 (single-label; segmentation, whose axis 1
    is the codes of [N, codes, H, W]), sigmoid (multi-label) or none."""

    def __init__(self, model: nn.Module, activation: str) -> None:
        super().__init__()
        self.model = model
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outputs = self.model(x)
        if self.activation == "sigmoid":
            return torch.sigmoid(outputs)
        return torch.softmax(outputs, dim=1) if self.activation == "softmax" else outputs


def activation_of(learn: Any, manifest: Manifest, size: int) -> str:
    """The activation the learner's loss applies (what learn.predict's outputs went through), checked on random
    logits against the one its kind expects: softmax for single-label, sigmoid for multi-label, none otherwise."""
    expected = ACTIVATION[manifest.kind]
    activation = getattr(learn.loss_func, "activation", None)
    logits = learn.model.eval()(torch.randn(2, 3, size, size))
    if activation is None or not torch.allclose(activation(logits), ACTIVATIONS[expected](logits), atol=1e-6):
        raise TrainingError(
            f"the loss {type(learn.loss_func).__name__} does not apply {expected}, as a {manifest.kind}'s does: "
            "it cannot be exported; serve the .pkl"
        )
    return expected


def export_onnx(model: Path, out: Path | None = None) -> Manifest:
    """Write MODEL.onnx beside MODEL.pkl (or `out`), checked against learn.model, and record it in MODEL.json."""
    learn, manifest = load_verified(model)
    spec = preprocessing_of(learn, manifest)
    size = spec.size
    activation = activation_of(learn, manifest, size)
    out = out or model.with_suffix(".onnx")
    graph = WithActivation(
        learn.model, activation
    ).eval()  # the exporter restores the mode it found: keep it eval
    example = torch.rand(2, 3, size, size)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".onnx-") as tmp:
        staged = Path(tmp) / out.name
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the exporter's deprecation chatter
            torch.onnx.export(
                graph, (example,), str(staged), input_names=["input"], output_names=["probabilities"],
                dynamic_axes={"input": {0: "batch"}, "probabilities": {0: "batch"}}, opset_version=OPSET,
                dynamo=False,
            )  # fmt: skip
        diff = max_difference(graph, staged, size)
        if diff > MAX_ABS_DIFF:
            raise TrainingError(f"the ONNX graph's probabilities differ from learn.model's by {diff:.2e}")
        staged.chmod(0o644)
        os.replace(staged, out)
    manifest.preprocessing = spec
    n_outputs = len(manifest.classes) * (2 if manifest.kind == POINTS else 1)  # key points: (x, y) each
    # segmentation: a probability per code and pixel, softmaxed over the codes (axis 1) inside the graph
    shape = [-1, n_outputs, size, size] if manifest.kind == SEGMENTATION else [-1, n_outputs]
    manifest.onnx = OnnxExport(
        file=out.name,
        sha256=sha256_file(out),
        opset=OPSET,
        input=TensorSpec(name="input", shape=[-1, 3, size, size], dtype="float32"),
        output=TensorSpec(name="probabilities", shape=shape, dtype="float32"),
        activation=activation,
        max_abs_diff=diff,
    )
    write_manifest(model, manifest)
    return manifest


def max_difference(graph: nn.Module, path: Path, size: int, n: int = 8) -> float:
    """Largest |probability difference| between ONNX Runtime and torch on one batch of `n` (and on one image)."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    worst = 0.0
    for batch in (torch.randn(n, 3, size, size), torch.randn(1, 3, size, size)):
        with torch.inference_mode():
            expected = graph(batch).numpy()
        [got] = session.run(["probabilities"], {"input": batch.numpy()})
        worst = max(worst, float(abs(got - expected).max()))
    return worst
