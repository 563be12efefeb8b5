"""Tier 5: ``compare_outputs`` tells a matching model from a corrupted one and reports the true max diff.

The models handed to it are built by the harness (not by the student's
loader), so this tier does not depend on the loader. The trusted process
recomputes the true maximum difference from the logits that the same models
produced, and checks both the number and the verdict.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..common import Collected, Job, StudentCode, StudentFailure, Verdict, hf_assets, logits_tolerance
from ..contract import get_path
from ._util import bullet, check_array, dedupe, to_array

NAME = "compare"
TITLE = "compare_outputs: verdict and max difference"
FUNCTIONS = ("compare_outputs",)
USES_LOADER = False

CORRUPTION = "position 0's embedding perturbed"
GREY_ZONE = 10.0  # between tolerance and 10x tolerance, either verdict is accepted
AGREE_RTOL = 1e-3


_default_rng = np.random.default_rng  # taken at import, before any student code can patch np.random


def _corrupt(model: Any, seed: int) -> None:
    """Perturb the position-0 embedding: the largest change lands on the first position, not the last."""
    weight = get_path(model, "pos_embedding.weight")
    weight[0] += _default_rng(seed).normal(0.0, 2.0, weight.shape[-1]).astype(weight.dtype)


def collect(student: StudentCode, job: Job) -> Collected:
    """Call compare_outputs on harness-built matching and corrupted models; keep their logits."""
    compare_outputs = student.function("compare_outputs")
    checkpoint = job.checkpoints[0]
    hf_model, tokenizer, state = hf_assets(checkpoint.path)
    out = Collected(meta={"cases": []})
    cases = [(text, False) for text in job.texts] + [(job.texts[-1], True)]
    # One model serves every case, corrupted last: building one costs as much as the student's
    # whole load. Each case's logits are taken from the model as it is then, so a compare_outputs
    # that changes the model cannot make the parent's check inconsistent.
    model = None
    for k, (text, corrupted) in enumerate(cases):
        case: dict[str, Any] = {"text": text, "corrupted": corrupted}
        out.meta["cases"].append(case)
        model = model if model is not None else student.reference_loaded_model(checkpoint, state)
        if corrupted:
            _corrupt(model, job.seed)
        ids = np.asarray(tokenizer(text)["input_ids"], dtype=np.int64)
        case["ids"] = ids.tolist()
        try:
            logits = student.call("your GPTModel's forward", model, ids)
        except StudentFailure as failure:
            case["forward_error"] = failure.record
            continue
        array, problem = to_array(student, "the logits", logits)
        if array is not None:
            out.arrays[f"logits/{k}"] = array
        elif problem:
            case["forward_error"] = {"summary": f"the model's logits {problem}"}
            continue
        try:
            result = student.call("compare_outputs", compare_outputs, model, hf_model, tokenizer, text)
        except StudentFailure as failure:
            case["error"] = failure.record
            continue
        if not isinstance(result, (tuple, list)) or len(result) != 2:
            case["problem"] = f"returned a {type(result).__name__}, not a (match, max_diff) pair"
            continue
        match, max_diff = result
        try:
            case["match"] = student.call("bool(match)", bool, match)
            case["max_diff"] = student.call("float(max_diff)", float, np.asarray(max_diff).item())
        except (StudentFailure, ValueError) as exc:
            case["problem"] = f"returned ({type(match).__name__}, {type(max_diff).__name__}): expected (bool, float)"
            del exc
    return out


def _wrong_statistic(student_value: float, diff: np.ndarray) -> str | None:
    """Recognise max_diff computed as another statistic of the differences."""
    last = diff.reshape(-1, diff.shape[-2], diff.shape[-1])[:, -1]
    options = {
        "the mean absolute difference": float(np.mean(np.abs(diff))),
        "the maximum over the last position only": float(np.max(np.abs(last))),
        "the root-mean-square difference": float(np.sqrt(np.mean(diff**2))),
        "the maximum signed difference (without abs)": float(np.max(diff)),
    }
    for name, value in options.items():
        if abs(student_value - value) <= AGREE_RTOL * abs(value) + 1e-12:
            return name
    return None


def judge(job: Job, collected: Collected, truth: Any) -> Verdict:
    """For every case: max_diff equals the true one and match agrees with the tolerance."""
    expected = truth.primary
    lines: list[str] = []
    errors: list[str] = []
    raised: dict[str, list[str]] = {}  # summary -> the cases it happened in
    worst = 0.0
    for k, case in enumerate(collected.meta["cases"]):
        model = f"a corrupted model ({CORRUPTION})" if case["corrupted"] else "a matching model"
        head = f"On {model} and the text {case['text']!r}"
        if "forward_error" in case:
            errors.append(f"{head}, the model's forward raised, so compare_outputs could not be checked: "
                          f"{case['forward_error']['summary']}")  # fmt: skip
            continue
        if "error" in case:
            raised.setdefault(case["error"]["summary"], []).append(f"{model} and {case['text']!r}")
            continue
        if "problem" in case:
            lines.append(f"{head}, compare_outputs {case['problem']}")
            continue
        ids = np.asarray(case["ids"], dtype=np.int64)
        want = expected.logits(ids)
        got = collected.arrays.get(f"logits/{k}")
        if isinstance(got, np.ndarray) and got.shape == (1, *want.shape):
            got = got[0]
        problem = check_array(got, "the model's logits", want.shape)
        if problem:
            errors.append(f"{head}: {problem}")
            continue
        diff = got.astype(np.float64) - want
        true = float(np.max(np.abs(diff)))
        tol = logits_tolerance(want)
        if case["corrupted"] and true <= GREY_ZONE * tol:
            errors.append(f"{head}: the corrupted model's logits still match HuggingFace's (max |diff| {true:.3g}), so "
                          "compare_outputs could not be checked; does your GPTModel read pos_embedding.weight?")  # fmt: skip
            continue
        worst = max(worst, abs(case["max_diff"] - true))
        said = f"compare_outputs returned ({case['match']}, {case['max_diff']:.3g})"
        if not abs(case["max_diff"] - true) <= AGREE_RTOL * true + tol:
            stat = _wrong_statistic(case["max_diff"], diff)
            lines.append(f"{head}, {said}, but the maximum absolute difference over all logits is {true:.3g}"
                         + (f"; your number is {stat}" if stat else ""))  # fmt: skip
        should = true <= tol
        if case["match"] != should and not (tol < true <= GREY_ZONE * tol):
            verdict = "match" if should else "do not match"
            lines.append(f"{head}, {said}, but the logits {verdict} (max |diff| {true:.3g}, tolerance {tol:.2g}): "
                         "match must be max_diff <= tolerance")  # fmt: skip
    for summary, cases in raised.items():
        errors.append(f"{summary} (on {len(cases)} of {len(collected.meta['cases'])} calls)" if len(cases) > 1
                      else f"On {cases[0]}: {summary}")  # fmt: skip
    if errors:
        return Verdict("error", "\n".join(dedupe(errors) + ([bullet(lines)] if lines else [])), max_diff=worst)
    if lines:
        return Verdict("failed", "compare_outputs is wrong:\n" + bullet(lines), max_diff=worst)
    n = len(collected.meta["cases"])
    return Verdict("passed", f"compare_outputs gave the true max difference and the right verdict in {n} cases "
                             "(matching and corrupted models).", max_diff=worst)  # fmt: skip
