"""Opening an export for `interpret`, `summary` and `export-onnx`: its manifest first, then its sha256, then the pickle.

fastai warns on every `load_learner` that unpickling runs whatever code the file holds. That is true of a file from
anywhere; here, once the file's sha256 matches the one train recorded in the manifest at export, it is the file we
wrote, and the warning is noise. So it is hidden only after that check (and only that warning).
"""

from __future__ import annotations

import hashlib
import io
import warnings
from pathlib import Path

from fastai.learner import Learner, load_learner

from training.errors import TrainingError
from training.manifest import Manifest, manifest_path, read_manifest

INSECURE_PICKLE_WARNING = "load_learner` uses Python's insecure pickle module"


def read_model_manifest(model: Path) -> Manifest:
    if not model.is_file():
        raise TrainingError(f"model file '{model}' does not exist")
    path = manifest_path(model)
    if not path.is_file():
        raise TrainingError(f"no manifest {path.name} beside {model}: train writes one with every .pkl")
    try:
        return read_manifest(model)
    except ValueError as e:  # bad JSON or a failed validation, both ValueErrors
        first = str(e).strip().splitlines()[0]
        raise TrainingError(f"{path} is not a learnserve manifest ({first})") from None


def load_verified(model: Path) -> tuple[Learner, Manifest]:
    """The learner and its manifest, after checking that the .pkl is the one the manifest describes. The file is
    read once: the bytes that were hashed are the bytes unpickled, even if the file is replaced in between."""
    manifest = read_model_manifest(model)
    data = model.read_bytes()
    if hashlib.sha256(data).hexdigest() != manifest.sha256:
        raise TrainingError(
            f"{model} has changed since export: its sha256 differs from {manifest_path(model).name}'s; "
            "retrain it or restore the file"
        )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=INSECURE_PICKLE_WARNING, category=UserWarning)
        learn = load_learner(io.BytesIO(data))
    return learn, manifest
