"""Models the grader builds and fills itself, for the tiers that test functions (compare, intermediate, weights).

Each is a copy of one base model filled with GPT-2's weights (the student's class when, given the right
weights, it computes GPT-2 to float32 noise; else the reference decoder's), with the arrays that differ
copied into it, so ties survive. HuggingFace's model and tokenizer come from the torch fork server.
"""

from __future__ import annotations

import time

import numpy as np

from ..sandbox import protocol
from ..sandbox.protocol import ProtocolError
from .outcome import Deadline, Failure, Stop, failure_of
from .session import TIE, Session

VERIFY_SECONDS = 20.0  # for checking that the student's GPTModel computes GPT-2 (a tiny model: well under 1 s)


def ready(session: Session, deadline: Deadline) -> tuple[int, int]:
    """The harness's model class chosen, then handles of HuggingFace's model and tokenizer.

    The class comes first: checking the student's may restart the torch process, which
    would invalidate handles taken before it."""
    model_class(session, deadline)
    return hf_objects(session, deadline)


def hf_objects(session: Session, deadline: Deadline) -> tuple[int, int]:
    """HuggingFace's model and tokenizer of the function checkpoint, in the torch process."""
    agent = session.torch
    agent.ready(deadline)
    key = ("hf", agent.process.starts)
    if key not in session.cache:
        function = session.roles["function"]
        reply = agent.ask(
            "hf",
            {"path": agent.checkpoint_path(function), "preloaded": str(session.checkpoints[function].source.path)},
            deadline,
            "loading HuggingFace's model for your functions",
        )
        session.cache[key] = (
            protocol.integer(reply.fields.get("model"), "the model", 1),
            protocol.integer(reply.fields.get("tokenizer"), "the tokenizer", 1),
        )
    return session.cache[key]


def model(session: Session, weights: dict[str, np.ndarray], deadline: Deadline) -> int:
    """A model of the function checkpoint's size holding ``weights``: the student's class when it computes
    GPT-2 given the right weights, else the reference's. Each is a fresh copy of one filled base model,
    with the arrays that differ from GPT-2's copied into it (so ties survive)."""
    agent = session.torch
    base = _base(session, deadline)
    reply = agent.try_ask("clone", {"h": base}, deadline, "copying a model the grader built")
    handle = protocol.desc(reply.fields.get("result"), "the copy").handle if reply.ok else None
    truth = session.checkpoints[session.roles["function"]].attributes
    if handle is None:  # a class that cannot be deep-copied: build another one
        if reply.status in ("timeout", "crashed"):
            raise Stop(failure_of(reply, "copying a model", session.limits))
        handle = session.new_model(agent, session.roles["function"], deadline)
        _fill(session, handle, weights, deadline)
        return handle
    changed = [p for p in weights if weights[p] is not truth.get(p)]
    if changed:
        _fill(session, handle, {p: weights[p] for p in changed}, deadline)
    return handle


def _base(session: Session, deadline: Deadline) -> int:
    agent = session.torch
    agent.ready(deadline)
    key = ("harness", agent.process.starts)
    if key not in session.cache:
        cls = model_class(session, deadline)
        name = session.roles["function"]
        if cls == "reference":
            kwargs = {k: {"v": v} for k, v in session.checkpoints[name].shape.constructor_kwargs().items()}
            kwargs.update(dropout={"v": 0.0}, tie_weights={"v": True})
            reply = agent.ask("new", {"kwargs": kwargs, "cls": "reference"}, deadline, "building a model")
            handle = protocol.desc(reply.fields.get("result"), "the model").handle
        else:
            handle = session.new_model(agent, name, deadline)
        _fill(session, handle, session.checkpoints[name].attributes, deadline)
        session.cache[key] = handle
    return session.cache[key]


def _fill(session: Session, handle: int, weights: dict[str, np.ndarray], deadline: Deadline) -> None:
    """Copy ``weights`` into the model; every path must say it took them (the tied head may be absent)."""
    paths = list(weights)
    values = {p: i for i, p in enumerate(paths)}
    if "token_embedding.weight" in values:
        values[TIE] = values["token_embedding.weight"]
    what = "setting the weights of a model the grader built"
    reply = session.torch.ask(
        "set", {"h": handle, "values": values}, deadline, what, inputs=[weights[p] for p in paths]
    )
    try:
        done = protocol.mapping(reply.fields.get("set"), "what was set", len(values) + 1)
        protocol.exactly_keys(done, list(values), "what was set")
    except ProtocolError as exc:
        raise Stop(Failure("protocol", f"{what}: the reply cannot be used ({exc})")) from None
    refused = [p for p in paths if done[p] not in ("copied", "bound")]
    if refused:
        detail = protocol.text(done[refused[0]], "why", 200)
        raise Stop(Failure("raised", f"{what}: your GPTModel has no {refused[0]} to hold it ({detail})"))


def model_class(session: Session, tier_deadline: Deadline) -> str:
    """ "submission" when the student's GPTModel, given GPT-2's weights, gives GPT-2's logits; else "reference"."""
    if "harness_class" in session.cache:
        return session.cache["harness_class"]
    started = time.monotonic()
    try:
        return _verify(session)
    finally:
        # The grader's own check of the student's class does not count against the tier that asked:
        # a class whose forward hangs must not cost it (the reference class then stands in).
        tier_deadline.extend(time.monotonic() - started)


def _verify(session: Session) -> str:
    session.cache["harness_class"] = "submission"
    deadline = Deadline(min(session.limits.timeout, VERIFY_SECONDS))
    expected = session.checkpoints[session.roles["function"]]
    ids = np.asarray([expected.encode(session.inputs.texts[0])], dtype=np.int64)
    try:
        handle = model(session, expected.attributes, deadline)
        imported = session.torch.ready(deadline)
        call = session.forward_call(imported, handle, {"a": 0}, "your forward pass on a model the grader filled")
        budget = ids.size * expected.shape.vocab_size * 8 + (1 << 20)

        def logits() -> np.ndarray:
            reply = session.torch.ask("call", call, deadline, "your forward pass", inputs=[ids], budget=budget)
            result = protocol.desc(reply.fields.get("result"), "the logits")
            return reply.array(result.array if result.kind == "array" else None, "the logits")

        got = logits()
        want = expected.logits(ids)
        # Stricter than the logits tier: the "matching" model must match to float32 noise, or a
        # student's correct compare_outputs would be judged on a model that is slightly off.
        if got.shape != want.shape or float(np.max(np.abs(got - want))) > expected.tolerance(ids) / 4:
            raise Stop(Failure("failed", "wrong logits"))
        if not np.array_equal(logits(), got):  # dropout left on: a harness model must be deterministic
            raise Stop(Failure("failed", "random"))
    except (Stop, ProtocolError):
        session.cache["harness_class"] = "reference"
        for key in [k for k in session.cache if isinstance(k, tuple) and k[0] == "harness"]:
            del session.cache[key]  # built with the student's class: build the reference's instead
        session.notes.append(
            "your GPTModel does not give GPT-2's logits even with the right weights, so the "
            "models handed to your compare and analysis functions are the reference decoder's"
        )
    return session.cache["harness_class"]
