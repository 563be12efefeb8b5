"""Tier 3: token plus position embeddings, through the model's callable embeddings, equal wte + wpe."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..common import WEIGHTS_RTOL, Collected, Job, StudentCode, StudentFailure, Verdict
from ..torchguard import guard_torch
from ._util import bullet, check_array, dedupe, to_array

NAME = "embedding"
TITLE = "Embeddings (token_embedding + pos_embedding after loading)"
FUNCTIONS = ("load_gpt2_weights",)
USES_LOADER = True


def collect(student: StudentCode, job: Job) -> Collected:
    """Call ``token_embedding(ids)`` and ``pos_embedding(arange(T))`` on every input."""
    model = student.loaded_model(job.checkpoints[0])
    out = Collected(meta={"torch": None, "problems": {}})
    for k, item in enumerate(job.inputs):
        ids = item.array()
        positions = np.arange(ids.shape[-1])
        with guard_torch(student.root) as use:
            try:
                tok = student.call("model.token_embedding(ids)", lambda ids=ids: model.token_embedding(ids))
                pos = student.call("model.pos_embedding(positions)", lambda p=positions: model.pos_embedding(p))
            except StudentFailure as failure:
                out.meta["problems"][str(k)] = failure.record
                continue
        if use.count and out.meta["torch"] is None:
            out.meta["torch"] = use.as_meta()
        for name, value in (("tok", tok), ("pos", pos)):
            array, problem = to_array(student, f"the {name} embedding", value)
            if array is not None:
                out.arrays[f"{name}/{k}"] = array
            else:
                out.meta["problems"][str(k)] = {"summary": f"the {name} embedding {problem}"}
    return out


def judge(job: Job, collected: Collected, truth: Any) -> Verdict:
    """token_embedding(ids) + pos_embedding(arange(T)) must equal wte[ids] + wpe[arange(T)]."""
    expected = truth.primary
    lines: list[str] = []
    errors: list[str] = []
    worst = 0.0
    for k, item in enumerate(job.inputs):
        if str(k) in collected.meta["problems"]:
            errors.append(f"On the {item.label} input: {collected.meta['problems'][str(k)]['summary']}")
            continue
        ids = item.array()
        want_tok, want_pos = expected.embeddings(ids)
        tok, pos = collected.arrays.get(f"tok/{k}"), collected.arrays.get(f"pos/{k}")
        problem = check_array(tok, "token_embedding(ids)", want_tok.shape) or check_array(
            pos, "pos_embedding(arange(T))", want_pos.shape
        )
        if problem:
            lines.append(f"On the {item.label} input, {problem}")
            continue
        total = tok.astype(np.float64) + pos
        diff = float(np.max(np.abs(total - (want_tok + want_pos))))
        worst = max(worst, diff)
        scale = max(1.0, float(np.max(np.abs(want_tok + want_pos))))
        if diff > WEIGHTS_RTOL * scale:
            parts = []
            if np.max(np.abs(tok - want_tok)) > WEIGHTS_RTOL * scale:
                parts.append("token embeddings differ from the rows of transformer.wte.weight")
            if np.max(np.abs(pos - want_pos)) > WEIGHTS_RTOL * scale:
                parts.append("position embeddings differ from the first T rows of transformer.wpe.weight")
            lines.append(f"On the {item.label} input, the {' and the '.join(parts)} (max |diff| {diff:.3g})")
    torch_use = collected.meta.get("torch")
    if torch_use:
        lines.insert(
            0,
            f"the embeddings called torch ({torch_use['first']} at {torch_use['where'] or 'an unknown place'}); use NumPy",
        )
    if errors:
        return Verdict("error", "\n".join(dedupe(errors) + lines), max_diff=worst)
    if lines:
        return Verdict("failed", "Embeddings are wrong:\n" + bullet(lines), max_diff=worst)
    return Verdict(
        "passed", f"token_embedding + pos_embedding equal wte + wpe on {len(job.inputs)} inputs.", max_diff=worst
    )
