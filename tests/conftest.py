"""Shared fixtures: offline checkpoints, submissions made from the reference, a grading helper."""

from __future__ import annotations

import os
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"  # the hub is unreachable here and in CI: never try it
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import pytest

from grader.config import GradeConfig
from grader.engine import grade
from grader.lab.checkpoints import default_root
from grader.models import ModelSource, resolve_model
from grader.report import Report
from grader.sandbox import Limits

REPO = Path(__file__).resolve().parents[1]
REFERENCE = REPO / "reference"


@pytest.fixture(scope="session")
def checkpoint_root() -> Path:
    """Built-in checkpoints live in the usual cache; building is deterministic, so sharing it is safe."""
    return default_root()


@pytest.fixture(scope="session")
def tiny(checkpoint_root: Path) -> ModelSource:
    return resolve_model("tiny", checkpoint_root)


@pytest.fixture(scope="session")
def wide(checkpoint_root: Path) -> ModelSource:
    return resolve_model("wide", checkpoint_root)


@pytest.fixture(scope="session")
def small(checkpoint_root: Path) -> ModelSource:
    """GPT-2 small's shape, 124M parameters: built on first use (about 10 s)."""
    return resolve_model("small", checkpoint_root)


def make_submission(folder: Path, files: dict[str, str]) -> Path:
    """Write ``files`` (relative path -> text) into ``folder``."""
    for rel, text in files.items():
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return folder


def reference_files(with_decoder: bool = True) -> dict[str, str]:
    """The reference solution as a submission's files."""
    files = {"pretrained.py": (REFERENCE / "pretrained.py").read_text()}
    if with_decoder:
        files["decoder.py"] = (REFERENCE / "decoder.py").read_text()
    return files


@pytest.fixture
def reference_submission(tmp_path: Path) -> Path:
    return make_submission(tmp_path / "reference_submission", reference_files())


def grade_submission(submission: Path, timeout: float = 60.0, memory_mb: int = 6144, **options) -> Report:
    """Grade through the real engine: a child process per run, verdicts in this process."""
    config = GradeConfig(
        submission=submission,
        out=submission.parent / "results.json",
        limits=Limits(timeout=timeout, memory_bytes=memory_mb * 2**20),
        checkpoint_dir=default_root(),
        **options,
    )
    return grade(config)


def statuses(report: Report) -> dict[str, str]:
    return {t.name: t.status for t in report.tiers}


def tier(report: Report, name: str):
    return next(t for t in report.tiers if t.name == name)
