"""Segmentation learners (issue 22): a notebook-style export (MaskBlock(codes), CrossEntropyLossFlat(axis=1))
imported, recognised and served over real HTTP by both backends, with learn.predict's mask exactly at the model's
input size and mapped back to the uploaded image's size through the learner's resize."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import run_cli
from tests.segmentation import CODES, exports  # noqa: F401  (a session fixture)
from training.manifest import SEGMENTATION, read_manifest


@pytest.fixture(scope="module")
def models(exports: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:  # noqa: F811
    """Each export imported as a notebook user would: seg_squish, seg_crop, seg_pad."""
    out = tmp_path_factory.mktemp("models")
    for method, export in exports.items():
        name = f"seg_{method}"
        code, stdout, stderr = run_cli("import", str(export), "--name", name, "--out", str(out))
        assert code == 0, stderr
        assert f"as {name}: {SEGMENTATION}" in stdout
    return out


def test_the_manifest_records_the_codes(models: Path) -> None:
    for method in ("squish", "crop", "pad"):
        manifest = read_manifest(models / f"seg_{method}.pkl")
        assert (manifest.kind, manifest.classes, manifest.threshold) == (SEGMENTATION, CODES, None)
        assert (manifest.input_size, manifest.preprocessing.resize_method) == (32, method)


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
