"""The "no better than chance" warning: its threshold (two standard errors above always answering the commonest
class) and a message that gives the accuracy, the baseline and the threshold, so 0.5 beside 0.33 reads right."""

from __future__ import annotations

from typing import Any

import pandas as pd
import pytest

from training.datasets import ImageTable
from training.learner import Data
from training.splits import Split
from training.train import warn_if_chance


def validation_of(counts: dict[str, int]) -> Data:
    labels = [label for label, n in counts.items() for _ in range(n)]
    frame = pd.DataFrame({"path": [f"/data/{i}.png" for i in range(len(labels))], "label": labels})
    dls: Any = None  # the warning reads only the validation labels
    return Data(ImageTable("shapes", frame), Split("stratified", [], list(range(len(labels)))), dls)


def test_above_the_baseline_but_within_two_standard_errors_says_what_the_bar_is(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The issue's case: 3 balanced classes, 12 validation images, accuracy 0.5 (6 right) against 0.3333."""
    warn_if_chance(validation_of({"circle": 4, "square": 4, "triangle": 4}), 0.5)
    err = capsys.readouterr().err
    assert err == (
        "warning: validation accuracy 0.5000 is not clearly better than guessing at chance level: always answering "
        "'circle' (the commonest class) scores 0.3333 on these 12 images, and only an accuracy above 0.6055 (two "
        "standard errors more) is clearly better. The model has not learned anything measurable; try more epochs, "
        "another --lr (lr-find), or check the labels\n"
    )  # 0.6055 = 1/3 + 2 * sqrt(1/3 * 2/3 / 12)


@pytest.mark.parametrize(
    ("counts", "accuracy", "warned"),
    [
        ({"circle": 4, "square": 4, "triangle": 4}, 7 / 12, True),  # 7 of 12 right: below 0.6055
        ({"circle": 4, "square": 4, "triangle": 4}, 0.6667, False),  # 8 of 12 right
        ({"cat": 90, "dog": 10}, 0.9, True),  # always "cat" scores 0.9: a 0.9 model may have learned nothing
        ({"cat": 90, "dog": 10}, 0.97, False),  # threshold 0.9 + 2 * 0.03 = 0.96
    ],
)
def test_the_threshold(
    counts: dict[str, int], accuracy: float, warned: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    warn_if_chance(validation_of(counts), accuracy)
    assert ("not clearly better than" in capsys.readouterr().err) is warned
