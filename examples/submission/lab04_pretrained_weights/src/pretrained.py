"""Lab 04: Load Pretrained Weights (a student's solution)."""

import numpy as np
from typing import Dict, Tuple, Callable, Any

import torch
from transformers import GPT2LMHeadModel, GPT2Tokenizer, GPT2Config

import sys
from pathlib import Path
sys.path.insert(0, str(Path(__file__).parent.parent.parent / "lab03_decoder_transformer" / "src"))

from decoder import GPTModel, create_causal_mask


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
        block.attn.W_O, block.attn.b_O = t(p + 'attn.c_proj.weight').T, t(p + 'attn.c_proj.bias')  # nn.Linear style
        block.ln2.gamma, block.ln2.beta = t(p + 'ln_2.weight'), t(p + 'ln_2.bias')
        block.ffn.W1, block.ffn.b1 = t(p + 'mlp.c_fc.weight'), t(p + 'mlp.c_fc.bias')
        block.ffn.W2, block.ffn.b2 = t(p + 'mlp.c_proj.weight'), t(p + 'mlp.c_proj.bias')
    your_model.ln_f.gamma, your_model.ln_f.beta = t('transformer.ln_f.weight'), t('transformer.ln_f.bias')
    your_model.lm_head.weight = your_model.token_embedding.weight  # tied, as GPT-2 is


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
