"""`python -m app serve` runs the service; `python -m app predict` classifies files with the same predictor."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from app.config import Settings
from app.errors import ModelLoadError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m app",
        description="Serve an exported fastai learner over HTTP, or classify image files with it.",
        epilog="Settings come from LEARNSERVE_* environment variables (see the README); flags override them.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("serve", help="serve the model over HTTP (Swagger UI at /docs)")
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (127.0.0.1; 0.0.0.0 in containers)")
    p.add_argument("--port", type=int, default=8000, help="port (8000)")
    p.add_argument("--model", type=Path, default=None, help="model .pkl (default: LEARNSERVE_MODEL_PATH)")

    p = sub.add_parser("predict", help="classify image files or folders and print a table, CSV or JSON")
    p.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="image files or folders")
    p.add_argument("--model", type=Path, default=None, help="model .pkl (default: LEARNSERVE_MODEL_PATH)")
    p.add_argument(
        "--format", choices=["table", "csv", "json"], default="table", help="output format (table)"
    )
    p.add_argument("--top-k", type=int, default=3, help="classes listed per image (3)")
    p.add_argument("--batch-size", type=int, default=32, help="images per forward pass (32)")
    p.add_argument(
        "--device", choices=["auto", "cpu", "cuda"], default=None, help="default: LEARNSERVE_DEVICE"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    overrides = {"model_path": args.model} if args.model else {}
    if getattr(args, "device", None):
        overrides["device"] = args.device
    settings = Settings(**overrides)
    if args.command == "serve":
        from app.server import serve

        return serve(settings, args.host, args.port)
    from app.cli import run_predict

    try:
        return run_predict(
            settings.model_path, args.paths, args.format, settings.device, args.batch_size, args.top_k,
            settings.max_pixels,
        )  # fmt: skip
    except ModelLoadError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
