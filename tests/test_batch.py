"""Batch mode: a folder of submissions, resumable, parallel, with a gradebook and a class summary."""

from __future__ import annotations

import csv
import json
import shutil
import threading
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from conftest import REPO, make_submission, reference_files
from course import layouts

import grader.grading.batch
from grader.cli import main
from grader.config import GradeConfig
from grader.grading.batch import (
    changes,
    content_hash,
    discover,
    is_submission,
    job_bytes,
    looks_like_class,
    memory_jobs,
)
from grader.grading.engine import Expectations, grade
from grader.grading.tiers import LOADS

SEGFAULT = "import ctypes\nctypes.string_at(0)  # reads address 0: SIGSEGV\n"


def make_class(root: Path) -> Path:
    """Three students: a correct folder, the example (a zipped chapter folder), and one that segfaults at import."""
    folder = root / "class"
    make_submission(folder / "alice", reference_files(True))
    shutil.make_archive(str(folder / "bob"), "zip", REPO / "examples", "submission")
    crash = reference_files(True)
    crash["pretrained.py"] = crash["pretrained.py"] + SEGFAULT
    make_submission(folder / "carol", crash)
    return folder


def batch(folder: Path, out: Path, *options: str, code: int = 0) -> Result:
    result = CliRunner().invoke(main, [str(folder), "--out", str(out), "--seed", "1", *options])
    assert result.exit_code == code, (result.output, result.exception)
    return result


def scores(out: Path) -> dict[str, float]:
    return {p.stem: json.loads(p.read_text())["score"] for p in out.glob("*.json") if not p.name.startswith(".")}


def test_discover_and_class_detection(tmp_path: Path) -> None:
    """Sub-folders, zips and notebooks are students; one submission, or the course's chapter folder, is not a class."""
    folder = tmp_path / "class"
    make_submission(folder / "alice", {"pretrained.py": "x = 1\n"})
    (folder / "bob.zip").write_bytes(b"PK")
    (folder / "carol.ipynb").write_text("{}")
    (folder / "notes.txt").write_text("not a submission")
    (folder / ".hidden").mkdir()
    assert sorted(discover(folder)) == ["alice", "bob", "carol"]
    assert looks_like_class(folder)
    assert not looks_like_class(folder / "alice") and is_submission(folder / "alice")
    chapter = make_submission(tmp_path / "ch03", layouts()["chapter folder, Lab 03 decoder in the sibling folder"])
    assert is_submission(chapter) and not looks_like_class(chapter)
    assert content_hash(folder / "alice") != content_hash(folder / "bob.zip")


def test_configuration_changes_are_named() -> None:
    old = {"checkpoints": {"primary": "small (ab12)"}, "points": {"logits": 35}}
    new = {"checkpoints": {"primary": "tiny (cd34)"}, "points": {"logits": 35}}
    assert changes(old, new) == ["checkpoints.primary: small (ab12) -> tiny (cd34)"]


@pytest.mark.slow
def test_a_batch_grades_resumes_refuses_a_changed_configuration_and_regrades(tmp_path: Path) -> None:
    folder = make_class(tmp_path)
    out = tmp_path / "reports"
    first = batch(folder, out, "--jobs", "2")
    assert "3 graded, 0 already current, 0 failed" in first.output
    assert "[3/3]" in first.output and "ETA" in first.output  # plain lines: CliRunner is not a terminal
    assert scores(out) == {"alice": 100, "bob": 30, "carol": 0}
    carol = json.loads((out / "carol.json").read_text())
    assert "SIGSEGV" in carol["tests"][0]["output"]
    with (out / "gradebook.csv").open() as fh:
        rows = {row["name"]: row for row in csv.DictReader(fh)}
    assert rows["bob"]["score"] == "30" and rows["bob"]["shapes_status"] == "failed"
    assert "attn.W_O:transpose" in rows["bob"]["diagnosis"]
    assert (out / "summary.html").is_file() and (out / "students").is_dir()

    stamps = {p.name: p.stat().st_mtime_ns for p in out.glob("[!.]*.json")}
    again = batch(folder, out)
    assert "0 graded, 3 already current" in again.output
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("[!.]*.json")} == stamps

    (folder / "alice" / "pretrained.py").write_text(reference_files(False)["pretrained.py"] + "\n# late fix\n")
    late = batch(folder, out)
    assert "1 graded, 2 already current" in late.output

    changed = batch(folder, out, "--second-model", "none", code=2)
    assert "another configuration" in changed.output and "checkpoints.second" in changed.output
    assert (out / "alice.json").stat().st_mtime_ns != stamps["alice.json"]  # nothing was overwritten by it
    forced = batch(folder, out, "--second-model", "none", "--force")
    assert "3 graded, 0 already current" in forced.output

    result = CliRunner().invoke(main, ["regrade", str(out), "carol", "--second-model", "none", "--seed", "1"])
    assert result.exit_code == 0, result.output
    assert "1 graded, 2 already current" in result.output
    missing = CliRunner().invoke(main, ["regrade", str(out), "nobody", "--second-model", "none"])
    assert missing.exit_code == 2 and "no submission named nobody" in missing.output


@pytest.mark.slow
def test_a_removed_submission_is_flagged_stale(tmp_path: Path) -> None:
    folder = tmp_path / "class"
    for name in ("alice", "bob"):
        make_submission(folder / name, reference_files(False))
    out = tmp_path / "reports"
    batch(folder, out)
    shutil.rmtree(folder / "bob")
    result = CliRunner().invoke(main, ["summary", str(out)])
    assert result.exit_code == 0, result.output
    with (out / "gradebook.csv").open() as fh:
        assert [row["name"] for row in csv.DictReader(fh)] == ["alice"]
    assert "stale" in (out / "summary.html").read_text().lower()


@pytest.mark.slow
def test_a_grader_failure_on_one_submission_does_not_stop_the_batch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The grader itself failing on bob: bob gets a zero report for staff, the others are graded, bob is retried."""
    folder = tmp_path / "class"
    for name in ("alice", "bob", "carol"):
        make_submission(folder / name, reference_files(False))
    real_grade = grader.grading.batch.grade

    def flaky(config, **kwargs):
        if config.submission.name == "bob":
            raise RuntimeError("disk on fire")
        return real_grade(config, **kwargs)

    monkeypatch.setattr(grader.grading.batch, "grade", flaky)
    out = tmp_path / "reports"
    result = batch(folder, out)
    assert "2 graded, 0 already current, 1 failed by the grader" in result.output
    assert "bob: RuntimeError: disk on fire" in result.output
    bob = json.loads((out / "bob.json").read_text())
    assert bob["score"] == 0 and "disk on fire" in bob["extra_data"]["internal_errors"][0]
    monkeypatch.setattr(grader.grading.batch, "grade", real_grade)
    retry = batch(folder, out)
    assert "1 graded, 2 already current" in retry.output
    assert scores(out)["bob"] == 100


@pytest.mark.slow
def test_a_batch_grades_its_first_students_while_the_truth_is_computed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The truth (GPT-2's logits, trace and float64 weights) is computed beside the first students, not before."""
    folder = tmp_path / "class"
    for name in ("alice", "bob"):
        make_submission(folder / name, reference_files(False))
    first_graded, seen = threading.Event(), []
    real_warm, real_grade = Expectations.warm, grader.grading.batch.grade

    def warm(self, diagnosis: bool = False) -> None:
        if diagnosis:  # the batch's own warm-up: it waits to see a submission start
            seen.append(first_graded.wait(60))
        real_warm(self, diagnosis)

    def noting_grade(config, **kwargs):
        first_graded.set()
        return real_grade(config, **kwargs)

    monkeypatch.setattr(Expectations, "warm", warm)
    monkeypatch.setattr(grader.grading.batch, "grade", noting_grade)
    batch(folder, tmp_path / "reports", "--jobs", "1")
    assert seen == [True]
    assert scores(tmp_path / "reports") == {"alice": 100, "bob": 100}


@pytest.mark.slow
def test_one_submissions_tiers_start_while_the_truth_is_computed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One run as run_autograder makes it: the loads begin while the truth is still being computed."""
    loading, seen = threading.Event(), []
    real_warm, real_run = Expectations.warm, LOADS.run

    def warm(self, diagnosis: bool = False) -> None:
        seen.append(loading.wait(60))
        real_warm(self, diagnosis)

    def run(session, deadline):
        loading.set()
        return real_run(session, deadline)

    monkeypatch.setattr(Expectations, "warm", warm)
    monkeypatch.setattr(LOADS, "run", run)
    sub = make_submission(tmp_path / "sub", reference_files(False))
    report = grade(GradeConfig(submission=sub, out=tmp_path / "report.json", seed=1))
    assert seen == [True] and report.score == 100


@pytest.mark.slow
def test_the_torch_free_lane_starts_while_the_second_checkpoint_loads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The forward passes need only the primary's model: they begin before the second checkpoint is loaded."""
    from grader.grading import loading
    from grader.grading.tiers import embedding

    began, seen = threading.Event(), []
    real_load, real_run = loading._load, embedding.run

    def load(session, name, deadline):
        if name != session.primary_name:
            seen.append(began.wait(30))  # the embedding tier has begun while this load has not
        return real_load(session, name, deadline)

    def run(session, deadline):
        began.set()
        return real_run(session, deadline)

    monkeypatch.setattr(loading, "_load", load)
    monkeypatch.setattr(embedding, "run", run)
    sub = make_submission(tmp_path / "sub", reference_files(False))
    report = grade(GradeConfig(submission=sub, out=tmp_path / "report.json", seed=1))
    assert seen == [True] and report.score == 100


def test_batch_mode_refuses_a_single_file_and_json_out_means_one_submission(tmp_path: Path) -> None:
    archive = tmp_path / "one.zip"
    archive.write_bytes(b"PK")
    result = CliRunner().invoke(main, [str(archive), "--out", str(tmp_path / "r"), "--jobs", "2"])
    assert result.exit_code == 2 and "batch mode needs a folder of submissions" in result.output
    folder = tmp_path / "class"
    for name in ("alice", "bob"):
        make_submission(folder / name, {"pretrained.py": "x = 1\n"})
    result = CliRunner().invoke(main, [str(folder), "--out", str(tmp_path / "one.json"), "-q"])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "one.json").read_text())  # one report for the folder, not a folder of reports
    assert report["score"] == 0 and report["extra_data"]["submission"]["path"] == str(folder)


def test_jobs_are_capped_by_what_a_job_holds_not_by_the_address_space_limit() -> None:
    """Two jobs on small fit in 8 GiB (3 GiB each, measured), though 2 x 6 GiB of address space would not."""
    small = job_bytes(124_439_808)
    assert 2.5 * 2**30 < small < 3.5 * 2**30
    assert memory_jobs(2, small, available=8 << 30) == 2
    assert memory_jobs(4, small, available=8 << 30) == 2
    assert memory_jobs(2, job_bytes(774_030_080), available=20 << 30) == 1  # GPT-2 large: one at a time
