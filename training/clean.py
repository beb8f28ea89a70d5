"""`clean`: apply keep/delete/relabel decisions to a class-folder dataset, headless and reversible (a multi-label CSV:
training/clean_labels.py).

The decisions file is interpret's `top_losses.csv` with an `action` column: `keep`, `delete`, or a class name (any
case). Deleted files move to DATA/_removed/<class>/, relabelled files to DATA/<new class>/ (with train/ and valid/
folders: to the new class's folder in the same half). Every move is listed, and every path that is not there.
Nothing is destroyed, files outside DATA and two decisions about one file are refused before anything moves, and
running it twice changes nothing the second time.
"""

from __future__ import annotations

import csv
import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from training.datasets import REMOVED_DIR, SPLIT_DIRS, class_dirs, is_split_layout
from training.errors import TrainingError


@dataclass
class Move:
    line: int  # in the decisions file, for messages
    src: Path
    dest: Path | None  # None: keep
    action: str


@dataclass
class Report:
    root: Path
    lines: list[str] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)

    def __str__(self) -> str:
        total = ", ".join(f"{n} {what}" for what, n in sorted(self.counts.items())) or "no decisions"
        return "\n".join([*self.lines, total])

    def rel(self, path: Path) -> str:
        return str(path.relative_to(self.root))


def clean(data: Path, decisions: Path) -> Report:
    if data.suffix.lower() == ".csv" and data.is_file():  # multi-label: training/clean_labels.py
        from training.clean_labels import clean_csv

        if not decisions.is_file():
            raise TrainingError(f"decisions file '{decisions}' does not exist")
        return clean_csv(data, decisions)
    root = data.resolve()
    if not root.is_dir():
        raise TrainingError(f"clean works on a folder of class subfolders; '{data}' is not a folder")
    if not decisions.is_file():
        raise TrainingError(f"decisions file '{decisions}' does not exist")
    with decisions.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames or not {"path", "action"} <= set(reader.fieldnames):
            raise TrainingError(
                f"{decisions} needs 'path' and 'action' columns (top_losses.csv plus 'action')"
            )
        rows = list(reader)
    roots = [root / name for name in SPLIT_DIRS] if is_split_layout(root) else [root]
    classes = {d.name for r in roots for d in class_dirs(r)}
    # Check every decision before moving anything, so a typo in row 40 does not leave rows 1-39 half applied.
    moves = [plan(root, roots, classes, line, row) for line, row in enumerate(rows, start=2)]
    seen: dict[Path, int] = {}
    for m in moves:
        if m.src in seen:
            raise TrainingError(
                f"lines {seen[m.src]} and {m.line} of {decisions} both decide about "
                f"{m.src.relative_to(root)}: keep one"
            )
        seen[m.src] = m.line
        if m.dest is not None and m.dest != m.src and m.src.exists() and m.dest.exists():
            raise TrainingError(f"cannot move {m.src} to {m.dest}: a file is already there")
    report = Report(root)
    for m in moves:
        report.counts[apply(m, report)] += 1
    return report


def plan(root: Path, roots: list[Path], classes: set[str], line: int, row: dict[str, str]) -> Move:
    path, action = Path(row["path"]), (row["action"] or "").strip()
    src = (path if path.is_absolute() else root / path).resolve()
    if not src.is_relative_to(root):
        raise TrainingError(f"refusing to touch {path}: it is outside {root}")
    word = action.lower()
    if word in ("", "keep"):
        return Move(line, src, None, "keep")
    if word == "delete":
        return Move(line, src, root / REMOVED_DIR / src.relative_to(root), "delete")
    matches = [c for c in classes if c == action] or [c for c in classes if c.lower() == word]
    if len(matches) == 1:
        class_root = next((r for r in roots if src.is_relative_to(r)), root)
        return Move(line, src, class_root / matches[0] / src.name, matches[0])
    raise TrainingError(
        f"unknown action '{action}' for {path}: use keep, delete or a class name ({', '.join(sorted(classes))})"
    )


def apply(m: Move, report: Report) -> str:
    if not m.src.exists():
        if m.dest is not None and m.dest.exists():
            return "already done"
        report.lines.append(f"missing: {report.rel(m.src)} (line {m.line}): not in the data folder")
        return "missing"
    if m.dest is None:
        return "kept"
    if m.dest == m.src:
        return "unchanged"
    if m.dest.exists():
        raise TrainingError(f"cannot move {m.src} to {m.dest}: a file is already there")
    m.dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(m.src, m.dest)
    report.lines.append(f"moved {report.rel(m.src)} -> {report.rel(m.dest)}")
    return "deleted (moved to _removed)" if m.action == "delete" else f"relabelled to {m.action}"
