"""Tier 6: ``compare_intermediate_outputs`` finds where two models part, stage by stage.

On a model the grader fills with GPT-2's weights every stage must be near zero; on one
whose block k the grader corrupted (k drawn afresh), the first large stage must be
block k. Stage names are read generously: ``embedding``, ``block_0``... ``ln_f``,
``logits`` as the course names them, or any clear spelling (``layer 3``, ``h.3``, ``final_ln``).
"""

from __future__ import annotations

import re

import numpy as np

from .. import harness, oracle
from ..outcome import Deadline, Stop, failure_of
from ..session import Session
from .base import Verdict, conclude, lacks, returned_dict

NAME = "intermediate"
TITLE = "compare_intermediate_outputs: the first stage that differs"
SHIFT = 1.0  # added to the corrupted block's output (through ffn.b2): far above any noise
NEAR_ZERO_RTOL = 1e-3  # of the stage's activation scale


def stage_of(key: str, num_layers: int) -> float | None:
    """Where a key names a stage, in forward order: -1 embedding, i block i (sub-parts i.x), n ln_f, n+1 logits."""
    low = key.lower()
    numbers = [int(n) for n in re.findall(r"\d+", low)]
    if "logit" in low or "lm_head" in low or low in ("output", "outputs", "head"):
        return num_layers + 1
    if "ln_f" in low or "final" in low or "lnf" in low:
        return num_layers
    if numbers and re.search(r"block|layer|\bh\b|h[._]|transformer|blk", low) and numbers[0] < num_layers:
        sub = 0.5 if re.search(r"attn|attention", low) and not re.search(r"mlp|ffn|out", low) else 0.9
        if not re.search(r"attn|attention|mlp|ffn|ln", low):
            sub = 0.99
        return numbers[0] + sub
    if re.search(r"emb|wte|wpe|token|position|input", low):
        return -1
    return None


def corrupted(weights: dict[str, np.ndarray], block: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    direction = rng.standard_normal(weights[f"blocks.{block}.ffn.b2"].shape)
    out = dict(weights)
    out[f"blocks.{block}.ffn.b2"] = (
        weights[f"blocks.{block}.ffn.b2"] + SHIFT * direction / np.max(np.abs(direction))
    ).astype(np.float32)
    return out


def _call(session: Session, handle: int, hf: int, ids: np.ndarray, deadline: Deadline) -> dict[str, float] | str:
    label = "compare_intermediate_outputs"
    for shaped in (ids, ids[0]):
        reply = session.torch.try_ask(
            "call",
            {"fn": label, "args": [{"h": handle}, {"h": hf}, {"a": 0}], "label": label},
            deadline,
            label,
            inputs=[shaped],
            budget=1 << 20,
        )
        if reply.ok:
            break
        if reply.status != "raised":
            raise Stop(failure_of(reply, label, session.limits))
    result = returned_dict(session, reply, label, "stage -> max difference")
    if isinstance(result, str):
        return result
    out = {}
    for key, value in result.items:
        number = value.number
        if number is None and value.kind == "array" and value.array is not None and int(np.prod(value.shape)) == 1:
            number = float(reply.array(value.array, "a stage").reshape(-1)[0])
        if key.kind != "str" or number is None:
            return f"compare_intermediate_outputs gave {value.describe()} for {key.describe()}; each value must be a number"
        out[key.value] = number
    return out


def run(session: Session, deadline: Deadline) -> Verdict:
    if (absent := lacks(session, deadline, "compare_intermediate_outputs")) is not None:
        return absent
    expected = session.expected("function")
    n = expected.shape.num_layers
    rng = session.inputs.rng(6)
    block = int(rng.integers(0, n))
    ids = np.asarray([expected.encode(session.inputs.texts[0])], dtype=np.int64)
    trace: oracle.Trace = []
    oracle.forward(expected.attributes, ids, expected.shape.num_heads, trace=trace)
    scale = max(1.0, max(float(np.max(np.abs(a))) for _, a in trace))
    hf, _ = harness.ready(session, deadline)
    results = {}
    for label, weights in (
        ("the grader's model with GPT-2's weights", expected.attributes),
        (f"a model whose block {block} the grader corrupted", corrupted(expected.attributes, block, rng)),
    ):
        got = _call(session, harness.model(session, weights, deadline), hf, ids, deadline)
        if isinstance(got, str):
            return Verdict("failed", got)
        results[label] = got
    correct, broken = results.values()
    stages = {k: stage_of(k, n) for k in {*correct, *broken}}
    known = {k: s for k, s in stages.items() if s is not None}
    if not known:
        return Verdict(
            "failed",
            f"compare_intermediate_outputs gave keys the grader cannot place in the forward "
            f"pass ({', '.join(list(stages)[:5])}): name the stages embedding, block_0, ..., "
            "ln_f, logits",
        )
    lines = _problems(correct, broken, known, stages, block, n, scale)
    facts = {"corrupted_block": block, "keys": list(stages)[:40]}
    return conclude(
        [],
        lines,
        "compare_intermediate_outputs is wrong",
        lambda: (
            f"compare_intermediate_outputs is near zero on a matching model and first large at "
            f"block {block}, where the grader corrupted one."
        ),
        facts=facts,
        mistakes=[("intermediate", "compare_intermediate_outputs misplaces the difference")] if lines else [],
    )


def _problems(
    correct: dict[str, float],
    broken: dict[str, float],
    known: dict[str, float],
    stages: dict[str, float | None],
    block: int,
    num_layers: int,
    scale: float,
) -> list[str]:
    """Near zero on the matching model, and first large at the corrupted block on the other."""
    lines: list[str] = []
    big = [k for k, v in correct.items() if k in known and not v <= NEAR_ZERO_RTOL * scale]
    if big:
        lines.append(
            f"on the grader's model with GPT-2's own weights, {', '.join(big[:3])} are not near zero "
            f"({', '.join(f'{correct[k]:.3g}' for k in big[:3])}): the two models agree there"
        )
    if not any(int(s) == block and 0 <= s < num_layers for s in known.values()):
        lines.append(f"the result has no entry for block {block} (keys: {', '.join(list(stages)[:6])})")
        return lines
    ordered = sorted((s, k) for k, s in known.items() if k in broken)
    first = next((k for _, k in ordered if broken[k] >= 0.5 * SHIFT), None)
    if first is None:
        lines.append(
            f"on a model whose block {block} the grader corrupted (its output moves by {SHIFT:g}), no "
            "stage shows a large difference"
        )
    elif int(known[first]) != block:
        lines.append(
            f"on a model whose block {block} the grader corrupted, the first large stage is {first!r} "
            f"({broken[first]:.3g}); it should be block {block}"
        )
    return lines
