"""The public checkpoint's expected values, computed on the grader's trusted side and stored in the template as data.

The public tests judge a student's arrays by comparing digests with these and their
logits with a stored sample, so the template carries no answer key: no mapping, no
code that derives an expected value from HuggingFace's weights.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np

from lab04_checks.checkpoints import PUBLIC_TINY, ensure_checkpoint
from lab04_checks.contract import LOGITS_RTOL, attribute_paths
from lab04_checks.published import FORMAT

from ..grading.checkpoints import ModelSource, resolve_model
from ..grading.tiers.generate import NEW_TOKENS, accepted, greedy
from ..grading.truth import Expected, digest

# The public inputs. The grader draws its own token ids afresh for every run.
ONE_TOKEN = "Numbers"
LONG_TEXT = "Each weight of a small GPT-2 is copied, not computed; one wrong split shows at once."
BATCH_TEXTS = ("Tied heads share one array.", "Layer norms scale, then shift.")
BATCH_TOKENS = 7
COMPARE_TEXTS = (
    "Ready?",
    'Brackets [like these], quotes "like those" & symbols: #, %, é, 100%!',
    "A tied head reuses the token embedding, so there is nothing else to load.",
    ONE_TOKEN,
)
PROMPT = "Our little model says"
SAMPLE = 256  # vocabulary entries kept per input, besides each position's top TOP
TOP = 5
DIGITS = 10  # significant digits of a stored logit: far below the tolerance of 1e-5 of the largest
SAMPLE_SEED = 4004


def public_source() -> ModelSource:
    """The public checkpoint, built locally (offline, deterministic), as the grader reads a checkpoint."""
    return resolve_model(str(ensure_checkpoint(PUBLIC_TINY)))


def _inputs(expected: Expected) -> list[tuple[str, str, np.ndarray]]:
    long_ids = expected.encode(LONG_TEXT)
    rows = [expected.encode(text)[:BATCH_TOKENS] for text in BATCH_TEXTS]
    return [
        ("1-token", ONE_TOKEN, np.asarray([expected.encode(ONE_TOKEN)], dtype=np.int64)),
        (f"{len(long_ids)}-token", LONG_TEXT, np.asarray([long_ids], dtype=np.int64)),
        (f"batch {len(rows)}x{BATCH_TOKENS}", " | ".join(BATCH_TEXTS), np.asarray(rows, dtype=np.int64)),
    ]


def _round(x: float) -> float:
    return float(f"{x:.{DIGITS}g}")


def _logits_entry(expected: Expected, label: str, text: str, ids: np.ndarray, sample: np.ndarray) -> dict[str, Any]:
    logits = expected.logits(ids)  # float64 [B, T, V]
    top = np.argsort(logits, axis=-1)[..., -TOP:].reshape(-1)
    columns = np.union1d(sample, top)
    _, trace = expected.trace(ids)
    return {
        "label": label,
        "text": text,
        "ids": ids.tolist(),
        "columns": columns.tolist(),
        "values": [[[_round(v) for v in position] for position in row] for row in logits[..., columns].tolist()],
        "max_abs": _round(float(np.max(np.abs(logits)))),
        "activation_scale": _round(max(1.0, *(float(np.max(np.abs(a))) for _, a in trace))),
    }


def compute() -> dict[str, Any]:
    """Everything the public tests compare against, for the public checkpoint."""
    source = public_source()
    expected = Expected(source)
    attributes = {}
    for path in attribute_paths(source.shape.num_layers):
        array = expected.attributes[path]
        entry: dict[str, Any] = {"shape": list(array.shape), "digest": expected.digests[path]}
        if array.ndim == 2:
            entry["transpose"] = digest(array.T)
        attributes[path] = entry
    vocab = source.shape.vocab_size
    sample = np.sort(np.random.default_rng(SAMPLE_SEED).choice(vocab, SAMPLE, replace=False))
    prompt_ids = expected.encode(PROMPT)
    new, clear = greedy(expected, prompt_ids, NEW_TOKENS)
    if not clear:
        raise RuntimeError(f"the public prompt {PROMPT!r} has a near tie in its greedy path: choose another")
    generate = {
        "prompt": PROMPT,
        "max_length": NEW_TOKENS,
        "expected": expected.decode(prompt_ids + new),
        "accepted": sorted(accepted(expected, PROMPT, prompt_ids, new)),
    }
    return {
        "about": "Expected values for the public checkpoint, written by `grade template build`: do not edit.",
        "format": FORMAT,
        "checkpoint": {**source.info(), "source": f"lab04_checks.checkpoints.PUBLIC_TINY (seed {PUBLIC_TINY.seed})"},
        "logits_rtol": LOGITS_RTOL,
        "attributes": attributes,
        "logits": [_logits_entry(expected, *item, sample) for item in _inputs(expected)],
        "compare_texts": list(COMPARE_TEXTS),
        "generate": generate,
    }


def dumps(data: dict[str, Any]) -> str:
    """JSON with one line per attribute and per position's logits, so that a change shows in a diff."""
    return _dump(data, 0) + "\n"


def _flat(value: Any) -> bool:
    """Scalars, lists of scalars, and dicts of those: what fits on one line."""

    def scalars(items: Any) -> bool:
        return all(not isinstance(v, (list, dict)) for v in items)

    if isinstance(value, list):
        return scalars(value)
    if isinstance(value, dict):
        return all(not isinstance(v, dict) and (not isinstance(v, list) or scalars(v)) for v in value.values())
    return True


def _dump(value: Any, indent: int) -> str:
    if _flat(value):
        return json.dumps(value, ensure_ascii=False, separators=(", ", ": "))
    pad, end = " " * (indent + 1), " " * indent
    if isinstance(value, dict):
        items = [f"{pad}{json.dumps(k)}: {_dump(v, indent + 1)}" for k, v in value.items()]
        return "{\n" + ",\n".join(items) + f"\n{end}}}"
    return "[\n" + ",\n".join(pad + _dump(v, indent + 1) for v in value) + f"\n{end}]"


def same(a: Any, b: Any, rel: float = 1e-8) -> bool:
    """Equal data, floats within ``rel`` (float64 BLAS differs in the last bits between machines)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k], rel) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y, rel) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and isinstance(b, (int, float)) and not isinstance(b, bool):
        return math.isclose(a, b, rel_tol=rel, abs_tol=1e-12)
    return type(a) is type(b) and a == b
