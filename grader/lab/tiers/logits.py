"""Tier 4: the full forward pass gives HuggingFace's logits at every position, on several inputs.

The forward runs under a torch spy: calling torch (for example running the
HuggingFace model) fails the tier. When logits differ, the feedback names the
first layer and sub-step where the student's activations leave HuggingFace's
and recognises the classic decoder mistakes.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..common import Collected, Job, StudentCode, StudentFailure, Verdict, logits_tolerance
from ..diagnose import failure_hint
from ..mistakes import DECODER_MISTAKES, STEP_WEIGHTS, UNTIED_HEAD
from ..torchguard import guard_torch
from ._util import bullet, check_array, dedupe, to_array

NAME = "logits"
TITLE = "Full forward pass: logits at every position"
FUNCTIONS = ("load_gpt2_weights",)
USES_LOADER = True

TRACE_RTOL = 3e-5  # per sub-step; float32 noise in activations is below 1e-6 of their scale
SUBMODULES = (("ln1", "ln1"), ("attn", "attention"), ("ln2", "ln2"), ("ffn", "mlp"))


class _Spy:
    """Stands in for a sub-module and records what it was given and what it returned."""

    def __init__(self, inner: Any, name: str, log: dict[str, tuple[Any, Any]]):
        object.__setattr__(self, "_spy", (inner, name, log))

    def _record(self, method: Any, args: tuple, kwargs: dict) -> Any:
        _, name, log = object.__getattribute__(self, "_spy")
        result = method(*args, **kwargs)
        log.setdefault(name, (args[0] if args else None, result))
        return result

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._record(object.__getattribute__(self, "_spy")[0], args, kwargs)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self._record(object.__getattribute__(self, "_spy")[0].forward, args, kwargs)

    def __getattr__(self, attr: str) -> Any:
        return getattr(object.__getattribute__(self, "_spy")[0], attr)

    def __setattr__(self, attr: str, value: Any) -> None:
        setattr(object.__getattribute__(self, "_spy")[0], attr, value)


def _traced_forward(student: StudentCode, model: Any, ids: np.ndarray) -> dict[str, Any]:
    """Run the forward with spies on the blocks and their sub-modules; best effort, then restore."""
    log: dict[str, tuple[Any, Any]] = {}
    restore: list[tuple[Any, str, Any]] = []
    try:
        blocks = model.blocks
        for i in range(len(blocks)):
            block = blocks[i]
            for attr, step in SUBMODULES:
                if hasattr(block, attr):
                    restore.append((block, attr, getattr(block, attr)))
                    setattr(block, attr, _Spy(getattr(block, attr), f"layer {i} {step}", log))
            restore.append((blocks, str(i), block))
            blocks[i] = _Spy(block, f"layer {i} block", log)
        if hasattr(model, "ln_f"):
            restore.append((model, "ln_f", model.ln_f))
            model.ln_f = _Spy(model.ln_f, "ln_f", log)
        student.call("the traced forward", model, ids)
    except (StudentFailure, AttributeError, TypeError, IndexError):
        pass  # the trace is only a diagnosis; the verdict comes from the plain forward
    finally:
        for owner, attr, value in reversed(restore):
            if attr.isdigit():
                owner[int(attr)] = value
            else:
                setattr(owner, attr, value)
    steps: dict[str, Any] = {}
    n_layer = len(getattr(model, "blocks", []))
    for i in range(n_layer):
        block_in, block_out = log.get(f"layer {i} block", (None, None))
        if i == 0:
            steps["embedding"] = block_in
        for _, step in SUBMODULES:
            steps[f"layer {i} {step}"] = log.get(f"layer {i} {step}", (None, None))[1]
        steps[f"layer {i} residual after attention"] = log.get(f"layer {i} ln2", (None, None))[0]
        steps[f"layer {i} residual after mlp"] = block_out
    steps["ln_f"] = log.get("ln_f", (None, None))[1]
    return {k: v for k, v in steps.items() if isinstance(v, np.ndarray)}


def collect(student: StudentCode, job: Job) -> Collected:
    """Logits on every input (under the torch spy), a traced run, and the second checkpoint's logits."""
    out = Collected(meta={"torch": None, "problems": {}, "second": None, "decoder": student.decoder_origin})
    model = student.loaded_model(job.checkpoints[0])

    def run(key: str, label: str, the_model: Any, ids: np.ndarray) -> None:
        with guard_torch(student.root) as use:
            try:
                logits = student.call("the forward pass", the_model, ids)
            except StudentFailure as failure:
                out.meta["problems"][key] = failure.record
                return
        if use.count and out.meta["torch"] is None:
            out.meta["torch"] = use.as_meta()
        array, problem = to_array(student, "the logits", logits)
        if array is not None:
            out.arrays[key] = array
        if problem:
            out.meta["problems"].setdefault(key, {"summary": f"on the {label} input, the forward's result {problem}"})

    for k, item in enumerate(job.inputs):
        run(f"logits/{k}", item.label, model, item.array())
    if job.inputs:
        with guard_torch(student.root):
            for name, value in _traced_forward(student, model, job.inputs[job.trace_input].array()).items():
                out.arrays[f"trace/{name}"] = value
    if len(job.checkpoints) > 1 and job.inputs:
        try:
            second = student.loaded_model(job.checkpoints[1])
        except StudentFailure as failure:
            out.meta["second"] = failure.record
        else:
            run("second/0", job.inputs[job.trace_input].label, second, job.inputs[job.trace_input].array())
    return out


def _and(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


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


def _first_divergence(
    collected: Collected, trace: list[tuple[str, np.ndarray]], logits: np.ndarray
) -> tuple[str, float] | None:
    """The first traced sub-step whose activations leave the oracle's, with its max difference."""
    for name, want in trace:
        got = logits if name == "head" else collected.arrays.get(f"trace/{name}")
        if got is None:
            continue  # not traced: the student's model does not call that sub-module by attribute
        if got.ndim == want.ndim + 1 and got.shape[0] == 1:
            got = got[0]
        if got.shape != want.shape:
            return name, float("inf")
        diff = float(np.max(np.abs(got.astype(np.float64) - want)))
        if diff > TRACE_RTOL * max(1.0, float(np.max(np.abs(want)))):
            return name, diff
    return None


def _diagnose(job: Job, collected: Collected, truth: Any, logits: np.ndarray, tol: float) -> tuple[list[str], dict]:
    """Where the activations leave HuggingFace's, and which classic mistake reproduces the logits."""
    expected = truth.primary
    ids = job.inputs[job.trace_input].array()
    _, trace = expected.trace(ids)
    lines: list[str] = []
    facts: dict[str, Any] = {"mistakes": [], "first_divergence": None}
    if any(key.startswith("trace/") for key in collected.arrays):
        first = _first_divergence(collected, trace, logits)
        if first is not None:
            step, diff = first
            facts["first_divergence"] = step
            lines.append(f"your activations first leave HuggingFace's at: {step} (max |diff| {diff:.3g}; "
                         "everything before it matches)")  # fmt: skip
            if step == "head":
                facts["mistakes"].append("untied_head")
                lines.append(UNTIED_HEAD)
    if collected.meta.get("decoder") == "reference":
        step = facts["first_divergence"] or ""
        weights = STEP_WEIGHTS.get(step.split(" ", 2)[-1] if step.startswith("layer ") else step)
        lines.append("the reference decoder was used, so the difference comes from the loaded weights"
                     + (f": check {weights}" if weights else "") + " (see the shapes tier)")  # fmt: skip
        return lines, facts
    for mistake in DECODER_MISTAKES:
        candidate = expected.trace(ids, mistake.variant)[0]
        if candidate.shape == logits.shape and np.max(np.abs(candidate - logits)) <= 3 * tol:
            facts["mistakes"].append(mistake.key)
            lines.append(f"your logits are exactly those of GPT-2 with a classic mistake: {mistake.advice}")
            break
    return lines, facts


def judge(job: Job, collected: Collected, truth: Any) -> Verdict:
    """Every input's logits within tolerance, no torch, and diagnosis for the first failure."""
    expected = truth.primary
    errors: list[str] = []
    lines: list[str] = []
    raised: dict[str, list[str]] = {}  # summary -> labels of the inputs it happened on
    diagnosis: list[str] = []
    worst, worst_tol = 0.0, None
    diagnosed = False
    facts: dict[str, Any] = {}
    for k, item in enumerate(job.inputs):
        key = f"logits/{k}"
        if key in collected.meta["problems"]:
            record = collected.meta["problems"][key]
            raised.setdefault(record["summary"] + failure_hint(record, expected.shape), []).append(item.label)
            continue
        ids = item.array()
        want = expected.logits(ids)
        got = collected.arrays.get(key)
        if isinstance(got, np.ndarray) and got.shape == (1, *want.shape):
            got = got[0]  # (1, T, V) for a (T,) input: accepted, the values are what matter
        problem = check_array(got, f"the logits for the {item.label} input", want.shape)
        if problem:
            lines.append(problem)
            continue
        tol = logits_tolerance(want)
        diff = np.abs(got.astype(np.float64) - want)
        per_position = diff.reshape(-1, diff.shape[-2], diff.shape[-1]).max(axis=(0, 2))
        if worst_tol is None or diff.max() > worst:
            worst, worst_tol = float(diff.max()), tol
        if diff.max() > tol:
            lines.append(f"on the {item.label} input, max |diff| {diff.max():.3g} > tolerance {tol:.2g}: "
                         f"{_positions_text(per_position, tol)}")  # fmt: skip
            if not diagnosed and k == job.trace_input:
                diagnosis, facts = _diagnose(job, collected, truth, got, tol)
                diagnosed = True
    for summary, labels in raised.items():
        errors.append(f"On the {_and(labels)} input{'s' if len(labels) > 1 else ''}: {summary}")
    second = collected.meta.get("second")
    if second:
        errors.append(
            f"On the {job.checkpoints[1].label} checkpoint: {second['summary']}{failure_hint(second, job.checkpoints[1].shape)}"
        )
    elif "second/0" in collected.meta["problems"]:
        errors.append(
            f"On the {job.checkpoints[1].label} checkpoint: {collected.meta['problems']['second/0']['summary']}"
        )
    elif len(job.checkpoints) > 1 and "second/0" in collected.arrays:
        ids = job.inputs[job.trace_input].array()
        want = truth.checkpoints[1].logits(ids)
        got = collected.arrays["second/0"]
        problem = check_array(got, f"the logits on the {job.checkpoints[1].label} checkpoint", want.shape)
        if problem:
            lines.append(problem)
        elif np.max(np.abs(got.astype(np.float64) - want)) > logits_tolerance(want):
            d = float(np.max(np.abs(got.astype(np.float64) - want)))
            lines.append(f"on the {job.checkpoints[1].label} checkpoint ({job.checkpoints[1].shape.describe()}), "
                         f"max |diff| {d:.3g} > tolerance {logits_tolerance(want):.2g}")  # fmt: skip
    failed_inputs = [
        item for item in job.inputs if any(line.startswith(f"on the {item.label} input") for line in lines)
    ]
    if failed_inputs and all(item.array().ndim == 2 for item in failed_inputs) and not raised:
        diagnosis.append("single sequences match but the batched (B, T) input does not: the forward must treat "
                         "a leading batch axis (masks and head splits over the last two axes)")  # fmt: skip
    lines += diagnosis
    torch_use = collected.meta.get("torch")
    if torch_use:
        facts["torch"] = torch_use
        where = torch_use["where"] or "a place outside your files"
        lines.insert(0, f"the forward pass called torch ({torch_use['first']}, first at {where}): it must compute "
                        "with NumPy only, not run the HuggingFace model")  # fmt: skip
    if errors:
        return Verdict("error", "\n".join(dedupe(errors) + ([bullet(lines)] if lines else [])), worst, worst_tol, facts)
    if lines:
        return Verdict("failed", "The logits differ from HuggingFace's:\n" + bullet(lines), worst, worst_tol, facts)
    return Verdict("passed", f"Logits match HuggingFace's at every position on {len(job.inputs)} inputs "
                             f"(max |diff| {worst:.2g}, tolerance {worst_tol:.2g}).", worst, worst_tol, facts)  # fmt: skip
