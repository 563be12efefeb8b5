"""The class summary: reports read into rows, statistics, gradebook and Canvas CSV, the pages, `grade summary`,
and the page's sort, filter and drill-down links clicked in a real headless Chromium.

The reports are built in code (``Report``/``TierResult``) and written with ``write_report``: the
same JSON the grader writes, without running it.
"""

from __future__ import annotations

import csv
import html
import io
import json
import os
import re
import select
import shutil
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from grader.cli import main
from grader.errors import ConfigError
from grader.outputs import summary
from grader.outputs.gradebook import (
    CANVAS_COLUMNS,
    canvas_csv,
    excel_safe,
    gradebook_header,
    parse_simple_yaml,
    read_roster,
)
from grader.outputs.report import Report, TierResult, write_report
from grader.outputs.summary import (
    GRADER_ERROR,
    build_class_summary,
    class_result,
    load_class,
    load_rows,
)
from grader.outputs.summary_html import page_names
from grader.outputs.summary_stats import class_stats, slowest, who_made

TIERS = (
    ("mapping", "Weight mapping (get_weight_mapping)", 15.0),
    ("shapes", "Loaded weights", 20.0),
    ("embedding", "Embeddings", 10.0),
    ("logits", "Full forward pass", 35.0),
    ("compare", "compare_outputs", 10.0),
    ("intermediate", "compare_intermediate_outputs", 5.0),
    ("weights", "analyze_weight_differences", 5.0),
    ("generate", "generate_text (bonus)", 0.0),
)
SHA = "0123456789abcdef" * 4
MODELS = {
    "primary": {"name": "tiny", "source": "built-in synthetic checkpoint 'tiny'", "sha256": SHA, "n_layer": 2},
    "second": {"name": "wide", "source": "built-in synthetic checkpoint 'wide'", "sha256": "f" * 64, "n_layer": 3},
}
TRANSPOSED = ("transposed:attn.c_proj", "attn.c_proj loaded transposed")
ODD = "Zoë & <b>#1? 'x'"  # a report file name with HTML, quotes, a hash, a question mark and non-ASCII
XSS = "<script>alert(1)</script>"


def report(
    statuses: dict[str, str] | None = None,
    details: dict[str, str] | None = None,
    mistakes: dict[str, list[tuple[str, str]]] | None = None,
    seconds: float = 10.0,
    peak: float = 512.0,
    **extra: Any,
) -> Report:
    """A report: every tier passed with full points unless ``statuses`` says otherwise."""
    statuses, details, mistakes = statuses or {}, details or {}, mistakes or {}
    tiers = []
    for name, title, points in TIERS:
        status = statuses.get(name, "passed")
        tiers.append(
            TierResult(
                name,
                title,
                status,
                points if status == "passed" else 0.0,
                points,
                details.get(name, f"{name}: {status}"),
                0.5,
                mistakes=mistakes.get(name, []),
            )
        )
    options = {
        "decoder": "reference",
        "models": MODELS,
        "tolerances": {"logits": "1e-5"},
        "limits": {},
        "submission": {
            "path": "/subs/x",
            "kind": "folder",
            "module": "pretrained.py",
            "files": ["pretrained.py"],
            "notes": [],
            "problem": None,
        },
        "versions": {"grader": "0.1.0", "python": "3.11.7"},
        "execution_time": seconds,
        "resources": {"grader_peak_rss_mb": 9999.0, "torch_peak_rss_mb": peak, "numpy_peak_rss_mb": peak / 2},
    }
    options.update(extra)
    return Report(tiers=tiers, **options)


def scored(points: float, **kw: Any) -> Report:
    """A report scoring ``points`` out of 100: logits (35), then other tiers, failed until it does."""
    failing, left = {}, 100.0 - points
    for name in ("logits", "shapes", "mapping", "embedding", "compare", "intermediate", "weights"):
        value = dict((n, p) for n, _, p in TIERS)[name]
        if left >= value:
            failing[name], left = "failed", left - value
    assert left == 0, f"{points} is not a sum of tier points"
    return report(failing, **kw)


def write_class(folder: Path, reports: dict[str, Report]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, r in reports.items():
        write_report(r, folder / f"{name}.json")
    return folder


def submissions_for(folder: Path, names: list[str], reports: Path | None = None) -> Path:
    """A submissions folder (one sub-folder with pretrained.py per name); the batch state points at it."""
    for name in names:
        (folder / name).mkdir(parents=True, exist_ok=True)
        (folder / name / "pretrained.py").write_text("def load_gpt2_weights(model, name): ...\n")
    if reports is not None:
        state = {"submissions": str(folder.resolve()), "settings": {}, "students": {}}
        (reports / ".batch-state.json").write_text(json.dumps(state))
    return folder


def read_csv(path: Path) -> list[list[str]]:
    return list(csv.reader(io.StringIO(path.read_bytes().decode("utf-8"), newline="")))


def dict_rows(path: Path) -> dict[str, dict[str, str]]:
    return {r["name"]: r for r in csv.DictReader(io.StringIO(path.read_bytes().decode("utf-8"), newline=""))}


def section(page: str, ident: str) -> str:
    found = re.search(rf'<section id="{ident}"[^>]*>(.*?)</section>', page, re.S)
    assert found, f"no section {ident!r}"
    return found.group(1)


def text_of(fragment: str) -> str:
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", fragment)).split())


def table_names(page: str) -> list[str]:
    return [html.unescape(n) for n in re.findall(r'<td class="name" data-v="([^"]*)"', section(page, "students"))]


# ---------------------------------------------------------------- reading the reports


def test_a_report_of_the_new_schema_becomes_a_full_row(tmp_path: Path) -> None:
    """Tiers with titles and details, models, submission, start-here, notes, output, peak memory, version."""
    r = report(
        {"logits": "failed"},
        details={"logits": "max |diff| 3.2\n- at position 4"},
        mistakes={"logits": [TRANSPOSED]},
        start_here="Fix attn.c_proj first.",
        notes=["a note"],
        student_stdout="hello",
        student_stderr="warn",
        seconds=12.25,
        peak=700.0,
    )
    [row] = load_rows(write_class(tmp_path / "reports", {"alice": r}))
    assert (row.name, row.status, row.score, row.max_score) == ("alice", "graded", 65.0, 100.0)
    logits = row.tier("logits")
    assert logits and (logits.title, logits.status, logits.detail) == (
        "Full forward pass",
        "failed",
        "max |diff| 3.2\n- at position 4",
    )
    assert [t.name for t in row.tiers] == [t[0] for t in TIERS]
    assert [(m.key, m.tier) for m in row.diagnosis] == [(TRANSPOSED[0], "logits")]
    assert row.start_here == "Fix attn.c_proj first." and row.notes == ("a note",)
    assert (row.stdout, row.stderr, row.seconds, row.peak_memory_mb) == ("hello", "warn", 12.25, 700.0)
    assert row.models["primary"]["sha256"] == SHA and row.grader_version == "0.1.0"
    assert row.submission["kind"] == "folder" and row.error == ""


def test_a_schema_1_report_still_names_its_checkpoint(tmp_path: Path) -> None:
    folder = write_class(tmp_path / "reports", {"old": report()})
    data = json.loads((folder / "old.json").read_text())
    data["extra_data"]["model"] = {"source": "built-in synthetic checkpoint 'tiny' (seed 4)", "sha256": "ab" * 32}
    del data["extra_data"]["models"]
    (folder / "old.json").write_text(json.dumps(data))
    page = build_class_summary(folder)[1].read_text()
    assert (
        'primary: built-in synthetic checkpoint &#x27;tiny&#x27; (seed 4) <span class="muted small">sha256 abababababab'
        in page
    )


def test_unreadable_reports_are_grader_failures_and_other_json_is_skipped(tmp_path: Path) -> None:
    folder = write_class(tmp_path / "reports", {"good": report()})
    (folder / "broken.json").write_text("{not json")
    (folder / "latin1.json").write_bytes(b'{"score": "\xff"}')
    (folder / "nan.json").write_text('{"score": NaN, "extra_data": {}}')
    (folder / "list.json").write_text("[1, 2]")  # JSON, but not a report: skipped
    (folder / ".batch-state.json").write_text('{"tests": []}')  # hidden: skipped
    rows = {r.name: r for r in load_rows(folder)}
    assert sorted(rows) == ["broken", "good", "latin1", "nan"]
    for name in ("broken", "latin1", "nan"):
        assert rows[name].status == GRADER_ERROR and rows[name].error.startswith("grader failure: ")
        assert [m.key for m in rows[name].failures] == ["grader failure"]
    assert rows["good"].status == "graded"


def test_a_mistake_counts_once_per_student_and_names_who_made_it(tmp_path: Path) -> None:
    folder = write_class(
        tmp_path / "reports",
        {
            "alice": report({"shapes": "failed"}, mistakes={"shapes": [TRANSPOSED]}),
            "bob": report({"shapes": "failed"}, mistakes={"shapes": [TRANSPOSED]}),
            "carol": report(),
        },
    )
    alice = json.loads((folder / "alice.json").read_text())
    alice["extra_data"]["diagnosis"] *= 2  # the same root cause listed twice (two layers, one key)
    (folder / "alice.json").write_text(json.dumps(alice))
    found = who_made(load_rows(folder))
    assert [(m.key, names) for m, names in found] == [(TRANSPOSED[0], ["alice", "bob"])]
    page = (build_class_summary(folder)[1]).read_text()
    mistakes = text_of(section(page, "mistakes"))
    assert "67% attn.c_proj loaded transposed (2 of 3 · shapes" in mistakes
    assert 'href="students/alice.html"' in section(page, "mistakes")


def test_every_failure_kind_is_counted(tmp_path: Path) -> None:
    """Tier statuses, stubs, syntax errors, time-outs, missing functions, an unusable submission, grader failures."""
    folder = write_class(
        tmp_path / "reports",
        {
            "stub": report(
                {"mapping": "failed", "shapes": "error"},
                details={
                    "mapping": "get_weight_mapping raised NotImplementedError",
                    "shapes": "raised NotImplementedError",
                },
            ),
            "syntax": report(
                {"mapping": "error"}, details={"mapping": "SyntaxError: invalid syntax (pretrained.py, line 3)"}
            ),
            "slow": report({"logits": "timeout", "compare": "skipped"}, details={"logits": "took longer than 60 s"}),
            "missing": report(
                {"weights": "failed"},
                details={"weights": "pretrained.py does not define a function named analyze_weight_differences."},
            ),
            "crashed": report(internal_errors=["Traceback (most recent call last):\n  ...\nRuntimeError: boom"]),
            "failed": report(submission={"path": "x", "problem": "grader failure"}),
            "unusable": report({"mapping": "skipped"}, submission={"path": "x", "problem": "no pretrained.py found"}),
        },
    )
    rows = {r.name: r for r in load_rows(folder)}
    keys = {name: [m.key for m in row.failures] for name, row in rows.items()}
    assert set(keys["stub"]) == {"stub", "shapes: error"}
    assert set(keys["syntax"]) == {"mapping: error", "syntax error"}
    assert set(keys["slow"]) == {"logits: timeout", "time-out", "compare: skipped"}
    assert keys["missing"] == ["missing function: analyze_weight_differences"]
    assert keys["crashed"] == keys["failed"] == ["grader failure"]
    assert set(keys["unusable"]) == {"submission problem", "mapping: skipped"}
    assert rows["crashed"].status == rows["failed"].status == GRADER_ERROR
    counts = {m.key: names for m, names in who_made(list(rows.values()), "failures")}
    assert counts["grader failure"] == ["crashed", "failed"] and counts["stub"] == ["stub"]
    page = build_class_summary(folder)[1].read_text()
    assert "29% grader failure" in text_of(section(page, "failures"))  # 2 of 7


def test_the_error_column_says_grader_failure_then_problem_then_first_error_line(tmp_path: Path) -> None:
    folder = write_class(
        tmp_path / "reports",
        {
            "crashed": report(internal_errors=["Traceback (most recent call last):\n  File x\nRuntimeError: boom\n"]),
            "unusable": report(submission={"path": "x", "problem": "no pretrained.py found"}),
            "slow": report(
                {"shapes": "failed", "logits": "timeout"}, details={"logits": "\ntook longer than 60 s\nmore"}
            ),
            "fine": report(),
        },
    )
    errors = {r.name: r.error for r in load_rows(folder)}
    assert errors == {
        "crashed": "grader failure: RuntimeError: boom",
        "unusable": "no pretrained.py found",
        "slow": "logits timeout: took longer than 60 s",
        "fine": "",
    }


def test_slowest_ranks_by_execution_time_not_file_order(tmp_path: Path) -> None:
    folder = write_class(
        tmp_path / "reports",
        {"a": report(seconds=5), "b": report(seconds=50), "c": report(seconds=20), "d": report(seconds=0.5)},
    )
    assert [r.name for r in slowest(load_rows(folder), top=3)] == ["b", "c", "a"]
    page = build_class_summary(folder)[1].read_text()
    assert re.findall(r"students/(\w)\.html", section(page, "slowest")) == ["b", "c", "a", "d"]


def test_stale_reports_are_flagged_and_left_out_of_statistics_and_gradebook(tmp_path: Path) -> None:
    reports = write_class(tmp_path / "reports", {"alice": scored(100), "bob": scored(65), "carol": scored(0)})
    subs = submissions_for(tmp_path / "subs", ["alice", "bob"], reports)  # carol's submission is gone
    data = load_class(reports)
    assert [r.name for r in data.rows if r.stale] == ["carol"] and data.submissions == subs.resolve()
    stats = class_stats(data.rows)
    assert (stats.submissions, stats.stale, stats.mean, stats.full_marks) == (2, 1, 82.5, 1)
    gradebook_path, page_path = build_class_summary(reports)
    assert sorted(dict_rows(gradebook_path)) == ["alice", "bob"]
    page = page_path.read_text()
    assert table_names(page) == ["alice", "bob"]
    assert 'href="students/carol.html"' in section(page, "stale") and "carol" not in section(page, "mistakes")
    assert (reports / "students" / "carol.html").is_file()
    assert class_result(data.rows) == (
        "2 submissions, mean 82.5/100, median 82.5/100, 1 full marks, 0 grader errors, 1 stale report left out"
    )
    only_alice = submissions_for(tmp_path / "other", ["alice"])  # the second argument overrides the batch's
    assert [r.name for r in load_rows(reports, only_alice) if r.stale] == ["bob", "carol"]
    shutil.rmtree(subs)  # the folder itself is gone (reports copied elsewhere): flag nobody, say why
    data = load_class(reports)
    assert not any(r.stale for r in data.rows) and "does not exist" in data.warnings[0]


def test_class_result_is_one_line() -> None:
    assert class_result([]) == "No reports found."


# ---------------------------------------------------------------- the gradebook and identities


def test_the_gradebook_has_one_row_per_student_with_every_column(tmp_path: Path) -> None:
    folder = write_class(
        tmp_path / "reports",
        {
            "alice": report(),
            "bob": report(
                {"logits": "timeout", "shapes": "failed"},
                details={"logits": "took longer than 60 s"},
                mistakes={"shapes": [TRANSPOSED, ("erf_gelu", "exact-erf GELU")]},
                start_here="Fix it.",
                seconds=31.5,
                peak=1234.5,
            ),
        },
    )
    path, _ = build_class_summary(folder)
    rows = read_csv(path)
    tiers = [t[0] for t in TIERS]
    assert (
        rows[0]
        == gradebook_header(tiers)
        == [
            "name",
            "full_name",
            "email",
            "sid",
            "score",
            "max_score",
            *[f"{t}_{w}" for t in tiers for w in ("status", "points")],
            "diagnosis",
            "start_here",
            "error",
            "execution_time",
            "peak_memory_mb",
        ]
    )
    bob = dict_rows(path)["bob"]
    assert (bob["score"], bob["max_score"], bob["shapes_status"], bob["shapes_points"]) == ("45", "100", "failed", "0")
    assert bob["diagnosis"] == f"{TRANSPOSED[0]};erf_gelu" and bob["start_here"] == "Fix it."
    assert bob["error"] == "logits timeout: took longer than 60 s"
    assert (bob["execution_time"], bob["peak_memory_mb"]) == ("31.5", "1234.5")
    assert dict_rows(path)["alice"]["logits_points"] == "35" and len(rows) == 3


def test_the_gradebook_neutralises_formulas_and_is_utf8(tmp_path: Path) -> None:
    name = '=1+2 "x"'
    folder = write_class(tmp_path / "reports", {name: report(start_here="+1+1"), "Zoë": report(start_here="@SUM")})
    rows = dict_rows(build_class_summary(folder)[0])
    assert set(rows) == {"'" + name, "Zoë"}
    assert rows["'" + name]["start_here"] == "'+1+1" and rows["Zoë"]["start_here"] == "'@SUM"
    assert [excel_safe(s) for s in ("-2", "\tx", "\rx", "ok", "a=b", "")] == ["'-2", "'\tx", "'\rx", "ok", "a=b", ""]


METADATA = """---
:submitted_at: 2024-03-01 17:12:15.311092000 -08:00
:assignment:
  :title: Lab 04
  :total_points: '100.0'
:users:
- :email: alice@example.edu
  :id: 22
  :name: Alice Liddell
  :sid: '000123'
:id: 123456
"""
EXPORT = """submission_111:
  :submitters:
  - :name: "Bob \\"Bobby\\" Tables"
    :sid: '456'
    :email: bob@example.edu
  :created_at: 2024-03-01 10:00:00.000000000 +00:00
  :score: 90.0
submission_222:
  :submitters:
    - :name: 'Carol O''Neil'
      :sid: '789'
      :email: carol@example.edu  # comments are dropped
    - :name: Dan
        Long-Name
      :sid: "=1+1"
      :email:
"""


def test_identities_come_from_gradescope_metadata(tmp_path: Path) -> None:
    """A student folder's submission_metadata.yml, a zip's, and the one at the top of a Gradescope export."""
    names = ["alice", "submission_111", "submission_222", "zipped"]
    reports = write_class(tmp_path / "reports", {n: report() for n in names})
    subs = submissions_for(tmp_path / "subs", names[:3], reports)
    (subs / "alice" / "submission_metadata.yml").write_text(METADATA)
    (subs / "submission_metadata.yml").write_text(EXPORT)
    with zipfile.ZipFile(subs / "zipped.zip", "w") as z:
        z.writestr("zipped/pretrained.py", "x = 1\n")
        z.writestr("zipped/submission_metadata.yml", METADATA.replace("Alice Liddell", "Zed Zip"))
    rows = dict_rows(build_class_summary(reports)[0])
    assert (rows["alice"]["full_name"], rows["alice"]["email"], rows["alice"]["sid"]) == (
        "Alice Liddell",
        "alice@example.edu",
        "000123",
    )
    assert rows["submission_111"]["full_name"] == 'Bob "Bobby" Tables' and rows["submission_111"]["sid"] == "456"
    assert rows["submission_222"]["full_name"] == "Carol O'Neil; Dan Long-Name"  # a group: both members
    assert rows["submission_222"]["sid"] == "789; =1+1" and rows["submission_222"]["email"] == "carol@example.edu"
    assert rows["zipped"]["full_name"] == "Zed Zip"


def test_the_yaml_subset_reads_what_pyyaml_reads() -> None:
    yaml = pytest.importorskip("yaml")

    def plain(value: Any) -> Any:  # PyYAML types scalars; this parser keeps text
        if isinstance(value, dict):
            return {str(k): plain(v) for k, v in value.items() if "_at" not in str(k)}
        if isinstance(value, list):
            return [plain(v) for v in value]
        return None if value is None else str(value)

    for text in (METADATA, EXPORT, "a:\n  b: |\n    line one\n    line two\n  c: []\n"):
        assert plain(parse_simple_yaml(text)) == plain(yaml.safe_load(text))
    with pytest.raises(ValueError):
        parse_simple_yaml("a:\n\tb: 1\n")
    with pytest.raises(ValueError):
        parse_simple_yaml("a: 'unclosed\n")


def test_the_roster_wins_and_its_columns_are_documented(tmp_path: Path) -> None:
    reports = write_class(tmp_path / "reports", {"alice": report(), "bob": report()})
    subs = submissions_for(tmp_path / "subs", ["alice", "bob"], reports)
    (subs / "alice" / "submission_metadata.yml").write_text(METADATA)
    roster = tmp_path / "roster.csv"
    roster.write_text(
        "\ufeffName,Email,SID,Full Name,Section\nalice,a@new.edu,,,S1\nbob,,999,Bob B,\nnobody,,,,\n", encoding="utf-8"
    )
    data = load_class(reports, roster=roster)
    rows = dict_rows(build_class_summary(reports, roster=roster)[0])
    assert (rows["alice"]["email"], rows["alice"]["sid"], rows["alice"]["full_name"]) == (
        "a@new.edu",
        "000123",
        "Alice Liddell",
    )
    assert (rows["bob"]["sid"], rows["bob"]["full_name"]) == ("999", "Bob B")
    assert any("nobody" in w for w in data.warnings)
    assert read_roster(roster)["alice"].section == "S1"
    bad = tmp_path / "bad.csv"
    bad.write_text("student,email\nalice,a@x\n")
    with pytest.raises(ConfigError, match="no 'name' column"):
        read_roster(bad)


def test_the_canvas_csv_follows_canvas_import_format(tmp_path: Path) -> None:
    """Canvas's documented columns: Student, ID, SIS User ID, SIS Login ID, Section, then the assignment; the
    "Points Possible" row of its exports; one row per person; unmatched people and blank scores warned about."""
    reports = write_class(
        tmp_path / "reports",
        {"alice": scored(65), "bob": scored(100), "ghost": scored(0), "crashed": report(internal_errors=["boom"])},
    )
    roster = tmp_path / "roster.csv"
    roster.write_text(
        'name,email,sid,full_name,canvas_id,section\nalice,alice@x.edu,A1,"Liddell, Alice",,S1\n'
        "bob,,B2,Bob,5501,\ncrashed,c@x.edu,,,,\n"
    )
    data = load_class(reports, roster=roster)
    text, warnings = canvas_csv(data.rows, "Lab 04 (1234)")
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0] == ["Student", "ID", "SIS User ID", "SIS Login ID", "Section", "Lab 04 (1234)"]
    assert tuple(rows[0][:5]) == CANVAS_COLUMNS
    assert rows[1] == ["    Points Possible", "", "", "", "", "100"]
    assert rows[2:] == [
        ["Liddell, Alice", "", "A1", "alice@x.edu", "S1", "65"],
        ["Bob", "5501", "B2", "", "", "100"],
        ["crashed", "", "", "c@x.edu", "", ""],
        ["ghost", "", "", "", "", "0"],
    ]
    assert len(warnings) == 2 and "cannot match" in warnings[0] and warnings[0].endswith(": ghost")
    assert warnings[1].endswith(": crashed")


# ---------------------------------------------------------------- the pages


def odd_class(tmp_path: Path) -> Path:
    """A class with a hostile student: HTML in the file name, feedback and output."""
    return write_class(
        tmp_path / "reports",
        {
            "alice": scored(100, seconds=3.0),
            ODD: report(
                {"logits": "failed"},
                details={"logits": f"{XSS}\nline two\n  indented"},
                seconds=40.0,
                mistakes={"logits": [(TRANSPOSED[0], f"label {XSS}")]},
                start_here=f"start {XSS}",
                student_stdout=f"out {XSS}",
                student_stderr="err </pre></section>",
                notes=[f"note {XSS}"],
                submission={
                    "path": "/s",
                    "kind": "notebook",
                    "module": "lab.ipynb",
                    "files": [f"{XSS}.py"],
                    "notes": ["converted"],
                    "problem": None,
                },
            ),
            "bob": scored(9.0 + 1.0, seconds=12.0),
        },
    )


def test_every_student_controlled_string_is_escaped(tmp_path: Path) -> None:
    folder = odd_class(tmp_path)
    page = build_class_summary(folder)[1].read_text()
    student = (folder / "students" / page_names(load_rows(folder))[ODD]).read_text()
    for text in (page, student):
        assert "<script>alert" not in text and "<b>#1" not in text
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text and "Zoë &amp; &lt;b&gt;#1? &#x27;x&#x27;" in text
    assert text_of(student).count("</pre></section>") == 1  # the student's stderr, shown, not obeyed
    assert ODD in table_names(page)


def test_student_pages_hold_the_full_feedback_and_link_back(tmp_path: Path) -> None:
    folder = odd_class(tmp_path)
    build_class_summary(folder)
    pages = page_names(load_rows(folder))
    student = (folder / "students" / pages[ODD]).read_text()
    seen = text_of(student)
    for expected in (
        f"start {XSS}",
        f"note {XSS}",
        "converted",
        "notebook",
        "lab.ipynb",
        f"{XSS}.py",
        f"label {XSS}",
        TRANSPOSED[0],
        f"out {XSS}",
        "65 / 100 points",
        "Full forward pass",
        "mapping: passed",
        "40.0 s",
    ):
        assert expected in seen, expected
    assert html.escape(f"{XSS}\nline two\n  indented") in student  # the whole detail, its lines kept
    for name, _, points in TIERS:
        assert re.search(rf'<tr id="tier-{name}">.*?/{points:g}</td>', student), name
    assert '<a id="back" href="../summary.html">' in student
    crashed = write_class(tmp_path / "r2", {"crashed": report(internal_errors=["Traceback\nRuntimeError: boom"])})
    build_class_summary(crashed)
    staff = section((crashed / "students" / "crashed.html").read_text(), "staff")
    assert "Internal errors" in staff and "RuntimeError: boom" in staff


def test_page_names_are_safe_distinct_files() -> None:
    names = ["alice", "Alice", "bob.smith-2", ODD, "../etc", "a b", "a_b"]
    rows = [summary.SubmissionRow(n, "graded") for n in names]
    pages = page_names(rows)
    assert pages["bob.smith-2"] == "bob.smith-2.html" and pages["a_b"] == "a_b.html"
    assert len({p.casefold() for p in pages.values()}) == len(names)
    assert all(re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*\.html", p) for p in pages.values())


def test_the_header_names_date_checkpoints_version_and_points(tmp_path: Path) -> None:
    folder = write_class(tmp_path / "reports", {"alice": report(), "bob": report()})
    page = build_class_summary(folder)[1].read_text()
    about = text_of(re.search(r'<header class="about" id="about">(.*?)</header>', page, re.S).group(1))
    assert re.search(r"Generated \d{4}-\d\d-\d\d \d\d:\d\d", about)
    assert f"primary: tiny sha256 {SHA[:12]}" in about and "second: wide sha256 ffffffffffff" in about
    assert "Grader version 0.1.0" in about
    assert (
        "mapping 15 · shapes 20 · embedding 10 · logits 35 · compare 10 · intermediate 5 · weights 5 · "
        "generate 0 · total 100"
    ) in about


def test_pages_of_reports_that_are_gone_are_removed(tmp_path: Path) -> None:
    folder = write_class(tmp_path / "reports", {"alice": report(), "bob": report()})
    build_class_summary(folder)
    (folder / "bob.json").unlink()
    (folder / "students" / "notes.txt").write_text("kept")
    build_class_summary(folder)
    assert sorted(p.name for p in (folder / "students").iterdir()) == ["alice.html", "notes.txt"]


# ---------------------------------------------------------------- grade summary


def test_grade_summary_with_roster_and_canvas(tmp_path: Path) -> None:
    reports = write_class(tmp_path / "reports", {"alice": scored(65), "bob": scored(100)})
    roster = tmp_path / "roster.csv"
    roster.write_text("name,email\nalice,alice@x.edu\n")
    canvas = tmp_path / "canvas.csv"
    result = CliRunner().invoke(
        main, ["summary", str(reports), "--roster", str(roster), "--canvas", str(canvas), "--assignment", "Lab 04"]
    )
    assert result.exit_code == 0, result.output
    assert str(reports / "gradebook.csv") in result.stdout and str(canvas) in result.stdout
    assert "2 submissions, mean 82.5/100" in result.stdout
    assert "warning: 1 Canvas row(s)" in result.stderr and result.stderr.rstrip().endswith(": bob")
    assert (
        read_csv(canvas)[0][-1] == "Lab 04" and dict_rows(reports / "gradebook.csv")["alice"]["email"] == "alice@x.edu"
    )


def test_grade_summary_usage_errors(tmp_path: Path) -> None:
    reports = write_class(tmp_path / "reports", {"alice": report()})
    bad_roster = tmp_path / "roster.csv"
    bad_roster.write_text("who,email\n")
    cases = [
        (["summary", str(tmp_path / "missing")], "is not a folder"),
        (["summary", str(reports), "--canvas", str(tmp_path / "c.csv")], "--canvas needs --assignment"),
        (["summary", str(reports), "--roster", str(bad_roster)], "no 'name' column"),
        (["summary", str(reports), "--submissions", str(tmp_path / "nope")], "is not a folder"),
    ]
    for args, message in cases:
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 2, (args, result.output)
        assert message in result.output


def test_grade_summary_rebuilds_an_empty_folder(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["summary", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "No reports found." in result.stdout and "No current reports" in (tmp_path / "summary.html").read_text()


# ---------------------------------------------------------------- a real browser

FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
    "--window-size=1400,1000",
)


# Chromium reads the protocol from fd 3 and writes to fd 4: put the pipes there, then become the browser.
LAUNCH = """import fcntl, os, sys
high = [fcntl.fcntl(int(fd), fcntl.F_DUPFD, 10) for fd in sys.argv[1:3]]
for fd in sys.argv[1:3]:
    os.close(int(fd))
for fd, target in zip(high, (3, 4)):
    os.dup2(fd, target)
    os.close(fd)
os.execv(sys.argv[3], sys.argv[3:])
"""


def chromium_binary() -> str:
    """The browser; a skip (or, with LAB04_REQUIRE_BROWSER=1 as in CI, a failure) when there is none."""
    found = os.environ.get("LAB04_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    message = "chromium is not installed (apt-get install -y chromium)"
    if os.environ.get("LAB04_REQUIRE_BROWSER") == "1":
        pytest.fail(f"{message}, and LAB04_REQUIRE_BROWSER=1 requires it")
    pytest.skip(f"{message}; LAB04_REQUIRE_BROWSER=1 makes this a failure")


class Chromium:
    """Headless Chromium driven over the DevTools protocol on a pipe (its fds 3 and 4, JSON messages ending in NUL)."""

    def __init__(self, binary: str, profile: Path):
        to_browser, self._write = os.pipe()
        self._read, from_browser = os.pipe()
        self.log = (profile.parent / "chromium.log").open("wb")
        command = [
            sys.executable,
            "-c",
            LAUNCH,
            str(to_browser),
            str(from_browser),
            binary,
            *FLAGS,
            f"--user-data-dir={profile}",
            "--remote-debugging-pipe",
            "about:blank",
        ]
        self.proc = subprocess.Popen(
            command, pass_fds=(to_browser, from_browser), stdout=self.log, stderr=self.log, start_new_session=True
        )
        os.close(to_browser)
        os.close(from_browser)
        self._buffer, self._id, self.events = b"", 0, []

    def _message(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            if not select.select([self._read], [], [], max(0.0, deadline - time.monotonic()))[0]:
                raise TimeoutError("chromium did not answer")
            chunk = os.read(self._read, 1 << 20)
            if not chunk:
                raise RuntimeError(f"chromium exited ({self.proc.poll()}); see {self.log.name}")
            self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(raw)

    def send(self, method: str, params: dict | None = None, session: str | None = None) -> dict[str, Any]:
        self._id += 1
        message = {
            "id": self._id,
            "method": method,
            "params": params or {},
            **({"sessionId": session} if session else {}),
        }
        os.write(self._write, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + 30
        while True:
            reply = self._message(deadline)
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_for(self, method: str, session: str, timeout: float = 30) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            for i, event in enumerate(self.events):
                if event.get("method") == method and event.get("sessionId") == session:
                    return self.events.pop(i)
            self.events.append(self._message(deadline))

    def close(self) -> None:
        try:
            self.send("Browser.close")
            self.proc.wait(timeout=10)
        except (RuntimeError, TimeoutError, OSError, subprocess.TimeoutExpired):
            os.killpg(self.proc.pid, 9)  # the process group this test started
            self.proc.wait(timeout=10)
        finally:
            os.close(self._write)
            os.close(self._read)
            self.log.close()


class Tab:
    """One page: navigation, script, and real input events (mouse clicks at an element's centre, key presses)."""

    def __init__(self, browser: Chromium, url: str):
        self.browser = browser
        target = browser.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = browser.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime"):
            self.send(f"{domain}.enable")
        self.expect_load(lambda: self.send("Page.navigate", {"url": url}))

    def send(self, method: str, params: dict | None = None) -> dict[str, Any]:
        return self.browser.send(method, params, self.session)

    def expect_load(self, action: Any) -> None:
        """Run ``action`` and wait for the page it leads to."""
        self.browser.events = [e for e in self.browser.events if e.get("method") != "Page.loadEventFired"]
        action()
        self.browser.wait_for("Page.loadEventFired", self.session)

    def js(self, expression: str) -> Any:
        reply = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True})
        assert "exceptionDetails" not in reply, reply["exceptionDetails"]
        return reply["result"].get("value")

    def click(self, selector: str) -> None:
        """A left click where the element is on screen (it must be the element there: nothing covers it)."""
        x, y, hit = self.js(f"""(() => {{ const e = document.querySelector({json.dumps(selector)});
            e.scrollIntoView({{block: "center"}}); const r = e.getClientRects()[0];  // a wrapped link: its first line
            const x = r.left + r.width / 2, y = r.top + r.height / 2, at = document.elementFromPoint(x, y);
            return [x, y, e === at || e.contains(at) || (at ? at.outerHTML.slice(0, 200) : "nothing")]; }})()""")
        assert hit is True, f"{selector} is covered by {hit}"
        self.send("Input.dispatchMouseEvent", {"type": "mouseMoved", "x": x, "y": y})
        for kind in ("mousePressed", "mouseReleased"):
            self.send("Input.dispatchMouseEvent", {"type": kind, "x": x, "y": y, "button": "left", "clickCount": 1})

    def type(self, text: str) -> None:
        for char in text:
            self.send("Input.dispatchKeyEvent", {"type": "keyDown", "key": char, "text": char})
            self.send("Input.dispatchKeyEvent", {"type": "keyUp", "key": char})

    def erase(self, count: int) -> None:
        for _ in range(count):
            for kind in ("rawKeyDown", "keyUp"):
                self.send(
                    "Input.dispatchKeyEvent",
                    {"type": kind, "key": "Backspace", "code": "Backspace", "windowsVirtualKeyCode": 8},
                )

    def visible_names(self) -> list[str]:
        return self.js("""Array.from(document.querySelectorAll("#table tbody tr"))
            .filter(r => r.getClientRects().length > 0).map(r => r.cells[0].querySelector("a").textContent)""")

    def errors(self) -> list[str]:
        return [
            str(e["params"])
            for e in self.browser.events
            if e.get("method") == "Runtime.exceptionThrown" and e.get("sessionId") == self.session
        ]


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chromium]:
    binary = chromium_binary()
    chromium = Chromium(binary, tmp_path_factory.mktemp("chromium") / "profile")
    try:
        yield chromium
    finally:
        chromium.close()


@pytest.fixture(scope="module")
def class_page(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A class whose scores and times sort differently as text and as numbers (5 < 10 < 25 < 65 < 100; 7.25 < 7.5)."""
    folder = write_class(
        tmp_path_factory.mktemp("class") / "reports",
        {
            "alice": scored(100, seconds=3.0),
            "bob": report(
                {
                    "logits": "failed",
                    "mapping": "failed",
                    "shapes": "failed",
                    "embedding": "failed",
                    "compare": "failed",
                    "weights": "failed",
                },
                seconds=50.0,
            ),  # 5 points: only intermediate
            "carol": scored(25, seconds=7.5, mistakes={"shapes": [TRANSPOSED]}),
            "dave": scored(10, seconds=7.25, mistakes={"shapes": [TRANSPOSED]}),
            ODD: report({"logits": "timeout"}, details={"logits": "took longer than 60 s"}, seconds=0.5),
        },
    )
    return build_class_summary(folder)[1]


def test_browser_sorts_by_a_clicked_header(browser: Chromium, class_page: Path) -> None:
    """Clicking "score" sorts numerically (5 < 10 < 25 < 65 < 100), again reverses; the arrow says which way."""
    tab = Tab(browser, class_page.as_uri())
    assert tab.visible_names() == ["alice", "bob", "carol", "dave", ODD]  # by name, as written
    arrow = 'getComputedStyle(document.querySelector("#table th:nth-child(2) button"), "::after").content'
    assert tab.js(arrow) == '" ↕"'
    tab.click("#table th:nth-child(2) button")
    assert tab.visible_names() == ["bob", "dave", "carol", ODD, "alice"]
    assert tab.js('document.querySelector("#table th:nth-child(2)").getAttribute("aria-sort")') == "ascending"
    assert tab.js(arrow) == '" ▲"'
    tab.click("#table th:nth-child(2) button")
    assert tab.visible_names() == ["alice", ODD, "carol", "dave", "bob"] and tab.js(arrow) == '" ▼"'
    time_column = len(TIERS) + 5  # name, score, the tiers, start here, mistakes, time
    tab.click(f"#table th:nth-child({time_column}) button")
    assert tab.visible_names() == [ODD, "alice", "dave", "carol", "bob"]
    tab.click("#table th:nth-child(1) button")  # text: the name, ascending again, then descending
    assert tab.visible_names() == ["alice", "bob", "carol", "dave", ODD]
    tab.click("#table th:nth-child(1) button")
    assert tab.visible_names() == [ODD, "dave", "carol", "bob", "alice"]
    assert tab.errors() == []


def test_browser_filters_rows_by_typed_text(browser: Chromium, class_page: Path) -> None:
    """Typing hides the rows without the text: a name, a mistake's key, a status; clearing shows all again."""
    tab = Tab(browser, class_page.as_uri())
    tab.click("#filter")
    tab.type("ALI")
    assert tab.visible_names() == ["alice"] and tab.js('document.getElementById("shown").textContent') == "1 of 5 shown"
    tab.erase(3)
    tab.type("transposed:attn")  # a diagnosis key: not shown in the row, kept in its data-search
    assert tab.visible_names() == ["carol", "dave"]
    tab.erase(len("transposed:attn"))
    tab.type("timeout")
    assert tab.visible_names() == [ODD]
    tab.erase(len("timeout"))
    assert len(tab.visible_names()) == 5 and tab.errors() == []


def test_browser_follows_a_row_link_to_the_student_page_and_back(browser: Chromium, class_page: Path) -> None:
    """The odd name's link opens its page (the file name is safe, the heading is the name); the page links back;
    the mistake list links to students too."""
    tab = Tab(browser, class_page.as_uri())
    tab.expect_load(lambda: tab.click("#table tbody tr:nth-child(5) td.name a"))
    assert tab.js("location.pathname").startswith(str(class_page.parent / "students") + "/")
    assert tab.js('document.querySelector("h1").textContent') == ODD
    assert "took longer than 60 s" in tab.js('document.getElementById("tier-logits").nextElementSibling.textContent')
    tab.expect_load(lambda: tab.click("#back"))
    assert tab.js("location.pathname") == str(class_page)
    tab.expect_load(lambda: tab.click("#mistakes .who a:nth-child(2)"))
    assert tab.js('document.querySelector("h1").textContent') == "dave"
    assert tab.errors() == []


def test_chromium_is_required_in_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a browser the browser tests skip, unless LAB04_REQUIRE_BROWSER=1 makes that a failure."""
    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.delenv("LAB04_CHROMIUM", raising=False)
    monkeypatch.delenv("LAB04_REQUIRE_BROWSER", raising=False)
    with pytest.raises(BaseException) as outcome:
        chromium_binary()
    assert outcome.type is pytest.skip.Exception
    monkeypatch.setenv("LAB04_REQUIRE_BROWSER", "1")
    with pytest.raises(BaseException) as outcome:
        chromium_binary()
    assert outcome.type is pytest.fail.Exception, "a skip where CI requires the browser"
