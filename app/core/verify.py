"""The checks that run before any byte of a pickle is executed: a fastai `.pkl` is code, so it must be the file
that was exported (sha256 against its manifest and an optional pin), in a folder, manifest and file no one else can
change (app/core/permissions.py), and from this Python.

Imports neither torch nor fastai: the repository verifies a new file before anything is loaded.
"""

from __future__ import annotations

import hashlib
import platform
import zipfile
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from app.core.errors import ModelLoadError
from app.core.permissions import check_model_paths
from training.manifest import Manifest, manifest_path, read_manifest, sha256_file


@dataclass(frozen=True, slots=True)
class VerifiedFile:
    path: Path
    manifest: Manifest
    sha256: str
    identity: tuple[int, int, int] | None = None  # (size, mtime_ns, inode) when it was hashed

    @property
    def version(self) -> str:
        """A model's version, the same under both backends: its export id, the first 12 hex characters of the
        .pkl's sha256 as its manifest records it (an .onnx graph is that .pkl's model, so it has that version)."""
        return self.manifest.version


def verify_model_file(path: Path, pinned_sha256: str | None = None) -> VerifiedFile:
    """A `.pkl` (fastai) or `.onnx` (ONNX Runtime) model file. Refuse files that are missing, not regular,
    writable by others, altered since export, or (a pickle) from another Python."""
    if path.suffix == ".onnx":
        return verify_onnx_file(path, pinned_sha256)
    _check_file(path, "train one with `make model` or set LEARNSERVE_MODEL_PATH")
    manifest = read_manifest_checked(path)
    actual = _check_sha256(path, manifest, manifest.sha256, pinned_sha256, "refusing to unpickle it")
    running = ".".join(platform.python_version_tuple()[:2])
    if manifest.python_minor != running:
        raise ModelLoadError(
            f"{path} was exported with Python {manifest.python_minor} and this is Python {running}; fastai 2.8 "
            "pickles only load on the same minor version: serve with that Python or retrain"
        )
    return VerifiedFile(path, manifest, actual)


def verify_onnx_file(path: Path, pinned_sha256: str | None = None) -> VerifiedFile:
    """An ONNX export: the checks of a pickle but the Python version (a graph is not bytecode)."""
    _check_file(path, f"export one with `python -m training export-onnx {path.with_suffix('.pkl')}`")
    manifest = read_manifest_checked(path)
    if manifest.onnx is None or manifest.onnx.file != path.name:
        raise ModelLoadError(
            f"manifest {manifest_path(path)} records no ONNX export named {path.name}; export it with "
            f"`python -m training export-onnx {path.with_suffix('.pkl')}`"
        )
    identity = file_identity(path)
    actual = _check_sha256(path, manifest, manifest.onnx.sha256, pinned_sha256, "refusing to load it")
    if file_identity(path) != identity:
        raise ModelLoadError(
            f"{path} changed while it was being verified (being replaced?): rescan once it is complete"
        )
    return VerifiedFile(path, manifest, actual, identity)


def file_identity(path: Path) -> tuple[int, int, int] | None:
    try:
        s = path.stat()
    except OSError:
        return None
    return (s.st_size, s.st_mtime_ns, s.st_ino)


def check_unchanged(file: VerifiedFile) -> None:
    """For a file loaded by path after it was verified (an ONNX graph: ONNX Runtime keeps a bytes copy of a model
    given as bytes for the session's life): refuse it if it was replaced or rewritten in between."""
    if file.identity is None or file_identity(file.path) != file.identity:
        raise ModelLoadError(
            f"{file.path} changed after it was verified (being replaced?); it was not loaded: rescan once the "
            "new file is complete"
        )


def verified_bytes(file: VerifiedFile) -> bytes:
    """The file's bytes, read once and checked against the sha256 it was verified with: what gets unpickled is
    exactly what was verified (a pickle is code), even if the file is replaced (or still being copied) in between."""
    try:
        data = file.path.read_bytes()
    except OSError as e:
        raise ModelLoadError(f"cannot read {file.path}: {e.strerror or e}") from None
    if hashlib.sha256(data).hexdigest() != file.sha256:
        raise ModelLoadError(
            f"{file.path} changed after it was verified (being replaced?); it was not loaded: rescan once the "
            "new file is complete"
        )
    return data


def _check_file(path: Path, how: str) -> None:
    if not path.exists():
        raise ModelLoadError(f"model file {path} does not exist: {how}")
    if not path.is_file():
        raise ModelLoadError(f"model file {path} is not a regular file")
    check_model_paths(path, manifest_path(path))


def _check_sha256(path: Path, manifest: Manifest, expected: str, pinned: str | None, refusal: str) -> str:
    actual = sha256_file(path)
    exported_as = archive_name(path)
    if actual != expected and exported_as not in (None, manifest.name):
        raise ModelLoadError(
            f"manifest {manifest_path(path).name} belongs to another file: it describes the model "
            f"{manifest.name!r} (sha256 {expected[:16]}…), and {path.name} was exported as {exported_as!r} "
            f"(sha256 {actual[:16]}…); {refusal}. Put back its own manifest, or bring the file in with "
            f"`python -m training import {path} --name {path.stem}`"
        )
    if actual != expected:
        raise ModelLoadError(
            f"sha256 of {path} is {actual[:16]}…, the manifest says {expected[:16]}…: "
            f"the file changed after export; {refusal}"
        )
    if pinned and actual != pinned.lower():
        raise ModelLoadError(
            f"sha256 of {path} is {actual[:16]}…, LEARNSERVE_MODEL_SHA256 pins {pinned[:16]}…"
        )
    return actual


def archive_name(path: Path) -> str | None:
    """The name a `.pkl` was saved under: torch.save writes its zip's entries into a folder named after the file
    it writes (models/colors.pkl -> colors/data.pkl), and a copy or a rename keeps it. Reading a zip's directory
    runs nothing. None for a file that is not such a zip (an ONNX graph, a damaged file)."""
    try:
        with zipfile.ZipFile(path) as z:
            first = z.namelist()[0]
    except (OSError, zipfile.BadZipFile, IndexError):
        return None
    return first.split("/", 1)[0] if "/" in first else None


def read_manifest_checked(path: Path) -> Manifest:
    try:
        return read_manifest(path)
    except FileNotFoundError:
        raise ModelLoadError(
            f"manifest {manifest_path(path)} is missing, and no pickle is loaded without one. For a learner from "
            f"learn.export(), `python -m training import {path} --name {path.stem}` checks it and writes "
            f"models/{path.stem}.pkl with its manifest: serve that (`python -m training train` writes one with "
            "every model it trains)"
        ) from None
    except ValidationError as e:
        raise ModelLoadError(f"manifest {manifest_path(path)} is invalid: {e.errors()[0]['msg']}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ModelLoadError(f"manifest {manifest_path(path)} cannot be read: {e}") from None
