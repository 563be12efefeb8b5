"""A GPT-2-style decoder in NumPy (the Lab 03 solution).

Float32 throughout. Every weight is used as ``x @ W + b`` with ``W`` in
(in_features, out_features) layout, the layout of HuggingFace's ``Conv1D``,
so GPT-2 weights load without any transpose.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

DTYPE = np.float32


@dataclass(frozen=True)
class GPTConfig:
    """Hyper-parameters of a GPT-2-style model."""

    vocab_size: int = 50257
    d_model: int = 768
    num_layers: int = 12
    num_heads: int = 12
    d_ff: int = 3072
    max_seq_len: int = 1024
    eps: float = 1e-5


def gelu(x: np.ndarray) -> np.ndarray:
    """GELU with the tanh approximation, as GPT-2 uses it (``gelu_new``)."""
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def softmax(x: np.ndarray) -> np.ndarray:
    """Softmax over the last axis, shifted by the maximum for stability."""
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _normal(shape: tuple[int, ...], rng: np.random.Generator, std: float = 0.02) -> np.ndarray:
    return (rng.standard_normal(shape) * std).astype(DTYPE)


class Embedding:
    """A lookup table: ``emb(ids)`` returns the rows ``weight[ids]``."""

    def __init__(self, num_embeddings: int, dim: int, rng: np.random.Generator):
        self.weight = _normal((num_embeddings, dim), rng)  # [N, d]

    def __call__(self, ids: np.ndarray) -> np.ndarray:
        return self.weight[ids]  # [...] -> [..., d]


class LayerNorm:
    """LayerNorm over the last axis, with the biased variance as in PyTorch."""

    def __init__(self, dim: int, eps: float = 1e-5):
        self.gamma = np.ones(dim, dtype=DTYPE)
        self.beta = np.zeros(dim, dtype=DTYPE)
        self.eps = eps

    def __call__(self, x: np.ndarray) -> np.ndarray:
        mean = x.mean(axis=-1, keepdims=True)
        var = x.var(axis=-1, keepdims=True)  # biased (divides by d), like torch
        return (x - mean) / np.sqrt(var + self.eps) * self.gamma + self.beta


class MultiHeadAttention:
    """Causal multi-head self-attention."""

    def __init__(self, d_model: int, num_heads: int, rng: np.random.Generator):
        assert d_model % num_heads == 0, "d_model must be divisible by num_heads"
        self.num_heads = num_heads
        self.W_Q = _normal((d_model, d_model), rng)
        self.W_K = _normal((d_model, d_model), rng)
        self.W_V = _normal((d_model, d_model), rng)
        self.W_O = _normal((d_model, d_model), rng)
        self.b_Q = np.zeros(d_model, dtype=DTYPE)
        self.b_K = np.zeros(d_model, dtype=DTYPE)
        self.b_V = np.zeros(d_model, dtype=DTYPE)
        self.b_O = np.zeros(d_model, dtype=DTYPE)

    def _split_heads(self, x: np.ndarray) -> np.ndarray:
        *batch, T, d = x.shape
        x = x.reshape(*batch, T, self.num_heads, d // self.num_heads)  # [..., T, H, dh]
        return np.swapaxes(x, -2, -3)  # [..., H, T, dh]

    def __call__(self, x: np.ndarray) -> np.ndarray:
        *batch, T, d = x.shape
        q = self._split_heads(x @ self.W_Q + self.b_Q)  # [..., T, d] -> [..., H, T, dh]
        k = self._split_heads(x @ self.W_K + self.b_K)
        v = self._split_heads(x @ self.W_V + self.b_V)
        scores = q @ np.swapaxes(k, -1, -2) / math.sqrt(d // self.num_heads)  # [..., H, T, T]
        future = np.triu(np.ones((T, T), dtype=bool), k=1)  # position t sees 0..t only
        scores = np.where(future, -np.inf, scores)
        out = softmax(scores) @ v  # [..., H, T, dh]
        out = np.swapaxes(out, -2, -3).reshape(*batch, T, d)  # merge heads: [..., T, d]
        return out @ self.W_O + self.b_O


class FeedForward:
    """The position-wise MLP: ``gelu(x @ W1 + b1) @ W2 + b2``."""

    def __init__(self, d_model: int, d_ff: int, rng: np.random.Generator):
        self.W1 = _normal((d_model, d_ff), rng)
        self.b1 = np.zeros(d_ff, dtype=DTYPE)
        self.W2 = _normal((d_ff, d_model), rng)
        self.b2 = np.zeros(d_model, dtype=DTYPE)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return gelu(x @ self.W1 + self.b1) @ self.W2 + self.b2  # [..., d] -> [..., d_ff] -> [..., d]


class TransformerBlock:
    """A pre-LayerNorm block: attention and MLP, each added to the residual stream."""

    def __init__(self, d_model: int, num_heads: int, d_ff: int, rng: np.random.Generator, eps: float = 1e-5):
        self.ln1 = LayerNorm(d_model, eps)
        self.attn = MultiHeadAttention(d_model, num_heads, rng)
        self.ln2 = LayerNorm(d_model, eps)
        self.ffn = FeedForward(d_model, d_ff, rng)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = x + self.attn(self.ln1(x))
        return x + self.ffn(self.ln2(x))


class GPTModel:
    """GPT-2: token and position embeddings, a stack of blocks, a final LayerNorm, a tied head."""

    def __init__(
        self,
        vocab_size: int,
        d_model: int,
        num_layers: int,
        num_heads: int,
        d_ff: int,
        max_seq_len: int,
        eps: float = 1e-5,
        seed: int = 0,
    ):
        rng = np.random.default_rng(seed)
        self.config = GPTConfig(vocab_size, d_model, num_layers, num_heads, d_ff, max_seq_len, eps)
        self.token_embedding = Embedding(vocab_size, d_model, rng)
        self.pos_embedding = Embedding(max_seq_len, d_model, rng)
        self.blocks = [TransformerBlock(d_model, num_heads, d_ff, rng, eps) for _ in range(num_layers)]
        self.ln_f = LayerNorm(d_model, eps)

    @classmethod
    def from_config(cls, config: GPTConfig) -> GPTModel:
        """Build a model from a ``GPTConfig``."""
        return cls(
            config.vocab_size,
            config.d_model,
            config.num_layers,
            config.num_heads,
            config.d_ff,
            config.max_seq_len,
            config.eps,
        )

    def forward(self, ids: np.ndarray) -> np.ndarray:
        """Logits for token ids of shape (T,) or (B, T): (T, vocab) or (B, T, vocab)."""
        ids = np.asarray(ids)
        T = ids.shape[-1]
        if self.config.max_seq_len < T:
            raise ValueError(f"sequence of {T} tokens is longer than max_seq_len={self.config.max_seq_len}")
        x = self.token_embedding(ids) + self.pos_embedding(np.arange(T))  # [..., T, d]
        for block in self.blocks:
            x = block(x)
        x = self.ln_f(x)
        return x @ self.token_embedding.weight.T  # tied head: [..., T, d] -> [..., T, vocab]

    __call__ = forward
