"""The lr finder's cost and output: `--num-it` on `lr-find` and `train --lr find`, a progress line every tenth of the
iterations off a terminal, and a plot whose dots sit where their legend says."""

from __future__ import annotations

import io
import math
import re
from contextlib import redirect_stdout
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from conftest import run_cli

from training.__main__ import main
from training.errors import TrainingError
from training.manifest import read_manifest

pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning"),
]

SMALL = ("--size", "16", "--bs", "8")
PROGRESS = re.compile(r"^lr finder: (\d+)/(\d+) iterations, lr ([\d.e+-]+), loss ([\d.]+), ([\d.]+)s$", re.M)


def suggestions_in(out: str) -> dict[str, float]:
    line = re.findall(r"suggested learning rates: (.+)$", out, re.M)[0]
    return {name: float(value) for name, value in (part.split() for part in line.split(", "))}


@pytest.mark.parametrize("command", ["lr-find", "train"])
def test_help_gives_num_it_with_its_default_and_cost(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        main([command, "--help"])
    out = " ".join(capsys.readouterr().out.split())  # argparse wraps the help
    assert "--num-it N" in out
    assert "fastai's num_it; default 100, at least 23" in out
    assert "each trains one batch, so its time grows in proportion to N" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["lr-find", "DATA", "--num-it", "10"], "argument --num-it: must be at least 23, got 10"),
        (["lr-find", "DATA", "--num-it", "many"], "argument --num-it: invalid int value: 'many'"),
        (["train", "DATA", "--out", "m.pkl", "--num-it", "50"], "argument --num-it: sets the lr finder's iterations"),
        (["train", "DATA", "--out", "m.pkl", "--lr", "1e-3", "--num-it", "50"], "only run with --lr find"),
    ],
    ids=["too-few", "not-a-number", "train-without-lr", "train-with-a-number"],
)  # fmt: skip
def test_num_it_is_checked_at_once(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"usage: python -m training {argv[0]} ")
    assert message in err


def test_lr_find_runs_num_it_iterations_and_logs_a_line_every_tenth(
    dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Off a terminal (run_cli's stdout is a StringIO), no bar: 10 lines with the lr climbing from 1e-7 to 10."""
    import training.lr_find
    from training.plots import plt

    seen: dict[str, Any] = {}
    save = training.lr_find.save_current_figure

    def capture(path: Path, title: str | None = None) -> Path:
        ax = plt.gca()
        seen["curve"] = ax.get_lines()[0].get_xydata().tolist()
        seen["markers"] = {line.get_label(): line.get_xydata().tolist()[0] for line in ax.get_lines()[1:]}
        seen["legend"] = [t.get_text() for t in ax.get_legend().get_texts()]
        return save(path, title)

    monkeypatch.setattr(training.lr_find, "save_current_figure", capture)
    code, out, err = run_cli(
        "lr-find", str(dataset), *SMALL, "--num-it", "30", "--plot", str(tmp_path / "lr.png")
    )
    assert code == 0, err
    assert "\r" not in out
    lines = PROGRESS.findall(out)
    assert [(int(done), int(total)) for done, total, *_ in lines] == [(i, 30) for i in range(3, 31, 3)]
    lrs = [float(lr) for _, _, lr, _, _ in lines]
    assert lrs == sorted(lrs)
    assert 1e-7 < lrs[0] < 1e-6
    assert 1 < lrs[-1] <= 10
    assert "stopped after" not in out  # it ran all 30 (the colours' loss does not diverge)
    assert len(seen["curve"]) == 30 - 5  # fastai leaves the last 5 out of the plot

    # Each suggestion's dot is at the learning rate its legend gives; the lowest loss is marked apart, at ten
    # times `minimum` (fastai's own plot put the `minimum` dot there, beside a legend giving a tenth of it).
    found = suggestions_in(out)
    for name, value in found.items():
        label = f"{name} {value:.2e}" + (" (used by --lr find)" if name == "valley" else "")
        assert label in seen["legend"]
        assert seen["markers"][label][0] == pytest.approx(value, rel=5e-3)  # printed with 3 digits
    lowest = [label for label in seen["markers"] if label.startswith("lowest loss")]
    assert len(lowest) == 1
    lr_min, loss_min = seen["markers"][lowest[0]]
    assert lowest[0] == f"lowest loss, at lr {lr_min:.2e} (minimum suggests a tenth of it)"
    assert lr_min == pytest.approx(found["minimum"] * 10, rel=5e-3)
    window = seen["curve"][30 // 10 :]  # fastai reads its suggestions past the first tenth
    assert loss_min == pytest.approx(min(loss for _, loss in window), rel=1e-6)


def test_train_lr_find_takes_num_it_and_records_it(dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "m.pkl"
    code, stdout, err = run_cli("train", str(dataset), "--out", str(out), *SMALL, "--epochs", "1", "--lr", "find",
                                "--num-it", "25", "--no-verify", "--reports", str(tmp_path / "r"))  # fmt: skip
    assert code == 0, err
    assert [int(done) for done, total, *_ in PROGRESS.findall(stdout) if total == "25"][-1] == 25
    assert "lr finder (" in stdout
    m = read_manifest(out)
    assert m.hyperparameters["num_it"] == 25
    assert m.lr_find_seconds is not None


def test_without_lr_find_the_manifest_records_no_iterations(tiny_model: Path) -> None:
    assert read_manifest(tiny_model).hyperparameters["num_it"] is None


def fake_learner(losses: list[float]) -> Any:
    lrs = [1e-7 * (1e8 ** (i / 99)) for i in range(len(losses))]
    return SimpleNamespace(recorder=SimpleNamespace(lrs=lrs, losses=losses), training=True)


def test_a_loss_that_diverges_too_early_to_read_is_a_clean_error() -> None:
    from training.lr_find import recorded

    falling = [2.3 - 0.01 * i for i in range(40)]
    stopped = falling[:30]  # fastai's stop_div ended it after 30 of 100: 30 - 10 - 5 = 15 losses left to read
    with pytest.raises(TrainingError, match=r"^the lr finder's loss diverged after 30 of 100 iterations \(lr "
                       r"[\d.e+-]+\), leaving 15 losses to read, and its suggestions need 16: raise --num-it"):  # fmt: skip
        recorded(fake_learner(stopped), 100)
    with_nan = falling[:20] + [math.nan] * 80  # fastai runs on through NaN: read up to the first one only
    with pytest.raises(
        TrainingError, match=r"turned NaN at iteration 21 of 100 .* leaving 10 losses to read"
    ):
        recorded(fake_learner(with_nan), 100)
    lrs, losses = recorded(fake_learner(falling), 30)  # a full run of 40: 40 - 3 - 5 to read
    assert len(lrs) == len(losses) == 32


def test_the_log_says_where_the_finder_stopped_early() -> None:
    from training.progress import FinderLog

    log = FinderLog(num_it=100, every=10)
    log.learn = fake_learner([])
    buffer = io.StringIO()
    with redirect_stdout(buffer):
        log.before_fit()
        for loss in [2.3, 2.2, 2.0, 1.5, 1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.5, 3.1]:  # 12 batches, then stop_div
            log.recorder.lrs.append(1e-7 * 1.2 ** len(log.recorder.lrs))
            log.recorder.losses.append(loss)
            log.after_batch()
        log.after_fit()
    lines = buffer.getvalue().splitlines()
    assert len(lines) == 2
    assert PROGRESS.match(lines[0])
    assert lines[0].startswith("lr finder: 10/100 iterations, lr 5.16e-07, loss 0.5000, ")
    assert lines[1].startswith("lr finder: stopped after 12 of 100 iterations: the loss diverged (lr 7.43e-07, loss "
                               "3.1000, ")  # fmt: skip
