"""Segmentation learners (issue 22): a notebook-style export (MaskBlock(codes), CrossEntropyLossFlat(axis=1))
imported, recognised and served over real HTTP by both backends, with learn.predict's mask exactly at the model's
input size and mapped back to the uploaded image's size through the learner's resize."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from app.core.masks import ANSWER_BYTES_PER_PIXEL, LEGEND_ROW, PALETTE, ids_of, png_of, to_image
from tests.conftest import run_cli
from tests.live_server import LiveServer, live_server
from tests.segmentation import CODES, exports, png, scene, write_scenes  # noqa: F401  (exports: a fixture)
from tests.test_demo_page import demo_page, playwright_or_skip
from training.manifest import SEGMENTATION, read_manifest


@pytest.fixture(scope="module")
def models(exports: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:  # noqa: F811
    """Each export imported as a notebook user would (and exported to ONNX): seg_squish, seg_crop, seg_pad."""
    out = tmp_path_factory.mktemp("models")
    for method, export in exports.items():
        name = f"seg_{method}"
        code, stdout, stderr = run_cli("import", str(export), "--name", name, "--out", str(out), "--onnx")
        assert code == 0, stderr
        assert f"as {name}: {SEGMENTATION}" in stdout
    return out


def test_the_manifest_records_the_codes(models: Path) -> None:
    for method in ("squish", "crop", "pad"):
        manifest = read_manifest(models / f"seg_{method}.pkl")
        assert (manifest.kind, manifest.classes, manifest.threshold) == (SEGMENTATION, CODES, None)
        assert (manifest.input_size, manifest.preprocessing.resize_method) == (32, method)
        assert manifest.onnx is not None
        assert (manifest.onnx.activation, manifest.onnx.output.shape) == ("softmax", [-1, 3, 32, 32])


def test_a_mask_target_with_a_loss_over_another_axis_is_refused(
    exports: dict[str, Path],  # noqa: F811
    tmp_path: Path,
) -> None:
    from fastai.learner import load_learner
    from fastai.losses import CrossEntropyLossFlat

    learn = load_learner(exports["squish"])
    learn.loss_func = CrossEntropyLossFlat()  # axis -1: not a per-pixel loss over the codes
    learn.export(tmp_path / "wrong.pkl")
    code, _, stderr = run_cli(
        "import", str(tmp_path / "wrong.pkl"), "--name", "wrong", "--out", str(tmp_path / "m")
    )
    assert code != 0
    assert "a mask target (MaskBlock) with the loss CrossEntropyLossFlat over axis -1" in stderr
    assert "CrossEntropyLossFlat(axis=1)" in stderr


@pytest.fixture(scope="module", params=["fastai", "onnx"])
def server(
    request: pytest.FixtureRequest, models: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    log = tmp_path_factory.mktemp("log") / "server.log"
    with live_server(models, log, BACKEND=request.param) as live:
        yield live


def post(server: LiveServer, model: str, data: bytes, query: str = "", **headers: str) -> httpx.Response:
    return httpx.post(
        f"{server.base}/models/{model}/predict{query}",
        content=data,
        headers={"Content-Type": "image/png", **headers},
    )


def mask_of(body: dict[str, Any]) -> np.ndarray:
    return ids_of(base64.b64decode(body["mask"]))


def test_the_mask_is_learn_predicts_at_the_input_size_exactly(server: LiveServer, models: Path) -> None:
    """32x32 uploads (the model's input size, so no mapping): every pixel is learn.predict's decoded TensorMask."""
    from fastai.learner import load_learner

    rng = np.random.default_rng(7)
    for method in ("squish", "crop", "pad"):
        learn = load_learner(models / f"seg_{method}.pkl")
        accuracy = []
        for _ in range(4):
            image, truth = scene(rng)
            r = post(server, f"seg_{method}", png(image))
            assert r.status_code == 200, r.text
            body = r.json()
            assert (body["kind"], body["codes"], body["width"], body["height"]) == (
                SEGMENTATION,
                CODES,
                32,
                32,
            )
            with learn.no_bar():
                expected = learn.predict(png(image))[0].numpy()
            served = mask_of(body)
            assert served.dtype == np.uint8
            assert np.array_equal(served, expected), (method, int((served != expected).sum()))
            shares = np.bincount(served.ravel(), minlength=3) / served.size
            assert [body["shares"][c] for c in CODES] == pytest.approx(shares.tolist())
            accuracy.append((served == truth).mean())
        assert np.mean(accuracy) > 0.9, accuracy  # it learnt the shapes: the parity is not a trivial one


@pytest.mark.parametrize("method", ["squish", "crop", "pad"])
def test_a_non_square_upload_gets_its_own_sized_mask(server: LiveServer, models: Path, method: str) -> None:
    """A 60 x 40 upload: the mask is 60 x 40, equal to learn.predict's mapped back through the resize, and the
    square and the disc land where they are in the upload (within the part a crop lets the model see)."""
    from fastai.learner import load_learner

    learn = load_learner(models / f"seg_{method}.pkl")
    image, truth = scene(np.random.default_rng(3), 60, 40, square=(14, 10, 12), disc=(40, 22, 7))
    r = post(server, f"seg_{method}", png(image))
    assert r.status_code == 200, r.text
    body = r.json()
    served = mask_of(body)
    assert served.shape == (40, 60)
    assert (body["width"], body["height"]) == (60, 40)
    with learn.no_bar():
        predicted = learn.predict(png(image))[0].numpy().astype(np.uint8)
    assert np.array_equal(served, to_image(predicted, method, 32, 32, 60, 40))
    assert served[16, 20] == 1  # the square's centre
    assert served[22, 40] == 2  # the disc's centre
    seen = slice(10, 50) if method == "crop" else slice(0, 60)  # crop: the centred 40 x 40 square
    assert (served[:, seen] == truth[:, seen]).mean() > 0.85


def test_png_answers_and_the_overlay(server: LiveServer) -> None:
    image, _ = scene(np.random.default_rng(5), 50, 30)
    data = png(image)
    body = post(server, "seg_pad", data).json()
    r = post(server, "seg_pad", data, Accept="image/png")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "image/png"
    assert r.headers["x-model-name"] == "seg_pad"
    assert np.array_equal(ids_of(r.content), mask_of(body))
    with Image.open(io.BytesIO(r.content)) as mask:
        assert (mask.mode, mask.size) == ("L", (50, 30))

    r = post(server, "seg_pad", data, "?overlay=true")
    assert r.status_code == 200, r.text
    drawn = r.json()
    assert (
        drawn["legend"] == body["legend"] == {"background": "#000000", "square": "#e6194b", "disc": "#3cb44b"}
    )
    assert "overlay" not in body
    assert np.array_equal(mask_of(drawn), mask_of(body))
    r = post(server, "seg_pad", data, "?overlay=true", Accept="image/png")
    assert r.content == base64.b64decode(drawn["overlay"])
    with Image.open(io.BytesIO(r.content)) as overlay:
        assert overlay.size == (120, 30 + LEGEND_ROW * 3 + 4)  # at least 120 wide, for the legend's names
        pixels = np.asarray(overlay.convert("RGB"))
    ids = mask_of(body)
    y, x = np.argwhere(ids == 1)[0]
    colour = PALETTE[1].astype(int)
    assert (
        np.abs(pixels[y, x].astype(int) - (np.asarray(image)[y, x].astype(int) + colour + 1) // 2).max() <= 1
    )


def test_batches_top_k_and_threshold(server: LiveServer) -> None:
    rng = np.random.default_rng(6)
    files = [("files", (f"s{i}.png", png(scene(rng, 32 + 8 * i, 32)[0]), "image/png")) for i in range(3)]
    r = httpx.post(f"{server.base}/models/seg_squish/predict/batch", files=files)
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert [(x["filename"], x["kind"], x["width"]) for x in results] == [
        ("s0.png", SEGMENTATION, 32), ("s1.png", SEGMENTATION, 40), ("s2.png", SEGMENTATION, 48),
    ]  # fmt: skip
    data = png(scene(rng)[0])
    refused = post(
        server, "seg_squish", data, "?top_k=1"
    )  # classifiers only, as for regression and key points
    assert refused.status_code == 422
    assert refused.json()["code"] == "top_k_not_applicable"
    r = post(server, "seg_squish", data, "?threshold=0.5")
    assert r.status_code == 400
    assert r.json()["detail"] == "threshold applies to multi-label models; seg_squish is a segmentation"


def test_the_mapping_inverts_each_resize() -> None:
    """A mask with one marked input pixel at (24, 8) over a 64 x 32 image: where the resize put that image pixel."""
    ids = np.zeros((32, 32), np.uint8)
    ids[8, 24] = 1
    cases = {  # method -> the image pixels (x range, y range) that came from input pixel (24, 8)
        "squish": ((48, 50), (8, 9)),  # x stretched by 2
        "crop": ((40, 41), (8, 9)),  # the centred 32 x 32 square, from x = 16
        "pad": ((48, 50), (0, 2)),  # padded to 64 x 64 (16 rows above), then halved
    }
    for method, ((x0, x1), (y0, y1)) in cases.items():
        full = to_image(ids, method, 32, 32, 64, 32)
        assert full.shape == (32, 64)
        assert full.dtype == np.uint8
        marked = np.argwhere(full == 1)
        assert (marked[:, 1].min(), marked[:, 1].max() + 1, marked[:, 0].min(), marked[:, 0].max() + 1) == (
            x0, x1, y0, y1,
        ), method  # fmt: skip
    edge = np.zeros((32, 32), np.uint8)
    edge[:, 0] = 2
    assert (
        to_image(edge, "crop", 32, 32, 64, 32)[:, :17] == 2
    ).all()  # left of the crop: the nearest seen code


def test_a_large_uploads_mask_counts_in_the_memory_budget(models: Path, tmp_path: Path) -> None:
    """A 3000 x 3000 upload decodes in 36 MB, but its mask, PNG and answer need 6 bytes a pixel more: beyond a 48 MiB
    budget, it is refused (413) before it is decoded; a 1500 x 1500 one is answered."""
    big = png(Image.new("RGB", (3000, 3000), (20, 20, 20)))
    settings = {"MAX_INFLIGHT_BYTES": str(48 * 2**20), "MAX_REQUEST_BYTES": str(2**20),
                "MAX_UPLOAD_BYTES": str(2**20)}  # fmt: skip
    with live_server(models / "seg_squish.pkl", tmp_path / "server.log", **settings) as live:
        r = post(live, "seg_squish", big)
        assert r.status_code == 413, r.text
        assert r.json()["code"] == "over_memory_budget"
        needed = float(r.json()["detail"].split(" needs ")[1].split(" MiB")[0])
        assert (
            needed > ANSWER_BYTES_PER_PIXEL * 3000 * 3000 / 2**20 + 30
        )  # the mask and the decoding (34 MiB)
        r = post(live, "seg_squish", png(Image.new("RGB", (1500, 1500), (20, 20, 20))))
        assert r.status_code == 200, r.text
        assert (r.json()["width"], r.json()["height"]) == (1500, 1500)
        assert r.json()["shares"]["background"] == 1.0


def test_v2_answers_the_mask_and_the_shares(server: LiveServer) -> None:
    meta = httpx.get(f"{server.base}/v2/models/seg_crop").json()
    assert [(o["name"], o["datatype"], o["shape"]) for o in meta["outputs"]] == [
        ("mask", "UINT8", [-1, -1, -1]), ("shares", "FP32", [-1, 3]),
    ]  # fmt: skip
    rng = np.random.default_rng(8)
    images = [png(scene(rng, 40, 30)[0]) for _ in range(2)]
    data = [base64.b64encode(i).decode() for i in images]
    body = {"inputs": [{"name": "image", "shape": [2], "datatype": "BYTES", "data": data}]}
    r = httpx.post(f"{server.base}/v2/models/seg_crop/infer", json=body)
    assert r.status_code == 200, r.text
    mask, shares = r.json()["outputs"]
    assert (mask["name"], mask["datatype"], mask["shape"]) == ("mask", "UINT8", [2, 30, 40])
    assert (shares["name"], shares["shape"]) == ("shares", [2, 3])
    for i, image in enumerate(images):
        answer = post(server, "seg_crop", image).json()
        assert np.array_equal(np.asarray(mask["data"]).reshape(2, 30, 40)[i], mask_of(answer))
        assert shares["data"][3 * i : 3 * i + 3] == pytest.approx([answer["shares"][c] for c in CODES])
    other = base64.b64encode(png(scene(rng, 32, 32)[0])).decode()
    body["inputs"][0]["data"] = [data[0], other]
    r = httpx.post(f"{server.base}/v2/models/seg_crop/infer", json=body)
    assert r.status_code == 400
    assert "different sizes (32x32, 40x30)" in r.json()["error"]


def test_the_command_lines_write_one_mask_per_input(models: Path, tmp_path: Path) -> None:
    import json
    import os
    import subprocess
    import sys

    import pyarrow.parquet as pq

    rng = np.random.default_rng(9)
    folder = tmp_path / "photos"
    (folder / "more").mkdir(parents=True)
    for name, width in (("a.png", 40), ("more/a.png", 56)):  # one name in two folders: two mask files
        (folder / name).write_bytes(png(scene(rng, width, 32)[0]))
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    root = str(Path(__file__).resolve().parent.parent)  # this checkout's `app`, run from another folder
    env = {**os.environ, "LEARNSERVE_MODEL_PATH": str(models / "seg_pad.pkl"), "PYTHONPATH": root}

    def cli(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "app", *argv], capture_output=True, text=True, env=env,
                              check=False, cwd=tmp_path)  # fmt: skip

    out = tmp_path / "scores" / "seg.parquet"
    run = cli("score", str(folder), "--out", str(out))
    assert run.returncode == 0, run.stderr
    table = pq.read_table(out)
    assert table.column_names == [
        "path", "share_background", "share_square", "share_disc", "mask", "error", "detail",
    ]  # fmt: skip
    rows = {str(Path(r["path"]).relative_to(folder)): r for r in table.to_pylist()}
    assert rows["broken.png"]["error"] == "unsupported_media_type"
    assert rows["broken.png"]["mask"] is None
    for name, width in (("a.png", 40), ("more/a.png", 56)):
        mask = Path(rows[name]["mask"])
        assert mask.parent == tmp_path / "scores" / "seg.masks"
        assert mask.name.startswith("a-")
        ids = ids_of(mask.read_bytes())
        assert ids.shape == (32, width)
        shares = np.bincount(ids.ravel(), minlength=3) / ids.size
        assert [rows[name][f"share_{c}"] for c in CODES] == pytest.approx(shares.tolist())
    assert rows["a.png"]["mask"] != rows["more/a.png"]["mask"]

    run = cli("predict", str(folder / "a.png"), "--format", "json")
    assert run.returncode == 0, run.stderr
    [answer] = json.loads(run.stdout)
    assert (tmp_path / answer["mask"]).read_bytes() == Path(rows["a.png"]["mask"]).read_bytes()
    assert Path(answer["mask"]).parent == Path("masks")  # ./masks by default
    assert answer["shares"] == pytest.approx({c: rows["a.png"][f"share_{c}"] for c in CODES}, abs=1e-6)
    run = cli("predict", str(folder / "more"), "--masks", str(tmp_path / "elsewhere"))
    assert run.returncode == 0, run.stderr
    assert "share_square" in run.stdout
    assert f"-> {tmp_path / 'elsewhere'}" in run.stdout


@pytest.mark.slow
def test_the_demo_page_draws_the_mask_with_a_legend(models: Path, tmp_path: Path) -> None:
    sync_api = playwright_or_skip()
    expect = sync_api.expect
    image, _ = scene(np.random.default_rng(4), 60, 40, square=(8, 8, 12), disc=(44, 24, 7))
    (tmp_path / "scene.png").write_bytes(png(image))
    with live_server(models / "seg_squish.pkl", tmp_path / "server.log") as live:
        want = post(live, "seg_squish", png(image)).json()
        with demo_page(sync_api, live.base) as page:
            expect(page.locator("#model-name")).to_have_text("seg_squish")
            page.set_input_files("#file", str(tmp_path / "scene.png"))
            expect(page.locator("#bars .bar-name")).to_have_text(CODES)
            expect(page.locator("#bars .bar-value").first).to_have_text(
                f"{want['shares']['background'] * 100:.1f}%"
            )
            colours = page.locator("#bars .swatch").evaluate_all("s => s.map(e => e.style.backgroundColor)")
            assert colours == ["rgb(0, 0, 0)", "rgb(230, 25, 75)", "rgb(60, 180, 75)"]
            layer = page.locator("#mask-layer")
            expect(layer).to_be_visible()
            assert (layer.get_attribute("width"), layer.get_attribute("height")) == ("60", "40")
            # the canvas holds the mask in the legend's colours: the square's centre is code 1's, the disc's code 2's
            pixel = "([x, y]) => Array.from(document.getElementById('mask-layer').getContext('2d')" \
                ".getImageData(x, y, 1, 1).data)"  # fmt: skip
            for at, colour in (([14, 14], [230, 25, 75, 128]), ([44, 24], [60, 180, 75, 128])):
                got = page.evaluate(pixel, at)  # the canvas keeps colours premultiplied by alpha: 230 -> 229
                assert np.abs(np.subtract(got, colour)).max() <= 2, (at, got)
            assert page.locator("#why").is_hidden()  # only classifiers are explained


def test_import_with_data_measures_pixel_accuracy_and_iou(exports: dict[str, Path], tmp_path: Path) -> None:  # noqa: F811
    """--data images/ + masks/ (the CamVid layout): the share of right pixels and each code's IoU, equal to what
    learn.predict's masks give."""
    from fastai.learner import load_learner

    data = write_scenes(tmp_path / "valid", n=12, seed=1)
    code, stdout, stderr = run_cli("import", str(exports["pad"]), "--name", "measured", "--out",
                                   str(tmp_path / "models"), "--data", str(data))  # fmt: skip
    assert code == 0, stderr
    m = read_manifest(tmp_path / "models" / "measured.pkl")
    assert m.metrics is not None
    assert m.dataset is not None
    learn = load_learner(exports["pad"])
    right, total = 0, 0
    with learn.no_bar():
        for image in sorted((data / "images").iterdir()):
            truth = np.asarray(Image.open(data / "masks" / image.name))
            right += int((learn.predict(image)[0].numpy() == truth).sum())
            total += truth.size
    assert m.metrics.accuracy == pytest.approx(right / total, abs=1e-6)
    assert m.metrics.accuracy > 0.9
    assert m.metrics.iou is not None
    assert set(m.metrics.iou) == set(CODES)
    assert all(0.5 < v <= 1 for v in m.metrics.iou.values()), m.metrics.iou
    assert (m.dataset.valid_size, sum(m.dataset.counts.values())) == (12, 12 * 32 * 32)
    assert f"accuracy {m.metrics.accuracy:.4f} on 12 images" in stdout


def test_past_256_codes_masks_are_16_bit() -> None:
    from app.core.prediction import decode

    rng = np.random.default_rng(0)
    probs = rng.random((2, 300, 4, 5)).astype(np.float32)
    masks = decode(SEGMENTATION, probs, [str(i) for i in range(300)], 4)
    assert [m.ids.dtype for m in masks] == [np.uint16, np.uint16]
    assert np.array_equal(masks[0].ids, probs[0].argmax(axis=0))
    assert np.array_equal(ids_of(png_of(masks[1].ids)), masks[1].ids)
    with Image.open(io.BytesIO(png_of(masks[1].ids))) as image:
        assert image.size == (5, 4)
    small = decode(SEGMENTATION, probs[:, :3], CODES, 4)[0]
    assert small.ids.dtype == np.uint8
    assert sum(small.shares(3)) == pytest.approx(1.0)


def test_openapi_lists_the_segmentation_answer(server: LiveServer) -> None:
    schema = httpx.get(f"{server.base}/openapi.json").json()
    answer = schema["components"]["schemas"]["SegmentationAnswer"]
    assert answer["examples"][0]["kind"] == SEGMENTATION
    assert {"codes", "width", "height", "shares", "legend", "mask"} <= set(answer["required"])
    ok = schema["paths"]["/models/{name}/predict"]["post"]["responses"]["200"]["content"]
    assert set(ok) == {"application/json", "image/png"}
    mapping = ok["application/json"]["schema"]["discriminator"]["mapping"]
    assert mapping[SEGMENTATION].endswith("/SegmentationAnswer")
    assert "overlay" in {p["name"] for p in schema["paths"]["/predict"]["post"]["parameters"]}
