"""What a loaded fastai learner itself holds, read from its objects: kind, classes, resize, normalisation, input size
and model. `import` writes these into the manifest; the server's fastai backend reads them again at every load and
refuses a manifest that disagrees (a manifest is a claim about the pickle, checked, not trusted).

Needs torch and PIL (it runs the learner's pipelines on one blank image); no fastai import.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from training.manifest import (
    MULTI_LABEL,
    POINTS,
    REGRESSION,
    RESAMPLES,
    SEGMENTATION,
    SINGLE_LABEL,
    Manifest,
    Normalization,
)

SERVED = "single-label and multi-label classifiers, regression, key points and segmentation are served"


class NotServable(ValueError):
    """The learner is not a kind this project serves (the message says what it is)."""


@dataclass(frozen=True)
class LearnerFacts:
    kind: str
    threshold: float | None  # multi-label: the loss's `thresh`, which learn.predict decodes with
    classes: list[str]
    input_size: int  # the square side of the tensor that reaches the model
    resize: dict[str, Any] | None  # resize_method, size, pad_mode, resample of its Resize, if it has one
    normalize: Normalization | None
    model_class: str
    parameters: int
    arch: str


def learner_kind(learn: Any) -> str:
    """The learner's kind, from its target transforms and its loss, or NotServable naming what it is."""
    dls = learn.dls
    tls = getattr(getattr(dls, "valid_ds", None), "tls", None)
    if tls is None or getattr(dls, "n_inp", 1) != 1 or len(tls) != 2:
        raise NotServable(f"a learner with several inputs or targets: {SERVED}")
    targets = [type(t).__name__ for t in tls[1].tfms.fs]
    loss = type(getattr(learn.loss_func, "func", learn.loss_func)).__name__
    if _is_mask_target(learn):
        return _segmentation_kind(learn, loss)
    if "MultiCategorize" in targets or "EncodedMultiCategorize" in targets:  # labels, or one-hot columns
        if threshold_of(learn) is None:
            raise NotServable(
                f"a multi-label classifier whose loss ({type(learn.loss_func).__name__}) has no threshold "
                f"(fastai's BCEWithLogitsLossFlat has one, `thresh`): {SERVED}"
            )
        return MULTI_LABEL
    if "RegressionSetup" in targets:
        return REGRESSION
    if "PointScaler" in _item_transforms(learn) or "TensorPoint" in targets:
        return POINTS
    if "Categorize" not in targets:
        raise NotServable(
            f"not a kind served here (its targets go through {', '.join(targets) or 'nothing'}): {SERVED}"
        )
    if "BCEWithLogits" in loss:
        raise NotServable(f"a single-label target (Categorize) with a multi-label loss ({loss}): {SERVED}")
    return SINGLE_LABEL


def _is_mask_target(learn: Any) -> bool:
    """MaskBlock: its item transform AddMaskCodes, or a target made by PILMask.create (the type transform's bound
    class; a Transform wrapping a function names itself `Transform`)."""
    if "AddMaskCodes" in _item_transforms(learn):
        return True
    made_by = getattr(getattr(learn.dls.valid_ds.tls[1].tfms.fs[-1], "func", None), "__self__", None)
    return getattr(made_by, "__name__", "") == "PILMask"


def _segmentation_kind(learn: Any, loss: str) -> str:
    """A mask target needs a loss over the class axis 1 of [N, codes, H, W] (CrossEntropyLossFlat(axis=1), what
    unet_learner and MaskBlock give): its argmax there is learn.predict's mask."""
    axis = getattr(learn.loss_func, "axis", None)
    if "CrossEntropy" not in loss or axis != 1:
        found = f"{type(learn.loss_func).__name__}" + (f" over axis {axis}" if axis is not None else "")
        raise NotServable(
            f"a mask target (MaskBlock) with the loss {found}, not a cross entropy over the class axis 1 "
            f"(CrossEntropyLossFlat(axis=1)): {SERVED}"
        )
    return SEGMENTATION


def codes_of(learn: Any) -> list[str] | None:
    """A segmentation learner's codes: dls.vocab when set (SegmentationDataLoaders), else MaskBlock's AddMaskCodes;
    None when it was given none."""
    vocab = getattr(learn.dls, "__dict__", {}).get("vocab")
    for tfm in learn.dls.valid.after_item.fs:
        if vocab is None and type(tfm).__name__ == "AddMaskCodes":
            vocab = getattr(tfm, "codes", None)
    return None if vocab is None else [str(c) for c in vocab]


def _item_transforms(learn: Any) -> list[str]:
    return [type(t).__name__ for t in learn.dls.valid.after_item.fs]


def outputs_of(learn: Any, kind: str) -> list[str]:
    """The names of the model's outputs (the manifest's `classes`): a classifier's vocab; for regression value_1..N
    and for key points point_1..P, counted from the model's own output on one blank input; a segmentation's codes."""
    if kind in (SINGLE_LABEL, MULTI_LABEL):
        return [str(c) for c in learn.dls.vocab]
    import torch

    size = input_size_of(learn)
    model = learn.model.eval()
    with torch.inference_mode():
        out = model(torch.zeros(1, 3, size, size))
    if kind == SEGMENTATION:
        return _codes_checked(learn, tuple(out.shape), size)
    n = int(out.reshape(1, -1).shape[1])
    columns = target_columns(learn)
    if kind == POINTS:
        if n % 2:
            raise NotServable(f"a key point learner whose model gives {n} values, not (x, y) pairs: {SERVED}")
        pairs = list(zip(columns[::2], columns[1::2], strict=False))
        if len(pairs) * 2 == n == len(columns) and all(
            x.endswith("_x") and y == x[:-2] + "_y" for x, y in pairs
        ):  # read from NAME_x, NAME_y columns (as `train` does)
            return [x[:-2] for x, _ in pairs]
        return [f"point_{i}" for i in range(1, n // 2 + 1)]
    return columns if len(columns) == n else [f"value_{i}" for i in range(1, n + 1)]


def target_columns(learn: Any) -> list[str]:
    """The columns the targets are read from, when a fastai ColReader reads them (`train` names a regression's
    values and its key points by them); else none."""
    getters = learn.dls.valid_ds.tls[1].tfms.fs
    first: Any = getters[0] if len(getters) else None
    if type(first).__name__ != "ColReader" or first.pref or first.suff:
        return []
    return [str(c) for c in first.cols]


def _codes_checked(learn: Any, shape: tuple[int, ...], size: int) -> list[str]:
    """The codes, checked against the model's output: [1, codes, size, size] (one score per code and input pixel).
    A MaskBlock without codes names them by their mask value: 0, 1, ..."""
    if len(shape) != 4 or shape[2:] != (size, size):
        raise NotServable(
            f"a segmentation learner whose model gives {list(shape)} for a {size}x{size} input, not "
            f"[1, codes, {size}, {size}]: {SERVED}"
        )
    codes = codes_of(learn)
    if codes is None:
        return [str(i) for i in range(shape[1])]
    if len(codes) != shape[1]:
        raise NotServable(
            f"a segmentation learner with {len(codes)} codes whose model scores {shape[1]} per pixel: {SERVED}"
        )
    return codes


def threshold_of(learn: Any) -> float | None:
    """A multi-label learner's threshold: its loss's `thresh` (BCEWithLogitsLossFlat's decodes: prob > thresh)."""
    thresh = getattr(learn.loss_func, "thresh", None)
    return float(thresh) if isinstance(thresh, int | float) and 0 <= thresh <= 1 else None


def resize_of(learn: Any) -> dict[str, Any] | None:
    for tfm in learn.dls.valid.after_item.fs:
        if type(tfm).__name__ == "Resize":
            height, width = tfm.size
            return {"resize_method": str(tfm.method), "size": int(width) if width == height else -1,
                    "pad_mode": str(tfm.pad_mode), "resample": RESAMPLES.get(tfm.mode, str(tfm.mode))}  # fmt: skip
    return None


def normalization_of(learn: Any) -> Normalization | None:
    for tfm in learn.dls.valid.after_batch.fs:
        if type(tfm).__name__ == "Normalize":
            return Normalization(mean=tfm.mean.flatten().tolist(), std=tfm.std.flatten().tolist())
    return None


def input_size_of(learn: Any) -> int:
    """The side of the square tensor the model receives: the validation pipelines run on one blank image."""
    import torch
    from PIL import Image

    dls = learn.dls
    item, batch = dls.valid.after_item, dls.valid.after_batch
    saved = item.split_idx, batch.split_idx
    item.split_idx = batch.split_idx = 1
    try:
        to_image = dls.valid_ds.tls[0].tfms.fs[-1]  # the type transform (PILImage.create), not the getters
        x = batch(torch.stack([item(to_image(Image.new("RGB", (37, 23), (128, 128, 128))))]))
    finally:
        item.split_idx, batch.split_idx = saved
    height, width = int(x.shape[-2]), int(x.shape[-1])
    if height != width:
        raise NotServable(f"its model takes {width}x{height} images: only square inputs are served")
    return width


def arch_of(learn: Any) -> str:
    """The architecture's name as far as the learner tells it (vision_learner keeps `arch`), else the model class."""
    arch = getattr(learn, "arch", None)
    name = getattr(arch, "__name__", None) or (arch if isinstance(arch, str) else None)
    return str(name or type(learn.model).__name__)


def facts_of(learn: Any) -> LearnerFacts:
    kind = learner_kind(learn)
    return LearnerFacts(
        kind=kind,
        threshold=threshold_of(learn) if kind == MULTI_LABEL else None,
        classes=outputs_of(learn, kind),
        input_size=input_size_of(learn),
        resize=resize_of(learn),
        normalize=normalization_of(learn),
        model_class=type(learn.model).__name__,
        parameters=sum(int(p.numel()) for p in learn.model.parameters()),
        arch=arch_of(learn),
    )


def disagreements(manifest: Manifest, facts: LearnerFacts) -> list[str]:
    """Every field where the manifest says something else than the learner: 'FIELD is X in the manifest, Y in
    the learner'. Fields an older manifest does not have are not compared."""
    found: list[tuple[str, Any, Any]] = [
        ("classes", manifest.classes, facts.classes),
        ("kind", manifest.kind, facts.kind),
        ("threshold", manifest.threshold, facts.threshold),
        ("input_size", manifest.input_size, facts.input_size),
    ]
    if facts.resize is not None:
        pre = manifest.preprocessing
        found += [
            ("preprocessing.resize_method", pre.resize_method, facts.resize["resize_method"]),
            ("preprocessing.size", pre.size, facts.resize["size"]),
            ("preprocessing.pad_mode", pre.pad_mode, facts.resize["pad_mode"]),
            ("preprocessing.resample", pre.resample, facts.resize["resample"]),
        ]
    found.append(
        ("preprocessing.normalize", _stats(manifest.preprocessing.normalize), _stats(facts.normalize))
    )
    if manifest.model is not None:
        found += [
            ("model.class_name", manifest.model.class_name, facts.model_class),
            ("model.parameters", manifest.model.parameters, facts.parameters),
        ]
    return [f"{name} is {mine!r} in the manifest, {theirs!r} in the learner" for name, mine, theirs in found
            if mine != theirs]  # fmt: skip


def _stats(norm: Normalization | None) -> Any:
    """Normalisation statistics rounded to 6 digits: float32 tensors vs the JSON's float64 text."""
    if norm is None:
        return None
    return {"mean": [round(v, 6) for v in norm.mean], "std": [round(v, 6) for v in norm.std]}
