"""Every command-line option, declared once, and the frozen configuration built from them.

Commands take option groups (``options(GRADING_OPTIONS, ...)``); a command that needs only
some of a group ``pick``s them by name, so help text and defaults never exist twice.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from . import defaults
from .config import DEFAULT_POINTS_FILE, GradeConfig, load_points
from .outputs.report import VISIBILITIES, Presentation
from .sandbox.limits import Limits


def _option(*names: str, **kwargs: Any) -> Callable:
    """A click option that remembers its names, so that ``pick`` can share it."""
    decorator = click.option(*names, **kwargs)
    decorator.names = names  # type: ignore[attr-defined] - so that ``pick`` can reuse it by name
    return decorator


def _limit(name: str, kind: click.ParamType, default: float, help: str) -> Callable:
    """A resource limit of the student processes: a bounded number with its default shown."""
    return _option(name, type=kind, default=default, show_default=True, help=help)


def pick(group: tuple[Callable, ...], *names: str) -> tuple[Callable, ...]:
    """The options of ``group`` called ``names`` (another command shares them, still declared once)."""
    chosen = tuple(o for o in group if o.names[0] in names)  # type: ignore[attr-defined]
    assert len(chosen) == len(names), f"unknown option among {names}"
    return chosen


# The student processes' resource limits: option, type, default, help.
LIMITS = (
    ("--timeout", click.FloatRange(min=1), defaults.TIMEOUT_S, "Wall-clock seconds each tier may take."),
    ("--memory-mb", click.IntRange(min=256), defaults.MEMORY_MB,
     "Address-space limit of each student process (torch alone takes about 900 MB of it)."),
    ("--threads", click.IntRange(min=1), defaults.THREADS, "BLAS/OpenMP threads in each student process."),
    ("--processes", click.IntRange(min=8), defaults.PROCESSES, "Processes and threads the student's user may have."),
    ("--output-kb", click.IntRange(min=1), defaults.OUTPUT_KB,
     "Stdout and stderr kept from each student process, each; the rest is dropped."),
    ("--scratch-mb", click.IntRange(min=1), defaults.SCRATCH_MB, "Size of each student process's private /tmp."),
)  # fmt: skip


GRADING_OPTIONS = (
    _option(
        "--model",
        "-m",
        default=defaults.MODEL,
        show_default=True,
        metavar="NAME_OR_DIR",
        help="Checkpoint to grade against: a built-in one (tiny, wide, small, medium, large), a local "
        "HuggingFace folder, or a hub name such as gpt2 (needs the hub or its cache).",
    ),
    _option(
        "--second-model",
        default=defaults.SECOND_MODEL,
        show_default=True,
        metavar="NAME_OR_DIR|none",
        help="A second checkpoint of another depth and width, for loaders hard-wired to 12 x 768; 'none' to skip.",
    ),
    _option(
        "--function-model",
        default=defaults.FUNCTION_MODEL,
        show_default=True,
        metavar="NAME_OR_DIR",
        help="The small checkpoint the compare, intermediate and weights tiers test functions on.",
    ),
    _option(
        "--checkpoint-dir",
        type=click.Path(file_okay=False, path_type=Path),
        default=None,
        help="Where built-in checkpoints live [default: $LAB04_CHECKPOINT_DIR or ~/.cache/lab04/checkpoints].",
    ),
    _option(
        "--points",
        type=click.Path(exists=True, dir_okay=False, path_type=Path),
        default=None,
        help=f"TOML file of points per tier (defaults: {DEFAULT_POINTS_FILE.name}, summing to 100).",
    ),
    *(_limit(*row) for row in LIMITS),
    _option(
        "--sandbox-uid",
        type=click.IntRange(min=1),
        default=None,
        help=f"The unprivileged uid student code runs as when the grader is root [one per run from "
        f"{defaults.UID_RANGE[0]}-{defaults.UID_RANGE[1] - 1}].",
    ),
    _option(
        "--no-isolation",
        is_flag=True,
        help="Run student code without namespaces, a private root or a user of its own (debugging only).",
    ),
    _option(
        "--require-isolation",
        is_flag=True,
        help="Make a missing isolation layer a grader error (exit 1) instead of a note in the report.",
    ),
    _option("--seed", type=int, default=None, help="Seed of the inputs, to replay a run (the report records it)."),
    _option("--keep-workdir", is_flag=True, help="Keep the temporary folder (submission copy, logs) for debugging."),
    _option("--quiet", "-q", is_flag=True, help="Print nothing but errors; the report is still written."),
)


BATCH_OPTIONS = (
    _option(
        "--jobs",
        "-j",
        type=click.IntRange(min=1),
        default=None,
        help="Batch mode: submissions graded at once [1], capped by the memory available.",
    ),
    _option(
        "--force",
        is_flag=True,
        help="Batch mode: regrade every submission, even with a current report or a changed configuration.",
    ),
)


def _tier_visibility(
    ctx: click.Context, param: click.Parameter, values: tuple[str, ...]
) -> tuple[tuple[str, str], ...]:
    """``TIER=VIS`` pairs, checked against the tiers and Gradescope's visibilities."""
    if not values:
        return ()
    from .grading.tiers import TIER_NAMES

    pairs: dict[str, str] = {}
    for value in values:
        tier, _, visibility = value.partition("=")
        if tier not in TIER_NAMES or visibility not in VISIBILITIES:
            raise click.BadParameter(
                f"{value!r}: expected TIER=VISIBILITY with TIER one of {', '.join(TIER_NAMES)} "
                f"and VISIBILITY one of {', '.join(VISIBILITIES)}",
                ctx,
                param,
            )
        pairs[tier] = visibility
    return tuple(pairs.items())


_VISIBILITY = click.Choice(VISIBILITIES)


PRESENTATION_OPTIONS = (
    _option(
        "--output-format",
        type=click.Choice(["text", "md"]),
        default="text",
        show_default=True,
        help="Gradescope: how the feedback is rendered, plain text or Markdown.",
    ),
    _option(
        "--visibility",
        type=_VISIBILITY,
        default="visible",
        show_default=True,
        help="Gradescope: who sees each tier's test and when, unless --tier-visibility says otherwise.",
    ),
    _option(
        "--tier-visibility",
        multiple=True,
        metavar="TIER=VIS",
        callback=_tier_visibility,
        help="Gradescope: one tier's visibility, e.g. generate=after_due_date (repeatable).",
    ),
    _option(
        "--stdout-visibility",
        type=_VISIBILITY,
        default="hidden",
        show_default=True,
        help="Gradescope: whether students see the autograder's own output (the grader's log).",
    ),
    _option(
        "--leaderboard",
        is_flag=True,
        help="Gradescope: add a leaderboard column, the logits tier's max |diff| (smaller is better).",
    ),
)


def options(*groups: tuple[Callable, ...]) -> Callable:
    """Apply option groups to a command (each option declared once above)."""

    def apply(command: Callable) -> Callable:
        for group in reversed(groups):
            for option in reversed(group):
                command = option(command)
        return command

    return apply


def make_config(submission: Path, out: Path, **o: Any) -> GradeConfig:
    """The frozen configuration from the command line's grading options."""
    return GradeConfig(
        submission=submission,
        out=out,
        model=o["model"],
        second_model=None if o["second_model"].lower() == "none" else o["second_model"],
        function_model=o["function_model"],
        checkpoint_dir=o["checkpoint_dir"],
        points=load_points(o["points"]),
        limits=Limits(
            timeout=o["timeout"],
            memory_bytes=o["memory_mb"] << 20,
            threads=o["threads"],
            processes=o["processes"],
            output_bytes=o["output_kb"] << 10,
            scratch_bytes=o["scratch_mb"] << 20,
            isolate=not o["no_isolation"],
            require_isolation=o["require_isolation"],
            uid=o["sandbox_uid"],
        ),
        keep_workdir=o["keep_workdir"],
        seed=o["seed"],
    )


def make_presentation(**o: Any) -> Presentation:
    """How Gradescope shows the report, from the presentation options."""
    return Presentation(
        output_format=o["output_format"],
        visibility=o["visibility"],
        stdout_visibility=o["stdout_visibility"],
        tier_visibility=tuple(o["tier_visibility"]),
        leaderboard=o["leaderboard"],
    )


BUNDLE_OPTIONS = (
    _option(
        "--out",
        "-o",
        type=click.Path(dir_okay=False, path_type=Path),
        default=Path("autograder.zip"),
        show_default=True,
        help="The zip to upload to Gradescope.",
    ),
    _option("--revision", default=None, metavar="COMMIT", help="For a hub --model: the commit to download."),
    _option("--sha256", default=None, metavar="HASH", help="For a hub --model: the sha256 of its model.safetensors."),
    _option("--second-revision", default=None, metavar="COMMIT", help="For a hub --second-model."),
    _option("--second-sha256", default=None, metavar="HASH", help="For a hub --second-model."),
    _option(
        "--deadline",
        type=click.IntRange(min=60),
        default=540,
        show_default=True,
        help="Seconds after which run_autograder stops the grader and reports the failure itself; keep it "
        "below the assignment's time-out on Gradescope (10 minutes by default).",
    ),
)


BUNDLE_GRADING = pick(
    GRADING_OPTIONS,
    "--model",
    "--second-model",
    "--function-model",
    "--checkpoint-dir",
    "--points",
    "--timeout",
    "--memory-mb",
    "--threads",
)
