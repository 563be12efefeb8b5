"""The grader's hidden inputs: texts, token ids and layer counts. Never copied into the template."""

from __future__ import annotations

from typing import Any

from .lab.common import Job, TokenInput
from .models import ModelSource

ONE_TOKEN = "Hello"  # a single GPT-2 token: 15496
LONG_TEXT = (
    "Weights are only numbers until they sit in the right place. A transposed matrix, a swapped "
    "third of the attention projection or a forgotten bias all leave the shapes intact and the "
    "logits wrong, which is why every position of every input is compared, not only the last one."
)
BATCH_TEXT = "Three short rows of the same length check that a leading batch axis works as well."
COMPARE_TEXTS = ("Good morning, class.", "Every logit of every position counts, not only the last one.")
LONG_TOKENS = 64
BATCH_ROWS, BATCH_TOKENS = 3, 9
SEED = 2024


def build_job(primary: ModelSource, second: ModelSource | None, tokenizer: Any) -> Job:
    """The job every tier runs on: inputs sized to the primary checkpoint."""
    max_len = primary.shape.max_seq_len
    if second is not None:
        max_len = min(max_len, second.shape.max_seq_len)
    one = tokenizer(ONE_TOKEN)["input_ids"]
    long = tokenizer(LONG_TEXT)["input_ids"][: min(LONG_TOKENS, max_len)]
    batch_ids = tokenizer(BATCH_TEXT)["input_ids"]
    batch = [batch_ids[r : r + BATCH_TOKENS] for r in range(BATCH_ROWS)]
    layers = sorted({1, 2, primary.shape.num_layers, 12})
    checkpoints = (primary.ref(),)
    if second is not None:
        checkpoints += (second.ref(),)
    return Job(
        checkpoints=checkpoints,
        inputs=(
            TokenInput.of("1-token", one),
            TokenInput.of(f"{len(long)}-token", long),
            TokenInput.of(f"batched {BATCH_ROWS}x{BATCH_TOKENS}", batch),
        ),
        trace_input=1,
        texts=COMPARE_TEXTS,
        mapping_layers=tuple(layers),
        coverage_layers=(48,),
        seed=SEED,
    )
