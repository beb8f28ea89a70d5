"""What `train` shows and leaves for a person: the log, history.csv, loss.png, schedule.png, and the kept epoch."""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path

import pytest
from conftest import run_cli
from PIL import Image

from training.__main__ import main
from training.manifest import read_manifest

pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning"),
]

FAST = ("--arch", "cnn", "--size", "16", "--bs", "16", "--lr", "1e-2", "--no-verify")
HEADER = "epoch     train_loss  valid_loss  accuracy  error_rate  time"
METRICS = ["train_loss", "valid_loss", "accuracy", "error_rate"]


def read_history(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames or []), list(reader)


@pytest.fixture(scope="module")
def trained(dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    out = tmp_path_factory.mktemp("models") / "hist.pkl"
    reports = out.parent / "reports" / "hist"
    code, stdout, err = run_cli("train", str(dataset), "--out", str(out), *FAST, "--epochs", "3",
                                "--reports", str(reports))  # fmt: skip
    assert code == 0, err
    assert err == ""  # no warning: above chance, every class validated
    return out, reports, stdout


def test_history_csv_has_one_row_per_epoch_with_every_metric(trained: tuple[Path, Path, str]) -> None:
    _, reports, _ = trained
    columns, rows = read_history(reports / "history.csv")
    assert columns == ["epoch", "phase", *METRICS, "seconds"]
    assert [r["epoch"] for r in rows] == ["1", "2", "3"]
    assert {r["phase"] for r in rows} == {"one-cycle"}
    for r in rows:
        assert float(r["accuracy"]) + float(r["error_rate"]) == pytest.approx(1.0, abs=1e-5)
        assert float(r["train_loss"]) > 0
        assert float(r["seconds"]) > 0


def test_loss_and_schedule_plots(trained: tuple[Path, Path, str]) -> None:
    _, reports, stdout = trained
    for name in ("loss.png", "schedule.png"):
        with Image.open(reports / name) as im:
            assert im.format == "PNG"
            assert 500 <= im.width <= 2000
            assert 300 <= im.height <= 2000
    assert f"reports:  {reports}/history.csv, {reports}/loss.png, {reports}/schedule.png" in stdout


def test_the_exported_weights_are_the_kept_epochs(trained: tuple[Path, Path, str]) -> None:
    out, reports, _ = trained
    m = read_manifest(out)
    _, rows = read_history(reports / "history.csv")
    best = min(rows, key=lambda r: float(r["valid_loss"]))  # --monitor valid_loss: lower is better
    assert m.best_epoch == int(best["epoch"])
    assert m.epochs_run == 3
    # The final validation of the exported weights gives the kept epoch's figures.
    assert m.metrics.valid_loss == pytest.approx(float(best["valid_loss"]), abs=1e-4)
    assert m.metrics.accuracy == pytest.approx(float(best["accuracy"]), abs=1e-4)


def test_log_off_a_terminal_is_one_line_per_epoch(trained: tuple[Path, Path, str]) -> None:
    out, _, stdout = trained
    assert "\r" not in stdout  # no progress-bar redraws in a log
    lines = stdout.splitlines()
    assert lines.count(HEADER) == 1
    table = lines[lines.index(HEADER) + 1 :]
    epochs = [line.split()[0] for line in table if re.match(r"\d+ +\d+\.\d{6} ", line)]
    assert epochs == ["1", "2", "3"]  # numbered like history.csv and the messages
    found = [int(n) for n in re.findall(r"Better model found at epoch (\d+) with valid_loss", stdout)]
    assert found
    assert found[-1] == read_manifest(out).best_epoch
    assert lines[-4].startswith(f"kept epoch {found[-1]} of 3: accuracy ")


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_on_a_terminal_fastai_draws_its_progress_bars(
    dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    screen = Terminal()
    monkeypatch.setattr("sys.stdout", screen)
    code = main(["train", str(dataset), "--out", str(tmp_path / "m.pkl"), *FAST, "--epochs", "1",
                 "--reports", str(tmp_path / "r")])  # fmt: skip
    assert code == 0
    text = screen.getvalue()
    assert "\r" in text  # bars redraw in place
    assert "Epoch 1/1" in text
    assert HEADER.split()[:3] == text[text.index("epoch") :].split()[:3]


@pytest.mark.parametrize(("monitor", "better"), [("accuracy", max), ("error_rate", min)])
def test_monitor_keeps_the_best_epoch_in_its_direction_and_stops_early(
    dataset: Path, tmp_path: Path, monitor: str, better: object
) -> None:
    out = tmp_path / "m.pkl"
    # At lr 1e-3 accuracy climbs over epochs 1-3 (0.56, 0.67, 1.0): the wrong direction would keep epoch 1.
    code, stdout, err = run_cli("train", str(dataset), "--out", str(out), *FAST, "--lr", "1e-3", "--epochs", "8",
                                "--monitor", monitor, "--early-stop", "1", "--reports", str(tmp_path / "r"))  # fmt: skip
    assert code == 0, err
    _, rows = read_history(tmp_path / "r" / "history.csv")
    values = [float(r[monitor]) for r in rows]
    kept = values.index(better(values)) + 1  # type: ignore[operator]  # the first epoch with the best value
    assert kept > 1
    m = read_manifest(out)
    assert m.best_epoch == kept
    assert m.hyperparameters["monitor"] == monitor
    assert (
        m.epochs_run == len(rows) == kept + 1 < 8
    )  # patience 1: one epoch without a better value, then stop
    assert f"No better {monitor} for 1 epochs since epoch {kept}: stopping early" in stdout
    assert f"Better model found at epoch {kept} with {monitor} value" in stdout


@pytest.fixture
def cached_resnet18(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Stand-in "ImageNet" weights in a private torch hub cache (random ones: only the shapes matter offline)."""
    import torch
    from torchvision import models

    weights = models.ResNet18_Weights.DEFAULT
    checkpoints = tmp_path / "torch-home" / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    torch.save(models.resnet18().state_dict(), checkpoints / weights.url.rsplit("/", 1)[-1])
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))


@pytest.mark.usefixtures("cached_resnet18")
def test_fine_tuning_numbers_both_phases_as_one_run(dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "ft.pkl"
    code, stdout, err = run_cli("train", str(dataset), "--out", str(out), *FAST, "--arch", "resnet18",
                                "--pretrained", "--freeze-epochs", "1", "--epochs", "2", "--lr", "2e-3",
                                "--reports", str(tmp_path / "r"))  # fmt: skip
    assert code == 0, err
    _, rows = read_history(tmp_path / "r" / "history.csv")
    assert [(r["epoch"], r["phase"]) for r in rows] == [("1", "frozen"), ("2", "unfrozen"), ("3", "unfrozen")]
    lines = stdout.splitlines()
    table = [line.split()[0] for line in lines if re.match(r"\d+ +\d+\.\d{6} ", line)]
    assert table == ["1", "2", "3"]  # fastai restarts at 0 for the second fit; we do not
    m = read_manifest(out)
    assert m.epochs_run == 3
    assert m.best_epoch in (1, 2, 3)
    assert m.hyperparameters["freeze_epochs"] == 1
    assert (tmp_path / "r" / "schedule.png").is_file()


def test_lr_find_reports_its_time_apart_from_training(dataset: Path, tmp_path: Path) -> None:
    out, reports = tmp_path / "m.pkl", tmp_path / "r"
    code, stdout, err = run_cli("train", str(dataset), "--out", str(out), *FAST, "--epochs", "1", "--lr", "find",
                                "--num-it", "23",  # the fewest the finder accepts: the split is what is checked
                                "--reports", str(reports))  # fmt: skip
    assert code == 0, err
    m = read_manifest(out)
    assert m.lr_find_seconds is not None
    assert m.lr_find_seconds > 0
    assert m.train_seconds > 0
    finder = re.search(
        rf"lr finder \(([\d.]+)s, plot {reports}/lr_find.png\): valley ([\d.e+-]+); training with it", stdout
    )
    assert finder, stdout
    assert m.hyperparameters["lr"] == pytest.approx(float(finder.group(2)), rel=0.01)
    assert f"{m.train_seconds:.1f}s of training, {m.lr_find_seconds:.1f}s of lr finder before it" in stdout
    assert (reports / "lr_find.png").is_file()
