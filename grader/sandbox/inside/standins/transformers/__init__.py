"""Stand-in for transformers in the torch-free process: names import, loading raises (see _lab04_inert)."""

from typing import Any

import _lab04_inert as _inert

__version__ = "0+lab04.standin"
_inert.install("transformers")


def __getattr__(name: str) -> Any:
    if name[:1].isupper():  # GPT2LMHeadModel, GPT2Tokenizer, AutoModelForCausalLM...: classes
        value = globals()[name] = _inert.inert_class(f"transformers.{name}")
        return value
    return _inert.Inert(f"transformers.{name}")
