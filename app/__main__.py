"""`python -m app serve` runs the service; `python -m app predict` classifies files with the same core."""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from app.config import Settings
from app.core.errors import ModelLoadError
from training.cli import bounded

top_k = bounded(1, 1000)  # as the server's ?top_k= and LEARNSERVE_TOP_K
positive = bounded(1, 1_000_000)


def add_model_options(p: argparse.ArgumentParser, runtime: bool = True) -> None:
    """Which model(s) and how to run them, the same flags and settings for every command; `runtime` adds the
    device and batch size, which the server takes from its settings only."""
    which = p.add_mutually_exclusive_group()
    which.add_argument(
        "--model", type=Path, default=None, help="one model .pkl or .onnx (default: LEARNSERVE_MODEL_PATH)"
    )
    which.add_argument(
        "--model-dir",
        type=Path,
        default=None,
        help="a folder of models (LEARNSERVE_MODEL_DIR); the default one (LEARNSERVE_DEFAULT_MODEL, or the only "
        "one) answers, where one model does",
    )
    p.add_argument("--backend", choices=["fastai", "onnx"], default=None, help="default: LEARNSERVE_BACKEND")
    if runtime:
        p.add_argument(
            "--device", choices=["auto", "cpu", "cuda"], default=None, help="default: LEARNSERVE_DEVICE"
        )
        p.add_argument(
            "--batch-size",
            type=positive,
            default=None,
            help="images per forward pass (default: LEARNSERVE_MAX_BATCH_SIZE)",
        )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m app",
        description="Serve exported fastai learners over HTTP, or classify image files with one.",
        epilog="Settings come from LEARNSERVE_* environment variables (see the README); flags override them.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("serve", help="serve the models over HTTP (Swagger UI at /docs)")
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (127.0.0.1; 0.0.0.0 in containers)")
    p.add_argument("--port", type=int, default=8000, help="port (8000)")
    add_model_options(p, runtime=False)

    p = sub.add_parser(
        "predict",
        help="classify image files or folders and print a table, CSV or JSON",
        description="Classify image files (folders are walked; the content decides, not the name) with the "
        "server's core and settings. Exit status: 0 when every file was classified (and, with --explain, "
        "explained); 1 when one could not be (without --keep-going the first such file ends the run; with it every "
        "file is tried and each failure is reported in its row; a file that could not be explained is named on "
        "stderr); 2 for a usage problem.",
    )
    p.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="image files or folders")
    add_model_options(p)
    p.add_argument(
        "--format", choices=["table", "csv", "json"], default="table", help="output format (table)"
    )
    p.add_argument(
        "--top-k", type=top_k, default=None, help="classes listed per image, 1-1000 (LEARNSERVE_TOP_K)"
    )
    p.add_argument(
        "--keep-going",
        action="store_true",
        help="try every file, reporting each failure in its row (exit 1 if any)",
    )
    p.add_argument(
        "--explain",
        type=Path,
        metavar="DIR",
        default=None,
        help="also write one Grad-CAM overlay per classified file to DIR (NAME.explain.png): where the evidence "
        "for its top class is",
    )

    p.add_argument(
        "--masks",
        type=Path,
        metavar="DIR",
        default=Path("masks"),
        help="segmentation models: where each image's mask goes, as NAME-HASH.png (NAME: the image's name without "
        "its suffix; HASH: 8 hex characters of the sha256 of its path as given), a greyscale PNG (8-bit; 16-bit past 256 codes) the size "
        "of the image whose pixel values are code indexes (./masks); the table prints each code's share of the "
        "pixels and the file",
    )

    p = sub.add_parser(
        "score",
        help="score many images into a CSV or Parquet table (a folder, a CSV or list of paths, or s3://...)",
        description="One output row per input: path, label, probability, the top-k beyond the first "
        "(label_2, probability_2, ...), error and detail. A bad file gets its row and error code; it never stops "
        "the job. Rows are in input order. A progress bar on a terminal, one summary line otherwise. A segmentation "
        "model's rows have share_CODE (each code's share of the pixels) and mask: the mask PNG written for the "
        "input beside OUT, in OUT's name without its suffix + .masks/ (predictions.masks/NAME-HASH.png; 8-bit, 16-bit past 256 codes, "
        "greyscale, the image's size, pixel value = code index; the local engine only).",
    )
    p.add_argument(
        "source",
        help="a folder (recursive), a CSV with a 'path' column, a text file of paths, or a URI Ray can read (s3://bucket/prefix)",
    )
    add_model_options(p)
    p.add_argument("--out", type=Path, required=True, help="predictions.csv or predictions.parquet")
    p.add_argument("--top-k", type=top_k, default=None, help="classes per row, 1-1000 (LEARNSERVE_TOP_K)")
    p.add_argument("--resume", action="store_true", help="skip inputs already in --out (or its .partial.csv)")
    p.add_argument(
        "--engine",
        choices=["local", "ray"],
        default="local",
        help="local (default): this process; ray: Ray Data",
    )
    p.add_argument(
        "--ray-address",
        default=None,
        help="join a Ray cluster: auto or ray://host:10001 (default: a local Ray)",
    )
    p.add_argument("--concurrency", type=positive, default=1, help="Ray actors, each with one model copy (1)")
    p.add_argument("--num-gpus", type=float, default=0.0, help="GPUs per Ray actor (0)")
    return parser


def settings_from(args: argparse.Namespace) -> Settings:
    overrides: dict[str, Any] = {}
    for flag, field in (("model", "model_path"), ("model_dir", "model_dir"), ("device", "device"),
                        ("batch_size", "max_batch_size"), ("backend", "backend")):  # fmt: skip
        if getattr(args, flag, None) is not None:
            overrides[field] = getattr(args, flag)
    return Settings(**overrides)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # Known noise, not the user's business: torch 2.14 deprecates torch.jit.script, which fastai calls on import.
    warnings.filterwarnings("ignore", message="`torch.jit.script` is deprecated", category=FutureWarning)
    try:
        settings = settings_from(args)
    except ValidationError as e:
        print(f"error: {e.errors()[0]['msg']}", file=sys.stderr)
        return 2
    if args.command == "serve":
        from app.api.server import serve

        return serve(settings, args.host, args.port)
    try:
        if args.command == "score":
            from app.cli.score import ScoreJob, run_score

            job = ScoreJob(args.source, args.out, args.top_k or settings.top_k, args.resume, args.engine,
                           args.ray_address, args.concurrency, args.num_gpus)  # fmt: skip
            return run_score(settings, job)
        from app.cli.predict import run_predict

        return run_predict(
            settings,
            args.paths,
            args.format,
            args.top_k,
            args.keep_going,
            args.model is not None or args.model_dir is not None,
            args.explain,
            args.masks,
        )
    except ModelLoadError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def score_main() -> int:
    """The `learnserve-score` console script: `python -m app score ...`."""
    return main(["score", *sys.argv[1:]])


if __name__ == "__main__":
    sys.exit(main())
