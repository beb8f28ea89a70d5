"""The manifest written next to every exported learner: the contract between `training` and `app`.

Imports only pydantic and the standard library, so the service can read it before touching fastai or torch.
"""

from __future__ import annotations

import hashlib
import platform
from datetime import datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path, PureWindowsPath
from typing import Any, Literal

from pydantic import BaseModel, Field

MANIFEST_VERSION = 1

# What a learner predicts, read from its target blocks and its loss; the answers' shape follows from it.
# single-label: CategoryBlock, CrossEntropyLossFlat (softmax, one label);
# multi-label: MultiCategoryBlock, BCEWithLogitsLossFlat (sigmoid, every label over its threshold);
# regression: RegressionBlock, MSELossFlat (the model's outputs as they are, one value each);
# key points: PointBlock, MSELossFlat (x, y pairs scaled to -1..1 across the model's input, as PointScaler does);
# segmentation: MaskBlock(codes), CrossEntropyLossFlat(axis=1) (a softmax over the codes for every pixel, then the
# most likely code: a class mask the size of the model's input).
Kind = Literal[
    "single-label classifier", "multi-label classifier", "regression", "key points", "segmentation"
]
SINGLE_LABEL: Kind = "single-label classifier"
MULTI_LABEL: Kind = "multi-label classifier"
REGRESSION: Kind = "regression"
POINTS: Kind = "key points"
SEGMENTATION: Kind = "segmentation"
KINDS: tuple[Kind, ...] = (SINGLE_LABEL, MULTI_LABEL, REGRESSION, POINTS, SEGMENTATION)
CLASSIFIERS: tuple[Kind, ...] = (SINGLE_LABEL, MULTI_LABEL)
# The activation learn.predict applies to each kind's outputs (its loss's), and the ONNX graph holds.
ACTIVATION: dict[str, Literal["softmax", "sigmoid", "none"]] = {
    SINGLE_LABEL: "softmax",
    MULTI_LABEL: "sigmoid",
    REGRESSION: "none",
    POINTS: "none",
    SEGMENTATION: "softmax",  # over the class axis (1) of [N, codes, H, W], for every pixel
}


class Normalization(BaseModel):
    mean: list[float]
    std: list[float]


class Preprocessing(BaseModel):
    """The learner's validation pipeline, complete enough to reproduce it without fastai (app/core/preprocess.py):
    decode to RGB, fastai's Resize (crop or pad centred, then resize), HWC -> CHW, divide by 255, normalise."""

    resize_method: str = Field(description="fastai Resize method: squish, crop or pad")
    size: int = Field(description="square input size in pixels")
    normalize: Normalization | None = Field(description="per-channel stats applied after scaling to 0..1")
    augment: bool = Field(description="training-time augmentation (skipped at inference)")
    resample: str = Field(
        "bilinear", description="PIL resampling of the resize: bilinear, nearest, bicubic, ..."
    )
    pad_mode: str = Field(
        "reflection", description="fastai pad mode (Resize method pad): reflection, zeros, border"
    )
    scale: float = Field(255.0, description="the 0..255 pixels are divided by this (IntToFloatTensor)")
    channels: str = Field("RGB", description="channel order of the model's input")
    layout: str = Field("NCHW", description="tensor layout of the model's input")


class TensorSpec(BaseModel):
    name: str
    shape: list[int] = Field(description="-1 marks the dynamic batch axis")
    dtype: str


class OnnxExport(BaseModel):
    """`python -m training export-onnx`: learn.model with its softmax, for ONNX Runtime without fastai or torch."""

    file: str = Field(description="the .onnx file's name, beside this manifest")
    sha256: str
    opset: int
    input: TensorSpec = Field(description="the preprocessed batch: float32 [N, 3, size, size]")
    output: TensorSpec = Field(
        description="class probabilities (the activation is inside the graph); a regression's values; key points' "
        "x, y pairs in -1..1 (named `probabilities` whatever the kind)"
    )
    activation: str = Field(
        "softmax", description="applied inside the graph to learn.model's output: softmax, sigmoid or none"
    )
    max_abs_diff: float = Field(
        description="largest |probability difference| to learn.model measured at export"
    )
    quantized: bool = Field(False, description="int8 weights (static quantisation)")
    accuracy: float | None = Field(
        None, description="validation accuracy of the exported graph, when measured"
    )


class Metrics(BaseModel):
    """Measured on validation images; which figures are set depends on the kind (None: not a figure of it)."""

    accuracy: float | None = Field(
        description="single-label: the share of images whose top class is right; multi-label: the share of "
        "(image, label) decisions that are right at the threshold (fastai's accuracy_multi); segmentation: the "
        "share of pixels whose code is right; regression and key points: none"
    )
    error_rate: float | None = Field(description="1 - accuracy, where there is an accuracy")
    valid_loss: float
    f1: float | None = Field(
        None, description="multi-label: the macro F1 over the labels at the threshold; other kinds: none"
    )
    mae: float | None = Field(
        None,
        description="regression: the mean absolute error over the values; key points: the mean distance between "
        "predicted and true points, in pixels of the model's input; other kinds: none",
    )
    iou: dict[str, float] | None = Field(
        None, description="segmentation: intersection over union of each code over the validation pixels"
    )


class DatasetInfo(BaseModel):
    source: str
    counts: dict[str, int] = Field(description="images per class, train and validation together")
    train_size: int
    valid_size: int
    skipped_corrupt: int = 0
    skipped_missing: int = Field(0, description="CSV rows whose file does not exist")
    ignored_non_image: int = 0
    split: str = Field(
        "random",
        description="how validation images were chosen: stratified (the same share of every class) or random "
        "(seed and valid_pct in hyperparameters), folders (DATA/train and DATA/valid) or column (a CSV is_valid "
        "column)",
    )


class ModelInfo(BaseModel):
    """What the learner's model is, checked against the pickle at every load."""

    class_name: str = Field(description="the class of learn.model (e.g. Sequential)")
    parameters: int = Field(description="the number of values in its weights")


class CodeFile(BaseModel):
    file: str = Field(description="the --code file's name as given to import")
    sha256: str
    provided: list[str] = Field(description="the notebook names it defined for the pickle")


class ImportInfo(BaseModel):
    """`python -m training import`: where the served .pkl came from and what was done to it."""

    file: str = Field(description="the export's file name as given to import")
    sha256: str = Field(description="the sha256 of that export, before conversion")
    written_by: dict[str, str] = Field(
        description="what wrote it, as far as the pickle shows (fastai: '<2.8' or '>=2.8.1'; python)"
    )
    converted: bool = Field(
        description="true: re-exported by this fastai (the original was from fastai < 2.8)"
    )
    missing_names: list[str] = Field(
        description="notebook names the pickle refers to that were not provided: only training needs them"
    )
    code: CodeFile | None = Field(None, description="the --code file, embedded in the served pickle")
    max_abs_diff: float = Field(
        description="largest |probability difference| between the original and the served learner on probe "
        "images, each loaded in its own process"
    )


class Manifest(BaseModel):
    manifest_version: int = MANIFEST_VERSION
    name: str
    source: Literal["trained", "imported"] = Field(
        "trained", description="trained by `python -m training train`, or brought in by `import`"
    )
    kind: Kind = Field(
        SINGLE_LABEL, description="what the learner predicts, read from its loss and target blocks"
    )
    threshold: float | None = Field(
        None,
        ge=0,
        le=1,
        description="multi-label: a label is given when its probability is over this (the learner's own "
        "loss_func.thresh, as learn.predict decodes); other kinds: none",
    )
    classes: list[str] = Field(
        description="the names of the model's outputs, in order: a classifier's labels (the learner's vocab); a "
        "regression's value names (value_1, ... unless training named them); the key points' names (point_1, ...); a "
        "segmentation's codes (the class of each mask value 0, 1, ...)"
    )
    arch: str
    input_size: int
    preprocessing: Preprocessing
    metrics: Metrics | None = Field(
        description="measured on validation images; null: not validated (an import without --data)"
    )
    dataset: DatasetInfo | None = Field(None, description="the data it was trained or validated on")
    hyperparameters: dict[str, Any] = Field(default_factory=dict)
    versions: dict[str, str]
    sha256: str
    export_id: str | None = Field(
        None,
        description="the model's version under every backend: the first 12 hex characters of the .pkl's sha256 "
        "(older manifests: taken from sha256)",
    )
    model: ModelInfo | None = Field(None, description="the model's class and size (older manifests: none)")
    imported: ImportInfo | None = Field(None, description="for source imported: what was brought in, and how")
    onnx: OnnxExport | None = Field(None, description="the ONNX export of this model, when one was made")
    created_at: datetime
    train_seconds: float | None = Field(
        None, description="the fit and the final validation (older manifests: the whole run); imports: null"
    )
    world_size: int = Field(
        1, description="processes that trained the model together (data-parallel); 1: one"
    )
    lr_find_seconds: float | None = Field(None, description="the lr finder's run before training (--lr find)")
    epochs_run: int | None = Field(None, description="epochs trained (fewer than asked after an early stop)")
    best_epoch: int | None = Field(
        None, description="the epoch (1..epochs_run) whose weights were exported; None when untrained"
    )

    def public(self) -> dict[str, Any]:
        """The manifest as the service publishes it (/metadata, /models/{name}): every path it records (the data
        folder, hyperparameters such as `data`, `out` and `reports`) reduced to its last part, since where the
        training ran is nobody's business."""
        data = self.model_dump(mode="json")
        if data["dataset"] is not None:  # imported without --data: no dataset
            data["dataset"]["source"] = path_name(data["dataset"]["source"])
        data["hyperparameters"] = {k: path_name(v) for k, v in data["hyperparameters"].items()}
        return data

    @property
    def version(self) -> str:
        """One identity whatever serves it (the .pkl through fastai or its .onnx graph): the export id."""
        return self.export_id or self.sha256[:12]

    @property
    def multi_label(self) -> bool:
        return self.kind == MULTI_LABEL

    @property
    def classifier(self) -> bool:
        return self.kind in CLASSIFIERS

    @property
    def labels_threshold(self) -> float | None:
        """Multi-label: the probability its labels are given over (the learner's own; fastai's default 0.5 when a
        manifest lacks it); single-label: None."""
        if not self.multi_label:
            return None
        return self.threshold if self.threshold is not None else 0.5

    @property
    def validated(self) -> bool:
        return self.metrics is not None

    @property
    def python_minor(self) -> str:
        """'3.11' from the recorded Python version: fastai 2.8 pickles only load on the same minor."""
        return ".".join(self.versions.get("python", "").split(".")[:2])


def path_name(value: Any) -> Any:
    """'/home/me/data/digits' -> 'digits' (any string with a path separator); anything else as it is."""
    if isinstance(value, str) and ("/" in value or "\\" in value):
        return PureWindowsPath(value).name or value  # splits on / and on a backslash
    return value


RESAMPLES = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming"}  # PIL's numbers
PAD_MODES = ("zeros", "border", "reflection")


def item_pipeline(item_tfms: Any) -> dict[str, Any]:
    """The resize part of `Preprocessing`, read from a learner's validation item transforms (`dls.valid.after_item`)
    by their names and attributes (no fastai import here). Only `Resize` then `ToTensor` are understood; anything
    else raises ValueError naming it. Shared by the ONNX export and the fastai backend's fast item path."""
    spec: dict[str, Any] = {}
    for tfm in item_tfms.fs:
        name = type(tfm).__name__
        if name == "Resize":
            width, height = tfm.size[1], tfm.size[0]  # fastai keeps (height, width)
            if width != height:
                raise ValueError(f"Resize to {width}x{height}: only square inputs are supported")
            if str(tfm.pad_mode) not in PAD_MODES or tfm.mode not in RESAMPLES:
                raise ValueError(
                    f"Resize with pad mode {tfm.pad_mode} / resample {tfm.mode} is not supported"
                )
            spec |= {"resize_method": str(tfm.method), "size": int(width), "pad_mode": str(tfm.pad_mode),
                     "resample": RESAMPLES[tfm.mode]}  # fmt: skip
        elif name not in ("ToTensor", "PointScaler", "AddMaskCodes"):  # these only touch targets
            raise ValueError(f"the item transform {name} is not understood")
    if "size" not in spec:
        raise ValueError("the learner has no Resize item transform: its input size is not fixed")
    return spec


def library_versions(names: tuple[str, ...]) -> dict[str, str]:
    """The running Python and the installed versions of `names` ("unknown" when not installed)."""
    found = {"python": platform.python_version()}
    for name in names:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = "unknown"
    return found


def manifest_path(model_path: Path) -> Path:
    """models/NAME.pkl (or NAME.onnx) -> models/NAME.json"""
    return model_path.with_suffix(".json")


def read_manifest(model_path: Path) -> Manifest:
    return Manifest.model_validate_json(manifest_path(model_path).read_text(encoding="utf-8"))


def write_manifest(model_path: Path, manifest: Manifest) -> Path:
    path = manifest_path(model_path)
    path.write_text(manifest.model_dump_json(indent=2) + "\n", encoding="utf-8")
    return path


def sha256_file(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()
