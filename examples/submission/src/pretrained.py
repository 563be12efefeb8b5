"""Lab 04 submission of a (fictional) student: loads GPT-2 weights into the Lab 03 model.

It has one classic mistake, kept on purpose so that the example shows the grader's feedback:
the attention output projection is transposed "to be safe", which a square matrix does not reveal.
"""

import numpy as np
import torch
from transformers import GPT2LMHeadModel

LOGITS_RTOL = 1e-5


def logits_tolerance(reference_logits):
    return LOGITS_RTOL * max(1.0, float(np.max(np.abs(reference_logits))))


def get_attribute(model, path):
    obj = model
    for part in path.split("."):
        obj = obj[int(part)] if part.isdigit() else getattr(obj, part)
    return obj


def set_attribute(model, path, value):
    parent_path, _, name = path.rpartition(".")
    setattr(get_attribute(model, parent_path) if parent_path else model, name, value)


def get_weight_mapping(num_layers):
    keep = lambda w: w  # noqa: E731
    transpose = lambda w: w.T  # noqa: E731  (the mistake: Conv1D is already (in, out))

    def qkv(w):
        d = w.shape[-1] // 3
        return w[..., :d], w[..., d : 2 * d], w[..., 2 * d :]

    mapping = {
        "transformer.wte.weight": ("token_embedding.weight", keep),
        "transformer.wpe.weight": ("pos_embedding.weight", keep),
        "transformer.ln_f.weight": ("ln_f.gamma", keep),
        "transformer.ln_f.bias": ("ln_f.beta", keep),
    }
    for i in range(num_layers):
        h, b = f"transformer.h.{i}", f"blocks.{i}"
        mapping[f"{h}.ln_1.weight"] = (f"{b}.ln1.gamma", keep)
        mapping[f"{h}.ln_1.bias"] = (f"{b}.ln1.beta", keep)
        mapping[f"{h}.attn.c_attn.weight"] = ((f"{b}.attn.W_Q", f"{b}.attn.W_K", f"{b}.attn.W_V"), qkv)
        mapping[f"{h}.attn.c_attn.bias"] = ((f"{b}.attn.b_Q", f"{b}.attn.b_K", f"{b}.attn.b_V"), qkv)
        mapping[f"{h}.attn.c_proj.weight"] = (f"{b}.attn.W_O", transpose)
        mapping[f"{h}.attn.c_proj.bias"] = (f"{b}.attn.b_O", keep)
        mapping[f"{h}.ln_2.weight"] = (f"{b}.ln2.gamma", keep)
        mapping[f"{h}.ln_2.bias"] = (f"{b}.ln2.beta", keep)
        mapping[f"{h}.mlp.c_fc.weight"] = (f"{b}.ffn.W1", keep)
        mapping[f"{h}.mlp.c_fc.bias"] = (f"{b}.ffn.b1", keep)
        mapping[f"{h}.mlp.c_proj.weight"] = (f"{b}.ffn.W2", keep)
        mapping[f"{h}.mlp.c_proj.bias"] = (f"{b}.ffn.b2", keep)
    return mapping


def load_gpt2_weights(your_model, model_name="gpt2"):
    hf_model = GPT2LMHeadModel.from_pretrained(model_name)
    state = hf_model.state_dict()
    for name, (target, transform) in get_weight_mapping(hf_model.config.n_layer).items():
        values = transform(state[name].detach().numpy())
        if isinstance(target, str):
            target, values = (target,), (values,)
        for path, value in zip(target, values, strict=True):
            set_attribute(your_model, path, np.ascontiguousarray(value, dtype=np.float32))
    return your_model


def compare_outputs(your_model, hf_model, tokenizer, text):
    ids = tokenizer(text, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        hf_logits = hf_model(ids).logits.numpy()
    ours = your_model(ids.numpy())
    max_diff = float(np.abs(ours - hf_logits).max())
    return max_diff <= logits_tolerance(hf_logits), max_diff
