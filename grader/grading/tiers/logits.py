"""Tier 4: the full forward pass gives GPT-2's logits at every position, in the torch-free process.

``model(ids, training=False)`` (or ``model(ids)``) on a 1-token, a long and a batched
(B, T) input of the grader's choosing, twice on one of them (a forward that differs
between two calls is random), and once on the second checkpoint. When logits differ, the
feedback says where: each sub-module the forward called is re-run by the grader's own
GPT-2 on the very input it received, so the first one that computes wrongly is named
even when its drift is small, with the classic mistake that reproduces it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ...sandbox import protocol
from .. import localise
from ..diagnose import cause_key
from ..outcome import Deadline, Failure, Stop, failure_of
from ..session import Session
from . import shapes
from .base import Verdict, array_problem, arrays_of, conclude

NAME = "logits"
TITLE = "Full forward pass: logits at every position"


def _forward(
    session: Session, handle: int, ids: np.ndarray, deadline: Deadline, label: str, vocab: int
) -> tuple[np.ndarray | None, str | Failure]:
    """The student's logits for ``ids``, or a problem (a string) or a failure."""
    imported = session.numpy.ready(deadline)
    call = session.forward_call(imported, handle, {"a": 0}, "the forward pass")
    budget = int(ids.size * vocab * 8 * 1.25) + (1 << 20)
    reply = session.numpy.try_ask("call", call, deadline, "the forward pass", inputs=[ids], budget=budget)
    if not reply.ok:
        failure = failure_of(reply, "the forward pass", session.limits)
        if reply.raised and reply.raised.type == "NotAvailable":
            failure = Failure(
                "raised",
                f"the forward pass used torch or transformers ({reply.raised.message.split(':')[0]}"
                f", at {reply.raised.file}, line {reply.raised.line}): it must compute with "
                "NumPy only; HuggingFace's model is not there to call",
                reply.raised,
            )
        return None, failure
    arrays, problem = arrays_of(reply, protocol.desc(reply.fields.get("result"), "the logits"), "the forward's result")
    return (arrays[0], "") if arrays else (None, problem or "the forward's result is not an array")


def _positions_text(per_position: np.ndarray, tol: float) -> str:
    bad = np.flatnonzero(per_position > tol)
    T = per_position.size
    if T == 1:
        return "its single position differs"
    if bad.size == T:
        where = f"all {T} positions differ"
    elif bad.size == 1:
        where = f"only position {bad[0]} of {T} differs"
    else:
        where = f"{bad.size} of {T} positions differ (positions {bad[0]}..{bad[-1]})"
    return f"{where}; the largest difference is at position {int(np.argmax(per_position))}"


@dataclass
class _Findings:
    """What the tier gathers across its inputs, for one verdict."""

    lines: list[str] = field(default_factory=list)  # why the logits are wrong
    errors: list[str] = field(default_factory=list)  # the forward could not run
    facts: dict[str, Any] = field(default_factory=lambda: {"inputs": [], "mistakes": []})
    causes: dict[str, str] = field(default_factory=dict)
    mistakes: list[tuple[str, str]] = field(default_factory=list)
    worst: float = 0.0
    worst_tol: float | None = None
    failed: list[int] = field(default_factory=list)  # the inputs whose logits differ
    first_wrong_position: dict[int, int] = field(default_factory=dict)  # per failed input
    results: dict[int, np.ndarray] = field(default_factory=dict)

    def name(self, key: str, advice: str, cause: str) -> None:
        """A classic mistake found: in the mistakes (first clause of its advice) and the causes."""
        self.mistakes.append((key, advice.split(";")[0]))
        self.causes[cause] = advice

    def verdict(self, passed: Callable[[], str]) -> Verdict:
        """Error when the forward could not run, failed when logits differ, else passed (``passed()`` says how)."""
        self.facts["mistakes"] = [key for key, _ in self.mistakes]
        found = {"facts": self.facts, "mistakes": self.mistakes, "causes": self.causes}
        heading = "The logits differ from GPT-2's"
        return conclude(
            self.errors, self.lines, heading, passed, max_diff=self.worst, tolerance=self.worst_tol, **found
        )


def run(session: Session, deadline: Deadline) -> Verdict:
    handle = session.adopted_model(session.primary_name, deadline)
    found = _Findings()
    for k in range(len(session.inputs.logits)):
        _check_input(session, handle, k, deadline, found)
    _check_repeatable(session, handle, deadline, found)
    found.lines += _second(session, deadline, found.errors)
    if found.failed and not found.errors:
        found.lines += _diagnose(session, deadline, handle, found)
    return found.verdict(
        lambda: (
            f"Logits match GPT-2's at every position on {len(session.inputs.logits)} inputs and on the "
            f"{session.load_order()[-1]} checkpoint (max |diff| {found.worst:.2g}, tolerance {found.worst_tol:.2g})."
        )
    )


def _check_input(session: Session, handle: int, k: int, deadline: Deadline, found: _Findings) -> None:
    """The logits on input ``k`` against the oracle's, within the tolerance of that input."""
    item = session.inputs.logits[k]
    expected = session.expected("primary")
    got, problem = _forward(session, handle, item.ids, deadline, item.label, expected.shape.vocab_size)
    if isinstance(problem, Failure):
        if problem.kind in ("timeout", "crashed"):
            raise Stop(problem)
        found.errors.append(f"On the {item.label} input: {problem.text}")
        if problem.raised and problem.raised.type == "NotAvailable":
            found.name("torch_in_forward", "the forward pass uses torch", "torch in the forward pass")
            found.causes["torch in the forward pass"] = problem.text
        return
    want = expected.logits(item.ids)
    check = problem or array_problem(got, f"the logits for the {item.label} input", want.shape)
    if check:
        found.lines.append(check)
        return
    found.results[k] = got
    tol = expected.tolerance(item.ids)
    diff = np.abs(got.astype(np.float64) - want)
    found.facts["inputs"].append({"label": item.label, "max_diff": float(diff.max()), "tolerance": tol})
    if found.worst_tol is None or diff.max() > found.worst:
        found.worst, found.worst_tol = float(diff.max()), tol
    if diff.max() > tol:
        found.failed.append(k)
        per_position = diff.reshape(-1, diff.shape[-2], diff.shape[-1]).max(axis=(0, 2))
        found.first_wrong_position[k] = int(np.flatnonzero(per_position > tol)[0])
        found.lines.append(
            f"on the {item.label} input, max |diff| {diff.max():.3g} > tolerance {tol:.2g}: "
            f"{_positions_text(per_position, tol)}"
        )


def _check_repeatable(session: Session, handle: int, deadline: Deadline, found: _Findings) -> None:
    """The same input twice gives the same logits (dropout left on shows on any input: the cheapest)."""
    first = found.results.get(0)
    if first is None:
        return
    vocab = session.expected("primary").shape.vocab_size
    again, _ = _forward(session, handle, session.inputs.logits[0].ids, deadline, "again", vocab)
    if isinstance(again, np.ndarray) and again.shape == first.shape and not np.array_equal(again, first):
        text = (
            "the forward pass gives different logits for the same input on two calls: it is random "
            "(dropout active? call it with training=False, or build the model with dropout=0.0)"
        )
        found.lines.insert(0, text)
        found.name("random_forward", "the forward pass is random (dropout active?)", "random forward")
        found.causes["random forward"] = text


def _second(session: Session, deadline: Deadline, errors: list[str]) -> list[str]:
    """The second checkpoint's logits on one input."""
    name = session.roles.get("second")
    if not name:
        return []
    expected = session.checkpoints[name]
    try:
        handle = session.adopted_model(name, deadline)
    except Stop as stop:
        errors.append(f"On the {name} checkpoint: {stop.failure.text}")
        return []
    ids = session.inputs.second.ids
    got, problem = _forward(session, handle, ids, deadline, "second", expected.shape.vocab_size)
    if isinstance(problem, Failure):
        errors.append(f"On the {name} checkpoint ({expected.shape.describe()}): {problem.text}")
        return []
    want = expected.logits(ids)
    check = problem or array_problem(got, f"the logits on the {name} checkpoint", want.shape)
    if check:
        return [check]
    diff = float(np.max(np.abs(got.astype(np.float64) - want)))
    if diff > expected.tolerance(ids):
        return [
            f"on the {name} checkpoint ({expected.shape.describe()}), max |diff| {diff:.3g} > tolerance "
            f"{expected.tolerance(ids):.2g}"
        ]
    return []


def _diagnose(session: Session, deadline: Deadline, handle: int, found: _Findings) -> list[str]:
    """Why the logits differ: the weights (shapes tier), the first wrong sub-step, or a batch-only problem."""
    lines: list[str] = []
    inputs = session.inputs
    load = session.loads.get(session.primary_name)
    wrong = shapes.findings_of(load) if load is not None and load.failure is None else []
    if wrong:
        names = ", ".join(sorted({f[0] for f in wrong})[:4])
        lines.append(f"the loaded weights are wrong ({names}; see the shapes tier): fix those first")
        for path, _, words in wrong:
            found.causes.setdefault(cause_key(path), f"{path} {words}")
    if inputs.trace in found.failed:
        lines += _explain_trace(session, deadline, handle, found, weights_right=not wrong)
    if all(inputs.logits[i].ids.shape[0] > 1 for i in found.failed):
        lines.append(
            "single sequences match but the batched (B, T) input does not: the forward must treat a "
            "leading batch axis (masks and head splits over the last two axes)"
        )
        found.causes["batch axis"] = lines[-1]
    return lines


def _explain_trace(
    session: Session, deadline: Deadline, handle: int, found: _Findings, weights_right: bool
) -> list[str]:
    """On the traced input: where the activations leave GPT-2's and the first sub-step that computes wrongly."""
    lines: list[str] = []
    k = session.inputs.trace
    row = session.inputs.logits[k].ids[:1]
    # The shortest prefix that holds the first wrong position (the cost grows with its length), and the whole
    # row only when the prefix shows nothing.
    ids = session.inputs.traced(found.first_wrong_position.get(k, 0))
    weights = localise.student_weights(session)
    trace, divergence, (step, diff, named) = _locate(session, handle, ids, weights, deadline)
    if ids.shape[-1] < row.shape[-1] and divergence is None and step is None:
        ids = row
        trace, divergence, (step, diff, named) = _locate(session, handle, ids, weights, deadline)
    if divergence is not None:
        found.facts["first_activation_divergence"] = divergence[0]
        lines.append(
            f"your activations first leave GPT-2's at: {divergence[0]} (max |diff| {divergence[1]:.3g}; "
            "everything before it matches)"
        )
    if step is not None:
        found.facts["first_divergence"] = step
        lines.append(
            f"the first sub-step that computes differently from GPT-2 on the input it received is "
            f"{step} (max |diff| {diff:.3g}); everything before it is right"
        )
        if weights_right:
            lines.append("your loaded weights are right (shapes tier), so the decoder is the suspect")
        for key, advice in named:
            lines.append(f"it computes exactly what GPT-2 computes with a classic mistake: {advice}")
            found.name(key, advice, f"decoder {key}")
        if not named:
            found.causes[f"decoder {step.split(' ')[-1]}"] = f"{step} computes differently from GPT-2"
    elif not trace and weights_right:
        ids = session.inputs.logits[k].ids
        tol = session.expected("primary").tolerance(ids)
        whole = localise.whole_model_mistake(session, ids, found.results[k], tol)
        if whole:
            lines.append(f"your logits are exactly those of GPT-2 with a classic mistake: {whole[1]}")
            found.name(whole[0], whole[1], f"decoder {whole[0]}")
    return lines


def _locate(session: Session, handle: int, ids: np.ndarray, weights: dict, deadline: Deadline) -> tuple:
    """The trace of the student's forward on ``ids``, where it leaves GPT-2's, and its first wrong sub-step."""
    trace = localise.trace(session, handle, ids, deadline)
    if not trace:
        return trace, None, (None, 0.0, [])
    divergence = localise.first_divergence(session, trace, ids)
    return trace, divergence, localise.first_wrong_substep(session, trace, ids, weights)
