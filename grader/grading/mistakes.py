"""The classic decoder mistakes, each as an oracle variant and the advice that fixes it."""

from __future__ import annotations

from dataclasses import dataclass

from .oracle import Variant


@dataclass(frozen=True)
class Mistake:
    """A named mistake: how the oracle reproduces it and what to tell the student."""

    key: str
    variant: Variant
    advice: str


DECODER_MISTAKES: tuple[Mistake, ...] = (
    Mistake(
        "erf_gelu",
        Variant(gelu="erf"),
        "the MLP uses the exact (erf) GELU; GPT-2 uses the tanh approximation "
        "0.5*x*(1 + tanh(sqrt(2/pi)*(x + 0.044715*x**3)))",
    ),
    Mistake(
        "no_causal_mask",
        Variant(causal=False),
        "attention is not causal: position t must not see later positions; set the scores above "
        "the diagonal to -inf before the softmax",
    ),
    Mistake(
        "scale_sqrt_d_model",
        Variant(scale="sqrt_model"),
        "attention scores are divided by sqrt(d_model); GPT-2 divides by sqrt(d_head) = sqrt(d_model // num_heads)",
    ),
    Mistake(
        "scale_d_head", Variant(scale="head"), "attention scores are divided by d_head; GPT-2 divides by sqrt(d_head)"
    ),
    Mistake("no_scale", Variant(scale="none"), "attention scores are not scaled; GPT-2 divides them by sqrt(d_head)"),
    Mistake(
        "head_split_reshape",
        Variant(heads="reshape"),
        "heads are split with a plain reshape to (num_heads, T, d_head); reshape to (T, num_heads, d_head) "
        "and then move the head axis first (and undo both when merging)",
    ),
    Mistake(
        "head_split_interleaved",
        Variant(heads="interleaved"),
        "each head takes interleaved columns; head h must take the contiguous columns h*d_head:(h+1)*d_head",
    ),
    Mistake(
        "position_offset",
        Variant(position_offset=1),
        "positions start at 1; the first token has position 0: pos_embedding(T) returns rows 0..T-1",
    ),
    Mistake(
        "unbiased_layernorm",
        Variant(ln_variance="unbiased"),
        "LayerNorm uses the unbiased variance (ddof=1); GPT-2 divides by d (np.var's default)",
    ),
    Mistake(
        "eps_outside_sqrt",
        Variant(ln_eps="outside"),
        "LayerNorm adds eps outside the square root, (x - mean) / (sqrt(var) + eps); GPT-2 divides by sqrt(var + eps)",
    ),
    Mistake(
        "no_eps", Variant(ln_eps="none"), "LayerNorm leaves out eps; GPT-2 divides by sqrt(var + eps) with eps = 1e-5"
    ),
    Mistake(
        "softmax_over_queries",
        Variant(softmax_axis=-2),
        "the attention softmax normalises over the wrong axis; it must run over the keys (the last axis)",
    ),
)

UNTIED_HEAD = (
    "the hidden states match up to ln_f but the logits do not: GPT-2's output head is tied to the "
    "token embedding, logits = h @ token_embedding.weight.T (no separate, randomly initialised head)"
)

# Which weights each traced sub-step uses, for feedback when the decoder is the reference one.
STEP_WEIGHTS = {
    "embedding": "token_embedding.weight and pos_embedding.weight",
    "ln1": "ln1.gamma and ln1.beta",
    "attention": "attn.W_Q, W_K, W_V, b_Q, b_K, b_V, W_O and b_O",
    "residual after attention": "attn.W_O and b_O",
    "ln2": "ln2.gamma and ln2.beta",
    "mlp": "ffn.W1, b1, W2 and b2",
    "residual after mlp": "ffn.W2 and b2",
    "ln_f": "ln_f.gamma and ln_f.beta",
    "head": "token_embedding.weight (the tied head)",
}

_BY_KEY = {m.key: m for m in DECODER_MISTAKES}
# The mistakes each kind of sub-module can make, tried on the very input the student's sub-module received.
SUBSTEP_MISTAKES: dict[str, tuple[Mistake, ...]] = {
    "ln": tuple(_BY_KEY[k] for k in ("eps_outside_sqrt", "unbiased_layernorm", "no_eps")),
    "attention": tuple(
        _BY_KEY[k]
        for k in (
            "no_causal_mask",
            "scale_sqrt_d_model",
            "scale_d_head",
            "no_scale",
            "head_split_reshape",
            "head_split_interleaved",
            "softmax_over_queries",
        )
    ),
    "mlp": (
        _BY_KEY["erf_gelu"],
        Mistake("relu", Variant(gelu="relu"), "the MLP uses ReLU; GPT-2 uses the tanh approximation of GELU"),
    ),
    "block": (),
}
