"""GPT-2's forward pass in NumPy, in float64, with switchable classic mistakes. Trusted side only.

The expected logits come from here: float64 over the checkpoint's float32 weights, so
they are GPT-2's exact values and a float32 forward (HuggingFace's or a student's)
sits within float32 noise of them. With a ``Variant`` it reproduces a known decoder
mistake, so that a student's logits can be recognised as "GPT-2 with exact-erf GELU";
its sub-modules also run alone, on the very input a student's sub-module received,
so that the first sub-step that computes wrongly is found even when the drift is small.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import numpy as np

Weights = dict[str, np.ndarray]
Trace = list[tuple[str, np.ndarray]]
EPS = 1e-5
HEAD_CHUNK = 8192  # vocabulary rows per float64 head product, to bound the temporary


@dataclass(frozen=True)
class Variant:
    """How a decoder computes; the defaults are GPT-2's."""

    gelu: str = "tanh"  # "tanh" (gelu_new) | "erf" (exact) | "relu"
    causal: bool = True
    scale: str = "sqrt_head"  # 1/sqrt(d_head) | "sqrt_model" | "head" (1/d_head) | "none"
    heads: str = "split"  # "split" | "reshape" (no transpose) | "interleaved"
    position_offset: int = 0  # positions start at this index
    ln_variance: str = "biased"  # "biased" (divide by d) | "unbiased" (by d - 1)
    ln_eps: str = "inside"  # "inside" sqrt(var + eps) | "outside" sqrt(var) + eps | "none"
    residual_dtype: str = "float64"  # "float16" rounds the residual stream after every step
    softmax_axis: int = -1

    def fits(self, seq_len: int, n_positions: int) -> bool:
        """Whether this decoder can run on ``seq_len`` tokens at all (positions from 1 need one row more)."""
        return seq_len + self.position_offset <= n_positions

    def changes(self) -> dict[str, object]:
        """The fields that differ from GPT-2's behaviour."""
        default = Variant()
        return {
            f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) != getattr(default, f.name)
        }


GPT2 = Variant()


def gelu(x: np.ndarray, kind: str = "tanh") -> np.ndarray:
    if kind == "tanh":
        return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))
    if kind == "erf":
        erf = np.vectorize(math.erf, otypes=[np.float64])
        return 0.5 * x * (1.0 + erf(x / math.sqrt(2.0)))
    if kind == "relu":
        return np.maximum(x, 0)
    raise ValueError(f"unknown GELU kind {kind!r}")


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    e = np.exp(x - np.max(x, axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def layer_norm(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, variant: Variant = GPT2) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    mean = x.mean(axis=-1, keepdims=True)
    var = x.var(axis=-1, keepdims=True, ddof=1 if variant.ln_variance == "unbiased" else 0)
    if variant.ln_eps == "inside":
        denominator = np.sqrt(var + EPS)
    elif variant.ln_eps == "outside":
        denominator = np.sqrt(var) + EPS
    else:
        denominator = np.sqrt(var)
    return (x - mean) / denominator * gamma + beta


def _split_heads(x: np.ndarray, n_head: int, how: str) -> np.ndarray:
    *lead, T, d = x.shape
    dh = d // n_head
    if how == "split":
        return np.swapaxes(x.reshape(*lead, T, n_head, dh), -2, -3)  # [..., T, d] -> [..., H, T, dh]
    if how == "reshape":
        return x.reshape(*lead, n_head, T, dh)  # the classic bug: reshape without moving the head axis
    if how == "interleaved":
        return np.moveaxis(x.reshape(*lead, T, dh, n_head), -1, -3)  # head h takes columns h, h+H, ...
    raise ValueError(f"unknown head split {how!r}")


def _merge_heads(x: np.ndarray, how: str) -> np.ndarray:
    *lead, H, T, dh = x.shape
    if how == "split":
        return np.swapaxes(x, -2, -3).reshape(*lead, T, H * dh)
    if how == "reshape":
        return x.reshape(*lead, T, H * dh)
    return np.moveaxis(x, -3, -1).reshape(*lead, T, H * dh)  # interleaved


def _scale(kind: str, d_model: int, d_head: int) -> float:
    return {"sqrt_head": 1 / math.sqrt(d_head), "sqrt_model": 1 / math.sqrt(d_model), "head": 1 / d_head, "none": 1.0}[
        kind
    ]


def attention(x: np.ndarray, w: Weights, n_head: int, variant: Variant = GPT2) -> np.ndarray:
    """Causal self-attention of one block on ``x`` [..., T, d]; ``w`` holds the block's attn.* weights."""
    x = np.asarray(x, dtype=np.float64)
    T, d = x.shape[-2:]
    q, k, v = (_split_heads(x @ w[f"attn.W_{n}"] + w[f"attn.b_{n}"], n_head, variant.heads) for n in "QKV")
    scores = (q @ np.swapaxes(k, -1, -2)) * _scale(variant.scale, d, d // n_head)  # [..., H, T, T]
    if variant.causal:
        scores = np.where(np.triu(np.ones((T, T), dtype=bool), k=1), -np.inf, scores)
    merged = _merge_heads(softmax(scores, variant.softmax_axis) @ v, variant.heads)
    return merged @ w["attn.W_O"] + w["attn.b_O"]


def mlp(x: np.ndarray, w: Weights, variant: Variant = GPT2) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return (
        gelu(x @ w["ffn.W1"] + w["ffn.b1"], variant.gelu) @ w["ffn.W2"] + w["ffn.b2"]
    )  # [.., d] -> [.., d_ff] -> [.., d]


def block_weights(weights: Weights, i: int) -> Weights:
    prefix = f"blocks.{i}."
    return {k[len(prefix) :]: v for k, v in weights.items() if k.startswith(prefix)}


def block(
    x: np.ndarray, w: Weights, n_head: int, variant: Variant = GPT2, record: Trace | None = None, name: str = ""
) -> np.ndarray:
    """One pre-norm block; appends its sub-steps to ``record`` when given."""
    rnd = _rounder(variant)
    steps: Trace = []
    h = layer_norm(x, w["ln1.gamma"], w["ln1.beta"], variant)
    steps.append((f"{name} ln1", h))
    a = attention(h, w, n_head, variant)
    steps.append((f"{name} attention", a))
    x = rnd(x + a)
    steps.append((f"{name} residual after attention", x))
    h = layer_norm(x, w["ln2.gamma"], w["ln2.beta"], variant)
    steps.append((f"{name} ln2", h))
    m = mlp(h, w, variant)
    steps.append((f"{name} mlp", m))
    x = rnd(x + m)
    steps.append((f"{name} residual after mlp", x))
    if record is not None:
        record += steps
    return x


def _rounder(variant: Variant):
    if variant.residual_dtype == "float16":
        return lambda x: x.astype(np.float16).astype(np.float64)
    return lambda x: x


def head(h: np.ndarray, wte: np.ndarray) -> np.ndarray:
    """Logits ``h @ wte.T`` in float64, a slice of the vocabulary at a time."""
    h = np.asarray(h, dtype=np.float64)
    out = np.empty((*h.shape[:-1], wte.shape[0]), dtype=np.float64)
    rows = np.empty((min(HEAD_CHUNK, wte.shape[0]), wte.shape[1]), dtype=np.float64)  # reused: no fresh pages per slice
    for start in range(0, wte.shape[0], HEAD_CHUNK):
        chunk = rows[: min(HEAD_CHUNK, wte.shape[0] - start)]
        chunk[...] = wte[start : start + len(chunk)]
        np.matmul(h, chunk.T, out=out[..., start : start + len(chunk)])
    return out


def num_layers(weights: Weights) -> int:
    return sum(1 for k in weights if k.endswith(".ln1.gamma"))


def hidden(
    weights: Weights, ids: np.ndarray, n_head: int, variant: Variant = GPT2, trace: Trace | None = None
) -> np.ndarray:
    """The final hidden states (after ln_f) for ``ids`` [..., T]; the first row's sub-steps go to ``trace``."""
    ids = np.asarray(ids)
    T = ids.shape[-1]
    positions = np.arange(T) + variant.position_offset
    x = weights["token_embedding.weight"][ids].astype(np.float64) + weights["pos_embedding.weight"][positions]
    x = _rounder(variant)(x)
    first = (lambda a: a[(0,) * (a.ndim - 2)]) if ids.ndim > 1 else (lambda a: a)
    record: Trace | None = [] if trace is not None else None
    if record is not None:
        record.append(("embedding", x))
    for i in range(num_layers(weights)):
        x = block(x, block_weights(weights, i), n_head, variant, record, f"layer {i}")
    x = layer_norm(x, weights["ln_f.gamma"], weights["ln_f.beta"], variant)
    if record is not None:
        record.append(("ln_f", x))
        trace += [(name, first(a)) for name, a in record]
    return x


def forward(
    weights: Weights, ids: np.ndarray, n_head: int, variant: Variant = GPT2, trace: Trace | None = None
) -> np.ndarray:
    """GPT-2's float64 logits for ``ids`` of shape (T,) or (B, T); sub-steps of the first row go to ``trace``."""
    h = hidden(weights, ids, n_head, variant, trace)
    logits = head(h, weights["token_embedding.weight"])
    if trace is not None:
        trace.append(("head", logits[(0,) * (logits.ndim - 2)] if logits.ndim > 2 else logits))
    return logits
