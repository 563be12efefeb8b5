"""Tier 1: ``get_weight_mapping`` covers every parameter and its transforms give the right arrays.

The transforms run on synthetic tensors the grader makes, whose entries are all distinct,
so a transpose, a swapped third or a reshape shows even on square matrices; their widths
are not GPT-2's, so a split hard-wired to 768 shows too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lab04_checks import contract

from ...sandbox import protocol
from ...sandbox.protocol import Desc
from .. import loading
from ..answers import expected_attributes, sources, synthetic_state
from ..diagnose import CandidateIndex, Finding, attribute_findings, cause_key, group_findings, mistake_keys
from ..outcome import Deadline, Stop
from ..session import Session
from .base import Verdict, arrays_of, bullet, missing_function

NAME = "mapping"
TITLE = "Weight mapping (get_weight_mapping)"
SYNTHETIC = dict(vocab_size=29, d_model=12, num_heads=3, d_ff=48, max_seq_len=17)


def synthetic_shape(num_layers: int) -> contract.ModelShape:
    return contract.ModelShape(num_layers=num_layers, **SYNTHETIC)


@dataclass
class Entry:
    """One key of the student's mapping."""

    targets: list[str] = field(default_factory=list)
    single: bool = True  # the target is one path, not a tuple
    problem: str = ""
    outputs: list[Any] = field(default_factory=list)  # arrays, or a problem string per output
    error: str = ""
    torch_only: bool = False  # the transform worked only on torch tensors


def _entries(value: Desc, call: str) -> tuple[dict[str, Entry], dict[str, int], str]:
    """The mapping's entries and their transform handles, or a problem with its type."""
    if value.kind != "dict":
        return {}, {}, f"{call} returned {value.describe()}, not a dict"
    entries, handles = {}, {}
    for key_desc, item in value.items:
        if key_desc.kind != "str":
            return {}, {}, f"{call} has a key that is {key_desc.describe()}, not a string"
        key, entry = key_desc.value, Entry()
        entries[key] = entry
        if item.kind not in ("tuple", "list") or len(item.items) != 2:
            entry.problem = f"its value is {item.describe()}, not a (target, transform) pair"
            continue
        target, transform = item.items
        if target.kind == "str":
            entry.targets = [contract.normalise_path(target.value)]
        elif target.kind in ("tuple", "list") and target.items and all(t.kind == "str" for t in target.items):
            entry.targets, entry.single = [contract.normalise_path(t.value) for t in target.items], False
        else:
            entry.problem = f"its target is {target.describe()}, not a path or a tuple of paths"
            continue
        if transform.kind != "callable" or transform.handle is None:
            entry.problem = f"its transform is {transform.describe()}, not a function"
            continue
        handles[key] = transform.handle
    return entries, handles, ""


def _apply_all(
    session: Session,
    entries: dict[str, Entry],
    handles: dict[str, int],
    state: dict[str, np.ndarray],
    deadline: Deadline,
    call: str,
) -> None:
    """Run each transform on its synthetic tensor (as NumPy; as a torch tensor if NumPy fails), all in one
    request, and note what each gave in its entry: a transform that hangs or crashes the process fails the
    tier either way, and the stack dump names its line."""
    keys = [key for key in handles if key in state]
    if not keys:
        return
    labels = [f"the transform of {key}" for key in keys]
    calls = [{"fn": handles[key], "input": n, "label": labels[n]} for n, key in enumerate(keys)]
    tensors = [state[key] for key in keys]
    what = f"the transforms of {call}"
    budget = sum(4 * t.nbytes + (1 << 16) for t in tensors)
    reply = session.torch.try_ask("calls", {"calls": calls}, deadline, what, inputs=tensors, budget=budget)
    if reply.status in ("timeout", "crashed"):
        raise Stop(from_reply_failure(session, reply, what))
    if not reply.ok:  # no transform's result came back: none is right
        detail = reply.raised.summary() if reply.raised else reply.detail
        for key in keys:
            entries[key].error = f"{what}: {detail}"
        return
    results = protocol.call_results(reply.fields.get("results"), labels)
    for key, label, done in zip(keys, labels, results, strict=True):
        entry = entries[key]
        entry.torch_only = done.torch
        if done.raised is not None:
            entry.error = done.raised.summary()
            continue
        items = list(done.result.items) if done.result.kind in ("tuple", "list") else [done.result]
        for item in items:
            arrays, problem = arrays_of(reply, item, f"the result of {label}")
            entry.outputs.append(arrays[0] if arrays else problem or "is missing")
        if entry.outputs:
            entry.single = entry.single and done.result.kind not in ("tuple", "list")


def from_reply_failure(session: Session, reply: Any, label: str) -> Any:
    from ..outcome import failure_of

    return failure_of(reply, label, session.limits)


def run(session: Session, deadline: Deadline) -> Verdict:
    imported = session.torch.ready(deadline)
    if not imported.has("get_weight_mapping"):
        return _judged_by_the_loader(session, deadline)
    inputs = session.inputs
    problems: list[str] = []
    errors: list[str] = []
    findings_all: list[tuple[str, Finding]] = []  # (layers, finding)
    for num_layers in inputs.mapping_layers + inputs.coverage_layers:
        call = f"get_weight_mapping({num_layers})"
        reply = session.torch.ask(
            "call",
            {"fn": "get_weight_mapping", "args": [{"v": num_layers}], "label": call, "arrays": False},
            deadline,
            call,
        )
        entries, handles, problem = _entries(protocol.desc(reply.fields.get("result"), call), call)
        if problem:
            problems.append(problem)
            continue
        full = num_layers in inputs.mapping_layers
        state = synthetic_state(synthetic_shape(num_layers), inputs.rng_seed + num_layers) if full else {}
        _apply_all(session, entries, handles, state, deadline, call)
        layer_problems, layer_errors, findings = check_layers(num_layers, entries, state)
        problems += layer_problems
        errors += layer_errors
        findings_all += [(str(num_layers), f) for f in findings]
    return _verdict(problems, errors, findings_all, inputs.mapping_layers)


def _judged_by_the_loader(session: Session, deadline: Deadline) -> Verdict:
    """No get_weight_mapping (the course's template has none): the mapping is judged by what the loader loaded."""
    from . import shapes

    if not session.torch.ready(deadline).has("load_gpt2_weights"):
        return missing_function(session, "get_weight_mapping")
    wrong = []
    for name in session.load_order():
        load = loading.load(session, name, deadline)
        if load.failure is not None:
            return Verdict(
                "error" if load.failure.kind != "timeout" else "timeout",
                f"{session.prepared.module_label} defines no get_weight_mapping, so the mapping is judged by what "
                f"load_gpt2_weights loads, and it failed: {load.failure.text}",
            )
        wrong += [f for f in shapes.findings_of(load) if f[0] != "your model"]
    intro = (
        f"{session.prepared.module_label} defines no get_weight_mapping (the course's template has none), so the mapping is "
        "judged by what load_gpt2_weights loads"
    )
    if wrong:
        causes: dict[str, str] = {}
        for path, _, words in wrong:  # the primary checkpoint's first: its words name the mistake
            causes.setdefault(cause_key(path), f"{path} {words}")
        return Verdict(
            "failed",
            f"{intro}: {len(wrong)} attribute(s) got the wrong array (see the shapes tier).",
            causes=causes,
            facts={"judged_by": "loader"},
        )
    return Verdict("passed", f"{intro}: every attribute got the right array.", facts={"judged_by": "loader"})


def check_layers(
    num_layers: int, entries: dict[str, Entry], state: dict[str, np.ndarray]
) -> tuple[list[str], list[str], list[Finding]]:
    """Problems with one layer count's mapping, the student exceptions met, and wrong attributes."""
    problems, typos = _key_problems(num_layers, list(entries))
    if not state:
        return problems, [], []
    expected = expected_attributes(state, num_layers)
    received, shape_problems, errors = _received(entries, state)
    problems += shape_problems
    got, findings = _targets(num_layers, expected, received, typos)
    problems += _tie_problems(expected, received) + _stray_targets(expected, received)
    wrong, _ = attribute_findings(expected, got, CandidateIndex(expected, state))
    return problems, errors, findings + wrong


def _key_problems(num_layers: int, keys: list[str]) -> tuple[list[str], dict[str, str]]:
    """Missing and unknown HuggingFace keys, and the unknown ones that are typos: {typo: real name}."""
    call = f"get_weight_mapping({num_layers})"
    hf_names = set(contract.hf_parameter_names(num_layers))
    required = contract.required_parameter_names(num_layers)
    problems: list[str] = []
    missing = [k for k in required if k not in keys]
    unknown = [k for k in keys if k not in hf_names and not k.endswith(contract.IGNORED_SUFFIXES)]
    if missing:
        hint = ""
        if unknown and any(("transformer." + u) in missing for u in unknown):
            hint = " (keys are spelled as state_dict() spells them, with the 'transformer.' prefix)"
        problems.append(
            f"{call} misses {len(missing)} of the {len(required)} parameters, e.g. {', '.join(missing[:3])}{hint}"
        )
    typos = _typos(unknown, missing)
    if unknown:
        near = "".join(f" ({key} looks like a typo of {name})" for key, name in list(typos.items())[:2])
        problems.append(
            f"{call} has keys that GPT2LMHeadModel with {num_layers} layers does not have, e.g. "
            f"{', '.join(unknown[:3])}{near}"
        )
    return problems, typos


def _received(
    entries: dict[str, Entry], state: dict[str, np.ndarray]
) -> tuple[dict[str, list[tuple[str, Any]]], list[str], list[str]]:
    """What each attribute path received, {path: [(key, array)]}; broken entries; student exceptions."""
    problems: list[str] = []
    errors: list[str] = []
    received: dict[str, list[tuple[str, Any]]] = {}
    for key, entry in entries.items():
        if entry.problem:
            problems.append(f"{key}: {entry.problem}")
            continue
        if entry.error:
            errors.append(entry.error)
            continue
        if key not in state or not entry.outputs:
            continue
        single_target = len(entry.targets) == 1
        if len(entry.targets) != len(entry.outputs) or (single_target and not entry.single and len(entry.outputs) > 1):
            problems.append(
                f"{key}: the transform returns {len(entry.outputs)} array(s) for {len(entry.targets)} target(s)"
            )
            continue
        for path, output in zip(entry.targets, entry.outputs, strict=True):
            received.setdefault(path, []).append((key, output))
    return received, problems, errors


def _targets(
    num_layers: int, expected: dict[str, np.ndarray], received: dict[str, list[tuple[str, Any]]], typos: dict[str, str]
) -> tuple[dict[str, Any], list[Finding]]:
    """The one array each attribute received, and findings for attributes loaded never or twice."""
    findings: list[Finding] = []
    got: dict[str, Any] = {}
    source_of = {path: name for path, (name, _) in sources(num_layers).items()}
    typo_of = {name: key for key, name in typos.items()}
    for path in expected:
        own = [s for s in received.get(path, []) if s[0] != "lm_head.weight"]  # the tied head is judged apart
        if not own and source_of[path] in typo_of:
            why = f"is never loaded: the key {typo_of[source_of[path]]} is a typo of {source_of[path]}"
            findings.append((path, "key_typo", why))
        elif not own:
            findings.append((path, "unmapped", "is the target of no entry"))
        elif len(own) > 1:
            why = f"is the target of {len(own)} entries ({', '.join(k for k, _ in own)})"
            findings.append((path, "mapped_twice", why))
        else:
            got[path] = own[0][1]
    return got, findings


def _tie_problems(expected: dict[str, np.ndarray], received: dict[str, list[tuple[str, Any]]]) -> list[str]:
    """An lm_head.weight entry must hand the token embedding over unchanged (the head is tied)."""
    embedding = expected["token_embedding.weight"]
    for key, value in received.get("token_embedding.weight", []):
        same = isinstance(value, np.ndarray) and value.shape == embedding.shape and np.array_equal(value, embedding)
        if key == "lm_head.weight" and not same:
            return ["lm_head.weight must map unchanged to token_embedding.weight (the head is tied) or be left out"]
    return []


def _stray_targets(expected: dict[str, np.ndarray], received: dict[str, list[tuple[str, Any]]]) -> list[str]:
    """Targets that are no attribute of the model."""
    problems = []
    for path in sorted(set(received) - set(expected)):
        if path == "lm_head.weight" or path.startswith("lm_head."):
            continue
        if "." in path and path.split(".")[0] not in ("token_embedding", "pos_embedding", "blocks", "ln_f"):
            problems.append(f"{path} is not an attribute of the model (contract section 2)")
        else:
            problems.append(f"{path} (target of {received[path][0][0]}) is not an attribute of the model")
    return problems


def _typos(unknown: list[str], missing: list[str]) -> dict[str, str]:
    """Unknown keys that are near misses of a missing name: {typo: the real name}."""
    import difflib

    out = {}
    for key in unknown[:64]:
        close = difflib.get_close_matches(key, missing, n=1, cutoff=0.85)
        if close:
            out[key] = close[0]
    return out


def _verdict(
    problems: list[str], errors: list[str], findings: list[tuple[str, Finding]], layers: tuple[int, ...]
) -> Verdict:
    lines = list(dict.fromkeys(problems))
    by_count: dict[str, list[Finding]] = {}
    for count, finding in findings:
        by_count.setdefault(count, []).append(finding)
    for count, items in list(by_count.items())[:1]:  # the first layer count that shows it is enough
        lines.append(f"with get_weight_mapping({count}), {len(items)} attribute(s) get the wrong array:")
        lines += [f"  {line}" for line in group_findings(items)]
    flat = [f for _, f in findings]
    causes = {}
    for path, _, words in flat:
        causes.setdefault(cause_key(path), f"{path} {words} (get_weight_mapping)")
    facts = {"layers_checked": list(layers), "wrong": sorted({f[0] for f in flat})[:64]}
    mistakes = mistake_keys(flat)
    if errors:
        return Verdict(
            "error",
            "\n".join(list(dict.fromkeys(errors))[:5] + ([bullet(lines)] if lines else [])),
            facts=facts,
            mistakes=mistakes,
            causes=causes,
        )
    if lines:
        return Verdict(
            "failed", "The weight mapping is wrong:\n" + bullet(lines), facts=facts, mistakes=mistakes, causes=causes
        )
    return Verdict(
        "passed",
        f"get_weight_mapping covers every parameter for {', '.join(map(str, layers))} and 48 "
        "layers, and every transform gives exactly the right array.",
        facts=facts,
    )
