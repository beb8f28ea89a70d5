"""`harvest`: turn what the server captured and was told about back into training images.

Reads CAPTURE_DIR as the server writes it (README: "Improving the model from traffic"; the JSON lines are the
contract, so this never imports the server): records/*.jsonl (one line per captured answer: request_id, time,
model, version, kind, reason, answer, sha256), feedback/*.jsonl (request_id, label: the right class) and
blobs/<sha[:2]>/<sha> (the bytes as uploaded). Every captured input with feedback is copied into the class folder
of its label: DATA/<label>/<sha256>.<ext> (DATA/train/<label>/ when DATA has train/ and valid/), or, when DATA is a
CSV of path,label rows, into harvested/ beside it with a row appended. Nothing is overwritten, and an image whose
sha256 is already anywhere in DATA is not added again, so running it twice adds nothing the second time.

The captured inputs without feedback can be listed (`--unlabelled CSV`) with an empty `action` column: fill it in
with a class name (or `correct`: the model's own label; `delete` or nothing: leave it out) and pass it back with
`--labels CSV`, as `clean --decisions` takes a top-losses file.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
from collections import Counter
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

from training.datasets import IMAGE_EXTENSIONS, class_dirs, is_split_layout
from training.errors import TrainingError
from training.manifest import SINGLE_LABEL

CORRECT = "correct"
EXTENSIONS = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp", "GIF": ".gif", "BMP": ".bmp", "TIFF": ".tif"}
UNLABELLED_COLUMNS = ["path", "action", "predicted", "probability", "sha256", "request_id", "model", "version",
                      "time", "reason"]  # fmt: skip
HARVESTED_DIR = "harvested"  # beside a CSV dataset: where its harvested images go


@dataclass
class Harvest:
    added: Counter[str] = field(default_factory=Counter)  # per class
    skipped: Counter[str] = field(default_factory=Counter)  # per reason
    lines: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        added = ", ".join(f"{label} {n}" for label, n in sorted(self.added.items())) or "nothing"
        skipped = ", ".join(f"{n} {why}" for why, n in sorted(self.skipped.items()))
        total = sum(self.added.values())
        return "\n".join(
            [*self.lines, f"added {total}: {added}", *([f"skipped: {skipped}"] if skipped else [])]
        )


def read_lines(folder: Path) -> list[dict[str, Any]]:
    """Every JSON line of folder/*.jsonl in file order; a torn or foreign line is skipped."""
    found = []
    for path in sorted(folder.glob("*.jsonl")):
        with path.open(encoding="utf-8", errors="replace") as f:
            for line in f:
                try:
                    entry = json.loads(line)
                except ValueError:
                    continue
                if isinstance(entry, dict) and isinstance(entry.get("request_id"), str):
                    found.append(entry)
    return found


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def extension_of(blob: Path) -> str | None:
    try:
        with Image.open(blob) as image:
            return EXTENSIONS.get(image.format or "")
    except (UnidentifiedImageError, OSError):
        return None


class Target:
    """Where harvested images go: class folders, or a CSV with its harvested/ folder."""

    def __init__(self, into: Path) -> None:
        self.into = into
        self.table = into if into.suffix.lower() == ".csv" else None
        self.columns: list[str] = []
        if self.table is not None:
            if not self.table.is_file():
                raise TrainingError(
                    f"--into {into}: no such CSV (give a class-folder dataset or an existing CSV)"
                )
            with self.table.open(newline="", encoding="utf-8") as f:
                reader = csv.DictReader(f)
                self.columns = list(reader.fieldnames or ())
                if "path" not in self.columns or "label" not in self.columns:
                    raise TrainingError(
                        f"{into} needs 'path' and 'label' columns (multi-label CSVs are not harvested)"
                    )
                rows = list(reader)
            listed = [Path(row["path"]) for row in rows if row.get("path")]
            labels = {row["label"] for row in rows if row.get("label")}
            self.files = [p if p.is_absolute() else into.parent / p for p in listed]
            self.classes = labels
            self.files += list((into.parent / HARVESTED_DIR).glob("*"))
            self.root = into.parent
        else:
            if not into.is_dir():
                raise TrainingError(f"--into {into}: not a folder of class subfolders (nor a .csv file)")
            self.root = into / "train" if is_split_layout(into) else into
            self.files = list(into.rglob("*"))  # _removed/ too: what `clean` deleted does not come back
            self.classes = {d.name for d in class_dirs(self.root)}
        self.known = {
            sha256_of(p) for p in self.files if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
        }

    def add(self, blob: Path, sha: str, ext: str, label: str) -> Path:
        if self.table is None:
            dest = self.root / label / f"{sha}{ext}"
        else:
            dest = self.root / HARVESTED_DIR / f"{sha}{ext}"
        dest.parent.mkdir(parents=True, exist_ok=True)
        with dest.open("xb") as out:  # never overwrite: FileExistsError if something is there
            out.write(blob.read_bytes())
        if self.table is not None:
            row = {"path": f"{HARVESTED_DIR}/{dest.name}", "label": label, "is_valid": "false"}
            with self.table.open("a", newline="", encoding="utf-8") as f:
                csv.DictWriter(f, self.columns, extrasaction="ignore").writerow(row)
        self.known.add(sha)
        return dest


def read_labels(path: Path) -> dict[str, str]:
    """sha256 -> action, from a filled-in `--unlabelled` file (rows with an empty action or `delete` are left out)."""
    if not path.is_file():
        raise TrainingError(f"--labels {path} does not exist")
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if not {"sha256", "action"} <= set(reader.fieldnames or ()):
            raise TrainingError(f"{path} needs 'sha256' and 'action' columns (a filled-in --unlabelled file)")
        rows = [(r["sha256"].strip(), (r["action"] or "").strip(), r.get("predicted") or "") for r in reader]
    return {sha: predicted if action == CORRECT else action for sha, action, predicted in rows
            if action and action.lower() != "delete"}  # fmt: skip


def harvest(
    capture: Path,
    into: Path,
    uncertain_only: bool = False,
    since: date | None = None,
    unlabelled: Path | None = None,
    labels: Path | None = None,
) -> Harvest:
    if not (capture / "records").is_dir():
        raise TrainingError(f"{capture} holds no records/ folder: is it the server's LEARNSERVE_CAPTURE_DIR?")
    target = Target(into)
    records: dict[str, dict[str, Any]] = {}
    for r in read_lines(capture / "records"):
        if isinstance(r.get("sha256"), str) and (
            since is None or str(r.get("time", ""))[:10] >= since.isoformat()
        ):
            records[r["request_id"]] = r  # a repeated ID: the latest answer
    told = {f["request_id"]: f for f in read_lines(capture / "feedback") if isinstance(f.get("label"), str)}
    listed = read_labels(labels) if labels else {}
    report = Harvest()
    waiting = []
    for request_id, record in records.items():
        sha = record["sha256"]
        label = told[request_id]["label"] if request_id in told else listed.get(sha)
        why = skip_reason(record, label, uncertain_only, target.classes)
        if label is None and why is None:
            waiting.append(record)
            continue
        if why is None:
            assert label is not None
            why = copy(capture, target, sha, label, report)
        if why:
            report.skipped[why] += 1
    uncaptured = sum(1 for i in told if i not in records)
    if uncaptured:
        report.skipped[
            "feedback without a captured input (not kept, opted out, dropped, or before --since)"
        ] += uncaptured
    if unlabelled is not None:
        write_unlabelled(unlabelled, capture, waiting)
        report.lines.append(f"listed {len(waiting)} captured inputs without a label in {unlabelled}")
    return report


def skip_reason(
    record: dict[str, Any], label: str | None, uncertain_only: bool, classes: set[str]
) -> str | None:
    if record.get("kind") != SINGLE_LABEL:
        return f"{record.get('kind')} answers (only single-label classifiers are harvested)"
    if uncertain_only and record.get("reason") != "uncertain":
        return "sampled, not uncertain (--uncertain-only)"
    if label is not None and label not in classes:  # also keeps every path inside DATA
        return "labels that are not a class of DATA"
    return None


def copy(capture: Path, target: Target, sha: str, label: str, report: Harvest) -> str | None:
    """Copy one blob in; the reason it was skipped, or None."""
    if sha in target.known:
        return "already in the data"
    blob = capture / "blobs" / sha[:2] / sha
    if not blob.is_file():
        return "inputs dropped to keep the capture bound"
    ext = extension_of(blob)
    if ext is None:
        return "inputs that are not images"
    try:
        target.add(blob, sha, ext, label)
    except FileExistsError:
        return "already in the data"
    report.added[label] += 1
    return None


def write_unlabelled(path: Path, capture: Path, waiting: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    staged = path.with_name(f".{path.name}.tmp")
    with staged.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, UNLABELLED_COLUMNS)
        writer.writeheader()
        for r in waiting:
            answer = r.get("answer") or {}
            sha = r["sha256"]
            writer.writerow({
                "path": str((capture / "blobs" / sha[:2] / sha).resolve()), "action": "",
                "predicted": answer.get("label", ""), "probability": answer.get("probability", ""), "sha256": sha,
                **{k: r.get(k, "") for k in ("request_id", "model", "version", "time", "reason")},
            })  # fmt: skip
    os.replace(staged, path)
