"""Which images validate: the split the data carries (train/ and valid/ folders, or a CSV `is_valid` column),
else a reproducible random one. `train` records the kind in the manifest; `interpret` rebuilds the same split.
"""

from __future__ import annotations

from dataclasses import dataclass

from training.datasets import ImageTable, shorten
from training.errors import TrainingError

DEFAULT_VALID_PCT = 0.2
DESCRIBED = {"folders": "its train/ and valid/ folders", "column": "its is_valid column"}


@dataclass
class Split:
    kind: str  # "random", "folders" or "column"
    train_idx: list[int]
    valid_idx: list[int]
    valid_pct: float | None = None  # the random split's share; None when the data chose


def split_indices(n: int, valid_pct: float, seed: int) -> tuple[list[int], list[int]]:
    """The same split as fastai's RandomSplitter(valid_pct, seed), reproducible from the manifest."""
    from fastai.data.transforms import RandomSplitter

    if not 0 < valid_pct < 1:
        raise TrainingError(f"--valid-pct must be between 0 and 1, got {valid_pct}")
    train, valid = RandomSplitter(valid_pct, seed=seed)(list(range(n)))
    if not valid or not train:
        raise TrainingError(f"{n} images are too few to split with --valid-pct {valid_pct}")
    return [int(i) for i in train], [int(i) for i in valid]


def make_split(table: ImageTable, valid_pct: float | None, seed: int) -> Split:
    """The data's own split when it has one (then --valid-pct would do nothing and is refused), else random."""
    if table.split_by is None:
        pct = DEFAULT_VALID_PCT if valid_pct is None else valid_pct
        train_idx, valid_idx = split_indices(len(table.frame), pct, seed)
        return Split("random", train_idx, valid_idx, pct)
    if valid_pct is not None:
        raise TrainingError(
            f"--valid-pct does nothing here: {table.source} is split by {DESCRIBED[table.split_by]}"
        )
    return given_split(table)


def given_split(table: ImageTable) -> Split:
    assert table.split_by is not None
    flags = table.frame["is_valid"].tolist()
    valid_idx = [i for i, v in enumerate(flags) if v]
    train_idx = [i for i, v in enumerate(flags) if not v]
    where = f"{table.source} ({DESCRIBED[table.split_by]})"
    if not valid_idx or not train_idx:
        missing = "validation" if not valid_idx else "training"
        raise TrainingError(f"{where} has no readable {missing} images")
    labels = table.frame["label"]
    only_valid = sorted(set(labels.iloc[valid_idx]) - set(labels.iloc[train_idx]))
    if only_valid:
        raise TrainingError(
            f"class(es) with validation images but no training images in {where}: {shorten(only_valid)}"
        )
    return Split(table.split_by, train_idx, valid_idx)


def describe(split: Split) -> str:
    how = f"random {split.valid_pct:g}" if split.kind == "random" else f"by {DESCRIBED[split.kind]}"
    return f"split {how}: {len(split.train_idx)} training, {len(split.valid_idx)} validation images"
