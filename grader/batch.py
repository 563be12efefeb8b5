"""Grade a whole class: one report per submission, resumable, in parallel, then a class summary.

The trusted side (checkpoints, HuggingFace's logits, the candidate index for
the diagnosis) is prepared once for the batch and shared by every grading;
each submission still gets its own sandboxed student process. A report is
current when its submission's content, the grader version, the grading
configuration and the checkpoints are all unchanged: a re-run skips it.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
import traceback
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from . import __version__
from .config import GradeConfig
from .engine import Expectations, grade, prepare_expectations
from .errors import ConfigError
from .report import ModelInfo, Report, TierResult, write_report
from .sandbox import ForkServer

STATE_FILE = ".batch-state.json"
SUBMISSION_SUFFIXES = (".zip", ".ipynb")


@dataclass(frozen=True)
class BatchConfig:
    """A batch run: where the submissions are, where the reports go, how many at once."""

    submissions: Path
    reports: Path
    grading: GradeConfig  # submission and out are filled in per student
    jobs: int = 1
    force: bool = False


@dataclass
class Outcome:
    """What happened to one submission in this run."""

    name: str
    status: str  # graded | current | failed
    score: float | None = None
    seconds: float = 0.0
    message: str = ""


Progress = Callable[[Outcome], None]


def discover(folder: Path) -> dict[str, Path]:
    """Each sub-folder, zip or notebook of ``folder`` is one student: name -> path."""
    found: dict[str, Path] = {}
    for entry in sorted(Path(folder).iterdir()):
        if entry.name.startswith((".", "_")) or entry.is_symlink():
            continue
        if entry.is_dir() or (entry.is_file() and entry.suffix in SUBMISSION_SUFFIXES):
            name = entry.stem if entry.is_file() else entry.name
            if name in found:
                name = entry.name  # alice/ and alice.zip: keep both apart
            found[name] = entry
    return found


def looks_like_class(folder: Path) -> bool:
    """True when ``folder`` holds several submissions rather than being one."""
    folder = Path(folder)
    if not folder.is_dir():
        return False
    if any((folder / p).is_file() for p in ("pretrained.py", "src/pretrained.py")):
        return False
    return len(discover(folder)) >= 2  # one notebook, or one nested folder, is a single submission


def content_hash(path: Path) -> str:
    """sha256 over a submission's files (names and bytes); symbolic links are not followed."""
    digest = hashlib.sha256()
    path = Path(path)
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file() and not p.is_symlink())
    for file in files:
        digest.update(str(file.relative_to(path) if path.is_dir() else file.name).encode() + b"\0")
        with file.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
        digest.update(b"\0")
    return digest.hexdigest()


def config_hash(config: GradeConfig, expectations: Expectations) -> str:
    """sha256 of everything besides the submission that a report depends on."""
    limits = asdict(config.limits)
    limits.pop("uid", None)  # which uid ran it does not change a verdict
    settings = {
        "grader": __version__,
        "model": expectations.primary.sha256,
        "second_model": expectations.second.sha256 if expectations.second else None,
        "points": config.points,
        "limits": {k: str(v) for k, v in limits.items()},
    }
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()


def memory_jobs(requested: int, per_job_bytes: int) -> int:
    """At most as many jobs as the available memory holds at the student process's limit each."""
    try:
        meminfo = Path("/proc/meminfo").read_text()
        available = int(meminfo.split("MemAvailable:")[1].split()[0]) * 1024
    except (OSError, IndexError, ValueError):
        return requested
    return max(1, min(requested, int(available * 0.9) // max(per_job_bytes, 1)))


def _failure_report(config: GradeConfig, expectations: Expectations, message: str) -> Report:
    """A report for a submission the grader itself failed on: zero points, the reason for staff."""
    s = expectations.primary.shape
    model = ModelInfo(expectations.primary.source, expectations.primary.sha256, s.num_layers, s.d_model,
                      s.num_heads, s.max_seq_len, s.vocab_size)  # fmt: skip
    detail = "The grader failed on this submission (not your fault); course staff have been told."
    tiers = [TierResult(name, name, "error", 0.0, points, detail) for name, points in config.points.items()]
    return Report(tiers=tiers, decoder="unknown", model=model, second_model=None,
                  submission={"path": str(config.submission), "problem": "grader failure"}, tolerances={"logits": "n/a"},
                  versions={"grader": __version__}, limits={}, execution_time=0.0,
                  internal_errors=[message])  # fmt: skip


class _State:
    """The batch's memory of which report came from which inputs (a JSON file beside the reports)."""

    def __init__(self, path: Path):
        self.path = path
        self.lock = threading.Lock()
        try:
            data = json.loads(path.read_text())
            self.entries: dict[str, dict] = data if isinstance(data, dict) else {}
        except (OSError, ValueError):
            self.entries = {}

    def current(self, name: str, key: str, report: Path) -> bool:
        return self.entries.get(name, {}).get("key") == key and report.is_file()

    def record(self, name: str, key: str, score: float) -> None:
        with self.lock:
            self.entries[name] = {"key": key, "score": score, "when": time.strftime("%Y-%m-%dT%H:%M:%S")}
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps(self.entries, indent=1, sort_keys=True))
            os.replace(tmp, self.path)


def run_batch(batch: BatchConfig, progress: Progress | None = None,
              expectations: Expectations | None = None) -> list[Outcome]:  # fmt: skip
    """Grade every submission in ``batch.submissions`` that has no current report; never stops early."""
    submissions = discover(batch.submissions)
    if not submissions:
        raise ConfigError(f"{batch.submissions} holds no submissions (sub-folders, .zip or .ipynb files)")
    batch.reports.mkdir(parents=True, exist_ok=True)
    expectations = expectations or prepare_expectations(batch.grading)
    expectations.warm()
    settings = config_hash(batch.grading, expectations)
    state = _State(batch.reports / STATE_FILE)
    outcomes: list[Outcome] = []
    todo: list[tuple[str, Path, str]] = []
    for name, path in submissions.items():
        key = hashlib.sha256((content_hash(path) + settings).encode()).hexdigest()
        if not batch.force and state.current(name, key, batch.reports / f"{name}.json"):
            outcome = Outcome(name, "current", score=state.entries[name].get("score"))
            outcomes.append(outcome)
            if progress:
                progress(outcome)
        else:
            todo.append((name, path, key))

    def one(name: str, path: Path, key: str) -> Outcome:
        started = time.monotonic()
        out = batch.reports / f"{name}.json"
        config = replace(batch.grading, submission=path, out=out)
        try:
            report = grade(config, expectations=expectations, fork_server=server)
            status, message = "graded", ""
        except Exception as exc:  # noqa: BLE001 - one submission must never stop the batch
            report = _failure_report(config, expectations, traceback.format_exc())
            status, message = "failed", f"{type(exc).__name__}: {exc}"
        write_report(report, out)
        if status == "graded":
            state.record(name, key, report.score)
        return Outcome(name, status, report.score, time.monotonic() - started, message)

    server = ForkServer(batch.grading.limits, batch.reports / ".fork-server.log") if todo else None
    try:
        outcomes += _grade_all(todo, one, batch.jobs, progress)
    finally:
        if server is not None:
            server.close()
    return sorted(outcomes, key=lambda o: o.name)


def _grade_all(todo: list, one: Callable[..., Outcome], jobs: int, progress: Progress | None) -> list[Outcome]:
    outcomes = []
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        futures = [pool.submit(one, *item) for item in todo]
        for future in as_completed(futures):
            outcome = future.result()
            outcomes.append(outcome)
            if progress:
                progress(outcome)
    return outcomes
