"""Tier 7: ``analyze_weight_differences`` is zero on a correct load and names a corrupted weight.

On a model the grader fills with GPT-2's weights every ``max_diff`` must be zero (loading
copies numbers); on one where the grader perturbed one weight (drawn afresh), the large
entries must all name that weight (by its attribute path, its HuggingFace name, or the
module holding it) and report its true maximum difference.
"""

from __future__ import annotations

import re

import numpy as np

from lab04_checks.contract import BLOCK_ATTRIBUTES

from .. import harness
from ..outcome import Deadline
from ..session import Session
from .base import Verdict, conclude, lacks, returned_dict

NAME = "weights"
TITLE = "analyze_weight_differences: zero when loaded, the corrupted weight named"
ZERO = 1e-6  # of the weight's scale: loading copies numbers
# Words that name each part of a block, in the spellings students use (attribute and HuggingFace names).
ALIASES = {
    "ln1": ("ln1", "ln_1"),
    "ln2": ("ln2", "ln_2"),
    "ffn": ("ffn", "mlp"),
    "attn": ("attn", "attention"),
    "W_Q": ("w_q", "wq", "q_proj", "query", "c_attn", "qkv"),
    "W_K": ("w_k", "wk", "k_proj", "key", "c_attn", "qkv"),
    "W_V": ("w_v", "wv", "v_proj", "value", "c_attn", "qkv"),
    "W_O": ("w_o", "wo", "o_proj", "c_proj", "out"),
    "b_Q": ("b_q", "bq", "c_attn", "qkv"),
    "b_K": ("b_k", "bk", "c_attn", "qkv"),
    "b_V": ("b_v", "bv", "c_attn", "qkv"),
    "b_O": ("b_o", "bo", "c_proj", "out"),
    "W1": ("w1", "c_fc", "fc1", "fc"),
    "b1": ("b1", "c_fc", "fc1", "fc"),
    "W2": ("w2", "c_proj", "fc2", "proj"),
    "b2": ("b2", "c_proj", "fc2", "proj"),
    "gamma": ("gamma", "weight", "scale", "g"),
    "beta": ("beta", "bias", "shift", "b"),
}
OTHER_PARTS = {
    "ln1": ("ln2", "ln_2", "attn", "mlp", "ffn"),
    "ln2": ("ln1", "ln_1", "attn", "mlp", "ffn"),
    "attn": ("ln1", "ln_1", "ln2", "ln_2", "mlp", "ffn"),
    "ffn": ("ln1", "ln_1", "ln2", "ln_2", "attn"),
}


def names_weight(key: str, path: str) -> bool:
    """Does ``key`` (a student's name for a weight or a group of weights) cover attribute ``path``?"""
    low = key.lower()
    tokens = set(re.split(r"[^a-z0-9_]+|(?<=[a-z])_(?=\d)|(?<=\d)_", low)) | set(re.split(r"[^a-z0-9]+", low))
    numbers = [int(n) for n in re.findall(r"\d+", low)]
    _, layer, part, leaf = path.split(".")
    if not numbers or numbers[0] != int(layer):
        return False
    if any(other in tokens for other in OTHER_PARTS[part]):
        return False
    names_part = any(a in tokens for a in ALIASES[part]) or any(a in low for a in ALIASES[part] if len(a) > 2)
    leaves = ALIASES[leaf]
    names_leaf = any(a in tokens for a in leaves) or any(a in low for a in leaves if len(a) > 2)
    if names_leaf:
        return True
    other_leaves = {
        alias
        for other, aliases in ALIASES.items()
        if other not in (leaf, part, "ln1", "ln2", "ffn", "attn")
        for alias in aliases
        if alias not in leaves
    }
    return names_part and not any(a in tokens for a in other_leaves)  # a whole module or block


def _call(session: Session, handle: int, hf: int, deadline: Deadline) -> dict[str, tuple[float, float | None]] | str:
    label = "analyze_weight_differences"
    reply = session.torch.try_ask(
        "call", {"fn": label, "args": [{"h": handle}, {"h": hf}], "label": label}, deadline, label, budget=1 << 20
    )
    result = returned_dict(session, reply, label, "weight -> statistics")
    if isinstance(result, str):
        return result
    out = {}
    for key, value in result.items:
        if key.kind != "str":
            return f"analyze_weight_differences has a key that is {key.describe()}, not a weight's name"
        if value.kind != "dict":
            return f"analyze_weight_differences gave {value.describe()} for {key.value!r}, not {{'max_diff': ...}}"
        stats = {k.value: v.number for k, v in value.items if k.kind == "str"}
        if stats.get("max_diff") is None:
            return f"analyze_weight_differences gave no max_diff number for {key.value!r}"
        out[key.value] = (stats["max_diff"], stats.get("mean_diff"))
    return out


def run(session: Session, deadline: Deadline) -> Verdict:
    if (absent := lacks(session, deadline, "analyze_weight_differences")) is not None:
        return absent
    expected = session.expected("function")
    rng = session.inputs.rng(7)
    layer = int(rng.integers(0, expected.shape.num_layers))
    path = f"blocks.{layer}.{BLOCK_ATTRIBUTES[int(rng.integers(0, len(BLOCK_ATTRIBUTES)))]}"
    original = expected.attributes[path]
    noise = rng.standard_normal(original.shape).astype(np.float32) * max(0.05, 0.5 * float(np.std(original)))
    broken = dict(expected.attributes)
    broken[path] = (original + noise).astype(np.float32)
    true = float(np.max(np.abs(broken[path].astype(np.float64) - original)))
    hf, _ = harness.ready(session, deadline)
    correct = _call(session, harness.model(session, expected.attributes, deadline), hf, deadline)
    if isinstance(correct, str):
        return Verdict("failed", correct)
    wrong = _call(session, harness.model(session, broken, deadline), hf, deadline)
    if isinstance(wrong, str):
        return Verdict("failed", wrong)
    lines = []
    if not correct:
        lines.append("analyze_weight_differences returned an empty dict for a loaded model")
    nonzero = [k for k, (m, _) in correct.items() if not abs(m) <= ZERO * max(1.0, float(np.max(np.abs(original))))]
    if nonzero:
        lines.append(
            f"on a model holding exactly GPT-2's weights it reports differences for {', '.join(nonzero[:3])} "
            f"({', '.join(f'{correct[k][0]:.3g}' for k in nonzero[:3])}); they must be 0"
        )
    large = [k for k, (m, _) in wrong.items() if m > 1e-3 * true]
    if not large:
        lines.append(f"the grader perturbed {path} (max |diff| {true:.3g}) and no entry shows it")
    else:
        strangers = [k for k in large if not names_weight(k, path)]
        if strangers:
            lines.append(f"the grader perturbed only {path}, but the result also reports {', '.join(strangers[:3])}")
        best = max(wrong[k][0] for k in large)
        if not abs(best - true) <= 1e-3 * true + 1e-6:
            lines.append(
                f"the grader perturbed {path} by at most {true:.4g}; the largest max_diff reported is {best:.4g}"
            )
        for key in large:
            mean = wrong[key][1]
            if mean is not None and not (0 <= mean <= wrong[key][0] + 1e-12):
                lines.append(f"{key}: mean_diff {mean:.3g} is not between 0 and max_diff")
                break
    facts = {"perturbed": path, "true_max_diff": true, "keys": list(wrong)[:60]}
    return conclude(
        [],
        lines,
        "analyze_weight_differences is wrong",
        lambda: f"analyze_weight_differences gives 0 on a correct model and names {path} when the grader perturbs it.",
        facts=facts,
        mistakes=[("weights", "analyze_weight_differences misreports a weight")] if lines else [],
    )
