"""`python -m training COMMAND` (also `learnserve-train`): data, show, train, lr-find, interpret, clean, summary."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from training import distributed
from training.errors import TrainingError

MONITORS = ("valid_loss", "accuracy", "error_rate")  # the learner's metrics (training.architectures)

EPILOG = """examples:
  python -m training data digits data/digits
  python -m training show data/digits --augment --out batch.png
  python -m training train data/digits --out models/digits.pkl      # plots in reports/digits/
  torchrun --nproc_per_node 2 -m training train data/digits --out models/digits.pkl
  python -m training lr-find data/digits --plot lr.png
  python -m training interpret models/digits.pkl data/digits --out reports/digits
  python -m training clean data/digits --decisions reports/digits/top_losses.csv
  python -m training summary models/digits.pkl
"""


def add_model_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "data",
        help="a folder with one subfolder per class (or train/ and valid/ folders of them), "
        "a CSV of path,label[,is_valid] rows, or 'digits'",
    )
    p.add_argument(
        "--arch", default="cnn", help="cnn (small convnet, fast on CPU), resnet18, resnet34 or resnet50"
    )
    p.add_argument(
        "--pretrained",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="start a resnet from ImageNet weights (needs them cached or a network); default: from scratch",
    )
    p.add_argument(
        "--size", type=int, default=None, help="input size in pixels (default: 28 for cnn, 224 for resnets)"
    )
    p.add_argument("--bs", type=int, default=64, help="batch size (default: 64)")
    p.add_argument(
        "--valid-pct",
        type=float,
        default=None,
        help="share of images held out at random for validation (0.2); not with DATA's own split",
    )
    p.add_argument("--seed", type=int, default=42, help="random seed for the split and the weights (42)")
    p.add_argument("--resize-method", default="squish", help="squish, crop or pad (default: squish)")
    p.add_argument("--augment", action="store_true", help="light augmentation: rotate, zoom, warp; no flips")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m training",
        description="Train an image classifier with fastai and export it for learnserve.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("data", help="write a bundled dataset as PNG class folders")
    p.add_argument("name", choices=["digits"], help="digits: scikit-learn's 1,797 handwritten digits")
    p.add_argument("dest", type=Path, help="folder to write into")
    p.add_argument("--size", type=int, default=28, help="upscale the 8x8 digits to this size (28)")

    p = sub.add_parser("show", help="save a grid of one batch (after all transforms) with its labels")
    add_model_options(p)
    p.add_argument("--out", type=Path, default=Path("batch.png"), help="PNG to write (batch.png)")
    p.add_argument("--valid", action="store_true", help="show a validation batch (no augmentation)")
    p.add_argument("-n", type=int, default=16, help="how many images (16, at most one batch)")

    p = sub.add_parser(
        "train",
        help="train with one-cycle, export NAME.pkl and its NAME.json manifest, plots in reports/NAME/",
        description="Train with one-cycle and export the learner. Under `torchrun --nproc_per_node N` (or "
        "`accelerate launch`) N processes train one model together; rank 0 writes every file.",
    )
    add_model_options(p)
    p.add_argument("--out", type=Path, required=True, help="where to write the learner, e.g. models/NAME.pkl")
    p.add_argument("--epochs", type=int, default=8, help="one-cycle epochs (8); 0 exports an untrained model")
    p.add_argument(
        "--lr",
        default=None,
        help="learning rate, or 'find' for the lr finder's valley (default: 1e-2 cnn, 2e-3 resnets)",
    )
    p.add_argument(
        "--freeze-epochs",
        type=int,
        default=0,
        help="fine-tune a --pretrained resnet: epochs with the body frozen first",
    )
    p.add_argument(
        "--monitor",
        choices=MONITORS,
        default="valid_loss",
        help="the metric that picks the epoch to keep and drives --early-stop (valid_loss)",
    )
    p.add_argument(
        "--early-stop",
        type=int,
        default=None,
        metavar="PATIENCE",
        help="stop after PATIENCE epochs without a better --monitor value",
    )
    p.add_argument("--fp16", action="store_true", help="mixed-precision training (CUDA GPUs only)")
    p.add_argument(
        "--reports",
        type=Path,
        default=None,
        help="folder for history.csv, loss.png and schedule.png (default: reports/NAME)",
    )
    p.add_argument(
        "--no-verify", dest="verify", action="store_false", help="skip the fresh-process reload check"
    )

    p = sub.add_parser("lr-find", help="run the learning-rate finder and save its plot")
    add_model_options(p)
    p.add_argument("--plot", type=Path, default=Path("lr_find.png"), help="PNG to write (lr_find.png)")

    p = sub.add_parser("interpret", help="confusion matrix, top losses and most confused pairs")
    p.add_argument("model", type=Path, help="an exported MODEL.pkl (with its .json manifest beside it)")
    p.add_argument(
        "data", help="the dataset it was trained on (the validation split is rebuilt from the manifest)"
    )
    p.add_argument("--out", type=Path, default=Path("interpretation"), help="folder for the PNGs and CSV")
    p.add_argument("--top", type=int, default=9, help="how many top losses to show and list (9)")

    p = sub.add_parser("clean", help="apply keep/delete/relabel decisions from a CSV (nothing is destroyed)")
    p.add_argument("data", type=Path, help="the class-folder dataset")
    p.add_argument(
        "--decisions", type=Path, required=True, help="top_losses.csv with an added 'action' column"
    )

    p = sub.add_parser("summary", help="print the layer table of an exported model")
    p.add_argument("model", type=Path)
    return parser


def run(args: argparse.Namespace) -> None:
    if args.command == "data":
        from training.datasets import write_digits

        started = time.perf_counter()
        n = write_digits(args.dest, size=args.size)
        print(f"wrote {n} images in 10 classes to {args.dest} ({time.perf_counter() - started:.1f}s)")
    elif args.command == "show":
        from training.learner import ModelOptions
        from training.show import show_batch

        model_opts = ModelOptions(
            **{k: v for k, v in vars(args).items() if k not in ("command", "out", "valid", "n")}
        )
        n = show_batch(model_opts, args.out, valid=args.valid, n=args.n)
        print(f"wrote {args.out} ({n} {'validation' if args.valid else 'training'} images)")
    elif args.command == "train":
        from training.train import TrainOptions, train

        opts = TrainOptions(**{k: v for k, v in vars(args).items() if k != "command"})
        outcome = train(opts)
        if outcome is None:  # a rank other than 0: rank 0 reports
            return
        manifest = outcome.manifest
        m = manifest.metrics
        kept = (
            f"kept epoch {manifest.best_epoch} of {manifest.epochs_run}"
            if manifest.best_epoch
            else "untrained"
        )
        print(
            f"{kept}: accuracy {m.accuracy:.4f}, error_rate {m.error_rate:.4f}, valid_loss {m.valid_loss:.4f}; "
            f"{manifest.train_seconds:.1f}s of training"
            + (f" in {manifest.world_size} processes" if manifest.world_size > 1 else "")
        )
        print(f"model:    {opts.out}\nmanifest: {opts.out.with_suffix('.json')}")
        if outcome.reports:
            print(f"reports:  {', '.join(str(p) for p in outcome.reports)}")
    elif args.command == "lr-find":
        import tempfile

        from training.learner import ModelOptions, prepare
        from training.lr_find import find_lr

        model_opts = ModelOptions(**{k: v for k, v in vars(args).items() if k not in ("command", "plot")})
        with tempfile.TemporaryDirectory(prefix="learnserve-lr-") as tmp:
            found = find_lr(prepare(model_opts, Path(tmp)).learn, plot=args.plot)
        print("suggested learning rates: " + ", ".join(f"{k} {v:.2e}" for k, v in found.items()))
        print(f"plot: {args.plot}")
    elif args.command == "interpret":
        from training.interpret import interpret

        confused = interpret(args.model, args.data, args.out, k=args.top)
        print("most confused (actual, predicted, count):")
        for actual, predicted, n in confused[:10] or [("-", "-", 0)]:
            print(f"  {actual:>12}  {predicted:>12}  {n}")
        print(f"wrote {args.out}/confusion_matrix.png, top_losses.png, top_losses.csv")
    elif args.command == "clean":
        from training.clean import clean

        print(clean(args.data, args.decisions))
    elif args.command == "summary":
        from training.summary import summarize

        print(summarize(args.model))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
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
