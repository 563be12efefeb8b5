"""The class view of a batch: its reports read into rows, and the files built from them.

Every report is a ``results.json`` as ``grader.outputs.report`` writes it, one per submission
(``REPORTS_DIR/<name>.json``). Reading is forgiving: an unreadable or malformed report becomes a
row with status "grader error", never an exception. A report whose submission is no longer in
the batch's submissions folder is *stale*: it is shown apart and left out of every statistic and
of the gradebook. ``summary_stats.py`` has the figures, ``gradebook.py`` writes the CSV files and
finds identities, ``summary_html.py`` writes the pages.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

GRADED = "graded"
GRADER_ERROR = "grader error"
GRADEBOOK_NAME = "gradebook.csv"
SUMMARY_NAME = "summary.html"
STUDENTS_DIR = "students"  # the per-student pages, beside summary.html
STATE_FILE = ".batch-state.json"  # grader.grading.batch.STATE_FILE, without importing the grading side
TIER_ORDER = ("mapping", "shapes", "embedding", "logits", "compare", "intermediate", "weights", "generate")
FAILING_STATUSES = ("error", "timeout", "skipped")
MISSING_FUNCTION = re.compile(r"does not define a function named [`'\"]?([A-Za-z_]\w*)")


@dataclass(frozen=True)
class TierCell:
    """One tier's outcome in one submission."""

    name: str
    status: str
    score: float | None
    max_score: float | None
    detail: str = ""
    title: str = ""
    seconds: float | None = None


@dataclass(frozen=True)
class Mistake:
    """Something that went wrong, counted once per student: a stable key, human text and the tier that showed it."""

    key: str
    label: str
    tier: str = ""


@dataclass(frozen=True)
class Identity:
    """Who a submission belongs to, as Gradescope's metadata or the roster say (empty when unknown)."""

    full_name: str = ""
    email: str = ""
    sid: str = ""
    canvas_id: str = ""
    login_id: str = ""
    section: str = ""

    def matchable(self) -> bool:
        """True when Canvas can match this person: a Canvas ID, an SIS user ID, a login or an email."""
        return bool(self.canvas_id or self.sid or self.login_id or self.email)

    def merged(self, other: Identity) -> Identity:
        """This identity with every field ``other`` knows taking precedence."""
        return Identity(**{k: getattr(other, k) or getattr(self, k) for k in self.__dataclass_fields__})


@dataclass(frozen=True)
class SubmissionRow:
    """One submission of the class, as its report tells it (or why its report could not be read)."""

    name: str
    status: str  # GRADED | GRADER_ERROR
    score: float | None = None
    max_score: float | None = None
    tiers: tuple[TierCell, ...] = ()
    diagnosis: tuple[Mistake, ...] = ()
    failures: tuple[Mistake, ...] = ()  # every failure kind the report shows (statuses, stubs, time-outs...)
    seconds: float | None = None
    peak_memory_mb: float | None = None
    error: str = ""  # the gradebook's error column
    start_here: str = ""
    notes: tuple[str, ...] = ()
    submission: dict[str, Any] = field(default_factory=dict)
    internal_errors: tuple[str, ...] = ()
    stdout: str = ""
    stderr: str = ""
    models: dict[str, Any] = field(default_factory=dict)
    grader_version: str = ""
    identities: tuple[Identity, ...] = ()
    stale: bool = False

    def tier(self, name: str) -> TierCell | None:
        """The cell of tier ``name``, or None when the report has no such tier."""
        return next((t for t in self.tiers if t.name == name), None)


@dataclass
class ClassData:
    """Everything the outputs are built from: the rows, where the submissions are, and what to warn about."""

    reports_dir: Path
    rows: list[SubmissionRow]
    submissions: Path | None = None
    warnings: list[str] = field(default_factory=list)


class _Malformed(ValueError):
    """A report that parses as JSON but does not have the report's shape."""


# ---------------------------------------------------------------- reading


def load_rows(reports_dir: Path, submissions: Path | None = None) -> list[SubmissionRow]:
    """One row per report in ``reports_dir`` (hidden files and non-report JSON skipped), sorted by name, stale marked."""
    return load_class(reports_dir, submissions).rows


def load_class(reports_dir: Path, submissions: Path | None = None, roster: Path | None = None) -> ClassData:
    """The rows with their stale flags and identities (``submissions`` overrides the batch's folder)."""
    from .gradebook import attach_identities

    reports_dir = Path(reports_dir)
    rows = []
    for path in reports_dir.glob("*.json"):
        if not path.name.startswith(".") and path.is_file():
            row = _read_row(path)
            if row is not None:
                rows.append(row)
    rows.sort(key=lambda r: (r.name.casefold(), r.name))
    data = ClassData(reports_dir, rows, submissions_folder(reports_dir, submissions))
    _mark_stale(data)
    data.rows, warnings = attach_identities(data.rows, data.submissions, roster)
    data.warnings += warnings
    return data


def submissions_folder(reports_dir: Path, submissions: Path | None = None) -> Path | None:
    """The submissions folder: ``submissions`` when given, else the one ``.batch-state.json`` records."""
    if submissions is not None:
        return Path(submissions)
    try:
        recorded = json.loads((Path(reports_dir) / STATE_FILE).read_text(encoding="utf-8")).get("submissions")
    except (OSError, ValueError, AttributeError):
        return None
    return Path(recorded) if isinstance(recorded, str) and recorded else None


def _mark_stale(data: ClassData) -> None:
    """Flag the rows whose submission is gone; a submissions folder that is itself gone flags nobody."""
    if data.submissions is None:
        return
    if not data.submissions.is_dir():
        data.warnings.append(f"the submissions folder {data.submissions} does not exist: stale reports not checked")
        return
    from ..grading.batch import stale_reports

    stale = set(stale_reports(data.reports_dir, data.submissions))
    data.rows = [replace(r, stale=True) if r.name in stale else r for r in data.rows]


def _read_row(path: Path) -> SubmissionRow | None:
    """The row for one file; None when it is JSON but not a report (e.g. some other tool's file)."""
    name = path.stem
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        return _unreadable(name, f"cannot read the report: {_reason(exc)}")
    if not isinstance(data, dict) or ("tests" not in data and "extra_data" not in data):
        return None
    try:
        return parse_report(name, data)
    except _Malformed as exc:
        return _unreadable(name, f"malformed report: {exc}")


def _unreadable(name: str, why: str) -> SubmissionRow:
    failure = Mistake("grader failure", "grader failure (internal error or unreadable report)")
    return SubmissionRow(
        name, GRADER_ERROR, error=f"grader failure: {why}", failures=(failure,), internal_errors=(why,)
    )


def _reason(exc: BaseException) -> str:
    """Why a report could not be read, in a few words."""
    if isinstance(exc, OSError):
        return exc.strerror or str(exc)
    if isinstance(exc, RecursionError):
        return "nested too deeply"
    return str(exc) or type(exc).__name__


def parse_report(name: str, data: dict[str, Any]) -> SubmissionRow:
    """The row of a report document (``Report.to_gradescope()``); _Malformed when it is not one."""
    extra = _mapping(data.get("extra_data"), "extra_data")
    score = _number(data.get("score"), "score")
    if score is None:
        raise _Malformed("no score")
    tiers = _tiers(_mapping(extra.get("tiers") or {}, "extra_data.tiers"), data.get("tests"))
    max_score = _number(extra.get("max_score"), "max_score")
    if max_score is None and tiers:
        max_score = sum(t.max_score or 0.0 for t in tiers)
    submission = extra.get("submission") if isinstance(extra.get("submission"), dict) else {}
    internal = tuple(str(e) for e in _listed(extra.get("internal_errors")) if e)
    failed = bool(internal) or submission.get("problem") == "grader failure"
    output = extra.get("student_output") if isinstance(extra.get("student_output"), dict) else {}
    versions = extra.get("versions") if isinstance(extra.get("versions"), dict) else {}
    row = SubmissionRow(
        name=name,
        status=GRADER_ERROR if failed else GRADED,
        score=score,
        max_score=max_score,
        tiers=tiers,
        diagnosis=_diagnosis(extra.get("diagnosis")),
        seconds=_number(data.get("execution_time"), "execution_time"),
        peak_memory_mb=_peak_memory(extra.get("resources")),
        start_here=str(extra.get("start_here") or ""),
        notes=tuple(str(n) for n in _listed(extra.get("notes"))),
        submission=submission,
        internal_errors=internal,
        stdout=str(output.get("stdout") or ""),
        stderr=str(output.get("stderr") or ""),
        models=_models(extra),
        grader_version=str(versions.get("grader") or ""),
    )
    return replace(row, failures=failure_kinds(row), error=error_text(row))


def _mapping(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _Malformed(f"{what} is not an object")
    return value


def _models(extra: dict[str, Any]) -> dict[str, Any]:
    """The checkpoints by role; a schema-1 report's ``model`` and ``second_model`` become primary and second."""
    if isinstance(extra.get("models"), dict):
        return extra["models"]
    old = (("primary", "model"), ("second", "second_model"))
    return {role: extra[key] for role, key in old if isinstance(extra.get(key), dict)}


def _listed(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [] if value is None else [value]


def _tiers(entries: dict[str, Any], tests: Any) -> tuple[TierCell, ...]:
    """The tiers in report order, titled from the Gradescope tests (whose first tag is the tier's name)."""
    titles = {}
    for test in tests if isinstance(tests, list) else []:
        if isinstance(test, dict) and isinstance(test.get("tags"), list) and test["tags"]:
            titles[str(test["tags"][0])] = re.sub(r"^\d+\.\s*", "", str(test.get("name") or ""))
    cells = []
    for name, entry in entries.items():
        entry = _mapping(entry, f"tier {name!r}")
        cells.append(
            TierCell(
                name=str(name),
                status=str(entry.get("status") or "unknown"),
                score=_number(entry.get("score"), f"tiers.{name}.score"),
                max_score=_number(entry.get("max_score"), f"tiers.{name}.max_score"),
                detail=str(entry.get("detail") or ""),
                title=titles.get(str(name), ""),
                seconds=_number(entry.get("seconds"), f"tiers.{name}.seconds"),
            )
        )
    return tuple(cells)


def _number(value: Any, what: str) -> float | None:
    """A finite number, None when absent; _Malformed for anything else."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise _Malformed(f"{what} is not a number: {value!r:.40}")
    return float(value)


def _peak_memory(resources: Any) -> float | None:
    """The largest peak memory of the student processes (``*_peak_rss_mb``, the grader's own left out)."""
    if not isinstance(resources, dict):
        return None
    peaks = [
        float(v)
        for k, v in resources.items()
        if str(k).endswith("_peak_rss_mb")
        and k != "grader_peak_rss_mb"
        and isinstance(v, (int, float))
        and not isinstance(v, bool)
        and math.isfinite(v)
    ]
    return max(peaks) if peaks else None


def _diagnosis(value: Any) -> tuple[Mistake, ...]:
    """The recognised mistakes, once per key (a key listed twice is one root cause); odd entries give nothing."""
    found: dict[str, Mistake] = {}
    for entry in _listed(value):
        if isinstance(entry, dict):
            key = str(entry.get("key") or entry.get("label") or "").strip()
            if key and key not in found:
                found[key] = Mistake(key, str(entry.get("label") or key), str(entry.get("tier") or ""))
    return tuple(found.values())


def failure_kinds(row: SubmissionRow) -> tuple[Mistake, ...]:
    """Every kind of failure in a report, once each: tier statuses, stubs, syntax errors, time-outs, missing
    functions, an unusable submission, grader failures."""
    found: dict[str, Mistake] = {}

    def add(key: str, label: str, tier: str = "") -> None:
        found.setdefault(key, Mistake(key, label, tier))

    problem = str(row.submission.get("problem") or "")
    if row.internal_errors or problem == "grader failure":
        add("grader failure", "grader failure (internal error or unreadable report)")
    elif problem:
        add("submission problem", "the submission could not be used", "")
    for tier in row.tiers:
        if tier.status in FAILING_STATUSES:
            add(f"{tier.name}: {tier.status}", f"{tier.name} tier: {tier.status}", tier.name)
        if tier.status == "timeout":
            add("time-out", "timed out (in any tier)", tier.name)
        if "NotImplementedError" in tier.detail:
            add("stub", "a template stub left in (NotImplementedError)", tier.name)
        if "SyntaxError" in tier.detail:
            add("syntax error", "syntax error (SyntaxError)", tier.name)
        for function in MISSING_FUNCTION.findall(tier.detail):
            add(f"missing function: {function}", f"does not define {function}", tier.name)
    return tuple(found.values())


def error_text(row: SubmissionRow) -> str:
    """The gradebook's error column: a grader failure, else the submission's problem, else the first error or
    time-out detail line."""
    problem = str(row.submission.get("problem") or "")
    if row.internal_errors or problem == "grader failure":
        return f"grader failure: {_last_line(row.internal_errors[0]) if row.internal_errors else problem}"
    if problem:
        return problem
    for tier in row.tiers:
        if tier.status in ("error", "timeout"):
            first = next((line.strip() for line in tier.detail.splitlines() if line.strip()), tier.status)
            return f"{tier.name} {tier.status}: {first}"
    return ""


def _last_line(text: str) -> str:
    """The last non-empty line of a traceback: the exception and its message."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "unknown"


# ---------------------------------------------------------------- the terminal


def class_result(rows: Sequence[SubmissionRow]) -> str:
    """One line for the terminal: submissions, mean and median, full marks, grader errors, stale reports."""
    from .summary_stats import class_stats, num

    s = class_stats(rows)
    if not s.submissions and not s.stale:
        return "No reports found."
    out_of = f"/{num(s.max_score)}" if s.max_score is not None else ""
    parts = [f"{s.submissions} submission{'s' * (s.submissions != 1)}"]
    if s.mean is not None and s.median is not None:
        parts.append(f"mean {s.mean:.1f}{out_of}, median {num(s.median)}{out_of}")
    parts.append(f"{s.full_marks} full marks")
    parts.append(f"{s.grader_errors} grader error{'s' * (s.grader_errors != 1)}")
    if s.stale:
        parts.append(f"{s.stale} stale report{'s' * (s.stale != 1)} left out")
    return ", ".join(parts)


# ---------------------------------------------------------------- building


def build_class_summary(
    reports_dir: Path, submissions: Path | None = None, roster: Path | None = None
) -> tuple[Path, Path]:
    """(Re)build ``gradebook.csv``, ``summary.html`` and ``students/`` in ``reports_dir``; the first two's paths."""
    return write_outputs(load_class(reports_dir, submissions, roster))


def write_outputs(data: ClassData) -> tuple[Path, Path]:
    """Write the gradebook, the summary page and the student pages of ``data``; (gradebook, summary)."""
    from .gradebook import write_gradebook
    from .summary_html import write_pages

    gradebook = write_gradebook(data.rows, data.reports_dir / GRADEBOOK_NAME)
    return gradebook, write_pages(data, data.reports_dir / SUMMARY_NAME)
