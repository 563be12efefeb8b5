"""Grade one submission: prepare it, run every tier in the student process, judge, report."""

from __future__ import annotations

import platform
import shutil
import time
import traceback
from collections.abc import Callable
from types import ModuleType

import numpy as np

from . import __version__
from .config import GradeConfig
from .errors import GraderError
from .inputs import build_job
from .lab.common import LOGITS_RTOL, WEIGHTS_RTOL, Job
from .lab.diagnose import failure_hint
from .lab.tiers import TIERS
from .lab.truth import Truth
from .models import ModelSource, resolve_model
from .report import ModelInfo, Report, TierResult
from .sandbox import ChildSession, Reply, scratch_dir
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


def _rename_cells(text: str, prepared: Prepared) -> str:
    """Point notebook students at their cells, not at the grader's generated files."""
    for generated, label in prepared.cell_files.items():
        text = text.replace(f"{generated}, line", f"{label}, line")
    return text


def grade(config: GradeConfig, progress: Progress | None = None) -> Report:
    """Grade ``config.submission`` and return the report (the caller writes it)."""
    started = time.monotonic()
    _quiet_transformers()
    scratch = scratch_dir()
    internal: list[str] = []
    results: list[TierResult] = []
    decoder = None
    stdout = stderr = ""
    resources: dict[str, float] = {}
    session = None
    try:
        prepared = prepare(config.submission, scratch / "submission")
        if not prepared.problem:
            session = ChildSession(prepared.work, prepared.decoder, config.limits, scratch)
            session.start()  # the student process imports torch while we load the checkpoints below
        primary, second, job, truth = _expectations(config)
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
        limits={"timeout_s": limits.timeout, "memory_bytes": limits.memory_bytes, "threads": limits.threads},
        execution_time=time.monotonic() - started,
        student_stdout=stdout,
        student_stderr=stderr,
        internal_errors=internal,
        resources={**resources, "grader_peak_rss_mb": round(_own_peak_rss() / 2**20, 1)},
    )


def _expectations(config: GradeConfig) -> tuple[ModelSource, ModelSource | None, Job, Truth]:
    """Resolve the checkpoints and prepare the trusted side; GraderError when a model is unusable."""
    primary = resolve_model(config.model, config.checkpoint_dir)
    second = resolve_model(config.second_model, config.checkpoint_dir) if config.second_model else None
    truth_probe = Truth(Job(checkpoints=(primary.ref(),)))
    try:
        tokenizer = truth_probe.primary.tokenizer
        truth_probe.primary.hf_model  # noqa: B018 - fail now, as a grader error, if the weights are unreadable
    except Exception as exc:  # noqa: BLE001
        raise GraderError(f"cannot load the checkpoint {primary.source}: {exc}") from None
    job = build_job(primary, second, tokenizer)
    truth = Truth(job)
    truth.checkpoints[0] = truth_probe.primary  # already loaded
    return primary, second, job, truth
