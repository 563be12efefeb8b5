"""The report schema: a golden sample, Gradescope's keys, strict ASCII JSON, safe strings, atomic writes."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
from conftest import Grader, make_submission, reference_files

from grader.grading.engine import start_here
from grader.grading.tiers import TIER_NAMES
from grader.outputs.report import Presentation, Report, TierResult, dumps, write_report

GOLDEN = Path(__file__).parent / "golden" / "report.json"
STATUSES = {"passed", "failed", "error", "timeout", "skipped"}


def sample_report() -> Report:
    """A fixed report covering every tier status, NaN and infinity, and hostile strings."""
    statuses = ["passed", "failed", "skipped", "timeout", "error", "passed", "failed", "passed"]
    tiers = [
        TierResult(name, name.title(), status, 10.0 if status == "passed" else 0.0, 10.0, f"{name} detail", 0.5)
        for name, status in zip(TIER_NAMES, statuses, strict=True)
    ]
    tiers[1].detail = "blocks.0.attn.W_O holds the transpose of the right array \udcff \x1b[31mred\x1b[0m"
    tiers[1].causes = {"attribute attn.W_O": "blocks.0.attn.W_O holds the transpose"}
    tiers[1].mistakes = [("attn.W_O:transpose", "attn.W_O holds the transpose of the right array")]
    tiers[3].max_diff, tiers[3].tolerance = math.nan, 1.7e-4
    tiers[3].facts = {"mistakes": ["erf_gelu"], "first_divergence": "layer 0 mlp"}
    tiers[3].causes = {"attribute attn.W_O": "blocks.0.attn.W_O holds the transpose"}
    tiers[4].max_diff = math.inf
    return Report(
        tiers=tiers,
        decoder="reference",
        models={
            "primary": {"name": "tiny", "source": "built-in synthetic checkpoint 'tiny' (seed 4)", "sha256": "ab" * 32}
        },
        submission={
            "path": "sub",
            "kind": "folder",
            "files": ["pretrained.py", "notes\udcff.txt"],
            "notes": [],
            "problem": None,
        },
        tolerances={"logits": "max |diff| <= 1e-05 * max(1, max |GPT-2 logit|)", "logits_rtol": 1e-5},
        versions={"python": "3.11.7", "numpy": "2.4.6", "torch": "2.13.0+cpu", "transformers": "5.24.0"},
        limits={"timeout_s": 5.0, "memory_bytes": 2**30, "threads": 1},
        execution_time=12.3456,
        student_stdout="hello from the student\n\x1b]0;title\x07",
        start_here=start_here(tiers),
        seed=1,
    )


def test_report_matches_the_golden_sample() -> None:
    text = dumps(sample_report())
    if os.environ.get("UPDATE_GOLDEN") == "1":  # deliberate schema changes: regenerate, review, commit
        GOLDEN.write_text(text)
    assert text == GOLDEN.read_text(), "the report format changed; if on purpose, rerun with UPDATE_GOLDEN=1"


def test_report_is_strict_ascii_json_with_gradescope_keys() -> None:
    text = dumps(sample_report())
    text.encode("ascii")
    data = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-strict JSON constant {c}"))
    assert {"score", "execution_time", "output", "visibility", "stdout_visibility", "tests", "extra_data"} <= set(data)
    assert data["score"] == sum(t["score"] for t in data["tests"]) == 30
    assert [t["tags"][0] for t in data["tests"]] == list(TIER_NAMES)
    assert all(t["status"] in ("passed", "failed") for t in data["tests"])
    assert set(data["extra_data"]["tiers"]) == set(TIER_NAMES)
    assert all(e["status"] in STATUSES for e in data["extra_data"]["tiers"].values())
    assert data["extra_data"]["tiers"]["logits"]["max_diff"] is None  # NaN is not JSON
    assert data["extra_data"]["diagnosis"] == [
        {"key": "attn.W_O:transpose", "tier": "shapes", "label": "attn.W_O holds the transpose of the right array"}
    ]


def test_student_strings_are_made_safe() -> None:
    data = json.loads(dumps(sample_report()))
    shapes = data["extra_data"]["tiers"]["shapes"]["detail"]
    assert "\x1b" not in shapes and "\udcff" not in shapes and "?red?" in shapes
    assert "\x1b" not in data["extra_data"]["student_output"]["stdout"]
    assert "notes?.txt" in data["extra_data"]["submission"]["files"]


def test_start_here_names_the_root_cause_of_several_failures() -> None:
    report = sample_report()
    assert report.start_here.startswith("fix this first: blocks.0.attn.W_O holds the transpose")
    assert "2 of your 5 failed tiers (20 points)" in report.start_here
    assert report.start_here in report.summary()
    report.tiers[3].causes = {}
    assert start_here(report.tiers) == ""  # one failure explains itself


def test_markdown_presentation_and_tier_visibility() -> None:
    report = sample_report()
    report.presentation = Presentation(
        output_format="md", tier_visibility=(("generate", "after_due_date"),), leaderboard=True
    )
    data = json.loads(dumps(report))
    assert data["output_format"] == data["test_output_format"] == "md"
    assert {t["tags"][0]: t["visibility"] for t in data["tests"]}["generate"] == "after_due_date"
    assert data["tests"][0]["output"].startswith("**passed**")
    assert data["leaderboard"][0]["order"] == "asc"


def test_write_report_is_atomic_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    out.write_text("old")
    write_report(sample_report(), out)
    assert json.loads(out.read_text())["score"] == 30
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]


def test_one_typo_submission_says_where_to_start(tmp_path: Path, grader: Grader) -> None:
    files = reference_files(False)
    files["pretrained.py"] = (
        files["pretrained.py"]
        .replace(
            'mapping["transformer.ln_f.bias"] = ("ln_f.beta", same)',
            'mapping["transformer.ln_f.biases"] = ("ln_f.beta", same)',
        )
        .replace("        if hf_name not in state:\n", "        if hf_name not in state:\n            continue\n")
    )
    report = grader(make_submission(tmp_path / "typo", files))
    assert "transformer.ln_f.biases is a typo of transformer.ln_f.bias" in report.start_here, report.start_here
    assert report.summary().splitlines()[1].startswith("Start here: fix this first: ln_f.beta")
