"""Regression and key point training end to end (issue 22): the generated `discs` and `spots` sets trained by the
real CLI, exported with their kind and names, reloaded in a fresh process (train's reload check), clearly better
than answering the training mean, reported, and served by the real server; Resize moves points with the image;
bad CSVs refused naming the line and column."""

from __future__ import annotations

import io
import json
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
import torch
from conftest import run_cli

from tests.live_server import live_server
from training.discs import VALUES, write_discs
from training.manifest import POINTS, REGRESSION
from training.splits import split_indices
from training.spots import POINTS as SPOT_NAMES
from training.spots import make_spots, write_spots

pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning"),
]

# Measured (see the report): discs, 160 images, 4 epochs: MAE 0.35 against 0.95 for the training mean; spots, 200
# images, 6 epochs: mean distance 3.8 px against 10.3. Both are about 0.37 of the mean's; the bar leaves room.
BETTER_THAN_MEAN = 0.6


@pytest.fixture(scope="module")
def discs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_discs(tmp_path_factory.mktemp("discs"), n=160)


@pytest.fixture(scope="module")
def spots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_spots(tmp_path_factory.mktemp("spots"), n=200)


def train(data: Path, out: Path, epochs: int, *extra: str) -> tuple[Path, str]:
    code, stdout, stderr = run_cli(
        "train", str(data), "--out", str(out), "--size", "32", "--epochs", str(epochs), "--bs", "16",
        "--reports", str(out.parent / "reports" / out.stem), *extra,
    )  # fmt: skip
    assert code == 0, stderr
    return out, stdout


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory, discs: Path, spots: Path) -> dict[str, tuple[Path, str]]:
    folder = tmp_path_factory.mktemp("models")
    return {
        "discs": train(discs, folder / "discs.pkl", 4, "--monitor", "mae"),
        "spots": train(spots, folder / "spots.pkl", 6),
    }


def manifest(model: Path) -> dict[str, object]:
    return json.loads(model.with_suffix(".json").read_text())  # type: ignore[no-any-return]


def valid_rows(table: Path) -> pd.DataFrame:
    """The validation rows train used (a random 0.2 at seed 42), and the rows it trained on."""
    frame = pd.read_csv(table)
    train_idx, valid_idx = split_indices(len(frame), 0.2, 42)
    return frame.iloc[valid_idx], frame.iloc[train_idx]


def test_regression_manifest_and_reload(models: dict[str, tuple[Path, str]]) -> None:
    model, stdout = models["discs"]
    m = manifest(model)
    assert (m["kind"], m["classes"], m["threshold"]) == (REGRESSION, list(VALUES), None)
    metrics = m["metrics"]
    assert isinstance(metrics, dict)
    assert metrics["accuracy"] is None
    assert metrics["error_rate"] is None
    assert f"reload check: a fresh process predicts the validation set at MAE {metrics['mae']:.4f}" in stdout
    history = pd.read_csv(model.parent / "reports" / "discs" / "history.csv")
    assert m["best_epoch"] == int(history["mae"].idxmin()) + 1  # --monitor mae: lower is better
    code, stdout, stderr = run_cli("summary", str(model))
    assert code == 0, stderr
    assert "regression: radius, brightness" in stdout
    assert f"MAE {metrics['mae']:.4f}" in stdout
    code, _, stderr = run_cli("interpret", str(model), "discs")
    assert_clean_error(
        code, stderr, "interpret reads a classifier's confusions, and discs.pkl is a regression"
    )


def test_regression_clearly_beats_the_mean(models: dict[str, tuple[Path, str]], discs: Path) -> None:
    model, _ = models["discs"]
    valid, trained_on = valid_rows(discs)
    values = list(VALUES)
    mean_mae = float((valid[values] - trained_on[values].mean()).abs().to_numpy().mean())
    mae = manifest(model)["metrics"]["mae"]  # type: ignore[index]
    assert mae < BETTER_THAN_MEAN * mean_mae, (mae, mean_mae)
    reports = model.parent / "reports" / "discs"
    assert (reports / "scatter.png").stat().st_size > 1000
    text = (reports / "metrics.txt").read_text()
    assert f"MAE {mae:.4f}" in text
    assert f"always answering the training mean: MAE {mean_mae:.4f}" in text


def input_pixels(frame: pd.DataFrame) -> np.ndarray:
    """The spots' points in pixels of the 32 x 32 input: squish scales 48 x 32 by (32/48, 1)."""
    xy = frame[[f"{p}_{a}" for p in SPOT_NAMES for a in "xy"]].to_numpy().reshape(len(frame), -1, 2)
    return xy * np.array([32 / 48, 1.0])


def test_key_points_manifest_and_clearly_beat_the_mean(
    models: dict[str, tuple[Path, str]], spots: Path
) -> None:
    model, stdout = models["spots"]
    m = manifest(model)
    assert (m["kind"], m["classes"]) == (POINTS, list(SPOT_NAMES))
    distance = m["metrics"]["mae"]  # type: ignore[index]
    assert (
        f"reload check: a fresh process predicts the validation set at mean distance {distance:.4f}" in stdout
    )
    valid, trained_on = valid_rows(spots)
    truth, mean = input_pixels(valid), input_pixels(trained_on).mean(axis=0)
    mean_distance = float(np.linalg.norm(truth - mean, axis=2).mean())
    assert distance < BETTER_THAN_MEAN * mean_distance, (distance, mean_distance)
    reports = model.parent / "reports" / "spots"
    assert (reports / "points.png").stat().st_size > 1000
    assert (
        f"always answering the training mean: mean distance {mean_distance:.4f}"
        in (reports / "metrics.txt").read_text()
    )


def png(image: object) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "PNG")  # type: ignore[attr-defined]
    return buf.getvalue()


def test_served_answers_have_each_kinds_shape(models: dict[str, tuple[Path, str]], tmp_path: Path) -> None:
    """The real server answers the trained learners: points named, in the upload's own pixels, where learn.predict's
    (in the 32 px input's pixels) lands when squish is undone, and near the spots; values named."""
    from fastai.learner import load_learner

    from training.regression import to_image_pixels

    folder = models["discs"][0].parent
    learn = load_learner(folder / "spots.pkl")
    rng = np.random.default_rng(5)
    distances: list[float] = []
    middle: list[float] = []  # what answering the middle of the image would miss by: about 13 px
    with live_server(folder, tmp_path / "server.log") as live:
        for _ in range(12):
            image, centres = make_spots(rng, 48, 32)
            middle += [np.hypot(24 - x, 16 - y) for x, y in centres.values()]
            r = httpx.post(
                f"{live.base}/models/spots/predict", content=png(image), headers={"Content-Type": "image/png"}
            )
            assert r.status_code == 200, r.text
            points = r.json()["points"]
            assert [p["name"] for p in points] == list(SPOT_NAMES)
            with learn.no_bar():
                _, _, raw = learn.predict(png(image))
            expected = to_image_pixels(raw.view(-1, 2), "squish", 32, 48, 32)
            got = torch.tensor([[p["x"], p["y"]] for p in points])
            assert torch.allclose(got, expected, atol=1e-3)
            distances += [
                np.hypot(p["x"] - centres[p["name"]][0], p["y"] - centres[p["name"]][1]) for p in points
            ]
        # learned, by the bar the validation test uses (a run measured 3.8 px against 10.3 for the mean; 6.6 once)
        assert np.median(distances) < BETTER_THAN_MEAN * np.median(middle), (distances, middle)
        disc = write_discs(tmp_path / "one", n=1, seed=3)
        body = (disc.parent / "images" / "0000.png").read_bytes()
        r = httpx.post(
            f"{live.base}/models/discs/predict", content=body, headers={"Content-Type": "image/png"}
        )
        assert r.status_code == 200, r.text
        assert [v["name"] for v in r.json()["values"]] == list(VALUES)


@pytest.mark.parametrize("method", ["squish", "crop", "pad"])
def test_resize_moves_the_points_with_the_image(spots: Path, method: str) -> None:
    """fastai's validation Resize moves the points as it moves the image: mapped back, they are where they were."""
    from training.datasets import load_table
    from training.learner import batch_transforms
    from training.regression import target_block, to_image_pixels

    table = load_table(str(spots))
    valid_idx = list(range(150, 200))
    block = target_block(table, valid_idx, 32, method, batch_transforms(False))
    _, y = block.dataloaders(table.frame, bs=50, num_workers=0).valid.one_batch()
    truth = torch.tensor(table.frame[table.target_columns].to_numpy()[valid_idx], dtype=torch.float32)
    back = to_image_pixels(y.float().cpu(), method, 32, 48, 32)
    assert torch.allclose(back, truth.view(-1, 2, 2), atol=1e-3)
    outside = bool((y.abs() > 1).any())
    assert outside == (method == "crop")  # crop keeps the centred 32 x 32: spots near the sides fall outside


def assert_clean_error(code: int, stderr: str, fragment: str) -> None:
    assert code == 2, stderr
    assert "Traceback" not in stderr
    assert fragment in stderr


@pytest.mark.parametrize(
    ("cell", "fragment"),
    [("abc", "line 4, column 'radius': 'abc' is not a number"), ("", "line 4, column 'radius': empty"),
     ("nan", "line 4, column 'radius': 'nan' is not a finite number")],
)  # fmt: skip
def test_bad_cells_are_refused_by_line_and_column(
    discs: Path, tmp_path: Path, cell: str, fragment: str
) -> None:
    frame = pd.read_csv(discs)
    frame["radius"] = frame["radius"].astype(object)
    frame.loc[2, "radius"] = cell
    bad = discs.parent / f"bad_{cell or 'empty'}.csv"
    frame.to_csv(bad, index=False)
    code, _, stderr = run_cli("train", str(bad), "--out", str(tmp_path / "m.pkl"), "--untrained")
    assert_clean_error(code, stderr, fragment)


def test_targets_pick_columns_and_unknown_ones_are_refused(discs: Path, spots: Path, tmp_path: Path) -> None:
    out = tmp_path / "m.pkl"
    code, _, stderr = run_cli("train", str(discs), "--out", str(out), "--targets", "size", "--untrained")
    assert_clean_error(
        code, stderr, "has no column 'size' (nor 'size_x' and 'size_y'); its columns are radius, brightness"
    )
    picks = [
        (discs, "brightness", REGRESSION, ["brightness"]),
        (spots, "blue", POINTS, ["blue"]),
        (spots, "red_x,blue_y", REGRESSION, ["red_x", "blue_y"]),  # not a pair: two values
    ]
    for data, targets, kind, names in picks:
        code, _, stderr = run_cli("train", str(data), "--targets", targets, "--out", str(out), "--size", "16",
                                  "--untrained", "--no-verify")  # fmt: skip
        assert code == 0, stderr
        assert (manifest(out)["kind"], manifest(out)["classes"]) == (kind, names)
    code, _, stderr = run_cli("train", str(discs), "--out", str(out), "--stratify", "--untrained")
    assert_clean_error(code, stderr, "regression targets are numbers: there is no class to stratify by")


def test_targets_is_refused_for_classes(dataset: Path, tmp_path: Path) -> None:
    code, _, stderr = run_cli(
        "train", str(dataset), "--targets", "x", "--out", str(tmp_path / "m.pkl"), "--untrained"
    )
    assert_clean_error(code, stderr, "--targets picks the numeric columns")


@pytest.mark.parametrize(("name", "table", "columns"), [("discs", "values.csv", ["path", *VALUES]),
                         ("spots", "points.csv", ["path", "red_x", "red_y", "blue_x", "blue_y"])])  # fmt: skip
def test_data_writes_the_bundled_sets(tmp_path: Path, name: str, table: str, columns: list[str]) -> None:
    code, _stdout, stderr = run_cli("data", name, str(tmp_path / name))
    assert code == 0, stderr
    rows = pd.read_csv(tmp_path / name / table)
    assert (len(rows), list(rows.columns)) == (400, columns)
    assert (tmp_path / name / rows["path"][0]).is_file()


@pytest.mark.parametrize("name", ["discs", "spots"])
def test_onnx_export_keeps_the_output_range(
    models: dict[str, tuple[Path, str]], tmp_path: Path, name: str
) -> None:
    """The SigmoidRange (a regression's per-value bounds are buffers) goes into the ONNX graph: same outputs."""
    import shutil

    import onnxruntime as ort
    from fastai.learner import load_learner

    model, _ = models[name]
    copy = tmp_path / model.name
    shutil.copy(model, copy)
    shutil.copy(model.with_suffix(".json"), copy.with_suffix(".json"))
    code, _, stderr = run_cli("export-onnx", str(copy))
    assert code == 0, stderr
    assert manifest(copy)["onnx"]["activation"] == "none"  # type: ignore[index]
    learn = load_learner(copy)
    x = torch.rand(4, 3, 32, 32)
    with torch.inference_mode():
        expected = learn.model.eval()(x).numpy()
    [got] = ort.InferenceSession(str(copy.with_suffix(".onnx"))).run(None, {"input": x.numpy()})
    assert np.abs(got - expected).max() < 1e-4
