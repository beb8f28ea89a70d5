"""`python -m app serve` runs the service; `python -m app predict` classifies files with the same core."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from app.config import Settings
from app.core.errors import ModelLoadError


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
    group = p.add_mutually_exclusive_group()
    group.add_argument(
        "--model", type=Path, default=None, help="one model .pkl (default: LEARNSERVE_MODEL_PATH)"
    )
    group.add_argument(
        "--model-dir", type=Path, default=None, help="serve every model in this folder (LEARNSERVE_MODEL_DIR)"
    )
    p.add_argument("--backend", choices=["fastai", "onnx"], default=None, help="default: LEARNSERVE_BACKEND")

    p = sub.add_parser("predict", help="classify image files or folders and print a table, CSV or JSON")
    p.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="image files or folders")
    p.add_argument("--model", type=Path, default=None, help="model .pkl (default: LEARNSERVE_MODEL_PATH)")
    p.add_argument(
        "--format", choices=["table", "csv", "json"], default="table", help="output format (table)"
    )
    p.add_argument(
        "--top-k", type=int, default=None, help="classes listed per image (default: LEARNSERVE_TOP_K)"
    )
    p.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="images per forward pass (default: LEARNSERVE_MAX_BATCH_SIZE)",
    )
    p.add_argument(
        "--device", choices=["auto", "cpu", "cuda"], default=None, help="default: LEARNSERVE_DEVICE"
    )
    p.add_argument("--backend", choices=["fastai", "onnx"], default=None, help="default: LEARNSERVE_BACKEND")
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
    try:
        settings = settings_from(args)
    except ValidationError as e:
        print(f"error: {e.errors()[0]['msg']}", file=sys.stderr)
        return 2
    if args.command == "serve":
        from app.api.server import serve

        return serve(settings, args.host, args.port)
    from app.cli.predict import run_predict

    try:
        return run_predict(settings, args.paths, args.format, args.top_k)
    except ModelLoadError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
