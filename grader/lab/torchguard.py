"""Notice when student code calls into torch while it should be computing with NumPy.

Both of torch's interception points are used: a function mode sees every call
of the Python API (``torch.*`` and tensor methods), a dispatch mode every
operator that reaches the kernels, which covers running a whole HuggingFace
model from inside a forward pass.
"""

from __future__ import annotations

import traceback
from pathlib import Path
from typing import Any

try:  # torch is optional here: without it, student code cannot call it either
    import torch
    from torch.overrides import TorchFunctionMode
    from torch.utils._python_dispatch import TorchDispatchMode
except ImportError:  # pragma: no cover - the grader always has torch
    torch = None


class TorchUse:
    """What the guarded code called: the first call, where it came from, and how many."""

    def __init__(self, root: Path):
        self.root = root.resolve()
        self.count = 0
        self.first: str | None = None
        self.where: str | None = None

    def note(self, func: Any) -> None:
        self.count += 1
        if self.first is None:
            self.first = getattr(func, "__name__", None) or str(func)
            self.where = self._student_location()

    def _student_location(self) -> str | None:
        for frame in reversed(traceback.extract_stack()):
            try:
                path = Path(frame.filename).resolve()
            except (OSError, ValueError):
                continue
            if path.is_relative_to(self.root):
                return f"{path.relative_to(self.root).as_posix()}, line {frame.lineno}"
        return None

    def as_meta(self) -> dict[str, Any]:
        return {"count": self.count, "first": self.first, "where": self.where}


if torch is not None:

    class _FunctionSpy(TorchFunctionMode):
        def __init__(self, use: TorchUse):
            super().__init__()
            self.use = use

        def __torch_function__(self, func, types, args=(), kwargs=None):
            self.use.note(func)
            return func(*args, **(kwargs or {}))

    class _DispatchSpy(TorchDispatchMode):
        def __init__(self, use: TorchUse):
            super().__init__()
            self.use = use

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.use.note(func)
            return func(*args, **(kwargs or {}))


class guard_torch:
    """Context manager: record every torch call made inside it (nothing is blocked)."""

    def __init__(self, root: Path):
        self.use = TorchUse(root)
        self._modes: list[Any] = []

    def __enter__(self) -> TorchUse:
        if torch is not None:
            self._modes = [_DispatchSpy(self.use), _FunctionSpy(self.use)]
            for mode in self._modes:
                mode.__enter__()
        return self.use

    def __exit__(self, *exc: object) -> None:
        for mode in reversed(self._modes):
            mode.__exit__(None, None, None)
        self._modes = []
