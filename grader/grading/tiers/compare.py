"""Tier 5: ``compare_outputs`` reports the true max difference and the right verdict.

It runs on models the grader builds and fills itself (so a broken loader costs nothing
here): one that matches GPT-2, a near miss (off by about 1e-2: any sensible tolerance
rejects it, ``max_diff < 1.0`` accepts it) and a far miss, in an order the grader draws.
The number is judged exactly; the verdict on cases far from the boundary, on both sides.
When the signature takes ``atol``, a generous one must turn the near miss into a match.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lab04_checks.contract import logits_tolerance

from ... import defaults
from ...sandbox import protocol
from ...sandbox.protocol import Desc
from .. import harness, loading, oracle
from ..inputs import Inputs
from ..outcome import Deadline, Failure, Stop, failure_of
from ..session import Session
from ..truth import Expected, digest
from .base import Verdict, conclude, missing_function

NAME = "compare"
TITLE = "compare_outputs: the true max difference and the right verdict"
AGREE_RTOL = 1e-3  # the reported max difference must agree with the true one this closely (plus float32 noise)
NOISE = 5  # float32 noise of two forward passes, in tolerances
END_OF_TEXT = 50256
COURSE_ATOL = 1e-4  # the course's default atol
CLOSE_MISS = 3e-4  # rejected by atol=1e-4, accepted by a hard-wired looser tolerance such as 1e-3


@dataclass
class Case:
    label: str
    weights: dict[str, np.ndarray]
    text: str
    atol: float | None = None

    def should_match(self, true: float, noise: float) -> bool | None:
        """The verdict the case demands; None when it is too close to the tolerance to judge."""
        if self.atol is not None:
            return true <= self.atol if abs(true - self.atol) > noise else None
        if true <= NOISE * noise:
            return True
        return False if true >= 0.5 * defaults.NEAR_MISS else None


@dataclass(frozen=True)
class Known:
    """What the grader knows of a case before any student runs: the same for every student of a run."""

    ours: np.ndarray  # the case's logits, float64
    theirs: np.ndarray  # GPT-2's
    true: float  # max |ours - theirs|
    noise: float  # float32 noise at these logits
    digests: dict[str, str]  # of the case's weights, to see that a student changed the model


def _known(case: Case, expected: Expected) -> Known:
    ids = np.asarray([expected.encode(case.text)], dtype=np.int64)
    ours, theirs = oracle.forward(case.weights, ids, expected.shape.num_heads), expected.logits(ids)
    return Known(
        ours,
        theirs,
        float(np.max(np.abs(ours - theirs))),
        logits_tolerance(float(np.max(np.abs(theirs)))),
        {path: digest(array) for path, array in case.weights.items()},
    )


def near_miss(weights: dict[str, np.ndarray], rng: np.random.Generator, size: float) -> dict[str, np.ndarray]:
    """The model with ln_f.beta moved so that every logit shifts by at most ``size`` (exactly, at some token)."""
    wte = weights["token_embedding.weight"].astype(np.float64)
    direction = rng.standard_normal(wte.shape[1])
    shift = direction * (size / float(np.max(np.abs(wte @ direction))))
    out = dict(weights)
    out["ln_f.beta"] = (weights["ln_f.beta"] + shift).astype(np.float32)
    return out


def far_miss(weights: dict[str, np.ndarray], rng: np.random.Generator) -> dict[str, np.ndarray]:
    """The model with the first block's attention output projection scrambled."""
    out = dict(weights)
    w = weights["blocks.0.attn.W_O"]
    out["blocks.0.attn.W_O"] = (w + rng.standard_normal(w.shape).astype(np.float32) * float(np.std(w))).astype(
        np.float32
    )
    return out


def _number(value: Desc, reply: protocol.Reply) -> float | None:
    if value.number is not None:
        return value.number
    inner = value.inner if value.kind == "tensor" else value
    if inner is not None and inner.kind == "array" and inner.array is not None and int(np.prod(inner.shape)) == 1:
        array = reply.array(inner.array, "max_diff")
        if array.dtype.kind in "fiu":
            return float(array.reshape(-1)[0])
    return None


def _verdict_of(value: Desc, reply: protocol.Reply) -> bool | None:
    if value.kind == "bool":
        return bool(value.value)
    inner = value.inner if value.kind == "tensor" else value
    if inner is not None and inner.kind == "array" and inner.dtype == "|b1" and int(np.prod(inner.shape)) == 1:
        return bool(reply.array(inner.array, "match").reshape(-1)[0])
    return None


def statistics(ours: np.ndarray, theirs: np.ndarray) -> dict[str, float]:
    """Numbers a compare_outputs might return instead of the max absolute difference, and their names."""
    diff = ours - theirs
    probs = oracle.softmax(ours) - oracle.softmax(theirs)
    return {
        "the mean absolute difference": float(np.mean(np.abs(diff))),
        "the maximum over the last position only": float(np.max(np.abs(diff[..., -1, :]))),
        "the maximum over the first position only": float(np.max(np.abs(diff[..., 0, :]))),
        "a signed maximum (max of ours - theirs, no abs)": float(np.max(diff)),
        "a signed maximum (max of theirs - ours, no abs)": float(np.max(-diff)),
        "the sum of absolute differences": float(np.sum(np.abs(diff))),
        "the Euclidean norm of the difference": float(np.linalg.norm(diff)),
        "a difference of softmax probabilities, not of logits": float(np.max(np.abs(probs))),
    }


def run(session: Session, deadline: Deadline) -> Verdict:
    imported = session.torch.ready(deadline)
    if not imported.has("compare_outputs"):
        return missing_function(session, "compare_outputs")
    signature = imported.functions["compare_outputs"]
    default_atol = signature.default("atol") if signature else None
    with_atol = signature is not None and signature.accepts("atol")
    cases, order = cases_of(session.expected("function"), session.inputs, with_atol)
    hf_model, tokenizer = harness.ready(session, deadline)
    lines: list[str] = []
    raised: list[str] = []
    facts = {"cases": [], "default_atol": default_atol, "harness_class": harness.model_class(session, deadline)}
    mistakes: list[tuple[str, str]] = []
    for index in order:  # in an order the student cannot predict
        line, mistake = _judge_case(session, *cases[index], hf_model, tokenizer, deadline, facts, raised)
        lines += [line] if line else []
        mistakes += [mistake] if mistake else []
    if isinstance(default_atol, (int, float)) and default_atol >= defaults.NEAR_MISS:
        lines.append(
            f"the default atol={default_atol:g} is too loose: a model whose logits are off by "
            f"{defaults.NEAR_MISS:g} is not GPT-2; float32 noise is about 1e-5 of the largest logit"
        )
    return conclude(
        raised,
        lines,
        "compare_outputs is wrong",
        lambda: (
            f"compare_outputs gave the true max difference and the right verdict in {len(cases)} "
            "cases (a matching model, a near miss and a far miss)."
        ),
        facts=facts,
        mistakes=mistakes,
        causes={f"compare {k}": t for k, t in mistakes},
    )


def warm(expected: Expected, inputs: Inputs) -> None:
    """Make both sets of cases ahead of the tier (with an ``atol`` parameter and without): a single run's
    truth thread has the time, the tier runs on the torch lane's critical path."""
    for with_atol in (False, True):
        cases_of(expected, inputs, with_atol)


def cases_of(expected: Expected, inputs: Inputs, with_atol: bool) -> tuple[list[tuple[Case, Known]], list[int]]:
    """This run's cases on the function checkpoint and the order they are asked in, made once."""
    key = ("compare cases", inputs.rng_seed, tuple(inputs.texts), with_atol)
    return expected.made(key, lambda: _cases(expected, inputs, with_atol))


def _cases(expected: Expected, inputs: Inputs, with_atol: bool) -> tuple[list[tuple[Case, Known]], list[int]]:
    """A matching model, a near and a far miss; with an ``atol`` parameter, two cases that set it; the
    order they are asked in. Each with its true difference: none of it depends on the student."""
    truth = expected.attributes
    rng = inputs.rng(5)
    texts = inputs.texts
    near = near_miss(truth, rng, defaults.NEAR_MISS)
    cases = [
        Case("a model that matches GPT-2", truth, texts[0]),
        Case(f"a near miss (logits off by {defaults.NEAR_MISS:g})", near, texts[1]),
        Case("a far miss (a scrambled attention projection)", far_miss(truth, rng), texts[2]),
    ]
    if with_atol:
        close = near_miss(truth, rng, CLOSE_MISS)
        cases += [
            Case("the near miss with atol=0.5", near, texts[0], atol=0.5),
            Case(
                f"a close miss (logits off by {CLOSE_MISS:g}) with atol={COURSE_ATOL:g}", close, texts[1], COURSE_ATOL
            ),
        ]
    return [(case, _known(case, expected)) for case in cases], [int(i) for i in rng.permutation(len(cases))]


def _judge_case(
    session: Session,
    case: Case,
    known: Known,
    hf_model: int,
    tokenizer: int,
    deadline: Deadline,
    facts: dict,
    raised: list[str],
) -> tuple[str, tuple[str, str] | None]:
    """One case: the student's (match, max_diff) against the true difference; a problem line and a mistake."""
    expected = session.expected("function")
    ours, theirs, true, noise = known.ours, known.theirs, known.true, known.noise
    handle = harness.model(session, case.weights, deadline)
    reply = _ask(session, case, [handle, hf_model, tokenizer], deadline)
    head = f"on {case.label} ({case.text!r})"
    if not reply.ok:
        failure = failure_of(reply, "compare_outputs", session.limits)
        if failure.kind in ("timeout", "crashed"):
            raise Stop(failure)
        raised.append(f"On {case.label}: {failure.text}")
        return "", None
    result = protocol.desc(reply.fields.get("result"), "what compare_outputs returned")
    if result.kind not in ("tuple", "list") or len(result.items) != 2:
        return f"{head}, compare_outputs returned {result.describe()}, not (match, max_diff)", None
    match, number = _verdict_of(result.items[0], reply), _number(result.items[1], reply)
    facts["cases"].append({"case": case.label, "true_max_diff": true, "match": match, "max_diff": number})
    if match is None or number is None:
        return (
            f"{head}, compare_outputs returned ({result.items[0].describe()}, {result.items[1].describe()}): "
            "it must return (a bool, a float)"
        ), None
    said = f"{head}, compare_outputs returned ({match}, {number:.3g})"
    changed = _changed(session, handle, known.digests, deadline)
    if changed:
        return (
            f"{said}, and it changed the model it was asked to judge ({changed}): it must only run "
            "both models and compare, not load or copy weights"
        ), ("changed_model", "compare_outputs changes the model it judges")
    if not abs(number - true) <= AGREE_RTOL * true + NOISE * noise:
        why = _which_statistic(number, ours, theirs, case, expected)
        text = f"{said}, but the maximum absolute difference over all logits is {true:.3g}"
        if why:
            return f"{text}; your number is {why}", ("wrong_statistic", f"compare_outputs returns {why}")
        return text, ("wrong_number", "compare_outputs reports a wrong number")
    should = case.should_match(true, noise)
    if should is None or match == should:
        return "", None
    return _wrong_match(said, case, should, true)


def _ask(session: Session, case: Case, handles: list[int], deadline: Deadline) -> protocol.Reply:
    """compare_outputs(model, hf_model, tokenizer, text[, atol=...]) in the torch process."""
    args = [{"h": h} for h in handles] + [{"v": case.text}]
    kwargs = {"atol": {"v": case.atol}} if case.atol is not None else {}
    request = {"fn": "compare_outputs", "args": args, "kwargs": kwargs, "label": "compare_outputs"}
    return session.torch.try_ask("call", request, deadline, "compare_outputs", budget=1 << 16)


def _wrong_match(said: str, case: Case, should: bool, true: float) -> tuple[str, tuple[str, str]]:
    """The right number with the wrong verdict: which way the tolerance is off."""
    if should and case.atol is None:
        return (f"{said}, but the logits match (max |diff| {true:.3g}, float32 noise): your tolerance is too strict"), (
            "too_strict",
            "compare_outputs' tolerance is too strict",
        )
    if should:
        return f"{said}: with atol={case.atol:g} it must say True (it must use its atol argument)", (
            "ignores_atol",
            "compare_outputs ignores its atol",
        )
    if case.atol is not None:
        return (
            f"{said}, but with atol={case.atol:g} a model off by {true:.3g} must not match: your "
            "tolerance is too loose (does it use its atol argument?)"
        ), ("too_loose", "compare_outputs' tolerance is too loose")
    return (
        f"{said}, but a model off by {true:.3g} is not GPT-2: your tolerance is too loose "
        "(match must be max_diff <= atol, with an atol near float32 noise such as 1e-4)"
    ), ("too_loose", "compare_outputs' tolerance is too loose")


def _changed(session: Session, handle: int, digests: dict[str, str], deadline: Deadline) -> str:
    """Which attributes of a model the grader built differ after the student's function ran."""
    paths = list(digests)
    entries, _ = loading.read(session.torch, handle, paths, deadline, "reading a model after your function")
    changed = [p for p in paths if entries[p].digest != digests[p]]
    return ", ".join(changed[:3]) + (f" and {len(changed) - 3} more" if len(changed) > 3 else "") if changed else ""


def _which_statistic(number: float, ours: np.ndarray, theirs: np.ndarray, case: Case, expected) -> str:
    """What the student's number is instead, when it is one of the usual wrong statistics."""
    for name, value in statistics(ours, theirs).items():
        if abs(number - value) <= AGREE_RTOL * abs(value) + 1e-7:
            return name
    ids = expected.encode(case.text)
    prefixed = np.asarray([[END_OF_TEXT, *ids]], dtype=np.int64)
    with_bos = float(
        np.max(np.abs(oracle.forward(case.weights, prefixed, expected.shape.num_heads) - expected.logits(prefixed)))
    )
    if abs(number - with_bos) <= AGREE_RTOL * with_bos + 1e-6:
        return (
            "the maximum difference for a different token sequence (<|endoftext|> prepended): you compared "
            "different token sequences; tokenise the text as given, with no added tokens"
        )
    return ""


__all__ = ["NAME", "TITLE", "Failure", "run"]
