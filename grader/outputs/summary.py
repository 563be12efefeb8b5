"""The class view of a batch: a CSV gradebook and a self-contained HTML summary built from a folder of reports.

Every report is a ``results.json`` as ``grader.report`` writes it, one per submission
(``REPORTS_DIR/<submission name>.json``). Reading is forgiving: an unreadable or malformed
report becomes a row with status "grader error", never an exception. Names, labels and
details come from students or their code, so the CSV neutralises formula-like cells and
the HTML escapes every piece of text.
"""

from __future__ import annotations

import csv
import html
import io
import json
import math
import os
import statistics
import tempfile
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

GRADED = "graded"
GRADER_ERROR = "grader error"
GRADEBOOK_NAME = "gradebook.csv"
SUMMARY_NAME = "summary.html"
DEFAULT_TITLE = "Lab 04: class summary"
TOP = 10  # entries in the "most common mistakes" and "slowest submissions" lists
HISTOGRAM_BINS = 10
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")  # what spreadsheets may read as a formula


@dataclass(frozen=True)
class TierCell:
    """One tier's outcome in one submission."""

    status: str
    score: float | None
    max_score: float | None


@dataclass(frozen=True)
class Mistake:
    """A classic mistake the grader recognised: a stable key, human text and the tier that showed it."""

    key: str
    label: str
    tier: str = ""


@dataclass(frozen=True)
class SubmissionRow:
    """One submission of the class, as its report tells it (or why its report could not be read)."""

    name: str
    status: str  # GRADED | GRADER_ERROR
    score: float | None = None
    max_score: float | None = None
    tiers: tuple[tuple[str, TierCell], ...] = ()
    diagnosis: tuple[Mistake, ...] = ()
    seconds: float | None = None
    peak_memory_mb: float | None = None
    error: str = ""

    def tier(self, name: str) -> TierCell | None:
        """The cell of tier ``name``, or None when the report has no such tier."""
        return dict(self.tiers).get(name)


@dataclass(frozen=True)
class ClassStats:
    """The headline numbers of a class."""

    submissions: int
    scored: int
    grader_errors: int
    mean: float | None
    median: float | None
    max_score: float | None
    full_marks: int


class _Malformed(ValueError):
    """A report that parses as JSON but does not have the report's shape."""


# ---------------------------------------------------------------- reading


def load_rows(reports_dir: Path) -> list[SubmissionRow]:
    """One row per ``*.json`` report in ``reports_dir`` (hidden files and non-report JSON skipped), sorted by name."""
    rows = []
    for path in Path(reports_dir).glob("*.json"):
        if path.name.startswith(".") or not path.is_file():
            continue
        row = _read_row(path)
        if row is not None:
            rows.append(row)
    return sorted(rows, key=lambda r: (r.name.casefold(), r.name))


def _read_row(path: Path) -> SubmissionRow | None:
    """The row for one file; None when it is JSON but not a report (e.g. the batch's own state file)."""
    name = path.stem
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        return SubmissionRow(name, GRADER_ERROR, error=f"cannot read the report: {_reason(exc)}")
    if not isinstance(data, dict) or ("tests" not in data and "extra_data" not in data):
        return None
    try:
        return parse_report(name, data)
    except _Malformed as exc:
        return SubmissionRow(name, GRADER_ERROR, error=f"malformed report: {exc}")


def _reason(exc: BaseException) -> str:
    """Why a report could not be read, in a few words."""
    if isinstance(exc, OSError):
        return exc.strerror or str(exc)
    if isinstance(exc, RecursionError):
        return "nested too deeply"
    return str(exc) or type(exc).__name__


def parse_report(name: str, data: dict[str, Any]) -> SubmissionRow:
    """The row of a report document (``grader.report.Report.to_gradescope()``); _Malformed when it is not one."""
    extra = data.get("extra_data")
    if not isinstance(extra, dict):
        raise _Malformed("no extra_data")
    score = _number(data.get("score"), "score")
    if score is None:
        raise _Malformed("no score")
    tiers_data = extra.get("tiers") or {}
    if not isinstance(tiers_data, dict):
        raise _Malformed("extra_data.tiers is not an object")
    tiers = []
    for tier_name, entry in tiers_data.items():
        if not isinstance(entry, dict):
            raise _Malformed(f"tier {tier_name!r} is not an object")
        tiers.append(
            (
                str(tier_name),
                TierCell(
                    status=str(entry.get("status") or "unknown"),
                    score=_number(entry.get("score"), f"tiers.{tier_name}.score"),
                    max_score=_number(entry.get("max_score"), f"tiers.{tier_name}.max_score"),
                ),
            )
        )
    max_score = _number(extra.get("max_score"), "max_score")
    if max_score is None and tiers:
        max_score = sum(cell.max_score or 0.0 for _, cell in tiers)
    resources = extra.get("resources")
    peak = _number(resources.get("student_peak_rss_mb"), "peak memory") if isinstance(resources, dict) else None
    internal = extra.get("internal_errors") or []
    if not isinstance(internal, list):
        internal = [internal]
    errors = [str(e) for e in internal if e]
    return SubmissionRow(
        name=name,
        status=GRADER_ERROR if errors else GRADED,
        score=score,
        max_score=max_score,
        tiers=tuple(tiers),
        diagnosis=_diagnosis(extra.get("diagnosis")),
        seconds=_number(data.get("execution_time"), "execution_time"),
        peak_memory_mb=peak,
        error="; ".join(errors),
    )


def _number(value: Any, what: str) -> float | None:
    """A finite number, None when absent; _Malformed for anything else."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise _Malformed(f"{what} is not a number: {value!r:.40}")
    return float(value)


def _diagnosis(value: Any) -> tuple[Mistake, ...]:
    """The recognised mistakes, one per key; absent (older reports) or odd entries give nothing."""
    if not isinstance(value, list):
        return ()
    found: dict[str, Mistake] = {}
    for entry in value:
        if not isinstance(entry, dict):
            continue
        key = str(entry.get("key") or entry.get("label") or "").strip()
        if key and key not in found:
            found[key] = Mistake(key, str(entry.get("label") or key), str(entry.get("tier") or ""))
    return tuple(found.values())


# ---------------------------------------------------------------- figures


def tier_names(rows: Iterable[SubmissionRow]) -> list[str]:
    """Every tier the reports name, in report order; the lab's tiers when no report names any."""
    names: dict[str, None] = {}
    for row in rows:
        for name, _ in row.tiers:
            names.setdefault(name)
    if names:
        return list(names)
    from .lab.tiers import TIER_NAMES  # imports torch: only when no report says

    return list(TIER_NAMES)


def class_stats(rows: Sequence[SubmissionRow]) -> ClassStats:
    """Submissions, mean and median score, full marks and grader errors."""
    scored = [r for r in rows if r.score is not None]
    scores = [r.score for r in scored if r.score is not None]
    maxima = Counter(r.max_score for r in scored if r.max_score is not None)
    return ClassStats(
        submissions=len(rows),
        scored=len(scored),
        grader_errors=sum(r.status == GRADER_ERROR for r in rows),
        mean=statistics.fmean(scores) if scores else None,
        median=statistics.median(scores) if scores else None,
        max_score=maxima.most_common(1)[0][0] if maxima else None,
        full_marks=sum(1 for r in scored if r.max_score and r.score is not None and r.score >= r.max_score),
    )


def common_mistakes(rows: Sequence[SubmissionRow], top: int = TOP) -> list[tuple[Mistake, int, int]]:
    """The most common mistakes: (mistake, submissions showing it, submissions with a readable report)."""
    scored = [r for r in rows if r.score is not None]
    counts: Counter[str] = Counter()
    first: dict[str, Mistake] = {}
    for row in scored:
        for mistake in row.diagnosis:
            counts[mistake.key] += 1
            first.setdefault(mistake.key, mistake)
    ranked = sorted(counts, key=lambda k: (-counts[k], first[k].label.casefold(), k))
    return [(first[k], counts[k], len(scored)) for k in ranked[:top]]


def tier_pass_rates(rows: Sequence[SubmissionRow]) -> list[tuple[str, int, int]]:
    """Per tier: (name, submissions that passed it, submissions whose report has it)."""
    rates = []
    for name in tier_names(rows):
        cells = [c for c in (r.tier(name) for r in rows) if c is not None]
        rates.append((name, sum(c.status == "passed" for c in cells), len(cells)))
    return rates


def score_histogram(rows: Sequence[SubmissionRow], bins: int = HISTOGRAM_BINS) -> list[int]:
    """How many submissions fall in each of ``bins`` equal slices of their maximum score (full marks in the last)."""
    counts = [0] * bins
    for row in rows:
        if row.score is None or not row.max_score:
            continue
        fraction = min(max(row.score / row.max_score, 0.0), 1.0)
        counts[min(int(fraction * bins), bins - 1)] += 1
    return counts


def percent(part: int, whole: int) -> str:
    """``part`` of ``whole`` as a whole percentage, rounded half up ("37%")."""
    return f"{math.floor(100 * part / whole + 0.5)}%" if whole else "–"


def class_result(rows: Sequence[SubmissionRow]) -> str:
    """One line for the terminal: submissions, mean and median, full marks, grader errors."""
    s = class_stats(rows)
    if not s.submissions:
        return "No reports found."
    out_of = f"/{_num(s.max_score)}" if s.max_score is not None else ""
    parts = [f"{s.submissions} submission{'s' * (s.submissions != 1)}"]
    if s.mean is not None and s.median is not None:
        parts.append(f"mean {s.mean:.1f}{out_of}, median {_num(s.median)}{out_of}")
    parts.append(f"{s.full_marks} full marks")
    parts.append(f"{s.grader_errors} grader error{'s' * (s.grader_errors != 1)}")
    return ", ".join(parts)


def _num(value: float | None) -> str:
    """A number as a person writes it: 20, 12.5, 0.125 (three decimals at most); empty for None."""
    if value is None:
        return ""
    text = f"{value:.3f}".rstrip("0").rstrip(".")
    return "0" if text == "-0" else text


# ---------------------------------------------------------------- the gradebook


def gradebook_header(tiers: Sequence[str]) -> list[str]:
    """The gradebook's columns for these tiers."""
    per_tier = [f"{t}_{what}" for t in tiers for what in ("status", "points")]
    return ["submission", "score", "max_score", *per_tier, "diagnosis", "seconds", "peak_memory_mb", "error"]


def excel_safe(text: str) -> str:
    """Text a spreadsheet will not run as a formula: a leading = + - @ (or tab, CR) gets a quote."""
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def gradebook_csv(rows: Sequence[SubmissionRow]) -> str:
    """The gradebook as CSV text."""
    tiers = tier_names(rows)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow([excel_safe(h) for h in gradebook_header(tiers)])
    for row in rows:
        cells: list[str] = [excel_safe(row.name), _num(row.score), _num(row.max_score)]
        for name in tiers:
            cell = row.tier(name)
            cells += [excel_safe(cell.status), _num(cell.score)] if cell else ["", ""]
        cells += [
            excel_safe("; ".join(m.label for m in row.diagnosis)),
            _num(row.seconds),
            _num(row.peak_memory_mb),
            excel_safe(row.error),
        ]
        writer.writerow(cells)
    return buffer.getvalue()


def write_gradebook(rows: Sequence[SubmissionRow], path: Path) -> Path:
    """Write the CSV gradebook atomically (UTF-8) and return its path."""
    return _write_atomically(Path(path), gradebook_csv(rows))


def _write_atomically(path: Path, text: str) -> Path:
    """Write ``text`` to a temporary file beside ``path``, then rename it: a reader never sees half a file."""
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", suffix=".tmp", dir=path.parent)
    except OSError as exc:  # name the file asked for, not the temporary one
        raise type(exc)(exc.errno, exc.strerror, str(path)) from exc
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


# ---------------------------------------------------------------- the HTML page

HISTOGRAM_COLOUR = "#3f51b5"  # distinct from every other colour on the page: the browser test looks for it
PASS_RATE_COLOUR = "#43a047"
STATUS_COLOURS = {
    "passed": "#2e7d32",
    "failed": "#c62828",
    "error": "#8e24aa",
    "timeout": "#ef6c00",
    "skipped": "#757575",
}

CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;color:#222;
  margin:0;background:#f5f6f8}
main{max-width:1280px;margin:0 auto;padding:24px}
h1{font-size:24px;margin:0 0 16px}
h2{font-size:17px;margin:0 0 12px}
section{background:#fff;border:1px solid #dde1e6;border-radius:8px;padding:16px 20px;margin:0 0 20px}
.cards{display:flex;flex-wrap:wrap;gap:12px;margin:0 0 20px}
.card{flex:1 1 150px;background:#fff;border:1px solid #dde1e6;border-radius:8px;padding:12px 16px}
.card .value{font-size:28px;font-weight:600}
.card .label{color:#555;font-size:13px}
.card.bad .value{color:#c62828}
.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(480px,1fr));gap:20px;margin:0 0 20px}
.grid section{margin:0}
.muted{color:#666}
.empty{color:#666;font-style:italic}
svg text{font-family:inherit}
ol.mistakes{margin:0;padding:0 0 0 24px}
ol.mistakes li{margin:0 0 6px}
.pct{display:inline-block;min-width:3.2em;font-weight:600}
.meter{display:block;height:5px;background:#e3e7ec;border-radius:3px;margin-top:2px}
.meter span{display:block;height:5px;background:#9fa8da;border-radius:3px}
table{border-collapse:collapse;width:100%}
th,td{text-align:left;padding:4px 6px;border-bottom:1px solid #eceff2;vertical-align:top}
th{background:#f0f2f5;position:sticky;top:0;font-weight:600;white-space:nowrap}
th.sort::after{content:" \\2195";color:#999}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
td.diag{min-width:160px;max-width:320px}
table.slowest{width:auto;min-width:60%}
td.name{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;word-break:break-all}
tr:nth-child(even) td{background:#fafbfc}
.st{display:inline-block;padding:0 6px;border-radius:10px;color:#fff;font-size:12px;white-space:nowrap}
.st-missing{color:#999}
.small{font-size:12px}
.err{color:#c62828}
.wide{overflow-x:auto}
"""


def _esc(value: object) -> str:
    """HTML-escaped text (quotes too: safe inside attributes)."""
    return html.escape(str(value), quote=True)


def render_summary(rows: Sequence[SubmissionRow], title: str = DEFAULT_TITLE) -> str:
    """The whole summary page: one self-contained HTML document (inline CSS and SVG, no script)."""
    rows = list(rows)
    stats = class_stats(rows)
    tiers = tier_names(rows)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_esc(title)}</title><style>{CSS}</style></head>",
        f"<body><main><h1>{_esc(title)}</h1>",
        _headline(stats),
    ]
    if not rows:
        parts.append('<section><p class="empty">No reports found: nothing to summarise yet.</p></section>')
    else:
        parts += [
            '<div class="grid">',
            _section("Score distribution", _histogram_svg(score_histogram(rows), stats.max_score), "histogram"),
            _section("Pass rate per tier", _pass_rate_svg(tier_pass_rates(rows)), "pass-rates"),
            "</div>",
            _section("Most common mistakes", _mistakes_html(common_mistakes(rows), stats.scored), "mistakes"),
            _section("Slowest submissions", _slowest_html(rows), "slowest"),
            _section(f"All submissions ({len(rows)})", _table_html(rows, tiers), "submissions"),
        ]
    parts.append("</main></body></html>\n")
    return "\n".join(parts)


def write_summary(rows: Sequence[SubmissionRow], path: Path, title: str = DEFAULT_TITLE) -> Path:
    """Write the HTML summary atomically and return its path."""
    return _write_atomically(Path(path), render_summary(rows, title))


def build_class_summary(reports_dir: Path, submissions: Path | None = None) -> tuple[Path, Path]:
    """(Re)build ``gradebook.csv`` and ``summary.html`` in ``reports_dir`` from its reports; their paths."""
    reports_dir = Path(reports_dir)
    rows = load_rows(reports_dir)
    return write_gradebook(rows, reports_dir / GRADEBOOK_NAME), write_summary(rows, reports_dir / SUMMARY_NAME)


def _section(heading: str, body: str, ident: str) -> str:
    """A titled section of the page."""
    return f'<section id="{ident}"><h2>{_esc(heading)}</h2>{body}</section>'


def _headline(s: ClassStats) -> str:
    """The cards with the headline numbers."""
    out_of = f" / {_num(s.max_score)}" if s.max_score is not None else ""
    mean = f"{s.mean:.1f}{out_of}" if s.mean is not None else "–"
    median = f"{_num(s.median)}{out_of}" if s.median is not None else "–"
    cards = [
        ("submissions", str(s.submissions), "submissions", False),
        ("mean", mean, "mean score", False),
        ("median", median, "median score", False),
        ("full-marks", str(s.full_marks), "full marks", False),
        ("grader-errors", str(s.grader_errors), "grader errors", s.grader_errors > 0),
    ]
    html_cards = "".join(
        f'<div class="card{" bad" if bad else ""}" id="stat-{ident}"><div class="value">{_esc(value)}</div>'
        f'<div class="label">{_esc(label)}</div></div>'
        for ident, value, label, bad in cards
    )
    return f'<div class="cards">{html_cards}</div>'


def _histogram_svg(counts: list[int], max_score: float | None) -> str:
    """Vertical bars, one per slice of the score range, count above each bar."""
    width, height, left, bottom, top = 520, 240, 36, 44, 16
    plot_w, plot_h = width - left - 18, height - bottom - top
    step = _nice_step(max(counts, default=0))
    peak = step * max(1, math.ceil(max(counts, default=0) / step))  # the top of the y axis
    slot = plot_w / len(counts)
    scale = max_score if max_score else 100.0
    unit = "" if max_score else "%"
    out = [
        f'<svg class="chart" width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="score distribution" xmlns="http://www.w3.org/2000/svg">',
        f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}" stroke="#888"/>',
    ]
    for value in range(0, peak + 1, step):
        y = top + plot_h - plot_h * value / peak
        out.append(f'<line x1="{left}" y1="{y:.1f}" x2="{left + plot_w}" y2="{y:.1f}" stroke="#eee"/>')
        out.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" font-size="11" fill="#666">{value}</text>')
    for i, count in enumerate(counts):
        low, high = scale * i / len(counts), scale * (i + 1) / len(counts)
        x = left + i * slot + 3
        bar_h = plot_h * count / peak
        y = top + plot_h - bar_h
        label = f"{_num(low)}–{_num(high)}{unit}"
        out.append(
            f'<rect class="bar" x="{x:.1f}" y="{y:.1f}" width="{slot - 6:.1f}" height="{bar_h:.1f}" fill="{HISTOGRAM_COLOUR}">'
            f"<title>{_esc(label)}: {count}</title></rect>"
        )
        if count:
            out.append(
                f'<text x="{x + (slot - 6) / 2:.1f}" y="{y - 4:.1f}" text-anchor="middle" font-size="11">{count}</text>'
            )
        out.append(
            f'<text x="{left + i * slot:.1f}" y="{top + plot_h + 14}" text-anchor="middle" font-size="10" '
            f'fill="#444">{_esc(_num(low))}</text>'
        )
    out.append(
        f'<text x="{left + plot_w:.1f}" y="{top + plot_h + 14}" text-anchor="middle" font-size="10" '
        f'fill="#444">{_esc(_num(scale))}</text>'
    )
    axis = "points" if max_score else "% of the maximum"
    out.append(
        f'<text x="{left + plot_w / 2:.1f}" y="{height - 6}" text-anchor="middle" font-size="11" fill="#666">'
        f"score ({_esc(axis)}; full marks count in the last bar)</text>"
    )
    out.append("</svg>")
    return "".join(out)


def _nice_step(peak: int) -> int:
    """A step of 1, 2 or 5 times a power of ten giving at most five ticks up to ``peak``."""
    step = 1
    while math.ceil(peak / step) > 5:
        step = step * 5 // 2 if str(step).startswith("2") else step * 2
    return step


def _pass_rate_svg(rates: list[tuple[str, int, int]]) -> str:
    """Horizontal bars, one per tier: the share of submissions that passed it."""
    if not rates:
        return '<p class="empty">No tier results.</p>'
    row_h, label_w, bar_w, width = 34, 90, 300, 520
    height = row_h * len(rates) + 10
    out = [
        f'<svg class="chart" width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="pass rate per tier" xmlns="http://www.w3.org/2000/svg">'
    ]
    for i, (name, passed, total) in enumerate(rates):
        y = 6 + i * row_h
        share = passed / total if total else 0.0
        text = f"{percent(passed, total)} ({passed} of {total})"
        out.append(f'<text x="{label_w - 8}" y="{y + 16}" text-anchor="end" font-size="13">{_esc(name)}</text>')
        out.append(f'<rect x="{label_w}" y="{y + 2}" width="{bar_w}" height="20" rx="3" fill="#e3e7ec"/>')
        out.append(
            f'<rect class="bar" x="{label_w}" y="{y + 2}" width="{bar_w * share:.1f}" height="20" rx="3" '
            f'fill="{PASS_RATE_COLOUR}"><title>{_esc(name)}: {_esc(text)}</title></rect>'
        )
        out.append(f'<text x="{label_w + bar_w + 8}" y="{y + 16}" font-size="13">{_esc(text)}</text>')
    out.append("</svg>")
    return "".join(out)


def _mistakes_html(mistakes: list[tuple[Mistake, int, int]], scored: int) -> str:
    """The most common mistakes, each with its share of the submissions."""
    if not mistakes:
        return '<p class="empty">No classic mistake recognised in any submission.</p>'
    items = []
    for mistake, count, total in mistakes:
        pct = percent(count, total)
        tier = f" · {_esc(mistake.tier)}" if mistake.tier else ""
        items.append(
            f'<li title="{_esc(mistake.key)}"><span class="pct">{pct}</span> {_esc(mistake.label)} '
            f'<span class="muted small">({count} of {total}{tier})</span>'
            f'<span class="meter"><span style="width:{100 * count / total:.1f}%"></span></span></li>'
        )
    return (
        f'<p class="muted small">Share of the {scored} submissions with a readable report.</p>'
        f'<ol class="mistakes">{"".join(items)}</ol>'
    )


def _slowest_html(rows: Sequence[SubmissionRow]) -> str:
    """The slowest submissions with their peak memory."""
    timed = sorted((r for r in rows if r.seconds is not None), key=lambda r: (-(r.seconds or 0.0), r.name))[:TOP]
    if not timed:
        return '<p class="empty">No timings.</p>'
    body = "".join(
        f'<tr><td class="name">{_esc(r.name)}</td><td class="num">{r.seconds:.1f} s</td>'
        f'<td class="num">{_memory(r.peak_memory_mb)}</td><td class="num">{_esc(_num(r.score))}</td></tr>'
        for r in timed
    )
    return (
        '<table class="slowest"><thead><tr><th>submission</th><th class="num">time</th>'
        '<th class="num">peak memory</th><th class="num">score</th></tr></thead>'
        f"<tbody>{body}</tbody></table>"
    )


def _memory(mb: float | None) -> str:
    """Peak memory for a table cell."""
    return f"{mb:,.0f} MB" if mb is not None else '<span class="muted">–</span>'


def _status_badge(cell: TierCell | None) -> str:
    """A tier status as a coloured badge, its points in the tooltip."""
    if cell is None:
        return '<span class="st-missing">–</span>'
    colour = STATUS_COLOURS.get(cell.status, "#455a64")
    points = f"{_num(cell.score)}/{_num(cell.max_score)}" if cell.max_score is not None else _num(cell.score)
    return f'<span class="st" style="background:{colour}" title="{_esc(points)}">{_esc(cell.status)}</span>'


def _table_html(rows: Sequence[SubmissionRow], tiers: Sequence[str]) -> str:
    """Every submission, one row each, with its per-tier statuses."""
    head = "".join(f"<th>{_esc(t)}</th>" for t in tiers)
    body = []
    for i, r in enumerate(rows, start=1):
        score = f"{_num(r.score)}/{_num(r.max_score)}" if r.score is not None else ""
        cells = "".join(f"<td>{_status_badge(r.tier(t))}</td>" for t in tiers)
        diagnosis = "; ".join(_esc(m.label) for m in r.diagnosis)
        status = f'<span class="err">{_esc(r.status)}</span>' if r.status == GRADER_ERROR else _esc(r.status)
        error = f'<div class="err small">{_esc(r.error)}</div>' if r.error else ""
        seconds = f"{r.seconds:.1f}" if r.seconds is not None else ""
        body.append(
            f'<tr><td class="num">{i}</td><td class="name">{_esc(r.name)}</td><td class="num">{_esc(score)}</td>'
            f'{cells}<td>{status}{error}</td><td class="small diag">{diagnosis}</td>'
            f'<td class="num">{seconds}</td><td class="num">{_memory(r.peak_memory_mb)}</td></tr>'
        )
    return (
        '<div class="wide"><table class="all"><thead><tr><th class="num">#</th><th class="sort">submission</th>'
        f'<th class="num sort">score</th>{head}<th>status</th><th>diagnosis</th>'
        '<th class="num sort">seconds</th><th class="num">memory</th></tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table></div>"
    )
