"""Unpickling an export that fastai 2.8's `load_learner` refuses: one from fastai 2.0-2.7, or one naming things the
notebook defined. Runs only in the import's child process (training/import_child.py): unpickling runs code.

fastai 2.8 moved `fastcore.transform` to `fasttransform` and `fastcore.dispatch` (TypeDispatch) to plum. The
unpickler here maps the old names onto the new ones:
- `fastcore.transform.Pipeline` and the other classes there -> the `fasttransform` class of the same name (their
  pickled state is a plain attribute dict in both);
- `fastcore.transform.Transform` (a transform wrapping a function, e.g. `Transform(PILImage.create)` or a label
  function) -> built again with fasttransform's `Transform(enc=the function)`, from its pickled `init_enc`;
- `fastcore.dispatch.TypeDispatch` / `_TypeDict` -> a record of the functions it held (only `Transform` reads it).
Names the pickle expects in `__main__` come from the `--code` file when it defines them; otherwise they become
placeholders that raise `NotProvided` if they are ever called, so a learner whose missing names only training
needs (a label function, a splitter) still answers, and one that needs them to answer is caught by a prediction.
A fastai 2.8 export from another Python is read with training/import_foreign.py's unpickler instead.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from types import ModuleType
from typing import Any

NOTEBOOK_MODULES = ("__main__", "__mp_main__")


class NotProvided(RuntimeError):
    """A name the export expects from the notebook was called, but no --code file defined it."""

    def __init__(self, name: str) -> None:
        super().__init__(
            f"`{name}` is defined in the notebook that exported this learner and was not provided"
        )
        self.name = name


class LegacyTypeDispatch:
    """fastcore's TypeDispatch as pickled by fastai <= 2.7: kept only to hand its functions on."""

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def functions(self) -> list[Callable[..., Any]]:
        table = getattr(self, "funcs", None)
        found: list[Callable[..., Any]] = []
        for inner in getattr(table, "d", {}).values():
            found.extend(f for f in getattr(inner, "d", {}).values() if callable(f))
        return found


class LegacyTypeDict:
    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)


def legacy_transform() -> type:
    """fastcore.transform.Transform as pickled by fastai <= 2.7, rebuilt as fasttransform's Transform in place."""
    from fasttransform import Transform

    class LegacyTransform(Transform):  # type: ignore[misc]
        def __setstate__(self, state: dict[str, Any]) -> None:
            enc = state.get("init_enc")
            decodes = state.get("decodes")
            dec = (
                decodes.functions()[0]
                if isinstance(decodes, LegacyTypeDispatch) and decodes.functions()
                else None
            )
            self.__class__ = Transform
            Transform.__init__(
                self, enc=enc, dec=dec, split_idx=state.get("split_idx"), order=state.get("order")
            )
            for key in ("train_setup",):
                if key in state:
                    setattr(self, key, state[key])

    return LegacyTransform


def placeholder(name: str) -> Any:
    """What stands for a notebook name that was not provided: a class for a capitalised name (it may be
    instantiated by the pickle), else a function. Either raises NotProvided when called."""
    if name[:1].isupper():

        def call(self: Any, *args: Any, **kwargs: Any) -> Any:
            raise NotProvided(name)

        namespace = {"__module__": "__main__", "__call__": call, "__setstate__": _keep_state, "order": 0,
                     "split_idx": None, "name": name, "learnserve_missing": name}  # fmt: skip
        return type(name, (), namespace)

    def missing(*args: Any, **kwargs: Any) -> Any:
        raise NotProvided(name)

    missing.__name__ = missing.__qualname__ = name
    missing.__module__ = "__main__"
    missing.learnserve_missing = name  # type: ignore[attr-defined]
    return missing


def _keep_state(self: Any, state: Any) -> None:
    if isinstance(state, dict):
        self.__dict__.update(state)


class CompatUnpickler(pickle.Unpickler):
    """pickle.Unpickler with old fastcore names mapped and notebook names taken from `code` or stubbed."""

    def __init__(self, file: Any, code: ModuleType | None = None, **kwargs: Any) -> None:
        super().__init__(file, **kwargs)
        self.code = code
        self.missing: set[str] = set()
        self.provided: set[str] = set()
        self._placeholders: dict[str, Any] = {}

    def find_class(self, module: str, name: str) -> Any:
        if module in NOTEBOOK_MODULES:
            if self.code is not None and hasattr(self.code, name):
                self.provided.add(name)
                return getattr(self.code, name)
            self.missing.add(name)
            if name not in self._placeholders:
                self._placeholders[name] = placeholder(name)
            return self._placeholders[name]
        if module == "fastcore.transform":
            import fasttransform.transform as new

            if name == "Transform":
                return legacy_transform()
            if hasattr(new, name):
                return getattr(new, name)
        if module == "fastcore.dispatch":
            if name == "TypeDispatch":
                return LegacyTypeDispatch
            if name == "_TypeDict":
                return LegacyTypeDict
        return super().find_class(module, name)


def pickle_module(code: ModuleType | None, foreign: bool = False) -> tuple[ModuleType, list[CompatUnpickler]]:
    """A stand-in for the `pickle` module, for torch.load(pickle_module=...), whose Unpickler is CompatUnpickler;
    the list receives the unpickler torch used (to read its `missing` and `provided` names afterwards)."""
    used: list[CompatUnpickler] = []

    from training.import_foreign import ForeignCodeUnpickler

    base = ForeignCodeUnpickler if foreign else CompatUnpickler

    class Unpickler(base):  # type: ignore[valid-type,misc]
        def __init__(self, file: Any, **kwargs: Any) -> None:
            super().__init__(file, code=code, **kwargs)
            used.append(self)

    module = ModuleType("learnserve_compat_pickle")
    module.Unpickler = Unpickler  # type: ignore[attr-defined]
    module.load = lambda f, **kw: Unpickler(f, **kw).load()  # type: ignore[attr-defined]
    module.__name__ = "pickle"
    return module, used


def modernize(learn: Any) -> None:
    """Tidy transforms whose state fastai <= 2.7 pickled and 2.8 no longer keeps: a `before_call` bound to the
    object itself (2.7 stored it per instance; its repr then recurses in 2.8), an empty `init_enc`, and the old
    `__signature__`."""
    import inspect

    for dl in learn.dls.loaders:
        pipelines = [dl.after_item, dl.before_batch, dl.after_batch]
        pipelines += [tl.tfms for tl in getattr(dl.dataset, "tls", [])]
        for pipeline in pipelines:
            for tfm in getattr(pipeline, "fs", []):
                state = tfm.__dict__
                bound = state.get("before_call")
                if getattr(bound, "__self__", None) is tfm:
                    del state["before_call"]
                if "init_enc" in state and state["init_enc"] is None:
                    del state["init_enc"]
                if "__signature__" in state and callable(tfm):
                    state["__signature__"] = inspect.signature(tfm.__call__)
