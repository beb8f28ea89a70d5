"""Why this answer? (issue 24): Grad-CAM maps checked against where the evidence is, served over real HTTP.

The honest test: a tiny learner is trained here on images of noise with ONE coloured mark (training/marks.py's
marks, one per image, anywhere), whose class is the mark; on held-out images the peak of the map for the true class
must fall inside the mark's box, and the map for a wrong class must not peak there.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw
from pydantic import TypeAdapter

from app.api.routes.explain import ExplainResponse
from app.core.explain import grad_cam
from app.core.explanation import ExplainUnsupported, UnknownTarget
from app.core.overlay import upsample
from tests.conftest import run_cli
from tests.live_server import LiveServer, live_server
from tests.test_demo_page import demo_page, playwright_or_skip
from training.marks import MARKS, draw_mark

SIZE = 32
SIDE = 10
Box = tuple[int, int, int, int]


def marked(rng: np.random.Generator, mark: str, size: int = SIZE) -> tuple[Image.Image, Box]:
    """Gray noise with one mark anywhere; the mark's box (x0, y0, x1, y1, inclusive)."""
    pixels = rng.normal(128, 30, (size, size, 3)).clip(0, 255).astype(np.uint8)
    image = Image.fromarray(pixels)
    x0, y0 = (int(v) for v in rng.integers(0, size - SIDE + 1, 2))
    box = (x0, y0, x0 + SIDE - 1, y0 + SIDE - 1)
    draw_mark(ImageDraw.Draw(image), mark, box)
    return image, box


def held_out(n: int = 40) -> list[tuple[Image.Image, str, Box]]:
    rng = np.random.default_rng(2024)
    images = []
    for mark in MARKS:
        for _ in range(n // len(MARKS)):
            image, box = marked(rng, mark)
            images.append((image, mark, box))
    return images


def png(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


@pytest.fixture(scope="module")
def marks_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """60 images a mark, in a folder per class."""
    root = tmp_path_factory.mktemp("single_marks") / "marks"
    rng = np.random.default_rng(0)
    for mark in MARKS:
        (root / mark).mkdir(parents=True)
        for i in range(60):
            marked(rng, mark)[0].save(root / mark / f"{mark}_{i:02d}.png")
    return root


@pytest.fixture(scope="module")
def model(marks_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small CNN trained with the project's `train` (fastai) on the marks."""
    root = marks_data
    out = tmp_path_factory.mktemp("models") / "marks.pkl"
    code, _, stderr = run_cli(
        "train", str(root), "--out", str(out), "--arch", "cnn", "--size", str(SIZE), "--epochs", "4",
        "--bs", "16", "--lr", "1e-2", "--no-verify", "--reports", str(out.parent / "reports"),
    )  # fmt: skip
    assert code == 0, stderr
    return out


@pytest.fixture(scope="module")
def backend(model: Path):  # type: ignore[no-untyped-def]
    from app.core.backends.fastai import FastaiBackend
    from app.core.verify import verify_model_file

    return FastaiBackend.load(verify_model_file(model), device="cpu")


def peak(cam: np.ndarray, size: int = SIZE) -> tuple[int, int]:
    full = upsample(cam, "squish", size, size, size)
    y, x = np.unravel_index(int(full.argmax()), full.shape)
    return int(x), int(y)


def inside(point: tuple[int, int], box: Box) -> bool:
    return box[0] <= point[0] <= box[2] and box[1] <= point[1] <= box[3]


def test_the_map_of_the_true_class_peaks_inside_its_mark_and_a_wrong_class_does_not(backend) -> None:  # type: ignore[no-untyped-def]
    from app.core.explain import explain_prepared

    images = held_out()
    hits = wrong_hits = correct = blank = 0
    for image, mark, box in images:
        prepared = backend.prepare(image)
        right = explain_prepared(backend, prepared, mark)
        correct += right.prediction.label == mark
        hits += inside(peak(right.map), box)
        wrong = explain_prepared(backend, prepared, next(m for m in MARKS if m != mark))
        wrong_hits += wrong.map.max() > 0 and inside(peak(wrong.map), box)
        blank += wrong.map.max() == 0
    n = len(images)
    print(
        f"accuracy {correct}/{n}; true-class peak in the mark {hits}/{n}; wrong-class peak in it {wrong_hits}/{n} (all zero: {blank})"
    )
    assert correct >= 0.9 * n  # the learner learnt the marks: its maps are worth checking
    assert hits >= 0.9 * n
    assert wrong_hits <= 0.2 * n


def test_a_model_without_a_convolution_is_refused_and_an_unknown_target_named() -> None:
    flat = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 4 * 4, 2))
    with pytest.raises(ExplainUnsupported, match="no convolutional layer"):
        grad_cam(flat, torch.zeros(1, 3, 4, 4), torch.sigmoid, ["a", "b"], None)
    conv = torch.nn.Sequential(
        torch.nn.Conv2d(3, 2, 3, padding=1), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten()
    )
    with pytest.raises(UnknownTarget, match="'c' is not one of"):
        grad_cam(conv, torch.rand(1, 3, 4, 4), torch.sigmoid, ["a", "b"], "c")
    assert grad_cam(conv, torch.rand(1, 3, 4, 4), torch.sigmoid, ["a", "b"], "b").map.shape == (4, 4)


@pytest.mark.parametrize(
    ("method", "width", "height", "seen"),
    [("squish", 40, 20, (0, 0, 40, 20)), ("crop", 40, 20, (10, 0, 30, 20)), ("pad", 20, 40, (0, 0, 20, 40))],
)
def test_the_overlay_map_sits_where_the_model_looked(method: str, width: int, height: int, seen: Box) -> None:
    full = upsample(np.ones((4, 4), np.float32), method, SIZE, width, height)
    assert full.shape == (height, width)
    x0, y0, x1, y1 = seen
    assert np.all(full[y0:y1, x0:x1] == 1.0)
    assert full.sum() == (x1 - x0) * (y1 - y0)  # nothing outside what the model saw (crop: the cut sides)


@pytest.fixture(scope="module")
def served(model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with live_server(model, tmp_path_factory.mktemp("log") / "server.log") as live:
        yield live


def test_over_http_the_json_has_the_prediction_the_map_and_an_overlay_of_the_uploads_size(
    served: LiveServer,
) -> None:
    image, _ = marked(np.random.default_rng(7), "disc", size=SIZE)
    big = image.resize((64, 48))
    answer = httpx.post(
        f"{served.base}/explain", content=png(big), headers={"Content-Type": "image/png"}, timeout=30
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    TypeAdapter(ExplainResponse).validate_python(body)  # the answer is what the OpenAPI document says
    predicted = httpx.post(
        f"{served.base}/predict", content=png(big), headers={"Content-Type": "image/png"}
    ).json()
    assert (body["label"], body["probability"]) == (
        predicted["label"],
        pytest.approx(predicted["probability"], abs=1e-6),
    )
    assert body["target"] == body["label"] == answer.headers["X-Explain-Target"]
    grid = body["map"]
    assert (grid["width"], grid["height"]) == (8, 8)  # 32 px through two 2x2 poolings
    values = np.array(grid["values"])
    assert values.shape == (8, 8)
    assert values.min() >= 0
    assert values.max() == pytest.approx(1.0)
    assert body["overlay"].startswith("data:image/png;base64,")
    overlay = Image.open(io.BytesIO(base64.b64decode(body["overlay"].split(",", 1)[1])))
    assert overlay.format == "PNG"
    assert overlay.size == (64, 48)
    assert body["explained_with"] == "marks.pkl"


def test_over_http_accept_png_answers_the_overlay_for_the_target(served: LiveServer) -> None:
    image, _ = marked(np.random.default_rng(8), "bar")
    answer = httpx.post(
        f"{served.base}/models/marks/explain?target=cross", content=png(image),
        headers={"Content-Type": "image/png", "Accept": "image/png"}, timeout=30,
    )  # fmt: skip
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "image/png"
    assert answer.headers["X-Explain-Target"] == "cross"
    assert Image.open(io.BytesIO(answer.content)).size == (SIZE, SIZE)


def test_over_http_mistakes_are_4xx_json(served: LiveServer) -> None:
    image, _ = marked(np.random.default_rng(9), "bar")
    unknown = httpx.post(
        f"{served.base}/explain?target=cat", content=png(image), headers={"Content-Type": "image/png"}
    )
    assert unknown.status_code == 400
    assert unknown.json()["code"] == "unknown_target"
    assert "'cat'" in unknown.json()["detail"]
    missing = httpx.post(
        f"{served.base}/models/nope/explain", content=png(image), headers={"Content-Type": "image/png"}
    )
    assert (missing.status_code, missing.json()["code"]) == (404, "model_not_found")
    junk = httpx.post(
        f"{served.base}/explain", content=b"not an image", headers={"Content-Type": "image/png"}
    )
    assert junk.status_code in (415, 422)
    assert "code" in junk.json()
    metrics = httpx.get(f"{served.base}/metrics").text
    assert 'learnserve_explanations_total{model="marks"}' in metrics
    assert "learnserve_explain_seconds_count" in metrics


def test_past_the_limit_an_explanation_is_refused_at_once_and_the_running_one_is_charged(model: Path) -> None:
    """With the model thread held busy, one explanation is in progress (its graph and overlay charged to the budget);
    a second gets Overloaded (503 + Retry-After); once the thread is free, the first finishes and gives it all back."""
    import asyncio
    import threading

    from app.config import Settings
    from app.core.errors import Overloaded
    from app.core.explain_service import Explainer
    from app.core.overlay import overlay_bytes
    from app.core.repository import open_model

    image, _ = marked(np.random.default_rng(10), "square")

    async def scenario() -> None:
        async with open_model(Settings(model_path=model)) as unit:
            explainer = Explainer(max_explains=1)
            await explainer.explain(unit, png(image), None)  # measures the model's graph once
            graph = explainer._torch[unit].graph
            assert graph > 0
            release = threading.Event()
            unit.batcher.worker.submit(release.wait)  # the model thread is busy until released
            try:
                first = asyncio.create_task(explainer.explain(unit, png(image), None))
                for _ in range(2000):  # poll (no sleep as synchronisation): until the first holds its charge
                    if unit.budget.in_use:
                        break
                    await asyncio.sleep(0.005)
                assert explainer.running == 1
                assert unit.budget.in_use >= graph + overlay_bytes(SIZE, SIZE)
                with pytest.raises(Overloaded, match="LEARNSERVE_MAX_EXPLAINS"):
                    await explainer.explain(unit, png(image), None)
            finally:
                release.set()
            done = await asyncio.wait_for(first, 60)
            assert done.explanation.target == done.explanation.prediction.label
            assert unit.budget.in_use == 0
            assert explainer.running == 0

    asyncio.run(scenario())


def test_onnx_is_explained_with_the_pkl_beside_it_and_refused_without(model: Path, tmp_path: Path) -> None:
    import shutil

    from training.manifest import manifest_path
    from training.onnx_export import export_onnx

    both = tmp_path / "both"
    both.mkdir()
    for f in (model, manifest_path(model)):
        shutil.copy(f, both / f.name)
    export_onnx(both / model.name)
    alone = tmp_path / "alone"
    alone.mkdir()
    for name in ("marks.onnx", manifest_path(model).name):
        shutil.copy(both / name, alone / name)
    image, _ = marked(np.random.default_rng(11), "cross")
    with live_server(both / "marks.onnx", tmp_path / "both.log", BACKEND="onnx") as live:
        answer = httpx.post(
            f"{live.base}/explain", content=png(image), headers={"Content-Type": "image/png"}, timeout=60
        )
        assert answer.status_code == 200, answer.text
        assert answer.json()["explained_with"].startswith("marks.pkl (beside the served ONNX model")
    with live_server(alone / "marks.onnx", tmp_path / "alone.log", BACKEND="onnx") as live:
        refused = httpx.post(
            f"{live.base}/explain", content=png(image), headers={"Content-Type": "image/png"}
        )
        assert refused.status_code == 409
        assert refused.json()["code"] == "explain_unsupported"
        assert "no gradients" in refused.json()["detail"]

    from app.__main__ import main

    image.save(tmp_path / "one.png")
    code = main(["predict", "--model", str(alone / "marks.onnx"), "--backend", "onnx", "--explain",
                 str(tmp_path / "overlays"), str(tmp_path / "one.png")])  # fmt: skip
    assert code == 1  # classified, but not explained: the exit status says so, not only stderr
    assert not list((tmp_path / "overlays").iterdir())


def test_multi_label_maps_peak_inside_each_present_labels_mark(
    marks_export: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """training/marks.py's multi-label set (one to three marks, each in its own quadrant, boxes known): the map for
    each label shown peaks inside that label's mark; the map for a label not shown does not peak inside any mark.
    The learner is the notebook-style multi-label export that tests/test_multilabel.py serves (tests/conftest.py)."""
    from fastai.learner import load_learner

    from app.core.backends.fastai import FastaiBackend
    from app.core.explain import explain_prepared
    from training.marks import make_image

    learn = load_learner(marks_export)
    backend = FastaiBackend(learn, torch.device("cpu"), SIZE, "multi-label classifier", list(MARKS))
    rng = np.random.default_rng(4321)
    shown = shown_hits = absent = absent_hits = blank = 0
    for _ in range(30):
        image, marks, boxes = make_image(rng, SIZE)
        prepared = backend.prepare(image)
        for mark, box in zip(marks, boxes, strict=True):
            shown += 1
            shown_hits += inside(peak(explain_prepared(backend, prepared, mark).map), box)
        for other in (m for m in MARKS if m not in marks):
            cam = explain_prepared(backend, prepared, other).map
            absent += 1
            blank += cam.max() == 0
            absent_hits += cam.max() > 0 and any(inside(peak(cam), box) for box in boxes)
    print(
        f"multi-label: shown label's peak in its mark {shown_hits}/{shown}; absent label's peak in a mark {absent_hits}/{absent} (all zero: {blank})"
    )
    assert shown_hits >= 0.9 * shown
    assert absent_hits <= 0.2 * absent

    # Served (imported as a notebook export is): per label over real HTTP, with the multi-label answer's fields.
    models = tmp_path_factory.mktemp("multi_models")
    code, _, stderr = run_cli("import", str(marks_export), "--name", "marks", "--out", str(models))
    assert code == 0, stderr
    image, marks, _ = make_image(np.random.default_rng(99), SIZE)
    with live_server(models / "marks.pkl", models / "server.log") as live:
        for label in MARKS:
            answer = httpx.post(
                f"{live.base}/explain?target={label}", content=png(image), headers={"Content-Type": "image/png"},
                timeout=30,
            )  # fmt: skip
            assert answer.status_code == 200, answer.text
            body = answer.json()
            TypeAdapter(ExplainResponse).validate_python(body)
            assert body["kind"] == "multi-label classifier"
            assert body["target"] == label
            assert "labels" in body
            assert "threshold" in body
            if label in marks:  # a label shown has evidence somewhere
                assert np.array(body["map"]["values"]).max() > 0


@pytest.mark.slow
def test_the_demo_pages_why_toggle_shows_the_overlay_in_a_real_browser(
    served: LiveServer, tmp_path: Path
) -> None:
    sync_api = playwright_or_skip()
    image, _ = marked(np.random.default_rng(12), "disc")
    file = tmp_path / "disc.png"
    image.resize((96, 96)).save(file)
    expect = sync_api.expect
    with demo_page(sync_api, served.base, height=900) as page:
        expect(page.locator("#model-name")).to_have_text("marks")
        page.set_input_files("#file", str(file))
        expect(page.locator("#label")).to_have_text("disc")
        expect(page.locator("#why-figure")).to_be_hidden()  # off: no explanation asked for
        page.check("#why")  # on: the same image is explained
        expect(page.locator("#why-figure")).to_be_visible()
        expect(page.locator("#why-caption")).to_contain_text("“disc”")
        size = page.locator("#overlay").evaluate("(img) => [img.naturalWidth, img.naturalHeight]")
        assert size == [96, 96]
        page.screenshot(path=str(tmp_path / "why.png"), full_page=True)
        page.uncheck("#why")
        page.check("#why")
        expect(page.locator("#why-figure")).to_be_visible()


def test_the_predict_cli_writes_one_overlay_per_input(model: Path, tmp_path: Path) -> None:
    from app.__main__ import main

    inputs = tmp_path / "in"
    (inputs / "sub").mkdir(parents=True)
    rng = np.random.default_rng(13)
    marked(rng, "bar")[0].save(inputs / "a.png")
    marked(rng, "disc")[0].resize((50, 40)).save(inputs / "sub" / "a.png")  # the same name twice
    (inputs / "notes.txt").write_text("not an image")
    out = tmp_path / "overlays"
    code = main(["predict", "--model", str(model), "--keep-going", "--explain", str(out), str(inputs)])
    assert code == 1  # notes.txt is not an image: its row says so, and it gets no overlay
    written = sorted(p.name for p in out.iterdir())
    assert written == ["a-2.explain.png", "a.explain.png"]
    sizes = set()
    for name in written:
        with Image.open(out / name) as overlay:
            sizes.add(overlay.size)
    assert sizes == {(SIZE, SIZE), (50, 40)}


def test_a_fastai_resnet_is_explained_on_its_body_output() -> None:
    """vision_learner's model is Sequential(body, head): the map is the body's output grid (64 px -> 2 x 2)."""
    from fastai.vision.learner import create_vision_model
    from torchvision.models import resnet18

    model = create_vision_model(resnet18, n_out=3, pretrained=False).eval()
    explanation = grad_cam(
        model, torch.rand(1, 3, 64, 64), lambda x: torch.softmax(x, -1), ["a", "b", "c"], None
    )
    assert explanation.map.shape == (2, 2)
    assert explanation.target == explanation.prediction.label
    assert 0 <= explanation.map.min() <= explanation.map.max() <= 1
