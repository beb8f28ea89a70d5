"""The README's promises: the two commands first, and every setting documented."""

from __future__ import annotations

import re
from pathlib import Path

from app.config import Settings

README = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")


def test_readme_opens_with_the_two_commands() -> None:
    first_block = README.split("```")[1]
    assert "make serve" in first_block
    assert "make test" in first_block


def test_every_setting_is_documented() -> None:
    missing = [name for name in Settings.model_fields if f"LEARNSERVE_{name.upper()}" not in README]
    assert not missing, f"README lacks settings: {missing}"


def flat(text: str) -> str:
    return " ".join(text.split())


def test_the_lr_finder_cost_option_and_plot_are_explained() -> None:
    from training.cli import DEFAULT_NUM_IT, MIN_NUM_IT

    text = flat(README)
    assert f"(fastai's `num_it`: default {DEFAULT_NUM_IT}, at least {MIN_NUM_IT})" in text
    assert "its time grows in proportion to `--num-it`" in text
    assert "| `--num-it N` | with `--lr find`: the lr finder's iterations (100;" in README
    measured = (
        r"\*\*\d+ and \d+ s\*\* in the finder at the default 100 and \*\*\d+ and \d+ s\*\* at `--num-it \d+`"
    )
    assert "`python -m training lr-find data/digits --num-it N`" in text
    assert re.search(measured, text)
    assert "a black × marks the lowest loss, whose rate is ten times the *minimum* suggestion" in text


def test_the_chance_warning_says_what_its_bar_is() -> None:
    text = flat(README)
    assert "A model not clearly better than always answering the commonest class gets a `warning:`" in text
    assert "two standard errors above the baseline" in text
    assert "baseline 0.3333, bar 0.6055" in text  # the same numbers as tests/test_training_chance.py


def test_the_manifest_split_fields_are_explained() -> None:
    assert "`stratify` is `true` exactly when `dataset.split` is `stratified`" in flat(README)


def test_a_model_dir_example_says_which_model_predict_uses() -> None:
    """Issue 26: with several models and no default, /predict answers 400; the example must not lead there."""
    blocks = README.split("```")[1::2]
    serving = [line for block in blocks for line in block.splitlines() if "LEARNSERVE_MODEL_DIR=" in line]
    assert serving
    for line in serving:
        block = next(b for b in blocks if line in b)
        assert "LEARNSERVE_DEFAULT_MODEL=" in line or "/models/" in block, line


def test_the_app_is_served_as_a_factory() -> None:
    assert "app.main:app" not in README
    assert "uvicorn --factory app.main:create_app" in README


def test_bring_your_own_model_is_in_the_tour() -> None:
    tour = README.split("## A short tour")[1].split("\n## ")[0]
    section = flat(tour.split("### 1b. Or bring your own model")[1].split("### 2.")[0])
    assert "python -m training import export.pkl --name pets" in section
    assert "--code FILE.py" in section
    assert "A pickle is code, and so is `--code`." in section
    assert '"not validated"' in section
    assert "Not supported." in section


def test_the_training_commands_of_each_kind_parse() -> None:
    """Every `python -m training` line of the README's learner kinds (multi-label, regression, key points) is a
    command the CLI accepts as written."""
    import shlex

    from training.cli import parse_args

    section = README.split("**Multi-label** (fastai's chapter 6")[1].split("`lr-find`'s plot")[0]
    commands = [shlex.split(found) for found in re.findall(r"python -m training ([^`#\n]+)", section)]
    assert {c[1] for c in commands if c[0] == "train"} >= {"marks", "discs", "spots"}
    for argv in commands:
        parse_args(argv)  # exits (status 2) on a command it refuses
