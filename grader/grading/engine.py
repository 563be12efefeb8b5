"""Grade one submission: prepare it, start its sandboxed processes, run every tier, build the report.

The path of one submission, in order: ``submission.prepare`` lays it out; the expected
values are ready (``prepare_expectations``: checkpoints first, then the inputs chosen
for this run, then the truth on them); a ``Session`` starts the two student processes;
each tier of ``TIERS`` runs under its own deadline and returns a ``Verdict``; the
verdicts become the ``Report`` (``grader.outputs.report``), which the caller writes.
Nothing a submission does raises out of here: every failure becomes a tier's result.
"""

from __future__ import annotations

import functools
import platform
import resource
import shutil
import tempfile
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from lab04_checks.contract import LOGITS_RTOL, WEIGHTS_RTOL
from lab04_checks.notebook import describe_errors

from .. import __version__
from ..config import GradeConfig
from ..errors import GraderError
from ..outputs.report import Report, TierResult
from ..sandbox.limits import Limits
from ..sandbox.protocol import ProtocolError
from ..sandbox.zygote import Zygote
from . import inputs as inputs_module
from .checkpoints import ModelSource, resolve_model
from .outcome import Deadline, Stop
from .session import Imported, Session
from .submission import Prepared, prepare
from .tiers import LANES, LOADS, TIERS, compare
from .tiers.base import Verdict, from_failure
from .truth import Expected

Progress = Callable[[TierResult], None]
INTERNAL = "The grader hit an internal problem on this tier (not your fault); course staff have the details."
PRIMARY_WAIT_TIERS = 2  # the torch-free lane waits at most this many tiers' time for the primary's load


@dataclass
class Expectations:
    """The trusted side of grading: checkpoints by role, the inputs of this run, the truth on them."""

    roles: dict[str, str]
    checkpoints: dict[str, Expected]
    sources: dict[str, ModelSource]
    inputs: inputs_module.Inputs

    def warm(self, diagnosis: bool = False) -> None:
        """Compute what every submission needs, once (a batch does it before its jobs start); with
        ``diagnosis``, also GPT-2's trace that a wrong forward pass is compared with (a class has some)."""
        # In the order the first student's tiers ask: the logits, the function tiers' checkpoint, the second
        # one, the compare tier's cases; the trace last, since only a wrong forward pass needs it.
        primary = self.checkpoints[self.roles["primary"]]
        primary.warm(*(item.ids for item in self.inputs.logits))
        function = self.checkpoints[self.roles["function"]]
        function.warm()
        if self.roles.get("second"):
            self.checkpoints[self.roles["second"]].warm(self.inputs.second.ids)
        compare.warm(function, self.inputs)
        if diagnosis:
            primary.trace(self.inputs.traced())


def prepare_expectations(config: GradeConfig, seed: int | None = None) -> Expectations:
    """Resolve the checkpoints and choose this run's inputs; GraderError when a model is unusable."""
    sources = {"primary": resolve_model(config.model, config.checkpoint_dir)}
    if config.second_model:
        sources["second"] = resolve_model(config.second_model, config.checkpoint_dir)
    function = resolve_model(config.function_model, config.checkpoint_dir)
    # The function tiers test functions, not scale: the smaller of the function model and the primary.
    if sources["primary"].shape.parameters <= function.shape.parameters:
        function = sources["primary"]
    sources["function"] = function
    checkpoints: dict[str, Expected] = {}
    roles = {}
    for role, source in sources.items():
        if source.name in checkpoints and checkpoints[source.name].source.sha256 != source.sha256:
            raise GraderError(f"two different checkpoints are both called {source.name!r}")
        checkpoints.setdefault(source.name, Expected(source))
        roles[role] = source.name
    second = sources.get("second")
    chosen = inputs_module.choose(
        sources["primary"].shape, second.shape if second else None, config.seed if seed is None else seed
    )
    return Expectations(roles, checkpoints, sources, chosen)


def start_zygotes(limits: Limits, folder: Path, expectations: Expectations, shared: bool = True) -> dict[str, Zygote]:
    """The two fork servers: one with torch and transformers imported, one without; each preloads the
    harness's own objects (HuggingFace's model for the function tiers; the tokenizer for generate_text).

    ``shared=False`` (one submission): the torch server preloads nothing, since its only child would
    wait for it; that child loads HuggingFace's model when the compare tiers ask, beside the logits tier."""
    function = (str(expectations.sources["function"].path),) if shared else ()
    loaded = tuple(str(expectations.sources[r].path) for r in ("primary", "second") if r in expectations.sources)
    return {
        "numpy": Zygote("numpy", limits.threads, folder / "zygote-numpy.log", loaded),
        "torch": Zygote("torch", limits.threads, folder / "zygote-torch.log", function),
    }


@functools.cache
def _versions() -> dict[str, str]:
    """The versions a report names (package metadata is read once per process: a batch asks per student)."""

    def version(name: str) -> str:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return "not installed"

    return {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "torch": version("torch"),
        "transformers": version("transformers"),
        "grader": __version__,
    }


def _run_tier(tier: ModuleType, session: Session, timeout: float, internal: list[str]) -> Verdict:
    """One tier under its own deadline; nothing the submission does escapes as an exception."""
    try:
        return tier.run(session, Deadline(timeout))
    except Stop as stop:
        return from_failure(stop.failure)
    except GraderError:
        raise  # the sandbox itself failed (SandboxError): no verdict on the student can be made
    except ProtocolError as exc:
        return Verdict(
            "error", f"The student process sent a reply the grader cannot accept ({exc}); nothing of it counts."
        )
    except Exception:  # noqa: BLE001 - a bug of ours must not cost the student the report
        internal.append(f"{tier.NAME}:\n{traceback.format_exc(limit=12)}")
        return Verdict("error", INTERNAL)


def _import_first(session: Session, timeout: float, internal: list[str]) -> Verdict | None:
    """Import the submission in the torch process before any tier runs. A failure is the verdict of the
    report's first tier, as if that tier had imported it (a hang is its timeout, the other tiers skip)."""
    try:
        session.torch.ready(Deadline(timeout))
    except Stop as stop:
        return from_failure(stop.failure)
    except GraderError:
        raise
    except Exception:  # noqa: BLE001 - a bug of ours: the tiers import again, each on its own
        internal.append(f"import:\n{traceback.format_exc(limit=12)}")
    return None


def _run_tiers(
    session: Session, config: GradeConfig, prepared: Prepared, internal: list[str], progress: Progress | None
) -> list[TierResult]:
    """Every tier, reported in TIERS order. The import first; then the LANES of the torch process and of the
    torch-free one side by side, each in its order. The torch lane begins with LOADS, whose load of the
    primary checkpoint the torch-free lane waits for (outside any tier's time)."""
    done: dict[str, TierResult] = {}
    lock = threading.Lock()
    started = time.monotonic()
    failed_import = _import_first(session, config.limits.timeout, internal)
    import_seconds = time.monotonic() - started

    def one(tier: ModuleType) -> None:
        started = time.monotonic()
        if tier is TIERS[0] and failed_import is not None:
            verdict, started = failed_import, started - import_seconds
        else:
            verdict = _run_tier(tier, session, config.limits.timeout, internal)
        points = config.points[tier.NAME]
        result = TierResult(
            tier.NAME,
            tier.TITLE,
            verdict.status,
            points if verdict.status == "passed" else 0.0,
            points,
            prepared.rename(verdict.detail),  # notebook students see their cells, not generated files
            time.monotonic() - started,
            verdict.max_diff,
            verdict.tolerance,
            verdict.facts,
            [(key, prepared.rename(label)) for key, label in verdict.mistakes],
            {key: prepared.rename(words) for key, words in verdict.causes.items()},
        )
        with lock:
            done[tier.NAME] = result
            if progress:
                progress(result)

    failures: list[GraderError] = []

    def lane(tiers: tuple[ModuleType, ...]) -> None:
        try:
            if LOADS not in tiers:  # LOADS always ends, each of its requests within its tier's time
                session.primary_loaded.wait(PRIMARY_WAIT_TIERS * config.limits.timeout)
            for tier in tiers:
                one(tier)
                if tier is LOADS:
                    session.primary_loaded.set()  # it may not have loaded it (no load_gpt2_weights, say)
        except GraderError as exc:
            failures.append(exc)
        finally:
            session.primary_loaded.set()

    workers = [threading.Thread(target=lane, args=(tiers,), daemon=True) for tiers in LANES.values()]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    if failures:
        raise failures[0]
    return [done[t.NAME] for t in TIERS]


def _own_peak_bytes() -> int:
    """This process's high-water mark of resident memory (VmHWM: unlike ru_maxrss, not inherited across exec)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def start_here(results: list[TierResult]) -> str:
    """The one root cause that explains several failed tiers, in words, or ''."""
    failed = [r for r in results if r.status != "passed" and r.max_score > 0]
    counts = Counter(key for r in failed for key in r.causes)
    if not counts:
        return ""
    key, count = counts.most_common(1)[0]
    if count < 2:
        return ""
    text = next(r.causes[key] for r in failed if key in r.causes)
    lost = sum(r.max_score - r.score for r in failed if key in r.causes)
    return f"fix this first: {text}. It causes {count} of your {len(failed)} failed tiers ({lost:g} points)."


def _start_here(results: list[TierResult], prepared: Prepared | None, imported: Imported | None) -> str:
    """A notebook cell that raised comes first (the tiers depend on what it defines); else the shared root cause."""
    failed = any(r.status != "passed" and r.max_score > 0 for r in results)
    if failed and prepared is not None and prepared.cells and imported is not None and imported.cells:
        return "fix this first: " + describe_errors(list(imported.cells), prepared.cells, prepared.notebook)
    return start_here(results)


def _sandbox_report(session: Session | None, limits: Limits) -> dict:
    if session is None:
        return {}
    out: dict = {"uid": session.uid}
    missing: list[str] = []
    for agent in (session.torch, session.numpy):
        if agent.process is not None and agent.process.layers:
            out[agent.flavour] = agent.process.layers
            missing += [m for m in agent.process.layers.get("unavailable", []) if m not in missing]
    out["unavailable"] = missing
    if missing and limits.isolate:
        out["student_warning"] = (
            "Note: on this grading machine your code ran with less isolation than usual "
            "(course staff can see why); this does not change your score."
        )
    return out


def grade(
    config: GradeConfig,
    progress: Progress | None = None,
    expectations: Expectations | None = None,
    zygotes: dict[str, Zygote] | None = None,
) -> Report:
    """Grade ``config.submission`` and return the report (the caller writes it).

    A batch passes ``expectations`` and ``zygotes`` so that they are made once."""
    started = time.monotonic()
    scratch = Path(tempfile.mkdtemp(prefix="lab04-grade-"))
    scratch.chmod(0o755)
    own = zygotes is None
    internal: list[str] = []
    results: list[TierResult] = []
    session: Session | None = None
    prepared: Prepared | None = None
    warming: threading.Thread | None = None
    stdout = stderr = ""
    try:
        expectations = expectations or prepare_expectations(config)
        if own:
            zygotes = start_zygotes(config.limits, scratch, expectations, shared=False)  # torch imports meanwhile
        prepared = prepare(config.submission, scratch / "submission")
        if prepared.problem:
            for tier in TIERS:
                results.append(
                    TierResult(
                        tier.NAME,
                        tier.TITLE,
                        "error",
                        0.0,
                        config.points[tier.NAME],
                        f"Your submission could not be used: {prepared.problem}.",
                    )
                )
        else:
            session = Session(prepared, expectations, config.limits, zygotes, scratch)
            # The truth is computed while the student processes start and build their models; a tier that
            # needs a part of it first waits for that part (each is made once, under its lock).
            warming = threading.Thread(target=expectations.warm, daemon=True, name="lab04-truth")
            warming.start()
            session.start()
            results = _run_tiers(session, config, prepared, internal, progress)
    finally:
        if warming is not None:
            warming.join()
        if session is not None:
            session.close()
            outs = [a.process.output() for a in (session.torch, session.numpy) if a.process is not None]
            stdout = "\n".join(o[0] for o in outs if o[0])
            stderr = "\n".join(o[1] for o in outs if o[1])
        if own and zygotes:
            for zygote in zygotes.values():
                zygote.close()
        if not config.keep_workdir:
            shutil.rmtree(scratch, ignore_errors=True)
    return _report(config, prepared, expectations, session, results, internal, stdout, stderr, scratch, started)


def _report(
    config: GradeConfig,
    prepared: Prepared | None,
    expectations: Expectations | None,
    session: Session | None,
    results: list[TierResult],
    internal: list[str],
    stdout: str,
    stderr: str,
    scratch: Path,
    started: float,
) -> Report:
    """The report of one grading, from whatever got that far (any argument may be missing)."""
    imported = session.torch.imported if session is not None else None
    return Report(
        tiers=results,
        decoder=imported.model_class.origin if imported and imported.model_class else "none",
        models={role: expectations.sources[role].info() for role in expectations.roles} if expectations else {},
        submission=_submission_facts(config, prepared, scratch),
        tolerances={
            "logits": f"max |diff| <= {LOGITS_RTOL:g} * max(1, max |GPT-2 logit|)",
            "logits_rtol": LOGITS_RTOL,
            "weights_rtol": WEIGHTS_RTOL,
        },
        versions=dict(_versions()),
        limits=config.limits.reported(),
        sandbox=_sandbox_report(session, config.limits),
        execution_time=time.monotonic() - started,
        student_stdout=stdout,
        student_stderr=stderr,
        internal_errors=internal,
        resources=_resources(session),
        start_here=_start_here(results, prepared, imported),
        notes=_notes(session, prepared),
        seed=expectations.inputs.seed if expectations else None,
    )


def _submission_facts(config: GradeConfig, prepared: Prepared | None, scratch: Path) -> dict[str, Any]:
    """What the grader found in the submission: its kind, module, files and notes."""
    submission: dict[str, Any] = {"path": str(config.submission)}
    if prepared is not None:
        submission.update(
            kind=prepared.kind,
            module=prepared.module,
            files=prepared.files[:200],
            notes=prepared.notes,
            problem=prepared.problem,
        )
    if config.keep_workdir:
        submission["workdir"] = str(scratch)
    return submission


def _resources(session: Session | None) -> dict[str, Any]:
    """What the grading cost: peak memory of the grader and of each student process, start-ups, requests."""
    resources: dict[str, Any] = {"grader_peak_rss_mb": round(_own_peak_bytes() / 2**20, 1)}
    if session is None:
        return resources
    for agent in (session.torch, session.numpy):
        p = agent.process
        if p is not None:
            resources[f"{agent.flavour}_startup_seconds"] = round(p.startup_seconds, 3)
            resources[f"{agent.flavour}_starts"] = p.starts
            resources[f"{agent.flavour}_peak_rss_mb"] = round(p.peak_rss_bytes / 2**20, 1)
    resources["requests"] = session.requests
    return resources


def _notes(session: Session | None, prepared: Prepared | None) -> list[str]:
    """The session's notes, and each notebook cell that raised when the notebook ran top to bottom."""
    notes = list(session.notes) if session is not None else []
    imported = session.torch.imported if session is not None else None
    for cell in imported.cells if imported else ():
        where = prepared.cell_files.get(f"_cell_{cell['cell']:03d}.py", f"cell {cell['cell']}") if prepared else ""
        line = f", line {cell['line']}" if cell.get("line") else ""
        notes.append(
            f"{where}{line} raised {cell['type']}: {cell['message']} (the grader ran the notebook top to "
            "bottom, as Kernel > Restart and Run All does)"
        )
    return notes
