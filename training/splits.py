"""Which images validate: the split the data carries (train/ and valid/ folders, or a CSV `is_valid` column),
else a reproducible random one, stratified by class unless asked otherwise. Multi-label data is split at random:
an image with several labels belongs to no one class to stratify by. `train` records the kind in the manifest;
`interpret` rebuilds the same split from it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from training.datasets import ImageTable, shorten
from training.errors import TrainingError

DEFAULT_VALID_PCT = 0.2
DESCRIBED = {"folders": "its train/ and valid/ folders", "column": "its is_valid column"}
RANDOM_KINDS = ("stratified", "random")


@dataclass
class Split:
    kind: str  # "stratified", "random", "folders" or "column"
    train_idx: list[int]
    valid_idx: list[int]
    valid_pct: float | None = None  # the random split's share; None when the data chose


def split_indices(n: int, valid_pct: float, seed: int) -> tuple[list[int], list[int]]:
    """The same split as fastai's RandomSplitter(valid_pct, seed), reproducible from the manifest."""
    from fastai.data.transforms import RandomSplitter

    train, valid = RandomSplitter(valid_pct, seed=seed)(list(range(n)))
    if not valid or not train:
        raise TrainingError(f"{n} images are too few to split with --valid-pct {valid_pct}")
    return [int(i) for i in train], [int(i) for i in valid]


def stratified_indices(labels: Sequence[str], valid_pct: float, seed: int) -> tuple[list[int], list[int]]:
    """valid_pct of every class (rounded; at least one image, and one left to train on, when a class has two),
    drawn with numpy's legacy RandomState, whose stream numpy keeps stable across versions: reproducible."""
    import numpy as np

    rng = np.random.RandomState(seed)
    by_class: dict[str, list[int]] = {}
    for i, label in enumerate(labels):
        by_class.setdefault(label, []).append(i)
    valid: list[int] = []
    for label in sorted(by_class):
        members = by_class[label]
        k = min(max(round(len(members) * valid_pct), 1), len(members) - 1)
        valid += [int(i) for i in rng.permutation(members)[:k]]
    chosen = set(valid)
    train = [i for i in range(len(labels)) if i not in chosen]
    if not valid or not train:
        raise TrainingError(f"{len(labels)} images are too few to split with --valid-pct {valid_pct}")
    return train, sorted(valid)


def make_split(table: ImageTable, valid_pct: float | None, seed: int, stratify: bool | None = None) -> Split:
    """The data's own split when it has one (then --valid-pct and --[no-]stratify would do nothing and are
    refused), else a random share, stratified by class unless `stratify` is False."""
    if table.split_by is None:
        pct = DEFAULT_VALID_PCT if valid_pct is None else valid_pct
        if not table.has_classes and stratify:
            many = "multi-label images have several labels each (or none)"
            why = many if table.multi_label else f"{table.target_kind} targets are numbers"
            raise TrainingError(
                f"--stratify holds out the same share of every class, and {why}: there is no class to stratify "
                "by; drop --stratify (the split is random)"
            )
        kind = "random" if stratify is False or not table.has_classes else "stratified"
        return Split(kind, *random_split(kind, table, pct, seed), valid_pct=pct)
    given = [
        name
        for name, value in (("--valid-pct", valid_pct), ("--[no-]stratify", stratify))
        if value is not None
    ]
    if given:
        verb = "does" if len(given) == 1 else "do"
        raise TrainingError(
            f"{' and '.join(given)} {verb} nothing here: {table.source} is split by {DESCRIBED[table.split_by]}"
        )
    return given_split(table)


def random_split(kind: str, table: ImageTable, valid_pct: float, seed: int) -> tuple[list[int], list[int]]:
    if kind == "stratified":
        return stratified_indices(table.frame["label"].tolist(), valid_pct, seed)
    return split_indices(len(table.frame), valid_pct, seed)


def given_split(table: ImageTable) -> Split:
    assert table.split_by is not None
    flags = table.frame["is_valid"].tolist()
    valid_idx = [i for i, v in enumerate(flags) if v]
    train_idx = [i for i, v in enumerate(flags) if not v]
    where = f"{table.source} ({DESCRIBED[table.split_by]})"
    if not valid_idx or not train_idx:
        missing = "validation" if not valid_idx else "training"
        raise TrainingError(f"{where} has no readable {missing} images")
    only_valid = sorted(label_set(table, valid_idx) - label_set(table, train_idx))
    if only_valid:
        raise TrainingError(
            f"class(es) with validation images but no training images in {where}: {shorten(only_valid)}"
        )
    return Split(table.split_by, train_idx, valid_idx)


def label_set(table: ImageTable, idx: list[int]) -> set[str]:
    """The classes (multi-label: the labels) of the images at `idx`."""
    labels = table.frame["label"].iloc[idx]
    return {x for text in labels for x in text.split()} if table.multi_label else set(labels)


def unvalidated_classes(table: ImageTable, split: Split) -> list[str]:
    """Classes with training images but none in validation: their accuracy is never measured."""
    return sorted(label_set(table, split.train_idx) - label_set(table, split.valid_idx))


def describe(split: Split) -> str:
    how = f"{split.kind} {split.valid_pct:g}" if split.kind in RANDOM_KINDS else f"by {DESCRIBED[split.kind]}"
    return f"split {how}: {len(split.train_idx)} training, {len(split.valid_idx)} validation images"
