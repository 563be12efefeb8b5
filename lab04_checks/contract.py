"""The interface of LAB_CONTRACT.md section 2: model sizes, attribute paths and shapes, the tolerance."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

LOGITS_RTOL = 1e-5  # logits match when max |diff| <= LOGITS_RTOL * max(1, max |HuggingFace logit|)
WEIGHTS_RTOL = 1e-6  # loaded weights equal their source: loading copies numbers, it does not compute them

LAYER_PARAMS = (
    "ln_1.weight",
    "ln_1.bias",
    "attn.c_attn.weight",
    "attn.c_attn.bias",
    "attn.c_proj.weight",
    "attn.c_proj.bias",
    "ln_2.weight",
    "ln_2.bias",
    "mlp.c_fc.weight",
    "mlp.c_fc.bias",
    "mlp.c_proj.weight",
    "mlp.c_proj.bias",
)
OPTIONAL_PARAMS = ("lm_head.weight",)  # tied to wte: a mapping may leave it out
IGNORED_SUFFIXES = (".attn.bias", ".attn.masked_bias")  # buffers older transformers kept in the state dict
BLOCK_ATTRIBUTES = (
    "ln1.gamma",
    "ln1.beta",
    "attn.W_Q",
    "attn.W_K",
    "attn.W_V",
    "attn.b_Q",
    "attn.b_K",
    "attn.b_V",
    "attn.W_O",
    "attn.b_O",
    "ln2.gamma",
    "ln2.beta",
    "ffn.W1",
    "ffn.b1",
    "ffn.W2",
    "ffn.b2",
)


@dataclass(frozen=True)
class ModelShape:
    """The sizes that decide every attribute's shape, in GPTModel's argument names."""

    vocab_size: int
    d_model: int
    num_layers: int
    num_heads: int
    d_ff: int
    max_seq_len: int

    @classmethod
    def from_hf_config(cls, config: dict[str, Any]) -> ModelShape:
        """Read a HuggingFace GPT-2 ``config.json`` (as a dict)."""
        d_model = int(config["n_embd"])
        return cls(
            vocab_size=int(config["vocab_size"]),
            d_model=d_model,
            num_layers=int(config["n_layer"]),
            num_heads=int(config["n_head"]),
            d_ff=int(config.get("n_inner") or 4 * d_model),
            max_seq_len=int(config["n_positions"]),
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

    @property
    def parameters(self) -> int:
        d, f, n = self.d_model, self.d_ff, self.num_layers
        per_layer = 4 * d + 3 * d * d + 3 * d + d * d + d + d * f + f + f * d + d
        return self.vocab_size * d + self.max_seq_len * d + n * per_layer + 2 * d


def hf_parameter_names(num_layers: int) -> list[str]:
    """The names of ``GPT2LMHeadModel.state_dict()`` for ``num_layers`` blocks, in order."""
    names = ["transformer.wte.weight", "transformer.wpe.weight"]
    for i in range(num_layers):
        names += [f"transformer.h.{i}.{p}" for p in LAYER_PARAMS]
    return [*names, "transformer.ln_f.weight", "transformer.ln_f.bias", "lm_head.weight"]


def required_parameter_names(num_layers: int) -> list[str]:
    """The HuggingFace names a mapping must cover."""
    return [n for n in hf_parameter_names(num_layers) if n not in OPTIONAL_PARAMS]


def attribute_paths(num_layers: int) -> list[str]:
    """Every attribute of contract section 2, as dotted paths, in model order."""
    paths = ["token_embedding.weight", "pos_embedding.weight"]
    for i in range(num_layers):
        paths += [f"blocks.{i}.{a}" for a in BLOCK_ATTRIBUTES]
    return [*paths, "ln_f.gamma", "ln_f.beta"]


def attribute_shape(path: str, shape: ModelShape) -> tuple[int, ...]:
    """The shape contract section 2 gives the attribute at ``path``."""
    d, f = shape.d_model, shape.d_ff
    if path in ("token_embedding.weight", "lm_head.weight"):
        return (shape.vocab_size, d)
    if path == "pos_embedding.weight":
        return (shape.max_seq_len, d)
    leaf = path.rsplit(".", 1)[-1]
    return {"W1": (d, f), "b1": (f,), "W2": (f, d)}.get(leaf, (d, d) if leaf.startswith("W_") else (d,))


def logits_tolerance(scale: float) -> float:
    """The largest max |diff| that counts as a match, for logits whose largest magnitude is ``scale``."""
    return LOGITS_RTOL * max(1.0, float(scale))


def normalise_path(path: str) -> str:
    """``blocks[0].attn.W_Q`` and ``blocks.0.attn.W_Q`` name the same attribute."""
    import re

    return re.sub(r"\[(\d+)\]", r".\1", str(path)).strip(".")
