"""`python -m training COMMAND` (also `learnserve-train`): data, show, train, lr-find, interpret, clean, import,
harvest, summary.

The options live in training/cli.py and are checked there before anything slow is imported; each command's work
is imported only when it runs.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path
from typing import Any

from training import distributed
from training.cli import build_parser, parse_args
from training.errors import TrainingError

__all__ = ["build_parser", "main"]

MARKS_IMAGES = 400  # `data marks`: as many as `train marks` writes to the data home
SHAPES_IMAGES = 300  # `data shapes`: as many as `train shapes` writes to the data home


def options(args: argparse.Namespace, *leave_out: str) -> dict[str, Any]:
    return {k: v for k, v in vars(args).items() if k not in ("command", *leave_out)}


def run(args: argparse.Namespace) -> None:
    if args.command == "data":
        from training.bundled import write_digits
        from training.marks import MARKS, write_marks

        started = time.perf_counter()
        if args.name in ("discs", "spots"):
            what = write_numeric(args.name, args.dest, args.size)
        elif args.name == "marks":
            try:
                table = write_marks(args.dest, n=MARKS_IMAGES, size=args.size or 32)
            except OSError as e:
                raise TrainingError(f"cannot write to {args.dest}: {e.strerror or e}") from e
            what = f"{MARKS_IMAGES} images with {len(MARKS)} labels to {args.dest} (labels in {table})"
        elif args.name == "shapes":
            from training.shapes import CODES, write_shapes

            try:
                write_shapes(args.dest, n=SHAPES_IMAGES, size=args.size or 64)
            except OSError as e:
                raise TrainingError(f"cannot write to {args.dest}: {e.strerror or e}") from e
            what = f"{SHAPES_IMAGES} images with masks of {len(CODES)} codes to {args.dest} (images/, masks/, codes.txt)"
        else:
            what = f"{write_digits(args.dest, size=args.size or 28)} images in 10 classes to {args.dest}"
        print(f"wrote {what} ({time.perf_counter() - started:.1f}s)")
    elif args.command == "show":
        from training.learner import ModelOptions
        from training.show import show_batch

        n = show_batch(
            ModelOptions(**options(args, "out", "valid", "n")), args.out, valid=args.valid, n=args.n
        )
        print(f"wrote {args.out} ({n} {'validation' if args.valid else 'training'} images)")
    elif args.command == "train":
        from training.train import TrainOptions, train

        opts = TrainOptions(**options(args))
        outcome = train(opts)
        if outcome is None:  # a rank other than 0: rank 0 reports
            return
        print(outcome.summary())
        print(f"model:    {opts.out}\nmanifest: {opts.out.with_suffix('.json')}")
        if outcome.manifest.onnx is not None:
            print(onnx_line(opts.out.with_suffix(".onnx"), outcome.manifest.onnx.max_abs_diff))
        if outcome.reports:
            print(f"reports:  {', '.join(str(p) for p in outcome.reports)}")
    elif args.command == "lr-find":
        import tempfile

        from training.learner import ModelOptions, check_batch_size, prepare
        from training.lr_find import USED, find_lr

        with tempfile.TemporaryDirectory(prefix="learnserve-lr-") as tmp:
            prepared = prepare(ModelOptions(**options(args, "plot", "num_it")), Path(tmp))
            check_batch_size(prepared)  # fastai's finder divides by the number of training batches
            found = find_lr(prepared.learn, plot=args.plot, num_it=args.num_it)
        print("suggested learning rates: " + ", ".join(f"{k} {v:.2e}" for k, v in found.items()))
        print(f"plot: {args.plot} (`train --lr find` uses {USED}: {found[USED]:.2e})")
    elif args.command == "interpret":
        from training.interpret import interpret

        out = args.out or Path("reports") / args.model.stem
        confused = interpret(args.model, args.data, out, k=args.top)
        if confused and isinstance(confused[0], str):  # multi-label: its own figures
            print("\n".join(str(line) for line in confused))
            return
        print("most confused (actual, predicted, count):")
        pairs = [pair for pair in confused if isinstance(pair, tuple)]
        for actual, predicted, n in pairs[:10] or [("-", "-", 0)]:
            print(f"  {actual:>12}  {predicted:>12}  {n}")
        why = ", top_losses_why.png" if (out / "top_losses_why.png").exists() else ""
        print(f"wrote {out}/confusion_matrix.png, top_losses.png{why}, top_losses.csv")
    elif args.command == "clean":
        from training.clean import clean

        print(clean(args.data, args.decisions))
    elif args.command == "export-onnx":
        from training.onnx_export import export_onnx

        manifest = export_onnx(args.model, args.out)
        assert manifest.onnx is not None
        print(onnx_line(args.out or args.model.with_suffix(".onnx"), manifest.onnx.max_abs_diff))
    elif args.command == "import":
        from training.import_model import ImportOptions, import_export

        imported = import_export(ImportOptions(**options(args)))
        for warning in imported.warnings:
            print(f"warning: {warning}", file=sys.stderr)
        print(import_summary(imported))
    elif args.command == "harvest":
        from training.harvest import harvest

        print(harvest(**options(args)))
    elif args.command == "summary":
        from training.summary import summarize

        print(summarize(args.model))


def write_numeric(name: str, dest: Path, size: int | None) -> str:
    """`data discs` / `data spots`: the bundled regression and key point sets."""
    from training.discs import VALUES, write_discs
    from training.spots import POINTS, write_spots

    try:
        if name == "discs":
            table = write_discs(dest, n=MARKS_IMAGES, size=size or 32)
            return f"{MARKS_IMAGES} images with values {', '.join(VALUES)} to {dest} (in {table})"
        height = size or 32
        table = write_spots(dest, n=MARKS_IMAGES, width=height * 3 // 2, height=height)
        return f"{MARKS_IMAGES} images with points {', '.join(POINTS)} to {dest} (in {table})"
    except OSError as e:
        raise TrainingError(f"cannot write to {dest}: {e.strerror or e}") from e


def import_summary(imported: Any) -> str:
    m = imported.manifest
    figure = (f"accuracy {m.metrics.accuracy:.4f} on {m.dataset.valid_size} images" if m.metrics and m.dataset
              else "not validated (add --data to measure its accuracy)")  # fmt: skip
    lines = [
        f"imported {m.imported.file} ({m.imported.written_by['fastai']}) as {m.name}: {m.kind}, "
        f"{len(m.classes)} classes, {m.input_size} px, {m.arch}; {figure}",
        f"model:    {imported.model} (version {m.version})\nmanifest: {imported.model.with_suffix('.json')}",
    ]
    if m.onnx is not None:
        lines.append(onnx_line(imported.model.with_suffix(".onnx"), m.onnx.max_abs_diff))
    return "\n".join(lines)


def onnx_line(path: Path, diff: float) -> str:
    return f"onnx:     {path} (probabilities within {diff:.1e} of learn.model; serve it with LEARNSERVE_BACKEND=onnx)"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # Known noise, not the user's business: torch 2.14 deprecates torch.jit.script, which fastai calls on import.
    warnings.filterwarnings("ignore", message="`torch.jit.script` is deprecated", category=FutureWarning)
    try:
        if distributed.is_distributed() and args.command != "train":
            raise TrainingError(
                f"only `train` runs in several processes; start `{args.command}` without torchrun"
            )
        run(args)
    except TrainingError as e:
        where = f"[rank {distributed.rank()}] " if distributed.rank() else ""
        print(f"error: {where}{e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
