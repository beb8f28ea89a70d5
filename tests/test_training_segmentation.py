"""Segmentation training end to end: the generated `shapes` set (training/shapes.py) trained by the real CLI into a
U-Net, exported with its kind and codes, reloaded in this process and predicted, reported; broken sets refused
cleanly, naming the files."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from conftest import run_cli
from PIL import Image

from training.shapes import CODES, write_shapes

pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning"),
]

# Measured (see the report): 80 images at 32 px, 3 epochs, seed 42 reach a pixel accuracy of 0.959 on the 16
# validation images (16,384 pixels), where always answering 'background' scores 0.865: a gain of 0.094. The bar asks
# for a bit over half of it, leaving room for another machine's floating point.
MIN_GAIN = 0.05  # pixel accuracy at least this much over the commonest code's share


@pytest.fixture(scope="module")
def shapes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_shapes(tmp_path_factory.mktemp("data") / "shapes", n=80, size=32)


@pytest.fixture(scope="module")
def trained(shapes: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("models") / "shapes.pkl"
    code, stdout, stderr = run_cli(
        "train", str(shapes), "--out", str(out), "--size", "32", "--epochs", "3", "--bs", "16",
        "--reports", str(out.parent / "reports"),
    )  # fmt: skip
    assert code == 0, stderr
    return out, stdout


def manifest(model: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(model.with_suffix(".json").read_text())
    return data


def test_manifest_says_segmentation_with_the_codes(trained: tuple[Path, str]) -> None:
    model, stdout = trained
    m = manifest(model)
    assert (m["kind"], m["classes"], m["input_size"]) == ("segmentation", list(CODES), 32)
    assert (m["dataset"]["split"], m["dataset"]["train_size"], m["dataset"]["valid_size"]) == (
        "random",
        64,
        16,
    )
    assert m["dataset"]["counts"]["background"] == 80  # images whose mask shows each code
    assert set(m["metrics"]["iou"]) == set(CODES)
    assert m["metrics"]["error_rate"] == pytest.approx(1 - m["metrics"]["accuracy"])
    assert "reload check: a fresh process predicts the validation set at pixel accuracy" in stdout
    assert "IoU per code" in stdout
    assert (
        "pixel accuracy" in stdout.splitlines()[-4]
    )  # the last line's figures, before model/manifest/reports


def test_summary_describes_a_segmentation_model(trained: tuple[Path, str]) -> None:
    from training.manifest import read_manifest
    from training.summary import describe

    model, _ = trained
    text = describe(read_manifest(model))
    assert "segmentation, 4 codes (background, square, disc, triangle)" in text
    assert re.search(r"pixel accuracy 0\.\d{4}, mean IoU 0\.\d{4}, valid_loss", text), text


def test_pixel_accuracy_clearly_beats_the_commonest_code(trained: tuple[Path, str]) -> None:
    model, _ = trained
    m = manifest(model)
    confusion = pd.read_csv(model.parent / "reports" / "confusion.csv", index_col=0)
    pixels = confusion.to_numpy()
    commonest = pixels.sum(axis=1).max() / pixels.sum()
    assert m["metrics"]["accuracy"] == pytest.approx(np.trace(pixels) / pixels.sum(), abs=1e-6)
    assert m["metrics"]["accuracy"] >= commonest + MIN_GAIN


def test_reloaded_learner_predicts_a_mask_of_the_input_size(
    trained: tuple[Path, str], tmp_path: Path
) -> None:
    from fastai.learner import load_learner

    model, _ = trained
    learn = load_learner(model)
    fresh = write_shapes(tmp_path / "fresh", n=4, size=48, seed=7)  # images the model never saw, not 32 px
    for image in sorted((fresh / "images").iterdir()):
        with learn.no_bar():
            mask, decoded, probs = learn.predict(image)  # (mask, the same, probabilities)
        assert tuple(mask.shape) == (32, 32)  # the model's input size
        assert tuple(probs.shape) == (len(CODES), 32, 32)
        assert mask.tolist() == probs.argmax(dim=0).tolist()
        assert decoded.tolist() == mask.tolist()
        assert set(mask.unique().tolist()) <= set(range(len(CODES)))


def test_reports_per_code_confusion_and_overlays(trained: tuple[Path, str]) -> None:
    model, _ = trained
    folder = model.parent / "reports"
    m = manifest(model)
    per_code = pd.read_csv(folder / "per_code.csv")
    assert list(per_code.columns) == ["code", "iou", "true_pixels", "predicted_pixels"]
    assert per_code["code"].tolist() == list(CODES)
    assert per_code["iou"].tolist() == pytest.approx([m["metrics"]["iou"][c] for c in CODES], abs=1e-4)
    assert per_code["true_pixels"].sum() == 16 * 32 * 32
    confusion = pd.read_csv(folder / "confusion.csv", index_col=0)
    assert list(confusion.columns) == list(CODES)
    assert confusion.sum(axis=1).tolist() == per_code["true_pixels"].tolist()
    assert "pixel accuracy" in (folder / "segmentation.txt").read_text()
    for png in ("masks.png", "confusion.png", "loss.png"):
        assert (folder / png).stat().st_size > 1000


def test_data_shapes_writes_the_set(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from training.__main__ import main

    code, _, stderr = run_cli("data", "shapes", str(tmp_path / "shapes"))
    assert code == 0, stderr
    images, masks = (sorted((tmp_path / "shapes" / d).iterdir()) for d in ("images", "masks"))
    assert len(images) == len(masks) == 300
    assert [p.name for p in images] == [p.name for p in masks]
    assert (tmp_path / "shapes" / "codes.txt").read_text().split() == list(CODES)
    with Image.open(masks[0]) as mask, Image.open(images[0]) as image:
        assert (mask.mode, mask.size, image.size) == ("L", (64, 64), (64, 64))
        assert int(np.asarray(mask).max()) < len(CODES)
    again = write_shapes(tmp_path / "again", n=3)
    assert (again / "masks" / "0002.png").read_bytes() == (
        tmp_path / "shapes" / "masks" / "0002.png"
    ).read_bytes()
    with pytest.raises(SystemExit):
        main(["data", "--help"])
    assert "shapes: 300 generated segmentation images" in " ".join(capsys.readouterr().out.split())


def small_copy(shapes: Path, dest: Path, n: int = 12) -> Path:
    for folder in ("images", "masks"):
        (dest / folder).mkdir(parents=True)
        for f in sorted((shapes / folder).iterdir())[:n]:
            shutil.copy(f, dest / folder / f.name)
    shutil.copy(shapes / "codes.txt", dest / "codes.txt")
    return dest


def assert_clean_error(code: int, stderr: str, *fragments: str) -> None:
    assert code == 2
    assert "Traceback" not in stderr
    for fragment in fragments:
        assert fragment in stderr


def break_missing(d: Path) -> None:
    (d / "masks" / "0003.png").unlink()


def break_size(d: Path) -> None:
    Image.new("L", (20, 20)).save(d / "masks" / "0004.png")


def break_value(d: Path) -> None:
    Image.new("L", (32, 32), 7).save(d / "masks" / "0005.png")


def break_mode(d: Path) -> None:
    Image.new("RGB", (32, 32)).save(d / "masks" / "0006.png")


def break_codes(d: Path) -> None:
    (d / "codes.txt").unlink()


@pytest.mark.parametrize(
    ("damage", "fragments"),
    [
        (break_missing, ["1 images without a mask", "0003.png"]),
        (break_size, ["masks of another size than their image", "0004.png 20x20 vs 0004.png 32x32"]),
        (break_value, ["values outside the 4 codes of codes.txt (0..3)", "0005.png (7)"]),
        (break_mode, ["not one channel of code indices", "0006.png (RGB)"]),
        (break_codes, ["no codes.txt"]),
    ],
)
def test_broken_sets_are_refused_naming_the_files(
    damage: object, fragments: list[str], shapes: Path, tmp_path: Path
) -> None:
    data = small_copy(shapes, tmp_path / "broken")
    damage(data)  # type: ignore[operator]
    code, _, stderr = run_cli("train", str(data), "--out", str(tmp_path / "m.pkl"), "--untrained")
    assert_clean_error(code, stderr, *fragments)
    assert not (tmp_path / "m.pkl").exists()


def test_camvid_layout_labels_folder_p_names_and_valid_txt(shapes: Path, tmp_path: Path) -> None:
    data = small_copy(shapes, tmp_path / "camvid", n=20)
    (data / "masks").rename(data / "labels")
    for mask in (data / "labels").iterdir():
        mask.rename(mask.with_name(f"{mask.stem}_P.png"))
    (data / "valid.txt").write_text("0001.png\n0007.png\n0012.png\n")
    out = tmp_path / "m.pkl"
    code, stdout, stderr = run_cli(
        "train", str(data), "--out", str(out), "--size", "32", "--bs", "4", "--untrained", "--no-verify",
        "--reports", str(tmp_path / "reports"),
    )  # fmt: skip
    assert code == 0, stderr
    assert "split by its valid.txt: 17 training, 3 validation images" in stdout
    m = manifest(out)
    assert (m["dataset"]["split"], m["dataset"]["valid_size"], m["kind"]) == ("valid.txt", 3, "segmentation")
    assert "no better than answering the commonest code" in stderr  # untrained: the chance warning
    code, _, stderr = run_cli("train", str(data), "--out", str(out), "--valid-pct", "0.3", "--untrained")
    assert_clean_error(code, stderr, "--valid-pct does nothing here", "valid.txt")
    (data / "valid.txt").write_text("nope.png\n")
    code, _, stderr = run_cli("train", str(data), "--out", str(out), "--untrained")
    assert_clean_error(code, stderr, "names images not in images/: nope.png")


def test_options_of_other_kinds_are_refused(shapes: Path, tmp_path: Path) -> None:
    out = str(tmp_path / "m.pkl")
    code, _, stderr = run_cli("train", str(shapes), "--out", out, "--threshold", "0.3", "--untrained")
    assert_clean_error(code, stderr, "--threshold", "drop it")
    code, _, stderr = run_cli("train", str(shapes), "--out", out, "--monitor", "f1", "--epochs", "1")
    assert_clean_error(code, stderr, "--monitor f1 is not measured for segmentation")
    code, _, stderr = run_cli("show", str(shapes), "--out", str(tmp_path / "b.png"))  # not two classes
    assert_clean_error(
        code, stderr, "is a segmentation set (images/ and masks/): only `train` reads it so far"
    )


def test_train_shapes_uses_the_data_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEARNSERVE_DATA_HOME", str(tmp_path / "home"))
    out = tmp_path / "m.pkl"
    code, stdout, stderr = run_cli(
        "train", "shapes", "--out", str(out), "--size", "16", "--untrained", "--no-verify",
        "--reports", str(tmp_path / "reports"),
    )  # fmt: skip
    assert code == 0, stderr
    assert (tmp_path / "home" / "shapes" / "codes.txt").is_file()
    assert "300 images with masks of 4 codes" in stdout
    assert manifest(out)["classes"] == list(CODES)
