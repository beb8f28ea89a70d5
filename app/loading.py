"""Verify, then load: the checks that run before any byte of the pickle is executed, and the loader itself."""

from __future__ import annotations

import logging
import pickle
import platform
import stat
import warnings
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError

from app.errors import ModelLoadError
from training.manifest import Manifest, manifest_path, read_manifest, sha256_file

logger = logging.getLogger("learnserve")


def verify_model_file(path: Path, pinned_sha256: str | None = None) -> Manifest:
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
    try:
        manifest = read_manifest(path)
    except FileNotFoundError:
        raise ModelLoadError(
            f"manifest {manifest_path(path)} is missing; `python -m training train` writes it next to the .pkl"
        ) from None
    except ValidationError as e:
        raise ModelLoadError(f"manifest {manifest_path(path)} is invalid: {e.errors()[0]['msg']}") from None
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
    return manifest


def load_learner_file(path: Path) -> Any:
    """fastai's load_learner, with its swallowed-ImportError trap (fastai 2.8.12) turned into the real cause."""
    from fastai.learner import load_learner

    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=".*insecure pickle module.*"
        )  # we verified the sha256 first
        try:
            return load_learner(path, cpu=True)
        except UnboundLocalError:
            try:  # fastai hides ModuleNotFoundError this way; load again without it to surface the cause
                torch.load(path, map_location="cpu", pickle_module=pickle, weights_only=False)
            except Exception as e:
                raise ModelLoadError(f"cannot load {path}: {type(e).__name__}: {e}") from None
            raise
        except Exception as e:
            raise ModelLoadError(f"cannot load {path}: {type(e).__name__}: {e}") from None


def resolve_device(requested: str, cuda_available: bool) -> torch.device:
    """auto: CUDA when available, else CPU; cuda: CUDA or a startup error; cpu: CPU."""
    if requested == "cuda" and not cuda_available:
        raise ModelLoadError("LEARNSERVE_DEVICE=cuda but no CUDA device is available; use auto or cpu")
    if requested == "cuda" or (requested == "auto" and cuda_available):
        return torch.device("cuda")
    return torch.device("cpu")
