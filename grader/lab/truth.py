"""Expected values, computed in the trusted process from the HuggingFace model itself."""

from __future__ import annotations

import hashlib
import os
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from . import contract, oracle
from .common import CheckpointRef, Job
from .diagnose import CandidateIndex

GPT2 = oracle.Variant()  # the oracle's default behaviour: GPT-2's own


class Expected:
    """What a correct submission produces on one checkpoint (computed lazily, then cached)."""

    def __init__(self, checkpoint: CheckpointRef, cache: Path | None = None, weights_id: str = ""):
        self.checkpoint = checkpoint
        self.shape = checkpoint.shape
        self._logits: dict[bytes, np.ndarray] = {}
        # HuggingFace's logits on disk, keyed by the weights' hash and the token ids: a batch, or the
        # next batch, never runs HuggingFace's forward pass twice on the same input.
        self.cache = cache / weights_id if cache is not None and weights_id else None

    @cached_property
    def hf_model(self) -> Any:
        from transformers import GPT2LMHeadModel

        return GPT2LMHeadModel.from_pretrained(self.checkpoint.path).eval()

    @cached_property
    def tokenizer(self) -> Any:
        from transformers import GPT2Tokenizer

        return GPT2Tokenizer.from_pretrained(self.checkpoint.path)

    @cached_property
    def state(self) -> dict[str, np.ndarray]:
        return {k: v.detach().cpu().numpy() for k, v in self.hf_model.state_dict().items()}

    @cached_property
    def attributes(self) -> dict[str, np.ndarray]:
        return contract.expected_attributes(self.state, self.shape.num_layers)

    @cached_property
    def candidates(self) -> CandidateIndex:
        return CandidateIndex(self.attributes, self.state)

    def logits(self, ids: np.ndarray) -> np.ndarray:
        """HuggingFace's float32 logits for ids of shape (T,) or (B, T)."""
        import torch

        key = ids.shape.__repr__().encode() + np.ascontiguousarray(ids, dtype=np.int64).tobytes()
        if key in self._logits:
            return self._logits[key]
        stored = self.cache / f"logits-{hashlib.sha256(key).hexdigest()[:32]}.npy" if self.cache else None
        if stored is not None and stored.is_file():
            try:
                self._logits[key] = np.load(stored, allow_pickle=False)
                return self._logits[key]
            except (OSError, ValueError):
                pass  # a damaged cache entry: compute it again
        batch = torch.from_numpy(np.atleast_2d(ids).astype(np.int64))
        with torch.no_grad():
            out = self.hf_model(batch).logits.float().numpy()
        self._logits[key] = out if ids.ndim == 2 else out[0]
        if stored is not None:
            try:
                stored.parent.mkdir(parents=True, exist_ok=True)
                tmp = stored.with_suffix(f".{os.getpid()}.tmp")
                with tmp.open("wb") as fh:
                    np.save(fh, self._logits[key], allow_pickle=False)
                os.replace(tmp, stored)
            except OSError:
                pass  # a read-only cache only costs time
        return self._logits[key]

    def embeddings(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Token and position embeddings, straight from wte and wpe."""
        T = ids.shape[-1]
        return self.state["transformer.wte.weight"][ids], self.state["transformer.wpe.weight"][np.arange(T)]

    def trace(self, ids: np.ndarray, variant: oracle.Variant = GPT2) -> tuple[np.ndarray, oracle.Trace]:
        """Logits and per-sub-step activations of the NumPy oracle on HuggingFace's weights."""
        trace: oracle.Trace = []
        logits = oracle.forward(self.attributes, ids, self.shape.num_heads, variant, trace=trace)
        return logits, trace


class Truth:
    """Expected values for every checkpoint of a job."""

    def __init__(self, job: Job, cache: Path | None = None, weights_ids: tuple[str, ...] = ()):
        self.job = job
        ids = list(weights_ids) + [""] * (len(job.checkpoints) - len(weights_ids))
        self.checkpoints = [Expected(c, cache, w) for c, w in zip(job.checkpoints, ids, strict=True)]

    @property
    def primary(self) -> Expected:
        return self.checkpoints[0]
