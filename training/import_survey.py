"""What an export refers to, read without running it: the `module.name` globals of its pickle.

A fastai export is `torch.save(learner)`: a zip whose `*/data.pkl` is the object graph and whose other entries are
tensor storages. Unpickling runs code, so before anything is loaded the pickle's opcodes are listed with
`pickletools.genops` (which only parses) and every GLOBAL / STACK_GLOBAL is collected. That is enough to tell a
fastai learner from anything else, its kind (vision, text, tabular, collaborative filtering), which fastai wrote it
(fastcore.transform before 2.8, fasttransform and cloudpickle from 2.8.1) and which names live in the notebook
(`__main__`).
"""

from __future__ import annotations

import io
import pickletools
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from training.errors import TrainingError

# Modules whose presence names a kind of learner that this import does not serve (yet), and what to call it.
OTHER_KINDS = {  # collab before tabular: a collaborative filtering learner is built on tabular's classes too
    "fastai.collab": "a collaborative filtering learner",
    "fastai.text": "a text learner",
    "fastai.tabular": "a tabular learner",
    "fastai.medical": "a medical imaging learner",
}
OLD_FASTAI = ("fastcore.transform", "fastcore.dispatch")  # moved to fasttransform / plum in fastai 2.8


@dataclass
class Survey:
    globals: set[tuple[str, str]] = field(default_factory=set)  # (module, name)
    zip_prefix: str = ""  # the folder inside the zip that holds data.pkl

    def modules(self) -> set[str]:
        return {m for m, _ in self.globals}

    def uses(self, prefix: str) -> bool:
        return any(m == prefix or m.startswith(prefix + ".") for m in self.modules())

    @property
    def notebook_names(self) -> list[str]:
        """Names the pickle expects in the notebook or script that exported it (`__main__`)."""
        return sorted(n for m, n in self.globals if m in ("__main__", "__mp_main__"))

    @property
    def written_by(self) -> str:
        """Which fastai wrote it, as far as the pickle shows."""
        if self.uses("fastcore.transform") or self.uses("fastcore.dispatch"):
            return "fastai<2.8"
        if self.uses("cloudpickle"):
            return "fastai>=2.8.1"
        if self.uses("fasttransform"):
            return "fastai>=2.8"
        return "unknown"

    @property
    def old_fastai(self) -> bool:
        return any(self.uses(m) for m in OLD_FASTAI)


def read_pickle_bytes(path: Path) -> tuple[bytes, str]:
    """data.pkl's bytes from a torch.save zip, and the zip's folder prefix. Refuses anything else."""
    try:
        with path.open("rb") as f:
            head = f.read(4)
    except OSError as e:
        raise TrainingError(f"cannot read {path}: {e.strerror or e}") from None
    if not zipfile.is_zipfile(path):
        if head[:1] == b"\x80":  # a pickle's PROTO opcode
            raise TrainingError(
                f"{path} is a pickle but not a fastai export (learn.export() writes a torch zip file)"
            )
        raise TrainingError(f"{path} is not a pickle, so not a fastai export (learn.export() writes one)")
    with zipfile.ZipFile(path) as z:
        names = [n for n in z.namelist() if n.endswith("/data.pkl") or n == "data.pkl"]
        if not names:
            raise TrainingError(f"{path} is a zip file but not a torch export (no data.pkl inside)")
        return z.read(names[0]), names[0][: -len("data.pkl")]


def survey(path: Path) -> Survey:
    """Every global the export's pickle refers to, without executing it."""
    data, prefix = read_pickle_bytes(path)
    found = Survey(zip_prefix=prefix)
    memo: dict[int, object] = {}
    recent: list[object] = []  # the values most recently pushed, enough to resolve STACK_GLOBAL
    try:
        for op, arg, _ in pickletools.genops(io.BytesIO(data)):
            name = op.name
            if name in ("GLOBAL", "INST"):
                module, _, attr = str(arg).partition(" ")
                found.globals.add((module, attr))
            elif name == "STACK_GLOBAL":
                if len(recent) >= 2 and isinstance(recent[-2], str) and isinstance(recent[-1], str):
                    found.globals.add((recent[-2], recent[-1]))
            elif name in ("BINPUT", "LONG_BINPUT", "PUT"):
                memo[int(arg)] = recent[-1] if recent else None  # type: ignore[arg-type]
                continue
            elif name == "MEMOIZE":
                memo[len(memo)] = recent[-1] if recent else None
                continue
            elif name in ("BINGET", "LONG_BINGET", "GET"):
                recent.append(memo.get(int(arg)))  # type: ignore[arg-type]
                continue
            if name in ("SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE"):
                recent.append(str(arg))
            elif name != "STACK_GLOBAL":
                recent.append(None)
            del recent[:-2]
    except Exception as e:  # pickletools raises ValueError and others on a truncated or foreign stream
        raise TrainingError(f"{path}'s data.pkl is not a readable pickle ({e})") from None
    return found


def refuse_unsupported(path: Path, found: Survey) -> None:
    """Refuse, with a sentence, what is not a fastai vision learner."""
    if not found.uses("fastai"):
        raise TrainingError(
            f"{path} is a torch file but not a fastai Learner export (it refers to no fastai class)"
        )
    if ("fastai.learner", "Learner") not in found.globals and not any(
        n.endswith("Learner") for m, n in found.globals if m.startswith("fastai")
    ):
        raise TrainingError(f"{path} refers to fastai but holds no Learner: export one with learn.export()")
    for module, what in OTHER_KINDS.items():
        if found.uses(module):
            raise TrainingError(
                f"{path} is {what} ({module}): only vision single-label classifiers can be imported"
            )
    if not found.uses("fastai.vision"):
        raise TrainingError(f"{path} is not a vision learner: only vision classifiers can be imported")
