"""Lab 04: load HuggingFace GPT-2 weights into your NumPy GPT from Lab 03.

Implement the functions marked ``YOUR CODE HERE``; ``get_gpt2_config``,
``create_gpt2_model`` and ``get_attribute`` are given. The goal: your model's
logits equal HuggingFace's ``GPT2LMHeadModel`` logits for the same tokens.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import GPT2LMHeadModel, GPT2Tokenizer

# Your GPTModel: a decoder.py beside this file, else the Lab 03 one of the course's layout
# (chapters/ch03_complete_transformer/lab03_decoder_transformer/src/decoder.py).
_HERE = Path(__file__).resolve().parent if "__file__" in globals() else Path.cwd()  # no __file__ in a notebook
_LAB03 = _HERE.parent.parent / "lab03_decoder_transformer" / "src"
for _folder in (_LAB03, _HERE):  # inserted last, searched first: this folder wins
    if str(_folder) not in sys.path:
        sys.path.insert(0, str(_folder))
if "GPTModel" not in globals():  # a notebook may define GPTModel in an earlier cell
    from decoder import GPTModel

Transform = Callable[[np.ndarray], Any]
WeightMapping = dict[str, tuple[str | tuple[str, ...], Transform]]


# =============================================================================
# Given
# =============================================================================


def get_gpt2_config(model_name: str = "gpt2") -> dict[str, int]:
    """Sizes of the four released GPT-2 models, in GPTModel's argument names."""
    sizes = {  # name: (d_model, num_layers, num_heads)
        "gpt2": (768, 12, 12),
        "gpt2-medium": (1024, 24, 16),
        "gpt2-large": (1280, 36, 20),
        "gpt2-xl": (1600, 48, 25),
    }
    if model_name not in sizes:
        raise ValueError(f"unknown GPT-2 model {model_name!r}; expected one of {sorted(sizes)}")
    d_model, num_layers, num_heads = sizes[model_name]
    return {
        "vocab_size": 50257,
        "d_model": d_model,
        "num_layers": num_layers,
        "num_heads": num_heads,
        "d_ff": 4 * d_model,  # GPT-2's MLP is always four times wider than the model
        "max_seq_len": 1024,
    }


def create_gpt2_model(model_name: str = "gpt2") -> GPTModel:
    """A randomly initialised GPTModel with the architecture of ``model_name`` (no dropout, tied head)."""
    return GPTModel(**get_gpt2_config(model_name), dropout=0.0, tie_weights=True)


def get_attribute(model: Any, path: str) -> Any:
    """Follow a dotted path such as ``"blocks.0.attn.W_Q"``; integer parts index lists."""
    obj = model
    for part in path.split("."):
        obj = obj[int(part)] if part.isdigit() else getattr(obj, part)
    return obj


# =============================================================================
# Functions to implement
# =============================================================================


def get_weight_mapping(num_layers: int) -> WeightMapping:
    """Map each HuggingFace GPT-2 parameter name to ``(target, transform)``.

    Keys are spelled as in ``GPT2LMHeadModel.state_dict()``: ``transformer.wte.weight``,
    ``transformer.h.{i}.attn.c_attn.weight``, ... for ``i`` in ``range(num_layers)``.

    ``target`` is the dotted path of the attribute in your model that receives the
    tensor (``"blocks.0.ln1.gamma"``), or a tuple of paths when one tensor feeds
    several attributes. ``transform`` takes the HuggingFace array (NumPy) and
    returns the array to store, or a tuple of arrays in the order of the paths.

    Pitfalls:
        - Conv1D: GPT-2's ``c_attn``, ``c_proj`` and ``c_fc`` store their weights as
          (in_features, out_features), the layout ``x @ W`` wants: no transpose.
        - ``c_attn`` holds Q, K and V side by side: weight (d, 3d), bias (3d,). Split
          along the LAST axis into three equal parts, in the order Q, K, V.
        - ``lm_head.weight`` is tied to ``transformer.wte.weight``; leave it out.
    """

    # YOUR CODE HERE
    raise NotImplementedError


def load_gpt2_weights(your_model: GPTModel, model_name: str = "gpt2") -> None:
    """Fill ``your_model`` in place with the weights of a GPT-2 checkpoint.

    ``model_name`` is anything ``GPT2LMHeadModel.from_pretrained`` accepts: a hub
    name (``"gpt2"``) or a local checkpoint folder. Build the model with the
    checkpoint's sizes first; the depth comes from ``hf_model.config.n_layer``,
    never assume 12 layers of 768.

    Steps: load the HuggingFace model; turn its ``state_dict()`` into float32
    NumPy arrays (``tensor.detach().numpy()``); for each entry of
    ``get_weight_mapping``, transform the array and store it in the target attribute.

    Pitfalls:
        - The tied head: ``lm_head.weight is token_embedding.weight`` (one array).
          Rebinding ``token_embedding.weight = new_array`` leaves the head on the
          old random array. Copy into the existing array instead
          (``existing[...] = new``), which keeps the tie.
        - Check each shape before copying, and say which attribute is wrong.
    """
    # YOUR CODE HERE
    raise NotImplementedError


def compare_outputs(
    your_model: GPTModel,
    hf_model: GPT2LMHeadModel,
    tokenizer: GPT2Tokenizer,
    text: str,
    atol: float = 1e-4,
) -> tuple[bool, float]:
    """Run both models on ``text`` and return ``(match, max_diff)``.

    Tokenise ``text`` as given (``add_special_tokens=False``), run HuggingFace under
    ``torch.no_grad()`` and your model with ``training=False`` on the same (1, T)
    ids. ``max_diff`` is the largest absolute difference over all logits (a Python
    float) and ``match`` is ``max_diff <= atol`` (a Python bool).

    On tolerance: float32 rounding noise grows with the size of the logits. The
    default ``atol=1e-4`` suits small models; on a model whose logits reach the
    hundreds, a correct implementation can differ by more, so scale it, e.g.
    ``1e-5 * max(1, max |logit|)``.
    """
    # YOUR CODE HERE
    raise NotImplementedError


def compare_intermediate_outputs(
    your_model: GPTModel,
    hf_model: GPT2LMHeadModel,
    token_ids: np.ndarray,
) -> dict[str, float]:
    """Max absolute difference with HuggingFace after each stage, to find the first wrong one.

    ``token_ids``: int array of shape (T,) or (1, T). Returns floats under the keys
    ``'embedding'`` (token + position embedding), ``'block_0'`` ... ``'block_{n-1}'``
    (the residual stream after each block), ``'ln_f'`` and ``'logits'``.

    Walk your model as its forward does (embeddings, causal mask, blocks, ``ln_f``,
    ``lm_head``) with ``training=False``. On the HuggingFace side use the modules of
    ``hf_model.transformer`` (``wte``, ``wpe``, ``h[i]``, ``ln_f``), e.g. with forward
    hooks. Careful: the last of HuggingFace's ``hidden_states`` is taken AFTER
    ``ln_f``, so it is not the output of the last block.
    """
    # YOUR CODE HERE
    raise NotImplementedError


def analyze_weight_differences(your_model: GPTModel, hf_model: GPT2LMHeadModel) -> dict[str, dict[str, float]]:
    """For every weight of your model, ``{'max_diff': ..., 'mean_diff': ...}`` against HuggingFace.

    Keys are the dotted attribute paths (``'token_embedding.weight'``,
    ``'blocks.0.attn.W_Q'``, ..., ``'ln_f.beta'``); use ``get_weight_mapping`` to
    find the HuggingFace tensor (and the slice of it) that each one comes from.
    After a correct load every difference is exactly 0.
    """
    # YOUR CODE HERE
    raise NotImplementedError


def generate_text(
    model: GPTModel,
    tokenizer: GPT2Tokenizer,
    prompt: str,
    max_length: int = 50,
    temperature: float = 1.0,
) -> str:
    """Continue ``prompt`` with up to ``max_length`` new tokens; return prompt + continuation as text.

    Each step: run the model on the ids so far (the last ``model.max_seq_len`` of
    them), take the logits of the last position, and pick the next token: the
    argmax when ``temperature <= 1e-5`` (greedy, the same as HuggingFace's
    ``generate(do_sample=False)``), otherwise a sample from
    ``softmax(logits / temperature)`` (seed it with ``np.random.seed``). Stop early
    after the tokenizer's end-of-text token.
    """
    # YOUR CODE HERE
    raise NotImplementedError
