"""A notebook submission is graded like a folder, and feedback points at the student's cells."""

from __future__ import annotations

from pathlib import Path

from conftest import Grader, statuses
from notebooks import filled_notebook, first_user_of_any, shuffled_notebook


def test_the_filled_template_notebook_scores_full_marks(tmp_path: Path, grader: Grader) -> None:
    path = tmp_path / "lab04.ipynb"
    path.write_text(filled_notebook())
    report = grader(path)
    assert set(statuses(report).values()) == {"passed"}, [t.detail for t in report.tiers]
    assert report.score == 100 and report.submission["kind"] == "notebook"


def test_cells_out_of_order_are_named_with_cell_and_line_and_the_fix(tmp_path: Path, grader: Grader) -> None:
    path = tmp_path / "mine.ipynb"
    text = shuffled_notebook()
    path.write_text(text)
    report = grader(path)
    assert report.score == 0
    cell = first_user_of_any(text)
    assert report.start_here.startswith(f"fix this first: mine.ipynb, cell {cell}, line 1: NameError"), (
        report.start_here
    )
    assert "further down: the cells are out of order" in report.start_here
    assert "Kernel > Restart and Run All" in report.start_here
    everything = "\n".join([report.start_here, *report.notes, *(t.detail for t in report.tiers)])
    assert "_cell_" not in everything, everything  # the grader's generated file names never reach the student
    assert "pretrained.py" not in " ".join(t.detail for t in report.tiers)
    assert any(f"mine.ipynb, cell {cell}, line 1 raised NameError" in note for note in report.notes), report.notes
