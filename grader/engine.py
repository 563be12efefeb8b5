"""Grade one submission: prepare it, run every tier in the student process, judge, report."""

from __future__ import annotations

import os
import platform
import re
import shutil
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from types import ModuleType

import numpy as np

from . import __version__
from .config import GradeConfig
from .errors import GraderError
from .inputs import build_job
from .lab.checkpoints import default_root
from .lab.common import LOGITS_RTOL, WEIGHTS_RTOL, Job
from .lab.diagnose import failure_hint
from .lab.tiers import TIERS
from .lab.truth import Truth
from .models import ModelSource, resolve_model
from .report import ModelInfo, Report, TierResult
from .sandbox import ChildSession, ForkServer, Reply, scratch_dir
from .submission import Prepared, prepare

Progress = Callable[[TierResult], None]
INTERNAL = "The grader hit an internal problem on this tier (not your fault); course staff have the details."
LOADER_FUNCTIONS = ("load_gpt2_weights", "GPTModel(...)")


def _model_info(source: ModelSource) -> ModelInfo:
    s = source.shape
    return ModelInfo(source.source, source.sha256, s.num_layers, s.d_model, s.num_heads, s.max_seq_len, s.vocab_size)


def _versions() -> dict[str, str]:
    import torch
    import transformers

    return {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "grader": __version__,
    }


def _own_peak_rss() -> int:
    """This process's high-water mark of resident memory, in bytes (Linux reports kB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _quiet_transformers() -> None:
    """No progress bars or advisory warnings from the grader's own HuggingFace calls."""
    import transformers

    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()


def _skip_reason(tier: ModuleType, history: list[tuple[str, Reply]]) -> str | None:
    """Why ``tier`` cannot usefully run after what happened to earlier tiers, or None."""
    for name, reply in history:
        if reply.kind not in ("timeout", "crashed"):
            continue
        what = "timed out" if reply.kind == "timeout" else "crashed"
        if reply.function == "importing pretrained.py":
            return f"importing your code {what} in the {name} tier"
        if tier.USES_LOADER and reply.function in LOADER_FUNCTIONS:
            return f"{reply.function} {what} in the {name} tier, and this tier needs a loaded model"
    return None


def _from_reply(tier: ModuleType, reply: Reply, job: Job, truth: Truth, internal: list[str]) -> tuple[str, str, dict]:
    """(status, detail, verdict extras) for one tier's reply."""
    if reply.kind == "ok":
        try:
            verdict = tier.judge(job, reply.collected, truth)
        except Exception:  # noqa: BLE001 - a bug of ours must not cost the student the report
            internal.append(f"{tier.NAME} judge:\n{traceback.format_exc()}")
            return "error", INTERNAL, {}
        return (
            verdict.status,
            verdict.detail,
            {"max_diff": verdict.max_diff, "tolerance": verdict.tolerance, "facts": verdict.facts},
        )
    if reply.kind == "student_error":
        record = reply.record or {}
        return "error", record.get("summary", "your code failed") + failure_hint(record, job.checkpoints[0].shape), {}
    if reply.kind == "timeout":
        what = reply.function or "your code"
        where = f"; it was at {reply.where}" if reply.where else ""
        return "timeout", f"{what} {reply.detail}{where}. Look for an endless loop or very slow code.", {}
    if reply.kind == "crashed":
        what = f"While running {reply.function}, " if reply.function else ""
        where = f" ({reply.where})" if reply.where else ""
        return "error", f"{what}{reply.detail}{where}. Earlier tiers keep their points.", {}
    internal.append(f"{tier.NAME} child:\n{reply.detail}")
    return "error", INTERNAL, {}


def diagnosis(results: list[TierResult]) -> list[dict[str, str]]:
    """The classic mistakes recognised in a submission, for the class summary: key, label, tier."""
    from .lab.mistakes import DECODER_MISTAKES

    advice = {m.key: m.advice for m in DECODER_MISTAKES}
    found: dict[str, dict[str, str]] = {}
    for result in results:
        if result.name == "shapes":
            findings = next(iter(result.facts.get("findings", {}).values()), [])  # the primary checkpoint
            for path, why in findings:
                where = re.sub(r"^blocks\.\d+\.", "", path)  # the same mistake in every layer counts once
                what = re.split(r"[;(:]", re.sub(r"(?<![\w.])-?\d+(\.\d+)?(e-?\d+)?", "N", why))[0].strip()
                label = f"{where} {what}"
                found.setdefault(label, {"key": label, "label": label, "tier": "shapes"})
        elif result.name == "logits":
            for key in result.facts.get("mistakes", []):
                label = advice.get(key, key.replace("_", " ")).split(";")[0]
                found.setdefault(key, {"key": key, "label": label, "tier": "logits"})
            if result.facts.get("torch"):
                found["torch_in_forward"] = {"key": "torch_in_forward", "label": "the forward pass uses torch",
                                             "tier": "logits"}  # fmt: skip
    return list(found.values())


def _rename_cells(text: str, prepared: Prepared) -> str:
    """Point notebook students at their cells, not at the grader's generated files."""
    for generated, label in prepared.cell_files.items():
        text = text.replace(f"{generated}, line", f"{label}, line")
    return text


def _private_paths(config: GradeConfig) -> list[Path]:
    """Paths of this run that the student process must not see: the report's folder, the checkpoints."""
    paths = [config.out.resolve().parent, config.checkpoint_dir or default_root()]
    for name in (config.model, config.second_model):
        if name and Path(name).is_dir():
            paths.append(Path(name).resolve().parent)
    return paths


@dataclass
class Expectations:
    """The trusted side of grading: checkpoints, the job and HuggingFace's answers; shared by a batch."""

    primary: ModelSource
    second: ModelSource | None
    job: Job
    truth: Truth

    def warm(self) -> None:
        """Compute everything every submission will need, once, before parallel grading starts."""
        for expected in self.truth.checkpoints:
            _ = expected.attributes, expected.candidates
        for token_input in self.job.inputs:
            self.truth.primary.logits(token_input.array())


def grade(
    config: GradeConfig,
    progress: Progress | None = None,
    expectations: Expectations | None = None,
    fork_server: ForkServer | None = None,
) -> Report:
    """Grade ``config.submission`` and return the report (the caller writes it).

    ``expectations`` (from ``prepare_expectations``) lets a batch load the checkpoints once."""
    started = time.monotonic()
    _quiet_transformers()
    scratch = scratch_dir()
    internal: list[str] = []
    results: list[TierResult] = []
    decoder = None
    stdout = stderr = ""
    resources: dict[str, float] = {}
    sandbox: dict = {}
    session = None
    try:
        prepared = prepare(config.submission, scratch / "submission")
        if not prepared.problem:
            limits = replace(config.limits, hide=(*config.limits.hide, *_private_paths(config)))
            session = ChildSession(prepared.work, prepared.decoder, limits, scratch, fork_server)
            session.start()  # the student process imports torch while we load the checkpoints below
        expectations = expectations or prepare_expectations(config)
        primary, second, job, truth = expectations.primary, expectations.second, expectations.job, expectations.truth
        if prepared.problem:
            for tier in TIERS:
                results.append(TierResult(tier.NAME, tier.TITLE, "error", 0.0, config.points[tier.NAME],
                                          f"Your submission could not be used: {prepared.problem}."))  # fmt: skip
        else:
            history: list[tuple[str, Reply]] = []
            for tier in TIERS:
                max_score = config.points[tier.NAME]
                skip = _skip_reason(tier, history)
                if skip:
                    result = TierResult(tier.NAME, tier.TITLE, "skipped", 0.0, max_score, f"Skipped: {skip}.")
                else:
                    reply = session.run(tier.NAME, job.to_json())
                    history.append((tier.NAME, reply))
                    decoder = decoder or reply.decoder
                    status, detail, extras = _from_reply(tier, reply, job, truth, internal)
                    score = max_score if status == "passed" else 0.0
                    result = TierResult(tier.NAME, tier.TITLE, status, score, max_score,
                                        _rename_cells(detail, prepared), reply.seconds, **extras)  # fmt: skip
                results.append(result)
                if progress:
                    progress(result)
    finally:
        if session is not None:
            session.close()
            stdout, stderr = session.output()
            sandbox = {**session.isolation, "user": "student" if session.isolation.get("uid") is not None else "grader"}
            resources = {
                "student_startup_seconds": round(session.startup_seconds, 3),
                "student_processes_started": session.starts,
                "student_peak_rss_mb": round(session.peak_rss_bytes / 2**20, 1),
            }
        if not config.keep_workdir:
            shutil.rmtree(scratch, ignore_errors=True)
    submission = {"path": str(config.submission), "kind": prepared.kind, "files": prepared.files,
                  "notes": prepared.notes, "problem": prepared.problem}  # fmt: skip
    if config.keep_workdir:
        submission["workdir"] = str(scratch)
    limits = config.limits
    return Report(
        tiers=results,
        decoder=decoder or prepared.decoder,
        model=_model_info(primary),
        second_model=_model_info(second) if second else None,
        submission=submission,
        tolerances={
            "logits": f"max |diff| <= {LOGITS_RTOL:g} * max(1, max |HuggingFace logit|)",
            "logits_rtol": LOGITS_RTOL,
            "weights_rtol": WEIGHTS_RTOL,
        },
        versions=_versions(),
        limits={
            "timeout_s": limits.timeout,
            "memory_bytes": limits.memory_bytes,
            "threads": limits.threads,
            "processes": limits.processes,
            "file_bytes": limits.file_bytes,
            "output_bytes": limits.output_bytes,
        },
        sandbox=sandbox,
        diagnosis=diagnosis(results),
        execution_time=time.monotonic() - started,
        student_stdout=stdout,
        student_stderr=stderr,
        internal_errors=internal,
        resources={**resources, "grader_peak_rss_mb": round(_own_peak_rss() / 2**20, 1)},
    )


def prepare_expectations(config: GradeConfig) -> Expectations:
    """Resolve the checkpoints and prepare the trusted side; GraderError when a model is unusable."""
    primary = resolve_model(config.model, config.checkpoint_dir)
    second = resolve_model(config.second_model, config.checkpoint_dir) if config.second_model else None
    _quiet_transformers()
    cache = Path(os.environ.get("LAB04_TRUTH_CACHE") or default_root().parent / "truth")
    weights = (primary.sha256, *((second.sha256,) if second else ()))
    truth_probe = Truth(Job(checkpoints=(primary.ref(),)), cache, weights[:1])
    try:
        tokenizer = truth_probe.primary.tokenizer
        truth_probe.primary.hf_model  # noqa: B018 - fail now, as a grader error, if the weights are unreadable
    except Exception as exc:  # noqa: BLE001
        raise GraderError(f"cannot load the checkpoint {primary.source}: {exc}") from None
    job = build_job(primary, second, tokenizer)
    truth = Truth(job, cache, weights)
    truth.checkpoints[0] = truth_probe.primary  # already loaded
    return Expectations(primary, second, job, truth)
