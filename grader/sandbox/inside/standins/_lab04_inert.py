"""Inert stand-ins for torch and transformers in the process that runs the judged forward passes.

Importing them works, so that a ``pretrained.py`` that imports torch at its top still
loads; using them raises, so that a forward pass cannot borrow HuggingFace's answers.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
import types
from typing import Any

MESSAGE = (
    "{what} is not available here: the grader runs your forward pass in a process without torch and "
    "transformers, so it must compute with NumPy only (convert weights with .detach().numpy() while loading)"
)


class NotAvailable(RuntimeError):
    """torch or transformers was used in the torch-free process."""


class Inert:
    """Any attribute of a stand-in: itself inert; calling it raises."""

    def __init__(self, name: str):
        object.__setattr__(self, "_name", name)

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("__") and attr.endswith("__"):
            raise AttributeError(attr)
        return Inert(f"{object.__getattribute__(self, '_name')}.{attr}")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise NotAvailable(MESSAGE.format(what=object.__getattribute__(self, "_name") + "()"))

    def __repr__(self) -> str:
        return f"<stand-in for {object.__getattribute__(self, '_name')}>"

    def __bool__(self) -> bool:
        return False


def inert_class(name: str) -> type:
    """A real class (usable as a base class or in isinstance) that cannot be built or loaded."""

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise NotAvailable(MESSAGE.format(what=name))

    return type(
        name.rsplit(".", 1)[-1],
        (),
        {"__init__": refuse, "from_pretrained": staticmethod(refuse), "__module__": name.rsplit(".", 1)[0]},
    )


class NoOp:
    """A context manager and decorator that does nothing (``torch.no_grad()`` around NumPy code)."""

    def __init__(self, *args: Any, **kwargs: Any):
        self.func = args[0] if args and callable(args[0]) else None

    def __enter__(self) -> NoOp:
        return self

    def __exit__(self, *exc: object) -> bool:
        return False

    def __call__(self, func: Any = None, *args: Any, **kwargs: Any) -> Any:
        return self.func(func, *args, **kwargs) if self.func else func


class _Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Any submodule of a stand-in package that has no file of its own becomes an inert module."""

    def __init__(self, prefixes: tuple[str, ...]):
        self.prefixes = prefixes

    def find_spec(self, fullname: str, path: object = None, target: object = None) -> Any:
        own = "." in fullname and fullname.split(".")[0] in self.prefixes
        if own and importlib.machinery.PathFinder.find_spec(fullname, path) is None:
            return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
        return None

    def create_module(self, spec: Any) -> types.ModuleType:
        return inert_module(spec.name)

    def exec_module(self, module: types.ModuleType) -> None:
        return None


def inert_module(name: str) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__path__ = []
    module.__getattr__ = lambda attr: Inert(f"{name}.{attr}")  # type: ignore[attr-defined]
    return module


def install(prefix: str) -> None:
    if not any(isinstance(f, _Finder) and prefix in f.prefixes for f in sys.meta_path):
        sys.meta_path.append(_Finder((prefix,)))
