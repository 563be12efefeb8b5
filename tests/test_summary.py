"""The class gradebook (CSV) and HTML summary built from a folder of reports, and `grade summary`."""

from __future__ import annotations

import csv
import html
import json
import os
import re
import shutil
import struct
import subprocess
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner, Result

from grader import summary
from grader.cli import main
from grader.lab.tiers import TIER_NAMES
from grader.report import ModelInfo, Report, TierResult, dumps
from grader.summary import (
    GRADER_ERROR,
    Mistake,
    SubmissionRow,
    TierCell,
    build_class_summary,
    class_result,
    class_stats,
    common_mistakes,
    load_rows,
    render_summary,
    write_gradebook,
    write_summary,
)

TIERS = (
    ("mapping", "Weight mapping (get_weight_mapping)", 20.0),
    ("shapes", "Loaded weights", 20.0),
    ("embedding", "Embeddings", 10.0),
    ("logits", "Full forward pass", 35.0),
    ("compare", "compare_outputs", 15.0),
)
MODEL = ModelInfo("built-in synthetic checkpoint 'tiny' (seed 4)", "ab" * 32, 2, 64, 4, 128, 50257)
TRANSPOSED = ("transposed:attn.c_proj", "attn.c_proj loaded transposed", "shapes")
ERF_GELU = ("erf_gelu", "exact-erf GELU", "logits")
XSS = "<script>alert(1)</script>"


def report_dict(
    statuses: dict[str, str] | None = None,
    diagnosis: list[tuple[str, str, str]] | None = None,
    seconds: float = 12.5,
    peak_mb: float | None = 512.0,
    internal_errors: list[str] | None = None,
) -> dict[str, Any]:
    """A results.json document as grader.report writes it (tiers passed unless ``statuses`` says otherwise).

    ``diagnosis=None`` leaves the field out, as in reports written before it existed.
    """
    statuses = statuses or {}
    tiers = []
    for name, title, points in TIERS:
        status = statuses.get(name, "passed")
        tiers.append(
            TierResult(name, title, status, points if status == "passed" else 0.0, points, f"{name}: {status}", 1.0)
        )
    report = Report(
        tiers=tiers,
        decoder="reference",
        model=MODEL,
        second_model=None,
        submission={"path": "sub", "kind": "directory", "files": ["pretrained.py"], "notes": [], "problem": None},
        tolerances={"logits": "max |diff| <= 1e-05 * max(1, max |HuggingFace logit|)", "logits_rtol": 1e-5},
        versions={"python": "3.11.7"},
        limits={"timeout_s": 60.0, "memory_bytes": 6 * 2**30, "threads": 1},
        execution_time=seconds,
        internal_errors=list(internal_errors or []),
        resources={} if peak_mb is None else {"student_startup_seconds": 1.5, "student_peak_rss_mb": peak_mb},
    )
    data = json.loads(dumps(report))  # exactly the JSON the real writer produces
    if diagnosis is not None:
        data["extra_data"]["diagnosis"] = [{"key": k, "label": label, "tier": t} for k, label, t in diagnosis]
    return data


def write_reports(folder: Path, reports: dict[str, dict[str, Any] | str | bytes]) -> Path:
    """REPORTS_DIR/<name>.json for each report (a dict as JSON, text or bytes as they are)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, content in reports.items():
        path = folder / f"{name}.json"
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content if isinstance(content, str) else json.dumps(content), encoding="utf-8")
    return folder


def read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        return list(reader.fieldnames or []), list(reader)


def page_text(page: str) -> str:
    """The text a reader sees: tags dropped, entities decoded, white space collapsed."""
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", page)).split())


def headline(page: str) -> dict[str, str]:
    """The headline cards: id -> value."""
    return dict(re.findall(r'id="stat-([\w-]+)"><div class="value">([^<]*)</div>', page))


def section(page: str, ident: str) -> str:
    found = re.search(rf'<section id="{ident}">(.*?)</section>', page, re.S)
    assert found, f"no section {ident!r} in the page"
    return found.group(1)


def synthetic_rows(n: int) -> list[SubmissionRow]:
    """``n`` plausible rows with a spread of scores, statuses, mistakes and timings."""
    pattern = ["passed", "failed", "passed", "timeout", "passed", "error", "skipped"]
    rows = []
    for i in range(n):
        cells = []
        for j, (name, _, points) in enumerate(TIERS):
            status = pattern[(i * (j + 2) + j) % len(pattern)]
            cells.append((name, TierCell(status, points if status == "passed" else 0.0, points)))
        mistakes = [Mistake(*TRANSPOSED)] if i % 3 == 0 else []
        if i % 5 == 1:
            mistakes.append(Mistake(*ERF_GELU))
        rows.append(
            SubmissionRow(
                name=f"student{i:03d}",
                status="graded",
                score=sum(c.score or 0.0 for _, c in cells),
                max_score=100.0,
                tiers=tuple(cells),
                diagnosis=tuple(mistakes),
                seconds=5.0 + (i * 7919 % 113) / 2,
                peak_memory_mb=300.0 + i * 13 % 500,
            )
        )
    return rows


def invoke(*args: str | Path) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args])


# ---------------------------------------------------------------- reading and the gradebook


def test_gradebook_has_one_row_per_report_with_every_column(tmp_path: Path) -> None:
    """Columns in order (tiers as the reports order them); scores, tier points, diagnosis, time and memory."""
    folder = write_reports(
        tmp_path / "reports",
        {
            "bob": report_dict({"shapes": "failed", "logits": "timeout"}, [TRANSPOSED, ERF_GELU], 30.25, None),
            "alice": report_dict(),  # an older report: no "diagnosis" at all
        },
    )
    rows = load_rows(folder)
    assert [r.name for r in rows] == ["alice", "bob"]
    header, table = read_csv(write_gradebook(rows, tmp_path / "gradebook.csv"))
    per_tier = [f"{t}_{w}" for t in TIER_NAMES for w in ("status", "points")]
    assert header == ["submission", "score", "max_score", *per_tier, "diagnosis", "seconds", "peak_memory_mb", "error"]
    alice, bob = table
    assert alice["submission"] == "alice" and alice["score"] == "100" and alice["max_score"] == "100"
    assert (alice["diagnosis"], alice["seconds"], alice["peak_memory_mb"], alice["error"]) == ("", "12.5", "512", "")
    assert bob["score"] == "45"  # 20 + 10 + 15
    assert (bob["shapes_status"], bob["shapes_points"]) == ("failed", "0")
    assert (bob["logits_status"], bob["logits_points"]) == ("timeout", "0")
    assert (bob["compare_status"], bob["compare_points"]) == ("passed", "15")
    assert bob["diagnosis"] == "attn.c_proj loaded transposed; exact-erf GELU"
    assert (bob["seconds"], bob["peak_memory_mb"]) == ("30.25", "")  # no peak memory in the report: empty


def test_gradebook_follows_the_reports_tier_order(tmp_path: Path) -> None:
    """Tier columns come in the order of extra_data.tiers, not a fixed list."""
    data = report_dict()
    data["extra_data"]["tiers"] = dict(reversed(data["extra_data"]["tiers"].items()))
    rows = load_rows(write_reports(tmp_path / "reports", {"x": data}))
    header, _ = read_csv(write_gradebook(rows, tmp_path / "gradebook.csv"))
    assert [h[: -len("_status")] for h in header if h.endswith("_status")] == list(reversed(TIER_NAMES))


def test_gradebook_neutralises_formulas_in_student_text(tmp_path: Path) -> None:
    """A cell starting with = + - @ gets a leading quote (CSV injection); numbers and plain names do not."""
    names = ['=HYPERLINK("https:evil.example","x")', "+cmd", "-2+3", "@SUM(A1)", "dave"]
    reports: dict[str, Any] = {name: report_dict() for name in names}
    reports["dave"] = report_dict({"shapes": "failed"}, [("formula", "=1+1", "shapes")], internal_errors=["-oops"])
    rows = load_rows(write_reports(tmp_path / "reports", reports))
    _, table = read_csv(write_gradebook(rows, tmp_path / "gradebook.csv"))
    by_name = {row["submission"].lstrip("'"): row for row in table}
    for name in names[:-1]:
        assert by_name[name]["submission"] == "'" + name
    dave = by_name["dave"]
    assert dave["submission"] == "dave"
    assert (dave["diagnosis"], dave["error"]) == ("'=1+1", "'-oops")
    assert (dave["score"], dave["shapes_points"]) == ("80", "0")


def test_gradebook_is_replaced_atomically(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A rewrite replaces the file whole; a failed one leaves the old file and no temporary file behind."""
    target = tmp_path / "gradebook.csv"
    write_gradebook(synthetic_rows(3), target)
    write_gradebook(synthetic_rows(2), target)
    assert len(read_csv(target)[1]) == 2
    before = target.read_bytes()

    def broken_replace(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(summary.os, "replace", broken_replace)
    with pytest.raises(OSError):
        write_gradebook(synthetic_rows(5), target)
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gradebook.csv"]


def test_unreadable_reports_are_grader_error_rows_and_other_files_are_skipped(tmp_path: Path) -> None:
    """Corrupt, non-UTF-8 or malformed reports are rows with status 'grader error' and no score, never a crash."""
    folder = write_reports(
        tmp_path / "reports",
        {
            "good": report_dict(),
            "broken": '{"score": 100, "tests": [',  # cut short
            "binary": b"\xff\xfe\x00garbage",
            "malformed": {"tests": [], "score": "lots", "extra_data": {"tiers": {}}},
            "batch-state": {"done": ["good"], "pending": []},  # not a report: skipped
            ".report-tmp123": "{",  # the writer's temporary file: skipped
        },
    )
    (folder / "notes.txt").write_text("not json")
    (folder / "folder.json").mkdir()
    rows = load_rows(folder)
    assert [r.name for r in rows] == ["binary", "broken", "good", "malformed"]
    errors = {r.name: r for r in rows if r.status == GRADER_ERROR}
    assert sorted(errors) == ["binary", "broken", "malformed"]
    assert all(r.score is None and r.error for r in errors.values())
    assert errors["broken"].error.startswith("cannot read the report")
    assert errors["malformed"].error.startswith("malformed report")

    _, table = read_csv(write_gradebook(rows, tmp_path / "gradebook.csv"))
    broken = next(row for row in table if row["submission"] == "broken")
    assert broken["score"] == "" and broken["error"].startswith("cannot read the report")
    page = render_summary(rows)
    assert headline(page)["grader-errors"] == "3" and headline(page)["submissions"] == "4"
    assert headline(page)["mean"] == "100.0 / 100"  # only readable reports count towards the scores


def test_internal_grader_errors_flag_the_row_but_keep_its_score(tmp_path: Path) -> None:
    """A report listing internal errors is a grader error with its score and the errors in the error column."""
    rows = load_rows(write_reports(tmp_path / "r", {"x": report_dict(internal_errors=["oracle crashed", "again"])}))
    (row,) = rows
    assert (row.status, row.score, row.error) == (GRADER_ERROR, 100.0, "oracle crashed; again")


# ---------------------------------------------------------------- figures and the page


def test_headline_numbers(tmp_path: Path) -> None:
    """Submissions, mean, median, full marks and grader errors, on the page and on the command line."""
    folder = write_reports(
        tmp_path / "reports",
        {
            "a": report_dict(),
            "b": report_dict(),
            "c": report_dict({"shapes": "failed", "logits": "failed"}),  # 45
            "d": report_dict({t: "error" for t, _, _ in TIERS}),  # 0
            "e": report_dict({"embedding": "failed", "compare": "skipped"}),  # 75
            "f": "not json",
        },
    )
    rows = load_rows(folder)
    stats = class_stats(rows)
    assert (stats.submissions, stats.scored, stats.grader_errors, stats.full_marks) == (6, 5, 1, 2)
    assert (stats.mean, stats.median, stats.max_score) == (64.0, 75.0, 100.0)
    assert headline(render_summary(rows)) == {
        "submissions": "6",
        "mean": "64.0 / 100",
        "median": "75 / 100",
        "full-marks": "2",
        "grader-errors": "1",
    }
    assert class_result(rows) == "6 submissions, mean 64.0/100, median 75/100, 2 full marks, 1 grader error"


def test_most_common_mistakes_with_percentages_of_submissions(tmp_path: Path) -> None:
    """Each mistake counts once per submission, as a share of the readable reports; top 10 only, most common first."""
    reports: dict[str, Any] = {}
    for i in range(30):
        diagnosis = []
        if i < 11:
            diagnosis += [TRANSPOSED, TRANSPOSED] if i == 0 else [TRANSPOSED]  # listed twice: still one submission
        if i % 10 == 0:
            diagnosis.append(ERF_GELU)
        if 12 <= i < 24:
            diagnosis.append((f"rare:{i}", f"rare mistake {i}", "logits"))
        reports[f"s{i:02d}"] = report_dict(diagnosis=diagnosis)
    reports["corrupt"] = "{"  # not a readable report: not in the denominator
    rows = load_rows(write_reports(tmp_path / "reports", reports))

    ranked = common_mistakes(rows)
    assert len(ranked) == 10
    assert [(m.key, n, total) for m, n, total in ranked[:2]] == [
        ("transposed:attn.c_proj", 11, 30),
        ("erf_gelu", 3, 30),
    ]
    text = page_text(section(render_summary(rows), "mistakes"))
    assert "37% attn.c_proj loaded transposed (11 of 30 · shapes)" in text
    assert "10% exact-erf GELU (3 of 30 · logits)" in text
    assert text.count("rare mistake") == 8 and "3% rare mistake 12" in text


def test_pass_rate_per_tier_and_histogram() -> None:
    """One SVG bar per histogram bin and per tier, with the share passed written out."""
    rows = synthetic_rows(20)
    page = render_summary(rows)
    histogram = section(page, "histogram")
    assert histogram.count('<rect class="bar"') == 10
    heights = [float(h) for h in re.findall(r'<rect class="bar"[^>]* height="([\d.]+)"', histogram)]
    assert max(heights) > 0
    passed = sum(1 for r in rows if r.tier("mapping") and r.tier("mapping").status == "passed")
    rates = section(page, "pass-rates")
    assert rates.count('<rect class="bar"') == len(TIERS)
    assert f"{summary.percent(passed, 20)} ({passed} of 20)" in page_text(rates)


def test_every_piece_of_student_text_is_escaped(tmp_path: Path) -> None:
    """Names, labels, keys, statuses and error details reach the page only HTML-escaped."""
    hostile = SubmissionRow(
        name=XSS,
        status="graded",
        score=20.0,
        max_score=100.0,
        tiers=(("mapping", TierCell("<i>odd</i>", 20.0, 20.0)),),
        diagnosis=(Mistake('k" onmouseover="alert(1)', "<img src=x onerror=alert(1)>", "<b>tier</b>"),),
        seconds=3.0,
    )
    broken = SubmissionRow(name="z", status=GRADER_ERROR, error='"><iframe src=javascript:alert(1)>')
    page = render_summary([hostile, broken], title="<title>Lab & co")
    for raw in ("<script", "<img", "<iframe", "<i>odd", "<b>tier", 'onmouseover="alert', "<title>Lab"):
        assert raw not in page, f"{raw!r} reached the page unescaped"
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&lt;img src=x onerror=alert(1)&gt;" in page
    assert XSS in page_text(page)

    # the same through a report file named by a student
    name = "<img src=x onerror=alert(1)>"
    rows = load_rows(write_reports(tmp_path / "reports", {name: report_dict(diagnosis=[TRANSPOSED])}))
    assert rows[0].name == name
    assert "<img" not in render_summary(rows)


def test_summary_with_no_reports(tmp_path: Path) -> None:
    """An empty folder gives a page that says so, a header-only gradebook with the lab's tiers, and no crash."""
    rows = load_rows(tmp_path)
    assert rows == []
    page = render_summary(rows)
    assert headline(page) == {"submissions": "0", "mean": "–", "median": "–", "full-marks": "0", "grader-errors": "0"}
    assert "No reports found" in page and "<svg" not in page
    header, table = read_csv(write_gradebook(rows, tmp_path / "gradebook.csv"))
    assert table == [] and [h for h in header if h.endswith("_status")] == [f"{t}_status" for t in TIER_NAMES]
    assert class_result(rows) == "No reports found."


@pytest.mark.parametrize("n", [1, 300])
def test_summary_with_one_or_many_rows(n: int) -> None:
    """Every submission gets a table row; the slowest list stops at 10; the charts keep their size."""
    rows = synthetic_rows(n)
    page = render_summary(rows)
    assert headline(page)["submissions"] == str(n)
    assert section(page, "submissions").count("<tr>") == n + 1  # the header too
    assert section(page, "slowest").count("<tr>") == min(n, 10) + 1
    slowest = max(rows, key=lambda r: r.seconds or 0.0)
    assert slowest.name in section(page, "slowest")
    assert section(page, "histogram").count('<rect class="bar"') == 10
    assert page.count("<svg") == 2


def test_build_class_summary_rebuilds_both_files(tmp_path: Path) -> None:
    """The batch command's entry point writes gradebook.csv and summary.html beside the reports, every time."""
    folder = write_reports(tmp_path / "reports", {"a": report_dict()})
    gradebook, page = build_class_summary(folder)
    assert (gradebook, page) == (folder / "gradebook.csv", folder / "summary.html")
    write_reports(folder, {"b": report_dict({"logits": "failed"})})
    build_class_summary(folder)
    assert [row["submission"] for row in read_csv(gradebook)[1]] == ["a", "b"]
    assert headline(page.read_text(encoding="utf-8"))["submissions"] == "2"


# ---------------------------------------------------------------- the command


def test_cli_summary_writes_both_files_and_prints_the_class_result(tmp_path: Path) -> None:
    folder = write_reports(tmp_path / "reports", {"a": report_dict(), "b": report_dict({"logits": "failed"})})
    result = invoke("summary", folder)
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        str(folder / "gradebook.csv"),
        str(folder / "summary.html"),
        "2 submissions, mean 82.5/100, median 82.5/100, 1 full marks, 0 grader errors",
    ]
    assert len(read_csv(folder / "gradebook.csv")[1]) == 2
    assert headline((folder / "summary.html").read_text(encoding="utf-8"))["submissions"] == "2"


def test_cli_summary_custom_paths(tmp_path: Path) -> None:
    folder = write_reports(tmp_path / "reports", {"a": report_dict()})
    result = invoke("summary", folder, "--gradebook", tmp_path / "book.csv", "--html", tmp_path / "class.html")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "book.csv").is_file() and (tmp_path / "class.html").is_file()
    assert not (folder / "gradebook.csv").exists() and not (folder / "summary.html").exists()


@pytest.mark.parametrize("kind", ["missing", "file"])
def test_cli_summary_needs_a_folder(tmp_path: Path, kind: str) -> None:
    """A missing REPORTS_DIR or a file is bad usage: exit 2, one 'Error:' line."""
    target = tmp_path / "nope"
    if kind == "file":
        target.write_text("{}")
    result = invoke("summary", target)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert "Error: REPORTS_DIR" in result.stderr and "is not a folder" in result.stderr


def test_cli_summary_unwritable_output_is_exit_1(tmp_path: Path) -> None:
    folder = write_reports(tmp_path / "reports", {"a": report_dict()})
    result = invoke("summary", folder, "--gradebook", tmp_path / "no" / "such" / "book.csv")
    assert result.exit_code == 1, result.output
    assert (
        "Error: cannot write the summary" in result.stderr
        and str(tmp_path / "no" / "such" / "book.csv") in result.stderr
    )


def test_grade_help_lists_the_summary_command() -> None:
    result = invoke("--help")
    assert result.exit_code == 0, result.output
    assert "grade summary REPORTS_DIR" in result.stdout


# ---------------------------------------------------------------- a real browser


def _browser() -> str:
    """The chromium binary; skip (or fail, with LAB04_REQUIRE_BROWSER=1) when there is none."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    message = "chromium is not installed (apt-get install -y chromium)"
    if os.environ.get("LAB04_REQUIRE_BROWSER") == "1":
        pytest.fail(f"{message}, and LAB04_REQUIRE_BROWSER=1 requires it")
    pytest.skip(f"{message}; set LAB04_REQUIRE_BROWSER=1 to make this a failure")


def _run_browser(browser: str, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
    ]
    done = subprocess.run([browser, *flags, *args], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, f"chromium failed ({done.returncode}):\n{done.stderr[-3000:]}"
    return done


def _decode_png(path: Path) -> np.ndarray:
    """The pixels (height, width, channels) of an 8-bit, non-interlaced RGB(A) PNG: a small stdlib+NumPy reader."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, header = 8, [], None
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat.append(body)
    assert header is not None, "no IHDR"
    width, height, depth, colour, _, _, interlace = header
    assert depth == 8 and colour in (2, 6) and interlace == 0, f"unsupported PNG {header}"
    bpp = 3 if colour == 2 else 4
    raw = np.frombuffer(zlib.decompress(b"".join(idat)), np.uint8).reshape(height, width * bpp + 1)
    out = np.zeros((height, width * bpp), np.uint8)
    prev = np.zeros(width * bpp, np.int64)
    for y in range(height):
        kind, line = raw[y, 0], raw[y, 1:].astype(np.int64)
        if kind == 0:
            cur = line
        elif kind == 1:  # Sub: a running sum per channel
            cur = np.cumsum(line.reshape(width, bpp), axis=0).reshape(-1) % 256
        elif kind == 2:  # Up
            cur = (line + prev) % 256
        else:  # Average or Paeth: sequential, in plain Python
            f, b, c = line.tolist(), prev.tolist(), [0] * bpp + prev.tolist()
            r = [0] * len(f)
            for i in range(len(f)):
                a = r[i - bpp] if i >= bpp else 0
                if kind == 3:
                    r[i] = (f[i] + (a + b[i]) // 2) % 256
                else:
                    p = a + b[i] - c[i]
                    pa, pb, pc = abs(p - a), abs(p - b[i]), abs(p - c[i])
                    pred = a if pa <= pb and pa <= pc else b[i] if pb <= pc else c[i]
                    r[i] = (f[i] + pred) % 256
            cur = np.array(r, np.int64)
        out[y], prev = cur, cur
    return out.reshape(height, width, bpp)


def test_summary_renders_in_a_headless_browser(tmp_path: Path) -> None:
    """Chromium parses the page (headline numbers, SVG bars in the DOM) and paints it (the bars' colours)."""
    browser = _browser()
    rows = synthetic_rows(30)
    page = write_summary(rows, tmp_path / "summary.html")
    stats = class_stats(rows)

    dom = _run_browser(browser, tmp_path, "--dump-dom", page.as_uri()).stdout
    assert re.search(r'id="stat-submissions"><div class="value">30</div>', dom), dom[:2000]
    assert f"{stats.mean:.1f} / 100" in dom
    assert dom.count("<svg") == 2
    assert dom.count('<rect class="bar"') == 10 + len(TIERS)
    assert "student029" in dom and "<script" not in dom

    shot = tmp_path / "summary.png"
    _run_browser(browser, tmp_path, f"--screenshot={shot}", "--window-size=1200,2000", page.as_uri())
    assert shot.is_file() and shot.stat().st_size > 30_000, "the screenshot is missing or suspiciously small"
    pixels = _decode_png(shot)[:, :, :3]
    assert pixels.shape[:2] == (2000, 1200)
    assert pixels.std() > 10, "the screenshot is blank"
    for name, hex_colour in (("histogram", summary.HISTOGRAM_COLOUR), ("pass-rate", summary.PASS_RATE_COLOUR)):
        colour = tuple(bytes.fromhex(hex_colour[1:]))
        painted = int(np.all(pixels == colour, axis=2).sum())
        assert painted > 2000, f"the {name} bars were not painted ({painted} pixels of {colour})"
