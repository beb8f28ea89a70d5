"""Options shared by the command lines and the settings: one bound for top-k everywhere, one set of model flags."""

from __future__ import annotations

import argparse
import csv
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from pydantic import ValidationError

from app.__main__ import build_parser, main
from app.config import Settings
from tests.conftest import copy_model
from tests.images import encode, sample
from training.cli import bounded


@pytest.mark.parametrize("value", [0, 1001])
def test_top_k_is_bounded_in_settings_as_in_the_api(value: int) -> None:
    with pytest.raises(ValidationError, match="top_k"):
        Settings(top_k=value)


def test_top_k_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEARNSERVE_TOP_K", "1000")
    assert Settings().top_k == 1000
    monkeypatch.setenv("LEARNSERVE_TOP_K", "5000")
    with pytest.raises(ValidationError, match="less than or equal to 1000"):
        Settings()


@pytest.fixture
def folder(tiny_model: Path, tmp_path: Path) -> Path:
    models = tmp_path / "models"
    copy_model(tiny_model, models)
    return models


@pytest.fixture
def photo(tmp_path: Path) -> Path:
    path = tmp_path / "in" / "one.png"
    path.parent.mkdir()
    path.write_bytes(encode(sample("red", seed=5), "PNG"))
    return path


def test_score_honours_learnserve_model_dir(
    folder: Path,
    photo: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("LEARNSERVE_MODEL_DIR", str(folder))
    out = tmp_path / "out.csv"
    assert main(["score", str(photo.parent), "--out", str(out), "--top-k", "9"]) == 0, capsys.readouterr().err
    assert (
        out.read_text().splitlines()[0]
        == "path,label,probability,label_2,probability_2,label_3,probability_3,error,detail"
    )
    copy_model(folder / "colors.pkl", folder, name="other")
    assert main(["score", str(photo.parent), "--out", str(out)]) == 2
    assert "2 models are in" in capsys.readouterr().err
    monkeypatch.setenv("LEARNSERVE_DEFAULT_MODEL", "colors")
    assert main(["score", str(photo.parent), "--out", str(out)]) == 0


@pytest.mark.parametrize("command", ["predict", "score"])
def test_model_flags_are_the_same_for_every_command(command: str) -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    flags = {"--model", "--model-dir", "--backend", "--device", "--batch-size"}
    assert flags <= set(sub[command]._option_string_actions)
    assert {"--model", "--model-dir", "--backend"} <= set(sub["serve"]._option_string_actions)
    with pytest.raises(SystemExit):
        parser.parse_args(
            [
                command,
                "--model",
                "a.pkl",
                "--model-dir",
                "m",
                "x",
                *(["--out", "o.csv"] * (command == "score")),
            ]
        )


def test_predict_takes_a_model_dir(folder: Path, photo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["predict", str(photo), "--model-dir", str(folder), "--format", "json"]) == 0
    assert '"label"' in capsys.readouterr().out


@pytest.mark.parametrize(
    ("parse", "text", "message"),
    [(bounded(1, 1000), "0", "must be between 1 and 1000, got 0"), (bounded(1, 1000), "x", "invalid int value: 'x'"),
     (bounded(23), "5", "must be at least 23, got 5"), (bounded(0), "-1", "must be at least 0, got -1")],
)  # fmt: skip
def test_one_integer_check_for_both_command_lines(
    parse: Callable[[str], int], text: str, message: str
) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match=f"^{re.escape(message)}$"):
        parse(text)
    assert parse("1000") == 1000


def test_a_file_over_the_upload_limit_gets_its_row(
    folder: Path,
    photo: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The limit of one upload holds for files on disk too (app/core/files.py: bounded_item), naming the file."""
    limit = len(photo.read_bytes()) - 1
    monkeypatch.setenv("LEARNSERVE_MAX_UPLOAD_BYTES", str(limit))
    out = tmp_path / "out.csv"
    assert main(["score", str(photo.parent), "--model-dir", str(folder), "--out", str(out)]) == 0
    with out.open(newline="") as f:
        [row] = list(csv.DictReader(f))
    assert row["error"] == "file_too_large"
    assert row["detail"] == f"{photo} is larger than the limit of {limit:,} bytes."
