"""`python -m app predict --explain DIR`: one Grad-CAM overlay PNG per input file (app/core/explain.py), for the
answer's top class, named after the file (`NAME.explain.png`; a number is added when two inputs share a name)."""

from __future__ import annotations

import sys
from pathlib import Path

from app.core.errors import CoreError, FileTooLarge
from app.core.explain_service import Explainer
from app.core.unit import ModelUnit


def overlay_name(path: Path, taken: set[str]) -> str:
    name = f"{path.stem}.explain.png"
    n = 1
    while name in taken:
        n += 1
        name = f"{path.stem}-{n}.explain.png"
    taken.add(name)
    return name


async def write_overlays(unit: ModelUnit, files: list[Path], out: Path, max_bytes: int) -> int:
    """Write DIR/NAME.explain.png for each file; a file that cannot be explained is reported on stderr. Returns how
    many could not be."""
    out.mkdir(parents=True, exist_ok=True)
    explainer = Explainer(max_explains=1)
    taken: set[str] = set()
    failed = 0
    for path in files:
        try:
            if path.stat().st_size > max_bytes:
                raise FileTooLarge.over(max_bytes, path.stat().st_size)
            done = await explainer.explain(unit, path.read_bytes(), None)
        except (CoreError, OSError) as e:
            failed += 1
            print(f"{path}: not explained: {getattr(e, 'detail', e)}", file=sys.stderr)
            continue
        (out / overlay_name(path, taken)).write_bytes(done.overlay)
    return failed
