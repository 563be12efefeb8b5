"""Tier 8 (bonus): greedy ``generate_text`` continues the prompt as GPT-2 does, in the torch-free process.

``generate_text(model, tokenizer, prompt, max_length=N, temperature=0.0)`` (a tiny
temperature if 0 raises) on the smaller loaded model, with a GPT-2 tokenizer that needs no
transformers. ``max_length`` may be read as new tokens or as the total length; stopping
at ``<|endoftext|>`` is fine. The grader picks a prompt whose greedy path has no near ties.
"""

from __future__ import annotations

import numpy as np

from ...sandbox import protocol
from .. import loading
from ..outcome import Deadline, Stop, failure_of
from ..session import Session
from ..truth import Expected
from .base import Verdict, missing_function

NAME = "generate"
TITLE = "generate_text (bonus): greedy continuation equals GPT-2's"
NEW_TOKENS = 8
END_OF_TEXT = 50256
TIE_RTOL = 1e-3  # a greedy step whose top two logits are closer than this (of the scale) is a near tie


def greedy(expected: Expected, prompt_ids: list[int], steps: int) -> tuple[list[int], bool]:
    """GPT-2's greedy continuation, and whether every step was clear of a near tie."""
    ids = list(prompt_ids)
    clear = True
    for _ in range(steps):
        context = ids[-expected.shape.max_seq_len :]
        logits = expected.logits(np.asarray([context], dtype=np.int64))[0, -1]
        top = np.argsort(logits)[-2:]
        if logits[top[1]] - logits[top[0]] < TIE_RTOL * max(1.0, float(np.max(np.abs(logits)))):
            clear = False
        ids.append(int(top[1]))
    return ids[len(prompt_ids) :], clear


def accepted(expected: Expected, prompt: str, prompt_ids: list[int], new: list[int]) -> set[str]:
    """The texts a correct generate_text may return: N new tokens, N in total, or up to <|endoftext|>."""
    counts = {NEW_TOKENS, max(0, NEW_TOKENS - len(prompt_ids))}
    if END_OF_TEXT in new:
        counts.add(new.index(END_OF_TEXT) + 1)
        counts.add(new.index(END_OF_TEXT))
    return {expected.decode(prompt_ids + new[:k]) for k in counts} | {prompt + expected.decode(new[:k]) for k in counts}


def _smallest_loaded(session: Session, deadline: Deadline) -> str:
    """Generation tests the function, not the scale: the smallest checkpoint the loader handled."""
    loads = {n: loading.finished(session, n, deadline) for n in session.load_order()}
    loaded = [n for n, load in loads.items() if load is not None and load.failure is None and load.blob >= 0]
    pool = loaded or [session.primary_name]
    return min(pool, key=lambda n: session.checkpoints[n].shape.parameters)


def run(session: Session, deadline: Deadline) -> Verdict:
    name = _smallest_loaded(session, deadline)
    handle = session.adopted_model(name, deadline)
    imported = session.numpy.ready(deadline)
    if not imported.has("generate_text"):
        return missing_function(session, "generate_text")
    expected = session.checkpoints[name]
    prompt, prompt_ids, new = "", [], []
    for prompt in session.inputs.prompts:
        prompt_ids = expected.encode(prompt)
        new, clear = greedy(expected, prompt_ids, NEW_TOKENS)
        if clear:
            break
    reply = _generate(session, name, handle, prompt, deadline)
    result = protocol.desc(reply.fields.get("result"), "the text")
    facts = {"prompt": prompt, "expected": expected.decode(prompt_ids + new)}
    if result.kind != "str":
        return Verdict("failed", f"generate_text returned {result.describe()}, not a string", facts=facts)
    text = result.value
    facts["got"] = text
    if text in accepted(expected, prompt, prompt_ids, new):
        return Verdict(
            "passed",
            f"generate_text({prompt!r}, max_length={NEW_TOKENS}, temperature=0) gives GPT-2's greedy continuation.",
            facts=facts,
        )
    want = expected.decode(prompt_ids + new)
    if not text.startswith(prompt):
        why = "it does not start with the prompt (return the prompt followed by the new text)"
    else:
        why = "after the prompt it differs from GPT-2's greedy choice (argmax of the last position's logits)"
    return Verdict(
        "failed",
        f"generate_text({prompt!r}, max_length={NEW_TOKENS}, temperature=0) returned "
        f"{text[:200]!r}; GPT-2 greedily gives {want[:200]!r}: {why}.",
        facts=facts,
        mistakes=[("generate", "generate_text is not greedy GPT-2")],
    )


def _generate(session: Session, name: str, handle: int, prompt: str, deadline: Deadline) -> protocol.Reply:
    """generate_text(model, tokenizer, prompt, max_length, temperature=0), or 1e-6 where 0 raises."""
    agent = session.numpy
    expected = session.checkpoints[name]
    reply = agent.ask(
        "tokenizer",
        {"path": agent.checkpoint_path(name), "preloaded": str(expected.source.path)},
        deadline,
        "making a tokenizer for generate_text",
    )
    tokenizer = protocol.integer(reply.fields.get("tokenizer"), "the tokenizer", 1)
    label = "generate_text"
    first = None
    for temperature in (0.0, 1e-6):  # a sampler that divides by the temperature may refuse 0
        request = {
            "fn": label,
            "args": [{"h": handle}, {"h": tokenizer}, {"v": prompt}],
            "kwargs": {"max_length": {"v": NEW_TOKENS}, "temperature": {"v": temperature}},
            "label": label,
        }
        reply = agent.try_ask("call", request, deadline, label, budget=1 << 16)
        if reply.ok or reply.status != "raised":
            break
        first = first or reply
    if not reply.ok:
        raise Stop(failure_of(first or reply, label, session.limits))
    return reply
