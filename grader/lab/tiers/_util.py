"""Helpers shared by the tier modules."""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from ..common import StudentCode, StudentFailure


def to_array(student: StudentCode, label: str, value: Any) -> tuple[np.ndarray | None, str | None]:
    """``value`` as a NumPy array, or a problem such as "is a torch.Tensor"."""
    if isinstance(value, np.ndarray):
        return value, None
    kind = f"{type(value).__module__}.{type(value).__name__}"
    if kind.startswith("torch."):
        return None, f"is a {kind.removeprefix('torch.')} (torch); the model must hold NumPy arrays"
    if value is None:
        return None, "is None"
    try:
        array = student.call(label, np.asarray, value)
    except StudentFailure as failure:
        return None, f"cannot be read as an array ({failure.record['type']})"
    if array.dtype == object:
        return None, f"is a {kind}, not an array of numbers"
    return array, f"is a {kind}, not a numpy.ndarray"


def normalise_path(path: str) -> str:
    """``blocks[0].attn.W_Q`` and ``blocks.0.attn.W_Q`` name the same attribute."""
    return re.sub(r"\[(\d+)\]", r".\1", path).strip(".")


def bullet(lines: list[str]) -> str:
    return "\n".join(f"- {line}" for line in lines)


def check_array(value: Any, name: str, shape: tuple[int, ...] | None = None) -> str | None:
    """A problem with a returned array (type, shape, finiteness), or None when it is usable."""
    if not isinstance(value, np.ndarray):
        return f"{name} is missing"
    if value.dtype.kind not in "fiu":
        return f"{name} has dtype {value.dtype}, not a float type"
    if shape is not None and tuple(value.shape) != tuple(shape):
        return f"{name} has shape {tuple(value.shape)}, expected {tuple(shape)}"
    if value.dtype.kind == "f" and not np.all(np.isfinite(value)):
        bad = np.argwhere(~np.isfinite(value))[0].tolist()
        return f"{name} contains NaN or inf (first at index {tuple(bad)})"
    return None


def dedupe(lines: list[str]) -> list[str]:
    """Drop repeated lines, noting how often each came up."""
    counts: dict[str, int] = {}
    for line in lines:
        counts[line] = counts.get(line, 0) + 1
    return [line if n == 1 else f"{line} (x{n})" for line, n in counts.items()]
