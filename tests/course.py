"""Course-shaped submissions: correct solutions written the way the course's own template leads students to.

The course (``ftvision/transformer``, chapter 3) gives students a ``pretrained.py`` that
imports torch and transformers at its top, puts the sibling ``lab03_decoder_transformer/src``
on ``sys.path``, defines stub classes (``GPTModel`` with ``dropout=0.0``; the Lab 03 one
defaults to ``dropout=0.1`` and ``training=True``), and asks for ``load_gpt2_weights(model,
name) -> None``. The code here is this project's own, written as a student would, in the
shapes the course allows: decoder classes inside ``pretrained.py``, or a Lab 03 ``decoder.py``
beside it or in the sibling folder; a loader with or without ``get_weight_mapping``, tie
kept by copying in place or re-done by rebinding.
"""

from __future__ import annotations

HEADER = '''"""Lab 04: Load Pretrained Weights (a student's solution)."""

import numpy as np
from typing import Dict, Tuple, Callable, Any

import torch
from transformers import GPT2LMHeadModel, GPT2Tokenizer, GPT2Config

import sys
from pathlib import Path
sys.path.insert(0, str(Path(__file__).parent.parent.parent / "lab03_decoder_transformer" / "src"))
'''

# A Lab 03 decoder in the course's interface, written independently (heads in a loop, as many students do).
DECODER = """
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
    def __init__(self, d_model, d_ff, dropout=DROPOUT):
        self.d_model, self.d_ff, self.dropout_rate = d_model, d_ff, dropout
        self.W1 = (np.random.randn(d_model, d_ff) * 0.02).astype(np.float32)
        self.b1 = np.zeros(d_ff, dtype=np.float32)
        self.W2 = (np.random.randn(d_ff, d_model) * 0.02).astype(np.float32)
        self.b2 = np.zeros(d_model, dtype=np.float32)

    def forward(self, x, training=TRAINING):
        h = gelu(x @ self.W1 + self.b1)
        h = dropout(h, self.dropout_rate, training)
        return h @ self.W2 + self.b2

    def __call__(self, x, training=TRAINING):
        return self.forward(x, training)


class MultiHeadAttention:
    def __init__(self, d_model, num_heads, dropout=DROPOUT):
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

    def forward(self, x, mask=None, training=TRAINING):
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

    def __call__(self, x, mask=None, training=TRAINING):
        return self.forward(x, mask, training)


class TransformerBlock:
    def __init__(self, d_model, num_heads, d_ff, dropout=DROPOUT):
        self.ln1 = LayerNorm(d_model)
        self.attn = MultiHeadAttention(d_model, num_heads, dropout)
        self.ln2 = LayerNorm(d_model)
        self.ffn = FeedForward(d_model, d_ff, dropout)
        self.dropout_rate = dropout

    def forward(self, x, mask=None, training=TRAINING):
        x = x + dropout(self.attn(self.ln1(x), mask, training), self.dropout_rate, training)
        x = x + dropout(self.ffn(self.ln2(x), training), self.dropout_rate, training)
        return x

    def __call__(self, x, mask=None, training=TRAINING):
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
                 dropout=DROPOUT, tie_weights=True):
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

    def forward(self, token_ids, training=TRAINING):
        batch, seq_len = token_ids.shape
        x = self.token_embedding(token_ids) + self.pos_embedding(seq_len)
        x = dropout(x, self.dropout_rate, training)
        mask = create_causal_mask(seq_len)
        for block in self.blocks:
            x = block(x, mask, training)
        return self.lm_head(self.ln_f(x))

    def __call__(self, token_ids, training=TRAINING):
        return self.forward(token_ids, training)
"""

GIVEN = """

def get_gpt2_config(model_name='gpt2'):
    configs = {
        'gpt2': dict(vocab_size=50257, d_model=768, num_layers=12, num_heads=12, d_ff=3072, max_seq_len=1024),
        'gpt2-medium': dict(vocab_size=50257, d_model=1024, num_layers=24, num_heads=16, d_ff=4096, max_seq_len=1024),
        'gpt2-large': dict(vocab_size=50257, d_model=1280, num_layers=36, num_heads=20, d_ff=5120, max_seq_len=1024),
        'gpt2-xl': dict(vocab_size=50257, d_model=1600, num_layers=48, num_heads=25, d_ff=6400, max_seq_len=1024),
    }
    return configs[model_name]


def create_gpt2_model(model_name='gpt2'):
    config = get_gpt2_config(model_name)
    return GPTModel(**config, dropout=0.0, tie_weights=True)
"""

# A loader that uses the handout's get_weight_mapping and copies into the existing arrays (the tie survives).
MAPPING_LOADER = """

def _get(obj, path):
    for part in path.split('.'):
        obj = obj[int(part)] if part.isdigit() else getattr(obj, part)
    return obj


def get_weight_mapping(num_layers):
    keep = lambda w: w
    thirds = lambda w: tuple(np.split(w, 3, axis=-1))
    m = {'transformer.wte.weight': ('token_embedding.weight', keep),
         'transformer.wpe.weight': ('pos_embedding.weight', keep),
         'transformer.ln_f.weight': ('ln_f.gamma', keep),
         'transformer.ln_f.bias': ('ln_f.beta', keep)}
    for i in range(num_layers):
        h, b = f'transformer.h.{i}.', f'blocks.{i}.'
        m[h + 'ln_1.weight'] = (b + 'ln1.gamma', keep)
        m[h + 'ln_1.bias'] = (b + 'ln1.beta', keep)
        m[h + 'attn.c_attn.weight'] = ((b + 'attn.W_Q', b + 'attn.W_K', b + 'attn.W_V'), thirds)
        m[h + 'attn.c_attn.bias'] = ((b + 'attn.b_Q', b + 'attn.b_K', b + 'attn.b_V'), thirds)
        m[h + 'attn.c_proj.weight'] = (b + 'attn.W_O', keep)
        m[h + 'attn.c_proj.bias'] = (b + 'attn.b_O', keep)
        m[h + 'ln_2.weight'] = (b + 'ln2.gamma', keep)
        m[h + 'ln_2.bias'] = (b + 'ln2.beta', keep)
        m[h + 'mlp.c_fc.weight'] = (b + 'ffn.W1', keep)
        m[h + 'mlp.c_fc.bias'] = (b + 'ffn.b1', keep)
        m[h + 'mlp.c_proj.weight'] = (b + 'ffn.W2', keep)
        m[h + 'mlp.c_proj.bias'] = (b + 'ffn.b2', keep)
    return m


def load_gpt2_weights(your_model, model_name='gpt2'):
    hf_model = GPT2LMHeadModel.from_pretrained(model_name)
    sd = {k: v.detach().numpy() for k, v in hf_model.state_dict().items()}
    for key, (target, fn) in get_weight_mapping(hf_model.config.n_layer).items():
        out = fn(sd[key])
        targets, outs = ((target,), (out,)) if isinstance(target, str) else (target, out)
        for path, value in zip(targets, outs):
            _get(your_model, path)[...] = value
"""

# A loader with no get_weight_mapping at all: it rebinds every attribute, then re-ties the head.
DIRECT_LOADER = """

def load_gpt2_weights(your_model, model_name='gpt2'):
    hf_model = GPT2LMHeadModel.from_pretrained(model_name)
    sd = hf_model.state_dict()
    t = lambda name: sd[name].detach().numpy().astype(np.float32)
    d = your_model.d_model
    your_model.token_embedding.weight = t('transformer.wte.weight')
    your_model.pos_embedding.weight = t('transformer.wpe.weight')
    for i, block in enumerate(your_model.blocks):
        p = f'transformer.h.{i}.'
        block.ln1.gamma, block.ln1.beta = t(p + 'ln_1.weight'), t(p + 'ln_1.bias')
        qkv, qkv_b = t(p + 'attn.c_attn.weight'), t(p + 'attn.c_attn.bias')
        block.attn.W_Q, block.attn.W_K, block.attn.W_V = qkv[:, :d], qkv[:, d:2 * d], qkv[:, 2 * d:]
        block.attn.b_Q, block.attn.b_K, block.attn.b_V = qkv_b[:d], qkv_b[d:2 * d], qkv_b[2 * d:]
        block.attn.W_O, block.attn.b_O = t(p + 'attn.c_proj.weight'), t(p + 'attn.c_proj.bias')
        block.ln2.gamma, block.ln2.beta = t(p + 'ln_2.weight'), t(p + 'ln_2.bias')
        block.ffn.W1, block.ffn.b1 = t(p + 'mlp.c_fc.weight'), t(p + 'mlp.c_fc.bias')
        block.ffn.W2, block.ffn.b2 = t(p + 'mlp.c_proj.weight'), t(p + 'mlp.c_proj.bias')
    your_model.ln_f.gamma, your_model.ln_f.beta = t('transformer.ln_f.weight'), t('transformer.ln_f.bias')
    your_model.lm_head.weight = your_model.token_embedding.weight  # tied, as GPT-2 is
"""

FUNCTIONS = """

def compare_outputs(your_model, hf_model, tokenizer, text, atol=1e-4):
    tokens = tokenizer.encode(text, return_tensors='pt')
    with torch.no_grad():
        hf_logits = hf_model(tokens).logits.numpy()
    logits = your_model(tokens.numpy(), training=False)
    max_diff = float(np.abs(logits - hf_logits).max())
    return max_diff < atol, max_diff


def compare_intermediate_outputs(your_model, hf_model, token_ids):
    ids = np.atleast_2d(token_ids)
    seen = []
    grab = lambda module, inputs, output: seen.append((output[0] if isinstance(output, tuple) else output).numpy())
    hooks = [layer.register_forward_hook(grab) for layer in hf_model.transformer.h]
    with torch.no_grad():
        hf = hf_model(torch.from_numpy(ids), output_hidden_states=True)
    for hook in hooks:
        hook.remove()
    x = your_model.token_embedding(ids) + your_model.pos_embedding(ids.shape[1])
    out = {'embedding': float(np.abs(x - hf.hidden_states[0].numpy()).max())}
    mask = create_causal_mask(ids.shape[1])
    for i, block in enumerate(your_model.blocks):
        x = block(x, mask, False)
        out[f'block_{i}'] = float(np.abs(x - seen[i]).max())
    h = your_model.ln_f(x)
    out['ln_f'] = float(np.abs(h - hf.hidden_states[-1].numpy()).max())  # HuggingFace's last one is after ln_f
    out['logits'] = float(np.abs(your_model.lm_head(h) - hf.logits.numpy()).max())
    return out


def analyze_weight_differences(your_model, hf_model):
    sd = {k: v.detach().numpy() for k, v in hf_model.state_dict().items()}
    d = your_model.d_model
    pairs = {'token_embedding': (your_model.token_embedding.weight, sd['transformer.wte.weight']),
             'pos_embedding': (your_model.pos_embedding.weight, sd['transformer.wpe.weight']),
             'ln_f.gamma': (your_model.ln_f.gamma, sd['transformer.ln_f.weight']),
             'ln_f.beta': (your_model.ln_f.beta, sd['transformer.ln_f.bias'])}
    for i, b in enumerate(your_model.blocks):
        p = f'transformer.h.{i}.'
        w, bias = sd[p + 'attn.c_attn.weight'], sd[p + 'attn.c_attn.bias']
        pairs.update({
            f'blocks.{i}.ln1.gamma': (b.ln1.gamma, sd[p + 'ln_1.weight']),
            f'blocks.{i}.ln1.beta': (b.ln1.beta, sd[p + 'ln_1.bias']),
            f'blocks.{i}.attn.W_Q': (b.attn.W_Q, w[:, :d]), f'blocks.{i}.attn.W_K': (b.attn.W_K, w[:, d:2 * d]),
            f'blocks.{i}.attn.W_V': (b.attn.W_V, w[:, 2 * d:]), f'blocks.{i}.attn.b_Q': (b.attn.b_Q, bias[:d]),
            f'blocks.{i}.attn.b_K': (b.attn.b_K, bias[d:2 * d]), f'blocks.{i}.attn.b_V': (b.attn.b_V, bias[2 * d:]),
            f'blocks.{i}.attn.W_O': (b.attn.W_O, sd[p + 'attn.c_proj.weight']),
            f'blocks.{i}.attn.b_O': (b.attn.b_O, sd[p + 'attn.c_proj.bias']),
            f'blocks.{i}.ln2.gamma': (b.ln2.gamma, sd[p + 'ln_2.weight']),
            f'blocks.{i}.ln2.beta': (b.ln2.beta, sd[p + 'ln_2.bias']),
            f'blocks.{i}.ffn.W1': (b.ffn.W1, sd[p + 'mlp.c_fc.weight']), f'blocks.{i}.ffn.b1': (b.ffn.b1, sd[p + 'mlp.c_fc.bias']),
            f'blocks.{i}.ffn.W2': (b.ffn.W2, sd[p + 'mlp.c_proj.weight']),
            f'blocks.{i}.ffn.b2': (b.ffn.b2, sd[p + 'mlp.c_proj.bias']),
        })
    return {k: {'max_diff': float(np.abs(a - b).max()), 'mean_diff': float(np.abs(a - b).mean())}
            for k, (a, b) in pairs.items()}


def generate_text(model, tokenizer, prompt, max_length=50, temperature=1.0):
    ids = tokenizer.encode(prompt)
    for _ in range(max_length):
        logits = model(np.array([ids[-model.max_seq_len:]]), training=False)[0, -1]
        if temperature == 0:
            next_id = int(np.argmax(logits))
        else:
            p = np.exp((logits - logits.max()) / temperature)
            next_id = int(np.random.choice(len(p), p=p / p.sum()))
        ids.append(next_id)
    return tokenizer.decode(ids)
"""

# The course's template, unfilled (its shape, written here): stub classes and functions that raise.
UNFILLED = (
    HEADER
    + """

class GPTModel:
    def __init__(self, vocab_size, d_model, num_layers, num_heads, d_ff, max_seq_len, dropout=0.0, tie_weights=True):
        self.vocab_size, self.d_model, self.num_layers = vocab_size, d_model, num_layers
        self.token_embedding = type("E", (), {})()
        self.token_embedding.weight = np.zeros((vocab_size, d_model), dtype=np.float32)

    def forward(self, token_ids, training=False):
        # YOUR CODE HERE (or copy from Lab 03)
        raise NotImplementedError("Implement forward or copy from Lab 03")

    def __call__(self, token_ids, training=False):
        return self.forward(token_ids, training)
"""
    + GIVEN
    + """

def load_gpt2_weights(your_model, model_name='gpt2'):
    # YOUR CODE HERE
    raise NotImplementedError("Implement load_gpt2_weights")


def compare_outputs(your_model, hf_model, tokenizer, text, atol=1e-4):
    raise NotImplementedError("Implement compare_outputs")


def compare_intermediate_outputs(your_model, hf_model, token_ids):
    raise NotImplementedError("Implement compare_intermediate_outputs")


def analyze_weight_differences(your_model, hf_model):
    raise NotImplementedError("Implement analyze_weight_differences")


def generate_text(model, tokenizer, prompt, max_length=50, temperature=1.0):
    raise NotImplementedError("Implement generate_text")


def get_weight_mapping(num_layers):
    raise NotImplementedError("Implement get_weight_mapping")
"""
)


def decoder(lab: int) -> str:
    """The decoder classes with the course's defaults: Lab 04's stubs say dropout=0.0, training=False;
    Lab 03's decoder says dropout=0.1, training=True."""
    dropout, training = ("0.0", "False") if lab == 4 else ("0.1", "True")
    return DECODER.replace("=DROPOUT", f"={dropout}").replace("=TRAINING", f"={training}")


def layouts() -> dict[str, dict[str, str]]:
    """Name -> {relative path: text}: the course's layouts, each a correct solution."""
    lab03 = "import numpy as np\n" + decoder(3)
    imported = HEADER + "\nfrom decoder import GPTModel, create_causal_mask\n" + GIVEN
    return {
        "inline classes, mapping loader": {"pretrained.py": HEADER + decoder(4) + GIVEN + MAPPING_LOADER + FUNCTIONS},
        "inline classes, direct loader (no get_weight_mapping)": {
            "pretrained.py": HEADER + decoder(4) + GIVEN + DIRECT_LOADER + FUNCTIONS
        },
        "chapter folder, Lab 03 decoder in the sibling folder": {
            "lab04_pretrained_weights/src/pretrained.py": imported + MAPPING_LOADER + FUNCTIONS,
            "lab04_pretrained_weights/tests/test_pretrained.py": "# the course's tests live here\n",
            "lab03_decoder_transformer/src/decoder.py": lab03,
        },
        "decoder.py beside pretrained.py, direct loader": {
            "src/pretrained.py": imported + DIRECT_LOADER + FUNCTIONS,
            "src/decoder.py": lab03,
        },
    }
