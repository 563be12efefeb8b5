"""GPT-2's tokenizer without transformers, for ``generate_text`` in the torch-free process.

The common calls of ``GPT2Tokenizer`` work: ``encode``, ``decode``, ``tokenizer(text)``,
``return_tensors="np"`` and ``"pt"`` (an array that also answers ``.numpy()``,
``.tolist()``, ``.detach()``), ``eos_token_id``. It is built with the ``tokenizers``
package from the checkpoint's own files.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

END_OF_TEXT = "<|endoftext|>"


class TensorLike(np.ndarray):
    """What ``return_tensors="pt"`` gives here: a NumPy array with torch's conversion methods."""

    def numpy(self) -> np.ndarray:
        return np.asarray(self)

    def detach(self) -> TensorLike:
        return self

    def cpu(self) -> TensorLike:
        return self

    def long(self) -> TensorLike:
        return self.astype(np.int64).view(TensorLike)

    def item(self, *args: Any) -> Any:
        return np.asarray(self).item(*args)


class StandInTokenizer:
    """GPT-2's byte-level BPE from ``tokenizer.json`` (or ``vocab.json`` + ``merges.txt``)."""

    def __init__(self, folder: str):
        from tokenizers import Tokenizer

        path = os.path.join(folder, "tokenizer.json")
        if os.path.isfile(path):
            self._tok = Tokenizer.from_file(path)
        else:
            from tokenizers import decoders, models, pre_tokenizers

            bpe = models.BPE.from_file(os.path.join(folder, "vocab.json"), os.path.join(folder, "merges.txt"))
            self._tok = Tokenizer(bpe)
            self._tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
            self._tok.decoder = decoders.ByteLevel()
        self.name_or_path = folder
        self.eos_token = self.bos_token = self.unk_token = END_OF_TEXT
        self.eos_token_id = self.bos_token_id = self._tok.token_to_id(END_OF_TEXT)
        self.pad_token = self.pad_token_id = None
        self.vocab_size = self._tok.get_vocab_size()

    def __len__(self) -> int:
        return self.vocab_size

    def _ids(self, text: str) -> list[int]:
        return self._tok.encode(text, add_special_tokens=False).ids

    @staticmethod
    def _tensor(ids: list[int], return_tensors: str | None) -> Any:
        if return_tensors in ("np", "pt"):
            array = np.array([ids], dtype=np.int64)
            return array.view(TensorLike) if return_tensors == "pt" else array
        if return_tensors is not None:
            raise ValueError(f"return_tensors={return_tensors!r} is not available here; use 'np' or None")
        return ids

    def encode(self, text: str, return_tensors: str | None = None, **kwargs: Any) -> Any:
        return self._tensor(self._ids(text), return_tensors)

    def __call__(self, text: Any, return_tensors: str | None = None, **kwargs: Any) -> dict:
        if isinstance(text, (list, tuple)):
            rows = [self._ids(t) for t in text]
            if return_tensors is None:
                return {"input_ids": rows, "attention_mask": [[1] * len(r) for r in rows]}
            ids = np.array(rows, dtype=np.int64)
        else:
            ids = self._tensor(self._ids(text), return_tensors)
            if return_tensors is None:
                return {"input_ids": ids, "attention_mask": [1] * len(ids)}
        ids = np.asarray(ids)
        mask = np.ones_like(ids)
        if return_tensors == "pt":
            return {"input_ids": ids.view(TensorLike), "attention_mask": mask.view(TensorLike)}
        return {"input_ids": ids, "attention_mask": mask}

    def tokenize(self, text: str) -> list[str]:
        return self._tok.encode(text, add_special_tokens=False).tokens

    def convert_tokens_to_ids(self, tokens: Any) -> Any:
        if isinstance(tokens, str):
            return self._tok.token_to_id(tokens)
        return [self._tok.token_to_id(t) for t in tokens]

    def convert_ids_to_tokens(self, ids: Any) -> Any:
        if isinstance(ids, (int, np.integer)):
            return self._tok.id_to_token(int(ids))
        return [self._tok.id_to_token(int(i)) for i in np.asarray(ids).ravel()]

    def decode(self, ids: Any, skip_special_tokens: bool = False, **kwargs: Any) -> str:
        flat = np.asarray(ids)
        if flat.ndim == 2 and flat.shape[0] == 1:
            flat = flat[0]
        return self._tok.decode([int(i) for i in flat.ravel()], skip_special_tokens=skip_special_tokens)

    def batch_decode(self, rows: Any, skip_special_tokens: bool = False, **kwargs: Any) -> list[str]:
        return [self.decode(r, skip_special_tokens=skip_special_tokens) for r in rows]

    def get_vocab(self) -> dict[str, int]:
        return self._tok.get_vocab()
