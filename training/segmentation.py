"""Segmentation learning, as fastai's chapter 1 trains CamVid: `DataBlock(ImageBlock, MaskBlock(codes))`, a U-Net,
`CrossEntropyLossFlat(axis=1)` (a softmax over the codes for every pixel), then the same fit, export and fresh-process
reload check as the other kinds (training/train.py, training/export.py), with a segmentation manifest.

`--arch cnn` is a U-Net over the small convnet's body (fastai's DynamicUnet; it learns the bundled shapes set in a
few epochs on a CPU); the resnets go through fastai's `unet_learner`. Pixel accuracy is the share of all pixels
whose code is right (fastai's `foreground_acc` leaves the background out, which is not it); IoU per code is read
from the confusion of codes over the validation pixels. Only fastai objects go into the learner, so the exported
pickle loads without this package.
"""

from __future__ import annotations

import functools
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from training import distributed
from training.datasets import ImageTable
from training.errors import TrainingError, warn
from training.learner import Prepared, batch_transforms, check_batch_size
from training.manifest import (
    SEGMENTATION,
    DatasetInfo,
    Manifest,
    Metrics,
    Preprocessing,
    write_manifest,
)
from training.progress import quiet
from training.segmentation_data import MaskTable, load_masks
from training.splits import DEFAULT_VALID_PCT, Split, split_indices

if TYPE_CHECKING:
    from training.train import Outcome, TrainOptions

MAX_DEFAULT_SIZE = 224  # without --size: the images' shorter side, at most this


def check_options(opts: TrainOptions, table: MaskTable) -> None:
    """Options that mean nothing for masks, refused before any work."""
    if distributed.world_size() > 1:
        raise TrainingError("segmentation trains in one process for now: start it without torchrun")
    idle = [name for name, given in (("--multi-label", opts.multi_label), ("--threshold", opts.threshold is not None),
                                     ("--[no-]stratify", opts.stratify is not None)) if given]  # fmt: skip
    if idle:
        raise TrainingError(
            f"{', '.join(idle)} do(es) nothing for a segmentation set (masks, not labels): drop it"
        )
    if table.split_by_file and opts.valid_pct is not None:
        raise TrainingError(f"--valid-pct does nothing here: {table.source} is split by its valid.txt")
    if opts.monitor not in ("valid_loss", "accuracy"):
        raise TrainingError(
            f"--monitor {opts.monitor} is not measured for segmentation; choose valid_loss or accuracy (pixel accuracy)"
        )


def make_split(table: MaskTable, opts: TrainOptions) -> Split:
    if table.split_by_file:
        flags = table.frame["is_valid"].tolist()
        split = Split(
            "valid.txt", [i for i, v in enumerate(flags) if not v], [i for i, v in enumerate(flags) if v]
        )
        if not split.train_idx or not split.valid_idx:
            raise TrainingError(
                f"{table.source}/valid.txt leaves no {'training' if split.valid_idx else 'validation'} images"
            )
        return split
    pct = DEFAULT_VALID_PCT if opts.valid_pct is None else opts.valid_pct
    return Split("random", *split_indices(len(table.frame), pct, opts.seed), valid_pct=pct)


def input_size(opts: TrainOptions, table: MaskTable) -> int:
    if opts.size is not None:
        return opts.size
    from PIL import Image

    with Image.open(table.frame["path"].iloc[0]) as im:
        return min(*im.size, MAX_DEFAULT_SIZE)


def loss_and_metrics() -> tuple[Any, list[Any]]:
    """CrossEntropyLossFlat over the class axis; pixel accuracy (named `accuracy`, so --monitor accuracy reads it),
    fastai's mean Dice and mean IoU over the codes."""
    from fastai.losses import CrossEntropyLossFlat
    from fastai.metrics import AvgMetric, DiceMulti, JaccardCoeffMulti, accuracy

    pixel_accuracy = AvgMetric(functools.partial(accuracy, axis=1))  # every image has as many pixels: exact
    return CrossEntropyLossFlat(axis=1), [pixel_accuracy, DiceMulti(), JaccardCoeffMulti()]


def build_unet(dls: Any, arch: str, pretrained: bool, n_codes: int, size: int, path: Path) -> Any:
    from fastai.learner import Learner
    from fastai.vision.learner import unet_learner
    from fastai.vision.models.unet import DynamicUnet

    from training.architectures import RESNETS, ensure_pretrained_weights, small_cnn

    loss, metrics = loss_and_metrics()
    if arch == "cnn":
        if pretrained:
            raise TrainingError("--arch cnn has no pretrained weights; use --no-pretrained or a resnet")
        # the convolutions, without the pooling and the classifier head
        body = torch.nn.Sequential(*list(small_cnn(n_codes).children())[:-4])
        model = DynamicUnet(body, n_codes, (size, size))
        return Learner(dls, model, loss_func=loss, metrics=metrics, path=path)
    if pretrained:
        ensure_pretrained_weights(arch)
    return unet_learner(
        dls, RESNETS[arch], pretrained=pretrained, n_out=n_codes, loss_func=loss, metrics=metrics, path=path
    )


def prepare(opts: TrainOptions, source: Path, workdir: Path) -> tuple[MaskTable, Prepared, int]:
    from fastai.data.block import DataBlock
    from fastai.data.transforms import ColReader, IndexSplitter
    from fastai.torch_core import set_seed
    from fastai.vision.augment import Resize
    from fastai.vision.data import ImageBlock, MaskBlock

    set_seed(opts.seed, reproducible=True)
    table = load_masks(source)
    check_options(opts, table)
    print(table.report())
    split = make_split(table, opts)
    how = f"random {split.valid_pct:g}" if split.valid_pct else "by its valid.txt"
    print(f"split {how}: {len(split.train_idx)} training, {len(split.valid_idx)} validation images")
    size = input_size(opts, table)
    block = DataBlock(
        blocks=(ImageBlock, MaskBlock(table.codes)),
        get_x=ColReader("path"),  # fastai built-ins only: the pickle must load without this package
        get_y=ColReader("mask"),
        splitter=IndexSplitter(split.valid_idx),
        item_tfms=Resize(size, method=opts.resize_method),  # masks resize with nearest neighbours
        batch_tfms=batch_transforms(opts.augment),
    )
    frame = table.frame[["path", "mask"]]
    dls = block.dataloaders(frame, bs=opts.bs, num_workers=0, path=workdir)
    learn = build_unet(dls, opts.arch, opts.pretrained, len(table.codes), size, workdir)
    # The shared steps (lr, batch check, reload check) read `path` and the split; `mask` stands where a label would.
    return table, Prepared(ImageTable(str(source), frame), split, dls, learn), size


def confusion(learn: Any, n_codes: int, keep: int = 0) -> tuple[torch.Tensor, list[Any]]:
    """Pixels of each actual code (rows) predicted as each code (columns) over the validation set, batch by batch
    (the probabilities of a large set would not fit in memory); and the first `keep` decoded (image, true mask,
    predicted mask) triples for the overlay report."""
    counts = torch.zeros(n_codes, n_codes, dtype=torch.long)
    kept: list[Any] = []
    model = learn.model.eval()
    with torch.inference_mode():
        for xb, yb in learn.dls.valid:
            predicted = model(xb).argmax(dim=1)
            index = yb.long().flatten() * n_codes + predicted.flatten()
            counts += torch.bincount(index.cpu(), minlength=n_codes * n_codes).reshape(n_codes, n_codes)
            if len(kept) < keep:
                decoded = learn.dls.valid.decode_batch((xb, yb), max_n=keep - len(kept))
                kept += [(x, y, p) for (x, y), p in zip(decoded, predicted.cpu(), strict=False)]
    return counts, kept


def iou_per_code(counts: torch.Tensor, codes: list[str]) -> dict[str, float]:
    """Intersection over union of each code over the validation pixels; a code neither true nor predicted anywhere
    has none (left out, with a warning)."""
    tp = counts.diag().double()
    union = counts.sum(0).double() + counts.sum(1).double() - tp
    absent = [c for c, u in zip(codes, union.tolist(), strict=True) if u == 0]
    if absent:
        warn(f"code(s) {', '.join(absent)} neither in a validation mask nor predicted: no IoU for them")
    return {c: round(float(t / u), 6) for c, t, u in zip(codes, tp, union, strict=True) if u > 0}


def measure(learn: Any, codes: list[str], keep: int) -> tuple[Metrics, torch.Tensor, list[Any]]:
    with quiet(learn):
        valid_loss = float(learn.validate()[0])
    counts, kept = confusion(learn, len(codes), keep)
    pixel_accuracy = float(counts.diag().sum() / counts.sum().clamp_min(1))
    commonest = float(counts.sum(1).max() / counts.sum().clamp_min(1))
    if pixel_accuracy <= commonest:
        warn(
            f"validation pixel accuracy {pixel_accuracy:.4f} is no better than answering the commonest code for "
            f"every pixel ({commonest:.4f}): the model has not learned anything measurable; try more epochs or "
            "another --lr (lr-find), or check the masks"
        )
    metrics = Metrics(accuracy=pixel_accuracy, error_rate=1 - pixel_accuracy, valid_loss=valid_loss,
                      iou=iou_per_code(counts, codes))  # fmt: skip
    return metrics, counts, kept


def build_manifest(opts: TrainOptions, table: MaskTable, prepared: Prepared, size: int, metrics: Metrics,
                   lr: float, seconds: tuple[float, float | None], best: Any) -> Manifest:  # fmt: skip
    from training.export import hyperparameters, normalization, run_fields

    return Manifest(
        name=opts.out.stem,
        kind=SEGMENTATION,
        classes=table.codes,
        arch=opts.arch,
        input_size=size,
        preprocessing=Preprocessing(
            resize_method=opts.resize_method,
            size=size,
            normalize=normalization(prepared.learn),
            augment=opts.augment,
        ),
        metrics=metrics,
        dataset=DatasetInfo(
            source=table.source.name,
            counts=table.present,  # segmentation: the images whose mask shows each code
            train_size=len(prepared.split.train_idx),
            valid_size=len(prepared.split.valid_idx),
            split=prepared.split.kind,
        ),
        hyperparameters=hyperparameters(opts, lr, size, prepared),
        **run_fields(opts.out, prepared.learn.model, seconds, best),
    )


def run_segmentation(opts: TrainOptions, source: Path) -> Outcome:
    """`train` on a segmentation set: data, U-Net, fit keeping the best epoch, export, reports, reload check."""
    from training.export import reload_check
    from training.reports import write_reports
    from training.segmentation_reports import OVERLAYS, summary_lines, write_segmentation_reports
    from training.train import Outcome, fit, resolve_lr

    with tempfile.TemporaryDirectory(prefix="learnserve-train-") as tmp:
        workdir = Path(tmp)
        table, prepared, size = prepare(opts, source, workdir)
        if opts.epochs > 0:
            check_batch_size(prepared, opts.bs)
        learn = prepared.learn
        lr, lr_find_seconds = resolve_lr(opts, prepared, opts.reports_dir)
        started = time.perf_counter()
        history, best = fit(learn, opts, lr)
        metrics, counts, kept = measure(learn, table.codes, OVERLAYS)
        train_seconds = time.perf_counter() - started
        # fastai's DiceMulti and JaccardCoeffMulti warn "Mean of empty slice" on every learn.predict (no targets to
        # score): the exported learner keeps pixel accuracy only; the manifest and reports hold the rest.
        learn.metrics = learn.metrics[:1]
        learn.path = Path(".")
        learn.export(opts.out.resolve())
        manifest = build_manifest(
            opts, table, prepared, size, metrics, lr, (train_seconds, lr_find_seconds), best
        )
        write_manifest(opts.out, manifest)
        reports = write_reports(history, opts.reports_dir, best.kept)
        reports += write_segmentation_reports(metrics, counts, kept, table.codes, opts.reports_dir)
        if lr_find_seconds is not None:
            reports.append(opts.reports_dir / "lr_find.png")
        if opts.verify:
            assert metrics.accuracy is not None
            got = reload_check(opts.out, prepared, metrics.accuracy, workdir)
            print(f"reload check: a fresh process predicts the validation set at pixel accuracy {got:.4f}")
        if opts.onnx:
            from training.onnx_export import export_onnx

            manifest = export_onnx(opts.out)
    print("\n".join(summary_lines(metrics, counts, table.codes)))
    return Outcome(manifest, reports)
