"""`clean` on a multi-label CSV (path,labels rows, PASCAL's layout): apply interpret's top_losses.csv decisions.

The decisions file is the multi-label top_losses.csv (path, actual and predicted labels separated by spaces, the
image's loss, the probabilities) with an `action` column: `keep` (or empty), `delete`, or the image's new labels
separated by spaces (labels the CSV already has, any case; `(none)` for no label, as the top-losses grid shows it).
A deleted image's file moves to _removed/ beside the CSV and its row leaves the CSV; a relabelled row gets the new
labels. Before the CSV is first rewritten it is copied to NAME.csv.orig (never overwritten), and every change is
listed with the labels it replaced, so nothing is destroyed. Every decision is checked before anything changes, and
running it twice changes nothing the second time.
"""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

from training.clean import Report
from training.datasets import REMOVED_DIR
from training.errors import TrainingError

NONE = "(none)"


def read_rows(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames or ()), list(reader)


def resolve(base: Path, text: str) -> Path:
    p = Path(text).expanduser()
    return (p if p.is_absolute() else base / p).resolve()


def new_labels(action: str, known: dict[str, str], line: int, decisions: Path) -> str:
    """The action's labels in the CSV's spelling, sorted as the CSV keeps them; unknown ones are refused."""
    if action.strip().lower() == NONE:
        return ""
    words = action.split()
    unknown = [w for w in words if w.lower() not in known]
    if unknown:
        raise TrainingError(
            f"{decisions} line {line}: unknown action or label(s) {', '.join(unknown)}: use keep, delete, {NONE}, "
            f"or labels separated by spaces ({', '.join(sorted(known.values()))})"
        )
    return " ".join(sorted({known[w.lower()] for w in words}))


def clean_csv(table: Path, decisions: Path) -> Report:
    base = table.parent.resolve()
    fields, rows = read_rows(table)
    column = "labels" if "labels" in fields else "label"
    if "path" not in fields or column not in fields:
        raise TrainingError(f"{table} needs 'path' and 'labels' columns (a multi-label CSV)")
    dfields, wanted = read_rows(decisions)
    if not {"path", "action"} <= set(dfields):
        raise TrainingError(f"{decisions} needs 'path' and 'action' columns (top_losses.csv plus 'action')")
    known = {label.lower(): label for row in rows for label in (row[column] or "").split()}
    by_path = {resolve(base, row["path"]): row for row in rows}
    plan: dict[Path, tuple[int, str]] = {}  # file -> (line, "keep" | "delete" | "relabel")
    labels: dict[Path, str] = {}  # file -> its new labels
    for line, decision in enumerate(wanted, start=2):
        src = resolve(base, decision["path"])
        if not src.is_relative_to(base):
            raise TrainingError(f"refusing to touch {decision['path']}: it is outside {base}")
        if src in plan:
            raise TrainingError(
                f"lines {plan[src][0]} and {line} of {decisions} both decide about {decision['path']}: keep one"
            )
        word = (decision["action"] or "").strip()
        if word.lower() in ("", "keep", "delete"):
            plan[src] = (line, word.lower() or "keep")
        else:
            plan[src], labels[src] = (line, "relabel"), new_labels(word, known, line, decisions)
    report = Report(base)
    kept_rows, changed = [], False
    for src, row in by_path.items():
        line, action = plan.pop(src, (0, "untouched"))
        if action == "delete":
            dest = base / REMOVED_DIR / src.relative_to(base)
            where = f"file moved to {report.rel(dest)}" if src.exists() else "its file was already missing"
            if src.exists():
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.move(src, dest)
            report.lines.append(f"deleted {report.rel(src)} (labels '{row[column]}'): {where}")
            report.counts["deleted (moved to _removed)"] += 1
            changed = True
            continue
        if action == "relabel":
            given = labels[src]
            if given == " ".join(sorted(set((row[column] or "").split()))):
                report.counts["unchanged"] += 1
            else:
                report.lines.append(f"relabelled {report.rel(src)}: '{row[column]}' -> '{given}'")
                report.counts["relabelled"] += 1
                row[column], changed = given, True
        elif action == "keep":
            report.counts["kept"] += 1
        kept_rows.append(row)
    for src, (line, action) in plan.items():  # decided about, but not (or no longer) in the CSV
        gone = action == "delete" and (base / REMOVED_DIR / src.relative_to(base)).exists()
        if not gone:
            report.lines.append(f"missing: {report.rel(src)} (line {line}): not in {table.name}")
        report.counts["already done" if gone else "missing"] += 1
    if changed:
        backup = table.with_name(table.name + ".orig")
        if not backup.exists():
            shutil.copy2(table, backup)
        with table.open("w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=fields)
            writer.writeheader()
            writer.writerows(kept_rows)
        report.lines.append(
            f"rewrote {table.name} ({len(kept_rows)} rows; before the first clean: {backup.name})"
        )
    return report
