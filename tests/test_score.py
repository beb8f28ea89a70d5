"""`python -m app score`: a few hundred real files (a corrupt one and a non-image among them) scored by the local
engine and by Ray Data on a local 2-CPU Ray give the same rows; CSV and Parquet; resume; every kind of source."""

from __future__ import annotations

import csv
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from app.__main__ import main
from tests.backends import classify_files, fastai_backend
from tests.images import encode, sample

pytestmark = pytest.mark.slow

LABELS = ["red", "green", "blue"]


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("photos")
    for i in range(300):
        sub = folder / f"batch{i // 100}"
        sub.mkdir(exist_ok=True)
        fmt, ext = ("PNG", "png") if i % 2 else ("JPEG", "jpg")
        (sub / f"img{i:03d}.{ext}").write_bytes(
            encode(sample(LABELS[i % 3], seed=300 + i, size=24 + i % 17), fmt)
        )
    (folder / "batch0" / "broken.png").write_bytes(encode(sample("red"), "PNG")[:60])  # truncated
    (folder / "notes.txt").write_text("not an image")
    return folder


def score(*argv: str) -> int:
    return main(["score", *argv])


def rows_of(out: Path) -> list[dict[str, str]]:
    if out.suffix == ".parquet":
        return [{k: str(v) for k, v in r.items() if v is not None} for r in pq.read_table(out).to_pylist()]
    with out.open(newline="") as f:
        return [{k: v for k, v in r.items() if v} for r in csv.DictReader(f)]


def test_local_engine_scores_everything_in_order(photos: Path, tiny_model: Path, tmp_path: Path) -> None:
    out = tmp_path / "predictions.csv"
    assert score(str(photos), "--model", str(tiny_model), "--out", str(out), "--top-k", "2") == 0
    rows = rows_of(out)
    files = sorted(p for p in photos.rglob("*") if p.is_file())
    assert [r["path"] for r in rows] == [str(p) for p in files]
    by_name = {Path(r["path"]).name: r for r in rows}
    assert by_name["broken.png"]["error"] == "corrupt_image"
    assert by_name["notes.txt"]["error"] == "unsupported_media_type"
    assert "label" not in by_name["notes.txt"]
    assert set(by_name["img001.png"]) == {"path", "label", "probability", "label_2", "probability_2"}
    images = [p for p in files if p.suffix in (".png", ".jpg") and p.name != "broken.png"]
    expected = classify_files(fastai_backend(tiny_model), [p.read_bytes() for p in images])
    for path, want in zip(images, expected, strict=True):
        got = by_name[path.name]
        assert got["label"] == want.label
        assert float(got["probability"]) == pytest.approx(want.probability, abs=1e-6)
    assert sum(r["label"] == LABELS[int(Path(r["path"]).stem[3:]) % 3] for r in rows if "label" in r) >= 290


def test_several_processes_give_the_same_rows_in_order(
    photos: Path,
    tiny_model: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """LEARNSERVE_WORKERS=2 (app/scoring/processes.py): the same table as one process, row for row."""
    import app.cli.score
    import app.scoring.processes

    one = tmp_path / "one.csv"
    assert score(str(photos), "--model", str(tiny_model), "--out", str(one), "--top-k", "2") == 0
    monkeypatch.setenv("LEARNSERVE_WORKERS", "2")
    monkeypatch.setattr(app.cli.score, "WORTH_IT", 1)  # a few hundred files: worth it here, to test it
    monkeypatch.setattr(app.scoring.processes, "CHUNK", 64)  # several chunks, handed out in turn
    two = tmp_path / "two.csv"
    capsys.readouterr()
    assert score(str(photos), "--model", str(tiny_model), "--out", str(two), "--top-k", "2") == 0
    assert "scoring in 2 processes, 1 torch thread(s) each (LEARNSERVE_WORKERS=2)" in capsys.readouterr().err
    assert rows_of(two) == rows_of(one)


def test_ray_engine_gives_the_same_rows(photos: Path, tiny_model: Path, tmp_path: Path) -> None:
    import ray

    local, distributed = tmp_path / "local.parquet", tmp_path / "ray.parquet"
    assert score(str(photos), "--model", str(tiny_model), "--out", str(local)) == 0
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        hangs = score(str(photos), "--model", str(tiny_model), "--out", str(distributed), "--engine", "ray",
                      "--concurrency", "2")  # 2 actors on 2 CPUs: none left to read files  # fmt: skip
        code = score(str(photos), "--model", str(tiny_model), "--out", str(distributed), "--engine", "ray")
    finally:
        ray.shutdown()
    assert hangs == 2
    assert code == 0
    a, b = rows_of(local), rows_of(distributed)
    assert [r["path"] for r in a] == [r["path"] for r in b]
    for x, y in zip(a, b, strict=True):
        assert x.get("label") == y.get("label"), x["path"]
        assert x.get("error") == y.get("error"), x["path"]
        for column in [c for c in x if c.startswith("probability")]:
            assert float(x[column]) == pytest.approx(float(y[column]), abs=1e-6)


def test_resume_skips_what_is_done(
    photos: Path, tiny_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    listing = tmp_path / "paths.txt"
    files = sorted(str(p) for p in photos.rglob("*.png"))
    listing.write_text("\n".join(files[:50]) + "\n")
    out = tmp_path / "p.csv"
    assert score(str(listing), "--model", str(tiny_model), "--out", str(out)) == 0
    first = out.read_text()
    listing.write_text("\n".join(files[:80]) + "\n")
    capsys.readouterr()
    assert score(str(listing), "--model", str(tiny_model), "--out", str(out), "--resume") == 0
    assert "skipped 50 already done" in capsys.readouterr().err
    rows = rows_of(out)
    assert [r["path"] for r in rows] == files[:80]
    assert out.read_text().startswith(first.rstrip("\n").split("\n")[0])
    assert not (tmp_path / "p.csv.partial.csv").exists()


def test_csv_source_missing_files_and_bad_arguments(
    photos: Path, tiny_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    table = tmp_path / "inputs.csv"
    first = sorted(photos.rglob("img*.png"))[0]
    table.write_text(f"path,extra\n{first},x\nmissing.png,y\n")
    out = tmp_path / "o.csv"
    assert score(str(table), "--model", str(tiny_model), "--out", str(out)) == 0
    rows = rows_of(out)
    assert rows[0]["path"] == str(first)
    assert "label" in rows[0]
    assert rows[1]["path"] == str(tmp_path / "missing.png")
    assert rows[1]["error"] == "unreadable"
    capsys.readouterr()
    assert score("s3://bucket/photos", "--model", str(tiny_model), "--out", str(out)) == 2
    assert "--engine ray" in capsys.readouterr().err
    assert score(str(photos), "--model", str(tiny_model), "--out", str(tmp_path / "o.json")) == 2
    assert score(str(tmp_path / "nowhere"), "--model", str(tiny_model), "--out", str(out)) == 2
    assert "does not exist" in capsys.readouterr().err
