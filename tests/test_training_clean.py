"""`clean`: keep/delete/relabel decisions applied to a copy of the dataset; nothing is ever destroyed."""

from __future__ import annotations

import csv
import hashlib
import shutil
from pathlib import Path

import pytest
from conftest import run_cli

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning")


def snapshot(root: Path) -> dict[str, str]:
    """Every file under root, by relative path, with a hash of its bytes."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def write_decisions(path: Path, rows: list[tuple[str, str]]) -> Path:
    """A top_losses.csv (as interpret writes it) with the added `action` column."""
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "actual", "predicted", "loss", "probability", "action"])
        for file, action in rows:
            writer.writerow([file, "?", "?", "1.0", "0.5", action])
    return path


@pytest.fixture
def data(dataset: Path, tmp_path: Path) -> Path:
    return shutil.copytree(dataset, tmp_path / "colors")


def test_clean_moves_deleted_and_relabelled_files_and_keeps_the_rest(data: Path, tmp_path: Path) -> None:
    before = snapshot(data)
    decisions = write_decisions(
        tmp_path / "decisions.csv",
        [
            (str(data / "red" / "red_00.png"), "delete"),
            (str(data / "red" / "red_01.png"), "green"),  # relabel
            (str(data / "red" / "red_02.png"), "keep"),
            ("blue/blue_03.png", "delete"),  # relative to DATA
            (str(data / "blue" / "blue_04.png"), ""),  # no decision: keep
            (str(data / "green" / "green_05.png"), "green"),  # relabel to its own class: nothing to do
        ],
    )
    code, out, err = run_cli("clean", str(data), "--decisions", str(decisions))
    assert code == 0, err
    after = snapshot(data)

    assert len(after) == len(before)  # nothing destroyed
    assert sorted(after.values()) == sorted(before.values())  # same bytes, some in new places
    assert after["_removed/red/red_00.png"] == before["red/red_00.png"]
    assert after["_removed/blue/blue_03.png"] == before["blue/blue_03.png"]
    assert after["green/red_01.png"] == before["red/red_01.png"]
    for gone in ("red/red_00.png", "red/red_01.png", "blue/blue_03.png"):
        assert gone not in after
    moved = {"red/red_00.png", "red/red_01.png", "blue/blue_03.png"}
    assert {k: v for k, v in before.items() if k not in moved} == {
        k: v for k, v in after.items() if not k.startswith("_removed/") and k != "green/red_01.png"
    }
    assert out.splitlines() == [
        "moved red/red_00.png -> _removed/red/red_00.png",
        "moved red/red_01.png -> green/red_01.png",
        "moved blue/blue_03.png -> _removed/blue/blue_03.png",
        "2 deleted (moved to _removed), 2 kept, 1 relabelled to green, 1 unchanged",
    ]


def test_clean_twice_changes_nothing_the_second_time(data: Path, tmp_path: Path) -> None:
    decisions = write_decisions(
        tmp_path / "decisions.csv",
        [(str(data / "red" / "red_00.png"), "delete"), (str(data / "blue" / "blue_01.png"), "red")],
    )
    code, _, err = run_cli("clean", str(data), "--decisions", str(decisions))
    assert code == 0, err
    once = snapshot(data)
    code, out, err = run_cli("clean", str(data), "--decisions", str(decisions))
    assert code == 0, err
    assert snapshot(data) == once
    assert "2 already done" in out


def test_cleaned_data_still_loads_without_the_removed_folder(data: Path, tmp_path: Path) -> None:
    from training.datasets import load_table

    decisions = write_decisions(tmp_path / "d.csv", [(str(data / "red" / "red_00.png"), "delete")])
    assert run_cli("clean", str(data), "--decisions", str(decisions))[0] == 0
    table = load_table(str(data))
    assert table.classes == ["blue", "green", "red"]  # _removed is not a class
    assert table.counts()["red"] == 15


@pytest.mark.parametrize(
    ("bad_row", "message"),
    [
        pytest.param(("OUTSIDE", "delete"), "outside", id="path-outside-data"),
        pytest.param(("../colors/../elsewhere.png", "delete"), "outside", id="dotdot-escape"),
        pytest.param(("red/red_05.png", "purple"), "unknown action 'purple'", id="unknown-action"),
    ],
)
def test_clean_refuses_bad_rows_before_moving_anything(
    data: Path, tmp_path: Path, bad_row: tuple[str, str], message: str
) -> None:
    outside = tmp_path / "elsewhere.png"
    shutil.copy(data / "red" / "red_09.png", outside)
    path, action = bad_row
    path = str(outside) if path == "OUTSIDE" else path
    before = snapshot(data)
    decisions = write_decisions(
        tmp_path / "decisions.csv",
        [
            (str(data / "red" / "red_00.png"), "delete"),
            (str(data / "red" / "red_01.png"), "green"),
            (path, action),
        ],
    )
    code, _, err = run_cli("clean", str(data), "--decisions", str(decisions))
    assert code == 2
    assert err.startswith("error:")
    assert message in err
    assert len(err.strip().splitlines()) == 1
    assert "Traceback" not in err
    assert snapshot(data) == before
    assert outside.is_file()


def test_clean_needs_an_action_column(data: Path, tmp_path: Path) -> None:
    decisions = tmp_path / "top_losses.csv"
    decisions.write_text(
        f"path,actual,predicted,loss,probability\n{data / 'red' / 'red_00.png'},red,red,1,1\n"
    )
    before = snapshot(data)
    code, _, err = run_cli("clean", str(data), "--decisions", str(decisions))
    assert code == 2
    assert err.startswith("error:")
    assert "action" in err
    assert snapshot(data) == before


def test_clean_with_a_missing_decisions_file(data: Path, tmp_path: Path) -> None:
    code, _, err = run_cli("clean", str(data), "--decisions", str(tmp_path / "nope.csv"))
    assert code == 2
    assert err.startswith("error:")


def test_clean_refuses_a_name_clash_before_moving_anything(data: Path, tmp_path: Path) -> None:
    shutil.copy(data / "blue" / "blue_00.png", data / "green" / "red_01.png")  # same name waiting in green/
    before = snapshot(data)
    decisions = write_decisions(
        tmp_path / "decisions.csv",
        [(str(data / "red" / "red_00.png"), "delete"), (str(data / "red" / "red_01.png"), "green")],
    )
    code, _, err = run_cli("clean", str(data), "--decisions", str(decisions))
    assert code == 2
    assert err.startswith("error:")
    assert "already there" in err
    assert snapshot(data) == before


def test_actions_are_read_case_insensitively(data: Path, tmp_path: Path) -> None:
    decisions = write_decisions(
        tmp_path / "decisions.csv",
        [("red/red_00.png", "Delete"), ("red/red_01.png", "GREEN"), ("red/red_02.png", "Keep")],
    )
    code, out, err = run_cli("clean", str(data), "--decisions", str(decisions))
    assert code == 0, err
    assert (data / "_removed" / "red" / "red_00.png").is_file()
    assert (data / "green" / "red_01.png").is_file()
    assert (data / "red" / "red_02.png").is_file()
    assert "1 relabelled to green" in out


def test_two_rows_for_one_file_are_refused_before_moving_anything(data: Path, tmp_path: Path) -> None:
    before = snapshot(data)
    decisions = write_decisions(
        tmp_path / "decisions.csv",
        [
            ("red/red_00.png", "delete"),
            ("blue/blue_01.png", "keep"),
            (str(data / "red" / "red_00.png"), "green"),
        ],
    )
    code, _, err = run_cli("clean", str(data), "--decisions", str(decisions))
    assert code == 2
    assert err == f"error: lines 2 and 4 of {decisions} both decide about red/red_00.png: keep one\n"
    assert snapshot(data) == before


def test_missing_paths_are_named(data: Path, tmp_path: Path) -> None:
    decisions = write_decisions(
        tmp_path / "decisions.csv",
        [("red/gone.png", "delete"), ("red/red_00.png", "delete"), ("blue/x.png", "keep")],
    )
    code, out, err = run_cli("clean", str(data), "--decisions", str(decisions))
    assert code == 0, err
    lines = out.splitlines()
    assert "missing: red/gone.png (line 2): not in the data folder" in lines
    assert "missing: blue/x.png (line 4): not in the data folder" in lines
    assert "moved red/red_00.png -> _removed/red/red_00.png" in lines
    assert lines[-1] == "1 deleted (moved to _removed), 2 missing"
