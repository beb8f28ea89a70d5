"""The benchmark's own arithmetic (bench/): which server each contender name starts, the multi-process memory sum,
and the report's tables and target checks on known numbers, so a report never states a ratio it did not compute."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from bench.assets import MODELS
from bench.load import learnserve_env, memory_mb, process_tree
from bench.report import table, targets, write_report


def test_contender_names_choose_backend_processes_and_device() -> None:
    m = MODELS["digits-cnn-28"]
    one = learnserve_env("learnserve", m, "cpu")
    assert (one["LEARNSERVE_BACKEND"], one["LEARNSERVE_WORKERS"], one["LEARNSERVE_DEVICE"]) == (
        "fastai",
        "1",
        "cpu",
    )
    auto = learnserve_env("learnserve-onnx-workers", m, "cpu")
    assert (auto["LEARNSERVE_BACKEND"], auto["LEARNSERVE_WORKERS"]) == ("onnx", "auto")
    three = learnserve_env("learnserve-workers-3", m, "cuda")
    assert (three["LEARNSERVE_BACKEND"], three["LEARNSERVE_WORKERS"], three["LEARNSERVE_DEVICE"]) == (
        "fastai",
        "3",
        "cuda",
    )
    assert learnserve_env("learnserve-capture-5pct", m, "cpu")["LEARNSERVE_CAPTURE"] == "sample:0.05"


def test_memory_is_summed_over_a_process_and_its_children() -> None:
    hold = "import time; b = bytearray(200 << 20); print('ready', flush=True); time.sleep(60)"
    child = subprocess.Popen([sys.executable, "-c", hold], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "ready"  # the child holds its 200 MB (zeroed: resident)
        assert child.pid in process_tree(os.getpid())
        alone = memory_mb(child.pid, "VmRSS")
        assert alone > 200
        assert memory_mb(os.getpid(), "VmRSS") > alone  # this process plus its child
    finally:
        child.kill()
        child.communicate()  # reaped, its pipe closed


def server(rps: float, p50: float) -> dict[str, float]:
    return {
        "rps_c16": rps,
        "p50_c1_ms": p50,
        "p99_c1_ms": p50 * 2,
        "rss_mb": 900,
        "idle_rss_mb": 800,
        "ready_s": 3,
    }


def test_the_report_checks_the_multi_process_targets() -> None:
    limit = {
        "ips_b1": 1000.0,
        "ms_b1": 1.0,
        "ips_b8": 3000.0,
        "ms_b8": 2.7,
        "ips_b32": 2900.0,
        "ms_b32": 11.0,
    }
    results = {
        "digits-cnn-28": {
            "limit": limit,
            "learnserve": server(900, 1.6),
            "learnserve-workers": server(1620, 1.7),  # 1.80x, +0.1 ms: met
            "learnserve-onnx": server(1400, 0.9),
            "learnserve-onnx-workers": server(1960, 2.0),  # 1.40x: not met; +1.1 ms: not met
        },
        "resnet18-64": {
            "learnserve": server(400, 10),
            "learnserve-workers": server(392, 10.2),
        },  # 0.98x: met
    }
    text = targets(results)
    assert (
        "fastai WORKERS=auto 1.80x one process (target 1.5x: met), p50 at c=1 +0.10 ms (target within 1 ms: met)"
        in text
    )
    assert (
        "ONNX WORKERS=auto 1.40x one process (target 1.5x: **not met**), p50 at c=1 +1.10 ms (target within 1 ms: **not met**)"
        in text
    )
    assert "- **resnet18-64**: fastai WORKERS=auto 0.98x one process (target 0.95x: met)" in text
    rows = table(results)
    assert (
        "| digits-cnn-28 | **learnserve**, ONNX Runtime backend, LEARNSERVE_WORKERS=auto | 1,960.0 |" in rows
    )
    assert "(batch 1 / 8 / 32) | 1,000.0 / 3,000.0 / 2,900.0 |" in rows


def test_a_cuda_report_names_the_card_and_checks_the_share_of_the_limit(tmp_path: Path) -> None:
    limit = {f"ips_b{b}": 100.0 * b for b in (1, 8, 16, 32, 64)} | {"ms_b1": 10.0}  # best: 6,400 at batch 64
    results = {
        "resnet34-224": {
            "limit": limit,
            "learnserve": server(1600, 12),
            "learnserve-workers": server(4800, 12.5),
        }
    }
    args = argparse.Namespace(seconds=6.0, repeats=3, clients=64, cuda=True, card="NVIDIA H100 80GB HBM3")
    out = tmp_path / "RESULTS-cuda.md"
    write_report(results, out, args, 60.0)
    text = out.read_text()
    assert "on the GPU, NVIDIA H100 80GB HBM3" in text
    assert "img/s at c=64" in text
    assert "(batch 1 / 8 / 16 / 32 / 64)" in text
    assert "fastai backend at c=64 0.25 of the CUDA in-process limit (target 0.7: **not met**)" in text
    assert (
        "LEARNSERVE_WORKERS=auto (its own choice of processes) at c=64 0.75 of the CUDA in-process limit (target 0.7: met)"
        in text
    )
