"""Tier 3: ``token_embedding(ids)`` and ``pos_embedding(T)`` give GPT-2's rows, in the torch-free process.

Positions are asked for as an int, as in Lab 03 (``pos_embedding(seq_len)``); a
``pos_embedding`` that wants an index array instead gets ``np.arange(T)``.
"""

from __future__ import annotations

import numpy as np

from lab04_checks.contract import WEIGHTS_RTOL

from ...sandbox import protocol
from ..outcome import Deadline, Stop
from ..session import Session
from .base import Verdict, array_problem, arrays_of, bullet, from_failure

NAME = "embedding"
TITLE = "Embeddings: token_embedding(ids) + pos_embedding(T)"


def _call(
    session: Session,
    handle: int,
    method: str,
    arg: dict,
    deadline: Deadline,
    inputs: list | None,
    label: str,
    budget: int,
):
    reply = session.numpy.try_ask(
        "call",
        {"fn": handle, "method": method, "args": [arg], "label": label},
        deadline,
        label,
        inputs=inputs,
        budget=budget,
    )
    if not reply.ok:
        return reply, None
    arrays, problem = arrays_of(reply, protocol.desc(reply.fields.get("result"), label), f"{label}'s result")
    return reply, arrays[0] if arrays else problem


def run(session: Session, deadline: Deadline) -> Verdict:
    handle = session.adopted_model(session.primary_name, deadline)
    expected = session.expected("primary")
    ids = session.inputs.embedding.ids
    B, T = ids.shape
    d = expected.shape.d_model
    budget = 4 * B * T * d * 8 + (1 << 16)
    lines: list[str] = []
    reply, tokens = _call(session, handle, "token_embedding", {"a": 0}, deadline, [ids], "token_embedding(ids)", budget)
    if tokens is None:
        raise Stop(_failure(session, reply, "token_embedding(ids)"))
    reply, positions = _call(
        session, handle, "pos_embedding", {"v": int(T)}, deadline, None, "pos_embedding(T)", budget
    )
    if positions is None and reply.status == "raised":
        reply, positions = _call(
            session, handle, "pos_embedding", {"a": 0}, deadline, [np.arange(T)], "pos_embedding(np.arange(T))", budget
        )
    if positions is None:
        raise Stop(_failure(session, reply, "pos_embedding(T)"))
    wte, wpe = expected.attributes["token_embedding.weight"], expected.attributes["pos_embedding.weight"]
    worst = 0.0
    for name, got, want in (("token_embedding(ids)", tokens, wte[ids]), ("pos_embedding(T)", positions, wpe[:T])):
        if isinstance(got, str):
            lines.append(got)
            continue
        if name.startswith("pos") and got.ndim == 3 and got.shape[0] == 1:
            got = got[0]
        problem = array_problem(got, f"{name} for {B}x{T} ids", want.shape)
        if problem:
            lines.append(problem)
            continue
        diff = float(np.max(np.abs(got.astype(np.float64) - want)))
        worst = max(worst, diff)
        if diff > WEIGHTS_RTOL * max(1.0, float(np.max(np.abs(want)))):
            where = (
                "rows of token_embedding.weight" if name.startswith("token") else "rows 0..T-1 of pos_embedding.weight"
            )
            lines.append(
                f"{name} differs from GPT-2's {where} (max |diff| {diff:.3g}); see the shapes tier for the "
                "loaded weights"
            )
    if lines:
        return Verdict(
            "failed",
            "The embeddings are wrong:\n" + bullet(lines),
            max_diff=worst,
            causes={"attribute token_embedding.weight": lines[0]} if "token" in lines[0] else {},
        )
    return Verdict(
        "passed", f"token_embedding(ids) and pos_embedding(T) give GPT-2's rows on {B}x{T} ids.", max_diff=worst
    )


def _failure(session: Session, reply, what: str):
    from ..outcome import Failure, failure_of

    if reply.ok or (reply.status == "protocol" and not reply.fields):
        return Failure("protocol", f"{what} gave no usable result")
    return failure_of(reply, what, session.limits)


__all__ = ["NAME", "TITLE", "from_failure", "run"]
