"""Offline GPT-2 checkpoints: deterministic builds, one hash, NumPy reading, refused configs, offline hub names.

Covers ``lab04_checks/checkpoints.py`` (``CheckpointSpec``, ``random_state_dict``, ``write_checkpoint``,
``is_built``, ``ensure_checkpoint``, ``file_sha256``, ``PUBLIC_TINY``) and ``grader/grading/checkpoints.py``
(``BUILTIN``, ``resolve_model``, ``weights_sha256``, ``read_config``, ``read_state``, ``ModelSource.info``).
A checkpoint of 1 layer x 16 wide (GPT-2's vocabulary, so the real tokenizer fits) keeps builds fast.
"""

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
from conftest import REPO
from safetensors.numpy import load_file, save_file
from transformers import GPT2LMHeadModel, GPT2Tokenizer

import grader.grading.checkpoints as grading_checkpoints
import lab04_checks.checkpoints as lab_checkpoints
from grader.errors import GraderError
from grader.grading.checkpoints import (
    BUILTIN,
    BUILTIN_HELP,
    DEFAULT_BUILD,
    ModelSource,
    read_config,
    read_state,
    resolve_model,
    weights_sha256,
)
from lab04_checks.checkpoints import (
    MARKER,
    PUBLIC_TINY,
    RECIPE_VERSION,
    WEIGHTS_FILE,
    CheckpointSpec,
    ensure_checkpoint,
    file_sha256,
    is_built,
    random_state_dict,
    write_checkpoint,
)
from lab04_checks.contract import IGNORED_SUFFIXES, ModelShape, required_parameter_names

MINI = CheckpointSpec("mini", n_layer=1, n_embd=16, n_head=2, n_positions=32, seed=7)
HELLO = "Hello, my name is"
HELLO_IDS = [15496, 11, 616, 1438, 318]
GPT2_SMALL_PARAMETERS = 124_439_808

# A build in a fresh interpreter, other hash seed, no network: nothing may depend on this process.
BUILD_ELSEWHERE = """
import socket, sys
from pathlib import Path
def refuse(*args, **kwargs):
    raise OSError("network access during a checkpoint build")
socket.socket.connect = refuse
socket.create_connection = refuse
from lab04_checks.checkpoints import CheckpointSpec, write_checkpoint
write_checkpoint(CheckpointSpec(**{spec}), Path(sys.argv[1]))
"""


def digests(folder: Path) -> dict[str, str]:
    """sha256 of every file in ``folder``, by name."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def marker(folder: Path) -> dict[str, Any]:
    return json.loads((folder / MARKER).read_text())


def shape_of(spec: CheckpointSpec) -> ModelShape:
    return ModelShape(spec.vocab_size, spec.n_embd, spec.n_layer, spec.n_head, spec.n_inner, spec.n_positions)


def refuse_network(monkeypatch: pytest.MonkeyPatch) -> None:
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
    """A checkpoint root of this test's own, holding a copy (times kept) of the complete MINI build."""
    root = tmp_path / "root"
    shutil.copytree(pristine, root / MINI.name)
    return root


@pytest.fixture
def hash_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The hash cache (beside the checkpoint root) moved into this test's folder."""
    monkeypatch.setenv("LAB04_CHECKPOINT_DIR", str(tmp_path / "cache" / "checkpoints"))
    return tmp_path / "cache" / "hashes.json"


@pytest.fixture
def empty_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty HF_HOME, offline, no network: the hub cache of this test only."""
    home = tmp_path / "hf-home"
    home.mkdir()
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # huggingface_hub reads these once, at import: the environment alone would not redirect it.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HOME", str(home))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(home / "hub"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    refuse_network(monkeypatch)
    return home / "hub"


@pytest.fixture(scope="module")
def tiny() -> ModelSource:
    return resolve_model("tiny")


# ---------------------------------------------------------------- building


def without_stat(folder: Path) -> dict[str, Any]:
    """Every file's digest, the marker read without the weights' size and time (which differ between builds)."""
    return {
        **{k: v for k, v in digests(folder).items() if k != MARKER},
        MARKER: {**marker(folder), "weights_stat": None},
    }


def test_builds_in_two_folders_are_byte_for_byte_identical(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two builds, global RNGs reseeded between them, no network: the same bytes (the marker but for file times)."""
    refuse_network(monkeypatch)
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir(), second.mkdir()
    write_checkpoint(MINI, first)
    np.random.seed(12345)  # the recipe must not depend on global random state
    torch.manual_seed(12345)
    write_checkpoint(MINI, second)
    assert set(digests(first)) == {
        WEIGHTS_FILE,
        MARKER,
        "config.json",
        "vocab.json",
        "merges.txt",
        "tokenizer.json",
        "tokenizer_config.json",
    }
    assert without_stat(second) == without_stat(first)
    assert ensure_checkpoint(MINI, tmp_path / "root") != first
    assert without_stat(tmp_path / "root" / MINI.name) == without_stat(first)


@pytest.mark.slow  # a fresh interpreter imports transformers: about 5 s
def test_a_build_in_a_fresh_interpreter_is_byte_for_byte_identical(tmp_path: Path) -> None:
    """Another process, another str hash seed, sockets refused: the same bytes as a build here."""
    here, elsewhere = tmp_path / "here", tmp_path / "elsewhere"
    here.mkdir(), elsewhere.mkdir()
    write_checkpoint(MINI, here)
    env = {**os.environ, "PYTHONHASHSEED": "4321", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, "-c", BUILD_ELSEWHERE.format(spec=asdict(MINI)), str(elsewhere)],
        env=env,
        cwd=REPO,
        timeout=120,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert without_stat(elsewhere) == without_stat(here)


def test_weights_file_holds_exactly_the_seeded_recipe(pristine: Path) -> None:
    """model.safetensors is random_state_dict(spec): every required parameter (no tied head), float32; seeds matter."""
    stored = load_file(str(pristine / WEIGHTS_FILE))
    recipe = random_state_dict(MINI)
    assert set(stored) == set(recipe) == set(required_parameter_names(MINI.n_layer))
    for name, value in recipe.items():
        assert stored[name].dtype == np.float32, name
        assert np.array_equal(stored[name], value), name
    assert sum(v.size for v in recipe.values()) == shape_of(MINI).parameters
    reseeded = random_state_dict(replace(MINI, seed=MINI.seed + 1))
    assert all(not np.array_equal(reseeded[name], value) for name, value in recipe.items())


def test_marker_records_spec_recipe_hash_and_stat(pristine: Path) -> None:
    """The marker names the spec and recipe, and the weights' sha256, size and time."""
    weights = pristine / WEIGHTS_FILE
    assert marker(pristine) == {
        "spec": asdict(MINI),
        "recipe": RECIPE_VERSION,
        "weights_sha256": hashlib.sha256(weights.read_bytes()).hexdigest(),
        "weights_stat": [weights.stat().st_size, weights.stat().st_mtime_ns],
    }


def test_synthetic_weights_have_the_documented_magnitudes() -> None:
    """Every bias non-zero, LayerNorm gains spread over [0.5, 2], shifts over [-1, 1], Q/K/V at distinct scales."""
    spec = replace(MINI, n_layer=2, n_embd=32, vocab_size=500)
    state = random_state_dict(spec)
    biases = {k: v for k, v in state.items() if k.endswith(".bias")}
    assert len(biases) == 6 * spec.n_layer + 1
    for name, b in biases.items():
        assert np.count_nonzero(b) == b.size, f"{name} has zeros"
    for ln in [f"transformer.h.{i}.ln_{j}" for i in range(spec.n_layer) for j in (1, 2)] + ["transformer.ln_f"]:
        gain, shift = state[f"{ln}.weight"], state[f"{ln}.bias"]
        assert gain.min() >= 0.5 and gain.max() <= 2.0, ln
        assert gain.min() < 0.8 and gain.max() > 1.5, f"{ln}: gains do not spread"
        assert shift.min() >= -1.0 and shift.max() <= 1.0, ln
        assert shift.min() < -0.5 and shift.max() > 0.5, f"{ln}: shifts do not spread"
    for i in range(spec.n_layer):
        w = state[f"transformer.h.{i}.attn.c_attn.weight"]
        q, k, v = (float(third.std()) for third in np.split(w, 3, axis=-1))
        assert q > 1.15 * k and k > 1.15 * v, f"layer {i}: Q/K/V stds {q:.3f} {k:.3f} {v:.3f}"


# ---------------------------------------------------------------- is_built, ensure_checkpoint


def test_is_built_trusts_the_markers_size_and_time_without_hashing(
    mini_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Weights with the marker's size and time: complete, and nothing is hashed."""
    monkeypatch.setattr(lab_checkpoints, "file_sha256", lambda path: pytest.fail(f"{path} was hashed"))
    assert is_built(MINI, mini_root / MINI.name)


def test_is_built_hashes_weights_whose_time_changed(mini_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A new time: the weights are hashed; the same bytes still pass, other bytes of the same size do not."""
    weights = mini_root / MINI.name / WEIGHTS_FILE
    hashed: list[Path] = []
    real = lab_checkpoints.file_sha256
    monkeypatch.setattr(lab_checkpoints, "file_sha256", lambda path: hashed.append(path) or real(path))
    os.utime(weights, ns=(time.time_ns(), weights.stat().st_mtime_ns + 10**9))
    assert is_built(MINI, mini_root / MINI.name)
    assert hashed == [weights]
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    assert not is_built(MINI, mini_root / MINI.name)


def test_ensure_checkpoint_reuses_a_complete_build(mini_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A complete build is returned as it is: nothing is rewritten, nothing left beside it."""
    folder = mini_root / MINI.name
    before = {p.name: (p.stat().st_mtime_ns, p.stat().st_ino) for p in folder.iterdir()}
    monkeypatch.setattr(lab_checkpoints, "write_checkpoint", lambda spec, d: pytest.fail("a complete build was redone"))
    assert ensure_checkpoint(MINI, mini_root) == folder
    assert {p.name: (p.stat().st_mtime_ns, p.stat().st_ino) for p in folder.iterdir()} == before
    assert [p.name for p in mini_root.iterdir()] == [MINI.name]


def _truncate_weights(folder: Path) -> None:
    data = (folder / WEIGHTS_FILE).read_bytes()
    (folder / WEIGHTS_FILE).write_bytes(data[: len(data) // 2])


def _edit_marker(folder: Path, **changes: Any) -> None:
    (folder / MARKER).write_text(json.dumps({**marker(folder), **changes}))


DAMAGE = {
    "interrupted (no marker, truncated weights)": lambda f: ((f / MARKER).unlink(), _truncate_weights(f)),
    "weights truncated": _truncate_weights,
    "weights deleted": lambda f: (f / WEIGHTS_FILE).unlink(),
    "tokenizer file deleted": lambda f: (f / "merges.txt").unlink(),
    "marker garbage": lambda f: (f / MARKER).write_text("{not json"),
    "marker of an older recipe": lambda f: _edit_marker(f, recipe=RECIPE_VERSION - 1),
    "marker of another spec": lambda f: _edit_marker(f, spec={**asdict(MINI), "seed": MINI.seed + 1}),
}


@pytest.mark.parametrize("damage", DAMAGE)
def test_ensure_checkpoint_redoes_a_damaged_or_stale_build(pristine: Path, mini_root: Path, damage: str) -> None:
    """An incomplete or stale build is not complete, and is rebuilt byte for byte, leaving no staging folder."""
    folder = mini_root / MINI.name
    DAMAGE[damage](folder)
    assert not is_built(MINI, folder)
    assert ensure_checkpoint(MINI, mini_root) == folder
    got, want = digests(folder), digests(pristine)
    assert {k: v for k, v in got.items() if k != MARKER} == {k: v for k, v in want.items() if k != MARKER}
    assert is_built(MINI, folder)
    assert [p.name for p in mini_root.iterdir()] == [MINI.name]


def test_an_interrupted_ensure_checkpoint_leaves_nothing_that_looks_built(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Killed half-way through the weights: no target, no staging folder; the next call builds it."""
    real = lab_checkpoints.write_checkpoint

    def interrupted(spec: CheckpointSpec, directory: Path) -> None:
        (directory / WEIGHTS_FILE).write_bytes(b"half a file")
        raise KeyboardInterrupt

    monkeypatch.setattr(lab_checkpoints, "write_checkpoint", interrupted)
    with pytest.raises(KeyboardInterrupt):
        ensure_checkpoint(MINI, tmp_path)
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setattr(lab_checkpoints, "write_checkpoint", real)
    assert is_built(MINI, ensure_checkpoint(MINI, tmp_path))
    assert [p.name for p in tmp_path.iterdir()] == [MINI.name]


def modes(folder: Path) -> dict[str, str]:
    return {p.name: oct(p.stat().st_mode & 0o777) for p in [folder, *folder.iterdir()]}


def test_a_build_is_readable_by_every_user(tmp_path: Path) -> None:
    """The sandboxed student processes run as another user: the folder is 0755, every file 0644."""
    folder = ensure_checkpoint(MINI, tmp_path)
    assert modes(folder) == {folder.name: oct(0o755), **{p.name: oct(0o644) for p in folder.iterdir()}}


def test_a_reused_private_build_is_made_readable_again(mini_root: Path) -> None:
    """A complete build left private (0700, 0600 files, as safetensors writes) is opened up when reused."""
    folder = mini_root / MINI.name
    for path in folder.iterdir():
        path.chmod(0o600)
    folder.chmod(0o700)
    assert ensure_checkpoint(MINI, mini_root) == folder
    assert modes(folder) == {folder.name: oct(0o755), **{p.name: oct(0o644) for p in folder.iterdir()}}


# ---------------------------------------------------------------- one hash


def test_one_hash_names_a_checkpoint_everywhere(pristine: Path, tiny: ModelSource, hash_cache: Path) -> None:
    """weights_sha256, file_sha256, sha256sum, the marker, ModelSource.sha256 and info()['sha256'] agree."""
    for folder in (pristine, tiny.path):
        weights = folder / WEIGHTS_FILE
        printed = subprocess.run(["sha256sum", str(weights)], check=True, capture_output=True, text=True).stdout
        want = printed.split()[0]
        source = resolve_model(str(folder))
        assert file_sha256(weights) == weights_sha256(folder) == marker(folder)["weights_sha256"] == want
        assert source.sha256 == source.info()["sha256"] == want
    assert tiny.sha256 == tiny.info()["sha256"] == file_sha256(tiny.path / WEIGHTS_FILE)


def test_weights_sha256_uses_the_marker_without_hashing(pristine: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(grading_checkpoints, "_file_sha256", lambda path: pytest.fail(f"{path} was hashed"))
    assert weights_sha256(pristine) == marker(pristine)["weights_sha256"]


def test_weights_sha256_without_a_marker_hashes_once_and_remembers(
    pristine: Path, tmp_path: Path, hash_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No marker: hashed, kept in the cache by size and time; a new time is hashed again."""
    folder = tmp_path / "copy"
    shutil.copytree(pristine, folder)
    (folder / MARKER).unlink()
    hashed: list[Path] = []
    real = grading_checkpoints._file_sha256
    monkeypatch.setattr(grading_checkpoints, "_file_sha256", lambda path: hashed.append(path) or real(path))
    want = file_sha256(folder / WEIGHTS_FILE)
    assert weights_sha256(folder) == want and len(hashed) == 1
    assert list(json.loads(hash_cache.read_text()).values()) == [want]
    assert weights_sha256(folder) == want and len(hashed) == 1
    os.utime(folder / WEIGHTS_FILE, ns=(time.time_ns(), time.time_ns() + 10**9))
    assert weights_sha256(folder) == want and len(hashed) == 2


def test_marker_with_a_stale_stat_is_not_trusted(pristine: Path, tmp_path: Path, hash_cache: Path) -> None:
    """Weights replaced after the build (another size): weights_sha256 is the new file's hash, not the marker's."""
    folder = tmp_path / "copy"
    shutil.copytree(pristine, folder)
    save_file({"transformer.wte.weight": np.ones((3, 2), np.float32)}, str(folder / WEIGHTS_FILE))
    assert weights_sha256(folder) == file_sha256(folder / WEIGHTS_FILE) != marker(folder)["weights_sha256"]


# ---------------------------------------------------------------- reading: state and config


def test_read_state_names_arrays_as_gpt2lmheadmodel_does(pristine: Path) -> None:
    """float32 arrays, named and valued as GPT2LMHeadModel.state_dict() (the tied head is not stored)."""
    state = read_state(pristine)
    hf = {
        k: v.numpy()
        for k, v in GPT2LMHeadModel.from_pretrained(pristine).state_dict().items()
        if not k.endswith(IGNORED_SUFFIXES)
    }
    assert set(state) == set(hf) - {"lm_head.weight"}
    for name, value in state.items():
        assert value.dtype == np.float32, name
        assert np.array_equal(value, hf[name]), name


def test_read_state_maps_a_float32_file_instead_of_copying_it(pristine: Path) -> None:
    """The trusted side's truth is read-only views of one mapping of the file (the page cache's pages, no copy)."""
    import mmap

    state = read_state(pristine)
    for name, value in state.items():
        assert not value.flags.writeable, name
        base = value
        while isinstance(base, np.ndarray) and base.base is not None:
            base = base.base
        assert isinstance(getattr(base, "obj", base), mmap.mmap), name


@pytest.mark.parametrize(
    "entry",
    [
        {"dtype": "F32", "shape": [-1, 0], "data_offsets": [0, 0]},
        {"dtype": "F32", "shape": [1], "data_offsets": [0.0, 4.0]},
        {"dtype": "F32", "shape": [2], "data_offsets": [0, 4]},
        {"dtype": "F16", "shape": [2], "data_offsets": [0, 4]},
        "not an entry",
    ],
)
def test_a_header_the_mapping_cannot_trust_leaves_the_file_to_safetensors(tmp_path: Path, entry: object) -> None:
    """A negative dimension, offsets that are not integers, a size that disagrees, another dtype: no mapping."""
    import json as json_module

    from grader.grading.checkpoints import _mapped

    header = json_module.dumps({"x": entry}).encode()
    header += b" " * (-len(header) % 8)
    path = tmp_path / "model.safetensors"
    path.write_bytes(len(header).to_bytes(8, "little") + header + bytes(8))
    assert _mapped(path) is None
    header = json_module.dumps({"x": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}).encode()
    header += b" " * (-len(header) % 8)
    path.write_bytes(len(header).to_bytes(8, "little") + header + bytes(8))
    assert _mapped(path)["x"].tolist() == [0.0, 0.0]  # the same file, well formed, is mapped


@pytest.mark.parametrize("layout", ["no prefix, with buffers", "float16"])
def test_read_state_accepts_the_hubs_gpt2_layout(pristine: Path, tmp_path: Path, layout: str) -> None:
    """Keys without ``transformer.`` (as the hub's gpt2 stores them), mask buffers, float16: named and float32."""
    want = load_file(str(pristine / WEIGHTS_FILE))
    if layout == "float16":
        stored = {k: v.astype(np.float16) for k, v in want.items()}
        want = {k: v.astype(np.float16).astype(np.float32) for k, v in want.items()}
    else:
        stored = {k.removeprefix("transformer."): v for k, v in want.items()}
        stored["h.0.attn.bias"] = np.tril(np.ones((1, 1, 4, 4), np.float32))
        stored["h.0.attn.masked_bias"] = np.array(-1e4, np.float32)
    folder = tmp_path / "hub-like"
    folder.mkdir()
    save_file(stored, str(folder / WEIGHTS_FILE))
    state = read_state(folder)
    assert set(state) == set(want)
    for name, value in state.items():
        assert value.dtype == np.float32 and np.array_equal(value, want[name]), name


def write_config(folder: Path, **changes: Any) -> Path:
    config = {**json.loads((folder / "config.json").read_text()), **changes}
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def test_read_config_accepts_gpt2s_own(pristine: Path) -> None:
    config = read_config(pristine, "mini")
    assert (config["model_type"], config["n_layer"], config["n_embd"]) == ("gpt2", MINI.n_layer, MINI.n_embd)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("activation_function", "relu"),
        ("scale_attn_by_inverse_layer_idx", True),
        ("layer_norm_epsilon", 1e-6),
        ("scale_attn_weights", False),
        ("reorder_and_upcast_attn", True),
    ],
)
def test_read_config_refuses_a_config_that_changes_gpt2s_numerics(mini_root: Path, key: str, value: Any) -> None:
    folder = write_config(mini_root / MINI.name, **{key: value})
    with pytest.raises(GraderError, match=f"sets {key}={value!r}"):
        read_config(folder, "mini")
    with pytest.raises(GraderError, match=key):
        resolve_model(str(folder))


def test_read_config_refuses_an_untied_head(mini_root: Path) -> None:
    folder = write_config(mini_root / MINI.name, tie_word_embeddings=False)
    with pytest.raises(GraderError, match="tie_word_embeddings"):
        read_config(folder, "mini")


@pytest.mark.parametrize("model_type", ["llama", None])
def test_read_config_refuses_a_model_that_is_not_gpt2(mini_root: Path, model_type: str | None) -> None:
    folder = write_config(mini_root / MINI.name, model_type=model_type)
    with pytest.raises(GraderError, match=f"mini is a {model_type!r} model, not GPT-2"):
        read_config(folder, "mini")


def test_read_config_of_an_unreadable_config_is_a_grader_error(mini_root: Path) -> None:
    (mini_root / MINI.name / "config.json").write_text("{not json")
    with pytest.raises(GraderError, match="cannot read the model config of mini"):
        read_config(mini_root / MINI.name, "mini")


# ---------------------------------------------------------------- resolve_model


def test_builtin_specs_are_distinct_and_small_is_gpt2_smalls_shape() -> None:
    """Every built-in is named by its key and has its own seed; small has GPT-2 small's 124M parameters."""
    assert all(spec.name == key for key, spec in BUILTIN.items())
    assert set(BUILTIN_HELP) == set(BUILTIN) and set(DEFAULT_BUILD) <= set(BUILTIN)
    specs = [*BUILTIN.values(), PUBLIC_TINY]
    assert len({spec.seed for spec in specs}) == len(specs), "every checkpoint needs its own seed"
    for spec in specs:
        assert spec.n_embd % spec.n_head == 0 and spec.vocab_size == 50257, spec
    small = BUILTIN["small"]
    assert (small.n_layer, small.n_embd, small.n_head, small.n_positions) == (12, 768, 12, 1024)
    assert shape_of(small).parameters == GPT2_SMALL_PARAMETERS
    tiny, wide = BUILTIN["tiny"], BUILTIN["wide"]
    assert (wide.n_layer, wide.n_embd, wide.n_head) != (tiny.n_layer, tiny.n_embd, tiny.n_head)


def test_resolve_model_of_a_builtin_name(tiny: ModelSource) -> None:
    """'tiny' resolves to its built folder, with the spec's shape, and info() says all of it."""
    spec = BUILTIN["tiny"]
    assert tiny.shape == shape_of(spec)
    assert is_built(spec, tiny.path)
    assert tiny.info() == {
        "name": "tiny",
        "source": f"built-in synthetic checkpoint 'tiny' (seed {spec.seed})",
        "sha256": marker(tiny.path)["weights_sha256"],
        "n_layer": spec.n_layer,
        "n_embd": spec.n_embd,
        "n_head": spec.n_head,
        "n_positions": spec.n_positions,
        "vocab_size": spec.vocab_size,
    }


def test_resolve_model_of_an_unbuilt_builtin_without_building(tmp_path: Path) -> None:
    with pytest.raises(GraderError, match="'tiny' is not built yet: run `grade checkpoints build`"):
        resolve_model("tiny", checkpoint_dir=tmp_path, build=False)
    assert list(tmp_path.iterdir()) == []


def test_resolve_model_of_a_local_folder(pristine: Path, hash_cache: Path) -> None:
    source = resolve_model(str(pristine))
    assert (source.path, source.name, source.shape) == (pristine.resolve(), pristine.name, shape_of(MINI))
    assert source.source == f"local directory {pristine.resolve()}"


def test_local_folder_without_model_safetensors_is_a_grader_error(mini_root: Path) -> None:
    """Weights only as pytorch_model.bin: the error names model.safetensors."""
    folder = mini_root / MINI.name
    (folder / WEIGHTS_FILE).rename(folder / "pytorch_model.bin")
    with pytest.raises(GraderError, match=f"{folder} has no {WEIGHTS_FILE}"):
        resolve_model(str(folder))


def test_config_without_a_size_is_a_grader_error(mini_root: Path) -> None:
    config = json.loads((mini_root / MINI.name / "config.json").read_text())
    del config["n_embd"]
    (mini_root / MINI.name / "config.json").write_text(json.dumps(config))
    with pytest.raises(GraderError, match="the config of mini lacks a size: 'n_embd'"):
        resolve_model(str(mini_root / MINI.name))


@pytest.mark.parametrize("name", ["./no-such-folder", "/no/such/folder"])
def test_a_path_that_is_not_a_folder_is_a_grader_error(name: str) -> None:
    with pytest.raises(GraderError, match=f"^{name} is not a checkpoint directory$"):
        resolve_model(name)


@pytest.mark.parametrize("name", ["gpt2", "no-such-user/no-such-model", "not a valid repo id!"])
def test_unknown_hub_name_offline_is_a_one_line_grader_error(empty_hub: Path, name: str) -> None:
    """Nothing cached, no network: a GraderError at once, one line, naming the model and the built-ins."""
    started = time.perf_counter()
    with pytest.raises(GraderError) as caught:
        resolve_model(name)
    message = str(caught.value)
    assert time.perf_counter() - started < 10
    assert message.startswith(f"cannot load the model {name!r}: it is not a built-in checkpoint ({', '.join(BUILTIN)})")
    assert "\n" not in message
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


def test_hub_name_resolves_from_the_cache_offline(empty_hub: Path, pristine: Path, hash_cache: Path) -> None:
    """With a cached snapshot, a hub name resolves offline to it (what staff with a hub cache use)."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    snapshot = empty_hub / "models--gpt2" / "snapshots" / commit
    shutil.copytree(pristine, snapshot)
    (empty_hub / "models--gpt2" / "refs").mkdir()
    (empty_hub / "models--gpt2" / "refs" / "main").write_text(commit)
    source = resolve_model("gpt2")
    assert source.path == snapshot
    assert source.source == f"HuggingFace hub 'gpt2' ({commit})"
    assert source.shape == shape_of(MINI)
    assert source.sha256 == file_sha256(pristine / WEIGHTS_FILE)


# ---------------------------------------------------------------- what transformers makes of a build


@pytest.fixture(params=["mini", "tiny", "public-tiny"])
def built(request: pytest.FixtureRequest, pristine: Path) -> Path:
    """MINI, the grader's tiny and the students' public checkpoint (both in the shared cache)."""
    if request.param == "public-tiny":
        return ensure_checkpoint(PUBLIC_TINY)
    return pristine if request.param == "mini" else request.getfixturevalue("tiny").path


def test_transformers_loads_a_build_offline_with_a_tied_head(built: Path) -> None:
    """GPT2LMHeadModel.from_pretrained(folder): every key, no more, no less; lm_head is wte; logits are h @ wte.T."""
    assert os.environ.get("HF_HUB_OFFLINE") == "1"
    model, info = GPT2LMHeadModel.from_pretrained(built, output_loading_info=True)
    assert not any(info.get(k) for k in ("missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs")), info
    assert (model.config.activation_function, model.config.layer_norm_epsilon) == ("gelu_new", 1e-5)
    assert model.lm_head.weight.data_ptr() == model.transformer.wte.weight.data_ptr()
    wte = torch.from_numpy(load_file(str(built / WEIGHTS_FILE))["transformer.wte.weight"])
    assert torch.equal(model.transformer.wte.weight, wte)
    with torch.no_grad():
        out = model.eval()(torch.tensor([HELLO_IDS]), output_hidden_states=True)
    assert torch.allclose(out.logits, out.hidden_states[-1] @ wte.T, rtol=0, atol=1e-4)


def test_tokenizer_of_a_build_is_gpt2s_own(built: Path) -> None:
    """GPT2Tokenizer.from_pretrained(folder), offline: GPT-2's real ids, its end-of-text token, a lossless round trip."""
    tokenizer = GPT2Tokenizer.from_pretrained(built)
    assert tokenizer.encode(HELLO) == HELLO_IDS
    assert (len(tokenizer), tokenizer.eos_token_id) == (50257, 50256)
    text = "The grader checks every weight, position by position: ünïcødé too."
    assert tokenizer.decode(tokenizer.encode(text)) == text
