"""Public tests for Lab 04: the grader's own checks, on a small checkpoint built offline.

Each test is one tier of the grader and prints the feedback the grader would
give. Passing them all is necessary, not sufficient: the grader also uses a
second checkpoint of another depth and width, other inputs and more layer
counts.

Run: python -m pytest tests/        (or: uv run pytest tests/)
"""

from __future__ import annotations

from types import ModuleType

import pytest
from lab04_checks.common import Job, StudentCode, StudentFailure
from lab04_checks.tiers import compare, embedding, logits, mapping, shapes
from lab04_checks.truth import Truth


def check(tier: ModuleType, student: StudentCode, job: Job, truth: Truth) -> None:
    """Run one tier: your code raises -> you see your traceback; wrong values -> the grader's feedback."""
    __tracebackhide__ = True
    try:
        collected = tier.collect(student, job)
    except StudentFailure as failure:
        if failure.original is not None:
            raise failure.original from None
        pytest.fail(failure.record["summary"], pytrace=False)
    verdict = tier.judge(job, collected, truth)
    if verdict.status != "passed":
        pytest.fail(f"[{tier.TITLE}: {verdict.status}]\n{verdict.detail}", pytrace=False)


def test_weight_mapping(student, job, truth):
    """get_weight_mapping covers every GPT-2 parameter and its transforms give the right arrays."""
    check(mapping, student, job, truth)


def test_loaded_weights(student, job, truth):
    """After load_gpt2_weights, every attribute has the right shape, dtype float32 and values."""
    check(shapes, student, job, truth)


def test_embeddings(student, job, truth):
    """token_embedding(ids) + pos_embedding(positions) equal HuggingFace's wte + wpe."""
    check(embedding, student, job, truth)


def test_logits(student, job, truth):
    """The full forward pass gives HuggingFace's logits at every position."""
    check(logits, student, job, truth)


def test_compare_outputs(student, job, truth):
    """compare_outputs reports the true maximum difference and the right verdict."""
    check(compare, student, job, truth)
