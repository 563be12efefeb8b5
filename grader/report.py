"""The report: a Gradescope ``results.json`` with the contract's ``extra_data``.

This module defines the schema (dataclasses) and is the only place that
writes JSON for it.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1


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
class ModelInfo:
    """The checkpoint a submission was graded against."""

    source: str
    sha256: str
    n_layer: int
    n_embd: int
    n_head: int
    n_positions: int
    vocab_size: int


@dataclass
class Report:
    """Everything one grading run found."""

    tiers: list[TierResult]
    decoder: str
    model: ModelInfo
    second_model: ModelInfo | None
    submission: dict[str, Any]
    tolerances: dict[str, Any]
    versions: dict[str, str]
    limits: dict[str, Any]
    execution_time: float
    student_stdout: str = ""
    student_stderr: str = ""
    internal_errors: list[str] = field(default_factory=list)
    resources: dict[str, Any] = field(default_factory=dict)
    sandbox: dict[str, Any] = field(default_factory=dict)  # the isolation the student process had
    diagnosis: list[dict[str, str]] = field(default_factory=list)  # recognised mistakes: key, label, tier

    @property
    def score(self) -> float:
        return sum(t.score for t in self.tiers)

    @property
    def max_score(self) -> float:
        return sum(t.max_score for t in self.tiers)

    def summary(self) -> str:
        """The text at the top of the Gradescope page."""
        lines = [f"Lab 04 autograder: {_num(self.score)}/{_num(self.max_score)} points."]
        decoder = (
            "your decoder.py" if self.decoder == "submission" else "the reference decoder (you sent no decoder.py)"
        )
        lines.append(f"Forward passes used {decoder}. Tolerance: {self.tolerances['logits']}.")
        if self.submission.get("problem"):
            lines.append(f"Submission problem: {self.submission['problem']}")
        return "\n".join(lines)

    def to_gradescope(self) -> dict[str, Any]:
        """The whole ``results.json`` document."""
        tests = [
            {
                "name": f"{i}. {t.title}",
                "number": str(i),
                "score": t.score,
                "max_score": t.max_score,
                "status": "passed" if t.status == "passed" else "failed",
                "output": f"[{t.status}] {t.detail}",
                "visibility": "visible",
                "tags": [t.name, t.status],
            }
            for i, t in enumerate(self.tiers, start=1)
        ]
        return {
            "score": self.score,
            "execution_time": round(self.execution_time, 3),
            "output": self.summary(),
            "output_format": "text",
            "test_output_format": "text",
            "visibility": "visible",
            "stdout_visibility": "hidden",
            "tests": tests,
            "extra_data": {
                "schema_version": SCHEMA_VERSION,
                "max_score": self.max_score,
                "decoder": self.decoder,
                "model": asdict(self.model),
                "second_model": asdict(self.second_model) if self.second_model else None,
                "submission": self.submission,
                "tiers": {t.name: t.extra() for t in self.tiers},
                "tolerances": self.tolerances,
                "versions": self.versions,
                "limits": self.limits,
                "resources": self.resources,
                "sandbox": self.sandbox,
                "diagnosis": self.diagnosis,
                "student_output": {"stdout": self.student_stdout, "stderr": self.student_stderr},
                "internal_errors": self.internal_errors,
            },
        }


def _finite(value: float | None) -> float | None:
    """JSON has no NaN or infinity: such values become None."""
    if value is None or not math.isfinite(value):
        return None
    return float(value)


def _num(value: float) -> str:
    return f"{value:g}"


def _clean(value: Any) -> Any:
    if isinstance(value, float):
        return _finite(value)
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def dumps(report: Report) -> str:
    """The report as JSON text (strict JSON: NaN and infinity become null)."""
    return json.dumps(_clean(report.to_gradescope()), indent=2, allow_nan=False, ensure_ascii=False) + "\n"


def write_report(report: Report, path: Path) -> None:
    """Write the report atomically: a reader never sees half a file."""
    path = Path(path)
    text = dumps(report)
    fd, tmp = tempfile.mkstemp(prefix=".report-", suffix=".json", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
