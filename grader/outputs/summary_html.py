"""The class summary page and one feedback page per student, each a self-contained HTML file.

``summary.html``: the header (date, checkpoints, grader version, points per tier), the headline
numbers, a score histogram and the pass rate per tier (inline SVG), the table of students
(sortable, filterable; each name links to ``students/<page>.html``), who made each mistake,
every failure kind, the slowest submissions and the stale reports. Every piece of text from a
report is escaped: names, feedback and output come from students or their code.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from urllib.parse import quote

from .files import write_atomic
from .summary import GRADEBOOK_NAME, GRADER_ERROR, STUDENTS_DIR, ClassData, Mistake, SubmissionRow, TierCell
from .summary_assets import CSS, SCRIPT, STATUS_COLOURS
from .summary_charts import esc as _esc
from .summary_charts import histogram_svg, pass_rate_svg
from .summary_stats import (
    ClassStats,
    checkpoints,
    class_stats,
    current,
    num,
    percent,
    score_histogram,
    slowest,
    tier_names,
    tier_pass_rates,
    tier_points,
    who_made,
)

TITLE = "Lab 04: class summary"
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,79}")


def page_names(rows: Sequence[SubmissionRow]) -> dict[str, str]:
    """Each row's page file in ``students/``: ``NAME.html`` for a plain name, else an ASCII slug and a hash (also
    when two names differ only in case)."""
    folded = Counter(r.name.casefold() for r in rows)
    used: set[str] = set()
    out = {}
    for row in rows:
        stem = row.name
        if not _SAFE_NAME.fullmatch(stem) or folded[stem.casefold()] > 1 or stem.casefold() in used:
            digest = hashlib.sha256(row.name.encode("utf-8", "surrogateescape")).hexdigest()[:10]
            stem = f"{re.sub(r'[^A-Za-z0-9._-]+', '_', row.name).strip('._')[:60] or 'student'}-{digest}"
        used.add(stem.casefold())
        out[row.name] = f"{stem}.html"
    return out


def write_pages(data: ClassData, path: Path, now: datetime | None = None) -> Path:
    """Write ``summary.html`` at ``path`` and every student's page in ``students/`` beside it (pages of reports
    that are gone are removed); the summary's path."""
    path = Path(path)
    folder = path.parent / STUDENTS_DIR
    folder.mkdir(exist_ok=True)
    pages = page_names(data.rows)
    when = _date(now)
    for row in data.rows:
        write_atomic(folder / pages[row.name], render_student(row, when))
    for old in folder.glob("*.html"):
        if old.name not in pages.values() and old.is_file() and not old.is_symlink():
            old.unlink(missing_ok=True)
    write_atomic(path, render_summary(data, pages, when))
    return path


def _date(now: datetime | None) -> str:
    return (now or datetime.now().astimezone()).strftime("%Y-%m-%d %H:%M %Z").strip()


def _document(title: str, body: str, script: bool = False) -> str:
    code = f"<script>{SCRIPT}</script>" if script else ""
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width, initial-scale=1"><title>{_esc(title)}</title>'
        f"<style>{CSS}</style></head>\n<body><main>\n{body}\n</main>{code}</body></html>\n"
    )


def _section(heading: str, body: str, ident: str, extra: str = "") -> str:
    return f'<section id="{ident}"{extra}><h2>{_esc(heading)}</h2>{body}</section>'


def _link(name: str, pages: dict[str, str]) -> str:
    return f'<a href="{_esc(STUDENTS_DIR + "/" + quote(pages[name]))}">{_esc(name)}</a>'


# ---------------------------------------------------------------- the summary page


def render_summary(data: ClassData, pages: dict[str, str], when: str = "") -> str:
    """The whole summary page."""
    rows, stats = data.rows, class_stats(data.rows)
    parts = [_about(rows, when or _date(None)), _warnings(data.warnings), _headline(stats)]
    if not current(rows):
        parts.append(
            '<section id="students"><p class="empty">No current reports: nothing to summarise yet.</p></section>'
        )
    else:
        who = f"Share of the {stats.submissions} current submissions; each student counts once per mistake."
        parts += [
            '<div class="grid">',
            _section("Score distribution", histogram_svg(score_histogram(rows), stats.max_score), "histogram"),
            _section("Pass rate per tier", pass_rate_svg(tier_pass_rates(rows)), "pass-rates"),
            "</div>",
            _section(f"Students ({stats.submissions})", _table(rows, pages), "students"),
            _section("Who made each mistake", _who(who_made(rows), stats.submissions, pages, who), "mistakes"),
            _section("Every failure kind", _who(who_made(rows, "failures"), stats.submissions, pages, who), "failures"),
            _section("Slowest submissions", _slowest(slowest(rows), pages), "slowest"),
        ]
    parts.append(_stale(rows, pages))
    return _document(TITLE, "\n".join(p for p in parts if p), script=True)


def _about(rows: Sequence[SubmissionRow], when: str) -> str:
    """The header: date, checkpoints, grader version and points per tier."""
    models = [
        f'{_esc(role)}: {_esc(name)} <span class="muted small">sha256 {_esc(sha or "?")}</span>'
        + (f' <span class="muted small">({n} reports)</span>' if n != len(current(rows)) else "")
        for role, name, sha, n in checkpoints(rows)
    ]
    versions = Counter(r.grader_version for r in current(rows) if r.grader_version)
    grader = ", ".join(
        f"{_esc(v)}" + (f" ({n} reports)" if len(versions) > 1 else "") for v, n in versions.most_common()
    )
    points = tier_points(rows)
    total = sum(p or 0.0 for _, p, _ in points)
    tiers = " · ".join(
        f"{_esc(name)} {_esc(num(p))}" + (' <span class="err small">(varies)</span>' if mixed else "")
        for name, p, mixed in points
    )
    facts = [
        ("Generated", _esc(when)),
        ("Checkpoints", "<br>".join(models) or "–"),
        ("Grader version", grader or "–"),
        ("Points per tier", f"{tiers} · <b>total {_esc(num(total))}</b>"),
        ("Gradebook", f'<a href="{GRADEBOOK_NAME}">{GRADEBOOK_NAME}</a> (stale reports left out)'),
    ]
    items = "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in facts)
    return f'<header class="about" id="about"><h1>{_esc(TITLE)}</h1><dl class="facts">{items}</dl></header>'


def _warnings(warnings: Sequence[str]) -> str:
    if not warnings:
        return ""
    items = "".join(f"<li>{_esc(w)}</li>" for w in warnings)
    return f'<section id="warnings" class="warn"><h2>Warnings</h2><ul>{items}</ul></section>'


def _headline(s: ClassStats) -> str:
    """The cards with the headline numbers."""
    out_of = f" / {num(s.max_score)}" if s.max_score is not None else ""
    cards = [
        ("submissions", str(s.submissions), "submissions", False),
        ("mean", f"{s.mean:.1f}{out_of}" if s.mean is not None else "–", "mean score", False),
        ("median", f"{num(s.median)}{out_of}" if s.median is not None else "–", "median score", False),
        ("full-marks", str(s.full_marks), "full marks", False),
        ("grader-errors", str(s.grader_errors), "grader errors (not in the mean)", s.grader_errors > 0),
        ("stale", str(s.stale), "stale reports (left out)", s.stale > 0),
    ]
    body = "".join(
        f'<div class="card{" bad" if bad else ""}" id="stat-{ident}"><div class="value">{_esc(value)}'
        f'</div><div class="label">{_esc(label)}</div></div>'
        for ident, value, label, bad in cards
    )
    return f'<div class="cards">{body}</div>'


def _badge(cell: TierCell | None) -> str:
    """A tier status as a coloured badge, its points in the tooltip."""
    if cell is None:
        return '<td data-v=""><span class="st-missing">–</span></td>'
    colour = STATUS_COLOURS.get(cell.status, "#455a64")
    tip = f"{cell.status}: {num(cell.score)}/{num(cell.max_score)} points"
    shown = "✓" if cell.status == "passed" else cell.status  # a tick keeps the table narrow; failures spelt out
    return (
        f'<td data-v="{_esc(cell.status)}"><span class="st" style="background:{colour}" '
        f'title="{_esc(tip)}">{_esc(shown)}</span></td>'
    )


def _table(rows: Sequence[SubmissionRow], pages: dict[str, str]) -> str:
    """The filter box and every current student, one sortable row each."""
    tiers = tier_names(current(rows))
    heads = [
        ("name", "text", "ascending"),
        ("score", "num", "none"),
        *((t, "text", "none") for t in tiers),
        ("start here / error", "text", "none"),
        ("mistakes", "text", "none"),
        ("time (s)", "num", "none"),
        ("memory (MB)", "num", "none"),
    ]
    head = "".join(
        f'<th data-type="{kind}" aria-sort="{sort}" class="{kind}"><button type="button" class="sort">'
        f"{_esc(label)}</button></th>"
        for label, kind, sort in heads
    )
    body = "".join(_table_row(r, tiers, pages) for r in current(rows))
    return (
        '<div class="filterbar"><input id="filter" type="search" autocomplete="off" '
        'placeholder="Filter: name, status, mistake..." aria-label="Filter the students">'
        f'<span id="shown" class="muted small"></span></div><div class="wide"><table id="table">'
        f"<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>"
    )


def _table_row(r: SubmissionRow, tiers: Sequence[str], pages: dict[str, str]) -> str:
    people = "; ".join(p.full_name or p.email or p.sid for p in r.identities)
    who = f'<div class="muted small">{_esc(people)}</div>' if people else ""
    score = f"{num(r.score)}/{num(r.max_score)}" if r.score is not None else "–"
    why = r.error or r.start_here
    status = '<span class="err">grader failure</span> ' if r.status == GRADER_ERROR else ""
    mistakes = "; ".join(_esc(m.label) for m in r.diagnosis)
    search = " ".join(
        [
            r.name,
            r.status,
            *(f"{t.name}:{t.status}" for t in r.tiers),
            *(m.key for m in r.diagnosis),
            *(m.key for m in r.failures),
            *(f"{p.email} {p.sid} {p.full_name}" for p in r.identities),
        ]
    )
    return (
        f'<tr data-search="{_esc(search)}"><td class="name" data-v="{_esc(r.name)}">{_link(r.name, pages)}{who}</td>'
        f'<td class="num" data-v="{_esc(num(r.score))}">{_esc(score)}</td>'
        + "".join(_badge(r.tier(t)) for t in tiers)
        + f'<td class="small why">{status}{_esc(why)}</td><td class="small why">{mistakes}</td>'
        f'<td class="num" data-v="{_esc(num(r.seconds))}">{_esc(_fixed(r.seconds))}</td>'
        f'<td class="num" data-v="{_esc(num(r.peak_memory_mb))}">{_esc(_fixed(r.peak_memory_mb, 0))}</td></tr>'
    )


def _fixed(value: float | None, digits: int = 1) -> str:
    return f"{value:,.{digits}f}" if value is not None else "–"


def _who(found: list[tuple[Mistake, list[str]]], total: int, pages: dict[str, str], note: str) -> str:
    """Each mistake or failure kind: its share of the class, and the students (links)."""
    if not found:
        return '<p class="empty">None in any current submission.</p>'
    items = []
    for mistake, names in found:
        tier = f" · {_esc(mistake.tier)}" if mistake.tier else ""
        links = " ".join(_link(n, pages) for n in names)
        items.append(
            f'<li data-key="{_esc(mistake.key)}"><span class="pct">{percent(len(names), total)}</span> '
            f'{_esc(mistake.label)} <span class="muted small">({len(names)} of {total}{tier} · '
            f'<code>{_esc(mistake.key)}</code>)</span><span class="meter"><span style="width:'
            f'{100 * len(names) / max(total, 1):.1f}%"></span></span><div class="who small">{links}</div></li>'
        )
    return f'<p class="muted small">{_esc(note)}</p><ol class="mistakes">{"".join(items)}</ol>'


def _slowest(rows: Sequence[SubmissionRow], pages: dict[str, str]) -> str:
    """The submissions that took longest, with their peak memory and score."""
    if not rows:
        return '<p class="empty">No timings.</p>'
    body = "".join(
        f'<tr><td class="name">{_link(r.name, pages)}</td><td class="num">{_esc(_fixed(r.seconds))} s</td>'
        f'<td class="num">{_esc(_fixed(r.peak_memory_mb, 0))} MB</td><td class="num">{_esc(num(r.score))}</td>'
        "</tr>"
        for r in rows
    )
    return (
        '<table class="slowest"><thead><tr><th>student</th><th class="num">time</th><th class="num">peak memory'
        f'</th><th class="num">score</th></tr></thead><tbody>{body}</tbody></table>'
    )


def _stale(rows: Sequence[SubmissionRow], pages: dict[str, str]) -> str:
    stale = [r for r in rows if r.stale]
    if not stale:
        return ""
    items = "".join(
        f'<li>{_link(r.name, pages)} <span class="muted small">({_esc(num(r.score))} points)</span></li>' for r in stale
    )
    note = (
        "Their submission is no longer in the submissions folder: they are left out of every statistic above and "
        "of the gradebook. Delete the reports, or restore the submissions and run the batch again."
    )
    return _section(
        f"Stale reports ({len(stale)})", f'<p class="muted small">{note}</p><ul>{items}</ul>', "stale", ' class="warn"'
    )


# ---------------------------------------------------------------- charts


# ---------------------------------------------------------------- a student's page


def render_student(row: SubmissionRow, when: str = "") -> str:
    """One student's full feedback (every tier's detail) and, for staff, internal errors and the captured output."""
    score = f"{num(row.score)} / {num(row.max_score)} points" if row.score is not None else "no score"
    flags = (
        '<p class="err"><b>Stale:</b> this submission is no longer in the submissions folder.</p>' * row.stale
        + '<p class="err"><b>Grader failure:</b> not the student\'s fault; see the staff section.</p>'
        * (row.status == GRADER_ERROR)
    )
    start = (
        f'<section class="start" id="start-here"><h2>Start here</h2><p>{_esc(row.start_here)}</p></section>'
        if row.start_here
        else ""
    )
    parts = [
        f'<p><a id="back" href="../summary.html">&larr; class summary</a></p><h1>{_esc(row.name)}</h1>'
        f'<p class="score" id="score">{_esc(score)}</p>{flags}',
        _identities(row),
        start,
        _tiers(row),
        _mistake_list(row),
        _submission(row),
        _staff(row),
        f'<p class="muted small">Generated {_esc(when or _date(None))}.</p>',
    ]
    return _document(f"{row.name}: Lab 04 feedback", "\n".join(p for p in parts if p))


def _identities(row: SubmissionRow) -> str:
    people = [
        ", ".join(_esc(v) for v in (p.full_name, p.email, p.sid and f"SID {p.sid}", p.section) if v)
        for p in row.identities
    ]
    return f'<p id="identity">{"<br>".join(people)}</p>' if people else ""


def _submission(row: SubmissionRow) -> str:
    s = row.submission
    files = s.get("files") if isinstance(s.get("files"), list) else []
    notes = [*(str(n) for n in (s.get("notes") if isinstance(s.get("notes"), list) else [])), *row.notes]
    facts = [
        ("Kind", s.get("kind")),
        ("Module", s.get("module")),
        ("Path", s.get("path")),
        ("Problem", s.get("problem")),
    ]
    items = "".join(f"<dt>{_esc(k)}</dt><dd>{_esc(v)}</dd>" for k, v in facts if v)
    files_html = (
        f'<h3>Files ({len(files)})</h3><ul class="small">{"".join(f"<li>{_esc(f)}</li>" for f in files)}</ul>'
        if files
        else ""
    )
    notes_html = f"<h3>Notes</h3><ul>{''.join(f'<li>{_esc(n)}</li>' for n in notes)}</ul>" if notes else ""
    return _section("Submission", f'<dl class="facts">{items}</dl>{files_html}{notes_html}', "submission")


def _tiers(row: SubmissionRow) -> str:
    if not row.tiers:
        why = row.error or "The report has no tiers."
        return _section("Tiers", f'<p class="err">{_esc(why)}</p>', "tiers")
    body = []
    for i, t in enumerate(row.tiers, start=1):
        colour = STATUS_COLOURS.get(t.status, "#455a64")
        body.append(
            f'<tr id="tier-{_esc(t.name)}"><td class="num">{i}</td><td>{_esc(t.title or t.name)} '
            f'<span class="muted small">({_esc(t.name)})</span></td><td><span class="st" style="background:'
            f'{colour}">{_esc(t.status)}</span></td><td class="num">{_esc(num(t.score))}/{_esc(num(t.max_score))}'
            f'</td><td class="num">{_esc(_fixed(t.seconds))} s</td></tr><tr><td></td><td colspan="4"><pre>'
            f"{_esc(t.detail)}</pre></td></tr>"
        )
    head = '<tr><th class="num">#</th><th>tier</th><th>status</th><th class="num">points</th><th class="num">time</th></tr>'
    return _section("Tiers", f"<table><thead>{head}</thead><tbody>{''.join(body)}</tbody></table>", "tiers")


def _mistake_list(row: SubmissionRow) -> str:
    def items(found: Sequence[Mistake]) -> str:
        return "".join(
            f'<li>{_esc(m.label)} <span class="muted small">(<code>{_esc(m.key)}</code>'
            f"{' · ' + _esc(m.tier) if m.tier else ''})</span></li>"
            for m in found
        )

    diagnosis = f"<ul>{items(row.diagnosis)}</ul>" if row.diagnosis else '<p class="empty">None recognised.</p>'
    failures = f"<h3>Failure kinds</h3><ul>{items(row.failures)}</ul>" if row.failures else ""
    return _section("Diagnosis", diagnosis + failures, "diagnosis")


def _staff(row: SubmissionRow) -> str:
    models = "; ".join(
        f"{role}: {info.get('name', '?')} (sha256 {str(info.get('sha256', ''))[:12]})"
        for role, info in row.models.items()
        if isinstance(info, dict)
    )
    facts = [
        ("Execution time", f"{_fixed(row.seconds)} s"),
        ("Peak memory", f"{_fixed(row.peak_memory_mb, 0)} MB"),
        ("Checkpoints", models or "–"),
        ("Grader version", row.grader_version or "–"),
    ]
    body = [f'<dl class="facts">{"".join(f"<dt>{_esc(k)}</dt><dd>{_esc(v)}</dd>" for k, v in facts)}</dl>']
    if row.internal_errors:
        body.append(
            "<h3>Internal errors</h3>" + "".join(f'<pre class="err">{_esc(e)}</pre>' for e in row.internal_errors)
        )
    for label, text, ident in (("stdout", row.stdout, "stdout"), ("stderr", row.stderr, "stderr")):
        shown = f'<pre id="{ident}">{_esc(text)}</pre>' if text else '<p class="empty">(empty)</p>'
        body.append(f"<h3>Student {label}</h3>{shown}")
    return _section("For staff", "".join(body), "staff")
