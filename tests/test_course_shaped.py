"""Correct solutions written in the course's own template get full marks, in every layout the course allows."""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

import pytest
from conftest import Grader, make_submission, statuses, tier
from course import UNFILLED, layouts

LAYOUTS = layouts()


@pytest.mark.parametrize("name", list(LAYOUTS))
def test_course_shaped_solution_scores_full_marks(name: str, tmp_path: Path, grader: Grader) -> None:
    report = grader(make_submission(tmp_path / "student", LAYOUTS[name]))
    details = "\n".join(f"[{t.name}: {t.status}] {t.detail}" for t in report.tiers)
    assert set(statuses(report).values()) == {"passed"}, details
    assert report.score == 100 and not report.internal_errors
    expected_decoder = {
        "chapter folder": "lab03_decoder_transformer/src/decoder.py",
        "decoder.py beside": "src/decoder.py",
    }
    origin = next((v for k, v in expected_decoder.items() if name.startswith(k)), "pretrained.py")
    assert report.decoder == origin


def test_zipped_chapter_folder_is_one_submission(tmp_path: Path, grader: Grader) -> None:
    folder = make_submission(tmp_path / "ch03", LAYOUTS["chapter folder, Lab 03 decoder in the sibling folder"])
    archive = tmp_path / "ch03.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                zf.write(path, Path("ch03_complete_transformer") / path.relative_to(folder))
    report = grader(archive)
    assert report.score == 100, [t.detail for t in report.tiers]
    assert report.submission["kind"].startswith("zip")


def test_unfilled_course_template_scores_zero_naming_not_implemented(tmp_path: Path, grader: Grader) -> None:
    report = grader(make_submission(tmp_path / "stub", {"pretrained.py": UNFILLED}))
    assert report.score == 0
    for t in report.tiers:
        assert t.status in ("error", "failed"), (t.name, t.status, t.detail)
        assert "NotImplementedError" in t.detail, (t.name, t.detail)


def test_student_template_as_handed_out_scores_zero(tmp_path: Path, grader: Grader) -> None:
    shutil.copytree(Path(__file__).resolve().parents[1] / "student_template", tmp_path / "template")
    report = grader(tmp_path / "template")
    assert report.score == 0
    assert all("NotImplementedError" in t.detail for t in report.tiers), [t.detail for t in report.tiers]


def test_returning_none_is_accepted_and_the_passed_model_is_judged(tmp_path: Path, grader: Grader) -> None:
    files = LAYOUTS["inline classes, mapping loader"]
    assert "return your_model" not in files["pretrained.py"].split("def load_gpt2_weights")[1].split("def ")[0]
    report = grader(make_submission(tmp_path / "none", files))
    assert tier(report, "shapes").status == "passed"
    assert tier(report, "shapes").facts["returned"] == "None"
