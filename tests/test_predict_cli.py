"""`python -m app predict`: the service's predictor on files and folders, as a table, CSV or JSON."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from app.__main__ import main
from tests.images import encode, sample


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    folder = tmp_path / "photos"
    (folder / "nested").mkdir(parents=True)
    (folder / "a_red.png").write_bytes(encode(sample("red", seed=1), "PNG"))
    (folder / "nested" / "b_blue.jpg").write_bytes(encode(sample("blue", seed=2), "JPEG", quality=95))
    (folder / "notes.txt").write_text("not an image")
    return folder


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_json_output_for_a_folder(capsys: pytest.CaptureFixture[str], tiny_model: Path, photos: Path) -> None:
    code, out, _ = run(capsys, "predict", "--model", str(tiny_model), str(photos), "--format", "json")
    assert code == 0
    rows = {Path(r["path"]).name: r for r in json.loads(out)}
    assert rows["a_red.png"]["label"] == "red"
    assert rows["b_blue.jpg"]["label"] == "blue"
    assert rows["notes.txt"]["error"] == "unsupported_media_type"
    assert len(rows["a_red.png"]["top"]) == 3


def test_csv_output(capsys: pytest.CaptureFixture[str], tiny_model: Path, photos: Path) -> None:
    code, out, _ = run(
        capsys, "predict", "--model", str(tiny_model), str(photos / "a_red.png"), "--format", "csv"
    )
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    assert rows[0]["label"] == "red"
    assert 0 < float(rows[0]["probability"]) <= 1


def test_table_output_and_batching(
    capsys: pytest.CaptureFixture[str], tiny_model: Path, photos: Path
) -> None:
    code, out, _ = run(capsys, "predict", "--model", str(tiny_model), str(photos), "--batch-size", "1")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["path", "label", "prob"]
    assert any("a_red.png" in line and " red " in line for line in lines)
    assert any("notes.txt" in line and "error: unsupported_media_type" in line for line in lines)


def test_missing_path_and_bad_model(
    capsys: pytest.CaptureFixture[str], tiny_model: Path, tmp_path: Path
) -> None:
    code, _, err = run(capsys, "predict", "--model", str(tiny_model), str(tmp_path / "nope.png"))
    assert code == 2
    assert "no such file" in err
    code, _, err = run(capsys, "predict", "--model", str(tmp_path / "missing.pkl"), str(tmp_path))
    assert code == 2
    assert err.startswith("error: model file")


def test_help_lists_both_commands() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "app", "--help"], capture_output=True, text=True, check=True
    ).stdout
    assert "serve" in out
    assert "predict" in out
    sub = subprocess.run(
        [sys.executable, "-m", "app", "predict", "--help"], capture_output=True, text=True, check=True
    ).stdout
    assert "--format" in sub
