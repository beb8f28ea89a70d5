"""`interpret` and `lr-find`: the PNGs and the CSV a user looks at before cleaning data or picking a rate."""

from __future__ import annotations

import csv
import re
import subprocess
import sys
from pathlib import Path

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
    """Run `python -m training interpret` in a fresh process, from another cwd, as a user would."""
    out = tmp_path_factory.mktemp("interpret") / "report"
    proc = subprocess.run(
        [sys.executable, "-m", "training", "interpret", str(tiny_model), str(dataset),
         "--out", str(out), "--top", str(TOP)],
        cwd=tmp_path_factory.mktemp("cwd"),
        capture_output=True,
        text=True,
        timeout=180,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return out, proc


def test_interpret_writes_the_plots(interpreted: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    out, _ = interpreted
    assert_png(out / "confusion_matrix.png")
    assert_png(out / "top_losses.png")


def test_interpret_prints_most_confused(interpreted: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    out, proc = interpreted
    assert "most confused (actual, predicted, count):" in proc.stdout
    assert f"wrote {out}/confusion_matrix.png, top_losses.png, top_losses.csv" in proc.stdout
    assert "Traceback" not in proc.stderr


def test_interpret_top_losses_csv(
    interpreted: tuple[Path, subprocess.CompletedProcess[str]], tiny_model: Path, dataset: Path
) -> None:
    out, _ = interpreted
    with (out / "top_losses.csv").open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == ["path", "actual", "predicted", "loss", "probability"]
        rows = list(reader)
    assert len(rows) == TOP
    assert read_manifest(tiny_model).dataset.valid_size >= TOP
    losses = [float(r["loss"]) for r in rows]
    assert losses == sorted(losses, reverse=True)
    assert all(loss >= 0 for loss in losses)
    for r in rows:
        path = Path(r["path"])
        assert path.is_file()
        assert path.is_relative_to(dataset.resolve())
        assert r["actual"] == path.parent.name
        assert r["predicted"] in COLORS
        assert 1 / len(COLORS) - 1e-3 <= float(r["probability"]) <= 1.0  # the winning class's probability
    assert len({r["path"] for r in rows}) == TOP


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
    assert f"plot: {plot}" in out
