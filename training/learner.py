"""From a verified image table to a fastai Learner: the split, the transforms, the model."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastai.data.block import CategoryBlock, DataBlock
from fastai.data.transforms import ColReader, IndexSplitter, Normalize
from fastai.learner import Learner
from fastai.torch_core import set_seed
from fastai.vision.augment import Resize, aug_transforms
from fastai.vision.core import imagenet_stats
from fastai.vision.data import ImageBlock
from fasttransform import Transform

from training.architectures import ARCHS, build_learner
from training.datasets import ImageTable, load_table, split_indices
from training.errors import TrainingError

RESIZE_METHODS = ("squish", "crop", "pad")


@dataclass
class ModelOptions:
    """The options `train` and `lr-find` share: what data, which model, which preprocessing."""

    data: str
    arch: str = "cnn"
    pretrained: bool = False
    size: int | None = None  # None: 28 for cnn, 224 for the resnets
    bs: int = 64
    valid_pct: float = 0.2
    seed: int = 42
    resize_method: str = "squish"
    augment: bool = False

    @property
    def input_size(self) -> int:
        return self.size or (28 if self.arch == "cnn" else 224)


@dataclass
class Prepared:
    table: ImageTable
    learn: Learner
    train_idx: list[int]
    valid_idx: list[int]

    def valid_frame(self) -> Any:
        return self.table.frame.iloc[self.valid_idx].reset_index(drop=True)


def batch_transforms(augment: bool) -> list[Transform]:
    tfms: list[Transform] = []
    if augment:  # light augmentation; no flips, digits and text are not mirror-symmetric
        tfms += aug_transforms(do_flip=False, max_rotate=10.0, max_zoom=1.1, max_warp=0.1)
    return [*tfms, Normalize.from_stats(*imagenet_stats)]


def prepare(opts: ModelOptions, workdir: Path) -> Prepared:
    """Load and check the data, split it reproducibly, and build the learner (working files go to `workdir`)."""
    if opts.arch not in ARCHS:
        raise TrainingError(f"unknown --arch '{opts.arch}'; choose one of: {', '.join(ARCHS)}")
    if opts.resize_method not in RESIZE_METHODS:
        raise TrainingError(
            f"unknown --resize-method '{opts.resize_method}'; choose one of: {', '.join(RESIZE_METHODS)}"
        )
    set_seed(opts.seed, reproducible=True)
    table = load_table(opts.data)
    print(table.report())
    train_idx, valid_idx = split_indices(len(table.frame), opts.valid_pct, opts.seed)
    block = DataBlock(
        blocks=(ImageBlock, CategoryBlock),
        get_x=ColReader("path"),  # fastai built-ins only: the pickle must load without this package
        get_y=ColReader("label"),
        splitter=IndexSplitter(valid_idx),
        item_tfms=Resize(opts.input_size, method=opts.resize_method),
        batch_tfms=batch_transforms(opts.augment),
    )
    dls = block.dataloaders(table.frame, bs=opts.bs, num_workers=0, path=workdir)
    learn = build_learner(dls, opts.arch, opts.pretrained, workdir)
    return Prepared(table, learn, train_idx, valid_idx)
