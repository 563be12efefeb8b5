"""Expected values, computed on the trusted side from the checkpoint's own tensors. No torch.

``Expected`` is one checkpoint: its tensors (read with safetensors' NumPy reader),
what every attribute must hold (``answers``), their digests, the index the diagnosis
searches, GPT-2's tokenizer and the float64 oracle's logits. Everything is computed on
first use and kept, so a batch pays for it once.
"""

from __future__ import annotations

import functools
import hashlib
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np

from lab04_checks.contract import attribute_paths, logits_tolerance

from . import answers, oracle
from .checkpoints import ModelSource, read_state
from .diagnose import CandidateIndex


def digest(array: np.ndarray) -> str:
    """sha256 of an array's dtype, shape and C-ordered bytes; the agent computes the same in the student process."""
    plain = np.ascontiguousarray(array)
    h = hashlib.sha256(f"{plain.dtype.str}{list(plain.shape)}".encode())
    h.update(memoryview(plain).cast("B") if plain.size else b"")
    return h.hexdigest()


T = TypeVar("T")


def made_once(method: Callable[[Expected], T]) -> property:
    """A property computed on first use and kept, once even when threads ask together (a batch computes the
    truth in a thread while its first tiers ask for parts of it; functools.cached_property stopped locking
    in Python 3.12)."""

    @functools.wraps(method)
    def get(self: Expected) -> T:
        with self._kept_lock:
            if method.__name__ not in self._kept:
                self._kept[method.__name__] = method(self)
            return self._kept[method.__name__]

    return property(get)


class Expected:
    """What a correct submission produces on one checkpoint."""

    def __init__(self, source: ModelSource):
        self.source = source
        self.shape = source.shape
        self.name = source.name
        self._logits: dict[bytes, np.ndarray] = {}
        self._traces: dict[bytes, tuple[np.ndarray, oracle.Trace]] = {}
        self._made: dict[tuple, Any] = {}
        self._kept: dict[str, Any] = {}
        self._kept_lock = threading.RLock()  # the properties below: one may ask for another
        self._lock = threading.Lock()
        self._making = threading.Lock()  # apart: what is made may ask for logits, which take _lock

    @made_once
    def state(self) -> dict[str, np.ndarray]:
        return read_state(self.source.path)

    @made_once
    def attributes(self) -> dict[str, np.ndarray]:
        return answers.expected_attributes(self.state, self.shape.num_layers)

    @made_once
    def digests(self) -> dict[str, str]:
        return {path: digest(self.attributes[path]) for path in attribute_paths(self.shape.num_layers)}

    @made_once
    def candidates(self) -> CandidateIndex:
        return CandidateIndex(self.attributes, self.state)

    @made_once
    def tokenizer(self) -> Any:
        from tokenizers import Tokenizer

        path = self.source.path / "tokenizer.json"
        if path.is_file():
            return Tokenizer.from_file(str(path))
        from tokenizers import decoders, models, pre_tokenizers

        tok = Tokenizer(
            models.BPE.from_file(str(self.source.path / "vocab.json"), str(self.source.path / "merges.txt"))
        )
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        return tok

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode([int(i) for i in ids], skip_special_tokens=False)

    def logits(self, ids: np.ndarray) -> np.ndarray:
        """GPT-2's float64 logits for ids of shape (T,) or (B, T)."""
        ids = np.asarray(ids, dtype=np.int64)
        key = repr(ids.shape).encode() + ids.tobytes()
        with self._lock:
            if key not in self._logits:
                self._logits[key] = oracle.forward(self.attributes, ids, self.shape.num_heads)
            return self._logits[key]

    def tolerance(self, ids: np.ndarray) -> float:
        return logits_tolerance(float(np.max(np.abs(self.logits(ids)))))

    def trace(
        self, ids: np.ndarray, variant: oracle.Variant = oracle.GPT2, weights: dict[str, np.ndarray] | None = None
    ) -> tuple[np.ndarray, oracle.Trace]:
        """The oracle's logits and per-sub-step activations (of the first row) on these weights.

        GPT-2's own trace is kept: a batch's submissions share their inputs, so each failing one
        is compared with the same trace (0.7 s on small, every time it was recomputed)."""
        own = weights is None and variant == oracle.GPT2
        key = repr(np.shape(ids)).encode() + np.asarray(ids, dtype=np.int64).tobytes()
        with self._lock:
            if own and key in self._traces:
                return self._traces[key]
        trace: oracle.Trace = []
        logits = oracle.forward(weights or self.attributes, ids, self.shape.num_heads, variant, trace=trace)
        if own:
            with self._lock:
                self._traces[key] = (logits, trace)
        return logits, trace

    def made(self, key: tuple, make: Callable[[], Any]) -> Any:
        """``make()``, once per ``key``: what a tier derives from this checkpoint alone, whatever the student."""
        with self._making:
            if key not in self._made:
                self._made[key] = make()
            return self._made[key]

    def warm(self, *ids: np.ndarray) -> None:
        """Compute now what grading will need (a batch does it once, before its jobs start)."""
        _ = self.attributes, self.candidates, self.tokenizer  # digests only when an attribute is not exported
        for item in ids:
            self.logits(item)
