"""Capture's core: the policy, a queue that never blocks, the size bound, an unwritable folder, lookups on disk."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from app.core.capture import BLOBS, RECORDS, CaptureStore, RecentAnswers
from app.core.capture_policy import CapturePolicy
from app.core.prediction import Prediction, Values


class Tally:
    def __init__(self) -> None:
        self.outcomes: list[str] = []
        self.files = self.size = 0

    def captured(self, outcome: str) -> None:
        self.outcomes.append(outcome)

    def evicted(self, files: int, size: int) -> None:
        self.files += files
        self.size += size


def disk_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def record(i: int) -> dict[str, object]:
    return {"request_id": f"r{i}", "time": 1_765_000_000.0 + i, "model": "m", "version": "v", "kind": "k"}


def test_the_policy_keeps_the_uncertain_and_a_sample() -> None:
    policy = CapturePolicy.parse("uncertain:0.6")
    sure, unsure = Prediction("a", 0.9, (0.9, 0.1)), Prediction("a", 0.55, (0.55, 0.45))
    assert policy.reason(sure) is None
    assert policy.reason(unsure) == "uncertain"
    # multi-label: a label within 0.1 of the threshold is uncertain, wherever the top one is
    assert policy.reason(Prediction("a", 0.99, (0.99, 0.45)), threshold=0.5) == "uncertain"
    assert policy.reason(Prediction("a", 0.99, (0.99, 0.2)), threshold=0.5) is None
    # regression and key points: only `sample` applies
    assert policy.reason(Values((3.0,))) is None
    everything = CapturePolicy.parse("uncertain:0.6, sample:1.0")
    assert everything.reason(Values((3.0,))) == "sample"
    assert everything.reason(unsure) == "uncertain"
    assert str(everything) == "uncertain:0.6,sample:1"


@pytest.mark.parametrize("text", ["", "uncertain", "uncertain:x", "sample:2", "often:0.5", "sample:0"])
def test_a_policy_that_means_nothing_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match=r"uncertain|sample|between"):
        CapturePolicy.parse(text)


def test_the_settings_check_the_policy(tmp_path: Path) -> None:
    from pydantic import ValidationError

    from app.config import Settings

    with pytest.raises(ValidationError, match="keeps nothing"):
        Settings(capture_dir=tmp_path, capture="sample:0")
    assert Settings(capture="sample:0.01,uncertain:0.5").capture == "uncertain:0.5,sample:0.01"


def test_a_full_queue_drops_and_counts_and_never_blocks(tmp_path: Path) -> None:
    tally = Tally()
    store = CaptureStore(tmp_path, max_bytes=10**6, queue_bytes=100, observer=tally)  # writer not started
    kept = [store.offer(bytes([i]) * 40, record(i)) for i in range(10)]
    assert kept == [True, True] + [False] * 8
    assert tally.outcomes == ["dropped_full"] * 8
    store.start()
    store.close()  # the two queued are written before the writer stops
    assert tally.outcomes[8:] == ["written", "written"]
    assert store.offer(b"x" * 40, record(11))  # room again


def test_each_input_is_stored_once_with_one_line_per_answer(tmp_path: Path) -> None:
    tally = Tally()
    store = CaptureStore(tmp_path, max_bytes=10**6, queue_bytes=10**6, observer=tally)
    store.start()
    for i in range(3):
        store.offer(b"same bytes", record(i))
    store.close()
    assert tally.outcomes == ["written", "duplicate", "duplicate"]
    [blob] = [p for p in (tmp_path / BLOBS).rglob("*") if p.is_file()]
    assert blob.read_bytes() == b"same bytes"
    assert blob.parent.name == blob.name[:2]
    [day] = (tmp_path / RECORDS).iterdir()
    lines = [json.loads(line) for line in day.read_text().splitlines()]
    assert [r["request_id"] for r in lines] == ["r0", "r1", "r2"]
    assert {r["sha256"] for r in lines} == {blob.name}
    assert lines[0]["time"].endswith("Z")
    assert day.name == lines[0]["time"][:10] + ".jsonl"
    assert store.find("r1") == lines[1]
    for path in (tmp_path / BLOBS, blob.parent, day.parent):
        assert path.stat().st_mode & 0o777 == 0o700, path  # the clients' files: the server's user only
    for path in (blob, day):
        assert path.stat().st_mode & 0o777 == 0o600, path
    assert store.find("nobody") is None


def test_past_its_bound_the_oldest_files_go_and_are_counted(tmp_path: Path) -> None:
    tally = Tally()
    bound = 20_000
    store = CaptureStore(tmp_path, max_bytes=bound, queue_bytes=10**6, observer=tally)
    store.start()
    for i in range(100):  # 100 KB of distinct inputs
        store.offer(i.to_bytes(2, "big") * 500, record(i))
    store.close()
    assert disk_bytes(tmp_path) <= bound
    assert store.size == disk_bytes(tmp_path)
    assert tally.files > 0
    assert tally.size > 0
    newest = (99).to_bytes(2, "big") * 500
    assert any(p.read_bytes() == newest for p in (tmp_path / BLOBS).rglob("*") if p.is_file())
    # a new run accounts for what is there and keeps the bound
    again = CaptureStore(tmp_path, max_bytes=bound, queue_bytes=10**6)
    again.start()
    again.offer(b"y" * 5_000, record(200))
    again.close()
    assert disk_bytes(tmp_path) <= bound


def test_an_unwritable_folder_is_logged_once_and_counted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "a-file").write_text("not a folder")
    tally = Tally()
    store = CaptureStore(tmp_path / "a-file" / "capture", max_bytes=10**6, queue_bytes=10**6, observer=tally)
    store.start()
    with caplog.at_level(logging.ERROR, logger="learnserve"):
        assert store.offer(b"one", record(1))
        assert store.offer(b"two", record(2))
        store.close()
    assert tally.outcomes == ["failed", "failed"]
    assert len([r for r in caplog.records if "cannot write" in r.message]) == 1
    with pytest.raises(NotADirectoryError):
        store.append_feedback({"time": 1_765_000_000.0, "request_id": "r1"})


def test_recent_answers_keep_the_newest() -> None:
    recent: RecentAnswers = RecentAnswers(2)
    for i in range(3):
        recent.put(f"r{i}", i)  # type: ignore[arg-type]
    assert recent.get("r0") is None
    assert recent.get("r2") == 2


def test_a_record_that_cannot_be_written_does_not_stop_the_writer(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    tally = Tally()
    store = CaptureStore(tmp_path, max_bytes=10**6, queue_bytes=10**6, observer=tally)
    store.start()
    with caplog.at_level(logging.ERROR, logger="learnserve"):
        store.offer(b"a", {**record(1), "answer": object()})  # not JSON
        store.offer(b"b", record(2))
        store.close()
    assert tally.outcomes == ["failed", "written"]
    assert [p.read_bytes() for p in (tmp_path / BLOBS).rglob("*") if p.is_file()] == [b"b"]  # no orphan blob
    assert "could not write the record of r1" in caplog.text
