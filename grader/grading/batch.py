"""Grade a whole class: one report per submission, resumable, in parallel, then the class summary.

The trusted side (checkpoints, inputs, the truth) is prepared once per batch and the two
fork servers are started once; each submission still gets its own sandboxed processes.
A report is current when its submission's bytes and the grading configuration are both
unchanged. A configuration that changed since the last run is said, not silently used:
``--force`` regrades everyone under the new one.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
import traceback
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from .. import __version__, defaults
from ..config import GradeConfig
from ..errors import ConfigError
from ..outputs.files import write_atomic
from ..outputs.report import Report, TierResult, write_report
from .engine import Expectations, grade, prepare_expectations, start_zygotes
from .submission import SKIPPED_DIRS
from .tiers import TIERS

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
    only: tuple[str, ...] = ()  # regrade just these students


@dataclass
class Outcome:
    """What happened to one submission in this run."""

    name: str
    status: str  # graded | current | failed
    score: float | None = None
    seconds: float = 0.0
    message: str = ""


Progress = Callable[[Outcome], None]


def is_submission(path: Path) -> bool:
    """True when ``path`` is one student's work: pretrained.py at its top or in src/, the course's chapter
    layout, or a folder holding just one notebook."""
    path = Path(path)
    if path.is_file():
        return path.suffix in SUBMISSION_SUFFIXES or path.name == "pretrained.py"
    if not path.is_dir():
        return False
    if any((path / p).is_file() for p in ("pretrained.py", "src/pretrained.py")):
        return True
    if any((d / "src" / "pretrained.py").is_file() for d in path.glob("lab04*") if d.is_dir()):
        return True  # the chapter folder: lab04_pretrained_weights/ (and lab03_decoder_transformer/) inside
    entries = [e for e in path.iterdir() if not e.name.startswith(".") and e.name not in SKIPPED_DIRS]
    return len([e for e in entries if e.suffix == ".ipynb"]) == 1 and not any(e.is_dir() for e in entries)


def discover(folder: Path) -> dict[str, Path]:
    """Each sub-folder, zip or notebook of ``folder`` is one student: name -> path."""
    found: dict[str, Path] = {}
    for entry in sorted(Path(folder).iterdir()):
        if entry.name.startswith((".", "_")) or entry.is_symlink() or entry.name in SKIPPED_DIRS:
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
    if not folder.is_dir() or is_submission(folder):
        return False
    return sum(1 for p in discover(folder).values() if p.is_file() or is_submission(p) or _holds_code(p)) >= 2


def _holds_code(folder: Path) -> bool:
    return folder.is_dir() and (any(folder.rglob("pretrained.py")) or any(folder.rglob("*.ipynb")))


def content_hash(path: Path) -> str:
    """sha256 over a submission's files (names and bytes); symbolic links are not followed."""
    digest = hashlib.sha256()
    path = Path(path)
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file() and not p.is_symlink())
    for file in files:
        name = str(file.relative_to(path) if path.is_dir() else file.name)
        digest.update(name.encode("utf-8", "surrogateescape") + b"\0")
        with file.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
        digest.update(b"\0")
    return digest.hexdigest()


def settings_of(config: GradeConfig, expectations: Expectations) -> dict[str, Any]:
    """Everything besides the submission that a report depends on, in words staff can compare."""
    limits = asdict(config.limits)
    limits.pop("uid", None)  # which uid ran it does not change a verdict
    return {
        "grader": __version__,
        "checkpoints": {role: f"{s.name} ({s.sha256[:12]})" for role, s in expectations.sources.items()},
        "points": config.points,
        "limits": {k: str(v) for k, v in sorted(limits.items())},
    }


def _digest(settings: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()


def changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """What differs between two configurations, one phrase each ('checkpoints.primary: small -> tiny')."""
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += [f"{key}.{item}" for item in changes(a, b)]
        elif a != b:
            out.append(f"{key}: {a} -> {b}")
    return out


def job_bytes(parameters: int) -> int:
    """The resident memory one job needs on a primary checkpoint of ``parameters`` (not the address-space limit)."""
    return (defaults.JOB_BASE_MB << 20) + defaults.JOB_BYTES_PER_PARAMETER * parameters


def memory_jobs(requested: int, per_job_bytes: int, available: int | None = None) -> int:
    """At most as many jobs as the available memory (``MemAvailable``, unless given) holds at ``per_job_bytes`` each."""
    if available is None:
        try:
            available = int(Path("/proc/meminfo").read_text().split("MemAvailable:")[1].split()[0]) * 1024
        except (OSError, IndexError, ValueError):
            return requested
    return max(1, min(requested, int(available * 0.9) // max(per_job_bytes, 1)))


def failure_report(config: GradeConfig, message: str) -> Report:
    """A report for a submission the grader itself failed on: zero points, the reason for staff."""
    detail = "The grader failed on this submission (not your fault); course staff have been told."
    tiers = [TierResult(t.NAME, t.TITLE, "error", 0.0, config.points[t.NAME], detail) for t in TIERS]
    return Report(
        tiers=tiers,
        decoder="unknown",
        models={},
        submission={"path": str(config.submission), "problem": "grader failure"},
        tolerances={"logits": "n/a"},
        versions={"grader": __version__},
        limits={},
        execution_time=0.0,
        internal_errors=[message],
    )


class State:
    """The batch's memory of which report came from which inputs (a JSON file beside the reports)."""

    def __init__(self, path: Path):
        self.path = path
        self.lock = threading.Lock()
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            data = {}
        data = data if isinstance(data, dict) else {}
        self.settings: dict[str, Any] = data.get("settings", {}) if isinstance(data.get("settings"), dict) else {}
        self.source: str = str(data.get("submissions", ""))
        entries = data.get("students", {})
        self.entries: dict[str, dict] = entries if isinstance(entries, dict) else {}

    def current(self, name: str, key: str, report: Path) -> bool:
        return self.entries.get(name, {}).get("key") == key and report.is_file()

    def record(self, name: str, key: str, score: float, seconds: float) -> None:
        with self.lock:
            self.entries[name] = {
                "key": key,
                "score": score,
                "seconds": round(seconds, 2),
                "when": time.strftime("%Y-%m-%dT%H:%M:%S"),
            }
            self.save()

    def save(self) -> None:
        data = {"submissions": self.source, "settings": self.settings, "students": self.entries}
        write_atomic(self.path, json.dumps(data, indent=1, sort_keys=True))

    def mean_seconds(self) -> float | None:
        times = [e.get("seconds") for e in self.entries.values() if isinstance(e.get("seconds"), (int, float))]
        return sum(times) / len(times) if times else None


def run_batch(
    batch: BatchConfig, progress: Progress | None = None, expectations: Expectations | None = None
) -> list[Outcome]:
    """Grade every submission of ``batch.submissions`` that has no current report; never stops early."""
    submissions = discover(batch.submissions)
    if not submissions:
        raise ConfigError(f"{batch.submissions} holds no submissions (sub-folders, .zip or .ipynb files)")
    unknown = [n for n in batch.only if n not in submissions]
    if unknown:
        raise ConfigError(f"no submission named {', '.join(unknown)} in {batch.submissions}")
    batch.reports.mkdir(parents=True, exist_ok=True)
    expectations = expectations or prepare_expectations(batch.grading)
    state = _open_state(batch, settings_of(batch.grading, expectations))
    outcomes, todo = _plan(batch, submissions, state, progress)
    if not todo:
        return sorted(outcomes, key=lambda o: o.name)
    (batch.reports / ".zygotes").mkdir(exist_ok=True)
    # The fork servers import torch and transformers (seconds) in their own processes while the truth is computed.
    zygotes = start_zygotes(batch.grading.limits, batch.reports / ".zygotes", expectations)

    def one(name: str, path: Path, key: str) -> Outcome:
        started = time.monotonic()
        out = batch.reports / f"{name}.json"
        config = replace(batch.grading, submission=path, out=out)
        try:
            report = grade(config, expectations=expectations, zygotes=zygotes)
            status, message = "graded", ""
        except Exception as exc:  # noqa: BLE001 - one submission must never stop the batch
            report = failure_report(config, traceback.format_exc())
            status, message = "failed", f"{type(exc).__name__}: {exc}"
        try:
            write_report(report, out)
        except Exception as exc:  # noqa: BLE001 - a report that cannot be written fails that student only
            status, message = "failed", f"cannot write {out.name}: {exc}"
        seconds = time.monotonic() - started
        if status == "graded":
            state.record(name, key, report.score, seconds)
        return Outcome(name, status, report.score, seconds, message)

    # The truth, GPT-2's trace and its float64 weights are computed while the fork servers import torch and the
    # first students build their models: a tier that needs a part of it waits for that part alone.
    warming = threading.Thread(target=expectations.warm, kwargs={"diagnosis": True}, daemon=True, name="lab04-truth")
    warming.start()
    try:
        outcomes += _grade_all(todo, one, batch.jobs, progress)
    finally:
        warming.join()
        for zygote in zygotes.values():
            zygote.close()
    return sorted(outcomes, key=lambda o: o.name)


def _open_state(batch: BatchConfig, settings: dict[str, Any]) -> State:
    """The batch's state file, refusing (without --force) reports made with another configuration."""
    state = State(batch.reports / STATE_FILE)
    if state.entries and state.settings and _digest(state.settings) != _digest(settings) and not batch.force:
        raise ConfigError(
            f"the reports in {batch.reports} were made with another configuration ("
            + "; ".join(changes(state.settings, settings)[:6])
            + "): pass --force to regrade everyone with this one, or repeat the earlier options"
        )
    state.settings, state.source = settings, str(Path(batch.submissions).resolve())
    state.save()
    return state


def _plan(
    batch: BatchConfig, submissions: dict[str, Path], state: State, progress: Progress | None
) -> tuple[list[Outcome], list[tuple[str, Path, str]]]:
    """The submissions whose report is current (reported at once) and the ones to grade, with their keys."""
    settings_key = _digest(state.settings)
    outcomes: list[Outcome] = []
    todo: list[tuple[str, Path, str]] = []
    for name, path in submissions.items():
        key = hashlib.sha256((content_hash(path) + settings_key).encode()).hexdigest()
        forced = batch.force or name in batch.only
        skipped = batch.only and name not in batch.only
        if skipped or (not forced and state.current(name, key, batch.reports / f"{name}.json")):
            outcome = Outcome(name, "current", score=state.entries.get(name, {}).get("score"))
            outcomes.append(outcome)
            if progress:
                progress(outcome)
        else:
            todo.append((name, path, key))
    return outcomes, todo


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


def stale_reports(reports: Path, submissions: Path) -> list[str]:
    """Reports whose submission is no longer in the submissions folder."""
    present = set(discover(submissions)) if Path(submissions).is_dir() else set()
    return sorted(p.stem for p in Path(reports).glob("*.json") if p.stem not in present)
