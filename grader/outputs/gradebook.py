"""The class's CSV files and who each submission belongs to.

``gradebook.csv`` has one row per current submission: identity, score, each tier's status and
points, the diagnosis keys, the start-here text, the error, time and memory. The Canvas CSV
follows Canvas's gradebook import format. Identities come from a Gradescope
``submission_metadata.yml`` (in a student's folder or zip, or the one at the top of a Gradescope
export) and from a roster CSV, which wins. Every text cell is neutralised against spreadsheet
formulas; the files are UTF-8.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import os
import re
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .files import write_atomic
from .summary import GRADER_ERROR, Identity, SubmissionRow
from .summary_stats import current, num, tier_names

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")  # what spreadsheets may read as a formula
METADATA_NAMES = ("submission_metadata.yml", "submission_metadata.yaml", "submission_metadata.json")
METADATA_DEPTH = 3  # how deep in a student's folder the metadata may be
ROSTER_COLUMNS = ("name", "email", "sid", "full_name", "canvas_id", "login_id", "section")
CANVAS_COLUMNS = ("Student", "ID", "SIS User ID", "SIS Login ID", "Section")
POINTS_POSSIBLE = "    Points Possible"  # the second row of a Canvas export, spelt as Canvas spells it


def excel_safe(text: str) -> str:
    """Text a spreadsheet will not run as a formula: a leading = + - @ (or tab, CR) gets an apostrophe."""
    text = str(text).encode("utf-8", "replace").decode("utf-8")  # a lone surrogate (odd file name) becomes "?"
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def _csv(rows: Iterable[Sequence[str]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerows(rows)
    return buffer.getvalue()


# ---------------------------------------------------------------- the gradebook


def gradebook_header(tiers: Sequence[str]) -> list[str]:
    """The gradebook's columns for these tiers."""
    per_tier = [f"{t}_{what}" for t in tiers for what in ("status", "points")]
    return [
        "name",
        "full_name",
        "email",
        "sid",
        "score",
        "max_score",
        *per_tier,
        "diagnosis",
        "start_here",
        "error",
        "execution_time",
        "peak_memory_mb",
    ]


def _joined(row: SubmissionRow, field: str) -> str:
    """One identity field of a submission (a group's members joined with '; ')."""
    return "; ".join(dict.fromkeys(v for v in (getattr(i, field) for i in row.identities) if v))


def gradebook_csv(rows: Sequence[SubmissionRow]) -> str:
    """The gradebook as CSV text: one row per current submission (stale reports left out)."""
    rows = current(rows)
    tiers = tier_names(rows)
    lines = [gradebook_header(tiers)]
    for row in rows:
        cells = [
            excel_safe(row.name),
            *(excel_safe(_joined(row, f)) for f in ("full_name", "email", "sid")),
            num(row.score),
            num(row.max_score),
        ]
        for name in tiers:
            cell = row.tier(name)
            cells += [excel_safe(cell.status), num(cell.score)] if cell else ["", ""]
        cells += [
            excel_safe(";".join(m.key for m in row.diagnosis)),
            excel_safe(row.start_here),
            excel_safe(row.error),
            num(row.seconds),
            num(row.peak_memory_mb),
        ]
        lines.append(cells)
    return _csv(lines)


def write_gradebook(rows: Sequence[SubmissionRow], path: Path) -> Path:
    """Write the CSV gradebook atomically (UTF-8) and return its path."""
    write_atomic(Path(path), gradebook_csv(rows))
    return Path(path)


# ---------------------------------------------------------------- Canvas


def canvas_csv(rows: Sequence[SubmissionRow], assignment: str, points_row: bool = True) -> tuple[str, list[str]]:
    """Canvas's gradebook import CSV for one assignment (one row per person: a group's members each get one),
    and the warnings: people Canvas cannot match, scores left blank."""
    rows = current(rows)
    maxima = [r.max_score for r in rows if r.max_score is not None]
    lines = [[*CANVAS_COLUMNS, excel_safe(assignment)]]
    if points_row:
        lines.append([POINTS_POSSIBLE, "", "", "", "", num(max(maxima)) if maxima else ""])
    unmatched, blank = [], []
    for row in rows:
        score = "" if row.status == GRADER_ERROR else num(row.score)
        if not score:
            blank.append(row.name)
        for person in row.identities or (Identity(),):
            if not person.matchable():
                unmatched.append(row.name)
            lines.append(
                [
                    excel_safe(person.full_name or row.name),
                    excel_safe(person.canvas_id),
                    excel_safe(person.sid),
                    excel_safe(person.login_id or person.email),
                    excel_safe(person.section),
                    score,
                ]
            )
    warnings = []
    if unmatched:
        warnings.append(
            f"{len(unmatched)} Canvas row(s) have no Canvas ID, SIS user ID, login or email, so Canvas "
            f"cannot match them (add them to --roster): {', '.join(dict.fromkeys(unmatched))}"
        )
    if blank:
        warnings.append(
            f"{len(blank)} score(s) left blank in the Canvas file (grader failure or no score; regrade "
            f"them): {', '.join(blank)}"
        )
    return _csv(lines), warnings


def write_canvas(rows: Sequence[SubmissionRow], path: Path, assignment: str) -> list[str]:
    """Write the Canvas import CSV atomically; the warnings."""
    text, warnings = canvas_csv(rows, assignment)
    write_atomic(Path(path), text)
    return warnings


# ---------------------------------------------------------------- identities


def attach_identities(
    rows: Sequence[SubmissionRow], submissions: Path | None, roster: Path | None = None
) -> tuple[list[SubmissionRow], list[str]]:
    """The rows with who they belong to: Gradescope metadata in the submissions, then the roster (which wins)."""
    found: dict[str, tuple[Identity, ...]] = {}
    warnings: list[str] = []
    if submissions is not None and Path(submissions).is_dir():
        found, warnings = metadata_identities(Path(submissions), [r.name for r in rows])
    by_name = read_roster(roster) if roster is not None else {}
    names = {r.name for r in rows}
    unknown = [n for n in by_name if n not in names]
    if unknown:
        warnings.append(f"{len(unknown)} roster name(s) match no report: {', '.join(unknown[:20])}")
    out = []
    for row in rows:
        people = found.get(row.name, ())
        if row.name in by_name:
            people = tuple(p.merged(by_name[row.name]) for p in people) if len(people) == 1 else (by_name[row.name],)
        out.append(replace(row, identities=people) if people else row)
    return out, warnings


def read_roster(path: Path) -> dict[str, Identity]:
    """The roster CSV: a ``name`` column (the report's NAME) and any of email, sid, full_name, canvas_id,
    login_id, section; ConfigError when it cannot be used."""
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the roster {path}: {getattr(exc, 'strerror', None) or exc}") from None
    reader = csv.DictReader(io.StringIO(text))
    columns = {(c or "").strip().lower().replace(" ", "_"): c for c in reader.fieldnames or []}
    if "name" not in columns:
        raise ConfigError(f"the roster {path} has no 'name' column (columns: {', '.join(ROSTER_COLUMNS)})")
    roster = {}
    for entry in reader:
        values = {k: (entry.get(columns[k]) or "").strip() for k in ROSTER_COLUMNS if k in columns}
        name = values.pop("name", "")
        if name:
            roster[name] = Identity(**values)
    return roster


def metadata_identities(submissions: Path, names: Iterable[str]) -> tuple[dict[str, tuple[Identity, ...]], list[str]]:
    """Who each submission belongs to, from Gradescope metadata: a student's own file, else the export's."""
    from ..grading.batch import discover

    warnings: list[str] = []
    top = submissions / METADATA_NAMES[0]  # a Gradescope export: submission folder -> {":submitters:": [...]}
    export = _load_metadata(top, warnings) if top.is_file() else None
    paths = discover(submissions)
    found = {}
    for name in names:
        tree = _student_metadata(paths[name], warnings) if name in paths else None
        if tree is None and isinstance(export, dict):
            tree = export.get(paths[name].name if name in paths else name)
        people = users_of(tree)
        if people:
            found[name] = people
    return found, warnings


def users_of(tree: Any) -> tuple[Identity, ...]:
    """The people of one submission's metadata: its ``:users:`` (or an export's ``:submitters:``) list."""
    if not isinstance(tree, dict):
        return ()
    plain = {str(k).strip(":"): v for k, v in tree.items()}
    users = plain.get("users") or plain.get("submitters") or []
    people = []
    for user in users if isinstance(users, list) else []:
        if isinstance(user, dict):
            u = {str(k).strip(":"): "" if v is None else str(v).strip() for k, v in user.items()}
            person = Identity(full_name=u.get("name", ""), email=u.get("email", ""), sid=u.get("sid", ""))
            if person != Identity():
                people.append(person)
    return tuple(people)


def _student_metadata(path: Path, warnings: list[str]) -> Any:
    """The parsed metadata inside one submission (folder or zip), or None."""
    if path.is_file() and path.suffix == ".zip":
        try:
            with zipfile.ZipFile(path) as archive:
                entry = next(
                    (
                        i
                        for i in archive.infolist()
                        if Path(i.filename).name in METADATA_NAMES and i.file_size < 1 << 20
                    ),
                    None,
                )
                return (
                    _parse_metadata(archive.read(entry).decode("utf-8", "replace"), entry.filename) if entry else None
                )
        except (OSError, zipfile.BadZipFile, RuntimeError, ValueError, NotImplementedError):
            return None
    if not path.is_dir():
        return None
    for root, dirs, files in os.walk(path):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and not os.path.islink(os.path.join(root, d)))
        if len(Path(root).relative_to(path).parts) >= METADATA_DEPTH:
            dirs[:] = []
        for name in METADATA_NAMES:
            if name in files and not os.path.islink(os.path.join(root, name)):
                return _load_metadata(Path(root) / name, warnings)
    return None


def _load_metadata(path: Path, warnings: list[str]) -> Any:
    try:
        if path.stat().st_size > 16 << 20:
            raise ValueError("larger than 16 MB")
        return _parse_metadata(path.read_text(encoding="utf-8", errors="replace"), path.name)
    except (OSError, ValueError) as exc:
        warnings.append(f"cannot read {path}: {exc}")
        return None


def _parse_metadata(text: str, filename: str) -> Any:
    return json.loads(text) if filename.endswith(".json") else parse_simple_yaml(text)


# ---------------------------------------------------------------- a YAML subset: what Gradescope writes

_Line = tuple[int, str]  # indentation, content
_KEY = re.compile(r"""^(?P<key>"(?:[^"\\]|\\.)*"|'(?:[^']|'')*'|[^\s#'"\[\]{}&*!|>%@`,-][^#]*?)\s*:(?:\s+|$)""")
_QUOTED = {"'": re.compile(r"'((?:[^']|'')*)'"), '"': re.compile(r'"((?:[^"\\]|\\.)*)"')}
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "0": "\0", "e": "\x1b", "_": "\xa0", "N": "\x85"}
_BLOCK_HEADERS = ("|", "|-", "|+", ">", ">-", ">+")


def parse_simple_yaml(text: str) -> Any:
    """Block-style YAML as Ruby's Psych writes Gradescope's metadata: mappings (``:key: value``), sequences
    (indented or not), plain, quoted, ``|``/``>`` and ``!binary`` scalars. Scalars stay strings (or None);
    other tags and anchors are dropped, flow collections kept as text. ValueError when it is not such YAML."""
    lines: list[_Line] = []
    for raw in text.replace("\r\n", "\n").split("\n"):
        stripped = raw.strip()
        if stripped and not stripped.startswith("#") and stripped not in ("---", "..."):
            if "\t" in raw[: len(raw) - len(raw.lstrip())]:
                raise ValueError("a tab in the indentation")
            lines.append((len(raw) - len(raw.lstrip(" ")), raw.strip(" ").rstrip()))
    if not lines:
        return None
    value, end = _block(lines, 0, lines[0][0])
    if end != len(lines):
        raise ValueError(f"unexpected line {lines[end][1][:60]!r}")
    return value


def _is_item(content: str) -> bool:
    return content == "-" or content.startswith("- ")


def _block(lines: list[_Line], i: int, indent: int) -> tuple[Any, int]:
    """The sequence or mapping whose lines start at ``lines[i]``, indented by ``indent``; (value, next line)."""
    if _is_item(lines[i][1]):
        items = []
        while i < len(lines) and lines[i][0] == indent and _is_item(lines[i][1]):
            rest = _untagged(lines[i][1][1:].lstrip(" "))
            if not rest:
                value, i = _nested(lines, i + 1, indent, same=False)
            elif _KEY.match(rest):  # "- :name: x" opens a mapping indented to its first key
                lines[i] = (indent + len(lines[i][1]) - len(rest), rest)
                value, i = _block(lines, i, lines[i][0])
            else:
                value, i = _scalar(lines, i, indent, rest)
            items.append(value)
        return items, i
    mapping: dict[str, Any] = {}
    while i < len(lines) and lines[i][0] == indent and (match := _KEY.match(lines[i][1])):
        key = match.group("key")
        key = (_quoted(key) or key) if key[:1] in "'\"" else key
        rest = _untagged(lines[i][1][match.end() :].strip())
        if rest in _BLOCK_HEADERS or rest.startswith("!binary"):
            mapping[key], i = _block_scalar(lines, i, indent, rest)
        elif not rest:
            mapping[key], i = _nested(lines, i + 1, indent, same=True)
        else:
            mapping[key], i = _scalar(lines, i, indent, rest)
    if i < len(lines) and lines[i][0] > indent:
        raise ValueError(f"bad indentation at {lines[i][1][:60]!r}")
    return mapping, i


def _untagged(rest: str) -> str:
    """A value without a leading anchor or tag (``!binary`` kept: it changes the value)."""
    while rest[:1] in ("&", "!") and not rest.startswith("!binary"):
        rest = rest.split(None, 1)[1] if " " in rest else ""
    return rest


def _nested(lines: list[_Line], i: int, indent: int, same: bool) -> tuple[Any, int]:
    """The value on the lines after a bare ``key:`` or ``-`` (a key's sequence may sit at the key's indentation)."""
    if i < len(lines) and (lines[i][0] > indent or (same and lines[i][0] == indent and _is_item(lines[i][1]))):
        return _block(lines, i, lines[i][0])
    return None, i


def _scalar(lines: list[_Line], i: int, indent: int, rest: str) -> tuple[Any, int]:
    """A scalar starting with ``rest`` on line ``i``, folded over deeper continuation lines."""
    i += 1
    while i < len(lines) and lines[i][0] > indent and (rest[:1] not in "'\"" or _quoted(rest) is None):
        rest = f"{rest} {lines[i][1]}"
        i += 1
    if rest[:1] in "'\"":
        value = _quoted(rest)
        if value is None:
            raise ValueError(f"unclosed quote in {rest[:60]!r}")
        return value, i
    if rest.startswith("*"):
        return None, i  # an alias: not in Gradescope's metadata, and nothing this module needs
    rest = re.sub(r"\s+#.*$", "", rest)
    if rest in ("[]", "{}"):
        return ([] if rest == "[]" else {}), i
    return (None if rest in ("~", "null", "Null", "NULL") else rest), i


def _quoted(text: str) -> str | None:
    """The value of a quoted scalar (a trailing comment allowed), None while its closing quote is missing."""
    match = _QUOTED[text[0]].match(text)
    if match is None or text[match.end() :].strip()[:1] not in ("", "#"):
        return None
    if text[0] == "'":
        return match.group(1).replace("''", "'")
    body = re.sub(r"\\\s+", "", match.group(1))  # an escaped line break joins without a space

    def one(m: re.Match[str]) -> str:
        code = m.group(1)
        return chr(int(code[1:], 16)) if code[0] in "xuU" and len(code) > 1 else _ESCAPES.get(code, code)

    return re.sub(r"\\(x[0-9A-Fa-f]{2}|u[0-9A-Fa-f]{4}|U[0-9A-Fa-f]{8}|.)", one, body)


def _block_scalar(lines: list[_Line], i: int, indent: int, header: str) -> tuple[str, int]:
    """A ``|`` or ``>`` block (``!binary`` ones are base64 of UTF-8 text)."""
    body = []
    i += 1
    while i < len(lines) and lines[i][0] > indent:
        body.append(lines[i][1])
        i += 1
    if header.startswith("!binary"):
        try:
            return base64.b64decode("".join(body) or header.split()[-1], validate=False).decode("utf-8", "replace"), i
        except ValueError as exc:
            raise ValueError(f"bad !binary value: {exc}") from None
    text = ("\n" if header.startswith("|") else " ").join(body)
    return text if header.endswith("-") or not body else text + "\n", i
