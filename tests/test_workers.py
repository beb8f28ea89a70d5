"""LEARNSERVE_WORKERS (issue 23): several whole server processes on one port behind one supervisor behave as one
server: the same answers, one set of metrics, one readiness, one reload (SIGHUP or /admin/reload reaches every
process, without a failed request), a dead process replaced, one drain, and no configuration that oversubscribes
the cores. The plan (`auto`) is checked on its own; the rest on a real supervised server of two processes.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from app.config import Settings
from app.core.process_plan import (
    Oversubscribed,
    Plan,
    available_cores,
    largest_body,
    memory_limit,
    plan,
    process_bytes,
    share,
    uses_gpu,
)
from tests.conftest import copy_model
from tests.live_server import LiveServer, live_server
from training.manifest import sha256_file

ADMIN = "admin-key-for-the-workers-test"


def settings_for(model: Path, **values: object) -> Settings:
    """`auto` unless asked otherwise (the test session's environment says 1: tests/conftest.py)."""
    return Settings(model_path=model, **{"workers": "auto", **values})  # type: ignore[arg-type]


def pair(chosen: Plan) -> tuple[int, int]:
    return chosen.workers, chosen.threads


# --- the plan ---------------------------------------------------------------------------------------------------


def test_auto_gives_small_models_a_process_per_core_and_large_ones_one(
    tiny_model: Path, tmp_path: Path
) -> None:
    small = settings_for(tiny_model, device="cpu")
    assert plan(small, 2) == Plan(2, 1, plan(small, 2).why)
    assert plan(small, 16).workers == 8  # at most 8 by default
    assert plan(small, 1).workers == 1
    assert pair(plan(settings_for(tiny_model, device="cpu", torch_threads=2), 4)) == (2, 2)
    large = tmp_path / "large.pkl"
    copy_model(tiny_model, tmp_path, "large")
    text = large.with_suffix(".json").read_text()
    large.with_suffix(".json").write_text(re.sub(r'"parameters": \d+', '"parameters": 11689512', text))
    chosen = plan(settings_for(large, device="cpu"), 2)
    assert (chosen.workers, chosen.threads) == (1, 2)  # every core to one process
    assert "11,689,512 weights" in chosen.why
    assert plan(settings_for(tmp_path / "missing.pkl", device="cpu"), 2).workers == 1  # unknown: one
    # a GPU: a replica per two cores feeds it (at most 4), each with its share of the cores; any model size
    assert pair(plan(settings_for(tiny_model, device="cuda"), 16)) == (4, 4)
    assert pair(plan(settings_for(large, device="cuda"), 6)) == (3, 2)
    assert pair(plan(settings_for(large, device="cuda"), 2)) == (1, 2)
    assert pair(plan(settings_for(large, device="cuda", torch_threads=8), 16)) == (2, 8)
    capture = settings_for(large, device="cuda", capture_dir=tmp_path / "capture")
    assert pair(plan(capture, 16)) == (1, 16)  # capture on: the one process that answered


def test_auto_plans_no_more_processes_than_a_memory_limit_holds(tiny_model: Path, tmp_path: Path) -> None:
    gib = 1 << 30
    fastai = settings_for(tiny_model, device="cpu")  # the budget: 512 MiB; a fastai process: about 1,000 MiB
    assert plan(fastai, 2).workers == 2  # no limit known
    assert plan(fastai, 2, 4 * gib).workers == 2
    tight = plan(fastai, 2, 2 * gib)  # the shipped pod: 2 GiB holds the budget and one fastai process
    assert pair(tight) == (1, 2)
    assert "the 2.0 GiB memory limit holds 1 beside the budget" in tight.why
    onnx = settings_for(tiny_model, device="cpu", backend="onnx")  # ~150 MiB a process
    assert plan(onnx, 2, 2 * gib).workers == 2
    cuda = settings_for(tiny_model, device="cuda")  # ~2,560 MiB a process: (6,144 - 512) // 2,561
    assert pair(plan(cuda, 16, 6 * gib)) == (2, 8)
    assert plan(settings_for(tiny_model, workers=2), 2, 2 * gib).workers == 2  # a number: the operator's call
    v2, v1 = tmp_path / "memory.max", tmp_path / "memory.limit_in_bytes"
    assert memory_limit(v2, v1) is None
    v2.write_text("2147483648\n")
    assert memory_limit(v2, v1) == 2 * gib
    v2.write_text("max\n")
    assert memory_limit(v2, v1) is None
    v2.unlink()
    v1.write_text("9223372036854771712\n")  # cgroup v1 without a limit
    assert memory_limit(v2, v1) is None
    v1.write_text("3221225472\n")
    assert memory_limit(v2, v1) == 3 * gib


def test_the_memory_rule_counts_every_model_file_by_its_backend(tiny_model: Path, tmp_path: Path) -> None:
    gib = 1 << 30
    folder = tmp_path / "models"
    copy_model(tiny_model, folder, "small")
    copy_model(tiny_model, folder, "large")
    (folder / ".hidden.json").write_text("{}")  # skipped, as the repository skips it
    many = Settings(model_dir=folder, device="cpu", backend="onnx", workers="auto")
    assert process_bytes(many) == 150 << 20  # no .onnx files: the runtime alone
    with (folder / "large.onnx").open("wb") as f:
        f.truncate(600 << 20)  # a sparse 600 MiB model: counted twice
    assert process_bytes(many) == (150 << 20) + (1200 << 20)
    assert plan(many, 2, 2 * gib).workers == 1  # (2,048 - 512) // 1,350 MiB
    assert plan(many, 2, 4 * gib).workers == 2
    mixed = many.model_copy(update={"model_backends": {"small": "fastai"}})  # one fastai model: its runtime
    assert process_bytes(mixed) == (1000 << 20) + (1200 << 20) + 2 * (folder / "small.pkl").stat().st_size


def test_auto_finds_a_gpu_only_where_the_models_would_use_it(
    tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from app.core import process_plan

    node = tmp_path / "nvidiactl"
    monkeypatch.setattr(process_plan, "NVIDIA_DEVICE", node)
    fastai = settings_for(tiny_model)  # device auto
    assert not uses_gpu(fastai)  # no driver
    node.touch()
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    assert uses_gpu(fastai)
    assert process_bytes(fastai) >= 2560 << 20  # a CUDA process: its libraries in host memory too
    for hidden in ("", "-1"):
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", hidden)
        assert not uses_gpu(fastai)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    # ONNX Runtime's CPU build (the slim image) on a GPU node: its models run on the CPU
    assert not uses_gpu(settings_for(tiny_model, backend="onnx"))
    assert uses_gpu(settings_for(tiny_model, backend="onnx", device="cuda"))
    assert not uses_gpu(settings_for(tiny_model, device="cpu"))


def test_a_number_of_workers_splits_the_cores_and_oversubscription_is_refused(tiny_model: Path) -> None:
    assert pair(plan(settings_for(tiny_model, workers=2), 4)) == (2, 2)
    assert pair(plan(settings_for(tiny_model, workers=1), 4)) == (1, 4)
    assert pair(plan(settings_for(tiny_model, workers=1, torch_threads=8), 4)) == (
        1,
        8,
    )  # one process: as asked
    with pytest.raises(
        Oversubscribed, match=r"LEARNSERVE_WORKERS=2 x 2 torch threads each = 4 threads on 2 cores"
    ):
        plan(settings_for(tiny_model, workers=2, torch_threads=2), 2)
    with pytest.raises(Oversubscribed, match="3 threads on 2 cores"):
        plan(settings_for(tiny_model, workers=3), 2)
    capture = {"capture_dir": Path("/tmp/learnserve-capture-never-made")}
    assert (
        plan(settings_for(tiny_model, device="cpu", **capture), 2).workers == 1
    )  # auto: one while capture is on
    with pytest.raises(Oversubscribed, match="with LEARNSERVE_CAPTURE_DIR"):
        plan(settings_for(tiny_model, workers=2, **capture), 2)
    with pytest.raises(ValueError, match="`auto` or a number of processes from 1 to 64"):
        settings_for(tiny_model, workers="many")


def test_each_process_gets_its_share_of_the_budgets(tiny_model: Path) -> None:
    settings = settings_for(tiny_model, max_inflight_bytes=400_000_000, max_requests=256, max_explains=1)
    one = share(settings, Plan(2, 1, ""))
    assert (one.max_inflight_bytes, one.max_requests, one.max_explains, one.torch_threads) == (
        200_000_000,
        128,
        1,
        1,
    )
    # a share must still hold the largest request: auto splits less, a number is refused
    tight = settings_for(tiny_model, device="cpu", max_inflight_bytes=int(1.5 * largest_body(settings)))
    assert plan(tight, 4).workers == 1
    with pytest.raises(Oversubscribed, match="less than one largest request body"):
        plan(settings_for(tiny_model, workers=2, max_inflight_bytes=int(1.5 * largest_body(settings))), 4)


def test_the_cores_are_capped_by_a_cgroup_quota(tmp_path: Path) -> None:
    cpu_max = tmp_path / "cpu.max"
    affinity = len(os.sched_getaffinity(0))
    cpu_max.write_text("100000 100000\n")
    assert available_cores(cpu_max) == 1
    cpu_max.write_text("max 100000\n")
    assert available_cores(cpu_max) == affinity
    v1 = tmp_path / "v1"
    assert available_cores(tmp_path / "absent", v1) == affinity
    v1.mkdir()
    (v1 / "cpu.cfs_quota_us").write_text("150000\n")
    (v1 / "cpu.cfs_period_us").write_text("100000\n")
    assert available_cores(tmp_path / "absent", v1) == min(2, affinity)  # cgroup v1: 1.5 CPUs -> 2
    (v1 / "cpu.cfs_quota_us").write_text("-1\n")
    assert available_cores(tmp_path / "absent", v1) == affinity


def test_an_oversubscribed_server_does_not_start(tiny_model: Path) -> None:
    env = {**os.environ, "LEARNSERVE_MODEL_PATH": str(tiny_model), "LEARNSERVE_WORKERS": "2",
           "LEARNSERVE_TORCH_THREADS": str(available_cores())}  # fmt: skip
    proc = subprocess.run([sys.executable, "-m", "app", "serve", "--port", "1"], env=env, capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 2
    assert "the processes would fight over the cores" in proc.stderr


# --- a real server of two processes ------------------------------------------------------------------------------


def workers_of(supervisor: int) -> list[int]:
    """The spawned server processes under the supervisor (not multiprocessing's resource tracker)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmdline = (stat.parent / "cmdline").read_bytes()
        except OSError:
            continue
        if int(fields[1]) == supervisor and b"spawn_main" in cmdline:
            found.append(int(stat.parent.name))
    return sorted(found)


def wait_for(condition, timeout: float = 90) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def metric(base: str, name: str, **labels: str) -> float:
    text = httpx.get(f"{base}/metrics", timeout=10).text
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


@pytest.fixture(scope="module")
def served(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveServer, Path]]:
    repo = tmp_path_factory.mktemp("workers") / "models"
    copy_model(tiny_model, repo)
    log = repo.parent / "server.log"
    with live_server(repo, log, WORKERS="2", ADMIN_KEY=ADMIN, MAX_INFLIGHT_BYTES="200000000") as server:
        wait_for(lambda: len(workers_of(server.proc.pid)) == 2)
        yield server, repo


def png(path: Path) -> bytes:
    return path.read_bytes()


@pytest.mark.slow
def test_two_processes_answer_as_one_server(
    served: tuple[LiveServer, Path], tiny_model: Path, dataset: Path
) -> None:
    server, _ = served
    assert len(workers_of(server.proc.pid)) == 2
    files = sorted(dataset.rglob("*.png"))[:6]
    from fastai.learner import load_learner

    learn = load_learner(tiny_model)
    before = metric(server.base, "learnserve_requests_total", route="/predict", status="200")
    for f in files:
        expected = learn.predict(f)[2].tolist()
        for _ in range(4):  # new connections each time: the kernel spreads them over both processes
            body = httpx.post(f"{server.base}/predict", files={"file": (f.name, png(f), "image/png")},
                              params={"top_k": 3}).json()  # fmt: skip
            answered = {t["label"]: t["probability"] for t in body["top"]}
            assert answered == pytest.approx(dict(zip(learn.dls.vocab, expected, strict=True)), abs=1e-5)
    # one set of metrics, whichever process answers the scrape
    for _ in range(6):
        assert metric(server.base, "learnserve_requests_total", route="/predict", status="200") == before + 24
    assert metric(server.base, "learnserve_memory_budget_bytes", kind="limit") == 200_000_000  # 2 x 1/2
    assert (
        "process_resident_memory_bytes" not in httpx.get(f"{server.base}/metrics").text
    )  # per process: left out


@pytest.mark.slow
def test_sighup_and_admin_reload_reach_every_process_without_a_failed_request(
    served: tuple[LiveServer, Path], tiny_model: Path, colors_v2: Path, dataset: Path
) -> None:
    server, repo = served
    old, new = sha256_file(tiny_model)[:12], sha256_file(colors_v2)[:12]
    image = png(sorted(dataset.rglob("*.png"))[0])
    failures: list[str] = []
    stop = threading.Event()

    def load() -> None:
        while not stop.is_set():
            r = httpx.post(f"{server.base}/predict", content=image, headers={"Content-Type": "image/png"})
            if r.status_code != 200:
                failures.append(f"{r.status_code} {r.text}")

    def served_everywhere(version: str, gone: str) -> bool:  # model_info is the max over the processes
        return (metric(server.base, "learnserve_model_info", version=version) == 1
                and metric(server.base, "learnserve_model_info", version=gone) == 0)  # fmt: skip

    clients = [threading.Thread(target=load) for _ in range(3)]
    for t in clients:
        t.start()
    try:
        copy_model(colors_v2, repo, "colors")
        server.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: served_everywhere(new, old))
        copy_model(tiny_model, repo, "colors")
        r = httpx.post(
            f"{server.base}/admin/reload", headers={"Authorization": f"Bearer {ADMIN}"}, timeout=60
        )
        assert r.status_code == 200, r.text
        wait_for(lambda: served_everywhere(old, new))
    finally:
        stop.set()
        for t in clients:
            t.join(timeout=60)
    assert not failures, failures[:3]


@pytest.mark.slow
def test_a_dead_process_makes_the_server_unready_until_replaced_and_sigterm_drains_all(
    served: tuple[LiveServer, Path],
) -> None:
    server, _ = served
    ready = lambda: httpx.get(f"{server.base}/health/ready", timeout=10).status_code  # noqa: E731
    first, second = workers_of(server.proc.pid)
    os.kill(first, signal.SIGKILL)
    wait_for(lambda: ready() == 503)
    wait_for(lambda: ready() == 200)
    now = workers_of(server.proc.pid)
    assert len(now) == 2
    assert second in now
    assert first not in now
    assert "died (exit -9): starting another" in server.log_text()
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(timeout=90) == 0
    assert workers_of(server.proc.pid) == []
    assert server.log_text().count("Finished server process") >= 2
