"""Capture: keep the uploads the model was unsure of (and a sample of the rest) on disk, without ever delaying an
answer, within a size bound; and append the corrections clients send back.

The event loop only hands `(bytes, record)` to an in-memory queue bounded in bytes (`offer`: a lock, a comparison,
an append; when the queue is full the input is dropped and counted, never waited for). One writer thread drains it:
it hashes the bytes, writes the blob once as CAPTURE_DIR/blobs/<sha[:2]>/<sha>, appends the record as one JSON line
to CAPTURE_DIR/records/YYYY-MM-DD.jsonl (UTC), then drops the oldest files (blobs, record and feedback files, by
modification time) until the folder is back under its bound, counting what it dropped. A folder that cannot be
written is logged (once per outage) and counted; serving goes on. The line format is the contract `python -m
training harvest` reads (README: "Improving the model from traffic").
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import queue
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

logger = logging.getLogger("learnserve")

BLOBS, RECORDS, FEEDBACK = "blobs", "records", "feedback"
PRIVATE = 0o600  # files: read and written by the server's user only
WRITTEN, DUPLICATE, DROPPED, FAILED = "written", "duplicate", "dropped_full", "failed"


FLUSH_SECONDS = 0.1  # the writer gathers what arrives in this time into one batch


class CaptureObserver(Protocol):
    """What capture reports; the Prometheus metrics implement it. Called from the writer thread too."""

    def captured(self, outcome: str) -> None: ...

    def evicted(self, files: int, size: int) -> None: ...


@dataclass(frozen=True, slots=True)
class Answered:
    """What the server remembers of one answer, for the feedback that may follow it."""

    model: str
    version: str
    kind: str
    predicted: str | None  # a classifier's label; None for regression and key points
    classes: Sequence[str]
    captured: bool  # its input was queued for capture


class RecentAnswers:
    """The last `size` answers by request ID (a repeated ID: the latest answer wins)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._answers: OrderedDict[str, Answered] = OrderedDict()

    def put(self, request_id: str, answered: Answered) -> None:
        self._answers.pop(request_id, None)
        self._answers[request_id] = answered
        if len(self._answers) > self.size:
            self._answers.popitem(last=False)

    def get(self, request_id: str) -> Answered | None:
        return self._answers.get(request_id)


def day_of(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d")


def iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def encode(line: dict[str, Any]) -> bytes:
    """One JSON line (raises TypeError or ValueError for what JSON cannot hold)."""
    return (json.dumps(line, separators=(",", ":"), ensure_ascii=False) + "\n").encode()


class CaptureStore:
    def __init__(
        self,
        root: Path,
        max_bytes: int,
        queue_bytes: int,
        observer: CaptureObserver | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.root = root
        self.max_bytes = max_bytes
        self.queue_bytes = queue_bytes
        self.observer = observer
        self.clock = clock
        self._queue: queue.SimpleQueue[tuple[bytes, dict[str, Any]] | None] = queue.SimpleQueue()
        self._queued = 0  # bytes waiting in the queue
        self._queue_lock = threading.Lock()
        self._disk = (
            threading.Lock()
        )  # the files and their accounting: the writer thread and feedback appends
        self._blobs: deque[tuple[float, Path, int]] = deque()  # oldest first
        self._logs: dict[Path, tuple[float, int]] = {}  # record and feedback files: (mtime, size)
        self._total = 0
        self._scanned = False
        self._folders: set[Path] = set()  # made already
        self._failing = False
        self._thread: threading.Thread | None = None

    # -- the event loop's side: never blocks -----------------------------------------------------------
    def offer(self, data: bytes, record: dict[str, Any]) -> bool:
        """Queue one input and its record for the writer; False (counted) when the queue is full."""
        size = len(data)
        with self._queue_lock:
            if self._queued + size > self.queue_bytes:
                full = True
            else:
                full = False
                self._queued += size
        if full:
            self._report(DROPPED)
            return False
        self._queue.put((data, record))
        return True

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="learnserve-capture", daemon=True)
        self._thread.start()

    def close(self, timeout: float = 10.0) -> None:
        """Write what is queued, then stop the writer (blocking: call it from a thread)."""
        if self._thread is None:
            return
        self._queue.put(None)
        self._thread.join(timeout)
        self._thread = None

    @property
    def size(self) -> int:
        """Bytes on disk under CAPTURE_DIR, as the writer accounts them."""
        return self._total

    # -- the writer thread ---------------------------------------------------------------------------
    def _run(self) -> None:
        """Write what is queued, a batch at a time. After the first input of a batch the writer waits FLUSH_SECONDS
        and then takes everything queued meanwhile: a thread that wakes for every input would ask for the GIL
        hundreds of times a second, and each time the event loop can wait up to the interpreter's switch interval
        (5 ms) to hand it over. One append per record file per batch, too."""
        stop = False
        while not stop:
            batch = [self._queue.get()]
            if batch[0] is not None:
                time.sleep(FLUSH_SECONDS)
                while not self._queue.empty():
                    batch.append(self._queue.get_nowait())
            stop = None in batch
            items = [item for item in batch if item is not None]
            try:
                for outcome in self._write(items):
                    self._report(outcome)
            except OSError as e:  # the record file could not be appended
                for _ in items:
                    self._failed(e)
            except Exception:  # never let one bad batch end the writer (the queue would only fill)
                logger.exception("capture: could not write a batch of %d inputs", len(items))
                for _ in items:
                    self._report(FAILED)
            finally:
                with self._queue_lock:
                    self._queued -= sum(len(data) for data, _ in items)

    def _write(self, items: list[tuple[bytes, dict[str, Any]]]) -> list[str]:
        """Each input's blob (once per sha256) and its record line; the outcome of each."""
        lines: dict[str, list[bytes]] = {}  # day -> its record lines, in order
        outcomes: list[str] = []
        with self._disk:
            self._scan()
            for data, record in items:
                sha = hashlib.sha256(data).hexdigest()
                try:
                    line = encode({**record, "time": iso(record["time"]), "sha256": sha, "bytes": len(data)})
                except Exception:  # never let one bad record end the writer (the queue would only fill)
                    logger.exception("capture: could not write the record of %s", record.get("request_id"))
                    outcomes.append(FAILED)
                    continue  # before any file: no blob without its record
                blob = self.root / BLOBS / sha[:2] / sha
                outcome = DUPLICATE
                try:
                    if not blob.exists():
                        self._folder(blob.parent)
                        staged = blob.with_name(f".{sha}.tmp")
                        with open(os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE), "wb") as f:
                            f.write(data)
                        os.replace(staged, blob)  # a reader never sees half a blob
                        self._blobs.append((self.clock(), blob, len(data)))
                        self._total += len(data)
                        outcome = WRITTEN
                        self._bound()  # in memory unless over: the bound holds blob by blob
                except OSError as e:  # this one fails (a full disk); the others' records are still written
                    self._failed_quietly(e)
                    outcomes.append(FAILED)
                    continue
                lines.setdefault(day_of(record["time"]), []).append(line)
                outcomes.append(outcome)
            for day, text in lines.items():
                self._append_day(RECORDS, day, b"".join(text))
            self._bound()
        if self._failing and FAILED not in outcomes:
            self._failing = False
            logger.info("capture: writing to %s again", self.root)
        return outcomes

    def append_feedback(self, entry: dict[str, Any]) -> None:
        """One feedback line in CAPTURE_DIR/feedback/YYYY-MM-DD.jsonl (blocking: call it from a thread).
        Raises OSError when the folder cannot be written."""
        with self._disk:
            self._scan()
            self._append(FEEDBACK, entry["time"], encode({**entry, "time": iso(entry["time"])}))
            self._bound()

    def _append(self, folder: str, seconds: float, text: bytes) -> None:
        self._append_day(folder, day_of(seconds), text)

    def _append_day(self, folder: str, day: str, text: bytes) -> None:
        path = self.root / folder / f"{day}.jsonl"
        self._folder(path.parent)
        with open(os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, PRIVATE), "ab") as f:
            f.write(text)
        _, size = self._logs.get(path, (0.0, 0))
        self._logs[path] = (self.clock(), size + len(text))
        self._total += len(text)

    def _folder(self, path: Path) -> None:
        """Folders only the server's user can enter: the uploads are the clients' files."""
        if path in self._folders and path.is_dir():
            return
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        parts = path.relative_to(self.root).parts
        for i in range(1, len(parts) + 1):
            self.root.joinpath(*parts[:i]).mkdir(mode=0o700, exist_ok=True)
        self._folders.add(path)

    def _scan(self) -> None:
        """Account for what an earlier run left (once, on the writer's first write, not at startup)."""
        if self._scanned:
            return
        blobs = []
        for path in (self.root / BLOBS).glob("*/*"):
            with contextlib.suppress(OSError):
                stat = path.stat()
                if path.name.startswith("."):  # a blob half written when an earlier run stopped
                    path.unlink()
                    continue
                blobs.append((stat.st_mtime, path, stat.st_size))
        for _, path, size in sorted(blobs, key=lambda b: b[0]):
            self._blobs.append((_, path, size))
            self._total += size
        for folder in (RECORDS, FEEDBACK):
            for path in (self.root / folder).glob("*.jsonl"):
                with contextlib.suppress(OSError):
                    stat = path.stat()
                    self._logs[path] = (stat.st_mtime, stat.st_size)
                    self._total += stat.st_size
        self._scanned = True

    def _bound(self) -> None:
        """Drop the oldest files until the folder is under its bound. A record file's time is its last line's,
        so the blobs it names go before it."""
        files = dropped = 0
        while self._total > self.max_bytes and (self._blobs or self._logs):
            log = min(self._logs.items(), key=lambda kv: kv[1][0], default=None)
            if self._blobs and (log is None or self._blobs[0][0] <= log[1][0]):
                _, path, size = self._blobs.popleft()
            else:
                assert log is not None
                path, (_, size) = log
                del self._logs[path]
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            self._total -= size
            files += 1
            dropped += size
        if files and self.observer:
            self.observer.evicted(files, dropped)

    def _failed(self, error: OSError) -> None:
        self._failed_quietly(error)
        self._report(FAILED)

    def _failed_quietly(self, error: OSError) -> None:
        """Logged once per outage (the outcome is counted by the caller)."""
        if not self._failing:
            self._failing = True
            logger.error("capture: cannot write to %s (%s); serving goes on, captures are dropped and "
                         "counted until it can", self.root, error)  # fmt: skip

    def _report(self, outcome: str) -> None:
        if self.observer:
            self.observer.captured(outcome)

    # -- feedback for answers older than memory ------------------------------------------------------
    def find(self, request_id: str) -> dict[str, Any] | None:
        """The newest captured record of this request ID on disk, or None (blocking: call it from a thread).
        Reads the record files newest first; they are bounded by CAPTURE_MAX_MB."""
        needle = json.dumps(request_id)
        for path in sorted((self.root / RECORDS).glob("*.jsonl"), reverse=True):
            with contextlib.suppress(OSError), path.open(encoding="utf-8", errors="replace") as f:
                found: dict[str, Any] | None = None
                for line in f:
                    if needle in line:
                        with contextlib.suppress(ValueError):
                            record = json.loads(line)
                            if record.get("request_id") == request_id:
                                found = record
                if found is not None:
                    return found
        return None
