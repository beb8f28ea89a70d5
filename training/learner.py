"""From a verified image table to fastai DataLoaders and a Learner: the split, the transforms, the model."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastai.data.block import CategoryBlock, DataBlock, MultiCategoryBlock
from fastai.data.core import DataLoaders
from fastai.data.transforms import ColReader, IndexSplitter, Normalize
from fastai.learner import Learner
from fastai.torch_core import set_seed
from fastai.vision.augment import Resize, aug_transforms
from fastai.vision.core import imagenet_stats
from fastai.vision.data import ImageBlock
from fasttransform import Transform

from training import distributed
from training.architectures import build_learner
from training.cli import ARCHS, RESIZE_METHODS
from training.datasets import ImageTable, load_table, shorten
from training.errors import TrainingError, warn
from training.multilabel import DEFAULT_THRESHOLD, loss_and_metrics
from training.splits import Split, describe, make_split, unvalidated_classes


@dataclass
class ModelOptions:
    """The options `train`, `lr-find` and `show` share: what data, which model, which preprocessing."""

    data: str
    arch: str = "cnn"
    pretrained: bool = False
    size: int | None = None  # None: 28 for cnn, 224 for the resnets
    bs: int = 64
    valid_pct: float | None = None  # None: the data's own split, else 0.2 at random
    stratify: bool | None = (
        None  # None: stratified when the split is random (refused with the data's own split)
    )
    seed: int = 42
    resize_method: str = "squish"
    augment: bool = False
    multi_label: bool = False  # --multi-label: a CSV `label` column holds space-separated labels
    threshold: float | None = None  # multi-label: a label is given over it (None: 0.5)
    targets: str | None = None  # a numeric CSV: its target columns, comma-separated (None: all but path)

    @property
    def input_size(self) -> int:
        return self.size or (28 if self.arch == "cnn" else 224)

    @property
    def decision_threshold(self) -> float:
        return DEFAULT_THRESHOLD if self.threshold is None else self.threshold


@dataclass
class Data:
    table: ImageTable
    split: Split
    dls: DataLoaders

    def valid_frame(self) -> Any:
        return self.table.frame.iloc[self.split.valid_idx].reset_index(drop=True)


@dataclass
class Prepared(Data):
    learn: Learner


def batch_transforms(augment: bool) -> list[Transform]:
    tfms: list[Transform] = []
    if augment:  # light augmentation; no flips, digits and text are not mirror-symmetric
        tfms += aug_transforms(do_flip=False, max_rotate=10.0, max_zoom=1.1, max_warp=0.1)
    return [*tfms, Normalize.from_stats(*imagenet_stats)]


def load_data(opts: ModelOptions, workdir: Path, bs: int | None = None) -> Data:
    """Load and check the data, split it, and build the DataLoaders (`bs`: per process, default `opts.bs`)."""
    if opts.arch not in ARCHS:
        raise TrainingError(f"unknown --arch '{opts.arch}'; choose one of: {', '.join(ARCHS)}")
    if opts.resize_method not in RESIZE_METHODS:
        raise TrainingError(
            f"unknown --resize-method '{opts.resize_method}'; choose one of: {', '.join(RESIZE_METHODS)}"
        )
    set_seed(opts.seed, reproducible=True)
    with distributed.rank0_first():  # rank 0 writes the bundled data if it is missing, the others wait
        table = load_table(opts.data, opts.multi_label, opts.targets)
    if opts.threshold is not None and not table.multi_label:
        raise TrainingError(
            f"--threshold decides which labels a multi-label model gives, and {table.source} is single-label "
            "(a CSV with a 'labels' column, or --multi-label, is multi-label): drop --threshold"
        )
    print(table.report())
    split = make_split(table, opts.valid_pct, opts.seed, opts.stratify)
    note = " (multi-label: random, not stratified)" if table.multi_label and split.valid_pct else ""
    print(describe(split) + note)
    missing = unvalidated_classes(table, split)
    if missing:
        warn(f"no validation images for class(es) {shorten(missing)}: their accuracy is not measured")
    if table.target_kind:  # regression or key points: training/regression.py
        from training.regression import target_block

        tfms = batch_transforms(opts.augment)
        block = target_block(table, split.valid_idx, opts.input_size, opts.resize_method, tfms)
        dls = block.dataloaders(table.frame, bs=bs or opts.bs, num_workers=0, path=workdir)
        return Data(table, split, dls)
    block = DataBlock(
        blocks=(ImageBlock, MultiCategoryBlock if table.multi_label else CategoryBlock),
        get_x=ColReader("path"),  # fastai built-ins only: the pickle must load without this package
        get_y=ColReader("label", label_delim=" " if table.multi_label else None),
        splitter=IndexSplitter(split.valid_idx),
        item_tfms=Resize(opts.input_size, method=opts.resize_method),
        batch_tfms=batch_transforms(opts.augment),
    )
    dls = block.dataloaders(table.frame, bs=bs or opts.bs, num_workers=0, path=workdir)
    return Data(table, split, dls)


def check_batch_size(data: Data, bs: int | None = None) -> None:
    """fastai drops the last incomplete training batch: with fewer training images than a batch, nothing trains.
    (`bs`: the whole batch of a step, over all processes; default: this process's.)"""
    n, bs = len(data.split.train_idx), bs or data.dls.train.bs
    if n < bs:
        raise TrainingError(
            f"{n} training images do not fill one batch of {bs}: nothing would train; lower --bs"
        )


def prepare(opts: ModelOptions, workdir: Path, bs: int | None = None) -> Prepared:
    """The data and the learner around it (working files go to `workdir`)."""
    data = load_data(opts, workdir, bs)
    loss, metrics = loss_and_metrics(opts.decision_threshold) if data.table.multi_label else (None, None)
    n_out = None
    if data.table.target_kind:
        from training import regression

        loss, metrics = regression.loss_and_metrics(data.table.target_kind, opts.input_size)
        n_out = len(data.table.target_columns)
    learn = build_learner(data.dls, opts.arch, opts.pretrained, workdir, loss, metrics, n_out)
    if data.table.target_kind:
        regression.append_range(learn, regression.output_range(data.table, data.split.train_idx))
    return Prepared(data.table, data.split, data.dls, learn)
