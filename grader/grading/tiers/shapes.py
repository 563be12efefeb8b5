"""Tier 2: after ``load_gpt2_weights(model, <checkpoint folder>)`` every attribute holds the right array.

Checked on the primary checkpoint and on a second one of another depth and width (a
loader hard-wired to 12 layers or 768 dimensions fails there). Each attribute is compared
on the bytes the model was exported with (``loading``), or its digest where the export
does not hold it; the wrong ones' arrays say what they hold instead. The model passed in is the one
judged; returning it is optional. The head must stay tied (pitfall 1 of the handout).
"""

from __future__ import annotations

from lab04_checks.contract import attribute_paths

from .. import loading
from ..diagnose import Finding, cause_key, compare_one, failure_hint, group_findings, mistake_keys
from ..loading import Load
from ..outcome import Deadline
from ..session import TIE, Session
from .base import Verdict, bullet, missing_function

NAME = "shapes"
TITLE = "Loaded weights: shapes, dtype and values (load_gpt2_weights)"


def findings_of(load: Load) -> list[Finding]:
    """Every wrong attribute of one load, with what it holds instead (found once: three tiers ask)."""
    if load.findings is None:
        load.findings = _findings(load)
    return list(load.findings)


def _findings(load: Load) -> list[Finding]:
    expected = load.expected
    out: list[Finding] = []
    for path in attribute_paths(expected.shape.num_layers):
        entry = load.after.get(path)
        if entry is None or entry.kind == "missing":
            out.append((path, "missing", "is missing (no such attribute)"))
        elif entry.kind == "tensor":
            out.append((path, "torch_tensor", "is a torch tensor: store NumPy arrays (tensor.detach().numpy())"))
        elif entry.kind == "object":
            out.append((path, "not_array", f"is a {entry.type_name}, not a NumPy array"))
        elif not load.holds(path):
            before = load.before.get(path)
            unchanged = before is not None and bool(before.sample) and before.sample == entry.sample
            have = load.arrays.get(path)
            if have is None and entry.shape != expected.attributes[path].shape:
                have = f"has shape {entry.shape}, expected {expected.attributes[path].shape}"
            elif have is None:
                have = "holds the wrong values"
            finding, _ = compare_one(path, expected.attributes[path], have, expected.candidates, unchanged)
            if finding is not None:
                out.append(finding)
    out = _tie_findings(load) + out
    if load.dotted and any(kind == "never_loaded" for _, kind, _ in out):
        out.insert(
            0,
            (
                "your model",
                "dotted_setattr",
                f"now has attributes whose names contain dots, e.g. "
                f"{load.dotted[0]!r} ({len(load.dotted)} such): setattr(model, 'blocks.0.attn.W_Q', value) makes "
                "one attribute with that whole name instead of reaching blocks[0].attn; follow the path one part "
                "at a time and set the last part",
            ),
        )
    return out


def _tie_findings(load: Load) -> list[Finding]:
    """The tied head: lm_head.weight must be (or equal) the loaded token embedding."""
    head, embedding = load.after.get(TIE), load.after.get("token_embedding.weight")
    if head is None or head.kind == "missing" or embedding is None or embedding.kind != "array":
        return []  # no lm_head at all: the forward computes h @ token_embedding.weight.T itself
    if head.oid == embedding.oid or load.holds(TIE, "token_embedding.weight"):
        return []
    before = load.before.get(TIE)
    if before is not None and before.sample and before.sample == head.sample:
        return [
            (
                TIE,
                "untied_head",
                "still holds the random embedding GPTModel(...) started with: the loader gave "
                "token_embedding.weight a new array and the tied head kept the old one "
                "(the handout's pitfall 1). Copy into the existing array "
                "(model.token_embedding.weight[...] = wte) or set lm_head.weight too",
            )
        ]
    return [(TIE, "untied_head", "does not hold the token embedding: GPT-2's head is tied to wte")]


def notes_of(load: Load, dotted: bool = False) -> list[str]:
    """What the loader did that is worth saying even when every attribute is right."""
    notes = []
    returned = load.returned
    if returned is not None and returned.kind not in ("none",) and returned.handle != load.model:
        unchanged = all(
            load.before.get(p) and load.before[p].sample == e.sample for p, e in load.after.items() if e.kind == "array"
        )
        if unchanged:
            notes.append(
                f"load_gpt2_weights returned {returned.describe()} and left the model it was given "
                "unchanged: it must fill your_model in place (the course calls it without using what it "
                "returns)"
            )
    return notes


def run(session: Session, deadline: Deadline) -> Verdict:
    imported = session.torch.ready(deadline)
    if not imported.has("load_gpt2_weights"):
        return missing_function(session, "load_gpt2_weights")
    sections, failures, facts = [], [], {"wrong": {}}
    all_findings: list[Finding] = []
    causes: dict[str, str] = {}
    for name in session.load_order():
        if failures and failures[-1][0].kind in ("timeout", "crashed"):
            break  # the process is gone and the tier's time with it: the next checkpoint would fail the same way
        load = loading.load(session, name, deadline)
        expected = load.expected
        where = f"On the {name} checkpoint ({expected.shape.describe()})"
        if load.failure is not None:
            hint = failure_hint(
                load.failure.raised.message if load.failure.raised else load.failure.text,
                load.failure.raised.type if load.failure.raised else "",
                expected.shape,
            )
            failures.append((load.failure, f"{where}: {load.failure.text}" + (f" {hint}" if hint else "")))
            continue
        findings = findings_of(load)
        notes = notes_of(load)
        facts["wrong"][name] = [f[0] for f in findings][:64]
        if findings or notes:
            lines = group_findings(findings) + notes
            paths = set(attribute_paths(expected.shape.num_layers))
            wrong = sum(1 for path, _, _ in findings if path in paths or path == TIE)
            head = f"{where}, {wrong} of {len(paths)} attributes are wrong:" if findings else where
            sections.append(f"{head}\n{bullet(lines)}")
        for path, _, words in findings:
            causes.setdefault(cause_key(path), f"{path} {words}")
        all_findings += findings
        if name == session.primary_name:
            facts["returned"] = load.returned.describe() if load.returned else None
    mistakes = mistake_keys(all_findings)
    if failures:
        first = failures[0][0]
        status = "timeout" if first.kind == "timeout" else "error"
        from .base import cause_of

        key = cause_of(first)
        if key:
            causes[key] = first.text
        return Verdict(
            status, "\n".join([text for _, text in failures] + sections), facts=facts, mistakes=mistakes, causes=causes
        )
    if any(f for f in all_findings):
        return Verdict("failed", "\n".join(sections), facts=facts, mistakes=mistakes, causes=causes)
    names = " and ".join(session.load_order())
    text = f"Every attribute has the right shape, dtype float32 and values ({names} checkpoints)."
    if sections:
        text += "\n" + "\n".join(sections)
    return Verdict("passed", text, facts=facts)
