"""Stand-in for torch in the torch-free process: imports work, use raises (see _lab04_inert)."""

from typing import Any

import _lab04_inert as _inert

__version__ = "0+lab04.standin"
_inert.install("torch")

Tensor = _inert.inert_class("torch.Tensor")
Size = tuple
no_grad = inference_mode = enable_grad = _inert.NoOp


def manual_seed(*args: Any, **kwargs: Any) -> None:
    """Harmless at import time: seeding does nothing here."""


def set_grad_enabled(*args: Any, **kwargs: Any) -> _inert.NoOp:
    return _inert.NoOp()


def set_printoptions(*args: Any, **kwargs: Any) -> None:
    """Harmless."""


def set_num_threads(*args: Any, **kwargs: Any) -> None:
    """Harmless."""


def is_tensor(obj: Any) -> bool:
    return False


class cuda:
    """No GPU here."""

    @staticmethod
    def is_available() -> bool:
        return False

    @staticmethod
    def device_count() -> int:
        return 0


def __getattr__(name: str) -> Any:
    return _inert.Inert(f"torch.{name}")
