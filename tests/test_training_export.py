"""The exported learner and its manifest, checked against the real file the session's `tiny_model` wrote."""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from conftest import COLORS, run_cli

from training.manifest import manifest_path, read_manifest

pytestmark = [
    pytest.mark.slow,
    # torch 2.14 warns when fastai's layers module calls torch.jit.script at import; third-party, harmless here.
    pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning"),
]

N_IMAGES = 3 * 16  # conftest's dataset: three colours, 16 images each
ROOT = Path(__file__).resolve().parent.parent
# subprocesses import this checkout's `training`, whatever the environment has installed
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}


def test_manifest_sits_next_to_the_model(tiny_model: Path) -> None:
    assert tiny_model.is_file()
    assert manifest_path(tiny_model) == tiny_model.with_suffix(".json")
    assert tiny_model.with_suffix(".json").is_file()


def test_manifest_describes_model_and_preprocessing(tiny_model: Path) -> None:
    from fastai.learner import load_learner

    m = read_manifest(tiny_model)
    assert m.name == "colors"
    assert m.classes == list(load_learner(tiny_model).dls.vocab)  # vocab order, as the model outputs it
    assert m.classes == sorted(COLORS)
    assert m.arch == "cnn"
    assert m.input_size == 32
    p = m.preprocessing
    assert (p.resize_method, p.size, p.augment) == ("squish", 32, True)
    assert p.normalize is not None
    assert len(p.normalize.mean) == len(p.normalize.std) == 3
    assert all(0 < s < 1 for s in p.normalize.std)


def test_manifest_metrics_are_validation_figures(tiny_model: Path) -> None:
    metrics = read_manifest(tiny_model).metrics
    assert 0.0 <= metrics.accuracy <= 1.0
    assert 0.0 <= metrics.error_rate <= 1.0
    assert metrics.accuracy + metrics.error_rate == pytest.approx(1.0, abs=1e-5)
    assert math.isfinite(metrics.valid_loss)
    assert metrics.valid_loss >= 0


def test_manifest_dataset_counts_and_split(tiny_model: Path, dataset: Path) -> None:
    d = read_manifest(tiny_model).dataset
    assert d.source == dataset.name  # the name only: where the data lay is not published
    assert d.counts == dict.fromkeys(sorted(COLORS), 16)
    assert d.train_size + d.valid_size == N_IMAGES
    assert d.valid_size == int(0.2 * N_IMAGES)
    assert (d.skipped_corrupt, d.ignored_non_image) == (0, 0)


def test_manifest_records_hyperparameters_and_versions(tiny_model: Path) -> None:
    import fastai
    import torch

    m = read_manifest(tiny_model)
    h = m.hyperparameters
    assert h["seed"] == 42
    assert h["valid_pct"] == 0.2
    assert (h["arch"], h["size"], h["bs"], h["epochs"]) == ("cnn", 32, 16, 2)
    assert h["lr"] == pytest.approx(1e-2)
    assert h["augment"] is True
    assert h["pretrained"] is False
    assert Path(h["out"]).name == "colors.pkl"
    json.dumps(h)  # plain JSON values only

    v = m.versions
    assert v["python"] == platform.python_version()
    assert v["torch"] == torch.__version__.split("+")[0]  # the distribution's version, without +cu130 etc.
    assert v["fastai"] == fastai.__version__
    for name in ("torchvision", "fastcore", "pillow", "learnserve"):
        assert v[name] not in ("", "unknown"), name
    assert m.python_minor == ".".join(platform.python_version_tuple()[:2])


def test_manifest_hash_time_and_duration(tiny_model: Path) -> None:
    m = read_manifest(tiny_model)
    assert m.sha256 == hashlib.sha256(tiny_model.read_bytes()).hexdigest()
    assert m.created_at.tzinfo is not None
    now = datetime.now(UTC)
    assert now - timedelta(hours=1) < m.created_at <= now
    assert 0 < m.train_seconds < 600


def test_manifest_imports_without_fastai_or_torch() -> None:
    code = (
        "import sys, training.manifest; "
        "heavy = sorted({'torch', 'fastai', 'torchvision'} & set(sys.modules)); "
        "assert not heavy, heavy"
    )
    proc = subprocess.run([sys.executable, "-c", code], env=ENV, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


def test_verify_in_a_fresh_process_matches_manifest(tiny_model: Path, dataset: Path, tmp_path: Path) -> None:
    from training.interpret import validation_frame

    valid_csv = tmp_path / "valid.csv"
    validation_frame(tiny_model, str(dataset)).to_csv(valid_csv, index=False)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    proc = subprocess.run(
        [sys.executable, "-m", "training.verify", str(tiny_model), str(valid_csv)],
        cwd=elsewhere,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    m = read_manifest(tiny_model)
    assert result["n"] == m.dataset.valid_size
    assert abs(result["accuracy"] - m.metrics.accuracy) * result["n"] <= 1 + 1e-6  # one image may flip


def test_summary_prints_the_layer_table(tiny_model: Path) -> None:
    code, out, err = run_cli("summary", str(tiny_model))
    assert code == 0, err
    assert "Input shape: 1 x 3 x 32 x 32" in out
    for layer in ("Conv2d", "BatchNorm2d", "MaxPool2d", "Linear"):
        assert layer in out
    assert "Total params:" in out
    assert "Total trainable params:" in out


def test_summary_of_a_missing_model_is_a_clean_error(tmp_path: Path) -> None:
    code, _, err = run_cli("summary", str(tmp_path / "nope.pkl"))
    assert code == 2
    assert err.startswith("error:")
    assert "Traceback" not in err
