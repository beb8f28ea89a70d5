"""`python -m app predict`: the service's core on files and folders, as a table, CSV or JSON, with exit codes a
script can rely on."""

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
    code, out, err = run(
        capsys, "predict", "--model", str(tiny_model), str(photos), "--format", "json", "--keep-going"
    )
    assert code == 1  # one file could not be classified
    assert "1 of 3 files could not be classified" in err
    rows = {Path(r["path"]).name: r for r in json.loads(out)}
    assert rows["a_red.png"]["label"] == "red"
    assert rows["b_blue.jpg"]["label"] == "blue"
    assert len(rows["a_red.png"]["top"]) == 3
    assert rows["a_red.png"]["top"][0]["label"] == "red"
    assert set(rows["notes.txt"]["error"]) == {"code", "detail"}  # the API's error shape
    assert rows["notes.txt"]["error"]["code"] == "unsupported_media_type"


def test_without_keep_going_the_first_failure_ends_the_run(
    capsys: pytest.CaptureFixture[str], tiny_model: Path, photos: Path
) -> None:
    (photos / "0_broken.png").write_bytes(b"\x89PNG broken")  # sorts first
    code, out, err = run(capsys, "predict", "--model", str(tiny_model), str(photos), "--format", "json")
    assert code == 1
    rows = json.loads(out)
    assert len(rows) == 1
    assert rows[0]["error"]["code"] in ("corrupt_image", "unsupported_media_type")
    assert "stopped at" in err
    assert "--keep-going" in err


def test_all_good_files_exit_0(capsys: pytest.CaptureFixture[str], tiny_model: Path, photos: Path) -> None:
    code, _, _ = run(
        capsys, "predict", "--model", str(tiny_model), str(photos / "a_red.png"), str(photos / "nested")
    )
    assert code == 0


def test_csv_output_has_top_k_and_error_columns(
    capsys: pytest.CaptureFixture[str], tiny_model: Path, photos: Path
) -> None:
    code, out, _ = run(
        capsys,
        "predict",
        "--model",
        str(tiny_model),
        str(photos),
        "--format",
        "csv",
        "--top-k",
        "2",
        "--keep-going",
    )
    assert code == 1
    rows = list(csv.DictReader(io.StringIO(out)))
    assert list(rows[0]) == ["path", "label", "probability", "label_2", "probability_2", "error", "detail"]
    by_name = {Path(r["path"]).name: r for r in rows}
    assert by_name["a_red.png"]["label"] == "red"
    assert 0 < float(by_name["a_red.png"]["probability"]) <= 1
    assert by_name["a_red.png"]["label_2"] in ("green", "blue")
    assert by_name["notes.txt"]["error"] == "unsupported_media_type"
    assert by_name["notes.txt"]["detail"]


def test_table_output_aligns_its_columns(
    capsys: pytest.CaptureFixture[str], tiny_model: Path, photos: Path
) -> None:
    code, out, _ = run(
        capsys, "predict", "--model", str(tiny_model), str(photos), "--batch-size", "1", "--keep-going"
    )
    assert code == 1
    lines = out.splitlines()
    assert lines[0].split() == ["path", "label", "prob", "top"]
    label_at = lines[0].index("label")
    for line in lines[1:]:
        assert line[label_at - 2 : label_at] == "  "  # every label starts in the same column
    assert any("a_red.png" in line and line[label_at:].startswith("red ") for line in lines)
    assert any("notes.txt" in line and "error: unsupported_media_type" in line for line in lines)


def test_usage_problems_exit_2_with_a_clear_line(
    capsys: pytest.CaptureFixture[str], tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    code, _, err = run(capsys, "predict", "--model", str(tiny_model), str(tmp_path / "nope.png"))
    assert code == 2
    assert "no such file" in err
    (tmp_path / "empty").mkdir()
    code, _, err = run(capsys, "predict", "--model", str(tiny_model), str(tmp_path / "empty"))
    assert code == 2
    assert "no files to classify" in err
    code, _, err = run(
        capsys, "predict", "--model", str(tmp_path / "missing.pkl"), str(tmp_path / "empty"), str(tiny_model)
    )
    assert code == 2
    assert err.startswith("error: model file")
    monkeypatch.chdir(tmp_path)  # no models/digits.pkl here, and no --model
    monkeypatch.delenv("LEARNSERVE_MODEL_PATH", raising=False)
    photo = tmp_path / "red.png"
    photo.write_bytes(encode(sample("red"), "PNG"))
    code, _, err = run(capsys, "predict", str(photo))
    assert code == 2
    assert "pass --model" in err


@pytest.mark.parametrize("value", ["0", "1001", "x"])
def test_top_k_is_validated_like_the_servers(capsys: pytest.CaptureFixture[str], value: str) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["predict", "--top-k", value, "some.png"])
    assert exit_info.value.code == 2
    assert "--top-k" in capsys.readouterr().err


def test_help_lists_the_commands_and_exit_codes() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "app", "--help"], capture_output=True, text=True, check=True
    ).stdout
    for command in ("serve", "predict", "score"):
        assert command in out
    sub = subprocess.run(
        [sys.executable, "-m", "app", "predict", "--help"], capture_output=True, text=True, check=True
    ).stdout
    assert "--format" in sub
    assert "--keep-going" in sub
    assert "Exit status" in sub
