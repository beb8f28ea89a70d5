"""The architectures `--arch` can name, and the learner built around them.

`cnn` is a small from-scratch convnet in the spirit of Keras' `mnist_convnet`, with BatchNorm (which matters more than
epochs on the digits set, see shared notes); the resnets come from torchvision through fastai's `vision_learner`.
Every model class here is a plain torch module, so the exported pickle needs nothing from this package to load.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from fastai.learner import Learner
from fastai.metrics import accuracy, error_rate
from fastai.vision.learner import vision_learner
from torch import nn
from torchvision import models

from training import distributed
from training.cli import ARCHS
from training.errors import TrainingError

RESNETS = {"resnet18": models.resnet18, "resnet34": models.resnet34, "resnet50": models.resnet50}
assert ("cnn", *RESNETS) == ARCHS, "training.cli offers the architectures built here"


def conv_block(c_in: int, c_out: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]


def small_cnn(
    n_classes: int, channels: tuple[int, int, int] = (32, 64, 128), dropout: float = 0.3
) -> nn.Module:
    c1, c2, c3 = channels
    return nn.Sequential(
        *conv_block(3, c1),
        nn.MaxPool2d(2),
        *conv_block(c1, c2),
        nn.MaxPool2d(2),
        *conv_block(c2, c3),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Dropout(dropout),
        nn.Linear(c3, n_classes),
    )


def ensure_pretrained_weights(arch: str) -> None:
    """Make sure torchvision's ImageNet weights for `arch` are in the torch hub cache, or explain how to put them there."""
    weights = models.get_model_weights(arch).DEFAULT
    filename = weights.url.rsplit("/", 1)[-1]
    checkpoints = Path(torch.hub.get_dir()) / "checkpoints"
    if (checkpoints / filename).is_file():
        return
    try:
        torch.hub.load_state_dict_from_url(weights.url, progress=True)
    except Exception as e:  # any download failure (no network, proxy, disk) gets the same advice
        raise TrainingError(
            f"pretrained weights for {arch} are not cached and could not be downloaded ({type(e).__name__}). "
            f"Place {filename} (from {weights.url}) in {checkpoints}/ (or set TORCH_HOME), "
            f"or train offline from scratch with --no-pretrained"
        ) from e


def build_learner(
    dls: Any,
    arch: str,
    pretrained: bool,
    path: Path,
    loss_func: Any = None,
    metrics: list[Any] | None = None,
    n_out: int | None = None,
) -> Learner:
    """The learner; `loss_func` and `metrics` default to a single-label classifier's (fastai's loss for the data,
    accuracy and error_rate); `n_out`: the model's outputs (default: the data's `c`, which key points lack)."""
    if arch not in ARCHS:
        raise TrainingError(f"unknown --arch '{arch}'; choose one of: {', '.join(ARCHS)}")
    metrics = [accuracy, error_rate] if metrics is None else metrics
    if arch == "cnn":
        if pretrained:
            raise TrainingError("--arch cnn has no pretrained weights; use --no-pretrained or a resnet")
        return Learner(dls, small_cnn(n_out or dls.c), loss_func=loss_func, metrics=metrics, path=path)
    if pretrained:
        with distributed.rank0_first():  # one download into a shared TORCH_HOME, not one per process
            ensure_pretrained_weights(arch)
    return vision_learner(
        dls,
        RESNETS[arch],
        pretrained=pretrained,
        loss_func=loss_func,
        metrics=metrics,
        path=path,
        n_out=n_out,
    )
