"""Data sources: the bundled digits, a CSV of path,label rows, and folders with junk and corrupt files in them."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest
from conftest import run_cli
from PIL import Image

from training.manifest import read_manifest

pytestmark = [
    pytest.mark.slow,
    # torch 2.14 warns when fastai's layers module calls torch.jit.script at import; third-party, harmless here.
    pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning"),
]

FAST = ("--arch", "cnn", "--size", "16", "--bs", "16", "--untrained")


def files_under(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def test_data_digits_writes_1797_readable_28px_pngs(tmp_path: Path) -> None:
    dest = tmp_path / "digits"
    code, out, err = run_cli("data", "digits", str(dest))
    assert code == 0, err
    assert "wrote 1797 images in 10 classes" in out
    assert sorted(p.name for p in dest.iterdir()) == [str(d) for d in range(10)]
    files = sorted(p for p in dest.rglob("*") if p.is_file())
    pngs = sorted(dest.rglob("*.png"))
    assert files == pngs
    assert len(pngs) == 1797
    assert all(len(list((dest / str(d)).iterdir())) > 150 for d in range(10))  # about 180 per digit
    for p in pngs:
        with Image.open(p) as im:
            im.load()
            assert im.size == (28, 28)
            assert im.format == "PNG"
    with Image.open(pngs[0]) as im:
        assert im.getextrema()[1] > 128  # real strokes, not blank images


def test_csv_source_with_relative_paths_trains(
    dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "csvdata"
    rows = []
    for label in ("red", "blue"):
        (root / "images" / label).mkdir(parents=True)
        for src in sorted((dataset / label).iterdir())[:8]:
            shutil.copy(src, root / "images" / label / src.name)
            rows.append((f"images/{label}/{src.name}", label))  # relative to the CSV's folder
    labels_csv = root / "labels.csv"
    with labels_csv.open("w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([("path", "label"), *rows])
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # relative paths must not depend on the cwd

    out = tmp_path / "models" / "fromcsv.pkl"
    code, stdout, err = run_cli("train", str(labels_csv), "--out", str(out), *FAST)
    assert code == 0, err
    assert "16 images in 2 classes" in stdout
    assert "reload check" in stdout
    m = read_manifest(out)
    assert m.name == "fromcsv"
    assert m.classes == ["blue", "red"]
    assert m.dataset.counts == {"blue": 8, "red": 8}
    assert m.dataset.train_size + m.dataset.valid_size == 16
    assert m.dataset.source == labels_csv.name  # the name only: where the data lay is not published
    assert m.hyperparameters["epochs"] == 0


def test_junk_and_corrupt_files_are_skipped_and_nothing_in_data_is_deleted(
    dataset: Path, tmp_path: Path
) -> None:
    data = shutil.copytree(dataset, tmp_path / "colors")
    (data / "red" / "notes.txt").write_text("not an image")
    (data / "blue" / "Thumbs.db").write_bytes(b"\x00" * 64)
    (data / "green" / "broken.jpg").write_bytes(b"this is not a jpeg at all")
    good = (data / "red" / "red_00.png").read_bytes()
    (data / "red" / "truncated.png").write_bytes(good[: len(good) // 3])
    before = files_under(data)

    out = tmp_path / "models" / "junk.pkl"
    code, stdout, err = run_cli("train", str(data), "--out", str(out), *FAST, "--no-verify")
    assert code == 0, err
    assert "ignored 2 non-image files" in stdout
    assert "skipped 2 corrupt images" in stdout
    assert "broken.jpg" in stdout
    assert "truncated.png" in stdout
    assert "48 images in 3 classes" in stdout
    d = read_manifest(out).dataset
    assert (d.skipped_corrupt, d.ignored_non_image) == (2, 2)
    assert sum(d.counts.values()) == 48
    assert files_under(data) == before  # train never deletes or moves anything in DATA


def test_csv_rows_naming_absent_files_are_missing_not_corrupt(dataset: Path, tmp_path: Path) -> None:
    labels = tmp_path / "labels.csv"
    rows = [("path", "label")]
    rows += [(str(p), "red") for p in sorted((dataset / "red").iterdir())[:6]]
    rows += [(str(p), "blue") for p in sorted((dataset / "blue").iterdir())[:6]]
    rows += [("nowhere/ghost.png", "blue")]
    with labels.open("w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows(rows)
    out = tmp_path / "m.pkl"
    code, stdout, err = run_cli("train", str(labels), "--out", str(out), *FAST, "--no-verify")
    assert code == 0, err
    assert (
        f"skipped 1 missing files (in the CSV, not on disk): {tmp_path / 'nowhere' / 'ghost.png'}" in stdout
    )
    assert "corrupt" not in stdout
    d = read_manifest(out).dataset
    assert (d.skipped_missing, d.skipped_corrupt) == (1, 0)


def test_a_class_whose_files_are_all_missing_is_named_with_them(dataset: Path, tmp_path: Path) -> None:
    labels = tmp_path / "labels.csv"
    rows = [("path", "label"), *[(str(p), "red") for p in sorted((dataset / "red").iterdir())[:6]]]
    rows += [(str(p), "blue") for p in sorted((dataset / "blue").iterdir())[:6]]
    rows += [("ghost1.png", "green"), ("ghost2.png", "green")]
    with labels.open("w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows(rows)
    code, _, err = run_cli("train", str(labels), "--out", str(tmp_path / "m.pkl"), *FAST)
    assert code == 2
    assert err.startswith("error: class(es) with no readable images in ")
    assert f"green (skipped as missing: {tmp_path / 'ghost1.png'}, {tmp_path / 'ghost2.png'})" in err
