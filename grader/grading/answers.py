"""The answer key: what every attribute must hold after loading. Trusted side only.

Written independently of ``reference/pretrained.py`` so that a bug in one shows up
against the other. Never copied into the student template and never sent to a student
process: models the harness builds there are filled from arrays computed here.
"""

from __future__ import annotations

import numpy as np

from lab04_checks import contract

QKV = "QKV"


def sources(num_layers: int) -> dict[str, tuple[str, int | None]]:
    """For every attribute path: the HuggingFace tensor and which third of its last axis (None: all of it)."""
    out: dict[str, tuple[str, int | None]] = {
        "token_embedding.weight": ("transformer.wte.weight", None),
        "pos_embedding.weight": ("transformer.wpe.weight", None),
    }
    for i in range(num_layers):
        h, b = f"transformer.h.{i}", f"blocks.{i}"
        out[f"{b}.ln1.gamma"] = (f"{h}.ln_1.weight", None)
        out[f"{b}.ln1.beta"] = (f"{h}.ln_1.bias", None)
        for third, name in enumerate(QKV):
            out[f"{b}.attn.W_{name}"] = (f"{h}.attn.c_attn.weight", third)
            out[f"{b}.attn.b_{name}"] = (f"{h}.attn.c_attn.bias", third)
        out[f"{b}.attn.W_O"] = (f"{h}.attn.c_proj.weight", None)
        out[f"{b}.attn.b_O"] = (f"{h}.attn.c_proj.bias", None)
        out[f"{b}.ln2.gamma"] = (f"{h}.ln_2.weight", None)
        out[f"{b}.ln2.beta"] = (f"{h}.ln_2.bias", None)
        out[f"{b}.ffn.W1"] = (f"{h}.mlp.c_fc.weight", None)
        out[f"{b}.ffn.b1"] = (f"{h}.mlp.c_fc.bias", None)
        out[f"{b}.ffn.W2"] = (f"{h}.mlp.c_proj.weight", None)
        out[f"{b}.ffn.b2"] = (f"{h}.mlp.c_proj.bias", None)
    out["ln_f.gamma"] = ("transformer.ln_f.weight", None)
    out["ln_f.beta"] = ("transformer.ln_f.bias", None)
    return out


def take_third(array: np.ndarray, third: int) -> np.ndarray:
    """Columns ``[third*d : (third+1)*d]`` of a fused ``c_attn`` tensor (last axis 3d)."""
    d = array.shape[-1] // 3
    return array[..., third * d : (third + 1) * d]


def expected_attributes(state: dict[str, np.ndarray], num_layers: int) -> dict[str, np.ndarray]:
    """What every attribute must hold after loading ``state`` (float32, contract layout)."""
    out = {}
    for path, (name, third) in sources(num_layers).items():
        array = state[name] if third is None else take_third(state[name], third)
        out[path] = np.ascontiguousarray(array, dtype=np.float32)
    return out


def source_text(path: str, num_layers: int) -> str:
    """Where ``path``'s value comes from, in HuggingFace's words."""
    name, third = sources(num_layers)[path]
    if third is None:
        return name
    return f"{name} [..., {('0:d', 'd:2d', '2d:3d')[third]}] (the {QKV[third]} part)"


def synthetic_state(shape: contract.ModelShape, seed: int) -> dict[str, np.ndarray]:
    """A GPT-2 state dict of ``shape`` whose entries are the distinct integers 1..N in a shuffled order,
    so that a transpose, a swapped third or a reshape shows even on square matrices."""
    d, f = shape.d_model, shape.d_ff
    sizes = {"transformer.wte.weight": (shape.vocab_size, d), "transformer.wpe.weight": (shape.max_seq_len, d)}
    per_layer = {
        "ln_1.weight": (d,),
        "ln_1.bias": (d,),
        "attn.c_attn.weight": (d, 3 * d),
        "attn.c_attn.bias": (3 * d,),
        "attn.c_proj.weight": (d, d),
        "attn.c_proj.bias": (d,),
        "ln_2.weight": (d,),
        "ln_2.bias": (d,),
        "mlp.c_fc.weight": (d, f),
        "mlp.c_fc.bias": (f,),
        "mlp.c_proj.weight": (f, d),
        "mlp.c_proj.bias": (d,),
    }
    for i in range(shape.num_layers):
        sizes.update({f"transformer.h.{i}.{k}": v for k, v in per_layer.items()})
    sizes.update({"transformer.ln_f.weight": (d,), "transformer.ln_f.bias": (d,)})
    total = sum(int(np.prod(s)) for s in sizes.values())
    values = np.random.default_rng(seed).permutation(total).astype(np.float32) + 1  # exact in float32
    state, start = {}, 0
    for name, s in sizes.items():
        size = int(np.prod(s))
        state[name] = values[start : start + size].reshape(s)
        start += size
    state["lm_head.weight"] = state["transformer.wte.weight"]  # tied, as in GPT-2
    return state
