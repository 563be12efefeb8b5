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

    ### BEGIN SOLUTION
    def same(w: np.ndarray) -> np.ndarray:
        return w  # Conv1D is already (in, out): nothing to do

    def split_qkv(w: np.ndarray) -> tuple[np.ndarray, ...]:
        return tuple(np.split(w, 3, axis=-1))  # [d, 3d] -> 3 x [d, d]; [3d] -> 3 x [d]

    mapping: WeightMapping = {
        "transformer.wte.weight": ("token_embedding.weight", same),
        "transformer.wpe.weight": ("pos_embedding.weight", same),
    }
    for i in range(num_layers):
        hf, ours = f"transformer.h.{i}", f"blocks.{i}"
        qkv_w = (f"{ours}.attn.W_Q", f"{ours}.attn.W_K", f"{ours}.attn.W_V")
        qkv_b = (f"{ours}.attn.b_Q", f"{ours}.attn.b_K", f"{ours}.attn.b_V")
        mapping[f"{hf}.ln_1.weight"] = (f"{ours}.ln1.gamma", same)
        mapping[f"{hf}.ln_1.bias"] = (f"{ours}.ln1.beta", same)
        mapping[f"{hf}.attn.c_attn.weight"] = (qkv_w, split_qkv)
        mapping[f"{hf}.attn.c_attn.bias"] = (qkv_b, split_qkv)
        mapping[f"{hf}.attn.c_proj.weight"] = (f"{ours}.attn.W_O", same)
        mapping[f"{hf}.attn.c_proj.bias"] = (f"{ours}.attn.b_O", same)
        mapping[f"{hf}.ln_2.weight"] = (f"{ours}.ln2.gamma", same)
        mapping[f"{hf}.ln_2.bias"] = (f"{ours}.ln2.beta", same)
        mapping[f"{hf}.mlp.c_fc.weight"] = (f"{ours}.ffn.W1", same)
        mapping[f"{hf}.mlp.c_fc.bias"] = (f"{ours}.ffn.b1", same)
        mapping[f"{hf}.mlp.c_proj.weight"] = (f"{ours}.ffn.W2", same)
        mapping[f"{hf}.mlp.c_proj.bias"] = (f"{ours}.ffn.b2", same)
    mapping["transformer.ln_f.weight"] = ("ln_f.gamma", same)
    mapping["transformer.ln_f.bias"] = ("ln_f.beta", same)
    return mapping
    ### END SOLUTION


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
    ### BEGIN SOLUTION
    hf_model = GPT2LMHeadModel.from_pretrained(model_name)
    state = {name: t.detach().to(torch.float32).cpu().numpy() for name, t in hf_model.state_dict().items()}
    for hf_name, (target, transform) in get_weight_mapping(hf_model.config.n_layer).items():
        if hf_name not in state:
            raise KeyError(f"the checkpoint {model_name!r} has no parameter {hf_name!r}")
        paths = (target,) if isinstance(target, str) else target
        values = transform(state[hf_name])
        values = (values,) if isinstance(target, str) else tuple(values)
        for path, value in zip(paths, values, strict=True):
            existing = get_attribute(your_model, path)
            if not isinstance(existing, np.ndarray):
                raise TypeError(f"{path} is a {type(existing).__name__}, not a NumPy array")
            if existing.shape != value.shape:
                raise ValueError(
                    f"{path} has shape {existing.shape} but {hf_name} gives {value.shape}; "
                    "build the model with the checkpoint's sizes"
                )
            existing[...] = value  # copy in place: every other reference (the tied head) sees it too
    head = your_model.lm_head.weight
    if head is not your_model.token_embedding.weight:  # an untied model still needs GPT-2's head
        head[...] = your_model.token_embedding.weight
    ### END SOLUTION


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
    ### BEGIN SOLUTION
    ids = np.asarray(tokenizer.encode(text, add_special_tokens=False), dtype=np.int64)[None]  # [1, T]
    if ids.shape[1] == 0:
        raise ValueError("text has no tokens to compare on")
    with torch.no_grad():
        theirs = hf_model(torch.from_numpy(ids)).logits.float().numpy()  # [1, T, V]
    ours = np.asarray(your_model(ids, training=False), dtype=np.float32)  # [1, T, V]
    if ours.shape != theirs.shape:
        raise ValueError(f"your logits have shape {ours.shape}, HuggingFace's {theirs.shape}")
    max_diff = float(np.max(np.abs(ours - theirs)))
    return bool(max_diff <= atol), max_diff
    ### END SOLUTION


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
    ### BEGIN SOLUTION
    ids = np.asarray(token_ids, dtype=np.int64)
    ids = ids[None] if ids.ndim == 1 else ids  # [T] -> [1, T]
    T = ids.shape[1]

    # HuggingFace: record each block's output and ln_f's output during one ordinary forward.
    tr = hf_model.transformer
    captured: dict[str, np.ndarray] = {}

    def keep(name: str) -> Callable[..., None]:
        def hook(module: Any, inputs: Any, output: Any) -> None:
            out = output[0] if isinstance(output, tuple) else output  # blocks return a tuple in transformers 4
            captured[name] = out.detach().float().numpy()

        return hook

    modules = [(f"block_{i}", block) for i, block in enumerate(tr.h)] + [("ln_f", tr.ln_f)]
    handles = [module.register_forward_hook(keep(name)) for name, module in modules]
    try:
        with torch.no_grad():
            t = torch.from_numpy(ids)
            captured["embedding"] = (tr.wte(t) + tr.wpe(torch.arange(T)[None])).float().numpy()
            captured["logits"] = hf_model(t).logits.float().numpy()
    finally:
        for handle in handles:
            handle.remove()

    # Ours: the same stages, in the same order as GPTModel.forward.
    mine: dict[str, np.ndarray] = {}
    x = your_model.token_embedding(ids) + your_model.pos_embedding(T)  # [1, T, d]
    mine["embedding"] = x
    mask = np.triu(np.ones((T, T), dtype=bool), k=1)  # True = a future position, hidden
    for i, block in enumerate(your_model.blocks):
        x = block(x, mask, training=False)
        mine[f"block_{i}"] = x
    x = your_model.ln_f(x)
    mine["ln_f"] = x
    mine["logits"] = your_model.lm_head(x)  # [1, T, V]

    order = ["embedding", *(f"block_{i}" for i in range(len(your_model.blocks))), "ln_f", "logits"]
    return {name: float(np.max(np.abs(np.asarray(mine[name], dtype=np.float32) - captured[name]))) for name in order}
    ### END SOLUTION


def analyze_weight_differences(your_model: GPTModel, hf_model: GPT2LMHeadModel) -> dict[str, dict[str, float]]:
    """For every weight of your model, ``{'max_diff': ..., 'mean_diff': ...}`` against HuggingFace.

    Keys are the dotted attribute paths (``'token_embedding.weight'``,
    ``'blocks.0.attn.W_Q'``, ..., ``'ln_f.beta'``); use ``get_weight_mapping`` to
    find the HuggingFace tensor (and the slice of it) that each one comes from.
    After a correct load every difference is exactly 0.
    """
    ### BEGIN SOLUTION
    state = {name: t.detach().to(torch.float32).cpu().numpy() for name, t in hf_model.state_dict().items()}
    expected: dict[str, np.ndarray] = {}
    for hf_name, (target, transform) in get_weight_mapping(hf_model.config.n_layer).items():
        paths = (target,) if isinstance(target, str) else target
        values = transform(state[hf_name])
        values = (values,) if isinstance(target, str) else tuple(values)
        expected.update(zip(paths, values, strict=True))
    expected["lm_head.weight"] = state["transformer.wte.weight"]  # tied: must equal the embedding too

    report: dict[str, dict[str, float]] = {}
    for path, theirs in expected.items():
        ours = np.asarray(get_attribute(your_model, path), dtype=np.float32)
        if ours.shape != theirs.shape:  # cannot be compared, so it cannot match
            report[path] = {"max_diff": float("inf"), "mean_diff": float("inf")}
            continue
        diff = np.abs(ours - theirs)
        report[path] = {"max_diff": float(diff.max()), "mean_diff": float(diff.mean())}
    return report
    ### END SOLUTION


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
    ### BEGIN SOLUTION
    prompt_ids = list(tokenizer.encode(prompt, add_special_tokens=False))
    # GPT-2 starts unconditional text from <|endoftext|>; it is context only, not output.
    start = prompt_ids or [tokenizer.bos_token_id]
    new_ids: list[int] = []
    for _ in range(max_length):
        context = np.asarray(start + new_ids, dtype=np.int64)[-model.max_seq_len :][None]  # [1, T]
        logits = np.asarray(model(context, training=False))[0, -1].astype(np.float64)  # [V]
        if temperature <= 1e-5:
            next_id = int(np.argmax(logits))
        else:
            z = logits / temperature
            p = np.exp(z - z.max())
            next_id = int(np.random.choice(p.size, p=p / p.sum()))
        new_ids.append(next_id)
        if next_id == tokenizer.eos_token_id:
            break
    return tokenizer.decode(prompt_ids + new_ids)
    ### END SOLUTION
