"""How many server (or scoring) processes, with how many torch threads each: LEARNSERVE_WORKERS and
LEARNSERVE_TORCH_THREADS against the cores and the models' size (README: Several processes). No torch import: the
models' sizes come from their manifests.
"""

from __future__ import annotations

import contextlib
import math
import os
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from app.config import Settings
from training.manifest import Manifest

# Below this many weights a model is cheap next to the HTTP and decoding around it (the digits CNN: ~0.1 M; one
# process serves it at 0.6 of the in-process limit): a process per core pays. A resnet18 (11.7 M) is compute-bound.
SMALL_MODEL = 2_000_000
MAX_AUTO_WORKERS = 8
# On a GPU the card is rarely the wall: one process's HTTP, decoding and item transforms are (on a lent H200, one
# process served resnet34 at 224 px at 194-260 img/s against 932 for the same card in process). `auto` runs a
# replica per two cores there, at most 4: each feeds the card its own batches, with two cores for its event loop and
# its model thread. Each holds a copy of the model and a CUDA context (about 0.5 GB) on the card.
GPU_CORES_PER_WORKER = 2
MAX_GPU_WORKERS = 4
# What one server process holds before any request, by the runtime it imports: torch and fastai, or ONNX Runtime
# alone (make bench, idle / peak RSS of one process: fastai 899-1,001 / 912-1,136 MB, ONNX 105-358 / 111-429 MB),
# plus each model about twice its file (its weights, and a batch's working set). `auto` never plans more processes
# than a container's memory limit holds beside LEARNSERVE_MAX_INFLIGHT_BYTES.
RUNTIME_BYTES = {"fastai": 1000 << 20, "onnx": 150 << 20}
# A process that has started CUDA holds its libraries (cuBLAS, cuDNN) in host memory too: an estimate, not measured
# here (no GPU was lent); `make bench CUDA=1` reports the servers' summed resident memory to check it by.
CUDA_RUNTIME_BYTES = 2560 << 20
NVIDIA_DEVICE = Path("/dev/nvidiactl")  # present where the NVIDIA driver is
OVERSUBSCRIBED = 2  # the exit status of a refused configuration (a usage error)


class Oversubscribed(ValueError):
    """Workers x torch threads over the cores: each process's threads would fight the others' (the 53-143 req/s
    collapse measured before this mode existed)."""


def available_cores(
    cpu_max: Path = Path("/sys/fs/cgroup/cpu.max"), v1: Path = Path("/sys/fs/cgroup/cpu")
) -> int:
    """The cores this process may use: its CPU affinity, capped by a cgroup quota (a container's CPU limit: v2's
    `200000 100000`, or v1's cpu.cfs_quota_us / cpu.cfs_period_us, is 2 cores), since a pod limited to 2 CPUs on a
    64-core node sees 64 in its affinity."""
    cores = len(os.sched_getaffinity(0))
    try:
        quota, period = cpu_max.read_text(encoding="ascii").split()
    except (OSError, ValueError):
        try:
            quota = (v1 / "cpu.cfs_quota_us").read_text(encoding="ascii").strip()
            period = (v1 / "cpu.cfs_period_us").read_text(encoding="ascii").strip()
        except OSError:
            return cores
    if quota not in ("max", "-1") and quota.isdigit() and period.isdigit() and int(period) > 0:
        cores = min(cores, max(1, math.ceil(int(quota) / int(period))))
    return cores


def model_sizes(settings: Settings) -> list[int | None]:
    """The weights count of each model to serve, from its manifest (no torch): None where a manifest is missing,
    unreadable or too old to say."""
    folder, one = settings.model_source()
    sizes: list[int | None] = []
    for name in model_names(folder, one):
        path = folder / f"{name}.json"
        try:
            manifest = Manifest.model_validate_json(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            sizes.append(None)
            continue
        sizes.append(manifest.model.parameters if manifest.model else None)
    return sizes or [None]


def memory_limit(
    memory_max: Path = Path("/sys/fs/cgroup/memory.max"),
    v1: Path = Path("/sys/fs/cgroup/memory/memory.limit_in_bytes"),
) -> int | None:
    """The bytes this process's container may use (cgroup v2 `memory.max`, or v1's limit), or None without one
    (v2 says `max`; v1 says a number near 2**63)."""
    for path in (memory_max, v1):
        try:
            text = path.read_text(encoding="ascii").strip()
        except OSError:
            continue
        return int(text) if text.isdigit() and int(text) < 1 << 60 else None
    return None


def process_bytes(settings: Settings) -> int:
    """About what one server process holds before any request (RUNTIME_BYTES): the heaviest runtime its models
    need, plus twice each model file."""
    folder, one = settings.model_source()
    names = model_names(folder, one)
    runtime = max(
        (RUNTIME_BYTES[settings.backend_for(n)] for n in names), default=RUNTIME_BYTES[settings.backend]
    )
    models = 0
    for name in names:
        suffix = "onnx" if settings.backend_for(name) == "onnx" else "pkl"
        with contextlib.suppress(OSError):
            models += 2 * (folder / f"{name}.{suffix}").stat().st_size
    return (CUDA_RUNTIME_BYTES if uses_gpu(settings) else runtime) + models


def memory_cap(settings: Settings, memory: int | None) -> int | None:
    """How many server processes a memory limit holds beside the budget (at least 1), or None without a limit."""
    if memory is None:
        return None
    return max(1, (memory - settings.max_inflight_bytes) // process_bytes(settings))


@dataclass(frozen=True)
class Plan:
    workers: int
    threads: (
        int  # torch threads per process: LEARNSERVE_TORCH_THREADS, else the cores split (a container's CPU
    )
    # limit counts: torch's own default would be every core of the node)
    why: str


def uses_gpu(settings: Settings) -> bool:
    """DEVICE=cuda, or `auto` where the models would find a GPU: an NVIDIA device that CUDA_VISIBLE_DEVICES does
    not hide, and, for models served by ONNX Runtime alone, its GPU build (no torch import in the supervisor)."""
    if settings.device == "cuda":
        return True
    if settings.device != "auto" or not NVIDIA_DEVICE.exists():
        return False
    if os.environ.get("CUDA_VISIBLE_DEVICES", "0").strip() in ("", "-1"):
        return False
    folder, one = settings.model_source()
    if all(settings.backend_for(name) == "onnx" for name in model_names(folder, one)):
        try:
            version("onnxruntime-gpu")
        except PackageNotFoundError:
            return False
    return True


def model_names(folder: Path, one: Path | None) -> list[str]:
    """The models to serve, by name: the one file's, or every manifest's in the folder (as the repository scans)."""
    if one is not None:
        return [one.stem]
    return sorted(p.stem for p in folder.glob("*.json") if not p.name.startswith("."))


def plan(settings: Settings, cores: int, memory: int | None = None) -> Plan:
    """How many processes and threads. `auto`: on a GPU, a process per two cores (at most 4), the cores split
    between them; on CPU, for small models (every one under SMALL_MODEL weights, by its manifest), as many
    single-thread processes as cores (at most 8, or cores / LEARNSERVE_TORCH_THREADS); otherwise one process with
    every core; never more than a memory limit (`memory`: a container's) holds beside the budget (memory_cap). A
    number: that many, with the cores split between them unless TORCH_THREADS is given; over the cores (or a budget
    share too small for one request), Oversubscribed."""
    threads = settings.torch_threads
    if settings.workers != "auto":
        n = settings.workers
        if n == 1:
            return Plan(1, threads or cores, "LEARNSERVE_WORKERS=1")
        if settings.capture_dir is not None:
            raise Oversubscribed(
                f"LEARNSERVE_WORKERS={n} with LEARNSERVE_CAPTURE_DIR: POST /feedback looks an answer up in the "
                "memory of the process that gave it, which another process does not have. Use one process "
                "(LEARNSERVE_WORKERS=1 or auto) while capture is on."
            )
        per = threads or max(1, cores // n)
        if n * per > cores:
            raise Oversubscribed(
                f"LEARNSERVE_WORKERS={n} x {per} torch thread{'s' if per > 1 else ''} each = {n * per} threads on "
                f"{cores} core{'s' if cores > 1 else ''}: the processes would fight over the cores (throughput "
                f"collapses). Lower LEARNSERVE_WORKERS, or LEARNSERVE_TORCH_THREADS, or use LEARNSERVE_WORKERS=auto."
            )
        if fits(settings) < n:
            raise Oversubscribed(
                f"LEARNSERVE_WORKERS={n}: each process gets 1/{n} of LEARNSERVE_MAX_INFLIGHT_BYTES "
                f"({settings.max_inflight_bytes // n:,} bytes), less than one largest request body "
                f"({largest_body(settings):,}). Raise MAX_INFLIGHT_BYTES or lower LEARNSERVE_WORKERS."
            )
        return Plan(n, per, f"LEARNSERVE_WORKERS={n}")
    if settings.capture_dir is not None:
        return Plan(1, threads or cores, "auto: capture is on (feedback needs the one process that answered)")
    held = memory_cap(settings, memory)
    if uses_gpu(settings):
        n = max(1, min(MAX_GPU_WORKERS, cores // (threads or GPU_CORES_PER_WORKER), fits(settings)))
        why = f"auto: a GPU, a process per {threads or GPU_CORES_PER_WORKER} of {cores} cores (at most {MAX_GPU_WORKERS})"
        n, why = capped(n, held, memory, why)
        return Plan(n, threads or max(1, cores // n), why)
    sizes = model_sizes(settings)
    if cores < 2 or any(s is None or s > SMALL_MODEL for s in sizes):
        largest = "unknown" if None in sizes else f"{max(s or 0 for s in sizes):,}"
        return Plan(
            1, threads or cores, f"auto: {cores} core(s), largest model {largest} weights (one process)"
        )
    per = threads or 1
    n = max(1, min(MAX_AUTO_WORKERS, cores // per, fits(settings)))
    n, why = capped(n, held, memory, f"auto: small models (under {SMALL_MODEL:,} weights) on {cores} cores")
    return Plan(n, per if n > 1 else threads or cores, why)


def capped(n: int, held: int | None, memory: int | None, why: str) -> tuple[int, str]:
    """n, or fewer where the memory limit holds fewer processes (and why says so)."""
    if held is None or held >= n or memory is None:
        return n, why
    return held, f"{why}; the {memory / (1 << 30):.1f} GiB memory limit holds {held} beside the budget"


def largest_body(settings: Settings) -> int:
    return max(settings.max_request_bytes, settings.max_single_bytes)


def fits(settings: Settings) -> int:
    """How many processes the memory budget can be split between, each still holding one largest request body."""
    return max(1, settings.max_inflight_bytes // largest_body(settings))


def share(settings: Settings, plan: Plan) -> Settings:
    """One process's settings: its threads, and its 1/N of the server's budgets."""
    n = plan.workers
    return settings.model_copy(
        update={
            "workers": 1,
            "torch_threads": plan.threads,
            "max_inflight_bytes": max(1, settings.max_inflight_bytes // n),
            "max_requests": max(1, settings.max_requests // n),
            "max_explains": max(1, settings.max_explains // n),
        }
    )
