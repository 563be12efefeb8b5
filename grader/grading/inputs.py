"""What the grader feeds the student's code: chosen here, on the trusted side, afresh for every run.

Token ids are drawn from a generator seeded by ``secrets`` (recorded in the report for
staff, never shown to the student), so no submission can know them in advance: a loader
that precomputes HuggingFace's answers for some inputs has nothing to precompute for.
Tests pass a fixed seed to make a run reproducible.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

import numpy as np

from lab04_checks.contract import ModelShape

LONG_TOKENS = 48
TRACE_MIN_TOKENS = 8  # the shortest traced prefix: long enough for masks, positions and head splits to show
BATCH_ROWS, BATCH_TOKENS = 3, 9
MAPPING_LAYERS = (1, 2, 12)  # plus the checkpoint's own; 48 is checked for keys only
COVERAGE_LAYERS = (48,)
SENTENCES = (
    "Weights are only numbers until they sit in the right place.",
    "A transposed matrix keeps its shape and changes every answer.",
    "Every logit of every position counts, not only the last one.",
    "The quick brown fox jumps over the lazy dog.",
    "Good morning, class. Today we load a pretrained model.",
    "In a hole in the ground there lived a hobbit.",
    "Attention is a weighted average of values.",
    "Three short rows of the same length check a batch axis.",
)
PROMPTS = (
    "Once upon a time",
    "The meaning of life is",
    "Hello, my name is",
    "In the beginning",
    "The best way to learn is",
)


@dataclass(frozen=True)
class TokenInput:
    """Token ids to run a model on, always 2-D (batch, seq_len)."""

    label: str
    ids: np.ndarray


@dataclass(frozen=True)
class Inputs:
    """Everything the tiers feed the student's code in one run."""

    seed: int
    logits: tuple[TokenInput, ...]
    trace: int  # which of ``logits`` the diagnosis traces sub-step by sub-step
    second: TokenInput  # on the second checkpoint
    embedding: TokenInput
    mapping_layers: tuple[int, ...]
    coverage_layers: tuple[int, ...]
    texts: tuple[str, ...]  # for compare_outputs
    prompts: tuple[str, ...]  # for generate_text, in order of preference
    rng_seed: int  # for the parent's own random choices (corruptions, their order)

    def traced(self, first_wrong_position: int = 0) -> np.ndarray:
        """The ids the diagnosis traces: the shortest prefix of the traced input's first row that holds
        ``first_wrong_position`` (a causal model's wrong position is wrong in every prefix holding it)."""
        row = self.logits[self.trace].ids[:1]
        return row[:, : max(TRACE_MIN_TOKENS, first_wrong_position + 1)]

    def rng(self, salt: int) -> np.random.Generator:
        return np.random.default_rng([self.rng_seed, salt])


def _ids(rng: np.random.Generator, vocab: int, *shape: int) -> np.ndarray:
    return rng.integers(0, vocab - 1, size=shape, dtype=np.int64)  # never <|endoftext|>: a plain token stream


def choose(primary: ModelShape, second: ModelShape | None, seed: int | None = None) -> Inputs:
    """The inputs of one run, sized to the checkpoints; ``seed`` None draws a fresh one."""
    seed = secrets.randbits(63) if seed is None else seed
    rng = np.random.default_rng(seed)
    vocab = min(primary.vocab_size, second.vocab_size) if second else primary.vocab_size
    long = min(LONG_TOKENS, primary.max_seq_len)
    logits = (
        TokenInput("1-token", _ids(rng, vocab, 1, 1)),
        TokenInput(f"{long}-token", _ids(rng, vocab, 1, long)),
        TokenInput(f"batched {BATCH_ROWS}x{BATCH_TOKENS}", _ids(rng, vocab, BATCH_ROWS, min(BATCH_TOKENS, long))),
    )
    second_len = min(24, second.max_seq_len) if second else 1
    order = rng.permutation(len(SENTENCES))
    return Inputs(
        seed=seed,
        logits=logits,
        trace=1,
        second=TokenInput(f"{second_len}-token", _ids(rng, vocab, 1, second_len)),
        embedding=TokenInput("2x7", _ids(rng, vocab, 2, min(7, long))),
        mapping_layers=tuple(sorted({*MAPPING_LAYERS, primary.num_layers})),
        coverage_layers=COVERAGE_LAYERS,
        texts=tuple(SENTENCES[i] for i in order[:3]),
        prompts=tuple(PROMPTS[i] for i in rng.permutation(len(PROMPTS))),
        rng_seed=int(rng.integers(0, 2**62)),
    )
