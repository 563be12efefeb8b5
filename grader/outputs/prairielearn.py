"""The report as PrairieLearn's external-grader ``results.json`` (``grade SUB --format prairielearn``).

PrairieLearn's documented format: ``gradable`` (false for a submission that cannot be
graded: no points awarded or lost, no attempt used, ``format_errors`` says why), ``score``
in [0, 1], ``message`` and ``output`` for the whole submission, and ``tests``: ``name``,
``description``, ``points``, ``max_points``, ``message``, ``output``. PrairieLearn renders
those fields to students; anything else is stored but not shown, so the staff-only facts
(versions, checkpoints, isolation, the seed) go in ``lab04``. The file must stay under
1 MB: every text is capped. The JSON is strict and ASCII, every string made safe.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..text import clean, clean_tree
from .files import write_atomic
from .report import Report, TierResult

MAX_BYTES = 1_000_000  # PrairieLearn's limit for results.json
TEXT_CAP = 20_000  # characters of one test's output
OUTPUT_CAP = 50_000  # characters of the student's own stdout and stderr, together
STAFF_CAP = 4_000  # characters of one staff-only text


def _test(number: int, tier: TierResult) -> dict[str, Any]:
    lines = clean(tier.detail, 2000).splitlines() or [""]
    return {
        "name": f"{number}. {tier.title}",
        "description": f"Tier {tier.name}",
        "points": tier.score,
        "max_points": tier.max_score,
        "message": f"{tier.status}: {lines[0]}",
        "output": clean(tier.detail, TEXT_CAP),
    }


def _student_output(report: Report) -> str:
    parts = [("Your code printed", report.student_stdout), ("Your code wrote to stderr", report.student_stderr)]
    text = "\n".join(f"{label}:\n{clean(value, OUTPUT_CAP)}" for label, value in parts if value)
    return clean(text, OUTPUT_CAP)


def _staff(report: Report) -> dict[str, Any]:
    """What PrairieLearn stores but does not render: for staff, like Gradescope's extra_data."""
    return {
        "max_score": report.max_score,
        "decoder": report.decoder,
        "models": report.models,
        "submission": report.submission,
        "tiers": {t.name: t.extra() for t in report.tiers},
        "versions": report.versions,
        "limits": report.limits,
        "sandbox": report.sandbox,
        "diagnosis": report.diagnosis,
        "seed": report.seed,
        "internal_errors": [clean(e, STAFF_CAP) for e in report.internal_errors[:20]],
    }


def to_prairielearn(report: Report) -> dict[str, Any]:
    """The whole PrairieLearn results document."""
    problem = report.submission.get("problem")
    document: dict[str, Any] = {"gradable": not problem}
    if problem:
        document["format_errors"] = [clean(f"Your submission could not be used: {problem}", 2000)]
        document["message"] = clean(report.summary(), 4000)
        document["output"] = ""
        document["tests"] = []
    else:
        fraction = report.score / report.max_score if report.max_score > 0 else 0.0
        document["score"] = min(1.0, max(0.0, fraction))
        document["message"] = clean(report.summary(), 4000)
        document["output"] = _student_output(report)
        document["tests"] = [_test(i, t) for i, t in enumerate(report.tiers, start=1)]
    document["lab04"] = _staff(report)
    return clean_tree(document, TEXT_CAP, strict=True)


def dumps_prairielearn(report: Report) -> str:
    """The document as strict ASCII JSON, under PrairieLearn's 1 MB (staff facts, then outputs give way)."""
    document = to_prairielearn(report)
    text = json.dumps(document, indent=2, allow_nan=False, ensure_ascii=True) + "\n"
    if len(text) > MAX_BYTES:
        document["lab04"] = {"note": "staff details dropped: the results would exceed PrairieLearn's 1 MB"}
        document["output"] = clean(document.get("output", ""), 2000)
        for test in document.get("tests", []):
            test["output"] = clean(test["output"], 2000)
        text = json.dumps(document, indent=2, allow_nan=False, ensure_ascii=True) + "\n"
    return text


def write_prairielearn(report: Report, path: Path) -> None:
    """Write PrairieLearn's results.json atomically."""
    write_atomic(Path(path), dumps_prairielearn(report))
