"""What to score: a folder (recursive), a CSV with a `path` column, a text file of paths, or (the Ray engine) a
URI Ray can read such as s3://bucket/prefix. Paths come back in a stable order: a folder sorted, a list as given."""

from __future__ import annotations

import csv
from pathlib import Path

from app.core.errors import CoreError


class BadSource(CoreError):
    code = "bad_source"


def is_uri(source: str) -> bool:
    return "://" in source


def list_inputs(source: str) -> list[str]:
    """Every input path of a local SOURCE, in order. Relative paths in a list resolve against the list's folder."""
    path = Path(source).expanduser()
    if not path.exists():
        raise BadSource(f"{source} does not exist")
    if path.is_dir():
        return [str(p) for p in sorted(path.rglob("*")) if p.is_file() and not p.name.startswith(".")]
    if path.suffix.lower() == ".csv":
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            if not reader.fieldnames or "path" not in reader.fieldnames:
                raise BadSource(f"{source} needs a header row with a 'path' column")
            entries = [row["path"] for row in reader if row.get("path")]
    else:
        with path.open(encoding="utf-8") as f:
            entries = [line.strip() for line in f if line.strip() and not line.lstrip().startswith("#")]
    return [e if is_uri(e) or Path(e).is_absolute() else str(path.parent / e) for e in entries]
