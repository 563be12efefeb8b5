"""Tier 4: the full forward pass gives GPT-2's logits at every position, in the torch-free process.

``model(ids, training=False)`` (or ``model(ids)``) on a 1-token, a long and a batched
(B, T) input of the grader's choosing, twice on one of them (a forward that differs
between two calls is random), and once on the second checkpoint. When logits differ, the
feedback says where: each sub-module the forward called is re-run by the grader's own
GPT-2 on the very input it received, so the first one that computes wrongly is named
even when its drift is small, with the classic mistake that reproduces it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ...sandbox import protocol
from .. import oracle
from ..diagnose import cause_key
from ..mistakes import DECODER_MISTAKES, SUBSTEP_MISTAKES, UNTIED_HEAD
from ..session import Deadline, Failure, Session, Stop, failure_of
from . import shapes
from .base import Verdict, array_problem, arrays_of, bullet, dedupe

NAME = "logits"
TITLE = "Full forward pass: logits at every position"
LANE = "numpy"  # the student process it talks to; tiers of the two lanes run side by side
SUBSTEP_RTOL = 3e-6  # per sub-step, of its output's scale; float32 noise there is below 1e-6
SUBMODULES = (("ln1", "ln1"), ("attn", "attention"), ("ln2", "ln2"), ("ffn", "mlp"))


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


def _spies(num_layers: int) -> list[list[str]]:
    spies = []
    for i in range(num_layers):
        spies += [[f"blocks.{i}", attr, f"layer {i} {step}"] for attr, step in SUBMODULES]
    spies += [["blocks", str(i), f"layer {i} block"] for i in range(num_layers)]
    return [*spies, ["", "ln_f", "ln_f"], ["", "lm_head", "head"]]


def _trace(session: Session, handle: int, ids: np.ndarray, deadline: Deadline) -> dict[str, tuple[Any, Any]]:
    """What each sub-module of the student's forward first received and returned (best effort)."""
    expected = session.expected("primary")
    imported = session.numpy.ready(deadline)
    call = session.forward_call(imported, handle, {"a": 0}, "the traced forward pass")
    budget = int(
        ids.size
        * (
            expected.shape.vocab_size * 3
            + expected.shape.d_ff * 4
            + expected.shape.d_model * 60 * expected.shape.num_layers
        )
        * 8
    ) + (1 << 20)
    reply = session.numpy.try_ask(
        "trace",
        {"h": handle, "spy": _spies(expected.shape.num_layers), "call": call},
        deadline,
        "the traced forward pass",
        inputs=[ids],
        budget=budget,
    )
    if not reply.ok:
        return {}
    steps = protocol.mapping(reply.fields.get("steps", {}), "the trace", 4 * expected.shape.num_layers * 8 + 8)
    out = {}
    for label, pair in steps.items():
        pair = protocol.sequence(pair, "a traced step", 2)
        if len(pair) != 2:
            continue
        given, returned = (protocol.desc(p, label) for p in pair)
        got_in, _ = arrays_of(reply, given, label)
        got_out, _ = arrays_of(reply, returned, label)
        if got_in and got_out:
            out[str(label)] = (_rows(got_in[0]), _rows(got_out[0]))
    return out


def _rows(array: np.ndarray) -> np.ndarray:
    """(1, T, d) -> (T, d): the trace runs on one row."""
    array = np.asarray(array, dtype=np.float64)
    while array.ndim > 2 and array.shape[0] == 1:
        array = array[0]
    return array


def _close(got: np.ndarray, want: np.ndarray, rtol: float = SUBSTEP_RTOL) -> tuple[bool, float]:
    if got.shape != want.shape:
        return False, float("inf")
    diff = float(np.max(np.abs(got - want))) if want.size else 0.0
    return diff <= rtol * max(1.0, float(np.max(np.abs(want)))), diff


def _step_check(
    label: str, step: str, given: np.ndarray, returned: np.ndarray, w: dict, n_head: int, weights: dict
) -> tuple[bool, float, list[tuple[str, str]]]:
    """Does one sub-module compute GPT-2's function of its own input? With the classic variant that it matches."""

    def apply(variant: oracle.Variant) -> np.ndarray:
        if step == "ln1":
            return oracle.layer_norm(given, w["ln1.gamma"], w["ln1.beta"], variant)
        if step == "ln2":
            return oracle.layer_norm(given, w["ln2.gamma"], w["ln2.beta"], variant)
        if step == "attention":
            return oracle.attention(given, w, n_head, variant)
        if step == "mlp":
            return oracle.mlp(given, w, variant)
        if step == "block":
            return oracle.block(given, w, n_head, variant)
        if step == "ln_f":
            return oracle.layer_norm(given, weights["ln_f.gamma"], weights["ln_f.beta"], variant)
        raise ValueError(step)

    ok, diff = _close(returned, apply(oracle.GPT2))
    if ok:
        return True, diff, []
    named = []
    kind = "ln" if step in ("ln1", "ln2", "ln_f") else step
    for mistake in SUBSTEP_MISTAKES.get(kind, ()):
        try:
            if _close(returned, apply(mistake.variant), 1e-4)[0]:
                named.append((mistake.key, mistake.advice))
                break
        except (ValueError, FloatingPointError):
            continue
    return False, diff, named


def _localise(
    session: Session, trace: dict[str, tuple[np.ndarray, np.ndarray]], ids: np.ndarray, weights: dict
) -> tuple[str | None, float, list[tuple[str, str]]]:
    """The first traced sub-step that computes differently from GPT-2 on its own input."""
    shape = session.expected("primary").shape
    row = ids[0]
    first_block = trace.get("layer 0 block")
    if first_block is not None:
        embedding = (
            weights["token_embedding.weight"][row].astype(np.float64) + weights["pos_embedding.weight"][: len(row)]
        )
        ok, diff = _close(first_block[0], embedding)
        if not ok:
            return "embedding", diff, _embedding_mistake(first_block[0], weights, row)
    for i in range(shape.num_layers):
        w = oracle.block_weights(weights, i)
        for _, step in (*SUBMODULES, ("", "block")):
            item = trace.get(f"layer {i} {step}")
            if item is None:
                continue
            ok, diff, named = _step_check(f"layer {i} {step}", step, item[0], item[1], w, shape.num_heads, weights)
            if not ok:
                if step == "block":
                    named = named or [
                        (
                            "block_wiring",
                            "the block's parts each compute right but are combined "
                            "differently from GPT-2's pre-norm block: x = x + attn(ln1(x)), then "
                            "x = x + ffn(ln2(x))",
                        )
                    ]
                return f"layer {i} {step}", diff, named
    item = trace.get("ln_f")
    if item is not None:
        ok, diff, named = _step_check("ln_f", "ln_f", item[0], item[1], {}, shape.num_heads, weights)
        if not ok:
            return "ln_f", diff, named
    item = trace.get("head")
    if item is not None:
        ok, diff = _close(item[1], oracle.head(item[0], weights["token_embedding.weight"]), 1e-5)
        if not ok:
            return "head", diff, [("untied_head", UNTIED_HEAD)]
    return None, 0.0, []


def _first_divergence(
    session: Session, trace: dict[str, tuple[np.ndarray, np.ndarray]], ids: np.ndarray
) -> tuple[str, float] | None:
    """Where the student's activations first leave GPT-2's (with GPT-2's own weights), in forward order."""
    expected = session.expected("primary")
    _, reference = expected.trace(ids)
    got: dict[str, np.ndarray] = {}
    if "layer 0 block" in trace:
        got["embedding"] = trace["layer 0 block"][0]
    for label, (_, returned) in trace.items():
        name = label.replace(" block", " residual after mlp") if label.endswith(" block") else label
        got[name] = returned
    for name, want in reference:
        if name in got:
            ok, diff = _close(got[name], want, 10 * SUBSTEP_RTOL)
            if not ok:
                return name, diff
    return None


def _embedding_mistake(got: np.ndarray, weights: dict, row: np.ndarray) -> list[tuple[str, str]]:
    wte, wpe, T = weights["token_embedding.weight"], weights["pos_embedding.weight"], len(row)
    tokens = wte[row].astype(np.float64)
    candidates = [
        (
            "position_offset",
            tokens + wpe[1 : T + 1] if len(wpe) >= T + 1 else None,
            "positions start at 1; the first token has position 0: pos_embedding(T) returns rows 0..T-1",
        ),
        ("no_positions", tokens, "the position embedding is not added to the token embedding"),
        (
            "scaled_embedding",
            tokens * np.sqrt(wte.shape[1]) + wpe[:T],
            "the token embedding is scaled by sqrt(d_model); GPT-2 adds wte[ids] + wpe[:T] unscaled",
        ),
    ]
    for key, want, advice in candidates:
        if want is not None and _close(got, want, 1e-5)[0]:
            return [(key, advice)]
    return []


def _student_weights(session: Session) -> dict[str, np.ndarray]:
    """The weights the student's model holds: GPT-2's where the digest says so, else the student's own arrays."""
    load = session.loads.get(session.primary_name)
    weights = dict(session.expected("primary").attributes)
    if load is not None:
        for path, array in load.arrays.items():
            if path in weights and array.shape == weights[path].shape and array.dtype.kind == "f":
                weights[path] = array.astype(np.float32)
    return weights


def _whole_model_mistake(session: Session, ids: np.ndarray, logits: np.ndarray, tol: float) -> tuple[str, str] | None:
    """Which classic mistake, replayed on the whole model, gives exactly the student's logits."""
    expected = session.expected("primary")
    for mistake in DECODER_MISTAKES:
        candidate = oracle.forward(expected.attributes, ids, expected.shape.num_heads, mistake.variant)
        if candidate.shape == logits.shape and np.max(np.abs(candidate - logits)) <= 3 * tol:
            return mistake.key, mistake.advice
    return None


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


def run(session: Session, deadline: Deadline) -> Verdict:
    handle = session.adopted_model(session.primary_name, deadline)
    expected = session.expected("primary")
    vocab = expected.shape.vocab_size
    inputs = session.inputs
    lines: list[str] = []
    errors: list[str] = []
    facts: dict[str, Any] = {"inputs": [], "mistakes": []}
    causes: dict[str, str] = {}
    mistakes: list[tuple[str, str]] = []
    worst, worst_tol, failed_inputs = 0.0, None, []
    results: dict[int, np.ndarray] = {}
    for k, item in enumerate(inputs.logits):
        got, problem = _forward(session, handle, item.ids, deadline, item.label, vocab)
        if isinstance(problem, Failure):
            if problem.kind in ("timeout", "crashed"):
                raise Stop(problem)
            errors.append(f"On the {item.label} input: {problem.text}")
            if problem.raised and problem.raised.type == "NotAvailable":
                causes["torch in the forward pass"] = problem.text
                mistakes.append(("torch_in_forward", "the forward pass uses torch"))
            continue
        want = expected.logits(item.ids)
        check = problem or array_problem(got, f"the logits for the {item.label} input", want.shape)
        if check:
            lines.append(check)
            continue
        results[k] = got
        tol = expected.tolerance(item.ids)
        diff = np.abs(got.astype(np.float64) - want)
        facts["inputs"].append({"label": item.label, "max_diff": float(diff.max()), "tolerance": tol})
        if worst_tol is None or diff.max() > worst:
            worst, worst_tol = float(diff.max()), tol
        if diff.max() > tol:
            failed_inputs.append(k)
            per_position = diff.reshape(-1, diff.shape[-2], diff.shape[-1]).max(axis=(0, 2))
            lines.append(
                f"on the {item.label} input, max |diff| {diff.max():.3g} > tolerance {tol:.2g}: "
                f"{_positions_text(per_position, tol)}"
            )
    k = 0  # the cheapest input: dropout left on shows on any of them
    if k in results:
        again, _ = _forward(session, handle, inputs.logits[k].ids, deadline, "again", vocab)
        if isinstance(again, np.ndarray) and again.shape == results[k].shape and not np.array_equal(again, results[k]):
            text = (
                "the forward pass gives different logits for the same input on two calls: it is random "
                "(dropout active? call it with training=False, or build the model with dropout=0.0)"
            )
            lines.insert(0, text)
            causes["random forward"] = text
            mistakes.append(("random_forward", "the forward pass is random (dropout active?)"))
    lines += _second(session, deadline, errors)
    if failed_inputs and not errors:
        lines += _diagnose(session, deadline, handle, failed_inputs, results, facts, causes, mistakes)
    facts["mistakes"] = [key for key, _ in mistakes]
    if errors:
        return Verdict(
            "error",
            "\n".join(dedupe(errors) + ([bullet(lines)] if lines else [])),
            worst,
            worst_tol,
            facts,
            mistakes,
            causes,
        )
    if lines:
        return Verdict(
            "failed", "The logits differ from GPT-2's:\n" + bullet(lines), worst, worst_tol, facts, mistakes, causes
        )
    return Verdict(
        "passed",
        f"Logits match GPT-2's at every position on {len(inputs.logits)} inputs and on the "
        f"{session.load_order()[-1]} checkpoint (max |diff| {worst:.2g}, tolerance "
        f"{worst_tol:.2g}).",
        worst,
        worst_tol,
        facts,
    )


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


def _diagnose(
    session: Session,
    deadline: Deadline,
    handle: int,
    failed: list[int],
    results: dict[int, np.ndarray],
    facts: dict,
    causes: dict[str, str],
    mistakes: list[tuple[str, str]],
) -> list[str]:
    """Why the logits differ: the weights (shapes tier), the first wrong sub-step, or a batch-only problem."""
    lines: list[str] = []
    inputs = session.inputs
    load = session.loads.get(session.primary_name)
    wrong = shapes.findings_of(load) if load is not None and load.failure is None else []
    if wrong:
        names = ", ".join(sorted({f[0] for f in wrong})[:4])
        lines.append(f"the loaded weights are wrong ({names}; see the shapes tier): fix those first")
        for path, _, words in wrong:
            causes.setdefault(cause_key(path), f"{path} {words}")
    k = inputs.trace
    ids = inputs.logits[k].ids[:1]
    if k in failed:
        trace = _trace(session, handle, ids, deadline)
        divergence = _first_divergence(session, trace, ids) if trace else None
        if divergence is not None:
            facts["first_activation_divergence"] = divergence[0]
            lines.append(
                f"your activations first leave GPT-2's at: {divergence[0]} (max |diff| {divergence[1]:.3g}; "
                "everything before it matches)"
            )
        weights = _student_weights(session)
        step, diff, named = _localise(session, trace, ids, weights) if trace else (None, 0.0, [])
        if step is not None:
            facts["first_divergence"] = step
            lines.append(
                f"the first sub-step that computes differently from GPT-2 on the input it received is "
                f"{step} (max |diff| {diff:.3g}); everything before it is right"
            )
            if not wrong:
                lines.append("your loaded weights are right (shapes tier), so the decoder is the suspect")
            for key, advice in named:
                lines.append(f"it computes exactly what GPT-2 computes with a classic mistake: {advice}")
                mistakes.append((key, advice.split(";")[0]))
                causes[f"decoder {key}"] = advice
            if not named:
                causes[f"decoder {step.split(' ')[-1]}"] = f"{step} computes differently from GPT-2"
        elif not trace and not wrong:
            found = _whole_model_mistake(
                session, inputs.logits[k].ids, results[k], session.expected("primary").tolerance(inputs.logits[k].ids)
            )
            if found:
                lines.append(f"your logits are exactly those of GPT-2 with a classic mistake: {found[1]}")
                mistakes.append((found[0], found[1].split(";")[0]))
                causes[f"decoder {found[0]}"] = found[1]
    if failed and all(inputs.logits[i].ids.shape[0] > 1 for i in failed):
        lines.append(
            "single sequences match but the batched (B, T) input does not: the forward must treat a "
            "leading batch axis (masks and head splits over the last two axes)"
        )
        causes["batch axis"] = lines[-1]
    return lines
