"""`python -m training harvest`: captured inputs with feedback into class folders (or a CSV), deduplicated, never
overwriting, with its filters, the list of unlabelled inputs and that list filled in."""

from __future__ import annotations

import csv
import hashlib
import io
import zlib
from pathlib import Path

import pytest

from app.core.capture import CaptureStore
from tests.conftest import COLORS, make_image, run_cli, write_dataset

DAY1, DAY2 = 1_765_000_000.0, 1_765_000_000.0 + 86_400  # 2025-12-06 and -07 (UTC)


def png(seed: str) -> bytes:
    buffer = io.BytesIO()
    make_image(COLORS["red"], seed=zlib.crc32(seed.encode())).save(buffer, "PNG")
    return buffer.getvalue()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Traffic:
    """A capture folder written by the server's own store: answers, then feedback."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.store = CaptureStore(root, max_bytes=10**8, queue_bytes=10**8)
        self.store.start()

    def answer(self, rid: str, data: bytes, label: str = "red", reason: str = "uncertain", when: float = DAY1,
               kind: str = "single-label classifier") -> None:  # fmt: skip
        body = {
            "kind": kind,
            "label": label,
            "probability": 0.5,
            "top": [{"label": label, "probability": 0.5}],
        }
        record = {"request_id": rid, "time": when, "model": "colors", "version": "v1", "kind": kind,
                  "reason": reason, "answer": body}  # fmt: skip
        assert self.store.offer(data, record)

    def told(self, rid: str, label: str, predicted: str = "red") -> None:
        self.store.append_feedback({"request_id": rid, "time": DAY2, "model": "colors", "version": "v1",
                                    "label": label, "predicted": predicted, "agrees": label == predicted,
                                    "captured": True})  # fmt: skip

    def done(self) -> Path:
        self.store.close()
        return self.root


@pytest.fixture
def data(tmp_path: Path) -> Path:
    return write_dataset(tmp_path / "data", per_class=2)


def harvest(*argv: str) -> str:
    code, out, err = run_cli("harvest", *argv)
    assert code == 0, err
    return out


def test_corrected_and_confirmed_inputs_go_to_their_class_once(data: Path, tmp_path: Path) -> None:
    t = Traffic(tmp_path / "capture")
    inputs = {f"r{i}": png(f"h{i}") for i in range(5)}
    for rid, blob in inputs.items():
        t.answer(rid, blob, reason="uncertain" if rid != "r4" else "sample")
    t.answer("r5", (data / "red" / "red_00.png").read_bytes())  # already in the data
    t.answer("r6", png("lost"))
    t.answer("r7", png("numbers"), kind="regression")
    t.told("r0", "blue")
    t.told("r1", "red")  # `correct` is resolved by the server before it is written
    t.told("r4", "green")
    t.told("r5", "red")
    t.told("r7", "red")
    t.told("r8", "red")  # an answer that was not captured
    t.told("r2", "purple")  # not a class of DATA
    capture = t.done()
    (capture / "blobs" / sha(png("lost"))[:2] / sha(png("lost"))).unlink()  # dropped by the bound
    t2 = Traffic(capture)
    t2.told("r6", "red")
    t2.done()

    out = harvest(str(capture), "--into", str(data), "--unlabelled", str(tmp_path / "todo.csv"))
    assert "added 3: blue 1, green 1, red 1" in out
    for words in ("1 already in the data", "1 inputs dropped to keep the capture bound",
                  "1 regression answers", "1 feedback without a captured input", "1 labels that are not a class"):  # fmt: skip
        assert words in out, words
    assert (data / "blue" / f"{sha(inputs['r0'])}.png").read_bytes() == inputs["r0"]
    assert (data / "red" / f"{sha(inputs['r1'])}.png").is_file()
    rows = list(csv.DictReader((tmp_path / "todo.csv").read_text().splitlines()))
    assert [r["request_id"] for r in rows] == ["r3"]
    assert Path(rows[0]["path"]).read_bytes() == inputs["r3"]

    again = harvest(str(capture), "--into", str(data))
    assert "added 0: nothing" in again
    assert "4 already in the data" in again

    # the list, filled in, labels what had no feedback
    rows[0]["action"] = "green"
    with (tmp_path / "todo.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    assert "added 1: green 1" in harvest(
        str(capture), "--into", str(data), "--labels", str(tmp_path / "todo.csv")
    )


def test_the_filters(data: Path, tmp_path: Path) -> None:
    t = Traffic(tmp_path / "capture")
    t.answer("early", png("e"), when=DAY1)
    t.answer("late", png("l"), when=DAY2)
    t.answer("sampled", png("s"), reason="sample", when=DAY2)
    for rid in ("early", "late", "sampled"):
        t.told(rid, "blue")
    capture = t.done()
    out = harvest(str(capture), "--into", str(data), "--since", "2025-12-07", "--uncertain-only")
    assert "added 1: blue 1" in out
    assert "1 sampled, not uncertain" in out
    assert (data / "blue" / f"{sha(png('l'))}.png").is_file()


def test_a_split_dataset_and_a_csv(tmp_path: Path) -> None:
    t = Traffic(tmp_path / "capture")
    t.answer("a", png("a"))
    t.told("a", "green")
    capture = t.done()
    split = tmp_path / "split"
    write_dataset(split / "train", per_class=1)
    write_dataset(split / "valid", per_class=1)
    assert "added 1" in harvest(str(capture), "--into", str(split))
    assert (split / "train" / "green" / f"{sha(png('a'))}.png").is_file()

    table = tmp_path / "csv" / "labels.csv"
    write_dataset(table.parent / "images", per_class=1)
    rows = [
        f"images/{p.parent.name}/{p.name},{p.parent.name}"
        for p in sorted((table.parent / "images").rglob("*.png"))
    ]
    table.write_text("path,label\n" + "\n".join(rows) + "\n")
    assert "added 1" in harvest(str(capture), "--into", str(table))
    assert table.read_text().splitlines()[-1] == f"harvested/{sha(png('a'))}.png,green"
    assert "added 0" in harvest(str(capture), "--into", str(table))


def test_a_folder_that_is_not_a_capture_is_refused(data: Path, tmp_path: Path) -> None:
    code, _, err = run_cli("harvest", str(tmp_path), "--into", str(data))
    assert code == 2
    assert "LEARNSERVE_CAPTURE_DIR" in err
