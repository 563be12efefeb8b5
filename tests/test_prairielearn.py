"""PrairieLearn's external grader, simulated locally: the results converter, `grade --format prairielearn`,
and the image's entrypoint grade.sh run against a temporary /grade root (LAB04_GRADE_ROOT), every
results.json validated against PrairieLearn's documented format (tests/schemas/). No Docker engine
runs here: the Dockerfile is checked for what it copies and installs, by building that wheel."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
from click.testing import CliRunner
from test_gradescope import REPO, VENV, fake_root, reference_files, strict_json, validate

from grader.cli import main
from grader.outputs.prairielearn import MAX_BYTES, dumps_prairielearn
from grader.outputs.report import Report, TierResult

SCHEMA = json.loads((REPO / "tests" / "schemas" / "prairielearn_results.schema.json").read_text())
FILES = REPO / "grader" / "artifacts" / "prairielearn"
ENTRYPOINT = "/opt/lab04/grade.sh"


def report(tiers: list[TierResult], problem: str | None = None, **extra: object) -> Report:
    return Report(
        tiers=tiers,
        decoder="decoder.py",
        models={},
        submission={"path": "x", "problem": problem},
        tolerances={"logits": "1e-5"},
        versions={},
        limits={},
        execution_time=1.0,
        **extra,
    )


def tier(name: str, status: str, score: float, max_score: float, detail: str = "ok", **extra: object) -> TierResult:
    return TierResult(name, name.title(), status, score, max_score, detail, **extra)


def parsed(document: Report) -> dict:
    text = dumps_prairielearn(document)
    assert text.isascii() and len(text.encode()) <= MAX_BYTES
    results = strict_json(text)
    validate(results, SCHEMA)
    return results


def test_a_graded_report_is_a_fraction_with_one_test_per_tier() -> None:
    """Score 35 of 50 is 0.7; each tier is a test with its points; NaN is null; control characters are gone;
    the staff-only facts sit under lab04, which PrairieLearn does not render."""
    results = parsed(
        report(
            [
                tier("mapping", "passed", 15, 15),
                tier("logits", "failed", 0, 15, "bad\x1b[31m\x00", max_diff=float("nan")),
                tier("shapes", "passed", 20, 20),
            ],
            student_stdout="hello\n",
        )
    )
    assert results["gradable"] is True and results["score"] == pytest.approx(0.7)
    assert [(t["points"], t["max_points"]) for t in results["tests"]] == [(15, 15), (0, 15), (20, 20)]
    assert results["tests"][1]["message"].startswith("failed: bad") and "\x1b" not in json.dumps(results)
    assert results["lab04"]["tiers"]["logits"]["max_diff"] is None
    assert "hello" in results["output"]


def test_a_submission_problem_is_not_gradable() -> None:
    """No pretrained.py (or an unreadable zip): gradable false, no score, the problem in format_errors."""
    results = parsed(report([tier("mapping", "error", 0, 15)], problem="no pretrained.py or notebook found"))
    assert results["gradable"] is False and "score" not in results
    assert any("no pretrained.py" in e for e in results["format_errors"]), results


def test_the_results_stay_under_one_megabyte() -> None:
    """Huge outputs and details (a student printing megabytes) are capped: the file stays under 1 MB."""
    big = "x" * 3_000_000
    results = parsed(
        report([tier(f"t{i}", "failed", 0, 10, big) for i in range(40)], student_stdout=big, internal_errors=[big] * 30)
    )
    assert len(results["tests"]) == 40 and results["score"] == 0


def test_a_report_with_no_points_scores_zero() -> None:
    """All tiers worth 0 points: the score is 0, not a division by zero."""
    assert parsed(report([tier("generate", "passed", 0, 0)]))["score"] == 0


@pytest.mark.slow
def test_grade_writes_prairielearn_results(tmp_path: Path) -> None:
    """`grade reference --out results.json --format prairielearn`: exit 0, then a valid document scoring 1."""
    out = tmp_path / "results.json"
    result = CliRunner().invoke(main, [str(REPO / "reference"), "--out", str(out), "--format", "prairielearn", "-q"])
    assert result.exit_code == 0, result.output
    results = strict_json(out.read_text())
    validate(results, SCHEMA)
    assert results["gradable"] is True and results["score"] == 1.0
    assert all(t["points"] == t["max_points"] for t in results["tests"])


def run_entrypoint(
    root: Path, student: dict[str, str], grade: Path = VENV / "bin" / "grade", **env: str
) -> tuple[dict, str]:
    """PrairieLearn's job: the student's files in ROOT/student, grade.sh run, ROOT/results/results.json read."""
    shutil.rmtree(root, ignore_errors=True)
    (root / "student").mkdir(parents=True)
    (root / "tests").mkdir()
    for name, text in student.items():
        (root / "student" / name).write_text(text)
    done = subprocess.run(
        ["bash", str(FILES / "grade.sh")],
        capture_output=True,
        text=True,
        errors="replace",
        env={**os.environ, "LAB04_GRADE_ROOT": str(root), "LAB04_GRADE": str(grade), **env},
        timeout=600,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    text = (root / "results" / "results.json").read_text()
    assert len(text.encode()) <= MAX_BYTES
    results = strict_json(text)
    validate(results, SCHEMA)
    assert oct((root / "results").stat().st_mode & 0o777) == "0o700"
    return results, output


@pytest.fixture
def grade_root(tmp_path: Path) -> Iterator[Path]:
    parent = fake_root(tmp_path)
    yield parent / "grade"
    if parent != tmp_path:
        shutil.rmtree(parent, ignore_errors=True)


@pytest.mark.slow
@pytest.mark.parametrize("case", ["reference", "template", "nothing"])
def test_entrypoint_grades_what_the_student_submitted(grade_root: Path, case: str) -> None:
    """The reference scores 1; the template's stubs score 0 and say NotImplementedError; files without a
    pretrained.py are not gradable, with the reason in format_errors."""
    student = {
        "reference": reference_files(),
        "template": {
            "pretrained.py": (REPO / "student_template" / "src" / "pretrained.py").read_text(),
            "decoder.py": (REPO / "student_template" / "src" / "decoder.py").read_text(),
        },
        "nothing": {"notes.txt": "I ran out of time\n"},
    }[case]
    results, output = run_entrypoint(grade_root, student)
    if case == "reference":
        assert results["gradable"] is True and results["score"] == 1.0, output
    elif case == "template":
        assert results["gradable"] is True and results["score"] == 0, output
        assert "NotImplementedError" in results["tests"][0]["output"]
    else:
        assert results["gradable"] is False and "pretrained.py" in " ".join(results["format_errors"]), results


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ("echo broken >&2; exit 3", "exited with status 3"),
        ("exec sleep 60", "did not finish"),
        ('printf "{\\"score\\": 7}" > "$4"; exit 0', "missing or invalid"),
    ],
)
def test_entrypoint_falls_back_when_the_grader_fails(tmp_path: Path, body: str, reason: str) -> None:
    """A grader that crashes, hangs or writes a score outside [0, 1]: a valid, not gradable result (no
    attempt lost), telling the student it is not their code, the reason stored for staff."""
    fake = tmp_path / "bin" / "grade"
    fake.parent.mkdir()
    fake.write_text(f"#!/usr/bin/env bash\n{body}\n")
    fake.chmod(0o755)
    results, output = run_entrypoint(tmp_path / "grade", {"pretrained.py": "X = 1\n"}, grade=fake, LAB04_DEADLINE="2")
    assert results["gradable"] is False and "not a verdict on your code" in results["message"], output
    assert reason in results["grader_failure"]["reason"], results["grader_failure"]


def dockerfile_copies() -> list[tuple[list[str], str]]:
    """The Dockerfile's COPY instructions: (sources, destination)."""
    text = (FILES / "Dockerfile").read_text()
    return [(line.split()[1:-1], line.split()[-1]) for line in text.splitlines() if line.startswith("COPY ")]


def test_image_recipe_is_consistent() -> None:
    """Every file the Dockerfile copies exists (constraints.txt is optional), never the reference solution;
    info.json.example's entrypoint is where the image puts grade.sh, and its timeout fits PrairieLearn's
    600 s with LAB04_DEADLINE below it."""
    sources = [s for group, _ in dockerfile_copies() for s in group]
    for source in sources:
        assert source == "constraints.tx[t]" or (REPO / source).exists(), source
    assert not [s for s in sources if s in ("reference", "reference/", ".") or s.endswith("pretrained.py")]
    assert "grader/artifacts/prairielearn/grade.sh" in sources and ENTRYPOINT in (FILES / "Dockerfile").read_text()
    options = json.loads((FILES / "info.json.example").read_text())["externalGradingOptions"]
    assert options["enabled"] is True and options["entrypoint"] == ENTRYPOINT
    assert int(options["environment"]["LAB04_DEADLINE"]) + 30 <= options["timeout"] <= 600


@pytest.mark.slow
def test_image_installs_a_complete_grader(tmp_path: Path) -> None:
    """The Dockerfile's build context, copied as its COPY lines say, builds a wheel with every package of the
    grader and the reference decoder, and without the reference solution."""
    context = tmp_path / "src"
    for sources, dest in dockerfile_copies():
        if not dest.startswith("/opt/lab04/src"):
            continue
        target = context / dest.removeprefix("/opt/lab04/src").strip("/")
        for source in sources:
            path = REPO / source
            if path.is_dir():
                shutil.copytree(path, target, ignore=shutil.ignore_patterns("__pycache__"))
            elif path.is_file():
                target.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, target / path.name)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path / "wheel"),
            str(context),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    (wheel,) = (tmp_path / "wheel").glob("lab04_grader-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {
        "grader/cli.py",
        "grader/outputs/prairielearn.py",
        "lab04_checks/checkpoints.py",
        "grader/sandbox/inside/lab04_zygote.py",
        "reference/decoder.py",
    } <= names
    assert not [n for n in names if re.search(r"reference/pretrained\.py$", n)]
