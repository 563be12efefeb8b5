"""Expected values of the public checkpoint, stored as data, and the words for what a wrong value holds.

``grade template build`` writes the data (``tests/expected/public-tiny.json`` in the
template) on the grader's trusted side. Nothing here computes an expected value: an
attribute is judged by comparing its digest with the stored digests (its own, its
transpose's, the other attributes'), the logits by comparing a stored sample.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import numpy as np

from .contract import logits_tolerance

FORMAT = 1
DATA_FILE = "public-tiny.json"
_BLOCK = re.compile(r"^blocks\.(\d+)\.(.+)$")
_QKV_W, _QKV_B = {"W_Q", "W_K", "W_V"}, {"b_Q", "b_K", "b_V"}


def digest(array: np.ndarray) -> str:
    """sha256 of an array's dtype, shape and C-ordered bytes (the grader computes the very same)."""
    plain = np.ascontiguousarray(array)
    h = hashlib.sha256(f"{plain.dtype.str}{list(plain.shape)}".encode())
    h.update(memoryview(plain).cast("B") if plain.size else b"")
    return h.hexdigest()


def describe(value: Any) -> str:
    """A short name for what a student's function returned."""
    if isinstance(value, np.ndarray):
        return f"an array of shape {value.shape} and dtype {value.dtype}"
    module = type(value).__module__ or ""
    if module.startswith("torch"):
        return f"a torch {type(value).__name__}"
    return f"a {type(value).__name__}"


class Published:
    """The stored expected values of one checkpoint."""

    def __init__(self, data: dict[str, Any]):
        if data.get("format") != FORMAT:
            raise ValueError(f"expected-values format {data.get('format')!r}, this code reads {FORMAT}")
        self.data = data
        self.checkpoint: dict[str, Any] = data["checkpoint"]
        self.attributes: dict[str, dict[str, Any]] = data["attributes"]
        self.inputs: list[dict[str, Any]] = data["logits"]
        self.texts: list[str] = data["compare_texts"]
        self.generate: dict[str, Any] = data["generate"]
        self._holder = {entry["digest"]: path for path, entry in self.attributes.items()}
        self._transposed = {entry["transpose"]: path for path, entry in self.attributes.items() if "transpose" in entry}

    @classmethod
    def load(cls, path: Path) -> Published:
        """Read the JSON that ``grade template build`` wrote."""
        return cls(json.loads(Path(path).read_text()))

    def problem(self, path: str, value: Any, before: str | None = None) -> tuple[str, str] | None:
        """``(kind, words)`` when the attribute at ``path`` does not hold the right array, else None."""
        entry = self.attributes[path]
        shape = tuple(entry["shape"])
        if not isinstance(value, np.ndarray):
            if (type(value).__module__ or "").startswith("torch"):
                return "tensor", "is a torch tensor: store NumPy arrays (tensor.detach().numpy())"
            return "type", f"is {describe(value)}, not a NumPy array"
        if value.dtype != np.float32:
            return "dtype", f"has dtype {value.dtype}: store float32, as the checkpoint is"
        if value.shape != shape:
            if value.shape == shape[::-1] and len(shape) == 2:
                return "transpose", (
                    f"has shape {value.shape}, the transpose of {shape}: GPT-2's Conv1D weights "
                    "are already (in, out), as x @ W wants; no .T"
                )
            return "shape", f"has shape {value.shape}, expected {shape}"
        got = digest(value)
        if got == entry["digest"]:
            return None
        if before is not None and got == before:
            return "unchanged", "was not loaded: it still holds GPTModel's random initial values"
        if got == entry.get("transpose"):
            return "transpose", (
                "holds the transpose of the right array: GPT-2's Conv1D weights are already "
                "(in, out), as x @ W wants; no .T"
            )
        if got in self._holder:
            other = self._holder[got]
            return relation(path, other), f"holds what {_seen_from(path, other)} should hold{why(path, other)}"
        if got in self._transposed:
            return "wrong", f"holds the transpose of what {self._transposed[got]} should hold"
        if not np.all(np.isfinite(value)):
            return "wrong", "holds NaN or infinite values"
        return "wrong", "holds values that are not the checkpoint's for this attribute"

    def logits_problem(self, logits: Any, item: dict[str, Any]) -> str | None:
        """What is wrong with a forward pass's logits on a stored input, or None when they match."""
        ids = np.asarray(item["ids"])
        want = (*ids.shape, int(self.checkpoint["vocab_size"]))
        if not isinstance(logits, np.ndarray):
            try:
                logits = np.asarray(logits)
            except Exception:  # noqa: BLE001 - whatever it is, it is not logits
                return f"the forward pass returned {describe(logits)}, not an array of logits"
        if logits.shape != want:
            return f"the logits have shape {logits.shape} for ids of shape {ids.shape}; expected {want}"
        columns = np.asarray(item["columns"])
        values = np.asarray(item["values"], dtype=np.float64)
        got = np.asarray(logits[..., columns], dtype=np.float64)
        if not np.all(np.isfinite(got)):
            return "the logits contain NaN or infinite values"
        diff = np.abs(got - values)
        tolerance = logits_tolerance(item["max_abs"])
        worst = float(diff.max())
        if worst <= tolerance:
            return None
        row, position, k = np.unravel_index(int(diff.argmax()), diff.shape)
        first = float(diff[:, 0].max())
        hint = (
            " (so the first token is right: look at attention, the causal mask, positions)"
            if first <= tolerance
            else ""
        )
        return (
            f"the logits differ from GPT-2's by up to {worst:.3g} (batch row {row}, position {position}, token "
            f"{columns[k]}); the tolerance is {tolerance:.2g}. At position 0 alone: {first:.3g}{hint}"
        )


def relation(path: str, other: str) -> str:
    """The kind of mix-up between the attribute ``path`` and the one whose value it holds."""
    a, b = _BLOCK.match(path), _BLOCK.match(other)
    if a and b and a.group(2) == b.group(2):
        return "layer"
    same_block = (a is None and b is None) or (a is not None and b is not None and a.group(1) == b.group(1))
    mine, theirs = path.rsplit(".", 1), other.rsplit(".", 1)
    if same_block and mine[0] == theirs[0] and {mine[1], theirs[1]} <= {"gamma", "beta"}:
        return "gamma_beta"
    leaves = {mine[1], theirs[1]}
    if same_block and (leaves <= _QKV_W or leaves <= _QKV_B):
        return "qkv"
    return "swapped"


def _seen_from(path: str, other: str) -> str:
    """``other`` as seen from ``path``: "this block's attn.W_K" within one block, else its full path."""
    a, b = _BLOCK.match(path), _BLOCK.match(other)
    return f"this block's {b.group(2)}" if a and b and a.group(1) == b.group(1) else other


def why(path: str, other: str) -> str:
    """A hint for a mix-up, after "holds what OTHER should hold"."""
    kind = relation(path, other)
    if kind == "layer":
        return ": the layer index is off"
    if kind == "qkv":
        return ": c_attn holds Q, K and V side by side, in that order"
    if kind == "gamma_beta":
        return ": a LayerNorm's weight is gamma, its bias is beta"
    return ""
