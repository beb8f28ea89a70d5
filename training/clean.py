"""`clean`: apply keep/delete/relabel decisions to a class-folder dataset, headless and reversible.

The decisions file is interpret's `top_losses.csv` with an `action` column: `keep`, `delete`, or a class name.
Deleted files move to DATA/_removed/<class>/, relabelled files to DATA/<new class>/ (with train/ and valid/ folders:
to the new class's folder in the same half). Nothing is destroyed, files outside DATA are refused, and running it
twice changes nothing the second time.
"""

from __future__ import annotations

import csv
import shutil
from collections import Counter
from pathlib import Path

from training.datasets import REMOVED_DIR, SPLIT_DIRS, class_dirs, is_split_layout
from training.errors import TrainingError


def clean(data: Path, decisions: Path) -> Counter[str]:
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
    moves = [plan(root, roots, classes, Path(row["path"]), (row["action"] or "").strip()) for row in rows]
    for src, dest, _ in moves:
        if dest is not None and dest != src and src.exists() and dest.exists():
            raise TrainingError(f"cannot move {src} to {dest}: a file is already there")
    summary: Counter[str] = Counter()
    for src, dest, action in moves:
        summary[move(src, dest, action)] += 1
    return summary


def plan(
    root: Path, roots: list[Path], classes: set[str], path: Path, action: str
) -> tuple[Path, Path | None, str]:
    src = (path if path.is_absolute() else root / path).resolve()
    if not src.is_relative_to(root):
        raise TrainingError(f"refusing to touch {path}: it is outside {root}")
    if action in ("", "keep"):
        return src, None, "keep"
    if action == "delete":
        return src, root / REMOVED_DIR / src.relative_to(root), action
    if action in classes:
        class_root = next((r for r in roots if src.is_relative_to(r)), root)
        return src, class_root / action / src.name, action
    raise TrainingError(
        f"unknown action '{action}' for {path}: use keep, delete or a class name ({', '.join(sorted(classes))})"
    )


def move(src: Path, dest: Path | None, action: str) -> str:
    if dest is None:
        return "kept"
    if dest == src:
        return "unchanged"
    if not src.exists():
        return "already done" if dest.exists() else "missing"
    if dest.exists():
        raise TrainingError(f"cannot move {src} to {dest}: a file is already there")
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(src, dest)
    return "deleted (moved to _removed)" if action == "delete" else f"relabelled to {action}"
