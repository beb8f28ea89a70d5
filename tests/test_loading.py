"""Startup refuses models it should not unpickle, with one clear sentence each."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.config import Settings
from app.core.backends.fastai import load_learner_file
from app.core.errors import ModelLoadError
from app.core.verify import verify_model_file
from app.main import create_app
from training.manifest import manifest_path, read_manifest, sha256_file


@pytest.fixture
def model_copy(tiny_model: Path, tmp_path: Path) -> Path:
    target = tmp_path / "copy.pkl"
    shutil.copy(tiny_model, target)
    shutil.copy(manifest_path(tiny_model), manifest_path(target))
    return target


def edit_manifest(model: Path, **changes: object) -> None:
    path = manifest_path(model)
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


def test_a_good_model_passes(model_copy: Path) -> None:
    assert verify_model_file(model_copy).manifest.classes == ["blue", "green", "red"]


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match=r"does not exist.*make model"):
        verify_model_file(tmp_path / "nope.pkl")


def test_not_a_regular_file(tmp_path: Path) -> None:
    (tmp_path / "dir.pkl").mkdir()
    with pytest.raises(ModelLoadError, match="not a regular file"):
        verify_model_file(tmp_path / "dir.pkl")


@pytest.mark.parametrize("mode", [0o664, 0o646, 0o666])
def test_group_or_world_writable(model_copy: Path, mode: int) -> None:
    model_copy.chmod(mode)
    with pytest.raises(ModelLoadError, match=r"writable.*chmod go-w"):
        verify_model_file(model_copy)


def test_tampered_file(model_copy: Path) -> None:
    with model_copy.open("ab") as f:
        f.write(b"\0")
    with pytest.raises(ModelLoadError, match=r"sha256.*changed after export"):
        verify_model_file(model_copy)


def test_pinned_sha256(model_copy: Path) -> None:
    assert verify_model_file(model_copy, pinned_sha256=sha256_file(model_copy).upper())
    with pytest.raises(ModelLoadError, match="LEARNSERVE_MODEL_SHA256"):
        verify_model_file(model_copy, pinned_sha256="0" * 64)


def test_other_python_minor(model_copy: Path) -> None:
    versions = read_manifest(model_copy).versions | {"python": "3.10.14"}
    edit_manifest(model_copy, versions=versions)
    with pytest.raises(ModelLoadError, match=r"Python 3\.10 .*same minor"):
        verify_model_file(model_copy)


def test_missing_or_invalid_manifest(model_copy: Path) -> None:
    manifest_path(model_copy).write_text("{}")
    with pytest.raises(ModelLoadError, match="invalid"):
        verify_model_file(model_copy)
    manifest_path(model_copy).unlink()
    with pytest.raises(ModelLoadError, match=r"manifest .* missing"):
        verify_model_file(model_copy)


def test_garbage_that_matches_its_manifest_still_fails_cleanly(model_copy: Path) -> None:
    model_copy.write_bytes(b"this is not a pickle")
    edit_manifest(model_copy, sha256=sha256_file(model_copy))
    verified = verify_model_file(model_copy)
    with pytest.raises(ModelLoadError, match="cannot load"):
        load_learner_file(verified)


def test_a_file_replaced_after_verification_is_not_unpickled(model_copy: Path, colors_v2: Path) -> None:
    """The bytes that are unpickled are the bytes whose sha256 was checked: a file swapped (or half-copied) between
    the check and the load is refused, not loaded unverified."""
    verified = verify_model_file(model_copy)
    shutil.copy(colors_v2, model_copy)  # a valid learner, but not the verified one
    with pytest.raises(ModelLoadError, match="changed after it was verified"):
        load_learner_file(verified)
    model_copy.unlink()
    with pytest.raises(ModelLoadError, match="cannot read"):
        load_learner_file(verified)


def test_lifespan_stops_on_a_bad_model(tmp_path: Path) -> None:
    app = create_app(Settings(model_path=tmp_path / "missing.pkl"))
    with pytest.raises(ModelLoadError, match="does not exist"), TestClient(app):
        pass


def test_settings_reject_a_queue_smaller_than_a_batch() -> None:
    with pytest.raises(ValueError, match="max_queue"):
        Settings(max_queue=4, max_files=8)


def test_settings_read_prefixed_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEARNSERVE_MAX_BATCH_SIZE", "7")
    monkeypatch.setenv("LEARNSERVE_DEVICE", "cpu")
    s = Settings()
    assert s.max_batch_size == 7
    assert s.device == "cpu"


def test_the_old_name_of_max_requests_still_sets_it_with_a_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEARNSERVE_MAX_CONNECTIONS", "40")
    with pytest.warns(FutureWarning, match="LEARNSERVE_MAX_REQUESTS"):
        assert Settings().max_requests == 40
    monkeypatch.setenv("LEARNSERVE_MAX_REQUESTS", "30")  # the new name wins
    assert Settings().max_requests == 30


def test_batch_size_is_capped_by_input_pixels() -> None:
    s = Settings(max_batch_size=32, max_batch_pixels=8 * 224 * 224)
    assert s.batch_size_for(224) == 8
    assert s.batch_size_for(64) == 32
    assert s.batch_size_for(2000) == 1
