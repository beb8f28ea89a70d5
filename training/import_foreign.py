"""Unpickling a fastai 2.8 export written by another Python minor version, without building any of its code.

cloudpickle (fastai 2.8.1+) embeds some functions by value: their bytecode, which belongs to the Python that wrote
it (3.12 bytecode unpickled by 3.11 kills the interpreter: a segmentation fault). This unpickler never builds those
code objects: it reads where each came from and uses the installed library's own function of that name instead
(every vision export embeds fastai's `PILBase.create`), a placeholder for a notebook function, and the --code
file's class for a notebook class (or reports it, so the import can refuse). Runs only in the import's child.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

from training.import_compat import NOTEBOOK_MODULES, CompatUnpickler, placeholder


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
