"""The course's own checks, re-written here, pass on reference/ with ``from_pretrained('gpt2')`` resolved offline.

The hub is unreachable, so the test builds a HuggingFace cache in the hub's folder layout
(``models--gpt2/snapshots/<commit>/`` and ``refs/main``) holding the GPT-2-small-shaped
checkpoint, and points ``HF_HOME`` at it with ``HF_HUB_OFFLINE=1``. The same cache makes
``grade --model gpt2`` work as it does for staff who have the hub.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import REFERENCE
from safetensors.numpy import load_file, save_file

from grader.cli import main
from grader.grading.checkpoints import BUILTIN
from lab04_checks.checkpoints import ensure_checkpoint

COMMIT = "0" * 39 + "1"
HUB_FILES = ("config.json", "model.safetensors", "vocab.json", "merges.txt", "tokenizer.json", "tokenizer_config.json")

# The assertions of the course's tests/test_pretrained.py (config, model creation, each weight group,
# compare_outputs on several texts, weight analysis, the milestone), re-written for this project.
COURSE_CHECKS = r"""
import sys
import numpy as np
import torch
from transformers import GPT2LMHeadModel, GPT2Tokenizer
sys.path.insert(0, sys.argv[1])
from pretrained import (GPTModel, get_gpt2_config, create_gpt2_model, load_gpt2_weights, compare_outputs,
                        analyze_weight_differences)

config = get_gpt2_config("gpt2")
assert (config["vocab_size"], config["d_model"], config["num_layers"], config["num_heads"], config["d_ff"]) == (
    50257, 768, 12, 12, 3072)
medium = get_gpt2_config("gpt2-medium")
assert (medium["d_model"], medium["num_layers"], medium["num_heads"]) == (1024, 24, 16)
model = create_gpt2_model("gpt2")
assert model.vocab_size == 50257 and model.d_model == 768 and model.num_layers == 12 and len(model.blocks) == 12
for part in ("token_embedding", "pos_embedding", "blocks", "ln_f", "lm_head"):
    assert hasattr(model, part), part

hf = GPT2LMHeadModel.from_pretrained("gpt2")
tokenizer = GPT2Tokenizer.from_pretrained("gpt2")
assert load_gpt2_weights(model, "gpt2") is None or True
sd = {k: v.detach().numpy() for k, v in hf.state_dict().items()}
close = lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5)
close(model.token_embedding.weight, sd["transformer.wte.weight"])
close(model.pos_embedding.weight, sd["transformer.wpe.weight"])
close(model.blocks[0].ln1.gamma, sd["transformer.h.0.ln_1.weight"])
close(model.blocks[0].ln1.beta, sd["transformer.h.0.ln_1.bias"])
c_attn, d = sd["transformer.h.0.attn.c_attn.weight"], 768
close(model.blocks[0].attn.W_Q, c_attn[:, :d])
close(model.blocks[0].attn.W_K, c_attn[:, d:2 * d])
close(model.blocks[0].attn.W_V, c_attn[:, 2 * d:])
close(model.blocks[0].ffn.W1, sd["transformer.h.0.mlp.c_fc.weight"])
close(model.blocks[0].ffn.b1, sd["transformer.h.0.mlp.c_fc.bias"])
close(model.ln_f.gamma, sd["transformer.ln_f.weight"])
close(model.ln_f.beta, sd["transformer.ln_f.bias"])

texts = ["Hello, world!", "The quick brown fox jumps over the lazy dog.", "Hello", "The cat sat on the mat.",
         "In a hole in the ground there lived a hobbit.", "Hi", "Hello! How are you? I'm fine, thanks."]
for text in texts:
    match, max_diff = compare_outputs(model, hf, tokenizer, text)
    assert match, f"{text!r}: {max_diff:.2e}"
match, max_diff = compare_outputs(model, hf, tokenizer, "Hello, world!")
assert max_diff < 1e-4
for text in ("Hello, my name is", "The meaning of life is", "Once upon a time"):
    match, max_diff = compare_outputs(model, hf, tokenizer, text, atol=1e-4)
    assert match, f"milestone {text!r}: {max_diff:.2e}"

analysis = analyze_weight_differences(model, hf)
assert isinstance(analysis, dict) and ("token_embedding" in analysis or len(analysis) > 0)
for key, stats in analysis.items():
    assert stats["max_diff"] < 1e-5, key
print("COURSE CHECKS PASSED")
"""


@pytest.fixture(scope="module")
def hub_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A HuggingFace home whose hub cache holds 'gpt2' (GPT-2 small's shape), as the hub would have left it."""
    home = tmp_path_factory.mktemp("hf-home")
    source = ensure_checkpoint(BUILTIN["small"])
    repo = home / "hub" / "models--gpt2"
    snapshot = repo / "snapshots" / COMMIT
    snapshot.mkdir(parents=True)
    (repo / "blobs").mkdir()
    for name in HUB_FILES:
        blob = repo / "blobs" / f"blob-{name}"
        shutil.copyfile(source / name, blob)
        (snapshot / name).symlink_to(os.path.relpath(blob, snapshot))  # the hub links snapshots to blobs
    # Smaller logits than the synthetic checkpoint's (real GPT-2's float32 noise stays under the course's
    # atol=1e-4): the course's own checks use that fixed tolerance.
    weights = load_file(str(repo / "blobs" / "blob-model.safetensors"))
    weights["transformer.wte.weight"] = weights["transformer.wte.weight"] * np.float32(0.25)
    save_file(weights, str(repo / "blobs" / "blob-model.safetensors"), metadata={"format": "pt"})
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    return home


def _offline(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "TRANSFORMERS_"))}
    return {**env, "HF_HOME": str(home), "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1"}


@pytest.mark.slow
def test_course_checks_pass_on_the_reference(hub_cache: Path, tmp_path: Path) -> None:
    script = tmp_path / "course_checks.py"
    script.write_text(COURSE_CHECKS)
    done = subprocess.run(
        [sys.executable, str(script), str(REFERENCE)],
        env=_offline(hub_cache),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "COURSE CHECKS PASSED" in done.stdout


@pytest.mark.slow
def test_the_checks_can_fail(hub_cache: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(REFERENCE, broken)
    source = (
        (broken / "pretrained.py")
        .read_text()
        .replace("return bool(max_diff <= atol), max_diff", "return bool(max_diff <= atol), max_diff + 1.0")
    )
    (broken / "pretrained.py").write_text(source)
    script = tmp_path / "course_checks.py"
    script.write_text(COURSE_CHECKS)
    done = subprocess.run(
        [sys.executable, str(script), str(broken)],
        env=_offline(hub_cache),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode != 0 and "COURSE CHECKS PASSED" not in done.stdout


@pytest.mark.slow
def test_grading_against_gpt2_by_name_uses_the_cache(hub_cache: Path, tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "grader.cli",
            "run",
            str(REFERENCE),
            "--out",
            str(out),
            "--model",
            "gpt2",
            "--seed",
            "1",
            "-q",
        ],
        env=_offline(hub_cache),
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["score"] == 100, [t["output"][:300] for t in report["tests"]]
    primary = report["extra_data"]["models"]["primary"]
    assert primary["source"].startswith("HuggingFace hub 'gpt2'") and primary["n_layer"] == 12


def test_hub_name_without_cache_is_a_one_line_grader_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    (tmp_path / "sub").mkdir()
    result = CliRunner().invoke(
        main, ["run", str(tmp_path / "sub"), "--out", str(tmp_path / "r.json"), "--model", "gpt2", "-q"]
    )
    assert result.exit_code == 1, result.output
    assert "cannot load the model 'gpt2'" in result.output and "Traceback" not in result.output
