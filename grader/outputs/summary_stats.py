"""The class's figures, from the rows of ``summary.py``: every one leaves stale reports out."""

from __future__ import annotations

import math
import statistics
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from .summary import GRADED, GRADER_ERROR, TIER_ORDER, Mistake, SubmissionRow


@dataclass(frozen=True)
class ClassStats:
    """The headline numbers of a class (stale reports left out)."""

    submissions: int
    scored: int
    grader_errors: int
    stale: int
    mean: float | None
    median: float | None
    max_score: float | None
    full_marks: int


def current(rows: Iterable[SubmissionRow]) -> list[SubmissionRow]:
    """The rows whose submission is still there: those every statistic and the gradebook count."""
    return [r for r in rows if not r.stale]


def scored(rows: Iterable[SubmissionRow]) -> list[SubmissionRow]:
    """The current rows the grader graded without failing: those the score statistics use."""
    return [r for r in current(rows) if r.status == GRADED and r.score is not None]


def tier_names(rows: Iterable[SubmissionRow]) -> list[str]:
    """Every tier the reports name, in the lab's order (unknown ones after); the lab's tiers when none does."""
    names = {t.name: None for r in rows for t in r.tiers}
    if not names:
        return list(TIER_ORDER)
    return sorted(names, key=lambda n: (TIER_ORDER.index(n) if n in TIER_ORDER else len(TIER_ORDER), n))


def class_stats(rows: Sequence[SubmissionRow]) -> ClassStats:
    """Submissions, mean and median score, full marks, grader errors and stale reports."""
    graded = scored(rows)
    scores = [r.score for r in graded if r.score is not None]
    maxima = Counter(r.max_score for r in graded if r.max_score is not None)
    return ClassStats(
        submissions=len(current(rows)),
        scored=len(graded),
        grader_errors=sum(r.status == GRADER_ERROR for r in current(rows)),
        stale=sum(r.stale for r in rows),
        mean=statistics.fmean(scores) if scores else None,
        median=statistics.median(scores) if scores else None,
        max_score=maxima.most_common(1)[0][0] if maxima else None,
        full_marks=sum(1 for r in graded if r.max_score and r.score is not None and r.score >= r.max_score),
    )


def who_made(rows: Sequence[SubmissionRow], what: str = "diagnosis") -> list[tuple[Mistake, list[str]]]:
    """Each mistake (``what="diagnosis"``) or failure kind (``"failures"``) with the students showing it, most
    common first; a row holds each key once, so a student counts once per key."""
    names: dict[str, list[str]] = {}
    first: dict[str, Mistake] = {}
    for row in current(rows):
        for mistake in getattr(row, what):
            first.setdefault(mistake.key, mistake)
            names.setdefault(mistake.key, []).append(row.name)
    ranked = sorted(names, key=lambda k: (-len(names[k]), first[k].label.casefold(), k))
    return [(first[k], names[k]) for k in ranked]


def tier_pass_rates(rows: Sequence[SubmissionRow]) -> list[tuple[str, int, int]]:
    """Per tier: (name, submissions that passed it, scored submissions whose report has it)."""
    graded = scored(rows)
    rates = []
    for name in tier_names(graded):
        cells = [c for c in (r.tier(name) for r in graded) if c is not None]
        rates.append((name, sum(c.status == "passed" for c in cells), len(cells)))
    return rates


def score_histogram(rows: Sequence[SubmissionRow], bins: int = 10) -> list[int]:
    """How many scored submissions fall in each of ``bins`` equal slices of their maximum (full marks in the last)."""
    counts = [0] * bins
    for row in scored(rows):
        if row.score is not None and row.max_score:
            fraction = min(max(row.score / row.max_score, 0.0), 1.0)
            counts[min(int(fraction * bins), bins - 1)] += 1
    return counts


def slowest(rows: Sequence[SubmissionRow], top: int = 10) -> list[SubmissionRow]:
    """The current submissions that took longest to grade (``execution_time``), slowest first."""
    timed = [r for r in current(rows) if r.seconds is not None]
    return sorted(timed, key=lambda r: (-(r.seconds or 0.0), r.name))[:top]


def checkpoints(rows: Sequence[SubmissionRow]) -> list[tuple[str, str, str, int]]:
    """The checkpoints the current reports were graded against: (role, name, sha256 prefix, reports)."""
    seen: Counter[tuple[str, str, str]] = Counter()
    for row in current(rows):
        for role, info in row.models.items():
            if isinstance(info, dict):
                seen[
                    (str(role), str(info.get("name") or info.get("source") or "?"), str(info.get("sha256") or "")[:12])
                ] += 1
    order = ("primary", "second", "function")
    return [
        (*key, n)
        for key, n in sorted(seen.items(), key=lambda kv: (order.index(kv[0][0]) if kv[0][0] in order else 9, kv[0]))
    ]


def tier_points(rows: Sequence[SubmissionRow]) -> list[tuple[str, float | None, bool]]:
    """Per tier: (name, its points in most current reports, whether some reports give it other points)."""
    out = []
    for name in tier_names(current(rows)):
        points = Counter(c.max_score for c in (r.tier(name) for r in current(rows)) if c is not None)
        out.append((name, points.most_common(1)[0][0] if points else None, len(points) > 1))
    return out


def percent(part: int, whole: int) -> str:
    """``part`` of ``whole`` as a whole percentage, rounded half up ("37%")."""
    return f"{math.floor(100 * part / whole + 0.5)}%" if whole else "–"


def num(value: float | None) -> str:
    """A number as a person writes it: 20, 12.5, 0.125 (three decimals at most); empty for None."""
    if value is None:
        return ""
    text = f"{value:.3f}".rstrip("0").rstrip(".")
    return "0" if text == "-0" else text
