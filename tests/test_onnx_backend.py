"""The ONNX Runtime backend behind the same unit: a server (and the predict CLI) that answers like the fastai
backend, in a process where torch and fastai cannot even be imported; per-model backends in one repository;
and learners whose validation pipeline the ONNX path cannot reproduce are refused, naming the transform."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import httpx
import pytest

from tests.backends import classify_files, fastai_backend
from tests.conftest import copy_model, run_cli
from tests.images import encode, many_formats, sample
from tests.live_server import live_server
from training.errors import TrainingError
from training.manifest import manifest_path, read_manifest, sha256_file, write_manifest
from training.onnx_export import export_onnx

pytestmark = pytest.mark.slow

# Imported by every Python process started with this folder on PYTHONPATH: torch, torchvision and fastai fail to
# import, as in the slim image where they are not installed.
BLOCKER = """
import importlib.abc, sys
class NoTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "torchvision", "fastai", "fastcore", "fasttransform"):
            raise ImportError(f"{name} is not installed here (the slim image has neither torch nor fastai)")
sys.meta_path.insert(0, NoTorch())
"""


@pytest.fixture(scope="module")
def exported(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("exported")
    model = copy_model(tiny_model, folder)
    export_onnx(model)
    return model


@pytest.fixture
def no_torch(tmp_path: Path) -> dict[str, str]:
    blocker = tmp_path / "blocker"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(BLOCKER)
    root = str(Path(__file__).resolve().parent.parent)
    return {"PYTHONPATH": os.pathsep.join([str(blocker), root])}


def test_export_records_the_graph_and_the_pipeline(exported: Path) -> None:
    manifest = read_manifest(exported)
    assert manifest.onnx is not None
    assert manifest.onnx.file == "colors.onnx"
    assert manifest.onnx.sha256 == sha256_file(exported.with_suffix(".onnx"))
    assert manifest.onnx.input.shape == [-1, 3, 32, 32]
    assert manifest.onnx.output.shape == [-1, 3]
    assert manifest.onnx.max_abs_diff <= 1e-4
    assert manifest.sha256 == sha256_file(exported)  # the .pkl's record is untouched
    pre = manifest.preprocessing
    assert (pre.resize_method, pre.size, pre.resample, pre.pad_mode, pre.scale) == (
        "squish",
        32,
        "bilinear",
        "reflection",
        255.0,
    )
    assert pre.normalize is not None
    assert len(pre.normalize.mean) == 3


def test_a_server_without_torch_or_fastai_answers_like_the_fastai_backend(
    exported: Path, tmp_path: Path, no_torch: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    files = list(many_formats().values())[:12]
    expected = classify_files(fastai_backend(exported), files)
    for key, value in no_torch.items():
        monkeypatch.setenv(key, value)
    with live_server(exported.with_suffix(".onnx"), tmp_path / "server.log", BACKEND="onnx") as server:
        for data, want in zip(files, expected, strict=True):
            r = httpx.post(f"{server.base}/predict", files={"file": ("x", data, "application/octet-stream")})
            assert r.status_code == 200, r.text
            assert r.json()["label"] == want.label
            assert r.json()["probability"] == pytest.approx(want.probability, abs=1e-4)
            assert (
                r.headers["x-model-version"] == sha256_file(exported)[:12]
            )  # one version: the .pkl's export id
        runtime = httpx.get(f"{server.base}/metadata").json()["runtime"]
        assert (runtime["backend"], runtime["device"]) == ("onnx", "cpu")
        assert httpx.get(f"{server.base}/v2/models/colors").json()["platform"] == "onnx"
        assert "ModuleNotFoundError" not in server.log_text()
        assert "ImportError" not in server.log_text()


def test_the_blocker_really_blocks(no_torch: dict[str, str]) -> None:
    run = subprocess.run(
        [sys.executable, "-c", "import torch"], env={**os.environ, **no_torch}, capture_output=True, text=True
    )
    assert run.returncode != 0
    assert "the slim image has neither torch nor fastai" in run.stderr


def test_predict_cli_with_the_onnx_backend(exported: Path, tmp_path: Path, no_torch: dict[str, str]) -> None:
    photo = tmp_path / "red.png"
    photo.write_bytes(encode(sample("red", seed=4), "PNG"))
    cmd = [sys.executable, "-m", "app", "predict", "--model", str(exported), "--backend", "onnx", str(photo),
           "--format", "json"]  # fmt: skip
    run = subprocess.run(cmd, env={**os.environ, **no_torch}, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    [row] = json.loads(run.stdout)
    assert row["label"] == "red"


def test_each_model_can_have_its_own_backend(exported: Path, second_model: Path, tmp_path: Path) -> None:
    repo = tmp_path / "models"
    for suffix in (".pkl", ".onnx", ".json"):
        (repo / f"colors{suffix}").parent.mkdir(exist_ok=True)
        (repo / f"colors{suffix}").write_bytes(exported.with_suffix(suffix).read_bytes())
        (repo / f"colors{suffix}").chmod(0o644)
    copy_model(second_model, repo)
    with live_server(repo, tmp_path / "server.log", MODEL_BACKENDS="colors=onnx") as server:
        assert httpx.get(f"{server.base}/models/colors").json()["runtime"]["backend"] == "onnx"
        assert httpx.get(f"{server.base}/models/shades").json()["runtime"]["backend"] == "fastai"
    with live_server(repo, tmp_path / "server2.log", BACKEND="onnx") as server:  # shades has no .onnx
        models = {m["name"]: m for m in httpx.get(f"{server.base}/models").json()["models"]}
        assert models["colors"]["ready"]
        assert not models["shades"]["ready"]
        assert "export-onnx" in models["shades"]["last_reload_error"]


def test_a_pipeline_the_onnx_path_cannot_reproduce_is_refused(tiny_model: Path, tmp_path: Path) -> None:
    from fastai.learner import load_learner
    from fastai.vision.augment import RandomResizedCropGPU

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        learn = load_learner(tiny_model)
    for dl in learn.dls.loaders:
        dl.after_batch.add(RandomResizedCropGPU(32, valid_scale=0.8))  # crops at validation too
    model = tmp_path / "cropped.pkl"
    learn.export(model)
    manifest = read_manifest(tiny_model).model_copy(update={"name": "cropped", "sha256": sha256_file(model)})
    write_manifest(model, manifest)
    with pytest.raises(TrainingError, match="RandomResizedCropGPU"):
        export_onnx(model)
    code, _, err = run_cli("export-onnx", str(model))  # the command line: one error line naming it, exit 2
    assert code == 2
    assert err.startswith("error: ")
    assert "RandomResizedCropGPU" in err
    assert "serve the .pkl" in err
    assert not model.with_suffix(".onnx").exists()
    assert read_manifest(model).onnx is None
    assert manifest_path(model).exists()


def test_a_graph_replaced_after_verification_is_not_loaded(exported: Path, tmp_path: Path) -> None:
    import shutil

    from app.core.backends.onnx import OnnxBackend
    from app.core.errors import ModelLoadError
    from app.core.verify import verify_model_file

    folder = tmp_path / "m"
    copy_model(exported, folder)
    graph = folder / exported.with_suffix(".onnx").name
    shutil.copy(exported.with_suffix(".onnx"), graph)
    verified = verify_model_file(graph)
    assert OnnxBackend.load(verified, "cpu").classes
    graph.write_bytes(graph.read_bytes())  # rewritten in place: same bytes, but nobody checked them
    with pytest.raises(ModelLoadError, match="changed after it was verified"):
        OnnxBackend.load(verified, "cpu")
