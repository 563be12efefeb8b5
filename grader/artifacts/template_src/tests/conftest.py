"""Fixtures for the public tests: a small GPT-2 checkpoint built on your machine, offline."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing here needs the internet
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

from lab04_checks.common import CheckpointRef, Job, StudentFailure, TokenInput, import_student
from lab04_checks.truth import Truth

from lab04_checks.checkpoints import PUBLIC_TINY, ensure_checkpoint
from lab04_checks.contract import ModelShape

SRC = Path(__file__).resolve().parents[1] / "src"
# The public inputs. The grader uses other texts, a second checkpoint of another depth and width,
# and more layer counts: pass these tests, but make your code general.
ONE_TOKEN = "Hi"
TEXT = "Loading pretrained weights validates the architecture: a wrong transpose shows up at once."
COMPARE_TEXTS = ("Hello, my name is", "Pretrained weights, loaded right, give identical logits.")


@pytest.fixture(scope="session")
def checkpoint() -> CheckpointRef:
    """The public checkpoint (2 layers, d_model 64, GPT-2's real tokenizer), built once and cached."""
    from transformers import GPT2Config

    folder = ensure_checkpoint(PUBLIC_TINY)
    return CheckpointRef(str(folder), ModelShape.from_hf_config(GPT2Config.from_pretrained(folder)), "public tiny")


@pytest.fixture(scope="session")
def job(checkpoint: CheckpointRef) -> Job:
    from transformers import GPT2Tokenizer

    tokenizer = GPT2Tokenizer.from_pretrained(checkpoint.path)
    ids = tokenizer(TEXT)["input_ids"]
    return Job(
        checkpoints=(checkpoint,),
        inputs=(
            TokenInput.of("1-token", tokenizer(ONE_TOKEN)["input_ids"]),
            TokenInput.of(f"{len(ids)}-token", ids),
            TokenInput.of("batched 2x7", [ids[:7], ids[5:12]]),
        ),
        trace_input=1,
        texts=COMPARE_TEXTS,
        mapping_layers=(1, 2, 12),
        coverage_layers=(24,),
        seed=1,
    )


@pytest.fixture(scope="session")
def truth(job: Job) -> Truth:
    return Truth(job)


@pytest.fixture(scope="session")
def student():
    """Your src/pretrained.py and src/decoder.py, imported."""
    try:
        return import_student(SRC)
    except StudentFailure as failure:
        if failure.original is not None:
            raise failure.original from None
        pytest.fail(failure.record["summary"], pytrace=False)
