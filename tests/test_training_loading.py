"""`interpret`, `summary` and `export-onnx` unpickle exactly the bytes whose sha256 they checked (a pickle is code)."""

from __future__ import annotations

import io
import shutil
from pathlib import Path
from typing import Any

import pytest

from training.loading import load_verified
from training.manifest import manifest_path


def test_the_bytes_hashed_are_the_bytes_unpickled(
    tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The file is swapped for another right after its first open (as a writer racing the check would): what
    loads is still the verified export, never a second read of the path."""
    copy = tmp_path / "colors.pkl"
    shutil.copy(tiny_model, copy)
    shutil.copy(manifest_path(tiny_model), manifest_path(copy))
    real_open = Path.open
    opened: list[Path] = []

    def open_then_swap(self: Path, *args: Any, **kwargs: Any) -> Any:
        if self != copy:
            return real_open(self, *args, **kwargs)
        opened.append(self)
        with real_open(self, "rb") as f:
            original = f.read()
        with real_open(self, "wb") as f:
            f.write(b"not the verified export")  # the race: replaced once the check has it open
        return io.BytesIO(original)

    monkeypatch.setattr(Path, "open", open_then_swap)
    learn, manifest = load_verified(copy)
    assert opened == [copy]
    assert list(learn.dls.vocab) == manifest.classes
