"""What every tier returns, and the helpers they share."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ...sandbox.protocol import Desc, Reply, desc
from ..outcome import Failure, Stop, failure_of
from ..session import Session

STATUSES = ("passed", "failed", "error", "timeout", "skipped")


@dataclass
class Verdict:
    """A tier's judgement, made on the trusted side from validated data.

    ``mistakes`` are (key, label) pairs the class summary counts; ``causes`` map a
    root-cause key shared across tiers ("attribute ln_f.beta") to the words that name it,
    so the report can say which single fix repairs several tiers."""

    status: str
    detail: str
    max_diff: float | None = None
    tolerance: float | None = None
    facts: dict[str, Any] = field(default_factory=dict)
    mistakes: list[tuple[str, str]] = field(default_factory=list)
    causes: dict[str, str] = field(default_factory=dict)


def conclude(errors: list[str], problems: list[str], heading: str, passed: Callable[[], str], **found: Any) -> Verdict:
    """The usual ending: error when the student's code raised, failed when a check did not hold, else passed.

    ``found`` (max_diff, tolerance, facts, mistakes, causes) goes into the verdict; a passed
    one keeps only the figures and facts. ``passed()`` is only called when it passed.
    """
    if errors:
        text = "\n".join(dedupe(errors) + ([bullet(dedupe(problems))] if problems else []))
        return Verdict("error", text, **found)
    if problems:
        return Verdict("failed", f"{heading}:\n{bullet(dedupe(problems))}", **found)
    kept = {k: v for k, v in found.items() if k in ("max_diff", "tolerance", "facts")}
    return Verdict("passed", passed(), **kept)


def from_failure(failure: Failure, hint: str = "", causes: dict[str, str] | None = None) -> Verdict:
    """A tier ended by the student's code failing (raised, crashed, timed out) or by an earlier failure."""
    status = {"timeout": "timeout", "skipped": "skipped"}.get(failure.kind, "error")
    text = failure.text + (f" {hint}" if hint else "")
    if failure.kind == "skipped":
        text = f"Skipped: {text}"
    key = cause_of(failure)
    return Verdict(
        status,
        text,
        causes={**({key: failure.text} if key else {}), **(causes or {})},
        mistakes=[(key, failure.text.split(" (")[0][:120])] if key else [],
    )


def cause_of(failure: Failure) -> str | None:
    """A root-cause key for a failure, so the same failure in several tiers counts once."""
    raised = failure.raised
    if raised is None:
        return f"{failure.kind}: {failure.text[:80]}" if failure.kind in ("timeout", "crashed") else None
    if raised.type == "NotImplementedError":
        return f"not implemented: {raised.function}"
    where = f"{raised.file}:{raised.line}" if raised.file else raised.function
    return f"raised {raised.type} at {where}"


def bullet(lines: list[str]) -> str:
    """Lines as a Markdown list."""
    return "\n".join(f"- {line}" for line in lines)


def dedupe(lines: list[str]) -> list[str]:
    """Drop repeated lines, noting how often each came up."""
    counts: dict[str, int] = {}
    for line in lines:
        counts[line] = counts.get(line, 0) + 1
    return [line if n == 1 else f"{line} (x{n})" for line, n in counts.items()]


def arrays_of(reply: Reply, value: Desc, what: str) -> tuple[list[np.ndarray], str | None]:
    """The arrays a described result holds (an array, a tensor, or a tuple/list of them), or a problem."""
    items = list(value.items) if value.kind in ("tuple", "list") else [value]
    out = []
    for item in items:
        if item.kind == "array" and item.array is not None:
            out.append(np.asarray(reply.array(item.array, what)))
        elif item.kind == "tensor" and item.inner is not None and item.inner.array is not None:
            out.append(np.asarray(reply.array(item.inner.array, what)))
        else:
            return [], f"{what} is {item.describe()}, not an array"
    return out, None


def array_problem(value: Any, name: str, shape: tuple[int, ...] | None = None) -> str | None:
    """A problem with a returned array (type, shape, finiteness), or None when it is usable."""
    if not isinstance(value, np.ndarray):
        return f"{name} is missing"
    if value.dtype.kind not in "fiu":
        return f"{name} has dtype {value.dtype}, not a number type"
    if shape is not None and tuple(value.shape) != tuple(shape):
        return f"{name} has shape {tuple(value.shape)}, expected {tuple(shape)}"
    if value.dtype.kind == "f" and not np.all(np.isfinite(value)):
        bad = np.argwhere(~np.isfinite(value))[0].tolist()
        return f"{name} contains NaN or inf (first at index {tuple(bad)})"
    return None


def returned_dict(session: Session, reply: Reply, label: str, of: str) -> Desc | str:
    """The dict a student function returned, or what is wrong with it; a call that failed stops the tier."""
    if not reply.ok:
        raise Stop(failure_of(reply, label, session.limits))
    result = desc(reply.fields.get("result"), "the result")
    if result.kind != "dict":
        return f"{label} returned {result.describe()}, not a dict of {of}"
    return result


def lacks(session: Session, deadline: Any, name: str) -> Verdict | None:
    """The verdict for a submission that defines no ``name`` (as the torch process imported it), or None."""
    return None if session.torch.ready(deadline).has(name) else missing_function(session, name)


def missing_function(session: Session, name: str) -> Verdict:
    """The submission does not define ``name``: say so, with the notebook cells that raised."""
    text = f"{session.prepared.module_label} does not define a function named {name}"
    imported = session.torch.imported or session.numpy.imported
    cells = list(imported.cells) if imported else []
    if cells:
        raised = "; ".join(_cell_error(session, c) for c in cells[:3])
        text += (
            f". These notebook cells raised while the notebook ran top to bottom: {raised}. A cell that uses "
            "a name defined in a later cell works in your session but not in a fresh kernel: use Kernel > "
            "Restart and Run All to find the order problem"
        )
    return Verdict("failed", text + ".", causes={f"missing {name}": text}, mistakes=[(f"missing {name}", text[:120])])


def _cell_error(session: Session, cell: dict) -> str:
    number = cell["cell"]
    where = session.prepared.cell_files.get(f"_cell_{number:03d}.py", f"cell {number}")
    line = f", line {cell['line']}" if cell.get("line") else ""
    return f"{where}{line} raised {cell['type']}: {cell['message']}"


def stop_to_verdict(stop: Stop, hint: str = "") -> Verdict:
    """The verdict of a tier its student code stopped (timed out, crashed, or an earlier failure)."""
    return from_failure(stop.failure, hint)
