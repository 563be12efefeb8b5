"""Every buggy submission of the bank gets exactly its verdicts, and feedback that names the mistake."""

from __future__ import annotations

import gc
import os
import time
from pathlib import Path

import pytest
from bank import BANK, Bug
from conftest import Grader, make_submission, reference_files, statuses, tier

from grader.config import GradeConfig
from grader.grading.checkpoints import BUILTIN
from grader.grading.engine import grade
from grader.sandbox.limits import Limits


def materialise(bug: Bug, folder: Path) -> Path:
    """The reference solution with the bug's edits applied."""
    files = reference_files(with_decoder=bug.ships_decoder)
    for name, old, new in bug.edits:
        assert files[name].count(old) == 1, f"{bug.name}: the edit's text must occur once in {name}: {old!r}"
        files[name] = files[name].replace(old, new)
    return make_submission(folder / bug.name, files)


def test_the_bank_is_large_and_distinct() -> None:
    names = [bug.name for bug in BANK]
    assert len(names) >= 30 and len(set(names)) == len(names)
    assert len({tuple(sorted(bug.expect.items())) for bug in BANK}) >= 10, "the bank should exercise varied verdicts"


@pytest.mark.parametrize("bug", BANK, ids=lambda bug: bug.name)
def test_bank_submission_gets_its_verdicts(bug: Bug, tmp_path: Path, grader: Grader) -> None:
    report = grader(materialise(bug, tmp_path), **bug.limits)
    details = "\n".join(f"[{t.name}: {t.status}] {t.detail}" for t in report.tiers)
    assert statuses(report) == bug.expect, details
    for name, text in bug.feedback.items():
        assert text in tier(report, name).detail, f"{name} feedback should contain {text!r}:\n{details}"
    keys = {d["key"] for d in report.diagnosis}
    for key in bug.mistakes:
        assert key in keys, f"the report should diagnose {key}: {sorted(keys)}\n{details}"
    assert report.decoder in ("decoder.py" if bug.ships_decoder else "reference", "none")
    for t in report.tiers:
        assert t.score == (t.max_score if t.status == "passed" else 0)
    assert not report.internal_errors, report.internal_errors


@pytest.mark.parametrize("with_decoder", [True, False], ids=["own decoder", "reference decoder"])
def test_reference_solution_scores_full_marks(tmp_path: Path, with_decoder: bool, grader: Grader) -> None:
    report = grader(make_submission(tmp_path / "ref", reference_files(with_decoder)))
    assert set(statuses(report).values()) == {"passed"}, [t.detail for t in report.tiers]
    assert report.score == report.max_score == 100
    assert report.decoder == ("decoder.py" if with_decoder else "reference")
    logits = tier(report, "logits")
    assert logits.max_diff is not None and logits.max_diff <= logits.tolerance
    assert not report.start_here and not report.internal_errors


@pytest.mark.slow
def test_a_model_larger_than_the_file_limit_still_reaches_the_torch_free_process(tmp_path: Path) -> None:
    """The exported model is written into a memfd, which the file-size limit bounds: GPT-2 large's
    weights (3 GB) exceed the default 2 GiB, so the torch process's limit grows to the export's room.
    Here, on small: a 300 MB limit holds every logits reply (at most 206 MB) but not the weights (500 MB)."""
    small = BUILTIN["small"]
    assert small.n_positions * small.vocab_size * 4 < 300 << 20 < 4 * 124_000_000
    config = GradeConfig(
        submission=make_submission(tmp_path / "ref", reference_files(True)),
        out=tmp_path / "r.json",
        model="small",
        limits=Limits(file_bytes=300 << 20),
    )
    report = grade(config)
    assert set(statuses(report).values()) == {"passed"}, [t.detail for t in report.tiers]


def _open_memory_files() -> list[str]:
    """The grader's own descriptors of memfds made for student processes (results, exported models)."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("/memfd:lab04"):
            found.append(target)
    return found


def test_grading_leaves_no_memory_file_open(tmp_path: Path, grader: Grader) -> None:
    """Every memfd a grading opens here is closed after it: the exported models (let go of in the background),
    the export's memfd made ahead when the loader raised before it could be used, and an export that sent
    no model (it holds torch tensors)."""
    raising = reference_files()
    raising["pretrained.py"] = raising["pretrained.py"].replace(
        '    """Fill ``your_model`` in place', '    raise RuntimeError("not today")\n    """Fill ``your_model`` in place'
    )
    for name, files in (("reference", reference_files()), ("raising", raising)):
        report = grader(make_submission(tmp_path / name, files))
        assert statuses(report)["shapes"] == ("passed" if name == "reference" else "error"), name
    holds_tensors = next(bug for bug in BANK if bug.name == "torch_in_forward")  # its export sends no model
    assert statuses(grader(materialise(holds_tensors, tmp_path))) == holds_tensors.expect
    deadline = time.monotonic() + 10
    while _open_memory_files() and time.monotonic() < deadline:
        gc.collect()
        time.sleep(0.05)
    assert not _open_memory_files()
