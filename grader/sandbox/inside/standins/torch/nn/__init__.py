"""Stand-in for torch.nn: ``class M(nn.Module)`` still defines a class; building one raises."""

from typing import Any

import _lab04_inert as _inert

Module = _inert.inert_class("torch.nn.Module")
Linear = _inert.inert_class("torch.nn.Linear")
Embedding = _inert.inert_class("torch.nn.Embedding")
LayerNorm = _inert.inert_class("torch.nn.LayerNorm")
Parameter = _inert.inert_class("torch.nn.Parameter")


def __getattr__(name: str) -> Any:
    return _inert.Inert(f"torch.nn.{name}")
