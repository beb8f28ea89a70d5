"""`python -m training import`: real fastai 2.7.19 and 2.8.12 exports (tests/fixtures/), brought in and served over
real HTTP with the answers `learn.predict` gave under the fastai that wrote them."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from tests.conftest import run_cli
from tests.live_server import live_server
from training.manifest import read_manifest, sha256_file

FIXTURES = Path(__file__).resolve().parent / "fixtures"
CODE = FIXTURES / "notebook_code.py"
IMAGES = sorted((FIXTURES / "images").glob("*.png"))
# served name -> (fixture folder, export, extra import options)
EXPORTS = {
    "is_cat27": ("fastai27", "is_cat", ()),
    "pets27": ("fastai27", "pets_regex", ()),
    "grayish27": ("fastai27", "grayish", ("--code", str(CODE))),
    "is_cat28": ("fastai28", "is_cat", ("--onnx",)),
    "pets28": ("fastai28", "pets_regex", ("--onnx",)),
    "grayish28": ("fastai28", "grayish", ()),
    # written by Python 3.12: the embedded code is replaced (fastai's own functions, --code for the notebook's)
    "is_cat312": ("fastai28-py312", "is_cat", ()),
    "pets312": ("fastai28-py312", "pets_regex", ("--onnx",)),
    "grayish312": ("fastai28-py312", "grayish", ("--code", str(CODE))),
}
ONNX_SERVED = "is_cat28=onnx,pets28=onnx,pets312=onnx"


def recorded(name: str) -> dict[str, dict[str, object]]:
    folder, export, _ = EXPORTS[name]
    answers: dict[str, dict[str, object]] = json.loads((FIXTURES / folder / "answers.json").read_text())[
        "models"
    ][export]["answers"]
    return answers


@pytest.fixture(scope="module")
def imported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """Every fixture imported into one models folder; name -> the command's stderr (its warnings)."""
    out = tmp_path_factory.mktemp("imported")
    warnings = {}
    for name, (folder, export, extra) in EXPORTS.items():
        code, stdout, stderr = run_cli("import", str(FIXTURES / folder / f"{export}.pkl"), "--name", name,
                                       "--out", str(out), *extra)  # fmt: skip
        assert code == 0, stderr
        assert f"as {name}: single-label classifier" in stdout
        warnings[name] = stderr
    return out, warnings


def test_every_fixture_is_served_over_http_with_the_answers_of_the_fastai_that_wrote_it(
    imported: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    folder, _ = imported
    log = tmp_path / "server.log"
    with live_server(folder, log, TOP_K="10", MODEL_BACKENDS=ONNX_SERVED) as server:
        for name in EXPORTS:
            manifest = read_manifest(folder / f"{name}.pkl")
            for image in IMAGES:
                r = httpx.post(f"{server.base}/models/{name}/predict", content=image.read_bytes(),
                               headers={"Content-Type": "image/png"})  # fmt: skip
                assert r.status_code == 200, r.text
                want = recorded(name)[image.name]
                got = {t["label"]: t["probability"] for t in r.json()["top"]}
                assert r.json()["label"] == want["label"], (name, image.name)
                expected = dict(zip(manifest.classes, want["probs"], strict=True))  # type: ignore[call-overload]
                assert got == pytest.approx(expected, abs=1e-4), (name, image.name)
                assert (
                    r.headers["x-model-version"]
                    == manifest.export_id
                    == sha256_file(folder / f"{name}.pkl")[:12]
                )
            backend = httpx.get(f"{server.base}/models/{name}").json()
            assert backend["runtime"]["backend"] == ("onnx" if name in ONNX_SERVED else "fastai"), backend
            assert backend["model"]["source"] == "imported"


def test_models_says_imported_and_not_validated(
    imported: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    folder, _ = imported
    with live_server(folder / "pets27.pkl", tmp_path / "server.log") as server:
        [model] = httpx.get(f"{server.base}/models").json()["models"]
    assert (model["name"], model["source"], model["validated"], model["accuracy"]) == (
        "pets27", "imported", False, None,
    )  # fmt: skip


def test_the_manifest_records_what_the_learner_holds(imported: tuple[Path, dict[str, str]]) -> None:
    folder, _ = imported
    m = read_manifest(folder / "pets27.pkl")
    assert (m.source, m.kind, m.classes) == (
        "imported",
        "single-label classifier",
        ["Abyssinian", "Bengal", "beagle", "pug"],
    )
    assert (m.input_size, m.preprocessing.resize_method, m.preprocessing.size) == (16, "squish", 16)
    assert m.preprocessing.normalize is not None
    assert m.preprocessing.normalize.mean == pytest.approx([0.485, 0.456, 0.406])
    assert m.metrics is None
    assert m.dataset is None
    assert m.imported is not None
    assert m.imported.written_by == {"fastai": "fastai<2.8"}
    assert m.imported.converted
    assert m.imported.sha256 == sha256_file(FIXTURES / "fastai27" / "pets_regex.pkl")
    assert m.imported.max_abs_diff <= 1e-5
    assert m.versions["fastai"] == "2.8.12"
    assert read_manifest(folder / "is_cat27.pkl").preprocessing.resize_method == "crop"
    grayish = read_manifest(folder / "grayish27.pkl").imported
    assert grayish is not None
    assert grayish.code is not None
    assert (grayish.code.file, grayish.code.sha256, grayish.code.provided) == (
        "notebook_code.py", sha256_file(CODE), ["Grayish"],
    )  # fmt: skip
    modern = read_manifest(folder / "pets28.pkl")
    assert modern.imported is not None
    assert modern.imported.written_by == {"fastai": "fastai>=2.8.1"}
    assert not modern.imported.converted
    assert modern.onnx is not None
    assert modern.onnx.file == "pets28.onnx"


def test_a_missing_label_function_only_warns(imported: tuple[Path, dict[str, str]]) -> None:
    folder, warnings = imported
    assert "__main__.is_cat" in warnings["is_cat27"]
    assert "only training needs it" in warnings["is_cat27"]
    manifest = read_manifest(folder / "is_cat27.pkl")
    assert manifest.imported is not None
    assert manifest.imported.missing_names == ["is_cat"]
    assert warnings["pets27"] == ""
    assert "__main__.is_cat " in warnings["is_cat312"]


def test_an_export_from_another_python_has_its_embedded_code_replaced(
    imported: tuple[Path, dict[str, str]],
) -> None:
    folder, _ = imported
    info = read_manifest(folder / "pets312.pkl").imported
    assert info is not None
    assert info.written_by["python"] == "another version than this one (its embedded code replaced)"
    assert "python" not in (read_manifest(folder / "pets28.pkl").imported or info).written_by


def test_validation_data_gives_the_figure(tmp_path: Path) -> None:
    """Labels equal to what learn.predict answered under fastai 2.7, but one: accuracy 5 of 6, measured on the
    imported learner in a fresh process."""
    answers = recorded("pets27")
    rows = [(str(image), str(answers[image.name]["label"])) for image in IMAGES]
    rows[0] = (rows[0][0], next(c for c in ("Abyssinian", "pug") if c != rows[0][1]))
    data = tmp_path / "labels.csv"
    data.write_text("path,label\n" + "".join(f"{p},{label}\n" for p, label in rows))
    code, stdout, stderr = run_cli("import", str(FIXTURES / "fastai27" / "pets_regex.pkl"), "--name", "pets",
                                   "--out", str(tmp_path / "models"), "--data", str(data))  # fmt: skip
    assert code == 0, stderr
    m = read_manifest(tmp_path / "models" / "pets.pkl")
    assert m.metrics is not None
    assert m.dataset is not None
    assert m.metrics.accuracy == pytest.approx(5 / 6)
    assert m.dataset.valid_size == 6
    assert "accuracy 0.8333 on 6 images" in stdout


def test_summary_describes_an_imported_model(imported: tuple[Path, dict[str, str]]) -> None:
    folder, _ = imported
    code, stdout, stderr = run_cli("summary", str(folder / "pets27.pkl"))
    assert code == 0, stderr
    first, second = stdout.splitlines()[:2]
    assert first.startswith("pets27: Sequential, 4 classes, 16 px, imported ")
    assert second == "not validated (import it again with --data to measure its accuracy)"
