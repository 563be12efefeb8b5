"""Make any string that came from a student safe to store, print and put in JSON."""

from __future__ import annotations

import math
import re
from typing import Any

# Escape sequences and control characters a terminal would act on; tab and newline are kept.
_CONTROL = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b[@-_]|[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def clean(value: Any, limit: int = 2000) -> str:
    """``value`` as text without surrogates, escape codes or control characters, at most ``limit`` characters."""
    if not isinstance(value, str):
        try:
            value = repr(value)
        except Exception:  # noqa: BLE001 - a student object's __repr__ may raise
            value = f"<{type(value).__name__}>"
    precut = len(value) > 4 * limit + 100  # cleaning megabytes only to cut them is slow
    if precut:
        value = value[: 4 * limit + 100]
    value = value.encode("utf-8", "replace").decode("utf-8", "replace")  # lone surrogates become "?"
    value = _CONTROL.sub("?", value)
    if len(value) > limit or precut:
        value = value[: max(0, limit - 3)] + "..."
    return value


def clean_tree(value: Any, limit: int = 2000, depth: int = 0, strict: bool = False) -> Any:
    """``clean`` applied to every string (and key) in nested lists and dicts, depth bounded.

    ``strict`` also makes the result plain JSON: NaN and infinity become null, any other
    object its cleaned text.
    """
    if depth > 20:
        return clean(value, 200)
    if isinstance(value, str):
        return clean(value, limit)
    if isinstance(value, dict):
        return {clean(k, 200): clean_tree(v, limit, depth + 1, strict) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean_tree(v, limit, depth + 1, strict) for v in value]
    if not strict:
        return value
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, (bool, int, float)):
        return value
    return clean(value, limit)
