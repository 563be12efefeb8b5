"""Pure helpers that look at the student's objects and files, bounded, and never change them."""

from __future__ import annotations

import importlib.util
import inspect
import math
import sys
from typing import Any

import numpy as np

MAX_ITEMS = 4096  # items of a container described
MAX_TEXT = 2000  # characters of a string described
MAX_DEPTH = 6  # nesting of a described container
NUMERIC_KINDS = "biufc"


class StudentError(Exception):
    """Student code raised: ``record`` says what and where."""

    def __init__(self, record: dict):
        super().__init__(record.get("message", ""))
        self.record = record


def vm_bytes() -> int:
    """This process's address space now, before any student code: what its memory limit must leave room above."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmSize:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0


def import_file(name: str, path: str) -> Any:
    """Import the file at ``path`` as module ``name``; a module that fails to import is not left behind."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module


def follow(obj: Any, path: str) -> Any:
    """The object at a dotted path under ``obj``; numeric parts index, the others are attributes."""
    for part in path.split(".") if path else []:
        obj = obj[int(part)] if part.isdigit() else getattr(obj, part)
    return obj


def is_tensor(obj: Any) -> bool:
    """Whether ``obj`` is a torch object, judged by its type's module (so torch need not be imported)."""
    module = type(obj).__module__ or ""
    return module == "torch" or module.startswith("torch.")


def signature(fn: Any) -> dict | None:
    """Parameter names, kinds and simple defaults, so the grader can call the way the code accepts."""
    if fn is None:
        return None
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return {"params": [], "opaque": True}
    params = []
    for p in sig.parameters.values():
        entry: dict[str, Any] = {"name": p.name, "kind": p.kind.name}
        if p.default is not inspect.Parameter.empty:
            default = p.default
            if isinstance(default, (bool, int, float, str)) or default is None:
                entry["default"] = default if not isinstance(default, float) or math.isfinite(default) else None
            else:
                entry["default_type"] = type(default).__name__
        params.append(entry)
    return {"params": params}


def dotted_names(obj: Any) -> list[str]:
    """Attribute names with a dot in them, on the model or its direct parts (a setattr with a path)."""
    found = []
    parts = [("", obj)]
    for name, value in list(getattr(obj, "__dict__", {}).items())[:MAX_ITEMS]:
        parts.append((name, value))
        if isinstance(value, (list, tuple)):
            parts += [(f"{name}.{i}", v) for i, v in enumerate(value[:MAX_ITEMS])]
    for prefix, part in parts:
        names = getattr(part, "__dict__", None)
        if isinstance(names, dict):
            found += [f"{prefix}.{k}".lstrip(".") if prefix else str(k) for k in names if "." in str(k)]
        if len(found) >= 20:
            break
    return [str(n)[:200] for n in found[:20]]


def torch_paths(obj: Any, limit: int = 200_000) -> list[str]:
    """Attribute paths under ``obj`` that hold torch tensors (breadth first, bounded)."""
    found, seen = [], set()
    queue = [("", obj)]
    while queue and len(seen) < limit:
        path, value = queue.pop(0)
        if id(value) in seen:
            continue
        seen.add(id(value))
        if is_tensor(value) or (type(value).__module__ or "").startswith(("torch", "transformers")):
            found.append(path or "(the model itself)")
            continue
        if isinstance(value, (str, bytes, int, float, bool, np.ndarray, type(None))):
            continue
        if isinstance(value, dict):
            queue += [(f"{path}[{k!r}]", v) for k, v in list(value.items())[:MAX_ITEMS]]
        elif isinstance(value, (list, tuple)):
            queue += [(f"{path}.{i}" if path else str(i), v) for i, v in enumerate(value[:MAX_ITEMS])]
        elif hasattr(value, "__dict__") and not isinstance(value, type):
            queue += [(f"{path}.{k}" if path else k, v) for k, v in vars(value).items()]
    return found
