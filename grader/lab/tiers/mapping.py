"""Tier 1: ``get_weight_mapping`` covers every parameter and its transforms give the right arrays.

The transforms run on synthetic tensors whose entries are all distinct, so
that a transpose, a swapped third or a reshape shows even on square matrices.
The widths are not GPT-2's, so a split hard-wired to 768 shows too.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import contract
from ..common import Collected, Job, StudentCode, StudentFailure, Verdict
from ..diagnose import CandidateIndex, attribute_findings, group_findings
from ._util import bullet, normalise_path, to_array

NAME = "mapping"
TITLE = "Weight mapping (get_weight_mapping)"
FUNCTIONS = ("get_weight_mapping",)
USES_LOADER = False

SYNTHETIC = dict(vocab_size=29, d_model=12, num_heads=3, d_ff=48, max_seq_len=17)


def synthetic_shape(num_layers: int) -> contract.ModelShape:
    return contract.ModelShape(num_layers=num_layers, **SYNTHETIC)


def synthetic_state(num_layers: int, seed: int) -> dict[str, np.ndarray]:
    """A GPT-2 state dict whose entries are the distinct integers 1..N in a shuffled order."""
    shape = synthetic_shape(num_layers)
    d, f = shape.d_model, shape.d_ff
    shapes = {"transformer.wte.weight": (shape.vocab_size, d), "transformer.wpe.weight": (shape.max_seq_len, d)}
    per_layer = {
        "ln_1.weight": (d,), "ln_1.bias": (d,), "attn.c_attn.weight": (d, 3 * d), "attn.c_attn.bias": (3 * d,),
        "attn.c_proj.weight": (d, d), "attn.c_proj.bias": (d,), "ln_2.weight": (d,), "ln_2.bias": (d,),
        "mlp.c_fc.weight": (d, f), "mlp.c_fc.bias": (f,), "mlp.c_proj.weight": (f, d), "mlp.c_proj.bias": (d,),
    }  # fmt: skip
    for i in range(num_layers):
        shapes.update({f"transformer.h.{i}.{k}": v for k, v in per_layer.items()})
    shapes.update({"transformer.ln_f.weight": (d,), "transformer.ln_f.bias": (d,)})
    total = sum(int(np.prod(s)) for s in shapes.values())
    values = np.random.default_rng(seed + num_layers).permutation(total).astype(np.float32) + 1  # exact in float32
    state, start = {}, 0
    for name, s in shapes.items():
        size = int(np.prod(s))
        state[name] = values[start : start + size].reshape(s)
        start += size
    state["lm_head.weight"] = state["transformer.wte.weight"]  # tied, as in GPT-2
    return state


def collect(student: StudentCode, job: Job) -> Collected:
    """Call get_weight_mapping for each layer count and apply every transform to synthetic tensors."""
    fn = student.function("get_weight_mapping")
    out = Collected(meta={"layers": {}})
    for num_layers in job.mapping_layers + job.coverage_layers:
        mapping = student.call(f"get_weight_mapping({num_layers})", fn, num_layers)
        info: dict[str, Any] = {"type": type(mapping).__name__}
        out.meta["layers"][str(num_layers)] = info
        if not isinstance(mapping, dict):
            continue
        state = synthetic_state(num_layers, job.seed) if num_layers in job.mapping_layers else {}
        entries: dict[str, Any] = {}
        for key, value in mapping.items():
            entry = entries[str(key)] = {}
            if not isinstance(value, (tuple, list)) or len(value) != 2:
                entry["problem"] = f"its value is a {type(value).__name__}, not a (target, transform) pair"
                continue
            target, transform = value
            if isinstance(target, str):
                entry["target"] = target
            elif isinstance(target, (tuple, list)) and all(isinstance(t, str) for t in target):
                entry["target"] = list(target)
            else:
                entry["problem"] = f"its target is a {type(target).__name__}, not a path or a tuple of paths"
                continue
            if not callable(transform):
                entry["problem"] = f"its transform is a {type(transform).__name__}, not a function"
                continue
            if str(key) not in state:
                continue
            try:
                result = student.call(f"the transform of {key}", transform, state[str(key)].copy())
            except StudentFailure as failure:
                entry["error"] = failure.record
                continue
            results = list(result) if isinstance(result, (tuple, list)) else [result]
            entry["n_outputs"] = len(results)
            entry["tuple"] = isinstance(result, (tuple, list))
            entry["problems"] = {}
            for j, item in enumerate(results):
                array, problem = to_array(student, f"the transform of {key}", item)
                if array is not None:
                    out.arrays[f"{num_layers}/{key}/{j}"] = array
                if problem and array is None:
                    entry["problems"][str(j)] = problem
        info["entries"] = entries
    return out


def _check_layers(
    num_layers: int, info: dict[str, Any], collected: Collected, seed: int, full: bool
) -> tuple[list[str], list[dict]]:
    """Problems with one layer count's mapping, and the student exceptions met."""
    call = f"get_weight_mapping({num_layers})"
    if info["type"] != "dict":
        return [f"{call} returned a {info['type']}, not a dict"], []
    entries: dict[str, Any] = info["entries"]
    hf_names = set(contract.hf_parameter_names(num_layers))
    required = contract.required_parameter_names(num_layers)
    problems: list[str] = []
    failures: list[dict] = []
    missing = [k for k in required if k not in entries]
    unknown = [k for k in entries if k not in hf_names and not k.endswith(contract.IGNORED_SUFFIXES)]
    if missing:
        hint = ""
        if unknown and any(("transformer." + u) in missing for u in unknown):
            hint = " (keys are spelled as state_dict() spells them, with the 'transformer.' prefix)"
        problems.append(
            f"{call} misses {len(missing)} of the {len(required)} parameters, e.g. {', '.join(missing[:3])}{hint}"
        )
    if unknown:
        problems.append(
            f"{call} has keys that GPT2LMHeadModel with {num_layers} layers does not have, e.g. {', '.join(unknown[:3])}"
        )
    if not full:
        return problems, failures
    state = synthetic_state(num_layers, seed)
    expected = contract.expected_attributes(state, num_layers)
    received: dict[str, list[tuple[str, Any]]] = {}
    for key, entry in entries.items():
        if "problem" in entry:
            problems.append(f"{key}: {entry['problem']}")
            continue
        if "error" in entry:
            failures.append(entry["error"])
            continue
        if key not in state or "n_outputs" not in entry:
            continue
        targets = [entry["target"]] if isinstance(entry["target"], str) else entry["target"]
        if len(targets) != entry["n_outputs"] or (isinstance(entry["target"], str) and entry["tuple"]):
            problems.append(f"{key}: the transform returns {entry['n_outputs']} array(s) for {len(targets)} target(s)")
            continue
        for j, path in enumerate(targets):
            array = collected.arrays.get(f"{num_layers}/{key}/{j}")
            received.setdefault(normalise_path(path), []).append(
                (key, array if array is not None else entry["problems"].get(str(j), "is missing"))
            )
    findings: list[tuple[str, str]] = []
    got: dict[str, Any] = {}
    for path in expected:
        sources = received.get(path, [])
        own = [s for s in sources if s[0] != "lm_head.weight"]
        if not own:
            findings.append((path, "is the target of no entry"))
        elif len(own) > 1:
            findings.append((path, f"is the target of {len(own)} entries ({', '.join(k for k, _ in own)})"))
        else:
            got[path] = own[0][1]
    for key, value in received.get("token_embedding.weight", []):
        if key == "lm_head.weight" and (
            not isinstance(value, np.ndarray)
            or value.shape != expected["token_embedding.weight"].shape
            or not np.array_equal(value, expected["token_embedding.weight"])
        ):
            problems.append(
                "lm_head.weight must map unchanged to token_embedding.weight (the head is tied) or be left out"
            )
    strays = sorted(set(received) - set(expected))
    for path in strays:
        keys = ", ".join(k for k, _ in received[path])
        problems.append(
            f"{keys} targets '{path}', which is not an attribute of the contract (LAB_CONTRACT.md section 2)"
        )
    index = CandidateIndex(expected, state)
    wrong, _ = attribute_findings({p: v for p, v in expected.items() if p in got}, got, index)
    findings += wrong
    if findings:
        problems.append(f"with {call}, {len(findings)} attribute(s) get the wrong array:")
        problems += ["  - " + line for line in group_findings(findings)]
    return problems, failures


def judge(job: Job, collected: Collected, truth: Any) -> Verdict:
    """Coverage for every layer count; exact arrays for the layer counts that ran transforms."""
    lines: list[str] = []
    failures: list[dict] = []
    facts: dict[str, Any] = {}
    for num_layers in job.mapping_layers + job.coverage_layers:
        info = collected.meta["layers"].get(str(num_layers))
        if info is None:
            continue
        problems, errors = _check_layers(num_layers, info, collected, job.seed, num_layers in job.mapping_layers)
        failures += errors
        facts[str(num_layers)] = len(problems) + len(errors)
        if any("get the wrong array" in line for line in lines):
            # The same mistakes repeat for every layer count: list them once, then only count them.
            problems = [p.replace(":", " as well.") if "get the wrong array" in p else p
                        for p in problems if not p.startswith("  - ")]  # fmt: skip
        lines += [p for p in problems if p not in lines]
    if failures:
        first = failures[0]
        more = f" ({len(failures) - 1} more transforms raised too)" if len(failures) > 1 else ""
        return Verdict("error", first["summary"] + more + ("\n" + bullet(lines) if lines else ""), facts=facts)
    if lines:
        text = "\n".join(line if line.startswith("  - ") else f"- {line}" for line in lines)
        return Verdict("failed", "The weight mapping is wrong:\n" + text, facts=facts)
    layers = ", ".join(str(n) for n in job.mapping_layers + job.coverage_layers)
    return Verdict(
        "passed", f"Every parameter is mapped and every transform gives the right array ({layers} layers).", facts=facts
    )
