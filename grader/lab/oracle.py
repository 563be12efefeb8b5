"""A NumPy GPT-2 forward over contract attributes, with switchable classic mistakes.

The grader runs it in the trusted process: with no variant it reproduces
HuggingFace within float32 noise (and gives the per-sub-step activations that
a student's trace is compared with); with a variant it reproduces a known
decoder mistake, so that a student's logits can be recognised as "GPT-2 with
exact-erf GELU" or "GPT-2 without a causal mask".
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, fields

import numpy as np

Weights = dict[str, np.ndarray]
Trace = list[tuple[str, np.ndarray]]


@dataclass(frozen=True)
class Variant:
    """How a decoder computes; the defaults are GPT-2's."""

    gelu: str = "tanh"  # "tanh" (gelu_new) | "erf" (exact) | "relu"
    causal: bool = True
    scale: str = "sqrt_head"  # 1/sqrt(d_head) | "sqrt_model" | "head" (1/d_head) | "none"
    heads: str = "split"  # "split" | "reshape" (no transpose) | "interleaved"
    position_offset: int = 0  # positions start at this index
    ln_variance: str = "biased"  # "biased" (divide by d) | "unbiased" (by d - 1)
    residual_dtype: str = "float32"  # "float16" rounds the residual stream after every step
    softmax_axis: int = -1

    def changes(self) -> dict[str, object]:
        """The fields that differ from GPT-2's behaviour."""
        default = Variant()
        return {
            f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) != getattr(default, f.name)
        }


def _gelu(kind: str) -> Callable[[np.ndarray], np.ndarray]:
    if kind == "tanh":
        return lambda x: 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))
    if kind == "erf":
        erf = np.vectorize(math.erf, otypes=[np.float64])
        return lambda x: (0.5 * x * (1.0 + erf(x / math.sqrt(2.0)))).astype(x.dtype)
    if kind == "relu":
        return lambda x: np.maximum(x, 0)
    raise ValueError(f"unknown GELU kind {kind!r}")


def _softmax(x: np.ndarray, axis: int) -> np.ndarray:
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _layer_norm(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, eps: float, variance: str) -> np.ndarray:
    mean = x.mean(axis=-1, keepdims=True)
    var = x.var(axis=-1, keepdims=True, ddof=1 if variance == "unbiased" else 0)
    return (x - mean) / np.sqrt(var + eps) * gamma + beta


def _split_heads(x: np.ndarray, n_head: int, how: str) -> np.ndarray:
    T, d = x.shape
    dh = d // n_head
    if how == "split":
        return x.reshape(T, n_head, dh).transpose(1, 0, 2)  # [T, d] -> [H, T, dh]
    if how == "reshape":
        return x.reshape(n_head, T, dh)  # the classic bug: reshape without moving the head axis
    if how == "interleaved":
        return x.reshape(T, dh, n_head).transpose(2, 0, 1)  # head h takes columns h, h+H, ...
    raise ValueError(f"unknown head split {how!r}")


def _merge_heads(x: np.ndarray, how: str) -> np.ndarray:
    H, T, dh = x.shape
    if how == "split":
        return x.transpose(1, 0, 2).reshape(T, H * dh)
    if how == "reshape":
        return x.reshape(T, H * dh)
    return x.transpose(1, 2, 0).reshape(T, H * dh)  # interleaved


def _scale(kind: str, d_model: int, d_head: int) -> float:
    return {"sqrt_head": 1 / math.sqrt(d_head), "sqrt_model": 1 / math.sqrt(d_model),
            "head": 1 / d_head, "none": 1.0}[kind]  # fmt: skip


def forward(
    weights: Weights,
    ids: np.ndarray,
    n_head: int,
    variant: Variant = Variant(),
    eps: float = 1e-5,
    trace: Trace | None = None,
) -> np.ndarray:
    """Logits of GPT-2 for ``ids`` of shape (T,) or (B, T); appends sub-step activations to ``trace``."""
    ids = np.asarray(ids)
    if ids.ndim == 2:
        return np.stack(
            [forward(weights, row, n_head, variant, eps, trace if b == 0 else None) for b, row in enumerate(ids)]
        )
    dtype = np.float32
    gelu = _gelu(variant.gelu)
    round_residual = (
        (lambda x: x.astype(np.float16).astype(dtype)) if variant.residual_dtype == "float16" else (lambda x: x)
    )
    record = trace.append if trace is not None else (lambda item: None)
    T = ids.shape[0]
    d = weights["token_embedding.weight"].shape[1]
    n_layer = sum(1 for k in weights if k.endswith(".ln1.gamma"))
    positions = np.arange(T) + variant.position_offset
    x = round_residual(weights["token_embedding.weight"][ids] + weights["pos_embedding.weight"][positions])  # [T, d]
    record(("embedding", x))
    future = np.triu(np.ones((T, T), dtype=bool), k=1)
    for i in range(n_layer):
        w = {k[len(f"blocks.{i}.") :]: v for k, v in weights.items() if k.startswith(f"blocks.{i}.")}
        h = _layer_norm(x, w["ln1.gamma"], w["ln1.beta"], eps, variant.ln_variance)
        record((f"layer {i} ln1", h))
        q, k, v = (_split_heads(h @ w[f"attn.W_{n}"] + w[f"attn.b_{n}"], n_head, variant.heads) for n in "QKV")
        scores = (q @ k.transpose(0, 2, 1)) * _scale(variant.scale, d, d // n_head)  # [H, T, T]
        if variant.causal:
            scores = np.where(future, -np.inf, scores)
        a = _merge_heads(_softmax(scores, variant.softmax_axis) @ v, variant.heads) @ w["attn.W_O"] + w["attn.b_O"]
        record((f"layer {i} attention", a))
        x = round_residual(x + a)
        record((f"layer {i} residual after attention", x))
        h = _layer_norm(x, w["ln2.gamma"], w["ln2.beta"], eps, variant.ln_variance)
        record((f"layer {i} ln2", h))
        m = gelu(h @ w["ffn.W1"] + w["ffn.b1"]) @ w["ffn.W2"] + w["ffn.b2"]  # [T, d] -> [T, d_ff] -> [T, d]
        record((f"layer {i} mlp", m))
        x = round_residual(x + m)
        record((f"layer {i} residual after mlp", x))
    x = _layer_norm(x, weights["ln_f.gamma"], weights["ln_f.beta"], eps, variant.ln_variance)
    record(("ln_f", x))
    logits = x @ weights["token_embedding.weight"].T  # tied head
    record(("head", logits))
    return logits.astype(dtype)
