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

    # YOUR CODE HERE
    raise NotImplementedError


def load_gpt2_weights(your_model: Any, model_name: str = "gpt2") -> Any:
    """Load a GPT-2 checkpoint (hub name or local directory) into ``your_model`` and return it."""
    # YOUR CODE HERE
    raise NotImplementedError


def compare_outputs(your_model: Any, hf_model: Any, tokenizer: Any, text: str) -> tuple[bool, float]:
    """Run both models on ``text``; return (match, max_diff) over every logit."""
    # YOUR CODE HERE
    raise NotImplementedError
