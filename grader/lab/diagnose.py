"""Say what a wrong array holds instead: a transpose, another third of c_attn, another layer's tensor.

Every attribute's expected value (and its transpose) is a candidate; a wrong
array is compared with the candidates of the same shape, so the feedback can
name the mistake instead of printing a difference.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import contract

QKV = "QKV"
_LAYER = re.compile(r"^blocks\.(\d+)\.")
_SAMPLE = 64  # entries compared before a full comparison, to keep the search fast


@dataclass(frozen=True)
class Candidate:
    """A known array: the expected value of ``path``, possibly transposed, or a whole HF tensor."""

    path: str
    transposed: bool
    array: np.ndarray
    hf_name: str = ""  # set for whole HuggingFace tensors that are not an attribute's value


def layer_of(path: str) -> int | None:
    match = _LAYER.match(path)
    return int(match.group(1)) if match else None


def source_text(path: str, num_layers: int) -> str:
    """Where ``path``'s value comes from, in HuggingFace's words."""
    name, part = contract.sources(num_layers)[path]
    if part is None:
        return name
    third = part.start
    cols = ("0:d", "d:2d", "2d:3d")[third]
    return f"{name} [..., {cols}] (the {QKV[third]} part)"


class CandidateIndex:
    """Expected arrays indexed by shape, with a cheap fingerprint check before a full comparison."""

    def __init__(self, expected: dict[str, np.ndarray], hf_state: dict[str, np.ndarray] | None = None):
        self.num_layers = sum(1 for p in expected if p.endswith(".ln1.gamma"))
        self._by_shape: dict[tuple[int, ...], list[Candidate]] = {}
        for path, array in expected.items():
            self._add(Candidate(path, False, array))
            if array.ndim == 2:
                self._add(Candidate(path, True, array.T))
        for name, array in (hf_state or {}).items():
            if "c_attn" in name:  # the fused tensor, for "not split into thirds"
                self._add(Candidate(name, False, array, hf_name=name))
                if array.ndim == 2:
                    self._add(Candidate(name, True, array.T, hf_name=name))

    def _add(self, candidate: Candidate) -> None:
        self._by_shape.setdefault(tuple(candidate.array.shape), []).append(candidate)

    def find(self, array: np.ndarray, rtol: float = 1e-6) -> Candidate | None:
        """The first candidate equal to ``array`` (within ``rtol`` of its scale), or None."""
        pool = self._by_shape.get(tuple(array.shape), [])
        if not pool or array.size == 0:
            return None
        flat = array.reshape(-1).astype(np.float64)
        idx = np.linspace(0, flat.size - 1, min(_SAMPLE, flat.size)).astype(np.int64)
        for cand in pool:
            other = cand.array.reshape(-1)
            tol = rtol * max(1.0, float(np.max(np.abs(other[idx]))))
            if np.max(np.abs(flat[idx] - other[idx])) > tol:
                continue
            if np.max(np.abs(flat - other)) <= rtol * max(1.0, float(np.max(np.abs(other)))):
                return cand
        return None


def explain(path: str, got: np.ndarray, index: CandidateIndex) -> str | None:
    """What ``got`` (the wrong value of attribute ``path``) holds instead, or None if unknown."""
    cand = index.find(got)
    if cand is None:
        return None
    n = index.num_layers
    if cand.hf_name:
        flip = " transposed" if cand.transposed else ""
        fused = re.sub(r"^transformer\.h\.\d+\.", "", cand.hf_name)
        return (f"holds the whole fused {fused}{flip}, not one third of it: split the last axis "
                "into 3 equal parts (width // 3, not a fixed 768)")  # fmt: skip
    if cand.path == path:
        return ("holds the transpose of the right array: Conv1D weights are already (in, out), "
                "the layout x @ W needs, so no .T")  # fmt: skip
    flip = "the transpose of " if cand.transposed else ""
    own_layer, their_layer = layer_of(path), layer_of(cand.path)
    leaf, their_leaf = path.rsplit(".", 1)[-1], cand.path.rsplit(".", 1)[-1]
    if (
        own_layer == their_layer
        and leaf[:2] in ("W_", "b_")
        and their_leaf[:2] == leaf[:2]
        and leaf[2] in QKV
        and their_leaf[2] in QKV
    ):
        return (f"holds {flip}the {their_leaf[2]} part of c_attn instead of the {leaf[2]} part: "
                "the columns are Q, K, V in that order, d_model each")  # fmt: skip
    if own_layer == their_layer and {leaf, their_leaf} == {"gamma", "beta"}:
        return f"holds {flip}the {'bias' if their_leaf == 'beta' else 'weight'} of its LayerNorm: gamma and beta are swapped"
    if their_layer is not None and own_layer is not None and own_layer != their_layer:
        return f"holds {flip}layer {their_layer}'s tensor ({source_text(cand.path, n)}) instead of its own layer's"
    return f"holds {flip}{source_text(cand.path, n)}, which belongs to {cand.path}"


def describe_value(array: np.ndarray) -> str | None:
    """Recognise tell-tale values: all zeros, all ones, a constant."""
    if array.size == 0:
        return "is empty"
    lo, hi = float(np.min(array)), float(np.max(array))
    if lo == hi:
        return {0.0: "is all zeros", 1.0: "is all ones"}.get(lo, f"is the constant {lo:g}")
    return None


def attribute_findings(
    expected: dict[str, np.ndarray],
    got: dict[str, Any],
    index: CandidateIndex,
    initial: dict[str, bool] | None = None,
    rtol: float = 1e-6,
) -> tuple[list[tuple[str, str]], float]:
    """(path, problem) for every wrong attribute, and the largest difference among same-shape ones."""
    findings: list[tuple[str, str]] = []
    worst = 0.0
    for path, want in expected.items():
        have = got.get(path)
        if have is None or isinstance(have, str):
            findings.append((path, have or "is missing"))
            continue
        if have.shape != want.shape:
            why = explain(path, have.astype(np.float32, copy=False), index) if have.dtype.kind == "f" else None
            findings.append(
                (path, f"has shape {tuple(have.shape)}, expected {tuple(want.shape)}" + (f"; it {why}" if why else ""))
            )
            continue
        if have.dtype.kind not in "fiu":
            findings.append((path, f"has dtype {have.dtype}, expected float32"))
            continue
        # In float32 when both are: the difference of two float32 values is exact when they are close,
        # and off by a relative 6e-8 at most otherwise, far below the tolerance; float64 would double
        # the memory traffic on GPT-2-sized arrays.
        both32 = have.dtype == np.float32 and want.dtype == np.float32
        delta = have - want if both32 else have.astype(np.float64) - want
        diff = float(np.max(np.abs(delta))) if want.size else 0.0
        worst = max(worst, diff)
        values_ok = diff <= rtol * max(1.0, float(np.max(np.abs(want)))) if want.size else True
        if values_ok and have.dtype != np.float32:
            findings.append((path, f"has the right values but dtype {have.dtype}: store float32 (np.float32)"))
        elif not values_ok:
            if initial and initial.get(path):
                why = "is unchanged since GPTModel(...) created it: it was never loaded"
            else:
                why = explain(path, have.astype(np.float32), index) or describe_value(have)
            findings.append(
                (path, why or f"does not match {source_text(path, index.num_layers)} (max |diff| {diff:.3g})")
            )
    return findings, worst


_OTHER_LAYER = re.compile(r"^holds (?:the transpose of )?layer (\d+)'s tensor")


def _collapse_layer_swaps(findings: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Many attributes of block i holding layer j's tensors become one line about the layer order."""
    swaps: dict[tuple[int, int], list[str]] = {}
    for path, problem in findings:
        match = _OTHER_LAYER.match(problem)
        if match and layer_of(path) is not None:
            swaps.setdefault((layer_of(path), int(match.group(1))), []).append(path)
    collapsed = {key: paths for key, paths in swaps.items() if len(paths) >= 3}
    if not collapsed:
        return findings
    hidden = {p for paths in collapsed.values() for p in paths}
    out = [(f"blocks.{i}.*", f"({len(paths)} attributes) hold layer {j}'s tensors instead of layer {i}'s: "
            "check the layer index in the mapping") for (i, j), paths in collapsed.items()]  # fmt: skip
    return out + [(p, problem) for p, problem in findings if p not in hidden]


def group_findings(findings: list[tuple[str, str]], limit: int = 8) -> list[str]:
    """Lines like ``blocks.{0,1}.attn.W_Q holds the transpose ...``, at most ``limit`` of them."""
    findings = _collapse_layer_swaps(findings)
    groups: dict[tuple[str, str], list[str]] = {}
    for path, problem in findings:
        layer = layer_of(path)
        pattern = _LAYER.sub("blocks.{i}.", path) if layer is not None else path
        groups.setdefault((pattern, problem), []).append(str(layer))
    lines = []
    for (pattern, problem), layers in groups.items():
        shown = layers[0] if len(layers) == 1 else "{" + ",".join(layers) + "}"
        lines.append(f"{pattern.replace('{i}', shown)} {problem}")
    if len(lines) > limit:
        lines = [*lines[:limit], f"... and {len(lines) - limit} more"]
    return lines


def failure_hint(record: dict[str, Any], shape: contract.ModelShape | None) -> str:
    """A hint for a student exception that betrays a classic loader mistake."""
    message = f"{record.get('type', '')}: {record.get('message', '')}"
    if shape is not None:
        layer = re.search(r"transformer\.h\.(\d+)\.", message)
        if (layer and int(layer.group(1)) >= shape.num_layers) or (
            record.get("type") == "IndexError" and "list index" in message
        ):
            return (f" This checkpoint has {shape.num_layers} layers: take the layer count from the "
                    "checkpoint's config (hf_model.config.n_layer), not a fixed 12.")  # fmt: skip
        if "768" in message and shape.d_model != 768:
            return f" This checkpoint has d_model={shape.d_model}: do not hard-wire 768."
    if any(
        s in message
        for s in ("huggingface.co", "offline", "LocalEntryNotFound", "couldn't connect", "Repository Not Found")
    ):
        return (" The grader passes a local checkpoint directory as model_name and has no internet: "
                "load model_name, not a fixed 'gpt2'.")  # fmt: skip
    if "broadcast" in message or ("shapes" in message and "not aligned" in message):
        return " A shape mismatch: was the model built with the checkpoint's sizes, and are weights (in, out)?"
    return ""
