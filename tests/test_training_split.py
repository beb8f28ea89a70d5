"""DATA's own split (train/ and valid/ folders, or a CSV is_valid column), recorded in the manifest and rebuilt by
`interpret` and honoured by `clean`; otherwise a random split, stratified by class unless --no-stratify."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest
from conftest import COLORS, run_cli

from training.interpret import validation_frame
from training.manifest import read_manifest

pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning"),
]

FAST = ("--arch", "cnn", "--size", "16", "--bs", "16", "--epochs", "1", "--lr", "1e-2")
N_VALID = 4  # per class, in valid/


def split_into_folders(src: Path, dest: Path) -> Path:
    """DATA/train/<class>/ and DATA/valid/<class>/ from a class-folder dataset: the first N_VALID go to valid/."""
    for class_dir in sorted(src.iterdir()):
        for i, f in enumerate(sorted(class_dir.iterdir())):
            half = "valid" if i < N_VALID else "train"
            (dest / half / class_dir.name).mkdir(parents=True, exist_ok=True)
            shutil.copy(f, dest / half / class_dir.name / f.name)
    return dest


def files_in(folder: Path) -> set[str]:
    return {str(p.resolve()) for p in folder.rglob("*.png")}


def assert_clean_error(code: int, err: str, *fragments: str) -> None:
    assert code == 2, err
    assert err.startswith("error: ")
    assert len(err.strip().splitlines()) == 1, err
    for fragment in fragments:
        assert fragment in err


@pytest.fixture(scope="module")
def folders(dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    data = split_into_folders(dataset, tmp_path_factory.mktemp("split") / "colors")
    (data / "test" / "red").mkdir(parents=True)  # a test/ half is not read
    shutil.copy(next((dataset / "red").iterdir()), data / "test" / "red" / "held-out.png")
    out = tmp_path_factory.mktemp("models") / "split.pkl"
    code, stdout, err = run_cli(
        "train", str(data), "--out", str(out), *FAST, "--reports", str(out.parent / "reports")
    )
    assert code == 0, err
    return data, out, stdout


def test_train_and_valid_folders_split_the_data(folders: tuple[Path, Path, str]) -> None:
    _, out, stdout = folders
    n_valid, n_train = N_VALID * len(COLORS), (16 - N_VALID) * len(COLORS)
    assert (
        f"split by its train/ and valid/ folders: {n_train} training, {n_valid} validation images" in stdout
    )
    assert "ignored folders beside train/ and valid/: test" in stdout
    assert (
        "reload check" in stdout
    )  # the fresh process scored exactly the valid/ images (same count, same accuracy)
    d = read_manifest(out).dataset
    assert (d.split, d.train_size, d.valid_size) == ("folders", n_train, n_valid)
    assert d.counts == dict.fromkeys(sorted(COLORS), 16)
    assert read_manifest(out).hyperparameters["valid_pct"] is None
    assert read_manifest(out).hyperparameters["stratify"] is False  # the data's own split: nothing stratified


def test_interpret_rebuilds_the_folder_split(folders: tuple[Path, Path, str], tmp_path: Path) -> None:
    data, out, _ = folders
    frame = validation_frame(out, str(data))
    assert set(frame["path"]) == files_in(data / "valid")
    code, _, err = run_cli("interpret", str(out), str(data), "--out", str(tmp_path / "r"), "--top", "3")
    assert code == 0, err
    with (tmp_path / "r" / "top_losses.csv").open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3
    assert all(str((data / r["path"]).resolve()) in files_in(data / "valid") for r in rows)


def test_interpret_refuses_data_split_differently_than_in_training(
    folders: tuple[Path, Path, str], dataset: Path, tmp_path: Path
) -> None:
    _, out, _ = folders
    code, _, err = run_cli("interpret", str(out), str(dataset), "--out", str(tmp_path / "r"))
    assert_clean_error(code, err, "folders split", "no split of its own")


def test_the_default_split_is_random_and_stratified_by_class(tiny_model: Path, dataset: Path) -> None:
    m = read_manifest(tiny_model)
    # what was done, not what was asked: no --[no-]stratify (None) stratified, and the manifest says true
    assert (m.dataset.split, m.hyperparameters["valid_pct"], m.hyperparameters["stratify"]) == (
        "stratified",
        0.2,
        True,
    )
    frame = validation_frame(tiny_model, str(dataset))  # rebuilt from the manifest, as interpret does
    assert frame["label"].value_counts().to_dict() == dict.fromkeys(COLORS, 3)  # round(0.2 * 16) of each
    assert len(frame) == m.dataset.valid_size


def test_no_stratify_is_fastais_random_splitter(dataset: Path, tmp_path: Path) -> None:
    from fastai.data.transforms import RandomSplitter

    out = tmp_path / "m.pkl"
    code, stdout, err = run_cli("train", str(dataset), "--out", str(out), "--size", "16", "--untrained",
                                "--no-stratify", "--seed", "7", "--no-verify")  # fmt: skip
    assert code == 0, err
    assert "split random 0.2: 39 training, 9 validation images" in stdout
    assert read_manifest(out).dataset.split == "random"
    assert read_manifest(out).hyperparameters["stratify"] is False
    table_paths = sorted(str(p.resolve()) for p in dataset.rglob("*.png"))
    _, valid = RandomSplitter(0.2, seed=7)(table_paths)
    assert set(validation_frame(out, str(dataset))["path"]) == {table_paths[i] for i in valid}


def test_a_class_too_small_to_validate_is_warned_about(dataset: Path, tmp_path: Path) -> None:
    data = shutil.copytree(dataset, tmp_path / "colors")
    (data / "purple").mkdir()
    shutil.copy(data / "red" / "red_00.png", data / "purple" / "only.png")
    code, _, err = run_cli("train", str(data), "--out", str(tmp_path / "m.pkl"), *FAST, "--no-verify",
                                "--reports", str(tmp_path / "r"))  # fmt: skip
    assert code == 0, err
    assert "warning: no validation images for class(es) purple: their accuracy is not measured" in err


def test_valid_pct_with_the_datas_own_split_is_refused(
    folders: tuple[Path, Path, str], tmp_path: Path
) -> None:
    data, _, _ = folders
    out = tmp_path / "m.pkl"
    code, _, err = run_cli("train", str(data), "--out", str(out), *FAST, "--valid-pct", "0.3")
    assert_clean_error(code, err, "--valid-pct does nothing here", "train/ and valid/ folders")
    code, _, err = run_cli("train", str(data), "--out", str(out), *FAST, "--no-stratify")
    assert_clean_error(code, err, "--[no-]stratify does nothing here")
    assert not out.exists()


def test_a_class_only_in_valid_is_refused(folders: tuple[Path, Path, str], tmp_path: Path) -> None:
    data = shutil.copytree(folders[0], tmp_path / "colors")
    shutil.move(data / "train" / "blue", tmp_path / "blue-train")
    (data / "train" / "blue").mkdir()  # present, but empty in train/
    code, _, err = run_cli("train", str(data), "--out", str(tmp_path / "m.pkl"), *FAST)
    assert_clean_error(code, err, "blue")


def write_split_csv(dataset: Path, path: Path, flags: dict[int, str]) -> Path:
    """path,label,is_valid rows (relative paths) for red and blue; image i gets flags.get(i, 'false')."""
    rows = [("path", "label", "is_valid")]
    for label in ("red", "blue"):
        for i, f in enumerate(sorted((dataset / label).iterdir())[:10]):
            rows.append((str(Path("..") / dataset.name / label / f.name), label, flags.get(i, "false")))
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows(rows)
    return path


def test_csv_is_valid_column_splits_the_data(dataset: Path, tmp_path: Path) -> None:
    data = shutil.copytree(dataset, tmp_path / dataset.name)
    labels = write_split_csv(data, tmp_path / "csv" / "labels.csv", {0: "True", 1: "yes", 2: "1", 3: " no "})
    out = tmp_path / "m" / "fromcsv.pkl"
    code, stdout, err = run_cli(
        "train",
        str(labels),
        "--out",
        str(out),
        *FAST,
        "--bs",
        "8",
        "--no-verify",
        "--reports",
        str(tmp_path / "r"),
    )
    assert code == 0, err
    assert "split by its is_valid column: 14 training, 6 validation images" in stdout
    d = read_manifest(out).dataset
    assert (d.split, d.train_size, d.valid_size) == ("column", 14, 6)
    assert read_manifest(out).hyperparameters["stratify"] is False
    frame = validation_frame(out, str(labels))
    expected = {
        str((data / label / f"{label}_{i:02d}.png").resolve()) for label in ("red", "blue") for i in range(3)
    }
    assert set(frame["path"]) == expected


def test_csv_is_valid_column_with_a_bad_value(dataset: Path, tmp_path: Path) -> None:
    labels = write_split_csv(dataset, tmp_path / "labels.csv", {2: "maybe"})
    code, _, err = run_cli("train", str(labels), "--out", str(tmp_path / "m.pkl"), *FAST)
    assert_clean_error(code, err, "line 4", "is_valid", "'maybe'")


def test_clean_keeps_a_relabelled_file_in_its_half(folders: tuple[Path, Path, str], tmp_path: Path) -> None:
    data = shutil.copytree(folders[0], tmp_path / "colors")
    decisions = tmp_path / "decisions.csv"
    decisions.write_text(
        "path,action\nvalid/red/red_00.png,green\ntrain/blue/blue_10.png,delete\ntrain/red/red_11.png,keep\n"
    )
    code, _, err = run_cli("clean", str(data), "--decisions", str(decisions))
    assert code == 0, err
    assert (data / "valid" / "green" / "red_00.png").is_file()
    assert (data / "_removed" / "train" / "blue" / "blue_10.png").is_file()
    assert not (data / "valid" / "red" / "red_00.png").exists()
    assert not (data / "train" / "blue" / "blue_10.png").exists()
