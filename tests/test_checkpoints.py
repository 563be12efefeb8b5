"""Offline GPT-2 checkpoints: deterministic, loadable by transformers, visible mistakes; hub names fail cleanly."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import huggingface_hub.constants
import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.numpy import load_file
from transformers import GPT2LMHeadModel, GPT2Tokenizer

from grader.errors import GraderError
from grader.lab import checkpoints, contract
from grader.lab.checkpoints import (
    MARKER,
    PUBLIC_TINY,
    RECIPE_VERSION,
    WEIGHTS_FILE,
    CheckpointSpec,
    ensure_checkpoint,
    random_state_dict,
    write_checkpoint,
)
from grader.models import BUILTIN, resolve_model

REPO = Path(__file__).resolve().parents[1]
# Small enough to build in a tenth of a second, with GPT-2's vocabulary so that the real tokenizer fits.
MINI = CheckpointSpec("mini", n_layer=2, n_embd=16, n_head=2, n_positions=32, seed=7)
CHECKPOINTS = ("tiny", "wide", "small", "public-tiny", "mini")
HELLO = "Hello, my name is"
HELLO_IDS = [15496, 11, 616, 1438, 318]
TEXT = "The grader checks that every weight of GPT-2 lands where the NumPy model expects it, position by position."
GPT2_SMALL_PARAMETERS = 124_439_808
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".npz", ".npy", ".onnx")

# Run in a fresh interpreter: a second build must not depend on this process (hash seed, RNG state).
BUILD_ELSEWHERE = """
import socket, sys
from pathlib import Path
def refuse(*args, **kwargs):
    raise OSError("network access during a checkpoint build")
socket.socket.connect = refuse
socket.create_connection = refuse
from grader.lab.checkpoints import CheckpointSpec, write_checkpoint
write_checkpoint(CheckpointSpec(**{spec}), Path(sys.argv[1]))
"""


def file_digests(folder: Path) -> dict[str, str]:
    """sha256 of every file in ``folder``, by name."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def refuse_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make any attempt to open a network connection in this process raise."""

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise OSError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A complete build of MINI, never modified: tests copy it."""
    return ensure_checkpoint(MINI, tmp_path_factory.mktemp("pristine"))


@pytest.fixture
def mini_root(pristine: Path, tmp_path: Path) -> Path:
    """A checkpoint root of this test's own, holding a copy of the complete MINI build."""
    root = tmp_path / "root"
    shutil.copytree(pristine, root / MINI.name)
    return root


@pytest.fixture(params=CHECKPOINTS)
def checkpoint(request: pytest.FixtureRequest, checkpoint_root: Path, pristine: Path) -> Path:
    """The folder of each checkpoint: the grader's built-ins, the students' public one, and MINI."""
    if request.param == "mini":
        return pristine
    if request.param == "public-tiny":
        return ensure_checkpoint(PUBLIC_TINY, checkpoint_root)
    return request.getfixturevalue(request.param).path


# ---------------------------------------------------------------- building


def test_build_is_deterministic_and_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Building MINI twice here and once in another interpreter, with no network, gives identical files."""
    refuse_network(monkeypatch)
    first, second, elsewhere = tmp_path / "first", tmp_path / "second", tmp_path / "elsewhere"
    for folder in (first, second, elsewhere):
        folder.mkdir()
    started = time.perf_counter()
    write_checkpoint(MINI, first)
    built_in = time.perf_counter() - started
    np.random.seed(12345)  # the recipe must not depend on global random state
    torch.manual_seed(12345)
    write_checkpoint(MINI, second)
    env = {**os.environ, "PYTHONHASHSEED": "4321", "HF_HUB_OFFLINE": "1"}
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", BUILD_ELSEWHERE.format(spec=asdict(MINI)), str(elsewhere)],
        env=env, cwd=REPO, timeout=120, capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    built_elsewhere = time.perf_counter() - started
    digests = file_digests(first)
    print(f"\nMINI built in {built_in:.2f} s here, {built_elsewhere:.1f} s in a fresh interpreter (imports included)")
    print(f"  {WEIGHTS_FILE} sha256 {digests[WEIGHTS_FILE]}")
    assert {WEIGHTS_FILE, "config.json", "vocab.json", "merges.txt", MARKER} <= set(digests)
    assert file_digests(second) == digests
    assert file_digests(elsewhere) == digests
    marker = json.loads((first / MARKER).read_text())
    assert marker == {"spec": asdict(MINI), "recipe": RECIPE_VERSION, "weights_sha256": digests[WEIGHTS_FILE]}


def test_weights_are_the_seeded_recipe(pristine: Path) -> None:
    """The weights file holds exactly random_state_dict(spec): every parameter but the tied head; the seed matters."""
    stored = load_file(str(pristine / WEIGHTS_FILE))
    recipe = random_state_dict(MINI)
    assert set(stored) == set(recipe) == set(contract.required_parameter_names(MINI.n_layer))
    for name, value in recipe.items():
        assert stored[name].dtype == np.float32, name
        assert np.array_equal(stored[name], value), name
    reseeded = random_state_dict(replace(MINI, seed=MINI.seed + 1))
    assert all(not np.array_equal(reseeded[name], value) for name, value in recipe.items())


# ---------------------------------------------------------------- loading with transformers


def test_checkpoint_loads_in_transformers_with_a_tied_head(checkpoint: Path) -> None:
    """GPT2LMHeadModel.from_pretrained loads every key, no more, no less, and ties lm_head to wte."""
    model, info = GPT2LMHeadModel.from_pretrained(checkpoint, output_loading_info=True)
    assert not info["missing_keys"], info
    assert not info["unexpected_keys"], info
    assert not info.get("mismatched_keys"), info
    assert not info.get("error_msgs"), info
    config = model.config
    assert config.activation_function == "gelu_new"
    assert config.layer_norm_epsilon == 1e-5
    assert config.tie_word_embeddings is True
    assert model.lm_head.weight.data_ptr() == model.transformer.wte.weight.data_ptr()
    stored = load_file(str(checkpoint / WEIGHTS_FILE))
    assert "lm_head.weight" not in stored
    assert torch.equal(model.transformer.wte.weight, torch.from_numpy(stored["transformer.wte.weight"]))
    ids = torch.tensor([HELLO_IDS])
    with torch.no_grad():
        out = model(ids, output_hidden_states=True)
    by_hand = out.hidden_states[-1] @ torch.from_numpy(stored["transformer.wte.weight"]).T
    assert torch.allclose(out.logits, by_hand, rtol=0, atol=1e-4)


def test_tokenizer_is_gpt2s(checkpoint: Path) -> None:
    """GPT2Tokenizer.from_pretrained(dir) works offline and is GPT-2's real tokenizer."""
    assert os.environ.get("HF_HUB_OFFLINE") == "1"
    tokenizer = GPT2Tokenizer.from_pretrained(checkpoint)
    assert tokenizer(HELLO)["input_ids"] == HELLO_IDS
    assert len(tokenizer) == checkpoints.GPT2_VOCAB_SIZE
    assert tokenizer.eos_token_id == 50256
    ids = tokenizer(TEXT)["input_ids"]
    assert tokenizer.decode(ids) == TEXT


# ---------------------------------------------------------------- magnitudes that make mistakes visible


def relative_gap(a: float, b: float) -> float:
    return abs(a - b) / max(a, b)


def test_magnitudes_make_mistakes_visible(checkpoint: Path) -> None:
    """Non-zero biases, LayerNorm far from identity, pre-GELU of order 1, Q/K/V of distinct scales."""
    state = load_file(str(checkpoint / WEIGHTS_FILE))
    n_layer = sum(1 for name in state if name.endswith(".ln_1.weight"))
    biases = {name: v for name, v in state.items() if name.endswith(".bias") and "c_attn" not in name}
    for name, v in state.items():
        if name.endswith("c_attn.bias"):
            biases.update({f"{name}[{q}]": contract.take_third(v, i) for i, q in enumerate("QKV")})
    assert len(biases) == 8 * n_layer + 1  # 5 per layer, c_attn's in thirds, ln_f's
    for name, b in biases.items():
        assert np.count_nonzero(b) == b.size, f"{name} has zeros"
        assert np.abs(b).mean() >= 0.1, f"{name}: mean |bias| {np.abs(b).mean():.3f}"
    gains = {name: v for name, v in state.items() if name.endswith(("ln_1.weight", "ln_2.weight", "ln_f.weight"))}
    assert len(gains) == 2 * n_layer + 1
    for name, g in gains.items():
        assert g.std() > 0.2 and g.min() < 0.8 and g.max() > 1.2, f"{name}: gains {g.min():.2f}..{g.max():.2f}"
    for name in gains:
        shift = state[name.replace(".weight", ".bias")]
        assert shift.std() > 0.2 and np.abs(shift).max() > 0.5, f"{name}: shifts too close to 0"
    qkv_stds = []
    for i in range(n_layer):
        w = state[f"transformer.h.{i}.attn.c_attn.weight"]
        stds = [float(contract.take_third(w, t).std()) for t in range(3)]
        qkv_stds.append(stds)
        for a, b in ((0, 1), (0, 2), (1, 2)):
            assert relative_gap(stds[a], stds[b]) > 0.1, f"layer {i}: Q/K/V stds {stds}"
    model = GPT2LMHeadModel.from_pretrained(checkpoint).eval()
    tokenizer = GPT2Tokenizer.from_pretrained(checkpoint)
    pre_gelu: list[float] = []
    hooks = [
        block.mlp.c_fc.register_forward_hook(lambda _m, _i, out: pre_gelu.append(float(out.std())))
        for block in model.transformer.h
    ]
    try:
        with torch.no_grad():
            model(torch.tensor([tokenizer(TEXT)["input_ids"]]))
    finally:
        for hook in hooks:
            hook.remove()
    print(
        f"\n{checkpoint.name}: pre-GELU std per layer {[round(s, 2) for s in pre_gelu]}, Q/K/V std {[round(s, 3) for s in qkv_stds[0]]}"
    )
    assert len(pre_gelu) == n_layer
    assert all(0.5 <= s <= 5.0 for s in pre_gelu), pre_gelu


# ---------------------------------------------------------------- the built-in specs


def parameter_count(folder: Path) -> int:
    """Parameters stored in a checkpoint (the tied head is stored once, as wte)."""
    with safe_open(str(folder / WEIGHTS_FILE), "np") as f:
        return sum(int(np.prod(f.get_slice(name).get_shape())) for name in f.keys())  # noqa: SIM118


def test_builtin_specs(tiny: Any, wide: Any, small: Any) -> None:
    """tiny is small, wide differs from tiny and from 12 x 768, small is GPT-2 small's shape with 124M parameters."""
    assert set(BUILTIN) == {"tiny", "wide", "small"}
    assert all(spec.name == key for key, spec in BUILTIN.items())
    specs = [*BUILTIN.values(), PUBLIC_TINY]
    assert len({spec.seed for spec in specs}) == len(specs), "every checkpoint needs its own seed"
    for spec in specs:
        assert spec.n_embd % spec.n_head == 0, spec
        assert spec.vocab_size == 50257, spec
    t, w, s = BUILTIN["tiny"], BUILTIN["wide"], BUILTIN["small"]
    assert t.n_layer <= 2 and t.n_embd <= 64
    for other in ((t.n_layer, t.n_embd, t.n_head), (12, 768, 12)):
        assert w.n_layer != other[0] and w.n_embd != other[1] and w.n_head != other[2]
    assert (s.n_layer, s.n_embd, s.n_head, s.vocab_size, s.n_positions) == (12, 768, 12, 50257, 1024)
    for source, spec in ((tiny, t), (wide, w), (small, s)):
        assert source.shape == contract.ModelShape(spec.vocab_size, spec.n_embd, spec.n_layer, spec.n_head,
                                                   spec.n_inner, spec.n_positions)  # fmt: skip
    counts = {name: parameter_count(source.path) for name, source in (("tiny", tiny), ("wide", wide), ("small", small))}
    print(f"\nparameters: {counts}")
    assert counts["tiny"] < 5_000_000
    assert counts["small"] == GPT2_SMALL_PARAMETERS


# ---------------------------------------------------------------- the cache


def test_ensure_checkpoint_reuses_a_complete_build(mini_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A complete build is returned as it is: nothing is rewritten."""
    folder = mini_root / MINI.name
    before = {p.name: (p.stat().st_mtime_ns, p.stat().st_ino) for p in folder.iterdir()}
    digests = file_digests(folder)

    def must_not_build(spec: CheckpointSpec, directory: Path) -> None:
        raise AssertionError("a complete checkpoint was rebuilt")

    monkeypatch.setattr(checkpoints, "write_checkpoint", must_not_build)
    assert ensure_checkpoint(MINI, mini_root) == folder
    assert {p.name: (p.stat().st_mtime_ns, p.stat().st_ino) for p in folder.iterdir()} == before
    assert file_digests(folder) == digests
    assert sorted(p.name for p in mini_root.iterdir()) == [MINI.name]


def _delete(folder: Path, name: str) -> None:
    (folder / name).unlink()


def _truncate_weights(folder: Path) -> None:
    data = (folder / WEIGHTS_FILE).read_bytes()
    (folder / WEIGHTS_FILE).write_bytes(data[: len(data) // 2])


def _edit_marker(folder: Path, **changes: Any) -> None:
    marker = json.loads((folder / MARKER).read_text())
    (folder / MARKER).write_text(json.dumps({**marker, **changes}))


DAMAGE = {
    "weights deleted": lambda folder: _delete(folder, WEIGHTS_FILE),
    "weights truncated": _truncate_weights,
    "marker deleted": lambda folder: _delete(folder, MARKER),
    "marker garbage": lambda folder: (folder / MARKER).write_text("{not json"),
    "marker empty": lambda folder: (folder / MARKER).write_text(""),
    "marker of an older recipe": lambda folder: _edit_marker(folder, recipe=RECIPE_VERSION - 1),
    "marker of another spec": lambda folder: _edit_marker(folder, spec={**asdict(MINI), "seed": MINI.seed + 1}),
}


@pytest.mark.parametrize("damage", DAMAGE)
def test_ensure_checkpoint_rebuilds_a_damaged_build(pristine: Path, mini_root: Path, damage: str) -> None:
    """An incomplete or stale build is rebuilt, byte for byte, and no staging folder is left behind."""
    folder = mini_root / MINI.name
    DAMAGE[damage](folder)
    assert ensure_checkpoint(MINI, mini_root) == folder
    assert file_digests(folder) == file_digests(pristine), f"{damage}: not rebuilt"
    assert sorted(p.name for p in mini_root.iterdir()) == [MINI.name]


def test_ensure_checkpoint_rebuilds_a_build_missing_any_file(pristine: Path, tmp_path: Path) -> None:
    """Whichever file of the build is missing (config, tokenizer, weights, marker), ensure_checkpoint restores it."""
    not_restored = []
    for name in file_digests(pristine):
        root = tmp_path / name
        shutil.copytree(pristine, root / MINI.name)
        (root / MINI.name / name).unlink()
        ensure_checkpoint(MINI, root)
        if file_digests(root / MINI.name) != file_digests(pristine):
            not_restored.append(name)
    assert not not_restored, f"ensure_checkpoint returned a build missing {not_restored} as complete"


def test_no_weights_committed_to_git() -> None:
    """Checkpoints are built on demand: git tracks no weight file and nothing large."""
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, check=True, capture_output=True).stdout
    files = [name for name in tracked.decode().split("\0") if name]
    assert len(files) > 20, "git ls-files should list the repository"
    weights = [name for name in files if name.lower().endswith(WEIGHT_SUFFIXES)]
    assert not weights, f"weights are committed: {weights}"
    large = [name for name in files if (REPO / name).is_file() and (REPO / name).stat().st_size > 1_000_000]
    assert not large, f"large files are committed: {large}"


# ---------------------------------------------------------------- hub names


@pytest.fixture
def empty_hub_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty HF_HOME, offline: the user's real cache is out of reach, and so is the network."""
    home = tmp_path / "hf-home"
    home.mkdir()
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setenv("HF_HUB_CACHE", str(home / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # huggingface_hub reads these once, at import: the environment alone would not redirect it.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HOME", str(home))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(home / "hub"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    refuse_network(monkeypatch)
    return home / "hub"


@pytest.mark.parametrize("name", ["gpt2", "openai-community/gpt2", "gpt2-medium"])
def test_hub_name_without_cache_is_a_grader_error(empty_hub_cache: Path, name: str) -> None:
    """A hub name with no cache and no network raises GraderError at once, with a one-line reason."""
    started = time.perf_counter()
    with pytest.raises(GraderError) as caught:
        resolve_model(name)
    elapsed = time.perf_counter() - started
    message = str(caught.value)
    print(f"\n{name}: {elapsed:.2f} s: {message}")
    assert elapsed < 30
    assert f"{name!r}" in message and "hub" in message
    assert "\n" not in message and "Traceback" not in message
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


def test_hub_name_resolves_from_the_cache(empty_hub_cache: Path, pristine: Path) -> None:
    """With a cached snapshot, a hub name resolves offline to that snapshot (the path staff with a cache use)."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = empty_hub_cache / "models--gpt2"
    snapshot = repo / "snapshots" / commit
    shutil.copytree(pristine, snapshot)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    source = resolve_model("gpt2")
    assert source.path == snapshot
    assert "hub" in source.source and "gpt2" in source.source
    assert source.shape == contract.ModelShape(50257, MINI.n_embd, MINI.n_layer, MINI.n_head, MINI.n_inner,
                                               MINI.n_positions)  # fmt: skip
    assert len(source.sha256) == 64
