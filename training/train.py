"""`train`: fit with one-cycle, keep the best epoch, export the learner, write the manifest, prove it reloads."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastai.callback.tracker import EarlyStoppingCallback, SaveModelCallback
from fastai.learner import Learner

from training.errors import TrainingError
from training.learner import ModelOptions, Prepared, check_batch_size, prepare
from training.lr_find import find_lr
from training.manifest import (
    DatasetInfo,
    Manifest,
    Metrics,
    Normalization,
    Preprocessing,
    library_versions,
    sha256_file,
    write_manifest,
)

DEFAULT_LR = {"cnn": 1e-2}  # resnets: 2e-3
VERSIONED = ("torch", "torchvision", "fastai", "fastcore", "fasttransform", "pillow", "learnserve")


@dataclass
class TrainOptions(ModelOptions):
    out: Path = Path("models/model.pkl")
    epochs: int = 8
    lr: str | None = None  # a number, "find", or None for the arch's default
    freeze_epochs: int = 0
    early_stop: int | None = None
    verify: bool = True


def check_writable(out: Path) -> None:
    if out.suffix != ".pkl":
        raise TrainingError(f"--out must end in .pkl, got '{out}'")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out.parent, prefix=".write-test-"):
            pass
    except OSError as e:
        raise TrainingError(f"cannot write --out {out}: {e.strerror or e}") from e


def resolve_lr(opts: TrainOptions, prepared: Prepared, workdir: Path) -> float:
    if opts.lr is None:
        return DEFAULT_LR.get(opts.arch, 2e-3)
    if opts.lr == "find":
        suggestions = find_lr(prepared.learn, plot=workdir / "lr.png")
        print(f"lr finder suggests valley={suggestions['valley']:.2e}; training with it")
        return suggestions["valley"]
    try:
        lr = float(opts.lr)
    except ValueError:
        raise TrainingError(f"--lr must be a number or 'find', got '{opts.lr}'") from None
    if not lr > 0:
        raise TrainingError(f"--lr must be positive, got {opts.lr}")
    return lr


def fit(learn: Learner, opts: TrainOptions, lr: float) -> None:
    if opts.epochs <= 0:
        return
    cbs: list[Any] = [SaveModelCallback(monitor="valid_loss", fname="best")]  # fit-only: never exported
    if opts.early_stop:
        cbs.append(EarlyStoppingCallback(monitor="valid_loss", patience=opts.early_stop))
    if opts.freeze_epochs:
        learn.fine_tune(opts.epochs, base_lr=lr, freeze_epochs=opts.freeze_epochs, cbs=cbs)
    else:
        learn.fit_one_cycle(opts.epochs, lr, cbs=cbs)


def validate(learn: Learner) -> Metrics:
    with learn.no_bar():
        valid_loss, acc, err = learn.validate()
    return Metrics(accuracy=float(acc), error_rate=float(err), valid_loss=float(valid_loss))


def reload_check(model: Path, prepared: Prepared, expected: float, workdir: Path) -> float:
    """Load the export in a fresh interpreter, in another directory, and predict the validation set there."""
    valid_csv = workdir / "valid.csv"
    prepared.valid_frame().to_csv(valid_csv, index=False)
    cmd = [sys.executable, "-m", "training.verify", str(model.resolve()), str(valid_csv)]
    root = str(Path(__file__).resolve().parent.parent)  # so `training` imports even when not pip-installed
    path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p)
    env = {**os.environ, "RANK": "0", "PYTHONPATH": path}
    proc = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise TrainingError(f"the exported model does not load in a fresh process: {last}")
    got = float(json.loads(proc.stdout.strip().splitlines()[-1])["accuracy"])
    n = len(prepared.split.valid_idx)
    if abs(got - expected) * n > 1 + 1e-6:  # allow one borderline image to flip on float noise
        raise TrainingError(
            f"reload check failed: accuracy {got:.4f} in a fresh process vs {expected:.4f} in training"
        )
    return got


def train(opts: TrainOptions) -> Manifest:
    check_writable(opts.out)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="learnserve-train-") as tmp:
        workdir = Path(tmp)
        prepared = prepare(opts, workdir)
        if opts.epochs > 0:
            check_batch_size(prepared)
        learn = prepared.learn
        lr = resolve_lr(opts, prepared, workdir)
        fit(learn, opts, lr)
        metrics = validate(learn)
        train_seconds = time.perf_counter() - started
        learn.path = Path(".")
        learn.export(opts.out.resolve())
        manifest = build_manifest(opts, prepared, metrics, lr, train_seconds)
        write_manifest(opts.out, manifest)
        if opts.verify:
            got = reload_check(opts.out, prepared, metrics.accuracy, workdir)
            print(f"reload check: a fresh process predicts the validation set at accuracy {got:.4f}")
    return manifest


def build_manifest(
    opts: TrainOptions, prepared: Prepared, metrics: Metrics, lr: float, train_seconds: float
) -> Manifest:
    table = prepared.table
    hyper = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(opts).items()}
    hyper.update(lr=lr, size=opts.input_size, valid_pct=prepared.split.valid_pct)
    return Manifest(
        name=opts.out.stem,
        classes=[str(c) for c in prepared.learn.dls.vocab],
        arch=opts.arch,
        input_size=opts.input_size,
        preprocessing=Preprocessing(
            resize_method=opts.resize_method,
            size=opts.input_size,
            normalize=normalization(prepared.learn),
            augment=opts.augment,
        ),
        metrics=metrics,
        dataset=DatasetInfo(
            source=table.source,
            counts=table.counts(),
            train_size=len(prepared.split.train_idx),
            valid_size=len(prepared.split.valid_idx),
            skipped_corrupt=len(table.corrupt),
            ignored_non_image=table.ignored_non_image,
            split=prepared.split.kind,
        ),
        hyperparameters=hyper,
        versions=library_versions(VERSIONED),
        sha256=sha256_file(opts.out),
        created_at=datetime.now(UTC),
        train_seconds=round(train_seconds, 2),
    )


def normalization(learn: Learner) -> Normalization | None:
    for tfm in learn.dls.after_batch.fs:
        if type(tfm).__name__ == "Normalize":
            return Normalization(mean=tfm.mean.flatten().tolist(), std=tfm.std.flatten().tolist())
    return None
