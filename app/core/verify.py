"""The checks that run before any byte of a pickle is executed: a fastai `.pkl` is code, so it must be the file
that was exported (sha256 against its manifest and an optional pin), not writable by others, and from this Python.

Imports neither torch nor fastai: the repository verifies a new file before anything is loaded.
"""

from __future__ import annotations

import platform
import stat
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from app.core.errors import ModelLoadError
from training.manifest import Manifest, manifest_path, read_manifest, sha256_file


@dataclass(frozen=True, slots=True)
class VerifiedFile:
    path: Path
    manifest: Manifest
    sha256: str

    @property
    def version(self) -> str:
        """A model's version: the first 12 hex characters of its file's sha256."""
        return self.sha256[:12]


def verify_model_file(path: Path, pinned_sha256: str | None = None) -> VerifiedFile:
    """Refuse files that are missing, not regular, writable by others, altered since export, or from another Python."""
    if not path.exists():
        raise ModelLoadError(
            f"model file {path} does not exist: train one with `make model` or set LEARNSERVE_MODEL_PATH"
        )
    if not path.is_file():
        raise ModelLoadError(f"model file {path} is not a regular file")
    mode = path.stat().st_mode
    if mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise ModelLoadError(
            f"model file {path} is group- or world-writable (mode {stat.filemode(mode)}); loading a pickle runs "
            f"its code, so fix it with `chmod go-w {path}`"
        )
    manifest = read_manifest_checked(path)
    actual = sha256_file(path)
    if actual != manifest.sha256:
        raise ModelLoadError(
            f"sha256 of {path} is {actual[:16]}…, the manifest says {manifest.sha256[:16]}…: "
            "the file changed after export; refusing to unpickle it"
        )
    if pinned_sha256 and actual != pinned_sha256.lower():
        raise ModelLoadError(
            f"sha256 of {path} is {actual[:16]}…, LEARNSERVE_MODEL_SHA256 pins {pinned_sha256[:16]}…"
        )
    running = ".".join(platform.python_version_tuple()[:2])
    if manifest.python_minor != running:
        raise ModelLoadError(
            f"{path} was exported with Python {manifest.python_minor} and this is Python {running}; fastai 2.8 "
            "pickles only load on the same minor version: serve with that Python or retrain"
        )
    return VerifiedFile(path, manifest, actual)


def read_manifest_checked(path: Path) -> Manifest:
    try:
        return read_manifest(path)
    except FileNotFoundError:
        raise ModelLoadError(
            f"manifest {manifest_path(path)} is missing; `python -m training train` writes it next to the .pkl"
        ) from None
    except ValidationError as e:
        raise ModelLoadError(f"manifest {manifest_path(path)} is invalid: {e.errors()[0]['msg']}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ModelLoadError(f"manifest {manifest_path(path)} cannot be read: {e}") from None
