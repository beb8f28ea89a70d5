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


class ForeignCode:
    """Stands for a code object that cloudpickle embedded and that was compiled by another Python: never built
    (another version's bytecode crashes this interpreter), only read for where it came from."""

    def __init__(self, *args: Any) -> None:
        self.filename, self.name = str(args[10]), str(args[11])  # the same places in 3.8 ... 3.13
        self.qualname = str(args[12]) if len(args) >= 18 else self.name


def installed_function(module: str | None, qualname: str) -> Any:
    """The function `module.qualname` of an installed library (e.g. fastai.vision.core PILBase.create), unwrapped
    from its classmethod/staticmethod, or None."""
    import importlib
    import inspect

    if not module or module in NOTEBOOK_MODULES:
        return None
    try:
        found: Any = importlib.import_module(module)
        for part in qualname.split("."):
            found = inspect.getattr_static(found, part)
    except (ImportError, AttributeError):
        return None
    found = getattr(found, "__func__", found)
    return found if callable(found) and hasattr(found, "__code__") else None


class ForeignCodeUnpickler(CompatUnpickler):
    """For a fastai 2.8 export written by another Python: every function cloudpickle embedded is replaced by the
    installed library's own function of that name (fastai's `PILBase.create`, ...), or by a placeholder when it
    came from the notebook. A class the notebook defined must come from --code: its methods' code cannot run here."""

    def __init__(self, file: Any, code: ModuleType | None = None, **kwargs: Any) -> None:
        super().__init__(file, code=code, **kwargs)
        self.replaced: set[str] = set()
        self.notebook_classes: set[str] = set()
        self._kept: set[int] = set()  # ids of objects whose pickled state must not be applied

    def find_class(self, module: str, name: str) -> Any:
        if module == "cloudpickle.cloudpickle":
            import cloudpickle.cloudpickle as cp  # type: ignore[import-untyped]

            if name == "_builtin_type":
                return lambda type_name: (
                    ForeignCode if type_name == "CodeType" else cp._builtin_type(type_name)
                )
            if name == "_make_function":
                return self._make_function
            if name == "_function_setstate":
                return lambda obj, state: None if id(obj) in self._kept else cp._function_setstate(obj, state)
            if name == "_make_skeleton_class":
                return self._make_class
            if name == "_class_setstate":
                return lambda obj, state: obj if id(obj) in self._kept else cp._class_setstate(obj, state)
        return super().find_class(module, name)

    def _make_function(
        self, code: Any, globals: dict[str, Any], name: str, argdefs: Any, closure: Any
    ) -> Any:
        import cloudpickle.cloudpickle as cp

        if not isinstance(code, ForeignCode):
            return cp._make_function(code, globals, name, argdefs, closure)
        module = globals.get("__name__")
        found = installed_function(module, code.qualname)
        if found is None:
            owner = code.qualname.split(".")[0]
            if module in NOTEBOOK_MODULES and owner not in self.provided:  # a provided class brings its own
                self.missing.add(code.qualname)
            found = placeholder(code.name)
        else:
            self.replaced.add(f"{module}.{code.qualname}")
        self._kept.add(id(found))
        return found

    def _make_class(self, type_constructor: Any, name: str, bases: Any, type_kwargs: Any, *rest: Any) -> Any:
        import cloudpickle.cloudpickle as cp

        if self.code is not None and hasattr(self.code, name):
            self.provided.add(name)
            found = getattr(self.code, name)
            self._kept.add(id(found))
            return found
        self.notebook_classes.add(name)
        return cp._make_skeleton_class(type_constructor, name, bases, type_kwargs, *rest)
