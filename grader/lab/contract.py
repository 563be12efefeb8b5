"""The interface of LAB_CONTRACT.md section 2 in code: attribute paths, shapes, HuggingFace sources.

This is the grader's own derivation of what every attribute must hold, written
independently of ``reference/pretrained.py`` so that a bug in one shows up
against the other.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

LAYER_PARAMS = (
    "ln_1.weight", "ln_1.bias",
    "attn.c_attn.weight", "attn.c_attn.bias",
    "attn.c_proj.weight", "attn.c_proj.bias",
    "ln_2.weight", "ln_2.bias",
    "mlp.c_fc.weight", "mlp.c_fc.bias",
    "mlp.c_proj.weight", "mlp.c_proj.bias",
)  # fmt: skip

# Parameters that may be left out of a mapping: the head is tied to wte.
OPTIONAL_PARAMS = ("lm_head.weight",)
# Buffers that older transformers versions kept in the state dict; never required.
IGNORED_SUFFIXES = (".attn.bias", ".attn.masked_bias")


@dataclass(frozen=True)
class ModelShape:
    """The sizes that decide every attribute's shape."""

    vocab_size: int
    d_model: int
    num_layers: int
    num_heads: int
    d_ff: int
    max_seq_len: int

    @classmethod
    def from_hf_config(cls, config: Any) -> ModelShape:
        """Read a ``GPT2Config`` (or its dict)."""
        get = config.get if isinstance(config, dict) else lambda key, default=None: getattr(config, key, default)
        d_model = get("n_embd")
        return cls(
            vocab_size=get("vocab_size"),
            d_model=d_model,
            num_layers=get("n_layer"),
            num_heads=get("n_head"),
            d_ff=get("n_inner") or 4 * d_model,
            max_seq_len=get("n_positions"),
        )

    def constructor_kwargs(self) -> dict[str, int]:
        """Keyword arguments for ``GPTModel(...)``."""
        return {
            "vocab_size": self.vocab_size,
            "d_model": self.d_model,
            "num_layers": self.num_layers,
            "num_heads": self.num_heads,
            "d_ff": self.d_ff,
            "max_seq_len": self.max_seq_len,
        }

    def describe(self) -> str:
        return f"{self.num_layers} layers, d_model={self.d_model}, {self.num_heads} heads, vocab={self.vocab_size}"


def hf_parameter_names(num_layers: int) -> list[str]:
    """The names of ``GPT2LMHeadModel.state_dict()`` for ``num_layers`` blocks, in order."""
    names = ["transformer.wte.weight", "transformer.wpe.weight"]
    for i in range(num_layers):
        names += [f"transformer.h.{i}.{p}" for p in LAYER_PARAMS]
    return [*names, "transformer.ln_f.weight", "transformer.ln_f.bias", "lm_head.weight"]


def required_parameter_names(num_layers: int) -> list[str]:
    """The HuggingFace names that a mapping must cover."""
    return [n for n in hf_parameter_names(num_layers) if n not in OPTIONAL_PARAMS]


def attribute_paths(num_layers: int) -> list[str]:
    """Every attribute of contract section 2, as dotted paths, in model order."""
    paths = ["token_embedding.weight", "pos_embedding.weight"]
    for i in range(num_layers):
        b = f"blocks.{i}"
        paths += [f"{b}.ln1.gamma", f"{b}.ln1.beta"]
        paths += [f"{b}.attn.{n}" for n in ("W_Q", "W_K", "W_V", "b_Q", "b_K", "b_V", "W_O", "b_O")]
        paths += [f"{b}.ln2.gamma", f"{b}.ln2.beta"]
        paths += [f"{b}.ffn.{n}" for n in ("W1", "b1", "W2", "b2")]
    return [*paths, "ln_f.gamma", "ln_f.beta"]


def attribute_shape(path: str, shape: ModelShape) -> tuple[int, ...]:
    """The shape that contract section 2 gives the attribute at ``path``."""
    d, f = shape.d_model, shape.d_ff
    leaf = path.rsplit(".", 1)[-1]
    if path == "token_embedding.weight":
        return (shape.vocab_size, d)
    if path == "pos_embedding.weight":
        return (shape.max_seq_len, d)
    return {
        "gamma": (d,), "beta": (d,),
        "W_Q": (d, d), "W_K": (d, d), "W_V": (d, d), "W_O": (d, d),
        "b_Q": (d,), "b_K": (d,), "b_V": (d,), "b_O": (d,),
        "W1": (d, f), "b1": (f,), "W2": (f, d), "b2": (d,),
    }[leaf]  # fmt: skip


def sources(num_layers: int) -> dict[str, tuple[str, slice | None]]:
    """For every attribute path, the HuggingFace tensor and the slice of its last axis it holds."""
    out: dict[str, tuple[str, slice | None]] = {
        "token_embedding.weight": ("transformer.wte.weight", None),
        "pos_embedding.weight": ("transformer.wpe.weight", None),
        "ln_f.gamma": ("transformer.ln_f.weight", None),
        "ln_f.beta": ("transformer.ln_f.bias", None),
    }
    for i in range(num_layers):
        h, b = f"transformer.h.{i}", f"blocks.{i}"
        out[f"{b}.ln1.gamma"] = (f"{h}.ln_1.weight", None)
        out[f"{b}.ln1.beta"] = (f"{h}.ln_1.bias", None)
        for third, name in enumerate("QKV"):
            part = slice(third, third + 1)  # resolved to columns once d_model is known
            out[f"{b}.attn.W_{name}"] = (f"{h}.attn.c_attn.weight", part)
            out[f"{b}.attn.b_{name}"] = (f"{h}.attn.c_attn.bias", part)
        out[f"{b}.attn.W_O"] = (f"{h}.attn.c_proj.weight", None)
        out[f"{b}.attn.b_O"] = (f"{h}.attn.c_proj.bias", None)
        out[f"{b}.ln2.gamma"] = (f"{h}.ln_2.weight", None)
        out[f"{b}.ln2.beta"] = (f"{h}.ln_2.bias", None)
        out[f"{b}.ffn.W1"] = (f"{h}.mlp.c_fc.weight", None)
        out[f"{b}.ffn.b1"] = (f"{h}.mlp.c_fc.bias", None)
        out[f"{b}.ffn.W2"] = (f"{h}.mlp.c_proj.weight", None)
        out[f"{b}.ffn.b2"] = (f"{h}.mlp.c_proj.bias", None)
    return out


def take_third(array: np.ndarray, third: int) -> np.ndarray:
    """Columns ``[third*d : (third+1)*d]`` of a fused ``c_attn`` tensor (last axis 3d)."""
    d = array.shape[-1] // 3
    return array[..., third * d : (third + 1) * d]


def expected_attributes(hf_state: dict[str, np.ndarray], num_layers: int) -> dict[str, np.ndarray]:
    """What every attribute must hold after loading ``hf_state`` (float32, contract layout)."""
    out = {}
    for path, (name, part) in sources(num_layers).items():
        array = hf_state[name]
        if part is not None:
            array = take_third(array, part.start)
        out[path] = np.ascontiguousarray(array, dtype=np.float32)
    return out


def get_path(obj: Any, path: str) -> Any:
    """Follow a dotted attribute path; integer parts index sequences."""
    for part in path.split("."):
        obj = obj[int(part)] if part.isdigit() else getattr(obj, part)
    return obj


def set_path(obj: Any, path: str, value: Any) -> None:
    """Set the attribute a dotted path names."""
    parent_path, _, name = path.rpartition(".")
    parent = get_path(obj, parent_path) if parent_path else obj
    if name.isdigit():
        parent[int(name)] = value
    else:
        setattr(parent, name, value)
