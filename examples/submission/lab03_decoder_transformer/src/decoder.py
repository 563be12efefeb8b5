"""Lab 03: a decoder-only transformer (a student's solution)."""

import numpy as np

def softmax(x, axis=-1):
    x = x - np.max(x, axis=axis, keepdims=True)
    e = np.exp(x)
    return e / np.sum(e, axis=axis, keepdims=True)


def gelu(x):
    return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3)))


def dropout(x, rate, training=True):
    if not training or rate == 0:
        return x
    mask = np.random.binomial(1, 1 - rate, x.shape)
    return x * mask / (1 - rate)


def create_causal_mask(seq_len):
    return np.triu(np.ones((seq_len, seq_len), dtype=bool), k=1)


class LayerNorm:
    def __init__(self, d_model, eps=1e-5):
        self.d_model = d_model
        self.eps = eps
        self.gamma = np.ones(d_model, dtype=np.float32)
        self.beta = np.zeros(d_model, dtype=np.float32)

    def forward(self, x):
        mean = x.mean(axis=-1, keepdims=True)
        var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
        return self.gamma * (x - mean) / np.sqrt(var + self.eps) + self.beta

    def __call__(self, x):
        return self.forward(x)


class FeedForward:
    def __init__(self, d_model, d_ff, dropout=0.1):
        self.d_model, self.d_ff, self.dropout_rate = d_model, d_ff, dropout
        self.W1 = (np.random.randn(d_model, d_ff) * 0.02).astype(np.float32)
        self.b1 = np.zeros(d_ff, dtype=np.float32)
        self.W2 = (np.random.randn(d_ff, d_model) * 0.02).astype(np.float32)
        self.b2 = np.zeros(d_model, dtype=np.float32)

    def forward(self, x, training=True):
        h = gelu(x @ self.W1 + self.b1)
        h = dropout(h, self.dropout_rate, training)
        return h @ self.W2 + self.b2

    def __call__(self, x, training=True):
        return self.forward(x, training)


class MultiHeadAttention:
    def __init__(self, d_model, num_heads, dropout=0.1):
        self.d_model, self.num_heads = d_model, num_heads
        self.d_k = d_model // num_heads
        self.dropout_rate = dropout
        self.W_Q = (np.random.randn(d_model, d_model) * 0.02).astype(np.float32)
        self.W_K = (np.random.randn(d_model, d_model) * 0.02).astype(np.float32)
        self.W_V = (np.random.randn(d_model, d_model) * 0.02).astype(np.float32)
        self.W_O = (np.random.randn(d_model, d_model) * 0.02).astype(np.float32)
        self.b_Q = np.zeros(d_model, dtype=np.float32)
        self.b_K = np.zeros(d_model, dtype=np.float32)
        self.b_V = np.zeros(d_model, dtype=np.float32)
        self.b_O = np.zeros(d_model, dtype=np.float32)

    def forward(self, x, mask=None, training=True):
        q = x @ self.W_Q + self.b_Q
        k = x @ self.W_K + self.b_K
        v = x @ self.W_V + self.b_V
        heads = []
        for h in range(self.num_heads):
            cols = slice(h * self.d_k, (h + 1) * self.d_k)
            scores = q[..., cols] @ np.swapaxes(k[..., cols], -1, -2) / np.sqrt(self.d_k)
            if mask is not None:
                scores = np.where(mask, -1e9, scores)
            weights = dropout(softmax(scores, axis=-1), self.dropout_rate, training)
            heads.append(weights @ v[..., cols])
        return np.concatenate(heads, axis=-1) @ self.W_O + self.b_O

    def __call__(self, x, mask=None, training=True):
        return self.forward(x, mask, training)


class TransformerBlock:
    def __init__(self, d_model, num_heads, d_ff, dropout=0.1):
        self.ln1 = LayerNorm(d_model)
        self.attn = MultiHeadAttention(d_model, num_heads, dropout)
        self.ln2 = LayerNorm(d_model)
        self.ffn = FeedForward(d_model, d_ff, dropout)
        self.dropout_rate = dropout

    def forward(self, x, mask=None, training=True):
        x = x + dropout(self.attn(self.ln1(x), mask, training), self.dropout_rate, training)
        x = x + dropout(self.ffn(self.ln2(x), training), self.dropout_rate, training)
        return x

    def __call__(self, x, mask=None, training=True):
        return self.forward(x, mask, training)


class TokenEmbedding:
    def __init__(self, vocab_size, d_model):
        self.weight = (np.random.randn(vocab_size, d_model) * 0.02).astype(np.float32)

    def forward(self, token_ids):
        return self.weight[token_ids]

    def __call__(self, token_ids):
        return self.forward(token_ids)


class PositionalEmbedding:
    def __init__(self, max_seq_len, d_model):
        self.weight = (np.random.randn(max_seq_len, d_model) * 0.02).astype(np.float32)
        self.max_seq_len = max_seq_len

    def forward(self, seq_len):
        if seq_len > self.max_seq_len:
            raise ValueError(f"seq_len {seq_len} > max_seq_len {self.max_seq_len}")
        return self.weight[:seq_len]

    def __call__(self, seq_len):
        return self.forward(seq_len)


class OutputProjection:
    def __init__(self, d_model, vocab_size, weight=None):
        self.weight = weight if weight is not None else (np.random.randn(vocab_size, d_model) * 0.02).astype(np.float32)

    def forward(self, x):
        return x @ self.weight.T

    def __call__(self, x):
        return self.forward(x)


class GPTModel:
    def __init__(self, vocab_size, d_model, num_layers, num_heads, d_ff, max_seq_len,
                 dropout=0.1, tie_weights=True):
        self.vocab_size, self.d_model, self.num_layers = vocab_size, d_model, num_layers
        self.num_heads, self.d_ff, self.max_seq_len = num_heads, d_ff, max_seq_len
        self.tie_weights = tie_weights
        self.dropout_rate = dropout
        self.token_embedding = TokenEmbedding(vocab_size, d_model)
        self.pos_embedding = PositionalEmbedding(max_seq_len, d_model)
        self.blocks = [TransformerBlock(d_model, num_heads, d_ff, dropout) for _ in range(num_layers)]
        self.ln_f = LayerNorm(d_model)
        if tie_weights:
            self.lm_head = OutputProjection(d_model, vocab_size, self.token_embedding.weight)
        else:
            self.lm_head = OutputProjection(d_model, vocab_size)

    def forward(self, token_ids, training=True):
        batch, seq_len = token_ids.shape
        x = self.token_embedding(token_ids) + self.pos_embedding(seq_len)
        x = dropout(x, self.dropout_rate, training)
        mask = create_causal_mask(seq_len)
        for block in self.blocks:
            x = block(x, mask, training)
        return self.lm_head(self.ln_f(x))

    def __call__(self, token_ids, training=True):
        return self.forward(token_ids, training)
