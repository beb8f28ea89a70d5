"""Data-parallel training: `torchrun --nproc_per_node 2 -m training train` on the digits set, over 2 CPU processes
(gloo), against a single-process run with the same epochs; and what is refused under a launcher."""

from __future__ import annotations

import os
import pickletools
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from conftest import run_cli

from training.manifest import read_manifest

pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning"),
]

ROOT = Path(__file__).resolve().parent.parent
EPOCHS = "4"  # digits reach about 0.98 in 4 epochs; both runs must agree within 1 point


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory) -> Path:
    dest = tmp_path_factory.mktemp("data") / "digits"
    code, _, err = run_cli("data", "digits", str(dest))
    assert code == 0, err
    return dest


@pytest.fixture(scope="module")
def ddp(
    digits: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, subprocess.CompletedProcess[str]]:
    """Two CPU processes train one model, from another directory, as a user would start them."""
    out = tmp_path_factory.mktemp("ddp") / "models" / "digits.pkl"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p),
    }
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "training", "train", str(digits), "--epochs", EPOCHS, "--out", str(out),
         "--reports", str(out.parent.parent / "reports")],
        cwd=out.parent.parent, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return out, proc


def test_two_processes_reach_the_accuracy_of_one(
    ddp: tuple[Path, subprocess.CompletedProcess[str]], digits: Path, tmp_path: Path
) -> None:
    out, _ = ddp
    single = tmp_path / "single.pkl"
    code, _, err = run_cli("train", str(digits), "--epochs", EPOCHS, "--out", str(single), "--no-verify",
                                "--reports", str(tmp_path / "reports"))  # fmt: skip
    assert code == 0, err
    two, one = read_manifest(out), read_manifest(single)
    assert (two.world_size, one.world_size) == (2, 1)
    assert (two.epochs_run, one.epochs_run) == (4, 4)
    assert one.metrics.accuracy > 0.95
    assert abs(two.metrics.accuracy - one.metrics.accuracy) <= 0.01, (two.metrics, one.metrics)
    assert two.dataset == one.dataset  # the same images, the same random split
    assert two.hyperparameters["bs"] == 64  # the whole batch: 32 per process
    print(f"2 processes: {two.metrics.accuracy:.4f} in {two.train_seconds}s; "
          f"1 process: {one.metrics.accuracy:.4f} in {one.train_seconds}s")  # fmt: skip


def test_only_rank_0_writes_and_reports(ddp: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    out, proc = ddp
    assert sorted(p.name for p in out.parent.iterdir()) == ["digits.json", "digits.pkl"]
    reports = out.parent.parent / "reports"
    assert sorted(p.name for p in reports.iterdir()) == ["history.csv", "loss.png", "schedule.png"]
    assert len((reports / "history.csv").read_text().splitlines()) == 1 + int(EPOCHS)
    stdout = proc.stdout
    assert stdout.count("reload check: a fresh process predicts the validation set") == 1
    assert stdout.count("kept epoch") == 1
    assert "in 2 processes" in stdout
    assert stdout.count("1797 images in 10 classes") == 1  # the other rank prints nothing
    assert "Traceback" not in proc.stderr
    assert "error" not in proc.stderr.lower()
    assert "torch.jit.script" not in proc.stderr  # known noise, filtered in every process


def pickled_globals(model: Path) -> set[str]:
    """Every `module name` the export's pickle refers to (its classes and functions)."""
    with zipfile.ZipFile(model) as z:
        data = z.read(next(n for n in z.namelist() if n.endswith("data.pkl")))
    return {str(arg) for op, arg, _ in pickletools.genops(data) if op.name in ("GLOBAL", "INST")}


def test_the_export_is_a_plain_single_process_learner(
    ddp: tuple[Path, subprocess.CompletedProcess[str]],
) -> None:
    from fastai.learner import load_learner

    out, _ = ddp
    modules = {name.split()[0] for name in pickled_globals(out)}
    assert "torch.nn.modules.batchnorm BatchNorm2d" in pickled_globals(out)  # not SyncBatchNorm
    leaked = sorted(m for m in modules if m.split(".")[0] in ("training", "accelerate") or "distributed" in m)
    assert not leaked
    learn = load_learner(out)
    assert [type(cb).__name__ for cb in learn.cbs] == ["TrainEvalCallback", "Recorder", "CastToTensor",
                                                       "ProgressCallback"]  # fmt: skip


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--lr", "find"], "--lr find runs in one process"),
        (["--bs", "15"], "--bs 15"),
    ],
    ids=["lr-find", "odd-batch"],
)
def test_refused_under_a_launcher_before_any_work(
    dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, argv: list[str], message: str
) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")  # as torchrun sets it; nothing is started
    monkeypatch.setenv("RANK", "0")
    code, out, err = run_cli("train", str(dataset), "--out", str(tmp_path / "m.pkl"), *argv)
    assert code == 2
    assert err.startswith("error: ")
    assert message in err
    assert out == ""


def test_other_commands_refuse_a_launcher(
    dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    code, _, err = run_cli("lr-find", str(dataset), "--plot", str(tmp_path / "lr.png"))
    assert code == 2
    assert err.startswith("error: [rank 1] only `train` runs in several processes")
