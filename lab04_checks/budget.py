"""The grader's resource budget as the public tests report it (``grader/defaults.py`` holds the same numbers)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from contextlib import contextmanager
from typing import Any

TIER_SECONDS = 60.0  # wall clock the grader gives each tier
STARTUP_SECONDS = 120.0  # for a student process to start and import the submission, before any tier
THREADS = 1  # BLAS/OpenMP threads of the student processes
MEMORY_GIB = 6  # address space of each student process
WARN_FRACTION = 0.5  # a part that takes more than this share of a tier's budget is worth a warning
THREAD_VARIABLES = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
)

# Seconds spent in each part of the student's code, and the number of calls: {part: [seconds, calls]}.
TIMES: dict[str, list[float]] = {}


def one_thread() -> None:
    """Give BLAS one thread, as the grader does; effective only before NumPy (or torch) is imported."""
    for name in THREAD_VARIABLES:
        os.environ[name] = str(THREADS)


def tier_seconds() -> float:
    """The budget the report compares against (``LAB04_TIER_SECONDS`` overrides it, to try the warning)."""
    try:
        return float(os.environ.get("LAB04_TIER_SECONDS", TIER_SECONDS))
    except ValueError:
        return TIER_SECONDS


@contextmanager
def timed(part: str) -> Any:
    """Add the time spent inside the block to ``part``."""
    started = time.perf_counter()
    try:
        yield
    finally:
        entry = TIMES.setdefault(part, [0.0, 0])
        entry[0] += time.perf_counter() - started
        entry[1] += 1


def report(write: Callable[[str], None]) -> list[str]:
    """Write one line per part; return the warnings (parts over ``WARN_FRACTION`` of the budget)."""
    warnings = []
    for part, (seconds, calls) in TIMES.items():
        budget = STARTUP_SECONDS if part.startswith(("import", "running")) else tier_seconds()
        share = seconds / budget if budget > 0 else 0.0
        write(
            f"  {part:<32} {seconds:8.2f} s  {calls:3d} call{'s' if calls != 1 else ' '}  "
            f"{100 * share:5.1f}% of {budget:g} s"
        )
        if share > WARN_FRACTION:
            warnings.append(
                f"{part} took {seconds:.1f} s, more than {100 * WARN_FRACTION:.0f}% of the {budget:g} s the grader "
                f"gives it (with {THREADS} thread), on a small checkpoint. Look for a debug print of whole "
                "arrays, a Python loop over array elements, or a model loaded more than once."
            )
    return warnings
