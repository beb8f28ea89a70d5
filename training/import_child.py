"""The import's work that runs an export's code, in a child process so that a crash (a pickle holding another
Python's bytecode can kill the interpreter) cannot take the command down with it.

    python -m training.import_child convert REQUEST.json   unpickle (old names mapped, notebook names from --code or
                                                           stubbed), check, re-export with this fastai
    python -m training.import_child check REQUEST.json     load the re-export with fastai's own load_learner, as the
                                                           server will, and answer the probes (and --data)

Each prints one JSON line last: {"ok": true, ...} or {"ok": false, "error": "one sentence"}.
"""

from __future__ import annotations

import importlib.util
import io
import json
import sys
import warnings
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
from PIL import Image

CODE_MODULE = "learnserve_notebook_code"
PROBE_SIZES = [(20, 20), (37, 23), (9, 41), (64, 64), (3, 5)]


def probe_images() -> list[bytes]:
    """A few PNGs of noise in awkward sizes: the same in every process, so answers can be compared."""
    rng = np.random.default_rng(21)
    found = []
    for width, height in PROBE_SIZES:
        buffer = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(buffer, "PNG")
        found.append(buffer.getvalue())
    return found


def load_code(path: str | None) -> ModuleType | None:
    """The --code file as a module whose classes and functions the re-export embeds by value (so the server
    needs neither the file nor its path: the code is inside the pickle whose sha256 the manifest records)."""
    if path is None:
        return None
    import cloudpickle  # type: ignore[import-untyped]

    spec = importlib.util.spec_from_file_location(CODE_MODULE, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[CODE_MODULE] = module
    spec.loader.exec_module(module)
    cloudpickle.register_pickle_by_value(module)
    return module


def predict_all(learn: Any, images: list[bytes]) -> list[list[float]]:
    answers = []
    with learn.no_bar():
        for data in images:
            _, _, probs = learn.predict(data)
            answers.append([float(p) for p in probs.flatten()])  # key points: [points, 2]
    return answers


def convert(request: dict[str, Any]) -> dict[str, Any]:
    import torch
    from fastai.learner import Learner

    from training.import_compat import NotProvided, modernize, pickle_module
    from training.import_facts import NotServable, facts_of

    code = load_code(request.get("code"))
    foreign = bool(request.get("foreign"))
    module, used = pickle_module(code, foreign=foreign)
    try:
        learn = torch.load(request["source"], map_location="cpu", pickle_module=module, weights_only=False)
    except ModuleNotFoundError as e:
        return failed(
            f"it refers to the module {e.name!r}, which is not installed here: install what provides it (the "
            "version the notebook had) and import again"
        )
    except Exception as e:
        return failed(f"it does not load: {type(e).__name__}: {first_line(e)}")
    missing = sorted(set().union(*(u.missing for u in used)))
    provided = sorted(set().union(*(u.provided for u in used)))
    classes = sorted(set().union(*(getattr(u, "notebook_classes", set()) for u in used)))
    if classes:
        names = ", ".join(f"__main__.{n}" for n in classes)
        return failed(
            f"it embeds {names}, defined in the notebook and compiled by another Python, which cannot run here: "
            "put the definitions (with their imports) in a file and pass it with --code FILE.py"
        )
    replaced = sorted(set().union(*(getattr(u, "replaced", set()) for u in used)))
    if not isinstance(learn, Learner):
        return failed(f"it holds a {type(learn).__name__}, not a fastai Learner")
    learn.dls.cpu()
    for attribute, undo in (("channels_last", "to_contiguous"), ("mixed_precision", "to_fp32")):
        if hasattr(learn, attribute):
            learn = getattr(learn, undo)(**({"to_fp32": True} if undo == "to_contiguous" else {}))
    modernize(learn)
    try:
        facts = facts_of(learn)
        answers = predict_all(learn, probe_images())
    except NotServable as e:
        return failed(f"it is {e}")
    except NotProvided as e:
        return failed(needs_code(e.name, missing))
    except Exception as e:
        return failed(f"it loads but cannot answer: {type(e).__name__}: {first_line(e)}")
    augment = any(getattr(t, "split_idx", None) == 0 for t in learn.dls.valid.after_batch.fs)
    learn.path = Path(".")
    learn.export(Path(request["out"]).resolve())
    norm = facts.normalize.model_dump() if facts.normalize else None
    return {"ok": True, "facts": {**vars(facts), "normalize": norm, "augment": augment}, "missing": missing,
            "provided": provided, "answers": answers, "replaced": replaced}  # fmt: skip


def check(request: dict[str, Any]) -> dict[str, Any]:
    """Load the re-export the way the server does (fastai's load_learner, nothing mapped) and answer."""
    from fastai.learner import load_learner

    learn = load_learner(request["model"])
    found: dict[str, Any] = {"ok": True, "answers": predict_all(learn, probe_images())}
    if request.get("data"):
        found["validation"] = validate(learn, request["data"])
    return found


def validate(learn: Any, rows_csv: str) -> dict[str, Any]:
    """Accuracy on labelled images (a CSV of path,label; multi-label: labels separated by spaces): the learner's own
    labels must include every label. Multi-label: fastai's accuracy_multi and the macro F1 at its threshold."""
    import pandas as pd
    import torch
    import torch.nn.functional as F

    from training.import_facts import learner_kind, threshold_of
    from training.manifest import SEGMENTATION

    frame = pd.read_csv(rows_csv, dtype=str, keep_default_na=False)
    if learner_kind(learn) == SEGMENTATION:
        if "mask" not in frame.columns:
            return {"error": "a segmentation learner is measured on a folder of images/ and masks/ (the CamVid "
                    "layout: masks/NAME.png or masks/NAME_P.png for images/NAME.*)"}  # fmt: skip
        return validate_masks(learn, list(frame["path"]), list(frame["mask"]))
    vocab = [str(c) for c in learn.dls.vocab]
    thresh = threshold_of(learn)
    multi = any("MultiCategorize" in type(t).__name__ for t in learn.dls.valid_ds.tls[1].tfms.fs)
    labels = [str(v).split() if multi else [str(v)] for v in frame["label"]]
    unknown = sorted({x for row in labels for x in row} - set(vocab))
    if unknown:
        return {
            "error": f"labels the model does not know: {', '.join(unknown[:5])} (it knows {', '.join(vocab)})"
        }
    dl = learn.dls.test_dl(list(frame["path"]), num_workers=0)
    with learn.no_bar():
        probs, _ = learn.get_preds(dl=dl)
    if multi and thresh is not None:
        targets = torch.zeros_like(probs)
        for i, row in enumerate(labels):
            targets[i, [vocab.index(x) for x in row]] = 1.0
        decided = (probs > thresh).float()
        accuracy = float((decided == targets).float().mean())
        loss = float(F.binary_cross_entropy(probs.clamp(1e-7, 1 - 1e-7), targets))
        tp, fp, fn = (
            (decided * targets).sum(0),
            (decided * (1 - targets)).sum(0),
            ((1 - decided) * targets).sum(0),
        )
        f1 = float((2 * tp / (2 * tp + fp + fn).clamp_min(1)).mean())
        return {
            "accuracy": accuracy,
            "error_rate": 1 - accuracy,
            "valid_loss": loss,
            "f1": f1,
            "n": len(frame),
        }
    index = torch.tensor([vocab.index(row[0]) for row in labels])
    accuracy = float((probs.argmax(dim=1) == index).float().mean())
    loss = float(F.nll_loss(torch.log(probs.clamp_min(1e-12)), index))
    return {"accuracy": accuracy, "error_rate": 1 - accuracy, "valid_loss": loss, "f1": None, "n": len(frame)}


def validate_masks(learn: Any, images: list[str], masks: list[str]) -> dict[str, Any]:
    """Pixel accuracy, IoU per code and the loss on images and their masks: learn.predict's masks (softmax over the
    codes, argmax) against the true masks taken through the learner's own item transforms (its Resize resamples a
    mask by nearest neighbour, so every value stays a code)."""
    import torch
    import torch.nn.functional as F
    from fastai.vision.core import PILMask

    from training.import_facts import codes_of

    dl = learn.dls.test_dl(images, num_workers=0)
    with learn.no_bar():
        probs, _ = learn.get_preds(dl=dl)
    item = learn.dls.valid.after_item
    saved, item.split_idx = item.split_idx, 1
    try:
        truth = torch.stack([torch.as_tensor(item(PILMask.create(m))).long() for m in masks])
    finally:
        item.split_idx = saved
    if truth.shape != probs.shape[:1] + probs.shape[2:]:
        return {"error": f"the masks reach the model's size as {list(truth.shape[1:])}, its masks are "
                f"{list(probs.shape[2:])}: they cannot be compared"}  # fmt: skip
    codes = codes_of(learn) or [str(i) for i in range(probs.shape[1])]
    if int(truth.max()) >= len(codes):
        return {"error": f"a mask has the value {int(truth.max())}; the model has {len(codes)} codes"}
    predicted = probs.argmax(dim=1)
    accuracy = float((predicted == truth).float().mean())
    loss = float(F.nll_loss(torch.log(probs.clamp_min(1e-12)), truth))
    iou = {}
    for i, code in enumerate(codes):
        union = int(((predicted == i) | (truth == i)).sum())
        if union:  # a code in neither the masks nor the answers has no IoU
            iou[code] = int(((predicted == i) & (truth == i)).sum()) / union
    counts = {code: int((truth == i).sum()) for i, code in enumerate(codes)}  # pixels of each code
    return {"accuracy": accuracy, "error_rate": 1 - accuracy, "valid_loss": loss, "iou": iou, "n": len(images),
            "counts": counts}  # fmt: skip


def needs_code(needed: str, missing: list[str]) -> str:
    others = [f"__main__.{n}" for n in missing if n != needed]
    also = f" (it also names {', '.join(others)}, which may only be needed for training)" if others else ""
    return (
        f"it needs __main__.{needed} to answer, defined in the notebook that exported it{also}: put the "
        "definitions (with their imports) in a file and pass it with --code FILE.py"
    )


def failed(error: str) -> dict[str, Any]:
    return {"ok": False, "error": error}


def first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [""])[0][:300]


def main(argv: list[str]) -> int:
    mode, request_file = argv
    warnings.filterwarnings("ignore")
    request = json.loads(Path(request_file).read_text())
    result = convert(request) if mode == "convert" else check(request)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
