"""In-process contenders, run in a fresh interpreter each: the physical limit (decode + the backend's pipelines +
forward, fastai or ONNX Runtime) and the `learn.predict` loop.

python -m bench.inprocess limit|predict|rss MODEL IMAGES_DIR --seconds S [--backend onnx] [--device cuda]
    [--batches 1,8,32]  -> one JSON line
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path


def peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def timed_loop(step, n_per_step: int, seconds: float) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    """Run `step` until `seconds` pass; return (images per second, seconds per step)."""
    for _ in range(3):
        step()
    calls = 0
    started = time.perf_counter()
    while (elapsed := time.perf_counter() - started) < seconds:
        step()
        calls += 1
    return calls * n_per_step / elapsed, elapsed / calls


def main() -> None:
    warnings.filterwarnings("ignore")
    p = argparse.ArgumentParser()
    p.add_argument("what", choices=["limit", "predict", "rss"])
    p.add_argument("model", type=Path)
    p.add_argument("images", type=Path)
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--backend", default="fastai")
    p.add_argument("--device", default="cpu")
    p.add_argument("--batches", default="1,8,32")
    args = p.parse_args()
    blobs = [f.read_bytes() for f in sorted(args.images.iterdir())]
    result: dict[str, float] = {}
    if args.what == "limit":
        from app.core.backends import open_backend, predict_images
        from app.core.imaging import decode_image
        from app.core.verify import verify_model_file

        model = args.model.with_suffix(".onnx") if args.backend == "onnx" else args.model
        backend = open_backend(verify_model_file(model), args.backend, args.device)
        for bs in map(int, args.batches.split(",")):
            cursor = 0

            def step(bs: int = bs) -> None:
                nonlocal cursor
                chunk = [blobs[(cursor + i) % len(blobs)] for i in range(bs)]
                cursor += bs
                predict_images(backend, [decode_image(b, 10**8) for b in chunk])

            ips, per_call = timed_loop(step, bs, args.seconds)
            result[f"ips_b{bs}"] = ips
            result[f"ms_b{bs}"] = per_call * 1000
    elif args.what == "predict":
        from fastai.learner import load_learner
        from fastai.vision.core import PILImage

        learn = load_learner(args.model)
        cursor = 0

        def one() -> None:
            nonlocal cursor
            cursor += 1
            with learn.no_bar():
                learn.predict(PILImage.create(blobs[cursor % len(blobs)]))

        ips, per_call = timed_loop(one, 1, args.seconds)
        result.update(ips=ips, ms=per_call * 1000)
    else:  # a plain process holding the loaded learner, after one prediction
        from fastai.learner import load_learner
        from fastai.vision.core import PILImage

        learn = load_learner(args.model)
        with learn.no_bar():
            learn.predict(PILImage.create(blobs[0]))
    result["rss_mb"] = peak_rss_mb()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
