"""Say what a wrong array holds instead: a transpose, another third of c_attn, another layer's tensor.

Every attribute's expected value is a candidate, and so are the arrays that classic
mistakes produce from the checkpoint's tensors (the transpose; the fused ``c_attn`` whole,
split along the wrong axis, or split into interleaved columns). A wrong array is compared
with the candidates of its shape, so the feedback names the mistake instead of printing a
difference. Each finding is data: (path, kind, words), and the kind is what the class
summary counts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from lab04_checks import contract

from .answers import QKV, source_text

_LAYER = re.compile(r"^blocks\.(\d+)\.")
_SAMPLE = 64  # entries compared before a full comparison, to keep the search fast

Finding = tuple[str, str, str]  # (attribute path, kind, what is wrong in words)


@dataclass(frozen=True)
class Candidate:
    """A known array: the expected value of ``path`` (possibly transposed), or one made from a HF tensor."""

    path: str
    transposed: bool
    array: np.ndarray
    hf_name: str = ""  # for arrays made from a whole HuggingFace tensor
    how: str = ""  # "" (the whole fused tensor) | "wrong_axis" | "interleaved", with the third in ``third``
    third: int = 0


def layer_of(path: str) -> int | None:
    match = _LAYER.match(path)
    return int(match.group(1)) if match else None


def leaf(path: str) -> str:
    """``blocks.3.attn.W_O`` -> ``attn.W_O``: the same mistake in every layer counts once."""
    return _LAYER.sub("", path)


class CandidateIndex:
    """Expected arrays and classic wrong ones, indexed by shape, with a cheap check before a full comparison."""

    def __init__(self, expected: dict[str, np.ndarray], hf_state: dict[str, np.ndarray] | None = None):
        self.num_layers = sum(1 for p in expected if p.endswith(".ln1.gamma"))
        self._by_shape: dict[tuple[int, ...], list[Candidate]] = {}
        for path, array in expected.items():
            self._add(Candidate(path, False, array))
            if array.ndim == 2:
                self._add(Candidate(path, True, array.T))
        for name, array in (hf_state or {}).items():
            if "c_attn" not in name:
                continue
            self._add(Candidate(name, False, array, hf_name=name))  # not split at all
            if array.ndim == 2:
                self._add(Candidate(name, True, array.T, hf_name=name))
            d = array.shape[-1] // 3
            for third in range(3):
                if array.ndim == 2 and array.shape[0] == d:
                    # reshape(3, d, d)[i]: splits the rows, not the columns
                    self._add(Candidate(name, False, array.reshape(3, d, d)[third], name, "wrong_axis", third))
                self._add(Candidate(name, False, array[..., third::3], name, "interleaved", third))
        self._samples: dict[tuple[int, ...], tuple[tuple[np.ndarray, ...], np.ndarray, np.ndarray]] = {}
        self._scales: dict[tuple[tuple[int, ...], int], float] = {}

    def _add(self, candidate: Candidate) -> None:
        self._by_shape.setdefault(tuple(candidate.array.shape), []).append(candidate)

    def _sampled(self, shape: tuple[int, ...]) -> tuple[tuple[np.ndarray, ...], np.ndarray, np.ndarray]:
        """Where the cheap check looks in arrays of ``shape``, every candidate's entries there, and their scales."""
        if shape not in self._samples:
            size = int(np.prod(shape))
            where = np.unravel_index(np.linspace(0, size - 1, min(_SAMPLE, size)).astype(np.int64), shape)
            # Indexed in place: flattening a transposed candidate would copy it whole, on every search.
            values = np.stack([c.array[where].astype(np.float64) for c in self._by_shape[shape]])
            self._samples[shape] = (where, values, np.maximum(1.0, np.max(np.abs(values), axis=1)))
        return self._samples[shape]

    def find(self, array: np.ndarray, rtol: float = 1e-6) -> Candidate | None:
        """The first candidate equal to ``array`` (within ``rtol`` of its scale), or None."""
        shape = tuple(array.shape)
        pool = self._by_shape.get(shape, [])
        if not pool or array.size == 0:
            return None
        where, values, scales = self._sampled(shape)
        close = np.max(np.abs(values - array[where].astype(np.float64)), axis=1) <= rtol * scales
        for k in np.flatnonzero(close):
            other = pool[k].array
            # In float32 when both are: the difference of two close float32 values is exact.
            delta = array - other if array.dtype == other.dtype == np.float32 else array.astype(np.float64) - other
            if np.max(np.abs(delta)) <= rtol * self._scale(shape, k):
                return pool[k]
        return None

    def _scale(self, shape: tuple[int, ...], k: int) -> float:
        key = (shape, k)
        if key not in self._scales:
            self._scales[key] = max(1.0, float(np.max(np.abs(self._by_shape[shape][k].array))))
        return self._scales[key]


def explain(path: str, got: np.ndarray, index: CandidateIndex) -> tuple[str, str] | None:
    """(kind, words) for what ``got`` (the wrong value of attribute ``path``) holds instead, or None."""
    cand = index.find(got)
    if cand is None:
        return None
    n = index.num_layers
    own_leaf = path.rsplit(".", 1)[-1]
    if cand.hf_name:
        fused = re.sub(r"^transformer\.h\.\d+\.", "", cand.hf_name)
        if cand.how == "wrong_axis":
            return "wrong_axis_split", (
                f"holds part {cand.third} of {fused} split along the wrong axis (its rows, as "
                "reshape(3, d, d) does): split the columns, w[..., i*d:(i+1)*d] "
                "(np.split(w, 3, axis=-1))"
            )
        if cand.how == "interleaved":
            return "interleaved_split", (
                f"holds every third column of {fused} (w[..., {cand.third}::3]): Q, K and V "
                "are contiguous blocks of d_model columns each, not interleaved"
            )
        flip = " transposed" if cand.transposed else ""
        return "fused_c_attn", (
            f"holds the whole fused {fused}{flip}, not one third of it: split the last axis "
            "into 3 equal parts (width // 3, not a fixed 768)"
        )
    if cand.path == path:
        return "transpose", (
            "holds the transpose of the right array: Conv1D weights are already (in, out), "
            "the layout x @ W needs, so no .T"
        )
    flip = "the transpose of " if cand.transposed else ""
    own_layer, their_layer = layer_of(path), layer_of(cand.path)
    their_leaf = cand.path.rsplit(".", 1)[-1]
    qkv = (
        own_leaf[:2] in ("W_", "b_")
        and their_leaf[:2] == own_leaf[:2]
        and own_leaf[2:] in QKV
        and their_leaf[2:] in QKV
    )
    if own_layer == their_layer and qkv:
        return "qkv_permuted", (
            f"holds {flip}the {their_leaf[2]} part of c_attn instead of the {own_leaf[2]} part: "
            "the columns are Q, K, V in that order, d_model each"
        )
    same_norm = path.rsplit(".", 1)[0] == cand.path.rsplit(".", 1)[0]
    if same_norm and {own_leaf, their_leaf} == {"gamma", "beta"}:
        which = "bias" if their_leaf == "beta" else "weight"
        return "gamma_beta_swapped", f"holds {flip}the {which} of its LayerNorm: gamma and beta are swapped"
    if their_layer is not None and own_layer is not None and own_layer != their_layer:
        return "other_layer", (
            f"holds {flip}layer {their_layer}'s tensor ({source_text(cand.path, n)}) instead of its own layer's"
        )
    return "other_tensor", f"holds {flip}{source_text(cand.path, n)}, which belongs to {cand.path}"


def describe_value(array: np.ndarray) -> str | None:
    """Recognise tell-tale values: all zeros, all ones, a constant."""
    if array.size == 0:
        return "is empty"
    lo, hi = float(np.min(array)), float(np.max(array))
    if lo == hi:
        return {0.0: "is all zeros", 1.0: "is all ones"}.get(lo, f"is the constant {lo:g}")
    return None


def compare_one(
    path: str,
    want: np.ndarray,
    have: Any,
    index: CandidateIndex,
    unchanged: bool = False,
    rtol: float = contract.WEIGHTS_RTOL,
) -> tuple[Finding | None, float]:
    """The finding for one attribute (None when right) and its max difference."""
    if have is None or isinstance(have, str):
        return (path, "missing", have or "is missing"), 0.0
    if have.shape != want.shape:
        why = explain(path, have.astype(np.float32, copy=False), index) if have.dtype.kind == "f" else None
        text = f"has shape {tuple(have.shape)}, expected {tuple(want.shape)}" + (f"; it {why[1]}" if why else "")
        return (path, why[0] if why else "wrong_shape", text), 0.0
    if have.dtype.kind not in "fiu":
        return (path, "wrong_dtype", f"has dtype {have.dtype}, expected float32"), 0.0
    # In float32 when both are: the difference of two close float32 values is exact.
    both32 = have.dtype == np.float32 and want.dtype == np.float32
    delta = have - want if both32 else have.astype(np.float64) - want
    diff = float(np.max(np.abs(delta))) if want.size else 0.0
    values_ok = diff <= rtol * max(1.0, float(np.max(np.abs(want)))) if want.size else True
    if values_ok and have.dtype != np.float32:
        return (path, "float64", f"has the right values but dtype {have.dtype}: store float32 (np.float32)"), diff
    if values_ok:
        return None, diff
    if unchanged:
        return (path, "never_loaded", "is unchanged since GPTModel(...) created it: it was never loaded"), diff
    found = explain(path, have.astype(np.float32), index)
    if found:
        return (path, *found), diff
    value = describe_value(have)
    if value:
        return (path, "constant", value), diff
    return (path, "wrong_values", f"does not match {source_text(path, index.num_layers)} (max |diff| {diff:.3g})"), diff


def attribute_findings(
    expected: dict[str, np.ndarray],
    got: dict[str, Any],
    index: CandidateIndex,
    unchanged: dict[str, bool] | None = None,
) -> tuple[list[Finding], float]:
    """A finding for every wrong attribute, and the largest difference among same-shape ones."""
    findings, worst = [], 0.0
    for path, want in expected.items():
        finding, diff = compare_one(path, want, got.get(path), index, bool(unchanged and unchanged.get(path)))
        worst = max(worst, diff)
        if finding:
            findings.append(finding)
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
    out = [
        (
            f"blocks.{i}.*",
            f"({len(paths)} attributes) hold layer {j}'s tensors instead of layer {i}'s: "
            "check the layer index in the mapping",
        )
        for (i, j), paths in collapsed.items()
    ]
    return out + [(p, problem) for p, problem in findings if p not in hidden]


def group_findings(findings: list[Finding], limit: int = 8) -> list[str]:
    """Lines like ``blocks.{0,1}.attn.W_Q holds the transpose ...``, at most ``limit`` of them."""
    findings = _collapse_layer_swaps([(path, words) for path, _, words in findings])
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


def mistake_keys(findings: list[Finding]) -> list[tuple[str, str]]:
    """(key, label) per distinct mistake, layer-agnostic: one Q/K swap in every layer counts once."""
    out: dict[str, str] = {}
    for path, kind, words in findings:
        name = leaf(path)
        if kind == "qkv_permuted":
            name = "attn.W_QKV" if name.startswith("attn.W_") else "attn.b_QKV"
        elif kind == "gamma_beta_swapped":
            name = name.rsplit(".", 1)[0]
        label_words = re.sub(r"\d+(\.\d+)?(e-?\d+)?", "N", words.split(":")[0])
        out.setdefault(f"{name}:{kind}", f"{name} {label_words}")
    return list(out.items())


def cause_key(path: str) -> str:
    """The root-cause key of a wrong attribute, the same in every tier that it breaks."""
    return f"attribute {leaf(path)}"


def failure_hint(message: str, kind: str, shape: contract.ModelShape | None) -> str:
    """A hint for a student exception that betrays a classic loader mistake."""
    text = f"{kind}: {message}"
    if shape is not None:
        layer = re.search(r"transformer\.h\.(\d+)\.", text)
        if (layer and int(layer.group(1)) >= shape.num_layers) or (kind == "IndexError" and "list index" in text):
            return (
                f"This checkpoint has {shape.num_layers} layers: take the layer count from the "
                "checkpoint's config (hf_model.config.n_layer), not a fixed 12."
            )
        if re.search(r"(?<!\d)768(?!\d)", text) and shape.d_model != 768:
            return f"This checkpoint has d_model={shape.d_model}: do not hard-wire 768."
    if any(
        s in text
        for s in (
            "huggingface.co",
            "offline",
            "LocalEntryNotFound",
            "couldn't connect",
            "Repository Not Found",
            "is not a local folder",
        )
    ):
        return (
            "The grader passes a local checkpoint directory as model_name and has no internet: "
            "load model_name, not a fixed 'gpt2'."
        )
    if "broadcast" in text or ("shapes" in text and "not aligned" in text):
        return "A shape mismatch: was the model built with the checkpoint's sizes, and are weights (in, out)?"
    if kind == "NotImplementedError":
        return "This is still the template's stub: write the function's body."
    return ""
