"""Shared fixtures: a tiny real dataset and a tiny real learner trained through the training CLI's code path."""

from __future__ import annotations

import contextlib
import io
import os
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from training.__main__ import main as train_main

# Servers the tests start themselves (`python -m app serve`) run one process, as they were written for; several
# processes are tested in tests/test_workers.py. (Set here, before any test starts one.)
os.environ["LEARNSERVE_WORKERS"] = "1"

COLORS = {"red": (210, 40, 40), "green": (40, 190, 60), "blue": (40, 60, 210)}


def make_image(color: tuple[int, int, int], seed: int, size: int = 32) -> Image.Image:
    """A noisy color field with a bright square: easy to learn, and every image differs."""
    rng = np.random.default_rng(seed)
    pixels = rng.normal(color, 25, size=(size, size, 3))
    x, y = rng.integers(0, size // 2, 2)
    pixels[y : y + size // 3, x : x + size // 3] = 245
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def write_dataset(root: Path, per_class: int = 16) -> Path:
    for label, color in COLORS.items():
        (root / label).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            make_image(color, seed=zlib.crc32(f"{label}-{i}".encode())).save(
                root / label / f"{label}_{i:02d}.png"
            )
    return root


def run_cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = train_main(list(argv))
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="session")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("data") / "colors")


@pytest.fixture(scope="session")
def tiny_model(dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 3-class learner (32 px, one epoch, with augmentation so after_batch is not trivial), exported and checked."""
    out = tmp_path_factory.mktemp("models") / "colors.pkl"
    code, stdout, stderr = run_cli(
        "train", str(dataset), "--out", str(out), "--arch", "cnn", "--size", "32",
        "--epochs", "2", "--bs", "16", "--lr", "1e-2", "--augment", "--reports", str(out.parent / "reports"),
    )  # fmt: skip
    assert code == 0, stderr
    assert "reload check" in stdout
    return out


def train_tiny(dataset: Path, out: Path, *extra: str) -> Path:
    code, _, stderr = run_cli(
        "train", str(dataset), "--out", str(out), "--arch", "cnn", "--bs", "16", "--lr", "1e-2", "--no-verify",
        "--reports", str(out.parent / "reports"), *extra,
    )  # fmt: skip
    assert code == 0, stderr
    return out


@pytest.fixture(scope="session")
def second_model(dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Another model on the same classes, different in size and weights: `shades` (24 px, no augmentation)."""
    return train_tiny(
        dataset, tmp_path_factory.mktemp("models") / "shades.pkl", "--size", "24", "--epochs", "1"
    )


@pytest.fixture(scope="session")
def colors_v2(dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A new version of `colors`: same name, other weights (another seed), so another sha256."""
    return train_tiny(
        dataset, tmp_path_factory.mktemp("v2") / "colors.pkl", "--size", "32", "--epochs", "1", "--seed", "7"
    )


def copy_model(model: Path, folder: Path, name: str | None = None) -> Path:
    """Copy a .pkl and its manifest into `folder` (as NAME.pkl when given; the manifest then still says its own)."""
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{name or model.stem}.pkl"
    for src, dest in ((model.with_suffix(".json"), target.with_suffix(".json")), (model, target)):
        staged = folder / f".{dest.name}.tmp"  # write beside, then rename: a reader never sees half a file
        staged.write_bytes(src.read_bytes())
        staged.chmod(0o644)
        os.replace(staged, dest)
    return target


@pytest.fixture
def settings(tiny_model: Path):  # type: ignore[no-untyped-def]
    from app.config import Settings

    return Settings(
        model_path=tiny_model, max_upload_bytes=200_000, max_pixels=1_000_000, max_files=8, top_k=3
    )


@pytest.fixture
def client(settings):  # type: ignore[no-untyped-def]
    from fastapi.testclient import TestClient

    from app.main import create_app

    with TestClient(create_app(settings)) as c:
        yield c


@pytest.fixture(scope="session")
def marks_export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A multi-label learner trained the way a notebook does it (DataBlock with MultiCategoryBlock, the loss's own
    threshold 0.4, learn.export()) on training/marks.py's set of 320 images; the data's labels.csv is beside it."""
    import pandas as pd
    from fastai.vision.all import (
        BCEWithLogitsLossFlat,
        ColReader,
        DataBlock,
        ImageBlock,
        Learner,
        MultiCategoryBlock,
        RandomSplitter,
        Resize,
        accuracy_multi,
    )

    from training.architectures import small_cnn
    from training.marks import MARKS, write_marks

    root = tmp_path_factory.mktemp("marks")
    table = write_marks(root, n=320, size=32, seed=0)
    block = DataBlock(
        blocks=(ImageBlock, MultiCategoryBlock), get_x=ColReader("path", pref=f"{root}/"),
        get_y=ColReader("labels", label_delim=" "), splitter=RandomSplitter(0.2, seed=0), item_tfms=Resize(32),
    )  # fmt: skip
    dls = block.dataloaders(pd.read_csv(table), bs=32, num_workers=0)
    assert list(dls.vocab) == list(MARKS)
    learn = Learner(dls, small_cnn(len(MARKS), channels=(16, 32, 64), dropout=0.0),
                    loss_func=BCEWithLogitsLossFlat(thresh=0.4), metrics=accuracy_multi)  # fmt: skip
    with learn.no_bar(), learn.no_logging():
        learn.fit_one_cycle(8, 1e-2)
    learn.export(root / "export.pkl")
    return root / "export.pkl"
