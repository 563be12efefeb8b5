"""Which checkpoint to grade against (a built-in synthetic one, a local folder, a hub name), read with NumPy.

The trusted side never imports torch: the config is JSON, the weights are read with
``safetensors.numpy``. A checkpoint is named everywhere by one hash, the sha256 of its
``model.safetensors`` (what ``sha256sum`` prints).
"""

from __future__ import annotations

import json
import mmap
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lab04_checks.checkpoints import MARKER, WEIGHTS_FILE, CheckpointSpec, default_root, ensure_checkpoint, is_built
from lab04_checks.checkpoints import file_sha256 as _file_sha256
from lab04_checks.contract import IGNORED_SUFFIXES, ModelShape

from ..errors import GraderError

# The grader's own checkpoints. Seeds differ from the students' public one.
BUILTIN: dict[str, CheckpointSpec] = {
    "tiny": CheckpointSpec("tiny", n_layer=2, n_embd=64, n_head=4, n_positions=128, seed=4),
    "wide": CheckpointSpec("wide", n_layer=3, n_embd=80, n_head=5, n_positions=96, seed=5),
    "small": CheckpointSpec("small", n_layer=12, n_embd=768, n_head=12, n_positions=1024, seed=12),
    "medium": CheckpointSpec("medium", n_layer=24, n_embd=1024, n_head=16, n_positions=1024, seed=24),
    "large": CheckpointSpec("large", n_layer=36, n_embd=1280, n_head=20, n_positions=1024, seed=36),
}
BUILTIN_HELP = {
    "tiny": "2 layers, d_model 64, 4 heads: fast, the default",
    "wide": "3 layers, d_model 80, 5 heads: another depth and width",
    "small": "GPT-2 small's shape (12 x 768, 124M parameters)",
    "medium": "GPT-2 medium's shape (24 x 1024, 355M parameters)",
    "large": "GPT-2 large's shape (36 x 1280, 774M parameters)",
}
DEFAULT_BUILD = ("tiny", "wide")
# GPT-2's numerics, which the NumPy oracle reproduces; a config that changes them is refused.
GPT2_NUMERICS = {
    "activation_function": "gelu_new",
    "layer_norm_epsilon": 1e-5,
    "scale_attn_weights": True,
    "scale_attn_by_inverse_layer_idx": False,
    "reorder_and_upcast_attn": False,
    "tie_word_embeddings": True,  # the oracle's head is wte; an untied lm_head.weight would grade everyone wrong
}


@dataclass(frozen=True)
class ModelSource:
    """A resolved checkpoint: a local folder, where it came from, its hash and its sizes."""

    path: Path
    source: str
    sha256: str
    shape: ModelShape
    name: str

    def info(self) -> dict[str, Any]:
        s = self.shape
        return {
            "name": self.name,
            "source": self.source,
            "sha256": self.sha256,
            "n_layer": s.num_layers,
            "n_embd": s.d_model,
            "n_head": s.num_heads,
            "n_positions": s.max_seq_len,
            "vocab_size": s.vocab_size,
        }


def _hash_cache() -> Path:
    return default_root().parent / "hashes.json"


def weights_sha256(folder: Path) -> str:
    """The checkpoint's hash (sha256 of model.safetensors), remembered by file size and time."""
    weights = folder / WEIGHTS_FILE
    stat = weights.stat()
    key = f"{weights.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"
    marker = folder / MARKER
    if marker.is_file():
        try:
            data = json.loads(marker.read_text())
            if data.get("weights_stat") == [stat.st_size, stat.st_mtime_ns]:
                return str(data["weights_sha256"])
        except (OSError, ValueError, KeyError):
            pass
    cache = _hash_cache()
    try:
        known = json.loads(cache.read_text())
    except (OSError, ValueError):
        known = {}
    if key not in known:
        known[key] = _file_sha256(weights)
        try:
            cache.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(known))
            os.replace(tmp, cache)
        except OSError:
            pass  # a read-only cache only costs time
    return str(known[key])


def read_config(folder: Path, what: str) -> dict[str, Any]:
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError) as exc:
        raise GraderError(f"cannot read the model config of {what}: {exc}") from None
    if config.get("model_type") != "gpt2":
        raise GraderError(f"{what} is a {config.get('model_type')!r} model, not GPT-2")
    for key, value in GPT2_NUMERICS.items():
        if key in config and config[key] != value:
            raise GraderError(f"{what} sets {key}={config[key]!r}; the grader only knows GPT-2's {value!r}")
    return config


def _source(folder: Path, source: str, name: str) -> ModelSource:
    if not (folder / WEIGHTS_FILE).is_file():
        raise GraderError(f"{folder} has no {WEIGHTS_FILE} (the grader reads weights with safetensors, not torch)")
    config = read_config(folder, name)
    try:
        shape = ModelShape.from_hf_config(config)
    except (KeyError, TypeError, ValueError) as exc:
        raise GraderError(f"the config of {name} lacks a size: {exc}") from None
    return ModelSource(folder, source, weights_sha256(folder), shape, name)


def resolve_model(name_or_dir: str, checkpoint_dir: Path | None = None, build: bool = True) -> ModelSource:
    """Find (or build) the checkpoint ``name_or_dir`` names; GraderError when it cannot be used."""
    if name_or_dir in BUILTIN:
        spec = BUILTIN[name_or_dir]
        root = checkpoint_dir or default_root()
        if not build and not is_built(spec, root / spec.name):
            raise GraderError(f"the built-in checkpoint {spec.name!r} is not built yet: run `grade checkpoints build`")
        try:
            folder = ensure_checkpoint(spec, root)
        except OSError as exc:
            raise GraderError(f"cannot build the checkpoint {spec.name!r} in {root}: {exc}") from None
        return _source(folder, f"built-in synthetic checkpoint {spec.name!r} (seed {spec.seed})", spec.name)
    folder = Path(name_or_dir).expanduser()
    if folder.is_dir():
        return _source(folder.resolve(), f"local directory {folder.resolve()}", folder.name)
    if name_or_dir.startswith((".", "/", "~")) or folder.exists():
        raise GraderError(f"{name_or_dir} is not a checkpoint directory")
    return _from_hub(name_or_dir)


def _from_hub(name: str) -> ModelSource:
    """A hub model from the local cache, or downloaded when the hub is reachable."""
    try:
        from huggingface_hub import snapshot_download

        folder = Path(
            snapshot_download(
                name,
                allow_patterns=["config.json", WEIGHTS_FILE, "vocab.json", "merges.txt", "tokenizer*.json"],
            )
        )
    except Exception as exc:  # noqa: BLE001 - offline, unknown repo, network: all mean "cannot use it"
        raise GraderError(
            f"cannot load the model {name!r}: it is not a built-in checkpoint ({', '.join(BUILTIN)}), not a "
            f"directory, and the HuggingFace hub or its cache does not have it ({type(exc).__name__})"
        ) from None
    return _source(folder, f"HuggingFace hub {name!r} ({folder.name})", name)


def read_state(folder: Path) -> dict[str, np.ndarray]:
    """The checkpoint's tensors as float32 NumPy arrays, named as ``GPT2LMHeadModel.state_dict()`` names them."""
    raw = _mapped(folder / WEIGHTS_FILE)
    if raw is None:  # another dtype (the hub's float16, say) or an unusual layout: safetensors reads and converts
        from safetensors.numpy import load_file

        raw = load_file(str(folder / WEIGHTS_FILE))
    state = {}
    for key, value in raw.items():
        if key.endswith(IGNORED_SUFFIXES):
            continue
        name = (
            key if key.startswith(("transformer.", "lm_head.")) else f"transformer.{key}"
        )  # the hub's gpt2 has no prefix
        state[name] = np.asarray(value, dtype=np.float32)
    return state


def _mapped(path: Path) -> dict[str, np.ndarray] | None:
    """A float32 safetensors file's tensors as read-only views of one mapping of it, or None for any other file.

    The pages are the page cache's, which the student processes read too: nothing is copied, and a
    batch does not pay for fresh memory the size of the model (0.25 s to 1.3 s on small's shape)."""
    try:
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            if size < 8:
                return None
            mapping = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
    except (OSError, ValueError):
        return None
    length = int.from_bytes(mapping[:8], "little")
    start = 8 + length
    if length <= 0 or start > size or start % 8:
        return None
    try:
        header = json.loads(mapping[8:start])
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(header, dict):
        return None
    out = {}
    for key, entry in header.items():
        if key == "__metadata__":
            continue
        try:
            dtype, shape, (first, last) = entry["dtype"], tuple(int(n) for n in entry["shape"]), entry["data_offsets"]
        except (TypeError, KeyError, ValueError):
            return None
        if not all(isinstance(n, int) and not isinstance(n, bool) for n in (first, last)) or min(shape, default=0) < 0:
            return None
        count = int(np.prod(shape, dtype=np.int64))
        if dtype != "F32" or not 0 <= first <= last <= size - start or last - first != 4 * count or first % 4:
            return None
        out[key] = np.frombuffer(mapping, dtype="<f4", count=count, offset=start + first).reshape(shape)
    return out
