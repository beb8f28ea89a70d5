"""`python -m training import EXPORT.pkl --name NAME`: bring a learner exported elsewhere (`learn.export()` in a
notebook, fastai 2.0 to 2.8) in, as OUT/NAME.pkl re-exported by this fastai with OUT/NAME.json, ready to serve.

1. Survey the pickle without running it (training/import_survey.py): refuse what is not a fastai vision learner.
2. In a child process (a pickle is code, and another Python's bytecode can crash the interpreter): unpickle it with
   the old fastcore names mapped and the notebook's names taken from --code, check that it is a single-label
   classifier that answers, and re-export it (training/import_child.py).
3. In a second child: load the re-export with fastai's own load_learner, as the server will, and check that it
   answers the probe images as the original did (and measure accuracy on --data).
4. Write the manifest from what the learner itself holds; with --onnx, export the graph too.
Nothing is written to OUT unless every step passed.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from training import distributed
from training.errors import TrainingError
from training.import_survey import Survey, refuse_unsupported, survey
from training.manifest import (
    CodeFile,
    DatasetInfo,
    ImportInfo,
    Manifest,
    Metrics,
    ModelInfo,
    Normalization,
    Preprocessing,
    library_versions,
    sha256_file,
    write_manifest,
)

VERSIONED = ("torch", "torchvision", "fastai", "fastcore", "fasttransform", "pillow", "learnserve")
MAX_PROBE_DIFF = 1e-5  # probabilities of the original (converted in memory) and of the re-export, reloaded
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class ForeignBytecode(TrainingError):
    """Loading the export crashed the child or its code objects did not fit: another Python's bytecode."""


@dataclass(frozen=True)
class ImportOptions:
    source: Path
    name: str
    out: Path = Path("models")
    data: str | None = None
    onnx: bool = False
    code: Path | None = None


@dataclass(frozen=True)
class Imported:
    model: Path
    manifest: Manifest
    warnings: list[str]


def import_export(opts: ImportOptions) -> Imported:
    check_options(opts)
    found = survey(opts.source)
    refuse_unsupported(opts.source, found)
    opts.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=opts.out, prefix=".import-") as tmp:
        work = Path(tmp)
        staged = work / f"{opts.name}.pkl"  # torch names the zip's folder after the file: the model's name
        request = {"source": str(opts.source.resolve()), "out": str(staged),
                   "code": str(opts.code.resolve()) if opts.code else None}  # fmt: skip
        try:
            converted = run_child("convert", request, work, opts)
        except ForeignBytecode:  # a fastai 2.8 export from another Python: its embedded code is replaced
            converted = run_child("convert", request | {"foreign": True}, work, opts)
        rows, counts = data_rows(opts.data, work) if opts.data else (None, {})
        checked = run_child("check", {"model": str(staged), "data": str(rows) if rows else None}, work, opts)
        diff = max_diff(converted["answers"], checked["answers"])
        if diff > MAX_PROBE_DIFF:
            raise TrainingError(
                f"{opts.source}: the re-exported learner answers differently from the original (by {diff:.1e})"
            )
        validation = checked.get("validation")
        if validation is not None:
            validation["counts"] = validation.get("counts") or counts  # segmentation: pixels of each code
        manifest = build_manifest(opts, found, converted, validation, staged, diff)
        write_manifest(staged, manifest)
        if opts.onnx:  # in the staging folder too: a learner the ONNX path cannot reproduce writes nothing
            from training.onnx_export import export_onnx

            manifest = export_onnx(staged)
        target = opts.out / f"{opts.name}.pkl"
        # The graph and the manifest before the .pkl: a rescan never sees a .pkl without its manifest.
        for path in (staged.with_suffix(".onnx"), staged.with_suffix(".json"), staged):
            if path.exists():
                path.chmod(0o644)
                os.replace(path, opts.out / path.name)
    return Imported(target, manifest, import_warnings(converted["missing"]))


def check_options(opts: ImportOptions) -> None:
    if not NAME.match(opts.name):
        raise TrainingError(
            f"--name {opts.name!r}: use letters, digits, '_', '-' and '.' (it names the files)"
        )
    if not opts.source.is_file():
        raise TrainingError(f"export '{opts.source}' does not exist (or is not a file)")
    if opts.code is not None and not opts.code.is_file():
        raise TrainingError(f"--code file '{opts.code}' does not exist")
    if (opts.out / f"{opts.name}.pkl").resolve() == opts.source.resolve():
        raise TrainingError(
            f"{opts.out / opts.name}.pkl is the export itself: choose another --out or --name, so the original "
            "is kept"
        )


def run_child(mode: str, request: dict[str, Any], work: Path, opts: ImportOptions) -> dict[str, Any]:
    """Run training.import_child; its last output line is the answer. A crash or refusal is a TrainingError."""
    request_file = work / f"{mode}.json"
    request_file.write_text(json.dumps(request))
    root = str(Path(__file__).resolve().parent.parent)  # so `training` imports even when not pip-installed
    path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p)
    env = {**distributed.clean_environment(), "PYTHONPATH": path}
    cmd = [sys.executable, "-m", "training.import_child", mode, str(request_file)]
    proc = subprocess.run(cmd, cwd=work, capture_output=True, text=True, env=env)
    what = opts.source if mode == "convert" else f"the re-export of {opts.source}"
    if proc.returncode < 0:
        crashed = ForeignBytecode if mode == "convert" and not request.get("foreign") else TrainingError
        raise crashed(f"loading {what} crashed the interpreter (signal {-proc.returncode}); {python_hint()}")
    try:
        answer: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise TrainingError(f"{what} cannot be imported: {last}") from None
    if not answer["ok"]:
        error = str(answer["error"])
        if "code expected" in error or "code() argument" in error:
            if mode == "convert" and not request.get("foreign"):
                raise ForeignBytecode(error)
            error += f"; {python_hint()}"
        raise TrainingError(f"{what} cannot be imported: {error}")
    return answer


def python_hint() -> str:
    running = ".".join(map(str, sys.version_info[:2]))
    return (
        "fastai 2.8 exports hold code compiled by the Python that wrote them, and this is Python "
        f"{running}: export it again from a notebook running Python {running}, or run this import (and the "
        "server) with the notebook's Python version (`import sys; sys.version` in the notebook tells it)"
    )


def data_rows(data: str, work: Path) -> tuple[Path, dict[str, int]]:
    """--data (a labelled folder or CSV, as for train) as a CSV of path,label for the check child, and its counts;
    a folder of images/ and masks/ (a segmentation's) as path,mask rows."""
    from training.datasets import load_table

    if (Path(data) / "images").is_dir() and (Path(data) / "masks").is_dir():
        return mask_rows(Path(data), work), {}

    table = load_table(data)
    rows = work / "data.csv"
    table.frame[["path", "label"]].to_csv(rows, index=False)
    return rows, table.counts()


def mask_rows(data: Path, work: Path) -> Path:
    """images/NAME.* with masks/NAME.png (or CamVid's masks/NAME_P.png) as a CSV of path,mask."""
    import pandas as pd

    pairs = []
    for image in sorted(p for p in (data / "images").iterdir() if p.is_file() and not p.name.startswith(".")):
        found = [m for m in (data / "masks" / f"{image.stem}.png", data / "masks" / f"{image.stem}_P.png")
                 if m.is_file()]  # fmt: skip
        if found:
            pairs.append((str(image), str(found[0])))
    if not pairs:
        raise TrainingError(
            f"--data {data}: no image in images/ has its mask in masks/ (NAME.png or NAME_P.png)"
        )
    rows = work / "data.csv"
    pd.DataFrame(pairs, columns=["path", "mask"]).to_csv(rows, index=False)
    return rows


def max_diff(a: list[list[float]], b: list[list[float]]) -> float:
    return max(
        abs(x - y) for row_a, row_b in zip(a, b, strict=True) for x, y in zip(row_a, row_b, strict=True)
    )


def build_manifest(
    opts: ImportOptions,
    found: Survey,
    converted: dict[str, Any],
    validation: dict[str, Any] | None,
    staged: Path,
    diff: float,
) -> Manifest:
    facts = converted["facts"]
    resize = facts["resize"] or {}
    if validation is not None and "error" in validation:
        raise TrainingError(f"--data {opts.data}: {validation['error']}")
    sha256 = sha256_file(staged)
    normalize = Normalization(**facts["normalize"]) if facts["normalize"] else None
    code = None
    if opts.code is not None:
        code = CodeFile(file=opts.code.name, sha256=sha256_file(opts.code), provided=converted["provided"])
    return Manifest(
        name=opts.name,
        source="imported",
        kind=facts["kind"],
        threshold=facts["threshold"],
        classes=facts["classes"],
        arch=facts["arch"],
        input_size=facts["input_size"],
        preprocessing=Preprocessing(
            resize_method=resize.get("resize_method", "none"),
            size=resize.get("size", facts["input_size"]),
            normalize=normalize,
            augment=facts["augment"],
            **{k: resize[k] for k in ("pad_mode", "resample") if k in resize},
        ),
        metrics=None
        if validation is None
        else Metrics(**{k: validation.get(k) for k in Metrics.model_fields}),
        dataset=None
        if validation is None
        else DatasetInfo(
            source=Path(str(opts.data)).name,
            counts=validation["counts"],
            train_size=0,
            valid_size=int(validation["n"]),
            split="all",
        ),
        versions=library_versions(VERSIONED),
        sha256=sha256,
        export_id=sha256[:12],
        model=ModelInfo(class_name=facts["model_class"], parameters=facts["parameters"]),
        imported=ImportInfo(
            file=opts.source.name,
            sha256=sha256_file(opts.source),
            written_by={"fastai": found.written_by}
            | (
                {"python": "another version than this one (its embedded code replaced)"}
                if converted["replaced"]
                else {}
            ),
            converted=found.old_fastai,
            missing_names=converted["missing"],
            code=code,
            max_abs_diff=diff,
        ),
        created_at=datetime.now(UTC),
    )


def import_warnings(missing: list[str]) -> list[str]:
    if not missing:
        return []
    names = ", ".join(f"__main__.{n}" for n in missing)
    return [
        f"the export names {names} from the notebook that made it, and no --code file defined "
        f"{'them' if len(missing) > 1 else 'it'}: only training needs {'them' if len(missing) > 1 else 'it'} "
        "(it answered without), so it is served as it is"
    ]
