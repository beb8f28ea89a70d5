"""A manifest is a claim about its pickle, checked at every load: a tampered or borrowed manifest is refused with the
field and both values, a manifest beside another export's file says so, and a model has one version whatever
runtime serves it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from app.core.backends import open_backend
from app.core.errors import ModelLoadError
from app.core.verify import verify_model_file
from training.manifest import manifest_path, read_manifest, sha256_file


@pytest.fixture
def model_copy(tiny_model: Path, tmp_path: Path) -> Path:
    target = tmp_path / "colors.pkl"
    shutil.copy(tiny_model, target)
    shutil.copy(manifest_path(tiny_model), manifest_path(target))
    return target


def edit(model: Path, change: dict[str, object], where: str | None = None) -> None:
    path = manifest_path(model)
    data = json.loads(path.read_text())
    (data[where] if where else data).update(change)
    path.write_text(json.dumps(data))


def load(model: Path) -> object:
    return open_backend(verify_model_file(model), "fastai", "cpu")


def test_the_untouched_manifest_loads(model_copy: Path) -> None:
    assert load(model_copy) is not None


@pytest.mark.parametrize(
    ("change", "where", "field", "values"),
    [
        (
            {"classes": ["a", "b", "c"]},
            None,
            "classes",
            "['a', 'b', 'c'] in the manifest, ['blue', 'green', 'red']",
        ),
        ({"input_size": 28}, None, "input_size", "28 in the manifest, 32 in the learner"),
        ({"kind": "multi-label classifier"}, None, "kind", "'multi-label classifier' in the manifest"),
        ({"size": 28}, "preprocessing", "preprocessing.size", "28 in the manifest, 32 in the learner"),
        ({"resize_method": "pad"}, "preprocessing", "preprocessing.resize_method", "'pad' in the manifest"),
        ({"normalize": None}, "preprocessing", "preprocessing.normalize", "None in the manifest, {'mean'"),
        ({"parameters": 12}, "model", "model.parameters", "12 in the manifest"),
    ],
)
def test_a_manifest_that_disagrees_with_its_learner_is_refused(
    model_copy: Path, change: dict[str, object], where: str | None, field: str, values: str
) -> None:
    edit(model_copy, change, where)
    with pytest.raises(ModelLoadError, match=r"does not describe colors\.pkl") as refused:
        load(model_copy)
    assert f"{field} is {values}" in str(refused.value)


def test_a_manifest_copied_from_another_model_with_its_name_and_sha256_edited_is_refused(
    model_copy: Path, second_model: Path
) -> None:
    """The issue's case: another model's manifest, made to pass the sha256 check, no longer makes any .pkl serve."""
    borrowed = json.loads(manifest_path(second_model).read_text())
    borrowed |= {"name": "colors", "sha256": sha256_file(model_copy)}
    manifest_path(model_copy).write_text(json.dumps(borrowed))
    with pytest.raises(ModelLoadError, match="input_size is 24 in the manifest, 32 in the learner"):
        load(model_copy)


def test_a_pkl_beside_another_exports_manifest_is_told_so(model_copy: Path, second_model: Path) -> None:
    shutil.copy(manifest_path(second_model), manifest_path(model_copy))  # shades.json beside colors.pkl
    with pytest.raises(ModelLoadError) as refused:
        verify_model_file(model_copy)
    message = str(refused.value)
    assert "colors.json belongs to another file: it describes the model 'shades'" in message
    assert "colors.pkl was exported as 'colors'" in message
    assert "changed after export" not in message


def test_a_file_changed_after_export_is_still_told_so(model_copy: Path, colors_v2: Path) -> None:
    shutil.copy(colors_v2, model_copy)  # retrained under the same name: another file, the same model name
    with pytest.raises(ModelLoadError, match="the file changed after export"):
        verify_model_file(model_copy)


def test_a_pkl_without_a_manifest_points_to_import(model_copy: Path) -> None:
    manifest_path(model_copy).unlink()
    with pytest.raises(ModelLoadError) as refused:
        verify_model_file(model_copy)
    assert f"`python -m training import {model_copy} --name colors`" in str(refused.value)


def test_the_version_is_the_export_id_recorded_at_export(tiny_model: Path) -> None:
    manifest = read_manifest(tiny_model)
    assert manifest.export_id == sha256_file(tiny_model)[:12]
    assert verify_model_file(tiny_model).version == manifest.export_id
    assert manifest.source == "trained"
    assert manifest.validated
