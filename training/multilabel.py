"""Multi-label learning: the loss and metrics of fastai's chapter 6 (PASCAL), the scores at a threshold, and the
trivial baselines a model must beat.

A multi-label learner answers every label yes or no on its own: sigmoid probabilities, a label given when its
probability is over the threshold (`BCEWithLogitsLossFlat(thresh=...)`, which `learn.predict` decodes with). Its
accuracy is fastai's accuracy_multi: the share of (image, label) decisions that are right. Only fastai and sklearn
objects go into the learner, so the exported pickle loads without this package.
"""

from __future__ import annotations

import functools
from collections import Counter
from dataclasses import dataclass
from typing import Any

import torch

DEFAULT_THRESHOLD = 0.5


def loss_and_metrics(threshold: float) -> tuple[Any, list[Any]]:
    """BCEWithLogitsLossFlat at `threshold`, and the metrics named `accuracy` (accuracy_multi) and `f1` (macro),
    so that `--monitor accuracy` and the manifest read the same for both kinds."""
    import sklearn.metrics as skm
    from fastai.losses import BCEWithLogitsLossFlat
    from fastai.metrics import AccumMetric, ActivationType, accuracy_multi, skm_to_fastai

    accuracy = AccumMetric(
        functools.partial(accuracy_multi, thresh=threshold), flatten=False, name="accuracy"
    )
    f1 = skm_to_fastai(
        skm.f1_score, thresh=threshold, activation=ActivationType.Sigmoid, flatten=False,
        average="macro", zero_division=0, name="f1",
    )  # fmt: skip
    return BCEWithLogitsLossFlat(thresh=threshold), [accuracy, f1]


def one_hot(label_texts: list[str], vocab: list[str]) -> torch.Tensor:
    """Space-separated labels per image -> a float [images, labels] matrix of 0/1 in `vocab` order."""
    targets = torch.zeros(len(label_texts), len(vocab))
    index = {label: i for i, label in enumerate(vocab)}
    for row, text in enumerate(label_texts):
        for label in text.split():
            if label in index:
                targets[row, index[label]] = 1.0
    return targets


@dataclass
class Scores:
    """Decisions at one threshold against the targets: overall and per label (in vocab order)."""

    accuracy: float  # accuracy_multi: right (image, label) decisions / all decisions
    f1: float  # macro F1: the mean of the per-label F1 (a label never given nor true scores 0, as sklearn's)
    precision: list[float]
    recall: list[float]
    per_label_f1: list[float]
    support: list[int]  # validation images with the label


def scores(probs: torch.Tensor, targets: torch.Tensor, threshold: float) -> Scores:
    """Decide `prob > threshold`, as learn.predict does, and score the decisions."""
    decided = (probs > threshold).float()
    targets = targets.float()
    tp = (decided * targets).sum(0)
    fp = (decided * (1 - targets)).sum(0)
    fn = ((1 - decided) * targets).sum(0)
    f1 = 2 * tp / (2 * tp + fp + fn).clamp_min(1)
    return Scores(
        accuracy=float((decided == targets).float().mean()),
        f1=float(f1.mean()),
        precision=(tp / (tp + fp).clamp_min(1)).tolist(),
        recall=(tp / (tp + fn).clamp_min(1)).tolist(),
        per_label_f1=f1.tolist(),
        support=[int(v) for v in targets.sum(0).tolist()],
    )


@dataclass
class Baseline:
    """What answering without looking scores on the validation images."""

    commonest: str  # the commonest set of labels (space-separated; "" for none)
    commonest_accuracy: float  # accuracy_multi of always answering it
    commonest_f1: float  # its macro F1
    majority_accuracy: float  # accuracy_multi of answering each label by its majority (the best blind answer)
    decisions: int  # images x labels


def baseline(label_texts: list[str], vocab: list[str]) -> Baseline:
    targets = one_hot(label_texts, vocab)
    commonest = Counter(label_texts).most_common(1)[0][0]
    constant = one_hot([commonest], vocab).expand_as(targets)
    at_commonest = scores(constant, targets, 0.5)
    share = targets.mean(0)
    return Baseline(
        commonest=commonest,
        commonest_accuracy=at_commonest.accuracy,
        commonest_f1=at_commonest.f1,
        majority_accuracy=float(torch.maximum(share, 1 - share).mean()),
        decisions=targets.numel(),
    )


def chance_warning(label_texts: list[str], vocab: list[str], accuracy: float) -> str | None:
    """A warning when accuracy_multi is within two standard errors of answering each label by its majority (the
    best any blind answer can do label by label), else None. Both numbers and the bar are given."""
    b = baseline(label_texts, vocab)
    p = b.majority_accuracy
    bar = p + 2 * (p * (1 - p) / b.decisions) ** 0.5
    if accuracy > bar:
        return None
    return (
        f"validation accuracy_multi {accuracy:.4f} is not clearly better than answering without looking: giving "
        f"each label its majority answer scores {p:.4f} on these {b.decisions} (image, label) decisions, and only "
        f"above {bar:.4f} (two standard errors more) is clearly better (always answering the commonest set, "
        f"'{b.commonest or '(none)'}', scores {b.commonest_accuracy:.4f}, macro F1 {b.commonest_f1:.4f}). The "
        "model has not learned anything measurable; try more epochs, another --lr (lr-find), or check the labels"
    )
