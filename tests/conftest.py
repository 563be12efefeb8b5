"""Shared fixtures: offline checkpoints, one pair of fork servers for the session, a grading helper."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"  # the hub is unreachable here and in CI: never try it
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import pytest

from grader.config import GradeConfig
from grader.grading.engine import Expectations, grade, prepare_expectations, start_zygotes
from grader.grading.tiers import TIER_NAMES
from grader.outputs.report import Report, TierResult
from grader.sandbox.limits import Limits
from lab04_checks.checkpoints import default_root

REPO = Path(__file__).resolve().parents[1]
REFERENCE = REPO / "reference"
SEED = 1  # the inputs' seed in tests, so that a run is reproducible
ALL_PASS = dict.fromkeys(TIER_NAMES, "passed")
# Run a command as in a default Docker container: unshare(2) refused by a seccomp filter, no CAP_SYS_ADMIN.
DOCKER_LIKE = """
import ctypes, os, platform, struct, sys
nr, arch = {"x86_64": (272, 0xC000003E), "aarch64": (97, 0xC00000B7)}[platform.machine()]
op = lambda code, jt, jf, k: struct.pack("HBBI", code, jt, jf, k)
prog = ctypes.create_string_buffer(b"".join([op(0x20, 0, 0, 4), op(0x15, 0, 3, arch), op(0x20, 0, 0, 0),
    op(0x15, 0, 1, nr), op(0x06, 0, 0, 0x00050001), op(0x06, 0, 0, 0x7FFF0000)]))  # unshare -> EPERM
fprog = struct.pack("HxxxxxxP", 6, ctypes.addressof(prog))
libc = ctypes.CDLL(None, use_errno=True)
assert libc.prctl(24, 21, 0, 0, 0) == 0 and libc.prctl(38, 1, 0, 0, 0) == 0  # no CAP_SYS_ADMIN; no new privs
assert libc.prctl(22, 2, ctypes.c_char_p(fprog), 0, 0) == 0, os.strerror(ctypes.get_errno())
os.execvp(sys.argv[1], sys.argv[1:])
"""


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


class Grader:
    """The engine with the trusted side and the fork servers made once for the whole test session."""

    def __init__(self, folder: Path):
        self.config = GradeConfig(
            submission=REPO, out=folder / "results.json", seed=SEED, checkpoint_dir=default_root()
        )
        self.expectations: Expectations = prepare_expectations(self.config)
        self.zygotes = start_zygotes(self.config.limits, folder, self.expectations)

    def __call__(self, submission: Path, **limits: object) -> Report:
        """Grade ``submission`` through the real engine (sandboxed student processes, verdicts here)."""
        config = replace(
            self.config,
            submission=submission,
            out=Path(submission).parent / "results.json",
            limits=replace(Limits(), **limits),
        )
        return grade(config, expectations=self.expectations, zygotes=self.zygotes)

    def close(self) -> None:
        for zygote in self.zygotes.values():
            zygote.close()


@pytest.fixture(scope="session")
def grader(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Grader]:
    shared = Grader(tmp_path_factory.mktemp("grader"))
    yield shared
    shared.close()


@pytest.fixture
def reference_submission(tmp_path: Path) -> Path:
    return make_submission(tmp_path / "reference_submission", reference_files())


def statuses(report: Report) -> dict[str, str]:
    return {t.name: t.status for t in report.tiers}


def tier(report: Report, name: str) -> TierResult:
    return next(t for t in report.tiers if t.name == name)


def expect(**changes: str) -> dict[str, str]:
    """Every tier passes except those named."""
    return {**ALL_PASS, **changes}
