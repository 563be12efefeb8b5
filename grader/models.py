"""Which checkpoint to grade against: a built-in synthetic one, a local folder, or a hub name."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from .errors import GraderError
from .lab.checkpoints import MARKER, CheckpointSpec, default_root, ensure_checkpoint, is_built
from .lab.common import CheckpointRef
from .lab.contract import ModelShape

# The grader's own checkpoints. Seeds differ from the students' public one.
BUILTIN: dict[str, CheckpointSpec] = {
    "tiny": CheckpointSpec("tiny", n_layer=2, n_embd=64, n_head=4, n_positions=128, seed=4),
    "wide": CheckpointSpec("wide", n_layer=3, n_embd=80, n_head=5, n_positions=96, seed=5),
    "small": CheckpointSpec("small", n_layer=12, n_embd=768, n_head=12, n_positions=1024, seed=12),
}
BUILTIN_HELP = {
    "tiny": "2 layers, d_model 64, 4 heads: fast, the default",
    "wide": "3 layers, d_model 80, 5 heads: another depth and width",
    "small": "GPT-2 small's shape (12 x 768, 12 heads, 1024 positions, 124M parameters)",
}
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


@dataclass(frozen=True)
class ModelSource:
    """A resolved checkpoint: a local folder, where it came from, and its fingerprint."""

    path: Path
    source: str
    sha256: str
    shape: ModelShape
    name: str

    def ref(self, label: str | None = None) -> CheckpointRef:
        return CheckpointRef(str(self.path), self.shape, label or self.name)


def _fingerprint(folder: Path) -> str:
    """sha256 over config.json and the weights, so a report names exactly what it graded against."""
    digest = hashlib.sha256()
    for name in ("config.json", *WEIGHT_FILES):
        path = folder / name
        if path.is_file():
            digest.update(name.encode())
            with path.open("rb") as fh:
                for block in iter(lambda: fh.read(1 << 22), b""):
                    digest.update(block)
    return digest.hexdigest()


def _shape(folder: Path, what: str) -> ModelShape:
    from transformers import GPT2Config

    try:
        config = GPT2Config.from_pretrained(str(folder))
    except Exception as exc:  # noqa: BLE001 - transformers raises OSError, ValueError, JSON errors...
        raise GraderError(f"cannot read the model config of {what}: {exc}") from None
    if getattr(config, "model_type", None) != "gpt2":
        raise GraderError(f"{what} is a {config.model_type!r} model, not GPT-2")
    return ModelShape.from_hf_config(config)


def resolve_model(name_or_dir: str, checkpoint_dir: Path | None = None, build: bool = True) -> ModelSource:
    """Find (or build) the checkpoint ``name_or_dir`` names; GraderError when it cannot be read."""
    if name_or_dir in BUILTIN:
        spec = BUILTIN[name_or_dir]
        root = checkpoint_dir or default_root()
        if not build and not is_built(spec, root / spec.name):
            raise GraderError(f"the built-in checkpoint {spec.name!r} is not built yet: run `grade checkpoints build`")
        try:
            folder = ensure_checkpoint(spec, root)
        except OSError as exc:
            raise GraderError(f"cannot build the checkpoint {spec.name!r} in {root}: {exc}") from None
        marker = json.loads((folder / MARKER).read_text())
        sha = hashlib.sha256(((folder / "config.json").read_bytes()) + marker["weights_sha256"].encode()).hexdigest()
        return ModelSource(folder, f"built-in synthetic checkpoint {spec.name!r} (seed {spec.seed})", sha,
                           _shape(folder, spec.name), spec.name)  # fmt: skip
    folder = Path(name_or_dir).expanduser()
    if folder.is_dir():
        if not any((folder / w).is_file() for w in WEIGHT_FILES):
            raise GraderError(f"{folder} has no model.safetensors or pytorch_model.bin")
        return ModelSource(folder.resolve(), f"local directory {folder.resolve()}", _fingerprint(folder),
                           _shape(folder, str(folder)), folder.name)  # fmt: skip
    if name_or_dir.startswith((".", "/", "~")) or folder.exists():
        raise GraderError(f"{name_or_dir} is not a checkpoint directory")
    return _from_hub(name_or_dir)


def _from_hub(name: str) -> ModelSource:
    """A hub model from the local cache, or downloaded when the hub is reachable."""
    try:
        from huggingface_hub import snapshot_download

        folder = Path(snapshot_download(
            name,
            allow_patterns=["config.json", "model.safetensors", "vocab.json", "merges.txt", "tokenizer*.json"],
        ))  # fmt: skip
    except Exception as exc:  # noqa: BLE001 - offline, unknown repo, network: all mean "cannot use it"
        raise GraderError(
            f"cannot load the model {name!r}: it is not a built-in checkpoint ({', '.join(BUILTIN)}), not a "
            f"directory, and the HuggingFace hub or its cache does not have it ({type(exc).__name__})"
        ) from None
    return ModelSource(
        folder, f"HuggingFace hub {name!r} ({folder.name})", _fingerprint(folder), _shape(folder, name), name
    )
