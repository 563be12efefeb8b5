"""Batch mode: a folder of submissions, resumable, parallel, with a gradebook and a class summary."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import REPO, make_submission, reference_files

import grader.batch
from grader.batch import content_hash, discover, looks_like_class
from grader.cli import main
from grader.lab.checkpoints import default_root
from grader.lab.common import Job
from grader.lab.truth import Truth
from grader.models import resolve_model

SEGFAULT = "import ctypes\nctypes.string_at(0)  # reads address 0: SIGSEGV\n"


def make_class(root: Path) -> Path:
    """Three students: a correct folder, the example mistake as a zip, and one that segfaults at import."""
    folder = root / "class"
    make_submission(folder / "alice", reference_files(True))
    shutil.make_archive(str(folder / "bob"), "zip", REPO / "examples" / "submission")
    crash = reference_files(True)
    crash["pretrained.py"] = crash["pretrained.py"] + SEGFAULT
    make_submission(folder / "carol", crash)
    return folder


def run_batch_cli(folder: Path, out: Path, *options: str):
    result = CliRunner().invoke(
        main, [str(folder), "--out", str(out), "--checkpoint-dir", str(default_root()), "--second-model", "none",
               *options],
    )  # fmt: skip
    assert result.exit_code == 0, (result.output, result.exception)
    return result


def test_discover_and_class_detection(tmp_path: Path):
    """Sub-folders, zips and notebooks are students; a single submission is not a class."""
    folder = tmp_path / "class"
    make_submission(folder / "alice", {"pretrained.py": "x = 1\n"})
    (folder / "bob.zip").write_bytes(b"PK")
    (folder / "carol.ipynb").write_text("{}")
    (folder / "notes.txt").write_text("not a submission")
    (folder / ".hidden").mkdir()
    assert sorted(discover(folder)) == ["alice", "bob", "carol"]
    assert looks_like_class(folder)
    assert not looks_like_class(folder / "alice")
    assert content_hash(folder / "alice") != content_hash(folder / "bob.zip")


def test_a_batch_grades_everyone_resumes_regrades_changes_and_forces(tmp_path: Path):
    """One report per student, a crash is only that student's; re-runs skip current reports."""
    folder = make_class(tmp_path)
    out = tmp_path / "reports"
    result = run_batch_cli(folder, out, "--jobs", "2")
    assert "3 graded, 0 already current, 0 failed" in result.output
    scores = {name: json.loads((out / f"{name}.json").read_text())["score"] for name in ("alice", "bob", "carol")}
    assert scores == {"alice": 100, "bob": 25, "carol": 0}
    carol = json.loads((out / "carol.json").read_text())
    assert "SIGSEGV" in carol["tests"][0]["output"]
    with (out / "gradebook.csv").open() as fh:
        rows = {row["submission"]: row for row in csv.DictReader(fh)}
    assert rows["bob"]["score"] == "25" and rows["bob"]["shapes_status"] == "failed"
    assert "attn.W_O holds the transpose" in rows["bob"]["diagnosis"]
    html = (out / "summary.html").read_text()
    assert "attn.W_O holds the transpose" in html and "<svg" in html

    stamps = {p.name: p.stat().st_mtime_ns for p in out.glob("*.json")}
    again = run_batch_cli(folder, out)
    assert "0 graded, 3 already current" in again.output
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.json")} == stamps

    (folder / "alice" / "pretrained.py").write_text(reference_files(False)["pretrained.py"] + "\n# late fix\n")
    late = run_batch_cli(folder, out)
    assert "1 graded, 2 already current" in late.output
    assert (out / "alice.json").stat().st_mtime_ns != stamps["alice.json"]

    forced = run_batch_cli(folder, out, "--force")
    assert "3 graded, 0 already current" in forced.output


def test_a_grader_failure_on_one_submission_does_not_stop_the_batch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The grader itself failing on bob: bob gets a zero report for staff, the others are graded, bob is retried."""
    folder = tmp_path / "class"
    for name in ("alice", "bob", "carol"):
        make_submission(folder / name, reference_files(True))
    real_grade = grader.batch.grade

    def flaky(config, **kwargs):
        if config.submission.name == "bob":
            raise RuntimeError("disk on fire")
        return real_grade(config, **kwargs)

    monkeypatch.setattr(grader.batch, "grade", flaky)
    out = tmp_path / "reports"
    result = run_batch_cli(folder, out)
    assert "2 graded, 0 already current, 1 failed by the grader" in result.output
    assert "bob: RuntimeError: disk on fire" in result.output
    bob = json.loads((out / "bob.json").read_text())
    assert bob["score"] == 0 and "disk on fire" in bob["extra_data"]["internal_errors"][0]
    assert json.loads((out / "alice.json").read_text())["score"] == 100

    monkeypatch.setattr(grader.batch, "grade", real_grade)
    retry = run_batch_cli(folder, out)
    assert "1 graded, 2 already current" in retry.output
    assert json.loads((out / "bob.json").read_text())["score"] == 100


def test_huggingface_logits_are_cached_on_disk_by_content(tmp_path: Path):
    """A second Truth with the same weights hash reads the logits from disk, never running the model."""
    tiny = resolve_model("tiny", default_root())
    job = Job(checkpoints=(tiny.ref(),))
    ids = np.array([1, 2, 3, 4], dtype=np.int64)
    first = Truth(job, tmp_path, (tiny.sha256,)).primary.logits(ids)
    assert len(list(tmp_path.rglob("logits-*.npy"))) == 1
    fresh = Truth(job, tmp_path, (tiny.sha256,)).primary
    fresh.__dict__["hf_model"] = None  # calling the model now would raise
    np.testing.assert_array_equal(fresh.logits(ids), first)
    other = Truth(job, tmp_path, ("another-checkpoint",)).primary  # other weights: not the same entry
    assert other.cache != fresh.cache


def test_batch_mode_refuses_a_file_or_a_report_file_as_out(tmp_path: Path):
    """--jobs on a single zip, or --out naming an existing file: usage errors (exit 2) that say why."""
    archive = tmp_path / "one.zip"
    archive.write_bytes(b"PK")
    result = CliRunner().invoke(main, [str(archive), "--out", str(tmp_path / "r"), "--jobs", "2"])
    assert result.exit_code == 2
    assert "batch mode needs a folder of submissions" in result.output
    folder = make_class(tmp_path)
    taken = tmp_path / "taken.json"
    taken.write_text("{}")
    result = CliRunner().invoke(main, [str(folder), "--out", str(taken)])
    assert result.exit_code == 2
    assert "--out must be a folder" in result.output
