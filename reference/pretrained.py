"""Lab 04: load HuggingFace GPT-2 weights into the NumPy GPT of Lab 03.

Implement the three functions marked ``YOUR CODE HERE``:

- ``get_weight_mapping(num_layers)``: HuggingFace parameter name -> (target path(s), transform);
- ``load_gpt2_weights(your_model, model_name)``: copy a checkpoint into your model;
- ``compare_outputs(your_model, hf_model, tokenizer, text)``: prove the logits match.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from transformers import GPT2LMHeadModel

# A correct float32 model differs from HuggingFace by rounding noise only, about
# 1e-6 to 2e-6 of the largest logit; the smallest real mistake (exact-erf GELU) costs
# about 2e-4 of it. The tolerance sits between the two (README: "Tolerance").
LOGITS_RTOL = 1e-5

Transform = Callable[[np.ndarray], Any]
Mapping = dict[str, tuple[str | tuple[str, ...], Transform]]


def logits_tolerance(reference_logits: np.ndarray) -> float:
    """The largest max-abs difference that still counts as a match: 1e-5 of the largest logit."""
    scale = float(np.max(np.abs(reference_logits))) if np.size(reference_logits) else 0.0
    return LOGITS_RTOL * max(1.0, scale)


def get_attribute(model: Any, path: str) -> Any:
    """Follow a dotted path such as ``blocks.0.attn.W_Q`` (integer parts index lists)."""
    obj = model
    for part in path.split("."):
        obj = obj[int(part)] if part.isdigit() else getattr(obj, part)
    return obj


def set_attribute(model: Any, path: str, value: np.ndarray) -> None:
    """Set the attribute that a dotted path names, e.g. ``ln_f.gamma``."""
    parent_path, _, name = path.rpartition(".")
    parent = get_attribute(model, parent_path) if parent_path else model
    setattr(parent, name, value)


def get_weight_mapping(num_layers: int) -> Mapping:
    """Map every HuggingFace GPT-2 parameter name to ``(target, transform)``.

    ``target`` is a dotted attribute path in your model (``blocks.0.attn.W_Q``),
    or a tuple of paths when one HuggingFace tensor feeds several attributes;
    ``transform`` turns the HuggingFace array into the array (or tuple of
    arrays) to store there.
    """

    ### BEGIN SOLUTION
    def same(w: np.ndarray) -> np.ndarray:
        return w  # Conv1D already stores weights as (in, out), the layout x @ W wants

    def split_qkv(w: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        q, k, v = np.split(w, 3, axis=-1)  # [d, 3d] -> 3 x [d, d]; [3d] -> 3 x [d]
        return q, k, v

    mapping: Mapping = {
        "transformer.wte.weight": ("token_embedding.weight", same),
        "transformer.wpe.weight": ("pos_embedding.weight", same),
        "transformer.ln_f.weight": ("ln_f.gamma", same),
        "transformer.ln_f.bias": ("ln_f.beta", same),
    }
    for i in range(num_layers):
        hf, ours = f"transformer.h.{i}", f"blocks.{i}"
        mapping.update(
            {
                f"{hf}.ln_1.weight": (f"{ours}.ln1.gamma", same),
                f"{hf}.ln_1.bias": (f"{ours}.ln1.beta", same),
                f"{hf}.attn.c_attn.weight": ((f"{ours}.attn.W_Q", f"{ours}.attn.W_K", f"{ours}.attn.W_V"), split_qkv),
                f"{hf}.attn.c_attn.bias": ((f"{ours}.attn.b_Q", f"{ours}.attn.b_K", f"{ours}.attn.b_V"), split_qkv),
                f"{hf}.attn.c_proj.weight": (f"{ours}.attn.W_O", same),
                f"{hf}.attn.c_proj.bias": (f"{ours}.attn.b_O", same),
                f"{hf}.ln_2.weight": (f"{ours}.ln2.gamma", same),
                f"{hf}.ln_2.bias": (f"{ours}.ln2.beta", same),
                f"{hf}.mlp.c_fc.weight": (f"{ours}.ffn.W1", same),
                f"{hf}.mlp.c_fc.bias": (f"{ours}.ffn.b1", same),
                f"{hf}.mlp.c_proj.weight": (f"{ours}.ffn.W2", same),
                f"{hf}.mlp.c_proj.bias": (f"{ours}.ffn.b2", same),
            }
        )
    return mapping
    ### END SOLUTION


def load_gpt2_weights(your_model: Any, model_name: str = "gpt2") -> Any:
    """Load a GPT-2 checkpoint (hub name or local directory) into ``your_model`` and return it."""
    ### BEGIN SOLUTION
    hf_model = GPT2LMHeadModel.from_pretrained(model_name)
    state = {name: t.detach().cpu().numpy() for name, t in hf_model.state_dict().items()}
    for hf_name, (target, transform) in get_weight_mapping(hf_model.config.n_layer).items():
        paths = (target,) if isinstance(target, str) else target
        arrays = transform(state[hf_name])
        arrays = (arrays,) if isinstance(target, str) else arrays
        for path, array in zip(paths, arrays, strict=True):
            old = get_attribute(your_model, path)
            if np.shape(old) != np.shape(array):
                raise ValueError(
                    f"{path}: the model has shape {np.shape(old)} but {hf_name} gives {np.shape(array)}; "
                    "build the model with the checkpoint's configuration"
                )
            # A copy, so that the model owns float32 memory and not a view into torch's.
            set_attribute(your_model, path, np.array(array, dtype=np.float32))
    return your_model
    ### END SOLUTION


def compare_outputs(your_model: Any, hf_model: Any, tokenizer: Any, text: str) -> tuple[bool, float]:
    """Run both models on ``text``; return (match, max_diff) over every logit."""
    ### BEGIN SOLUTION
    ids = np.asarray(tokenizer(text)["input_ids"], dtype=np.int64)  # [T]
    ours = np.asarray(your_model(ids))  # [T, vocab]
    with torch.no_grad():
        theirs = hf_model(torch.from_numpy(ids)[None]).logits[0].float().numpy()  # [1, T] -> [T, vocab]
    max_diff = float(np.max(np.abs(ours - theirs)))
    return max_diff <= logits_tolerance(theirs), max_diff
    ### END SOLUTION
