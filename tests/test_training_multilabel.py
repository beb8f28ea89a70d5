"""Multi-label training end to end: the generated `marks` set (training/marks.py) trained by the real CLI, exported
with its kind and threshold, reloaded, predicted, reported, exported to ONNX; bad inputs refused cleanly."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import run_cli

from training.marks import MARKS, write_marks
from training.multilabel import baseline

pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning"),
]

# Measured (see the report): 200 images at 32 px, 3 epochs, seed 42 reach macro F1 1.00 on the 40 validation
# images; always answering the commonest set of labels ('cross') scores macro F1 0.17 on the 200. The margin leaves room for noise.
MIN_F1 = 0.85


@pytest.fixture(scope="module")
def marks(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_marks(tmp_path_factory.mktemp("marks"), n=200, size=32)


@pytest.fixture(scope="module")
def trained(marks: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("models") / "marks.pkl"
    code, stdout, stderr = run_cli(
        "train", str(marks), "--out", str(out), "--arch", "cnn", "--size", "32", "--epochs", "3", "--bs", "16",
        "--reports", str(out.parent / "reports"),
    )  # fmt: skip
    assert code == 0, stderr
    return out, stdout


def test_manifest_records_kind_threshold_and_f1(trained: tuple[Path, str], marks: Path) -> None:
    model, stdout = trained
    m = json.loads(model.with_suffix(".json").read_text())
    assert (m["kind"], m["threshold"], m["classes"]) == ("multi-label classifier", 0.5, list(MARKS))
    assert m["dataset"]["split"] == "random"
    labels = pd.read_csv(marks, keep_default_na=False)["labels"].str.split().explode()
    assert m["dataset"]["counts"] == {k: int(v) for k, v in labels.value_counts().sort_index().items()}
    assert "reload check" in stdout
    assert "macro F1" in stdout


def test_f1_clearly_beats_the_commonest_set(trained: tuple[Path, str], marks: Path) -> None:
    model, _ = trained
    m = json.loads(model.with_suffix(".json").read_text())
    f1 = m["metrics"]["f1"]
    frame = pd.read_csv(marks, keep_default_na=False)
    trivial = baseline(frame["labels"].tolist(), list(MARKS))
    assert f1 >= MIN_F1
    assert f1 > trivial.commonest_f1 + 0.4
    assert m["metrics"]["accuracy"] > trivial.majority_accuracy


def test_predict_gives_the_marks_shown(trained: tuple[Path, str], tmp_path: Path) -> None:
    from fastai.learner import load_learner

    model, _ = trained
    learn = load_learner(model)
    fresh = write_marks(tmp_path / "fresh", n=20, size=32, seed=7)  # images the model never saw
    rows = pd.read_csv(fresh, keep_default_na=False)
    right = 0
    for path, labels in zip(rows["path"], rows["labels"], strict=True):
        with learn.no_bar():
            decoded, given, probs = learn.predict(fresh.parent / path)
        assert given.tolist() == (probs > 0.5).tolist()  # decoded at the manifest's threshold
        right += sorted(decoded) == labels.split()
    assert right >= 16


def test_reports_per_label_and_threshold_curve(trained: tuple[Path, str]) -> None:
    model, _ = trained
    folder = model.parent / "reports"
    per_label = pd.read_csv(folder / "per_label.csv")
    assert per_label["label"].tolist() == list(MARKS)
    assert list(per_label.columns) == ["label", "precision", "recall", "f1", "support"]
    assert per_label["f1"].mean() == pytest.approx(
        json.loads(model.with_suffix(".json").read_text())["metrics"]["f1"], abs=1e-3
    )
    assert (folder / "threshold.png").stat().st_size > 1000


def test_interpret_and_summary(trained: tuple[Path, str], marks: Path, tmp_path: Path) -> None:
    model, _ = trained
    code, stdout, stderr = run_cli("interpret", str(model), str(marks), "--out", str(tmp_path))
    assert code == 0, stderr
    assert "no confusion matrix" in stdout
    assert not (tmp_path / "confusion_matrix.png").exists()
    assert (tmp_path / "top_losses_why.png").stat().st_size > 1000
    assert "top_losses_why.png" in stdout
    top = pd.read_csv(tmp_path / "top_losses.csv", keep_default_na=False)
    assert len(top) == 9
    assert (top["loss"].diff().dropna() <= 0).all()
    code, stdout, stderr = run_cli("summary", str(model))
    assert code == 0, stderr
    assert "multi-label, 4 labels, threshold 0.5" in stdout


def test_onnx_export_parity(trained: tuple[Path, str], tmp_path: Path) -> None:
    import shutil

    import onnxruntime as ort
    import torch
    from fastai.learner import load_learner

    model, _ = trained
    copy = tmp_path / model.name
    shutil.copy(model, copy)
    shutil.copy(model.with_suffix(".json"), copy.with_suffix(".json"))
    code, _, stderr = run_cli("export-onnx", str(copy))
    assert code == 0, stderr
    m = json.loads(copy.with_suffix(".json").read_text())
    assert m["onnx"]["activation"] == "sigmoid"
    learn = load_learner(copy)
    x = torch.rand(4, 3, 32, 32)
    with torch.inference_mode():
        expected = torch.sigmoid(learn.model.eval()(x)).numpy()
    [got] = ort.InferenceSession(str(copy.with_suffix(".onnx"))).run(None, {"input": x.numpy()})
    assert np.abs(got - expected).max() < 1e-4


def assert_clean_error(code: int, stderr: str, fragment: str) -> None:
    assert code == 2
    assert "Traceback" not in stderr
    assert fragment in stderr


def test_empty_labels_column_is_refused(tmp_path: Path, marks: Path) -> None:
    frame = pd.read_csv(marks, keep_default_na=False)
    frame["labels"] = ""
    bad = marks.parent / "empty.csv"
    frame.to_csv(bad, index=False)
    code, _, stderr = run_cli(
        "train", str(bad), "--out", str(tmp_path / "m.pkl"), "--size", "16", "--untrained"
    )
    assert_clean_error(code, stderr, "has no labels")


@pytest.mark.parametrize("value", ["abc", "1.5", "0"])
def test_bad_threshold_is_refused(
    value: str, marks: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from training.__main__ import main

    with pytest.raises(SystemExit) as exit_info:
        main(["train", str(marks), "--out", str(tmp_path / "m.pkl"), "--threshold", value])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "argument --threshold" in err
    assert "Traceback" not in err


def test_threshold_and_stratify_need_their_kind(marks: Path, dataset: Path, tmp_path: Path) -> None:
    out = str(tmp_path / "m.pkl")
    code, _, stderr = run_cli("train", str(dataset), "--out", out, "--threshold", "0.3", "--untrained")
    assert_clean_error(code, stderr, "drop --threshold")
    code, _, stderr = run_cli("train", str(marks), "--out", out, "--stratify", "--untrained")
    assert_clean_error(code, stderr, "no class to stratify by")
    code, _, stderr = run_cli("train", str(marks), "--out", out, "--monitor", "error_rate", "--epochs", "1")
    assert_clean_error(code, stderr, "--monitor error_rate is not measured for multi-label data")


def test_train_marks_uses_the_data_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEARNSERVE_DATA_HOME", str(tmp_path / "home"))
    out = tmp_path / "m.pkl"
    code, stdout, stderr = run_cli(
        "train", "marks", "--out", str(out), "--size", "16", "--untrained", "--no-verify"
    )
    assert code == 0, stderr
    assert (tmp_path / "home" / "marks" / "labels.csv").is_file()
    assert "400 images in 4 labels (multi-label)" in stdout
    assert "not clearly better than answering without looking" in stderr  # untrained: the chance warning
    assert json.loads(out.with_suffix(".json").read_text())["threshold"] == 0.5


def test_data_marks_writes_the_set(tmp_path: Path) -> None:
    code, _, stderr = run_cli("data", "marks", str(tmp_path / "marks"))
    assert code == 0, stderr
    rows = pd.read_csv(tmp_path / "marks" / "labels.csv", keep_default_na=False)
    assert len(rows) == 400
    assert set(rows["labels"].str.split().explode()) == set(MARKS)


def test_multi_label_flag_reads_a_label_column(marks: Path, tmp_path: Path) -> None:
    frame = pd.read_csv(marks, keep_default_na=False).rename(columns={"labels": "label"})
    renamed = marks.parent / "label_column.csv"
    frame.to_csv(renamed, index=False)
    out = tmp_path / "m.pkl"
    code, _, stderr = run_cli(
        "train", str(renamed), "--multi-label", "--threshold", "0.4", "--out", str(out), "--size", "16",
        "--untrained", "--no-verify",
    )  # fmt: skip
    assert code == 0, stderr
    m = json.loads(out.with_suffix(".json").read_text())
    assert (m["kind"], m["threshold"], m["classes"]) == ("multi-label classifier", 0.4, list(MARKS))


def test_show_titles_every_label(marks: Path, tmp_path: Path) -> None:
    code, stdout, stderr = run_cli(
        "show", str(marks), "--size", "32", "--bs", "16", "--out", str(tmp_path / "b.png")
    )
    assert code == 0, stderr
    assert "16 training images" in stdout
    assert (tmp_path / "b.png").stat().st_size > 1000


def test_clean_applies_interprets_multi_label_top_losses(
    trained: tuple[Path, str], marks: Path, tmp_path: Path
) -> None:
    """interpret's multi-label top_losses.csv (labels separated by spaces, a loss per image), with an action column,
    cleans a copy of the CSV dataset: a delete moves the file and drops its row, new labels replace the row's, the
    CSV is first copied to labels.csv.orig; a second run changes nothing, and an unknown label is refused."""
    import shutil

    model, _ = trained
    code, _, stderr = run_cli("interpret", str(model), str(marks), "--out", str(tmp_path / "interpret"))
    assert code == 0, stderr
    top = pd.read_csv(tmp_path / "interpret" / "top_losses.csv", keep_default_na=False)
    data = Path(shutil.copytree(marks.parent, tmp_path / "data"))
    table = data / marks.name
    original = table.read_text()
    top["action"] = ["delete", "Square disc", "keep", "(none)"] + [""] * (len(top) - 4)
    decisions = tmp_path / "decisions.csv"
    top.to_csv(decisions, index=False)
    code, stdout, stderr = run_cli("clean", str(table), "--decisions", str(decisions))
    assert code == 0, stderr
    rows = pd.read_csv(table, keep_default_na=False).set_index("path")
    assert top["path"][0] not in rows.index
    assert (data / "_removed" / top["path"][0]).is_file()
    assert not (data / top["path"][0]).exists()
    assert rows.loc[top["path"][1], "labels"] == "disc square"
    assert rows.loc[top["path"][3], "labels"] == ""
    assert (data / "labels.csv.orig").read_text() == original
    assert f"relabelled {top['path'][1]}: '{top['actual'][1]}' -> 'disc square'" in stdout
    after = table.read_text()
    code, stdout, stderr = run_cli("clean", str(table), "--decisions", str(decisions))
    assert code == 0, stderr
    assert table.read_text() == after
    assert "already done" in stdout
    top.loc[2, "action"] = "squares"
    top.to_csv(decisions, index=False)
    code, _, stderr = run_cli("clean", str(table), "--decisions", str(decisions))
    assert_clean_error(code, stderr, "unknown action or label(s) squares")
    assert table.read_text() == after
