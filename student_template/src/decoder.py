"""A GPT-2 decoder in NumPy (the Lab 03 solution), float32 throughout.

Every weight is used as ``x @ W + b`` with ``W`` stored (in_features, out_features),
the layout of HuggingFace's ``Conv1D``, so GPT-2 checkpoints load with no transpose.
Shapes in comments: B batch, T sequence length, d d_model, H heads, d_k = d // H, V vocab.
"""

from __future__ import annotations

import math

import numpy as np

DTYPE = np.float32
INIT_STD = 0.02  # GPT-2's initializer_range

# One seeded generator for initialisation and dropout: runs are reproducible, and
# no global NumPy state is touched.
_rng = np.random.default_rng(0)


def _normal(*shape: int) -> np.ndarray:
    """Random float32 weights with GPT-2's standard deviation."""
    return (_rng.standard_normal(shape) * INIT_STD).astype(DTYPE)


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Softmax along ``axis``, shifted by the maximum so that ``exp`` cannot overflow."""
    e = np.exp(x - np.max(x, axis=axis, keepdims=True))  # largest term becomes exp(0) = 1
    return e / np.sum(e, axis=axis, keepdims=True)


def gelu(x: np.ndarray) -> np.ndarray:
    """GELU with the tanh approximation, the one GPT-2 was trained with (``gelu_new``)."""
    # Python floats, not NumPy float64 scalars, so that a float32 input stays float32.
    c = math.sqrt(2.0 / math.pi)
    return 0.5 * x * (1.0 + np.tanh(c * (x + 0.044715 * x**3)))


def dropout(x: np.ndarray, rate: float, training: bool = True) -> np.ndarray:
    """Inverted dropout: zero a fraction ``rate`` of ``x`` and rescale, only while training."""
    if not training or rate <= 0:
        return x
    keep = _rng.random(x.shape) >= rate
    return np.where(keep, x / (1.0 - rate), 0).astype(x.dtype, copy=False)


def create_causal_mask(seq_len: int) -> np.ndarray:
    """Boolean [T, T] mask, True above the diagonal: position t may not see t+1, t+2, ..."""
    return np.triu(np.ones((seq_len, seq_len), dtype=bool), k=1)


class LayerNorm:
    """LayerNorm over the last axis: ``gamma * (x - mean) / sqrt(var + eps) + beta``."""

    def __init__(self, d_model: int, eps: float = 1e-5):
        self.d_model = d_model
        self.eps = eps
        self.gamma = np.ones(d_model, dtype=DTYPE)
        self.beta = np.zeros(d_model, dtype=DTYPE)

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Normalise each vector of the last axis: [..., d] -> [..., d]."""
        mean = x.mean(axis=-1, keepdims=True)
        var = x.var(axis=-1, keepdims=True)  # biased (divide by d), as torch's LayerNorm does
        return self.gamma * ((x - mean) / np.sqrt(var + self.eps)) + self.beta

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.forward(x)


class FeedForward:
    """The position-wise MLP: ``gelu(x @ W1 + b1) @ W2 + b2``."""

    def __init__(self, d_model: int, d_ff: int, dropout: float = 0.1):
        self.d_model = d_model
        self.d_ff = d_ff
        self.dropout_rate = dropout
        self.W1 = _normal(d_model, d_ff)
        self.b1 = np.zeros(d_ff, dtype=DTYPE)
        self.W2 = _normal(d_ff, d_model)
        self.b2 = np.zeros(d_model, dtype=DTYPE)

    def forward(self, x: np.ndarray, training: bool = True) -> np.ndarray:
        """[..., d] -> [..., d_ff] -> [..., d]."""
        h = gelu(x @ self.W1 + self.b1)  # [..., d] -> [..., d_ff]
        h = dropout(h, self.dropout_rate, training)
        return h @ self.W2 + self.b2  # [..., d_ff] -> [..., d]

    def __call__(self, x: np.ndarray, training: bool = True) -> np.ndarray:
        return self.forward(x, training)


class MultiHeadAttention:
    """Multi-head self-attention; ``mask`` (True = masked) makes it causal."""

    def __init__(self, d_model: int, num_heads: int, dropout: float = 0.1):
        if d_model % num_heads:
            raise ValueError(f"d_model={d_model} is not divisible by num_heads={num_heads}")
        self.d_model = d_model
        self.num_heads = num_heads
        self.d_k = d_model // num_heads
        self.dropout_rate = dropout
        self.W_Q = _normal(d_model, d_model)
        self.W_K = _normal(d_model, d_model)
        self.W_V = _normal(d_model, d_model)
        self.W_O = _normal(d_model, d_model)
        self.b_Q = np.zeros(d_model, dtype=DTYPE)
        self.b_K = np.zeros(d_model, dtype=DTYPE)
        self.b_V = np.zeros(d_model, dtype=DTYPE)
        self.b_O = np.zeros(d_model, dtype=DTYPE)

    def _split_heads(self, x: np.ndarray) -> np.ndarray:
        """[..., T, d] -> [..., H, T, d_k]: head h owns columns h*d_k .. (h+1)*d_k - 1."""
        x = x.reshape(*x.shape[:-1], self.num_heads, self.d_k)  # [..., T, H, d_k]
        return np.swapaxes(x, -2, -3)  # [..., H, T, d_k]

    def _combine_heads(self, x: np.ndarray) -> np.ndarray:
        """[..., H, T, d_k] -> [..., T, d], the inverse of ``_split_heads``."""
        x = np.swapaxes(x, -2, -3)  # [..., T, H, d_k]
        return x.reshape(*x.shape[:-2], self.d_model)  # [..., T, d]

    def forward(self, x: np.ndarray, mask: np.ndarray | None = None, training: bool = True) -> np.ndarray:
        """[B, T, d] (or [T, d]) -> same shape; ``mask`` is [T, T] or [B, T, T], True = may not attend."""
        q = self._split_heads(x @ self.W_Q + self.b_Q)  # [B, T, d] -> [B, H, T, d_k]
        k = self._split_heads(x @ self.W_K + self.b_K)
        v = self._split_heads(x @ self.W_V + self.b_V)
        scores = (q @ np.swapaxes(k, -1, -2)) * (1.0 / math.sqrt(self.d_k))  # [B, H, T, T]
        if mask is not None:
            mask = np.asarray(mask, dtype=bool)
            if mask.ndim == 3:
                mask = mask[:, None]  # [B, T, T] -> [B, 1, T, T]: the same mask for every head
            # The most negative finite number, as HuggingFace uses: it vanishes in softmax
            # and, unlike -inf, a fully masked row gives no NaN.
            scores = np.where(mask, np.finfo(scores.dtype).min, scores)
        weights = softmax(scores, axis=-1)  # [B, H, T, T], rows sum to 1
        weights = dropout(weights, self.dropout_rate, training)
        out = self._combine_heads(weights @ v)  # [B, H, T, d_k] -> [B, T, d]
        return out @ self.W_O + self.b_O

    def __call__(self, x: np.ndarray, mask: np.ndarray | None = None, training: bool = True) -> np.ndarray:
        return self.forward(x, mask, training)


class TransformerBlock:
    """A pre-LayerNorm block: ``x + attn(ln1(x))``, then ``x + ffn(ln2(x))``."""

    def __init__(self, d_model: int, num_heads: int, d_ff: int, dropout: float = 0.1):
        self.dropout_rate = dropout
        self.ln1 = LayerNorm(d_model)
        self.attn = MultiHeadAttention(d_model, num_heads, dropout)
        self.ln2 = LayerNorm(d_model)
        self.ffn = FeedForward(d_model, d_ff, dropout)

    def forward(self, x: np.ndarray, mask: np.ndarray | None = None, training: bool = True) -> np.ndarray:
        """[B, T, d] -> [B, T, d]; the residual stream is never normalised, only the branches' inputs."""
        a = self.attn(self.ln1(x), mask, training)
        x = x + dropout(a, self.dropout_rate, training)
        return x + self.ffn(self.ln2(x), training)

    def __call__(self, x: np.ndarray, mask: np.ndarray | None = None, training: bool = True) -> np.ndarray:
        return self.forward(x, mask, training)


class TokenEmbedding:
    """Token lookup table: ``forward(ids)`` returns ``weight[ids]``."""

    def __init__(self, vocab_size: int, d_model: int):
        self.vocab_size = vocab_size
        self.d_model = d_model
        self.weight = _normal(vocab_size, d_model)  # [V, d]

    def forward(self, token_ids: np.ndarray) -> np.ndarray:
        """[...] int -> [..., d]."""
        return self.weight[token_ids]

    def __call__(self, token_ids: np.ndarray) -> np.ndarray:
        return self.forward(token_ids)


class PositionalEmbedding:
    """Learned positions: ``forward(T)`` returns the first T rows (an index array also works)."""

    def __init__(self, max_seq_len: int, d_model: int):
        self.max_seq_len = max_seq_len
        self.d_model = d_model
        self.weight = _normal(max_seq_len, d_model)  # [P, d]

    def forward(self, seq_len: int | np.ndarray) -> np.ndarray:
        """int T -> [T, d]; int array of positions [...] -> [..., d]."""
        if np.ndim(seq_len) == 0:
            seq_len = int(seq_len)
            if seq_len > self.max_seq_len:
                raise ValueError(f"seq_len {seq_len} is longer than max_seq_len {self.max_seq_len}")
            return self.weight[:seq_len]
        positions = np.asarray(seq_len)
        if positions.size and positions.max() >= self.max_seq_len:
            raise ValueError(f"position {positions.max()} is past max_seq_len {self.max_seq_len}")
        return self.weight[positions]

    def __call__(self, seq_len: int | np.ndarray) -> np.ndarray:
        return self.forward(seq_len)


class OutputProjection:
    """The language-model head: ``x @ weight.T`` with ``weight`` [V, d], shared with the embedding when tied."""

    def __init__(self, d_model: int, vocab_size: int, weight: np.ndarray | None = None):
        self.d_model = d_model
        self.vocab_size = vocab_size
        # Keep the very object passed in: tying means both layers hold one array.
        self.weight = weight if weight is not None else _normal(vocab_size, d_model)

    def forward(self, x: np.ndarray) -> np.ndarray:
        """[..., d] -> [..., V]."""
        return x @ self.weight.T

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.forward(x)


class GPTModel:
    """GPT-2: token + position embeddings, ``num_layers`` pre-norm blocks, a final LayerNorm, the head."""

    def __init__(
        self,
        vocab_size: int,
        d_model: int,
        num_layers: int,
        num_heads: int,
        d_ff: int,
        max_seq_len: int,
        dropout: float = 0.1,
        tie_weights: bool = True,
    ):
        self.vocab_size = vocab_size
        self.d_model = d_model
        self.num_layers = num_layers
        self.num_heads = num_heads
        self.d_ff = d_ff
        self.max_seq_len = max_seq_len
        self.dropout_rate = dropout
        self.tie_weights = tie_weights
        self.training = True  # the mode of the latest forward pass, like torch's Module.training

        self.token_embedding = TokenEmbedding(vocab_size, d_model)
        self.pos_embedding = PositionalEmbedding(max_seq_len, d_model)
        self.blocks = [TransformerBlock(d_model, num_heads, d_ff, dropout) for _ in range(num_layers)]
        self.ln_f = LayerNorm(d_model)
        tied = self.token_embedding.weight if tie_weights else None
        self.lm_head = OutputProjection(d_model, vocab_size, tied)

    def forward(self, token_ids: np.ndarray, training: bool = True) -> np.ndarray:
        """Logits: int ids [B, T] -> float32 [B, T, V] (or [T] -> [T, V])."""
        self.training = training
        ids = np.asarray(token_ids)
        if ids.ndim == 1:
            return self.forward(ids[None], training)[0]  # [T] -> [1, T] -> [T, V]
        T = ids.shape[-1]
        x = self.token_embedding(ids) + self.pos_embedding(T)  # [B, T, d] + [T, d]
        x = dropout(x, self.dropout_rate, training)
        mask = create_causal_mask(T)  # [T, T], broadcast over batch and heads
        for block in self.blocks:
            x = block(x, mask, training)
        x = self.ln_f(x)
        return self.lm_head(x)  # [B, T, d] -> [B, T, V]

    def __call__(self, token_ids: np.ndarray, training: bool = True) -> np.ndarray:
        return self.forward(token_ids, training)

    def get_num_params(self) -> int:
        """Number of parameters, counting a tied head once (124,439,808 for GPT-2 small)."""
        arrays = [self.token_embedding.weight, self.pos_embedding.weight, self.ln_f.gamma, self.ln_f.beta]
        for b in self.blocks:
            arrays += [b.ln1.gamma, b.ln1.beta, b.ln2.gamma, b.ln2.beta]
            arrays += [b.attn.W_Q, b.attn.W_K, b.attn.W_V, b.attn.W_O, b.attn.b_Q, b.attn.b_K, b.attn.b_V, b.attn.b_O]
            arrays += [b.ffn.W1, b.ffn.b1, b.ffn.W2, b.ffn.b2]
        if self.lm_head.weight is not self.token_embedding.weight:
            arrays.append(self.lm_head.weight)
        return int(sum(a.size for a in arrays))
