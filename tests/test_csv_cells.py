"""CSV outputs of `score` and `predict` are safe to open in a spreadsheet (OWASP CSV injection): a cell that starts
with = + - @, a tab or a carriage return is written with a leading ', and `score --resume` reads it back exactly."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from app.__main__ import main
from app.scoring.output import csv_cell, from_csv_cell
from tests.images import encode, sample

HOSTILE = "=2+5+cmd|' -C calc'!A0.png"


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / HOSTILE).write_bytes(encode(sample("red", seed=1), "PNG"))
    (folder / "@broken.png").write_bytes(b"\x89PNG not really")
    (folder / "plain.png").write_bytes(encode(sample("blue", seed=2), "PNG"))
    return folder


def cells(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def unsafe(rows: list[dict[str, str]]) -> list[str]:
    return [v for r in rows for v in r.values() if v and v[0] in "=+-@\t\r"]


def test_score_escapes_formula_cells_and_resumes_exactly(
    photos: Path, tiny_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "predictions.csv"
    assert main(["score", str(photos), "--model", str(tiny_model), "--out", str(out)]) == 0
    rows = cells(out)
    assert unsafe(rows) == []
    by_path = {r["path"]: r for r in rows}
    assert f"'{photos / HOSTILE}" not in by_path  # a full path starts with /: nothing to escape
    assert by_path[str(photos / HOSTILE)]["label"] in {"red", "green", "blue"}
    assert by_path[str(photos / "@broken.png")]["error"] == "unsupported_media_type"
    # relative paths (a list of paths, read from its own folder) start with the file's own name
    listing = photos / ".list.txt"  # hidden: not an input itself
    listing.write_text(f"{HOSTILE}\n@broken.png\nplain.png\n")
    relative = tmp_path / "relative.csv"
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(photos)
        assert main(["score", listing.name, "--model", str(tiny_model), "--out", str(relative)]) == 0
        rows = cells(relative)
        assert unsafe(rows) == []
        assert [r["path"] for r in rows] == [f"'{HOSTILE}", "'@broken.png", "plain.png"]
        (photos / "new.png").write_bytes(encode(sample("green", seed=3), "PNG"))
        listing.write_text(listing.read_text() + "new.png\n")
        resume = ["score", listing.name, "--model", str(tiny_model), "--out", str(relative), "--resume"]
        assert main(resume) == 0
        assert "scored 1, failed 0, skipped 3 already done" in capsys.readouterr().err
    resumed = cells(relative)
    assert [r["path"] for r in resumed] == [r["path"] for r in rows] + ["new.png"]  # escaped rows were found


def test_predict_csv_escapes_formula_cells(
    capsys: pytest.CaptureFixture[str], photos: Path, tiny_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(photos)
    code = main(
        ["predict", HOSTILE, "@broken.png", "--model", str(tiny_model), "--format", "csv", "--keep-going"]
    )
    assert code == 1  # the broken file
    rows = list(csv.DictReader(capsys.readouterr().out.splitlines()))
    assert [r["path"] for r in rows] == [f"'{HOSTILE}", "'@broken.png"]
    assert rows[1]["error"] == "unsupported_media_type"
    assert unsafe(rows) == []


@pytest.mark.parametrize(
    "text", ["=1+1", "+1", "-1", "@SUM(A1)", "\tx", "\rx", "'=1", "''@x", "'plain", "plain", "", "a=b"]
)
def test_cells_read_back_as_written(text: str) -> None:
    cell = csv_cell(text)
    assert from_csv_cell(cell) == text
    assert not cell.startswith(("=", "+", "-", "@", "\t", "\r"))
