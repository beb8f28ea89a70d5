"""A model folder, manifest or file that another user could change is refused before anything is unpickled
(as ssh refuses keys others could write): checked on real files with chmod/chown in a temporary folder."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from app.core import permissions
from app.core.errors import ModelLoadError
from app.core.verify import verify_model_file
from tests.conftest import copy_model
from training.manifest import manifest_path

OTHER_UID = 12345  # nobody on this machine; the tests run as root, who may chown to any uid

PARTS: dict[str, Callable[[Path], Path]] = {
    "model folder": lambda model: model.parent,
    "manifest": manifest_path,
    "model file": lambda model: model,
}


@pytest.fixture
def model(tiny_model: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "models"
    folder.mkdir(mode=0o755)
    return copy_model(tiny_model, folder)


def test_a_private_model_passes(model: Path) -> None:
    assert verify_model_file(model).manifest.name == "colors"


@pytest.mark.parametrize("what", list(PARTS))
@pytest.mark.parametrize("bits", [0o020, 0o002])
def test_group_or_world_writable_is_refused(model: Path, what: str, bits: int) -> None:
    path = PARTS[what](model)
    path.chmod(path.stat().st_mode | bits)
    with pytest.raises(
        ModelLoadError, match=rf"^{what} {path} is group- or world-writable.*chmod go-w {path}"
    ):
        verify_model_file(model)


def test_a_world_writable_folder_with_sticky_bit_is_refused(model: Path) -> None:
    """/tmp-like: others cannot replace our files there, but they can add NAME.pkl + NAME.json of their own."""
    model.parent.chmod(0o1777)
    with pytest.raises(ModelLoadError, match="model folder"):
        verify_model_file(model)


@pytest.mark.parametrize("what", list(PARTS))
def test_owned_by_another_user_is_refused(model: Path, what: str) -> None:
    path = PARTS[what](model)
    os.chown(path, OTHER_UID, -1)
    with pytest.raises(
        ModelLoadError, match=rf"^{what} {path} is owned by uid {OTHER_UID}, not by this user"
    ):
        verify_model_file(model)


def test_owned_by_root_or_this_user_passes(model: Path) -> None:
    for path in PARTS.values():
        os.chown(path(model), 0, -1)
    verify_model_file(model)
    me = os.geteuid()
    for path in PARTS.values():
        os.chown(path(model), me, OTHER_UID)  # another group, without its write bit, changes nothing
    verify_model_file(model)


def test_a_read_only_mount_skips_the_owner_but_not_the_mode(
    model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A `:ro` volume: the host's uid is not the container's, and nobody writes through the mount. (No read-only
    mount can be made here without privileges, so the file system's flag is what is stood in for.)"""
    for path in PARTS.values():
        os.chown(path(model), OTHER_UID, -1)
    real = os.statvfs

    def statvfs(path: object) -> object:
        result = real(path)  # type: ignore[arg-type]
        return type("ReadOnly", (), {"f_flag": result.f_flag | os.ST_RDONLY})()

    monkeypatch.setattr(permissions.os, "statvfs", statvfs)
    assert permissions.read_only(model)
    verify_model_file(model)
    model.parent.chmod(0o775)
    with pytest.raises(ModelLoadError, match="group- or world-writable"):
        verify_model_file(model)


def test_read_only_is_false_on_a_writable_folder(tmp_path: Path) -> None:
    assert permissions.read_only(tmp_path) is False


def test_onnx_files_are_checked_too(model: Path) -> None:
    onnx = model.with_suffix(".onnx")
    onnx.write_bytes(b"graph")
    onnx.chmod(0o666)
    with pytest.raises(ModelLoadError, match=rf"model file {onnx} is group- or world-writable"):
        verify_model_file(onnx)
