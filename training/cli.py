"""The command line: every option, with its values checked by argparse before anything slow is imported or read.

A bad number (`--lr abc`, `--valid-pct 1.5`, `--epochs 0`) is answered at once with argparse's usage line, exit 2,
before torch and fastai load (seconds) and before the dataset is scanned (minutes for a large one). Problems that
need the data or the machine to see (a missing folder, no GPU for --fp16) are TrainingErrors, one `error:` line.
Import-light on purpose: argparse and pathlib only.
"""

from __future__ import annotations

import argparse
import functools
from collections.abc import Callable
from datetime import date
from pathlib import Path

ARCHS = ("cnn", "resnet18", "resnet34", "resnet50")
RESIZE_METHODS = ("squish", "crop", "pad")
# the learner's metrics (f1: multi-label only; mae, rmse: regression; distance: key points)
MONITORS = ("valid_loss", "accuracy", "error_rate", "f1", "mae", "rmse", "distance")
DEFAULT_EPOCHS = 8
DEFAULT_NUM_IT = 100  # fastai's lr_find(num_it=100)
# fastai reads its suggestions from the losses after the first tenth and before the last 5, and `slide` compares
# points 15 apart: 23 iterations leave the 16 it needs (n - n // 10 - 5 >= 16).
MIN_NUM_IT = 23

EPILOG = """examples:
  python -m training data digits data/digits
  python -m training show data/digits --augment --out batch.png
  python -m training train data/digits --out models/digits.pkl      # plots in reports/digits/
  python -m training train marks --out models/marks.pkl             # multi-label, bundled
  python -m training train shapes --out models/shapes.pkl           # segmentation, bundled
  python -m training train discs --out models/discs.pkl             # regression, bundled
  python -m training train spots --out models/spots.pkl             # key points, bundled
  torchrun --nproc_per_node 2 -m training train data/digits --out models/digits.pkl
  python -m training lr-find data/digits --plot lr.png --num-it 50
  python -m training interpret models/digits.pkl data/digits        # into reports/digits/
  python -m training clean data/digits --decisions reports/digits/top_losses.csv
  python -m training summary models/digits.pkl
  python -m training harvest capture/ --into data/digits           # captured inputs with feedback
  python -m training export-onnx models/digits.pkl                   # models/digits.onnx
  python -m training import export.pkl --name pets --data data/pets  # models/pets.pkl, from a notebook
"""


def bounded(least: int, most: int | None = None) -> Callable[[str], int]:
    """An argparse type: a whole number from `least` (up to `most`). The one integer check of both command lines
    (`python -m training` and `python -m app`)."""

    def parse(text: str) -> int:
        try:
            n = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid int value: '{text}'") from None
        if most is not None and not least <= n <= most:
            raise argparse.ArgumentTypeError(f"must be between {least} and {most}, got {n}")
        if n < least:
            raise argparse.ArgumentTypeError(f"must be at least {least}, got {n}")
        return n

    return parse


positive = bounded(1)
count = bounded(0)


def fraction(text: str) -> float:
    try:
        x = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid number: '{text}'") from None
    if not 0 < x < 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1 (a share, e.g. 0.2), got {text}")
    return x


iterations = bounded(MIN_NUM_IT)


def day(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a date as YYYY-MM-DD, got '{text}'") from None


def threshold(text: str) -> float:
    try:
        x = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid number: '{text}'") from None
    if not 0 < x < 1:
        raise argparse.ArgumentTypeError(f"must be a probability between 0 and 1 (e.g. 0.5), got {text}")
    return x


def learning_rate(text: str) -> str:
    """A positive number, or `find`; kept as text (the manifest records the number actually used)."""
    if text == "find":
        return text
    try:
        lr = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number (e.g. 1e-3) or 'find', got '{text}'") from None
    if not lr > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return text


def add_data_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "data",
        help="a folder with one subfolder per class (or train/ and valid/ folders of them), "
        "a CSV of path,label[,is_valid] rows (path,labels: multi-label, labels separated by spaces), "
        "a segmentation set (DATA/images/, DATA/masks/ of code indices, DATA/codes.txt), "
        "a CSV of path and numbers (no label column): a regression on every column but path and is_valid, or "
        "key points when the columns are NAME_x,NAME_y pairs (pixels of the original image, from its top-left); "
        "'digits', 'marks', 'discs', 'spots' or 'shapes' (bundled; marks: multi-label, discs: regression, spots: "
        "key points, shapes: segmentation)",
    )
    p.add_argument(
        "--targets",
        default=None,
        metavar="NAMES",
        help="a numeric CSV: the target columns, comma-separated, in order (default: every column but path and "
        "is_valid); NAME stands for NAME_x,NAME_y when those columns exist",
    )
    p.add_argument(
        "--multi-label",
        action="store_true",
        help="read a CSV's label column as space-separated labels (a 'labels' column always is)",
    )
    p.add_argument(
        "--threshold",
        type=threshold,
        default=None,
        help="multi-label: give a label when its probability is over this (0.5)",
    )
    p.add_argument(
        "--arch", choices=ARCHS, default="cnn", help="cnn: a small convnet, fast on a CPU (default)"
    )
    p.add_argument(
        "--pretrained",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="start a resnet from ImageNet weights (needs them cached or a network); default: from scratch",
    )
    p.add_argument(
        "--size",
        type=positive,
        default=None,
        help="input size in pixels (default: 28 for cnn, 224 for resnets)",
    )
    p.add_argument("--bs", type=positive, default=64, help="batch size (default: 64)")
    p.add_argument(
        "--valid-pct",
        type=fraction,
        default=None,
        help="share of images held out at random for validation (0.2); not with DATA's own split",
    )
    p.add_argument(
        "--stratify",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="hold out the same share of every class (default); --no-stratify: a plain random share",
    )
    p.add_argument("--seed", type=int, default=42, help="random seed for the split and the weights (42)")
    p.add_argument("--resize-method", choices=RESIZE_METHODS, default="squish", help="(default: squish)")
    p.add_argument("--augment", action="store_true", help="light augmentation: rotate, zoom, warp; no flips")


def add_num_it_option(p: argparse.ArgumentParser, default: int | None, when: str = "") -> None:
    p.add_argument(
        "--num-it",
        type=iterations,
        default=default,
        metavar="N",
        help=f"{when}the lr finder's iterations (fastai's num_it; default {DEFAULT_NUM_IT}, at least {MIN_NUM_IT}): "
        "each trains one batch, so its time grows in proportion to N",
    )


def add_train_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=Path, required=True, help="where to write the learner, e.g. models/NAME.pkl")
    p.add_argument("--epochs", type=count, default=None, help=f"one-cycle epochs ({DEFAULT_EPOCHS})")
    p.add_argument(
        "--untrained",
        action="store_true",
        help="export the model without training it (--epochs 0), e.g. to benchmark serving",
    )
    p.add_argument(
        "--lr",
        type=learning_rate,
        default=None,
        help="learning rate, or 'find' for the lr finder's valley (default: 1e-2 cnn, 2e-3 resnets)",
    )
    add_num_it_option(p, None, when="with --lr find: ")
    p.add_argument(
        "--freeze-epochs",
        type=count,
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
        type=positive,
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
    p.add_argument(
        "--onnx", action="store_true", help="also export NAME.onnx for ONNX Runtime (see export-onnx)"
    )
    p.set_defaults(_check=functools.partial(check_train_args, p))  # run by parse_args, with p's usage line


def check_train_args(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """--epochs 0 only with an explicit --untrained; options that would do nothing without training are refused."""
    if args.num_it is not None and args.lr != "find":
        p.error("argument --num-it: sets the lr finder's iterations, which only run with --lr find")
    if not args.untrained:
        if args.epochs == 0:
            p.error("argument --epochs: 0 trains nothing; to export an untrained model, add --untrained")
        args.epochs = DEFAULT_EPOCHS if args.epochs is None else args.epochs
        return
    if args.epochs:
        p.error(f"argument --untrained: trains no epochs, so --epochs {args.epochs} contradicts it")
    idle = [name for name, given in (("--lr", args.lr is not None), ("--early-stop", args.early_stop is not None),
                                     ("--freeze-epochs", args.freeze_epochs > 0), ("--fp16", args.fp16)) if given]  # fmt: skip
    if idle:
        p.error(f"argument --untrained: {', '.join(idle)} would do nothing without training")
    args.epochs = 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m training",
        description="Train an image classifier with fastai and export it for learnserve.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "data",
        help="write a bundled dataset as PNGs (digits: class folders; marks: a CSV; shapes: images/ and masks/)",
    )
    p.add_argument(
        "name",
        choices=["digits", "marks", "discs", "spots", "shapes"],
        help="digits: scikit-learn's 1,797 handwritten digits; marks: 400 generated multi-label images "
        "(images/ and labels.csv); discs: 400 images of a disc, its radius and brightness to learn (values.csv); "
        "spots: 400 48x32 images with a red and a blue spot, their centres to learn (points.csv); shapes: 300 "
        "generated segmentation images (images/, masks/, codes.txt)",
    )
    p.add_argument("dest", type=Path, help="folder to write into")
    p.add_argument(
        "--size",
        type=positive,
        default=None,
        help="image size: digits upscaled to it (28); marks and discs (32); spots: its height (32, width 1.5x); "
        "shapes (64)",
    )

    p = sub.add_parser("show", help="save a grid of one batch (after all transforms) with its labels")
    add_data_options(p)
    p.add_argument("--out", type=Path, default=Path("batch.png"), help="PNG to write (batch.png)")
    p.add_argument("--valid", action="store_true", help="show a validation batch (no augmentation)")
    p.add_argument("-n", type=positive, default=16, help="how many images (16, at most one batch)")

    p = sub.add_parser(
        "train",
        help="train with one-cycle, export NAME.pkl and its NAME.json manifest, plots in reports/NAME/",
        description="Train with one-cycle and export the learner. Under `torchrun --nproc_per_node N` (or "
        "`accelerate launch`) N processes train one model together; rank 0 writes every file.",
    )
    add_data_options(p)
    add_train_options(p)

    p = sub.add_parser("lr-find", help="run the learning-rate finder and save its plot")
    add_data_options(p)
    p.add_argument("--plot", type=Path, default=Path("lr_find.png"), help="PNG to write (lr_find.png)")
    add_num_it_option(p, DEFAULT_NUM_IT)

    p = sub.add_parser("interpret", help="confusion matrix, top losses and most confused pairs")
    p.add_argument("model", type=Path, help="an exported MODEL.pkl (with its .json manifest beside it)")
    p.add_argument(
        "data", help="the dataset it was trained on (the validation split is rebuilt from the manifest)"
    )
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="folder for the PNGs and the CSV (default: reports/NAME, beside train's plots, NAME from MODEL)",
    )
    p.add_argument("--top", type=positive, default=9, help="how many top losses to show and list (9)")

    p = sub.add_parser("clean", help="apply keep/delete/relabel decisions from a CSV (nothing is destroyed)")
    p.add_argument(
        "data",
        type=Path,
        help="the class-folder dataset, or a multi-label CSV (path,labels): actions are then keep, delete, or the "
        "new labels separated by spaces ((none) for none); the CSV is rewritten, first copied to CSV.orig",
    )
    p.add_argument(
        "--decisions", type=Path, required=True, help="top_losses.csv with an added 'action' column"
    )

    p = sub.add_parser(
        "export-onnx",
        help="export MODEL.pkl to MODEL.onnx for ONNX Runtime (the slim image), recorded in MODEL.json",
        description="Writes learn.model with its softmax as ONNX (dynamic batch axis), checked against learn.model, "
        "and records it and the learner's validation pipeline in the manifest, so learnserve can serve it "
        "without fastai or torch (LEARNSERVE_BACKEND=onnx). A learner whose validation pipeline holds a "
        "transform the ONNX path cannot reproduce is refused, naming it (exit 2); its .pkl still serves.",
    )
    p.add_argument("model", type=Path, help="an exported MODEL.pkl (with its .json manifest beside it)")
    p.add_argument("--out", type=Path, default=None, help="where to write the graph (default: MODEL.onnx)")

    p = sub.add_parser(
        "import",
        help="bring in a learner exported elsewhere (learn.export(), fastai 2.0-2.8): OUT/NAME.pkl and NAME.json",
        description="Checks that EXPORT is a fastai vision single-label classifier, loads it in a child process "
        "(fastai <= 2.7 exports are mapped onto this fastai), re-exports it with this fastai, checks that the "
        "re-export answers as the original did, and writes OUT/NAME.pkl with its manifest, ready to serve. A pickle "
        "is code, and so is --code: import only what you trust. Refusals exit with status 2 and write nothing.",
    )
    p.add_argument("source", type=Path, metavar="EXPORT", help="the .pkl that learn.export() wrote")
    p.add_argument("--name", required=True, help="the model's name: OUT/NAME.pkl, /models/NAME/predict")
    p.add_argument("--out", type=Path, default=Path("models"), help="folder to write into (models/)")
    p.add_argument(
        "--data",
        default=None,
        help="labelled images to measure its accuracy on (a class-folder dataset or a CSV, as for train); "
        "without it the manifest says 'not validated'",
    )
    p.add_argument("--onnx", action="store_true", help="also export NAME.onnx for ONNX Runtime")
    p.add_argument(
        "--code",
        type=Path,
        default=None,
        metavar="FILE.py",
        help="a file defining what the notebook defined and the pickle names (e.g. a custom transform); it runs",
    )

    p = sub.add_parser(
        "harvest",
        help="copy captured inputs with feedback into DATA's class folders (deduplicated, never overwriting)",
        description="Reads the server's LEARNSERVE_CAPTURE_DIR (records, feedback, blobs) and copies every "
        "captured input with feedback into DATA/<label>/<sha256>.<ext> (or beside a CSV, with a row appended), "
        "skipping images already in DATA; prints what it added per class.",
    )
    p.add_argument("capture", type=Path, metavar="CAPTURE_DIR", help="the server's LEARNSERVE_CAPTURE_DIR")
    p.add_argument("--into", type=Path, required=True, metavar="DATA", help="the dataset `train` reads")
    p.add_argument(
        "--uncertain-only", action="store_true", help="only inputs kept as uncertain (not the random sample)"
    )
    p.add_argument("--since", type=day, default=None, metavar="YYYY-MM-DD", help="only inputs captured since")
    p.add_argument(
        "--unlabelled",
        type=Path,
        default=None,
        metavar="CSV",
        help="also list the captured inputs without feedback, with an empty `action` column to fill in",
    )
    p.add_argument(
        "--labels",
        type=Path,
        default=None,
        metavar="CSV",
        help="a filled-in --unlabelled file: its actions (a class name, `correct`, `delete`) label those inputs",
    )

    p = sub.add_parser("summary", help="print the model's manifest summary and layer table")
    p.add_argument("model", type=Path)
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse and check; exits with argparse's usage line (status 2) on anything it can judge alone."""
    parser = build_parser()
    args = parser.parse_args(argv)
    check = vars(args).pop("_check", None)
    if check is not None:
        check(args)
    return args
