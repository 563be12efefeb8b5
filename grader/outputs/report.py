"""The report: a Gradescope ``results.json`` with the contract's ``extra_data``.

This module defines the schema (dataclasses) and is the only place that writes its
JSON. Every string in it is made safe first (no surrogates, escape codes or control
characters), and the JSON is ASCII, so any reader and any terminal can take it.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..text import clean, clean_tree
from .files import write_atomic

SCHEMA_VERSION = 2
VISIBILITIES = ("visible", "hidden", "after_due_date", "after_published")


@dataclass(frozen=True)
class Presentation:
    """How Gradescope shows the report (``grade gradescope build`` options); the defaults show everything."""

    output_format: str = "text"  # text | md
    visibility: str = "visible"
    stdout_visibility: str = "hidden"
    tier_visibility: tuple[tuple[str, str], ...] = ()  # (tier, visibility) overrides
    leaderboard: bool = False

    def tier(self, name: str) -> str:
        return dict(self.tier_visibility).get(name, self.visibility)


@dataclass
class TierResult:
    """One tier's outcome, as students and staff see it."""

    name: str
    title: str
    status: str  # passed | failed | error | timeout | skipped
    score: float
    max_score: float
    detail: str
    seconds: float = 0.0
    max_diff: float | None = None
    tolerance: float | None = None
    facts: dict[str, Any] = field(default_factory=dict)
    mistakes: list[tuple[str, str]] = field(default_factory=list)
    causes: dict[str, str] = field(default_factory=dict)

    def extra(self) -> dict[str, Any]:
        """The tier's entry in ``extra_data.tiers``."""
        out: dict[str, Any] = {
            "status": self.status,
            "score": self.score,
            "max_score": self.max_score,
            "detail": self.detail,
            "seconds": round(self.seconds, 3),
        }
        if self.name in ("embedding", "logits") or self.max_diff is not None:
            out["max_diff"] = _finite(self.max_diff)
        if self.tolerance is not None:
            out["tolerance"] = self.tolerance
        if self.facts:
            out["facts"] = self.facts
        return out


@dataclass
class Report:
    """Everything one grading run found."""

    tiers: list[TierResult]
    decoder: str
    models: dict[str, dict[str, Any]]  # role (primary, second, function) -> checkpoint info
    submission: dict[str, Any]
    tolerances: dict[str, Any]
    versions: dict[str, str]
    limits: dict[str, Any]
    execution_time: float
    student_stdout: str = ""
    student_stderr: str = ""
    internal_errors: list[str] = field(default_factory=list)
    resources: dict[str, Any] = field(default_factory=dict)
    sandbox: dict[str, Any] = field(default_factory=dict)  # the isolation the student processes had
    start_here: str = ""  # the one root cause behind several failed tiers, when there is one
    notes: list[str] = field(default_factory=list)
    seed: int | None = None  # of the inputs, for staff who want to replay a run
    presentation: Presentation = field(default_factory=Presentation)

    @property
    def score(self) -> float:
        return sum(t.score for t in self.tiers)

    @property
    def max_score(self) -> float:
        return sum(t.max_score for t in self.tiers)

    @property
    def diagnosis(self) -> list[dict[str, str]]:
        """The mistakes recognised, once each, for the class summary: key, label, tier."""
        seen: dict[str, dict[str, str]] = {}
        for tier in self.tiers:
            for key, label in tier.mistakes:
                seen.setdefault(key, {"key": key, "label": label, "tier": tier.name})
        return list(seen.values())

    def summary(self) -> str:
        """The text at the top of the Gradescope page."""
        lines = [f"Lab 04 autograder: {_num(self.score)}/{_num(self.max_score)} points."]
        if self.start_here:
            lines.append(f"Start here: {self.start_here}")
        decoder = "the reference decoder" if self.decoder == "reference" else f"your GPTModel ({self.decoder})"
        lines.append(f"Forward passes used {decoder}. Logits must match within {self.tolerances['logits']}.")
        if self.submission.get("problem"):
            lines.append(f"Submission problem: {self.submission['problem']}")
        lines += [f"Note: {note}" for note in self.notes]
        if self.sandbox.get("student_warning"):
            lines.append(self.sandbox["student_warning"])
        return "\n".join(lines)

    def to_gradescope(self) -> dict[str, Any]:
        """The whole ``results.json`` document."""
        p = self.presentation
        tests = []
        for i, t in enumerate(self.tiers, start=1):
            output = f"[{t.status}] {t.detail}"
            if p.output_format == "md":
                output = f"**{t.status}**\n\n" + _markdown(t.detail)
            tests.append(
                {
                    "name": f"{i}. {t.title}",
                    "number": str(i),
                    "score": t.score,
                    "max_score": t.max_score,
                    "status": "passed" if t.status == "passed" else "failed",
                    "output": output,
                    "output_format": p.output_format,
                    "visibility": p.tier(t.name),
                    "tags": [t.name, t.status],
                }
            )
        document: dict[str, Any] = {
            "score": self.score,
            "execution_time": round(self.execution_time, 3),
            "output": _markdown(self.summary()) if p.output_format == "md" else self.summary(),
            "output_format": p.output_format,
            "test_output_format": p.output_format,
            "visibility": p.visibility,
            "stdout_visibility": p.stdout_visibility,
            "tests": tests,
            "extra_data": {
                "schema_version": SCHEMA_VERSION,
                "max_score": self.max_score,
                "decoder": self.decoder,
                "models": self.models,
                "submission": self.submission,
                "tiers": {t.name: t.extra() for t in self.tiers},
                "start_here": self.start_here,
                "notes": self.notes,
                "tolerances": self.tolerances,
                "versions": self.versions,
                "limits": self.limits,
                "resources": self.resources,
                "sandbox": self.sandbox,
                "diagnosis": self.diagnosis,
                "seed": self.seed,
                "student_output": {"stdout": self.student_stdout, "stderr": self.student_stderr},
                "internal_errors": self.internal_errors,
            },
        }
        if p.leaderboard:
            logits = next((t for t in self.tiers if t.name == "logits"), None)
            value = _finite(logits.max_diff) if logits else None
            document["leaderboard"] = [
                {"name": "logits max |diff|", "value": value if value is not None else 1e9, "order": "asc"}
            ]
        return document


def _markdown(text: str) -> str:
    """Plain lines as Markdown: each line stays a line (a hard break), list items stay items."""
    return "\n".join(line if line.startswith("- ") else f"{line}  " for line in text.splitlines())


def _finite(value: float | None) -> float | None:
    """JSON has no NaN or infinity: such values become None."""
    if value is None or not math.isfinite(value):
        return None
    return float(value)


def _num(value: float) -> str:
    return f"{value:g}"


def _clean(value: Any, depth: int = 0) -> Any:
    if depth > 40:
        return clean(value, 200)
    if isinstance(value, float):
        return _finite(value)
    if isinstance(value, str):
        return clean(value, 100_000)
    if isinstance(value, dict):
        return {clean(k, 200): _clean(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v, depth + 1) for v in value]
    if value is None or isinstance(value, (bool, int)):
        return value
    return clean(value, 2000)


def dumps(report: Report) -> str:
    """The report as JSON text: strict (NaN and infinity become null), ASCII, every string made safe."""
    return json.dumps(_clean(report.to_gradescope()), indent=2, allow_nan=False, ensure_ascii=True) + "\n"


def write_report(report: Report, path: Path) -> None:
    """Write the report atomically: a reader never sees half a file."""
    write_atomic(Path(path), dumps(report))


__all__ = ["Presentation", "Report", "TierResult", "clean_tree", "dumps", "write_report"]
