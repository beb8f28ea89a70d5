"""`train`: data, learner, fit with one-cycle keeping the best epoch, then export (training/export.py) and reports.
Under torchrun every process trains; only rank 0 writes anything.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastai.learner import Learner

from training import distributed, numeric_train
from training.cli import DEFAULT_NUM_IT
from training.errors import TrainingError, warn
from training.export import export, reload_check
from training.learner import Data, ModelOptions, Prepared, check_batch_size, prepare
from training.lr_find import USED, find_lr
from training.manifest import POINTS, REGRESSION, SEGMENTATION, Manifest, Metrics
from training.multilabel import chance_warning, scores
from training.multilabel_reports import write_label_reports
from training.progress import console, quiet
from training.reports import History, write_reports
from training.tracking import BestEpoch

DEFAULT_LR = {"cnn": 1e-2}  # resnets: 2e-3


@dataclass
class TrainOptions(ModelOptions):
    out: Path = Path("models/model.pkl")
    epochs: int = 8
    lr: str | None = None  # a number, "find", or None for the arch's default
    num_it: int | None = None  # --lr find: the finder's iterations (None: fastai's 100)
    freeze_epochs: int = 0
    early_stop: int | None = None
    monitor: str = "valid_loss"
    fp16: bool = False
    reports: Path | None = None  # None: reports/NAME
    verify: bool = True
    untrained: bool = False  # --untrained: epochs is 0 on purpose
    onnx: bool = False  # --onnx: export NAME.onnx too

    @property
    def reports_dir(self) -> Path:
        return self.reports or Path("reports") / self.out.stem


@dataclass
class Outcome:
    manifest: Manifest
    reports: list[Path]

    def summary(self) -> str:
        """The last line: which epoch was kept, its figures, and where the time went."""
        m = self.manifest
        kept = f"kept epoch {m.best_epoch} of {m.epochs_run}" if m.best_epoch else "untrained"
        seconds = f"{m.train_seconds:.1f}s of training"
        if m.world_size > 1:
            seconds += f" in {m.world_size} processes"
        if m.lr_find_seconds is not None:
            seconds += f", {m.lr_find_seconds:.1f}s of lr finder before it"
        x = m.metrics
        assert x is not None  # train always validates
        if m.kind == SEGMENTATION:
            from training.segmentation_reports import figures_line

            return f"{kept}: {figures_line(x)}, valid_loss {x.valid_loss:.4f}; {seconds}"
        if m.kind in (REGRESSION, POINTS):
            what = "mean distance" if m.kind == POINTS else "MAE"
            return f"{kept}: {what} {x.mae:.4f}, valid_loss {x.valid_loss:.4f}; {seconds}"
        if m.multi_label:
            figures = f"accuracy_multi {x.accuracy:.4f}, macro F1 {x.f1:.4f} at threshold {m.threshold:g}"
            return f"{kept}: {figures}, valid_loss {x.valid_loss:.4f}; {seconds}"
        return f"{kept}: accuracy {x.accuracy:.4f}, error_rate {x.error_rate:.4f}, valid_loss {x.valid_loss:.4f}; {seconds}"


def check_options(opts: TrainOptions) -> None:
    """Refuse options that would do nothing, or fail after minutes of work, before any data is read."""
    if opts.freeze_epochs and opts.arch == "cnn":
        raise TrainingError("--freeze-epochs fine-tunes a pretrained body, and --arch cnn has none: drop it")
    if opts.freeze_epochs and not opts.pretrained:
        raise TrainingError(
            "--freeze-epochs needs --pretrained: a body that starts random has nothing to keep"
        )
    if opts.fp16:
        import torch

        if not torch.cuda.is_available():
            raise TrainingError(
                "--fp16 (mixed precision) needs a CUDA GPU and none is available: drop --fp16"
            )
    n = distributed.world_size()
    if n > 1 and opts.lr == "find":
        raise TrainingError(
            f"--lr find runs in one process, not {n}: run `python -m training lr-find` first, then pass --lr"
        )
    if n > 1 and opts.bs % n:
        raise TrainingError(f"--bs {opts.bs} (the whole batch) must split evenly over {n} processes")


def check_writable(out: Path) -> None:
    if out.suffix != ".pkl":
        raise TrainingError(f"--out must end in .pkl, got '{out}'")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out.parent, prefix=".write-test-"):
            pass
    except OSError as e:
        raise TrainingError(f"cannot write --out {out}: {e.strerror or e}") from e


def resolve_lr(opts: TrainOptions, prepared: Prepared, reports: Path) -> tuple[float, float | None]:
    """The learning rate, and the lr finder's seconds when it ran (its plot goes with the reports)."""
    if opts.lr is None:
        return DEFAULT_LR.get(opts.arch, 2e-3), None
    if opts.lr == "find":
        started = time.perf_counter()
        suggestions = find_lr(
            prepared.learn, plot=reports / "lr_find.png", num_it=opts.num_it or DEFAULT_NUM_IT
        )
        seconds = time.perf_counter() - started
        print(
            f"lr finder ({seconds:.1f}s, plot {reports / 'lr_find.png'}): {USED} {suggestions[USED]:.2e}; training with it"
        )
        return suggestions[USED], seconds
    try:
        lr = float(opts.lr)
    except ValueError:
        raise TrainingError(f"--lr must be a number or 'find', got '{opts.lr}'") from None
    if not lr > 0:
        raise TrainingError(f"--lr must be positive, got {opts.lr}")
    return lr, None


def fit(learn: Learner, opts: TrainOptions, lr: float) -> tuple[History, BestEpoch]:
    """One-cycle (or fastai's fine-tune schedule), keeping the best epoch; callbacks are fit-only, never exported."""
    history, best = History(), BestEpoch(opts.monitor, opts.early_stop)
    if opts.epochs <= 0:
        return history, best
    extra: list[Any] = []
    if opts.fp16:
        from fastai.callback.fp16 import MixedPrecision

        extra.append(MixedPrecision())
    with distributed.data_parallel(learn), console(learn) as shown:
        cbs = [history, best, *shown, *extra]
        if opts.freeze_epochs:
            fine_tune(learn, opts, lr, history, best, cbs)
        else:
            learn.fit_one_cycle(opts.epochs, lr, cbs=cbs)
    best.restore(learn.model)
    return history, best


def fine_tune(
    learn: Learner, opts: TrainOptions, lr: float, history: History, best: BestEpoch, cbs: list[Any]
) -> None:
    """fastai's `Learner.fine_tune` schedule, as two fits that share one epoch count and one best epoch."""
    learn.freeze()
    history.phase = "frozen"
    learn.fit_one_cycle(opts.freeze_epochs, slice(lr), pct_start=0.99, cbs=cbs)
    if best.stopped:
        return
    learn.unfreeze()
    history.phase = "unfrozen"
    learn.fit_one_cycle(opts.epochs, slice(lr / 2 / 100, lr / 2), pct_start=0.3, div=5.0, cbs=cbs)


def validate(learn: Learner, multi_label: bool = False) -> Metrics:
    # Under torchrun every process validates the whole set (fastai gathers the copies: same figures).
    with quiet(learn):
        if not multi_label:
            valid_loss, acc, err = learn.validate()
            return Metrics(accuracy=float(acc), error_rate=float(err), valid_loss=float(valid_loss))
        valid_loss, *_ = learn.validate()
        probs, targets = learn.get_preds()  # scored as learn.predict decides: prob > thresh
    s = scores(probs, targets, float(learn.loss_func.thresh))
    return Metrics(accuracy=s.accuracy, error_rate=1 - s.accuracy, valid_loss=float(valid_loss), f1=s.f1)


def check_monitor(opts: TrainOptions, prepared: Prepared) -> None:
    names = ["valid_loss", *(m.name for m in prepared.learn.metrics)]
    if opts.monitor not in names:
        kind = prepared.table.target_kind or ("multi-label" if prepared.table.multi_label else "single-label")
        raise TrainingError(
            f"--monitor {opts.monitor} is not measured for {kind} data; choose one of: {', '.join(names)}"
        )


def warn_if_chance(prepared: Data, accuracy: float) -> None:
    """Warn when the accuracy is not clearly better than always answering the commonest class: within two standard
    errors of that baseline (sqrt(p(1-p)/n) on n validation images), a gap the luck of the split could make. The
    message gives both numbers and the threshold, so an accuracy above the baseline does not read as "at chance".
    Multi-label: accuracy_multi against answering each label by its majority (training/multilabel.py)."""
    if prepared.table.multi_label:
        labels = prepared.valid_frame()["label"].tolist()
        message = chance_warning(labels, [str(c) for c in prepared.dls.vocab], accuracy)
        if message:
            warn(message)
        return
    counts = prepared.valid_frame()["label"].value_counts()
    n, chance = int(counts.sum()), float(counts.max() / counts.sum())
    threshold = chance + 2 * (chance * (1 - chance) / n) ** 0.5
    if accuracy <= threshold:
        warn(
            f"validation accuracy {accuracy:.4f} is not clearly better than guessing at chance level: always "
            f"answering '{counts.idxmax()}' (the commonest class) scores {chance:.4f} on these {n} images, and "
            f"only an accuracy above {threshold:.4f} (two standard errors more) is clearly better. The model has "
            "not learned anything measurable; try more epochs, another --lr (lr-find), or check the labels"
        )


def train(opts: TrainOptions) -> Outcome | None:
    """Train and export; returns None in the processes other than rank 0, which write nothing."""
    check_options(opts)
    if distributed.is_main():
        check_writable(opts.out)
    distributed.setup()
    try:
        with contextlib.ExitStack() as stack:
            if not distributed.is_main():  # N copies of every line would say nothing more; errors still show
                stack.enter_context(contextlib.redirect_stdout(stack.enter_context(open(os.devnull, "w"))))
            return run(opts)
    finally:
        distributed.teardown()


def run(opts: TrainOptions) -> Outcome | None:
    from training.segmentation_data import segmentation_source

    source = segmentation_source(opts.data)
    if source is not None:  # images/ + masks/ + codes.txt: a U-Net (training/segmentation.py)
        from training.segmentation import run_segmentation

        return run_segmentation(opts, source)
    with tempfile.TemporaryDirectory(prefix="learnserve-train-") as tmp:
        workdir = Path(tmp)
        prepared = prepare(opts, workdir, bs=opts.bs // distributed.world_size())
        check_monitor(opts, prepared)
        if opts.epochs > 0:
            check_batch_size(prepared, opts.bs)
        learn = prepared.learn
        lr, lr_find_seconds = resolve_lr(opts, prepared, opts.reports_dir)
        started = time.perf_counter()
        history, best = fit(learn, opts, lr)
        # regression or key points: their figures, reports and reload check are training/numeric_train.py's
        numeric = prepared.table.target_kind is not None
        if numeric:
            metrics, figures = numeric_train.validate(prepared, opts.input_size)
        else:
            metrics = validate(learn, prepared.table.multi_label)
        train_seconds = time.perf_counter() - started
        if not distributed.is_main():
            return None
        if metrics.accuracy is not None:  # a classifier's (other kinds measure errors, not a share right)
            warn_if_chance(prepared, metrics.accuracy)
        if numeric:
            numeric_train.before_export(learn, figures)
        manifest = export(opts, prepared, metrics, lr, (train_seconds, lr_find_seconds), best)
        reports = write_reports(history, opts.reports_dir, best.kept)
        if prepared.table.multi_label:
            reports += write_label_reports(learn, opts.reports_dir)
        if numeric:
            reports += numeric_train.reports(prepared, figures, opts.reports_dir)
        if lr_find_seconds is not None:
            reports.append(opts.reports_dir / "lr_find.png")
        if opts.verify and metrics.accuracy is not None:
            got = reload_check(opts.out, prepared, metrics.accuracy, workdir)
            print(f"reload check: a fresh process predicts the validation set at accuracy {got:.4f}")
        if opts.verify and numeric:
            numeric_train.reload_check(opts.out, prepared, figures, workdir)
        if opts.onnx:
            from training.onnx_export import export_onnx

            manifest = export_onnx(opts.out)
    return Outcome(manifest, reports)
