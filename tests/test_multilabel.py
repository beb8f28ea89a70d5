"""Multi-label learners (issue 22): a notebook-style export (MultiCategoryBlock, BCEWithLogitsLossFlat with its own
threshold) imported and served over real HTTP by both backends, with the labels and probabilities of learn.predict,
the threshold per request, the v2 protocol, the command lines and the metrics."""

from __future__ import annotations

import base64
import csv
import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tests.conftest import run_cli
from tests.live_server import LiveServer, live_server
from tests.test_demo_page import demo_page, playwright_or_skip
from training.manifest import MULTI_LABEL, read_manifest
from training.marks import MARKS, make_image, write_marks

THRESHOLD = 0.4  # not fastai's default 0.5: the served answers must use the learner's own


def held_out_images() -> list[tuple[str, bytes, list[str]]]:
    """(name, PNG bytes, the marks drawn) for images the learner never saw, at its size and at odd sizes."""
    rng = np.random.default_rng(12345)
    images = []
    for i in range(12):
        image, marks, _ = make_image(rng, 32)
        if i % 3 == 1:
            image = image.resize((45, 37))
        elif i % 3 == 2:
            image = image.resize((23, 29))
        buf = io.BytesIO()
        image.save(buf, "PNG")
        images.append((f"held_{i:02d}.png", buf.getvalue(), marks))
    return images


IMAGES = held_out_images()


@pytest.fixture(scope="module")
def models(marks_export: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The notebook-style multi-label export (tests/conftest.py), imported."""
    export = marks_export
    out = tmp_path_factory.mktemp("models")
    code, stdout, stderr = run_cli("import", str(export), "--name", "marks", "--out", str(out), "--onnx")
    assert code == 0, stderr
    assert "as marks: multi-label classifier" in stdout
    return out


@pytest.fixture(scope="module")
def expected(models: Path) -> dict[str, tuple[set[str], dict[str, float]]]:
    """learn.predict's answers, from the served .pkl itself: image name -> (labels, probability per label)."""
    from fastai.learner import load_learner

    learn = load_learner(models / "marks.pkl")
    answers = {}
    for name, data, _ in IMAGES:
        decoded, _, probs = learn.predict(data)
        answers[name] = ({str(x) for x in decoded}, dict(zip(MARKS, probs.tolist(), strict=True)))
    return answers


@pytest.fixture(scope="module", params=["fastai", "onnx"])
def server(
    request: pytest.FixtureRequest, models: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    log = tmp_path_factory.mktemp("log") / "server.log"
    with live_server(models / "marks.pkl", log, BACKEND=request.param) as live:
        yield live


def post(server: LiveServer, data: bytes, query: str = "") -> httpx.Response:
    return httpx.post(f"{server.base}/predict{query}", content=data, headers={"Content-Type": "image/png"})


def test_the_manifest_records_the_kind_and_the_learners_threshold(models: Path) -> None:
    manifest = read_manifest(models / "marks.pkl")
    assert manifest.kind == MULTI_LABEL
    assert manifest.threshold == pytest.approx(THRESHOLD)
    assert manifest.onnx is not None
    assert manifest.onnx.activation == "sigmoid"
    assert manifest.classes == list(MARKS)


def test_answers_equal_learn_predict_on_both_backends(
    server: LiveServer, expected: dict[str, tuple[set[str], dict[str, float]]]
) -> None:
    right = 0  # (image, label) decisions that match the marks drawn
    for name, data, marks in IMAGES:
        r = post(server, data)
        assert r.status_code == 200, r.text
        body = r.json()
        labels, probs = expected[name]
        assert body["kind"] == MULTI_LABEL
        assert body["threshold"] == pytest.approx(THRESHOLD)
        assert {x["label"] for x in body["labels"]} == labels, name
        assert {t["label"]: t["probability"] for t in body["top"]} == pytest.approx(probs, abs=1e-4)
        assert [x["probability"] for x in body["labels"]] == sorted(
            (x["probability"] for x in body["labels"]), reverse=True
        )
        assert len(body["top"]) == len(MARKS)  # every label, most likely first
        right += sum((m in labels) == (m in marks) for m in MARKS)
    # the learner has learnt something (not one constant answer), so the parity above is not a trivial one
    assert right / (len(IMAGES) * len(MARKS)) >= 0.9, right


def test_the_threshold_per_request(server: LiveServer, expected: dict[str, Any]) -> None:
    name, data, _ = IMAGES[0]
    probs: dict[str, float] = expected[name][1]
    for threshold in (0.0, 0.25, 0.9, 1.0):
        body = post(server, data, f"?threshold={threshold}").json()
        assert body["threshold"] == threshold
        assert {x["label"] for x in body["labels"]} == {k for k, p in probs.items() if p > threshold}
    for bad in ("-0.1", "1.5", "nan", "high"):
        r = post(server, data, f"?threshold={bad}")
        assert r.status_code == 422, (bad, r.text)
        assert r.json()["code"] == "validation_error"
    batch = httpx.post(
        f"{server.base}/predict/batch?threshold=1", files=[("files", (n, d)) for n, d, _ in IMAGES[:3]]
    )
    assert [x["labels"] for x in batch.json()["results"]] == [[], [], []]


def test_the_v2_protocol_names_and_shapes_the_outputs(server: LiveServer, expected: dict[str, Any]) -> None:
    meta = httpx.get(f"{server.base}/v2/models/marks").json()
    assert {o["name"]: (o["datatype"], o["shape"]) for o in meta["outputs"]} == {
        "probabilities": ("FP32", [-1, 4]),
        "label": ("BYTES", [-1]),
        "labels": ("BOOL", [-1, 4]),
    }
    names = [n for n, _, _ in IMAGES[:4]]
    body = {
        "inputs": [
            {
                "name": "image",
                "shape": [4],
                "datatype": "BYTES",
                "data": [base64.b64encode(d).decode() for _, d, _ in IMAGES[:4]],
            }
        ],
    }
    r = httpx.post(f"{server.base}/v2/models/marks/infer", json=body)
    assert r.status_code == 200, r.text
    outputs = {o["name"]: o for o in r.json()["outputs"]}
    mask = np.array(outputs["labels"]["data"]).reshape(4, 4)
    assert outputs["labels"]["parameters"] == {"threshold": pytest.approx(THRESHOLD)}
    for row, name in zip(mask, names, strict=True):
        assert {m for m, on in zip(MARKS, row, strict=True) if on} == expected[name][0]
    r = httpx.post(f"{server.base}/v2/models/marks/infer", json={**body, "parameters": {"threshold": 2}})
    assert r.status_code == 400
    assert "threshold" in r.json()["error"]
    r = httpx.post(f"{server.base}/v2/models/marks/infer", json={**body, "parameters": {"threshold": 0}})
    assert all(np.array(o["data"]).all() for o in r.json()["outputs"] if o["name"] == "labels")


def test_models_metrics_and_openapi_say_the_kind(server: LiveServer) -> None:
    [summary] = httpx.get(f"{server.base}/models").json()["models"]
    assert summary["kind"] == MULTI_LABEL
    assert 'kind="multi-label classifier"' in httpx.get(f"{server.base}/metrics").text
    schema = httpx.get(f"{server.base}/openapi.json").json()
    ok = schema["paths"]["/predict"]["post"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert ok["discriminator"]["propertyName"] == "kind"
    assert {"SingleLabelAnswer", "MultiLabelAnswer"} <= set(schema["components"]["schemas"])


def test_a_threshold_for_a_single_label_model_is_refused(tiny_model: Path, tmp_path: Path) -> None:
    with live_server(tiny_model, tmp_path / "server.log") as live:
        r = post(live, IMAGES[0][1], "?threshold=0.5")
        assert r.status_code == 400
        assert "threshold applies to multi-label models" in r.json()["detail"]
        body = post(live, IMAGES[0][1]).json()
        assert body["kind"] == "single-label classifier"
        assert "labels" not in body


def test_the_command_lines_write_the_labels(models: Path, tmp_path: Path, expected: dict[str, Any]) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    for name, data, _ in IMAGES[:5]:
        (folder / name).write_bytes(data)
    env = {"LEARNSERVE_MODEL_PATH": str(models / "marks.pkl")}
    run = subprocess.run(
        [sys.executable, "-m", "app", "predict", str(folder), "--format", "json"],
        capture_output=True, text=True, env={**os.environ, **env}, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    for row in json.loads(run.stdout):
        assert set(row["labels"]) == expected[Path(row["path"]).name][0]
    out = tmp_path / "scores.csv"
    run = subprocess.run(
        [sys.executable, "-m", "app", "score", str(folder), "--out", str(out)],
        capture_output=True, text=True, env={**os.environ, **env}, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    with out.open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0])[:4] == ["path", "labels", "label", "probability"]
    for row in rows:
        assert set(row["labels"].split()) == expected[Path(row["path"]).name][0]


def test_an_image_decodes_to_the_marks_it_shows() -> None:
    """The generator's boxes are where its marks are: the colour inside each box is its mark's."""
    from training.marks import COLOURS

    rng = np.random.default_rng(0)
    for _ in range(20):
        image, marks, boxes = make_image(rng, 32)
        pixels = np.asarray(image.convert("RGB"), dtype=np.int16)
        for mark, (x0, y0, x1, y1) in zip(marks, boxes, strict=True):
            region = pixels[y0 : y1 + 1, x0 : x1 + 1].reshape(-1, 3)
            close = np.abs(region - np.array(COLOURS[mark])).sum(axis=1) < 30
            assert close.any(), (mark, (x0, y0, x1, y1))


@pytest.mark.slow
def test_the_demo_page_shows_chips_and_a_threshold_slider(
    models: Path, expected: dict[str, Any], tmp_path: Path
) -> None:
    sync_api = playwright_or_skip()
    expect = sync_api.expect
    name, data, _ = IMAGES[0]
    image = tmp_path / name
    image.write_bytes(data)
    labels, probs = expected[name]
    with (
        live_server(models / "marks.pkl", tmp_path / "server.log") as live,
        demo_page(sync_api, live.base) as page,
    ):
        expect(page.locator("#model-name")).to_have_text("marks")
        expect(page.locator("#threshold-row")).to_be_visible()
        expect(page.locator("#threshold-value")).to_have_text(f"{round(THRESHOLD * 100)}%")

        page.set_input_files("#file", str(image))
        expect(page.locator("#bars li")).to_have_count(len(MARKS))  # every label, with its bar
        expect(page.locator("#chips li")).to_have_count(len(labels))
        shown = {chip.split(" · ")[0] for chip in page.locator("#chips li").all_text_contents()}
        assert shown == labels
        expect(page.locator("#bars li.best")).to_have_count(len(labels))

        # The slider re-reads the same answer: at 0 every label, at 1 none.
        page.locator("#threshold").fill("0")
        expect(page.locator("#chips li")).to_have_count(sum(p > 0 for p in probs.values()))
        page.locator("#threshold").fill("1")
        expect(page.locator("#chips li")).to_have_count(0)
        expect(page.locator("#label")).to_have_text("no label")
        expect(page.locator("#confidence")).to_have_text(f"0 of {len(MARKS)} labels over 100%")


def test_import_with_data_measures_accuracy_multi_and_f1(marks_export: Path, tmp_path: Path) -> None:
    """--data with a PASCAL-style CSV (path,labels): the manifest gets accuracy_multi and the macro F1."""
    data = tmp_path / "data"
    table = write_marks(data, n=60, size=32, seed=99)  # images the learner never saw
    out = tmp_path / "out"
    code, _, stderr = run_cli("import", str(marks_export), "--name", "marks", "--out", str(out),
                              "--data", str(table))  # fmt: skip
    assert code == 0, stderr
    metrics = read_manifest(out / "marks.pkl").metrics
    assert metrics is not None
    assert metrics.f1 is not None
    assert metrics.accuracy >= 0.85
    assert metrics.f1 >= 0.7
