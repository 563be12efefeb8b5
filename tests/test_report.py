"""The report schema: a golden sample, the contract's keys, strict JSON, atomic writes."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest

from grader.report import ModelInfo, Report, TierResult, dumps, write_report

GOLDEN = Path(__file__).parent / "golden" / "report.json"
STATUSES = {"passed", "failed", "error", "timeout", "skipped"}


def sample_report() -> Report:
    """A fixed report covering every tier status, NaN and infinity included."""
    tiers = [
        TierResult(
            "mapping", "Weight mapping (get_weight_mapping)", "passed", 20, 20, "Every parameter is mapped.", 0.25
        ),
        TierResult("shapes", "Loaded weights", "failed", 0, 20, "blocks.0.attn.W_O holds the transpose", 0.5, 0.0),
        TierResult("embedding", "Embeddings", "skipped", 0, 10, "Skipped: load_gpt2_weights timed out.", 0.0),
        TierResult(
            "logits",
            "Full forward pass",
            "timeout",
            0,
            35,
            "did not finish within 5 s",
            5.0,
            math.nan,
            1.7e-4,
            {"mistakes": ["erf_gelu"], "first_divergence": "layer 0 mlp"},
        ),
        TierResult("compare", "compare_outputs", "error", 0, 15, "compare_outputs raised ValueError", 1.0, math.inf),
    ]
    model = ModelInfo("built-in synthetic checkpoint 'tiny' (seed 4)", "ab" * 32, 2, 64, 4, 128, 50257)
    return Report(
        tiers=tiers,
        decoder="reference",
        model=model,
        second_model=None,
        submission={"path": "sub", "kind": "directory", "files": ["pretrained.py"], "notes": [], "problem": None},
        tolerances={"logits": "max |diff| <= 1e-05 * max(1, max |HuggingFace logit|)", "logits_rtol": 1e-5},
        versions={"python": "3.11.7", "numpy": "2.4.6", "torch": "2.13.0+cpu", "transformers": "5.24.0"},
        limits={"timeout_s": 5.0, "memory_bytes": 2**30, "threads": 1},
        execution_time=12.3456,
        student_stdout="hello from the student\n",
        student_stderr="",
    )


def test_report_matches_the_golden_sample():
    text = dumps(sample_report())
    if os.environ.get("UPDATE_GOLDEN") == "1":  # deliberate schema changes: regenerate, review, commit
        GOLDEN.write_text(text)
    assert text == GOLDEN.read_text(), "the report format changed; if on purpose, rerun with UPDATE_GOLDEN=1"


def test_report_has_the_contract_fields():
    doc = json.loads(dumps(sample_report()))
    assert {"score", "execution_time", "output", "visibility", "stdout_visibility", "tests", "extra_data"} <= set(doc)
    assert doc["score"] == 20
    for test in doc["tests"]:
        assert {"name", "score", "max_score", "status", "output", "visibility", "tags"} <= set(test)
        assert test["status"] in ("passed", "failed")
    extra = doc["extra_data"]
    assert extra["max_score"] == 100 and extra["decoder"] in ("reference", "submission")
    assert {"source", "n_layer", "n_embd", "n_head"} <= set(extra["model"])
    assert list(extra["tiers"]) == ["mapping", "shapes", "embedding", "logits", "compare"]
    for name, tier in extra["tiers"].items():
        assert {"status", "score", "max_score", "detail"} <= set(tier) and tier["status"] in STATUSES
        if name in ("embedding", "logits"):
            assert "max_diff" in tier
    assert {"python", "numpy", "torch", "transformers"} <= set(extra["versions"])
    assert extra["student_output"]["stdout"] == "hello from the student\n"


def test_non_finite_numbers_become_null_so_the_json_is_strict():
    doc = json.loads(dumps(sample_report()), parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))
    assert doc["extra_data"]["tiers"]["logits"]["max_diff"] is None
    assert doc["extra_data"]["tiers"]["compare"]["max_diff"] is None


def test_write_report_is_atomic_and_leaves_no_temporary_files(tmp_path: Path):
    out = tmp_path / "results.json"
    out.write_text("old")
    write_report(sample_report(), out)
    assert json.loads(out.read_text())["score"] == 20
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]


def test_write_report_to_a_missing_folder_raises_oserror(tmp_path: Path):
    with pytest.raises(OSError):
        write_report(sample_report(), tmp_path / "missing" / "results.json")
