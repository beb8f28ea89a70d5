"""Export: the learner as NAME.pkl (fastai's `learn.export`), its manifest NAME.json, and the proof that the pickle
loads in a fresh interpreter and scores the validation set as it did in training.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastai.learner import Learner

from training import distributed
from training.cli import DEFAULT_NUM_IT
from training.errors import TrainingError
from training.learner import Prepared
from training.manifest import (
    MULTI_LABEL,
    SINGLE_LABEL,
    DatasetInfo,
    Manifest,
    Metrics,
    ModelInfo,
    Normalization,
    Preprocessing,
    library_versions,
    sha256_file,
    write_manifest,
)
from training.tracking import BestEpoch

if TYPE_CHECKING:
    from training.train import TrainOptions

VERSIONED = (
    "torch",
    "torchvision",
    "fastai",
    "fastcore",
    "fasttransform",
    "pillow",
    "accelerate",
    "learnserve",
)


def export(
    opts: TrainOptions,
    prepared: Prepared,
    metrics: Metrics,
    lr: float,
    seconds: tuple[float, float | None],  # training, and the lr finder's when it ran
    best: BestEpoch,
) -> Manifest:
    learn = prepared.learn
    learn.path = Path(".")
    learn.export(opts.out.resolve())
    manifest = build_manifest(opts, prepared, metrics, lr, seconds, best)
    write_manifest(opts.out, manifest)
    return manifest


def build_manifest(
    opts: TrainOptions,
    prepared: Prepared,
    metrics: Metrics,
    lr: float,
    seconds: tuple[float, float | None],
    best: BestEpoch,
) -> Manifest:
    table = prepared.table
    hyper = hyperparameters(opts, lr, opts.input_size, prepared)
    hyper["stratify"] = prepared.split.kind == "stratified"  # done, not asked (None): as dataset.split says
    multi = table.multi_label
    return Manifest(
        name=opts.out.stem,
        kind=table.target_kind or (MULTI_LABEL if multi else SINGLE_LABEL),
        threshold=float(prepared.learn.loss_func.thresh)
        if multi
        else None,  # what learn.predict decodes with
        classes=table.classes if table.target_kind else [str(c) for c in prepared.learn.dls.vocab],
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
            source=Path(
                table.source
            ).name,  # the folder's name: where it lay on this machine is nobody's business
            counts=table.counts(),
            train_size=len(prepared.split.train_idx),
            valid_size=len(prepared.split.valid_idx),
            skipped_corrupt=len(table.corrupt),
            skipped_missing=len(table.missing),
            ignored_non_image=table.ignored_non_image,
            split=prepared.split.kind,
        ),
        hyperparameters=hyper,
        **run_fields(opts.out, prepared.learn.model, seconds, best),
    )


def hyperparameters(opts: TrainOptions, lr: float, size: int, prepared: Prepared) -> dict[str, Any]:
    """The options as given, with the values used where they left them to a default or to the data."""
    hyper = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(opts).items()}
    hyper.update(lr=lr, size=size, valid_pct=prepared.split.valid_pct, reports=str(opts.reports_dir),
                 num_it=(opts.num_it or DEFAULT_NUM_IT) if opts.lr == "find" else None)  # fmt: skip
    return hyper


def run_fields(out: Path, model: Any, seconds: tuple[float, float | None], best: BestEpoch) -> dict[str, Any]:
    """What every trained manifest records of its run: the versions, the .pkl's identity, the model's class and
    size, when, how long (the fit; the lr finder), how many processes, and the epochs."""
    sha256 = sha256_file(out)
    return {
        "versions": library_versions(VERSIONED),
        "sha256": sha256,
        "export_id": sha256[:12],
        "model": ModelInfo(
            class_name=type(model).__name__, parameters=sum(p.numel() for p in model.parameters())
        ),
        "created_at": datetime.now(UTC),
        "train_seconds": round(seconds[0], 2),
        "lr_find_seconds": None if seconds[1] is None else round(seconds[1], 2),
        "world_size": distributed.world_size(),
        "epochs_run": best.epochs_done,
        "best_epoch": best.kept,
    }


def normalization(learn: Learner) -> Normalization | None:
    for tfm in learn.dls.after_batch.fs:
        if type(tfm).__name__ == "Normalize":
            return Normalization(mean=tfm.mean.flatten().tolist(), std=tfm.std.flatten().tolist())
    return None


def reload_check(model: Path, prepared: Prepared, expected: float, workdir: Path) -> float:
    """Load the export in a fresh interpreter, in another directory, and predict the validation set there
    (multi-label: accuracy_multi at the learner's threshold)."""
    got = float(fresh_process_scores(model, prepared, workdir)["accuracy"])
    n = len(prepared.split.valid_idx)
    if prepared.table.multi_label:  # accuracy_multi: one decision per image and label
        n *= len(prepared.learn.dls.vocab)
    if abs(got - expected) * n > 1 + 1e-6:  # allow one borderline image to flip on float noise
        raise TrainingError(
            f"reload check failed: accuracy {got:.4f} in a fresh process vs {expected:.4f} in training"
        )
    return got


def fresh_process_scores(model: Path, prepared: Prepared, workdir: Path) -> dict[str, float]:
    """training/verify.py's scores of the export on the validation set, in a fresh interpreter elsewhere."""
    valid_csv = workdir / "valid.csv"
    prepared.valid_frame().to_csv(valid_csv, index=False)
    cmd = [sys.executable, "-m", "training.verify", str(model.resolve()), str(valid_csv)]
    root = str(Path(__file__).resolve().parent.parent)  # so `training` imports even when not pip-installed
    path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p)
    env = {**distributed.clean_environment(), "PYTHONPATH": path}  # a single process, not rank 0 of N
    proc = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise TrainingError(f"the exported model does not load in a fresh process: {last}")
    scores: dict[str, float] = json.loads(proc.stdout.strip().splitlines()[-1])
    return scores
