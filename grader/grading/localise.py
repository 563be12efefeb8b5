"""Where a wrong forward pass first goes wrong: the trace of its sub-modules, each re-run by the oracle.

The student's forward runs once more with a spy on each sub-module; each sub-step's own
input is then fed to the grader's float64 GPT-2, so the first sub-step that computes
differently is found even when its drift is small, and the classic mistake that
reproduces it exactly is named.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..sandbox import protocol
from . import oracle
from .mistakes import DECODER_MISTAKES, SUBSTEP_MISTAKES, UNTIED_HEAD
from .outcome import Deadline
from .session import Session
from .tiers.base import arrays_of

SUBSTEP_RTOL = 3e-6  # per sub-step, of its output's scale; float32 noise there is below 1e-6
SUBMODULES = (("ln1", "ln1"), ("attn", "attention"), ("ln2", "ln2"), ("ffn", "mlp"))


def spies(num_layers: int) -> list[list[str]]:
    """The sub-modules to spy on: [owner path, attribute, label] in forward order."""
    spies = []
    for i in range(num_layers):
        spies += [[f"blocks.{i}", attr, f"layer {i} {step}"] for attr, step in SUBMODULES]
    spies += [["blocks", str(i), f"layer {i} block"] for i in range(num_layers)]
    return [*spies, ["", "ln_f", "ln_f"], ["", "lm_head", "head"]]


def trace(session: Session, handle: int, ids: np.ndarray, deadline: Deadline) -> dict[str, tuple[Any, Any]]:
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
        {"h": handle, "spy": spies(expected.shape.num_layers), "call": call},
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
            out[str(label)] = (rows(got_in[0]), rows(got_out[0]))
    return out


def rows(array: np.ndarray) -> np.ndarray:
    """(1, T, d) -> (T, d): the trace runs on one row."""
    array = np.asarray(array, dtype=np.float64)
    while array.ndim > 2 and array.shape[0] == 1:
        array = array[0]
    return array


def close(got: np.ndarray, want: np.ndarray, rtol: float = SUBSTEP_RTOL) -> tuple[bool, float]:
    """Within ``rtol`` of the expected output's scale, and the max |diff|."""
    if got.shape != want.shape:
        return False, float("inf")
    diff = float(np.max(np.abs(got - want))) if want.size else 0.0
    return diff <= rtol * max(1.0, float(np.max(np.abs(want)))), diff


def step_check(
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

    ok, diff = close(returned, apply(oracle.GPT2))
    if ok:
        return True, diff, []
    named = []
    kind = "ln" if step in ("ln1", "ln2", "ln_f") else step
    for mistake in SUBSTEP_MISTAKES.get(kind, ()):
        try:
            if close(returned, apply(mistake.variant), 1e-4)[0]:
                named.append((mistake.key, mistake.advice))
                break
        except (ValueError, FloatingPointError):
            continue
    return False, diff, named


def wired_as_gpt2(trace: dict[str, tuple[np.ndarray, np.ndarray]], i: int) -> bool:
    """Whether block ``i``'s traced parts, each already found right, are chained as GPT-2's pre-norm block.

    Then the block computes GPT-2's block and its own check (a float64 block, as costly as all its
    parts together) is not needed; any other wiring, or a part the trace lacks, gets that check."""
    parts = [trace.get(f"layer {i} {step}") for step in ("block", "ln1", "attention", "ln2", "mlp")]
    if any(part is None for part in parts) or any(a.shape != parts[0][0].shape for part in parts for a in part):
        return False  # a part not traced, or of another shape (nothing to chain without broadcasting)
    (x, out), (ln1_in, ln1_out), (attn_in, attn_out), (ln2_in, ln2_out), (mlp_in, mlp_out) = parts
    h = x + attn_out
    chain = ((ln1_in, x), (attn_in, ln1_out), (ln2_in, h), (mlp_in, ln2_out), (out, h + mlp_out))
    return all(close(got, want)[0] for got, want in chain)


def first_wrong_substep(
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
        ok, diff = close(first_block[0], embedding)
        if not ok:
            return "embedding", diff, embedding_mistake(first_block[0], weights, row)
    buffers: dict[str, np.ndarray] = {}
    for i in range(shape.num_layers):
        # In float64 once per layer: its sub-steps, the whole block and the variants each use every matrix.
        w = float64_layer(weights, i, buffers)
        for _, step in (*SUBMODULES, ("", "block")):
            item = trace.get(f"layer {i} {step}")
            if item is None or (step == "block" and wired_as_gpt2(trace, i)):
                continue
            ok, diff, named = step_check(f"layer {i} {step}", step, item[0], item[1], w, shape.num_heads, weights)
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
        ok, diff, named = step_check("ln_f", "ln_f", item[0], item[1], {}, shape.num_heads, weights)
        if not ok:
            return "ln_f", diff, named
    item = trace.get("head")
    if item is not None:
        # Tied or not is all this asks: float32's product (the student's own precision) is well inside 1e-5.
        wte = weights["token_embedding.weight"]
        ok, diff = close(item[1], (item[0].astype(np.float32) @ wte.T).astype(np.float64), 1e-5)
        if not ok:
            return "head", diff, [("untied_head", UNTIED_HEAD)]
    return None, 0.0, []


def float64_layer(weights: dict, i: int, buffers: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Layer ``i``'s weights in float64, written into ``buffers`` (one per name, kept by the caller for its
    next layer; nothing computed from them outlives the layer).

    Not a fresh array per layer: on this VM fresh pages cost more than the conversion itself, and keeping
    GPT-2's weights in float64 for a whole batch (8 bytes a parameter) cost it more still."""
    out = {}
    for name, array in oracle.block_weights(weights, i).items():
        buffer = buffers.get(name)
        if buffer is None or buffer.shape != array.shape:
            buffer = buffers[name] = np.empty(array.shape, np.float64)
        np.copyto(buffer, array, casting="unsafe")  # what astype(np.float64) gives
        out[name] = buffer
    return out


def first_divergence(
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
            ok, diff = close(got[name], want, 10 * SUBSTEP_RTOL)
            if not ok:
                return name, diff
    return None


def embedding_mistake(got: np.ndarray, weights: dict, row: np.ndarray) -> list[tuple[str, str]]:
    """The classic embedding mistake that gives exactly the first block's input, if one does."""
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
        if want is not None and close(got, want, 1e-5)[0]:
            return [(key, advice)]
    return []


def student_weights(session: Session) -> dict[str, np.ndarray]:
    """The weights the student's model holds: GPT-2's where the digest says so, else the student's own arrays."""
    load = session.loads.get(session.primary_name)
    weights = dict(session.expected("primary").attributes)
    if load is not None:
        for path, array in load.arrays.items():
            if path in weights and array.shape == weights[path].shape and array.dtype.kind == "f":
                weights[path] = array.astype(np.float32)
    return weights


def whole_model_mistake(session: Session, ids: np.ndarray, logits: np.ndarray, tol: float) -> tuple[str, str] | None:
    """Which classic mistake, replayed on the whole model, gives exactly the student's logits."""
    expected = session.expected("primary")
    n_positions = len(expected.attributes["pos_embedding.weight"])
    for mistake in DECODER_MISTAKES:
        if not mistake.variant.fits(ids.shape[-1], n_positions):  # that decoder would have raised on this input
            continue
        candidate = oracle.forward(expected.attributes, ids, expected.shape.num_heads, mistake.variant)
        if candidate.shape == logits.shape and np.max(np.abs(candidate - logits)) <= 3 * tol:
            return mistake.key, mistake.advice
    return None
