"""`interpret`, `summary` and `lr-find`: the PNGs, the CSV and the text a user looks at before cleaning data or
picking a rate."""

from __future__ import annotations

import csv
import math
import os
import re
import shutil
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import pytest
from conftest import COLORS, run_cli
from PIL import Image

from training.manifest import read_manifest

pytestmark = [
    pytest.mark.slow,
    # torch 2.14 warns when fastai's layers module calls torch.jit.script at import; third-party, harmless here.
    pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning"),
]

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
TOP = 5
ROOT = Path(__file__).resolve().parent.parent
# subprocesses import this checkout's `training`, whatever the environment has installed
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}


def assert_png(path: Path, min_width: int = 200, min_height: int = 150) -> None:
    assert path.is_file(), path
    assert path.read_bytes()[:8] == PNG_MAGIC
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        width, height = im.size
    assert width >= min_width
    assert height >= min_height
    assert width < 5000
    assert height < 5000


@pytest.fixture(scope="module")
def interpreted(
    tiny_model: Path, dataset: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, subprocess.CompletedProcess[str]]:
    """Run `python -m training interpret` in a fresh process, from another cwd, as a user would (no --out)."""
    cwd = tmp_path_factory.mktemp("cwd")
    proc = subprocess.run(
        [sys.executable, "-m", "training", "interpret", str(tiny_model), str(dataset), "--top", str(TOP)],
        cwd=cwd, env=ENV, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return cwd / "reports" / tiny_model.stem, proc  # the default folder, beside train's reports


def test_interpret_writes_the_plots(interpreted: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    out, _ = interpreted
    assert_png(out / "confusion_matrix.png")
    assert_png(out / "top_losses.png")
    assert_png(out / "top_losses_why.png")


def test_interpret_prints_most_confused(interpreted: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    out, proc = interpreted
    assert "most confused (actual, predicted, count):" in proc.stdout
    assert (
        "wrote reports/colors/confusion_matrix.png, top_losses.png, top_losses_why.png, top_losses.csv"
        in proc.stdout
    )
    assert "\r" not in proc.stdout  # no progress bars in a log (fastai's confusion matrix runs get_preds too)
    assert out.is_dir()
    assert "Traceback" not in proc.stderr


def test_interpret_shows_no_known_warning_noise(
    interpreted: tuple[Path, subprocess.CompletedProcess[str]],
) -> None:
    _, proc = interpreted
    assert "torch.jit.script" not in proc.stderr  # torch's deprecation, raised by fastai's import
    assert "insecure pickle" not in proc.stderr  # the file's sha256 matched its manifest first
    assert proc.stderr == ""


def test_interpret_top_losses_csv(
    interpreted: tuple[Path, subprocess.CompletedProcess[str]], tiny_model: Path, dataset: Path
) -> None:
    out, _ = interpreted
    with (out / "top_losses.csv").open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == [
            "path", "actual", "predicted", "loss", "predicted_probability", "actual_probability"
        ]  # fmt: skip
        rows = list(reader)
    assert len(rows) == TOP
    assert read_manifest(tiny_model).dataset.valid_size >= TOP
    losses = [float(r["loss"]) for r in rows]
    assert losses == sorted(losses, reverse=True)
    assert all(loss >= 0 for loss in losses)
    for r in rows:
        path = Path(r["path"])
        assert not path.is_absolute()  # relative to DATA: a copy of the data can be cleaned with this file
        assert (dataset / path).is_file()
        assert r["actual"] == path.parent.name
        assert r["predicted"] in COLORS
        predicted, actual = float(r["predicted_probability"]), float(r["actual_probability"])
        assert 1 / len(COLORS) - 1e-3 <= predicted <= 1.0  # the winning class's probability
        assert 0 <= actual <= predicted
        if r["actual"] == r["predicted"]:
            assert actual == predicted
        assert float(r["loss"]) == pytest.approx(-math.log(max(actual, 1e-4)), abs=0.01)  # cross-entropy
    assert len({r["path"] for r in rows}) == TOP


def test_interpret_grid_titles_name_the_files(
    tiny_model: Path, dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import training.interpret
    import training.plots
    from training.plots import plt

    titles: dict[str, list[str]] = {}
    save = training.interpret.save_current_figure

    def capture(path: Path, title: str | None = None) -> Path:
        titles[path.name] = [ax.get_title() for ax in plt.gcf().axes if ax.get_title()]
        return save(path, title)

    monkeypatch.setattr(training.interpret, "save_current_figure", capture)
    monkeypatch.setattr(training.plots, "save_current_figure", capture)  # the image grid (plot_image_grid)
    code, _, err = run_cli(
        "interpret", str(tiny_model), str(dataset), "--out", str(tmp_path / "r"), "--top", "4"
    )
    assert code == 0, err
    with (tmp_path / "r" / "top_losses.csv").open(newline="", encoding="utf-8") as f:
        names = [r["path"] for r in csv.DictReader(f)]  # e.g. red/red_03.png
    grid = titles["top_losses.png"]
    assert len(grid) == 4
    for name, title in zip(names, grid, strict=True):
        assert title.splitlines()[0] == name
        assert "predicted" in title
        assert "actual" in title


def test_interpret_warns_when_the_data_changed_since_training(
    tiny_model: Path, dataset: Path, tmp_path: Path
) -> None:
    data = shutil.copytree(dataset, tmp_path / "colors")
    for i in range(2):
        shutil.copy(data / "red" / "red_00.png", data / "red" / f"extra_{i}.png")
    (data / "blue" / "blue_00.png").unlink()
    code, _, err = run_cli("interpret", str(tiny_model), str(data), "--out", str(tmp_path / "r"))
    assert code == 0, err
    assert f"warning: {data} changed since training (48 -> 49 images; blue: 16 -> 15, red: 16 -> 18)" in err
    assert "mixes in images the model trained on" in err
    code, _, err = run_cli("interpret", str(tiny_model), str(dataset), "--out", str(tmp_path / "r2"))
    assert code == 0, err
    assert "warning" not in err


def test_interpret_of_a_missing_model_is_a_clean_error(dataset: Path, tmp_path: Path) -> None:
    code, _, err = run_cli(
        "interpret", str(tmp_path / "nope.pkl"), str(dataset), "--out", str(tmp_path / "r")
    )
    assert code == 2
    assert err.startswith("error:")
    assert "Traceback" not in err
    assert not (tmp_path / "r").exists()


def test_lr_find_writes_a_png_and_prints_suggestions(dataset: Path, tmp_path: Path) -> None:
    plot = tmp_path / "plots" / "lr.png"
    code, out, err = run_cli("lr-find", str(dataset), "--size", "16", "--bs", "8", "--plot", str(plot))
    assert code == 0, err
    assert_png(plot)
    found = re.search(r"suggested learning rates: (.+)$", out, re.MULTILINE)  # after the progress bar's \r
    assert found, out[-500:]
    pairs = dict(part.split() for part in found.group(1).split(","))
    assert list(pairs) == ["valley", "slide", "minimum", "steep"]
    assert all(0 < float(v) < 10 for v in pairs.values())
    assert f"plot: {plot} (`train --lr find` uses valley: {float(pairs['valley']):.2e})" in out


def test_lr_find_plot_gives_each_suggestions_value_and_the_one_used(
    dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import training.lr_find
    from training.plots import plt

    seen: dict[str, Any] = {}
    save = training.lr_find.save_current_figure

    def capture(path: Path, title: str | None = None) -> Path:
        legend = plt.gca().get_legend()
        seen["legend"] = [t.get_text() for t in legend.get_texts()]
        seen["title"] = title
        return save(path, title)

    monkeypatch.setattr(training.lr_find, "save_current_figure", capture)
    code, out, err = run_cli(
        "lr-find", str(dataset), "--size", "16", "--bs", "8", "--plot", str(tmp_path / "lr.png")
    )
    assert code == 0, err
    values = dict(
        part.split() for part in re.findall(r"suggested learning rates: (.+)$", out, re.M)[0].split(", ")
    )
    legend = [text for text in seen["legend"] if text.split()[0] in values]
    assert legend == [f"{name} {float(value):.2e}" + (" (used by --lr find)" if name == "valley" else "")
                      for name, value in values.items()]  # fmt: skip
    assert seen["title"] == "loss vs learning rate: `train --lr find` uses valley"


def test_summary_describes_the_model_then_its_layers(tiny_model: Path) -> None:
    code, out, err = run_cli("summary", str(tiny_model))
    assert code == 0, err
    m = read_manifest(tiny_model)
    lines = out.splitlines()
    assert lines[0].startswith("colors: cnn, 3 classes, 32 px, trained ")
    assert lines[1].startswith(
        f"data: {m.dataset.train_size} training and {m.dataset.valid_size} validation images"
    )
    assert lines[2].startswith(f"kept epoch {m.best_epoch} of 2: accuracy {m.metrics.accuracy:.4f}")
    assert "Total params:" in out


@pytest.mark.parametrize("command", ["interpret", "summary"])
def test_a_model_without_its_manifest_is_a_clean_error(
    tiny_model: Path, dataset: Path, tmp_path: Path, command: str
) -> None:
    lone = tmp_path / "lone.pkl"
    shutil.copy(tiny_model, lone)
    argv = [
        command,
        str(lone),
        *([str(dataset), "--out", str(tmp_path / "r")] if command == "interpret" else []),
    ]
    code, _, err = run_cli(*argv)
    assert code == 2
    assert err == f"error: no manifest lone.json beside {lone}: train writes one with every .pkl\n"


def test_a_changed_model_is_refused_before_unpickling(tiny_model: Path, tmp_path: Path) -> None:
    copy = tmp_path / "colors.pkl"
    shutil.copy(tiny_model, copy)
    shutil.copy(tiny_model.with_suffix(".json"), copy.with_suffix(".json"))
    with copy.open("ab") as f:
        f.write(b"\0")
    code, _, err = run_cli("summary", str(copy))
    assert code == 2
    assert err.startswith(f"error: {copy} has changed since export: its sha256 differs from colors.json's")


def test_the_insecure_pickle_warning_is_hidden_only_after_verification(tiny_model: Path) -> None:
    from fastai.learner import load_learner

    from training.loading import load_verified

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # pytest's configuration ignores this warning; here it must not
        load_verified(tiny_model)
    assert not [w for w in caught if "insecure pickle" in str(w.message)]  # verified: hidden
    with pytest.warns(UserWarning, match="insecure pickle"):
        load_learner(tiny_model)  # nothing verified: fastai's warning still stands
