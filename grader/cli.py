"""The ``grade`` command. A thin layer: options become a GradeConfig, the engine does the work.

Only this module turns the grader's exceptions into exit codes: 1 when the
grader cannot work (GraderError), 2 for bad usage (ConfigError).
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path

import click

from . import __version__
from .config import DEFAULT_POINTS_FILE, GradeConfig, load_points
from .errors import ConfigError, GraderError
from .report import Report, TierResult, write_report
from .sandbox import Limits

STATUS_COLOURS = {"passed": "green", "failed": "red", "error": "red", "timeout": "yellow", "skipped": "yellow"}


class DefaultGroup(click.Group):
    """``grade SUBMISSION ...`` means ``grade run SUBMISSION ...``; other words name subcommands."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("-h", "--help", "--version"):
            args = ["run", *args]
        return super().parse_args(ctx, args)


@click.group(cls=DefaultGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="grade")
def main() -> None:
    """Grade Lab 04 submissions (GPT-2 weights in a NumPy GPT).

    \b
      grade SUBMISSION --out results.json     grade one submission (same as `grade run`)
      grade checkpoints build                 build the offline checkpoints
      grade template build                    regenerate student_template/ from reference/

    \b
    Main grading options (all of them: `grade run --help`):
      --out PATH            the Gradescope results.json to write [results.json]
      --model NAME_OR_DIR   tiny (default), wide, small, a local checkpoint folder, or a hub name
      --timeout SECONDS     wall clock per tier in the student process [60]
      --memory-mb MB        memory limit of the student process [6144]

    Exit codes: 0 when a report was written (however the submission did), 1 when the grader
    itself cannot work (unreadable model, unwritable --out), 2 for bad usage.
    """


def _check_writable(out: Path) -> None:
    parent = out.resolve().parent
    if not parent.is_dir():
        raise GraderError(f"cannot write the report to {out}: the folder {parent} does not exist")
    if not os.access(parent, os.W_OK) or (out.exists() and not os.access(out, os.W_OK)):
        raise GraderError(f"cannot write the report to {out}: permission denied")
    if out.is_dir():
        raise GraderError(f"cannot write the report to {out}: it is a folder")


def _print_progress(result: TierResult) -> None:
    colour = STATUS_COLOURS.get(result.status)
    click.echo(
        f"  {result.name:<10} " + click.style(f"{result.status:<8}", fg=colour) + f" {result.seconds:5.1f} s", err=True
    )


def print_summary(report: Report, out: Path) -> None:
    """A short table: one line per tier, the first line of its feedback."""
    width = shutil.get_terminal_size((100, 20)).columns
    decoder = "your decoder.py" if report.decoder == "submission" else "reference decoder"
    click.echo(f"\nLab 04: {report.score:g}/{report.max_score:g} points  (model: {report.model.source}; {decoder})")
    click.echo(f"  {'tier':<10} {'status':<8} {'points':>7}  detail")
    for t in report.tiers:
        lines = t.detail.splitlines() or [""]
        first = lines[0]
        if first.endswith(":") and len(lines) > 1:  # a heading: show what it announces
            first = f"{first} {lines[1].lstrip(' -')}"
        room = max(20, width - 33)
        if len(first) > room:
            first = first[: room - 3] + "..."
        status = click.style(f"{t.status:<8}", fg=STATUS_COLOURS.get(t.status))
        click.echo(f"  {t.name:<10} {status} {t.score:>3g}/{t.max_score:<3g}  {first}")
    click.echo(f"Report written to {out} ({report.execution_time:.1f} s). Full feedback is in each test's output.")


@main.command("run")
@click.argument("submission", type=click.Path(exists=True, path_type=Path))
@click.option(
    "--out",
    "-o",
    type=click.Path(path_type=Path),
    default=Path("results.json"),
    show_default=True,
    help="Where to write the Gradescope results.json.",
)
@click.option(
    "--model",
    "-m",
    default="tiny",
    show_default=True,
    metavar="NAME_OR_DIR",
    help="Checkpoint to grade against: a built-in one (tiny, wide, small), a local HuggingFace "
    "folder, or a hub name such as gpt2 (needs the hub or its cache).",
)
@click.option(
    "--second-model",
    default="wide",
    show_default=True,
    metavar="NAME_OR_DIR|none",
    help="A second checkpoint with another depth and width, for loaders hard-wired to 12 x 768. 'none' to skip.",
)
@click.option(
    "--checkpoint-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where built-in checkpoints live [default: $LAB04_CHECKPOINT_DIR or ~/.cache/lab04/checkpoints].",
)
@click.option(
    "--points",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help=f"TOML file of points per tier (defaults: {DEFAULT_POINTS_FILE.name}, summing to 100).",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=1),
    default=60.0,
    show_default=True,
    help="Wall-clock seconds each tier may take in the student process.",
)
@click.option(
    "--memory-mb",
    type=click.IntRange(min=256),
    default=6144,
    show_default=True,
    help="Address-space limit of the student process.",
)
@click.option(
    "--threads",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="BLAS/OpenMP threads for the student process.",
)
@click.option("--keep-workdir", is_flag=True, help="Keep the temporary folder (submission copy, logs) for debugging.")
@click.option("--quiet", "-q", is_flag=True, help="Print nothing but errors; the report is still written.")
def run(submission: Path, out: Path, model: str, second_model: str, checkpoint_dir: Path | None, points: Path | None,
        timeout: float, memory_mb: int, threads: int, keep_workdir: bool, quiet: bool) -> None:  # fmt: skip
    """Grade SUBMISSION and write a Gradescope results.json.

    SUBMISSION is a folder holding pretrained.py (at its top or in src/, decoder.py optional), a .zip of
    such a folder, or a .ipynb notebook. The exit code is 0 whenever the report was written, however the
    submission did; 1 when the grader itself cannot work; 2 for bad usage.
    """
    from .engine import grade

    try:
        config = GradeConfig(
            submission=submission,
            out=out,
            model=model,
            second_model=None if second_model.lower() == "none" else second_model,
            checkpoint_dir=checkpoint_dir,
            points=load_points(points),
            limits=Limits(timeout=timeout, memory_bytes=memory_mb * 2**20, threads=threads),
            keep_workdir=keep_workdir,
        )
        _check_writable(out)
        if not quiet:
            click.echo(f"Grading {submission} against {model} ...", err=True)
        report = grade(config, progress=None if quiet else _print_progress)
        write_report(report, out)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    except GraderError as exc:
        raise click.ClickException(str(exc)) from None
    except OSError as exc:
        raise click.ClickException(f"cannot write the report to {out}: {exc.strerror or exc}") from None
    if not quiet:
        print_summary(report, out)


@main.group()
def checkpoints() -> None:
    """Build and list the offline GPT-2 checkpoints."""


@checkpoints.command("build")
@click.argument("names", nargs=-1)
@click.option(
    "--all", "build_all", is_flag=True, help="Build every built-in checkpoint, the 124M-parameter 'small' too."
)
@click.option(
    "--dir",
    "root",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Target folder [default: $LAB04_CHECKPOINT_DIR or ~/.cache/lab04/checkpoints].",
)
def checkpoints_build(names: tuple[str, ...], build_all: bool, root: Path | None) -> None:
    """Build checkpoints NAMES (default: tiny and wide). Deterministic; already built ones are kept."""
    from .lab.checkpoints import default_root, ensure_checkpoint
    from .models import BUILTIN

    chosen = list(BUILTIN) if build_all else list(names) or ["tiny", "wide"]
    unknown = [n for n in chosen if n not in BUILTIN]
    if unknown:
        raise click.UsageError(f"unknown checkpoint {unknown[0]!r}; choose from {', '.join(BUILTIN)}")
    root = root or default_root()
    for name in chosen:
        started = time.monotonic()
        try:
            folder = ensure_checkpoint(BUILTIN[name], root)
        except OSError as exc:
            raise click.ClickException(f"cannot build {name} in {root}: {exc}") from None
        click.echo(f"{name:<6} {folder}  ({time.monotonic() - started:.1f} s)")


@checkpoints.command("list")
@click.option("--dir", "root", type=click.Path(file_okay=False, path_type=Path), default=None)
def checkpoints_list(root: Path | None) -> None:
    """Show the built-in checkpoints and whether they are built."""
    from .lab.checkpoints import default_root, is_built
    from .models import BUILTIN, BUILTIN_HELP

    root = root or default_root()
    for name, spec in BUILTIN.items():
        state = "built" if is_built(spec, root / name) else "not built"
        click.echo(f"{name:<6} {state:<10} {BUILTIN_HELP[name]}  [{root / name}]")


@main.group()
def template() -> None:
    """Generate the student template from the reference solution."""


@template.command("build")
@click.option("--check", is_flag=True, help="Only compare; exit 1 if student_template/ is out of date.")
@click.option(
    "--dest",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Target folder [default: student_template/ beside reference/].",
)
def template_build(check: bool, dest: Path | None) -> None:
    """Regenerate student_template/ (stubs, tests, notebook, checks) from reference/."""
    from .template import REPO, TemplateError, build_template, differences

    dest = dest or REPO / "student_template"
    try:
        if check:
            diffs = differences(dest)
            if diffs:
                raise click.ClickException("student_template/ is out of date: " + ", ".join(diffs[:5]))
            click.echo("student_template/ is up to date.")
            return
        written = build_template(dest)
    except TemplateError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"Wrote {len(written)} files to {dest}")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
