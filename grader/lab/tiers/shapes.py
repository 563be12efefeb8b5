"""Tier 2: after ``load_gpt2_weights``, every attribute has the right shape, dtype and values.

Checked on the primary checkpoint (a local directory, never the name 'gpt2')
and on a second one with another depth and width, which catches loaders
hard-wired to 12 layers or 768 dimensions.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

from .. import contract
from ..common import Collected, Job, StudentCode, StudentFailure, Verdict
from ..diagnose import attribute_findings, failure_hint, group_findings
from ._util import bullet, to_array

NAME = "shapes"
TITLE = "Loaded weights: shapes, dtype and values (load_gpt2_weights)"
FUNCTIONS = ("load_gpt2_weights",)
USES_LOADER = True


def _digest(value: Any) -> str | None:
    if not isinstance(value, np.ndarray):
        return None
    return f"{value.dtype}{value.shape}" + hashlib.sha1(np.ascontiguousarray(value).tobytes()).hexdigest()


def _read_attributes(student: StudentCode, model: Any, num_layers: int) -> dict[str, Any]:
    """Every contract attribute of ``model``: an array, or a string saying what is wrong with it."""
    values: dict[str, Any] = {}
    for path in contract.attribute_paths(num_layers):
        try:
            raw = student.call(f"reading {path}", contract.get_path, model, path)
        except StudentFailure:
            values[path] = "is missing (no such attribute)"
            continue
        array, problem = to_array(student, f"reading {path}", raw)
        values[path] = array if array is not None else problem
    return values


def collect(student: StudentCode, job: Job) -> Collected:
    """Load every checkpoint with the student's loader and read back every attribute."""
    out = Collected(meta={"checkpoints": []})
    for i, checkpoint in enumerate(job.checkpoints):
        info: dict[str, Any] = {}
        out.meta["checkpoints"].append(info)
        initial: dict[str, str | None] = {}

        def remember(
            model: Any, initial: dict[str, str | None] = initial, layers: int = checkpoint.shape.num_layers
        ) -> None:
            for path, value in _read_attributes(student, model, layers).items():
                initial[path] = _digest(value)

        try:
            model = student.loaded_model(checkpoint, before_load=remember)
        except StudentFailure as failure:
            info["error"] = failure.record
            continue
        returned = student.returned_by_loader(checkpoint)
        info["returned"] = "model" if returned is model else type(returned).__name__
        info["unchanged"] = []
        for path, value in _read_attributes(student, model, checkpoint.shape.num_layers).items():
            if isinstance(value, np.ndarray):
                out.arrays[f"{i}/{path}"] = value
                if initial and initial.get(path) == _digest(value):
                    info["unchanged"].append(path)
            else:
                info.setdefault("problems", {})[path] = value
    return out


def judge(job: Job, collected: Collected, truth: Any) -> Verdict:
    """Compare every attribute with HuggingFace's tensors and explain each mismatch."""
    sections: list[str] = []
    failures: list[str] = []
    worst = 0.0
    facts: dict[str, Any] = {"wrong": {}}
    for i, (checkpoint, info) in enumerate(zip(job.checkpoints, collected.meta["checkpoints"], strict=True)):
        where = f"On the {checkpoint.label} checkpoint ({checkpoint.shape.describe()})"
        if "error" in info:
            failures.append(f"{where}: {info['error']['summary']}.{failure_hint(info['error'], checkpoint.shape)}")
            continue
        expected = truth.checkpoints[i]
        got: dict[str, Any] = dict(info.get("problems", {}))
        for path in expected.attributes:
            if f"{i}/{path}" in collected.arrays:
                got[path] = collected.arrays[f"{i}/{path}"]
        unchanged = {p: True for p in info.get("unchanged", [])}
        findings, diff = attribute_findings(expected.attributes, got, expected.candidates, unchanged)
        worst = max(worst, diff)
        lines = group_findings(findings)
        if info.get("returned") != "model":
            lines.insert(0, f"load_gpt2_weights returned {info.get('returned')}; it must return the model it was given")
        facts["wrong"][checkpoint.label] = [p for p, _ in findings]
        facts.setdefault("findings", {})[checkpoint.label] = [[p, why] for p, why in findings[:64]]
        if lines:
            sections.append(
                f"{where}, {len(findings)} of {len(expected.attributes)} attributes are wrong:\n{bullet(lines)}"
            )
    if failures:
        return Verdict("error", "\n".join(failures + sections), max_diff=worst, facts=facts)
    if sections:
        return Verdict("failed", "\n".join(sections), max_diff=worst, facts=facts)
    labels = " and ".join(c.label for c in job.checkpoints)
    return Verdict("passed", f"Every attribute has the right shape, dtype float32 and values ({labels} checkpoints).",
                   max_diff=worst, facts=facts)  # fmt: skip
