"""The ``grade`` command. A thin layer: options become a GradeConfig, the engine does the work.

Each grading option is declared once (``GRADING_OPTIONS``) and shared by the commands
that grade. Only this module turns the grader's exceptions into exit codes: 1 when the
grader cannot work (GraderError), 2 for bad usage (ConfigError). It imports neither
NumPy nor torch until a command needs them, so ``grade --help`` is quick.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from . import __version__, defaults
from .config import GradeConfig
from .console import BatchProgress, print_progress, print_summary
from .errors import ConfigError, GraderError
from .options import (
    BATCH_OPTIONS,
    BUNDLE_GRADING,
    BUNDLE_OPTIONS,
    GRADING_OPTIONS,
    PRESENTATION_OPTIONS,
    make_config,
    make_presentation,
    options,
)
from .outputs.report import Presentation


class DefaultGroup(click.Group):
    """``grade SUBMISSION ...`` means ``grade run SUBMISSION ...``; other words name subcommands."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("-h", "--help", "--version"):
            args = ["run", *args]
        return super().parse_args(ctx, args)


@contextmanager
def exit_codes(doing: str | None = None) -> Iterator[None]:
    """Turn the grader's own exceptions into exit codes: 2 for bad usage, 1 when it cannot work.

    ``doing`` names the action an ``OSError`` interrupts ("write the report to r.json"); without
    it an ``OSError`` is a bug and keeps its traceback.
    """
    try:
        yield
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    except GraderError as exc:
        raise click.ClickException(str(exc)) from None
    except OSError as exc:
        if doing is None:
            raise
        where = f" ({exc.filename})" if exc.filename else ""
        raise click.ClickException(f"cannot {doing}: {exc.strerror or exc}{where}") from None


@click.group(cls=DefaultGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="grade")
def main() -> None:
    """Grade Lab 04 submissions (GPT-2 weights in a NumPy GPT).

    \b
      grade SUBMISSION --out results.json     grade one submission (same as `grade run`)
      grade CLASS_DIR --out reports/ -j 2     grade a folder of submissions, resumably, in parallel
      grade regrade REPORTS_DIR NAME...       regrade named students of a batch
      grade summary REPORTS_DIR               gradebook.csv and summary.html from a folder of reports
      grade checkpoints build                 build the offline checkpoints
      grade template build                    regenerate student_template/ from reference/
      grade gradescope build                  the autograder zip to upload to Gradescope

    \b
    Main grading options (all of them: `grade run --help`):
      --out PATH            the results.json (or, for a class, the folder) to write
      --model NAME_OR_DIR   tiny (default), wide, small, a local checkpoint folder, or a hub name
      --timeout SECONDS     wall clock per tier [60]
      --memory-mb MB        memory limit of each student process [6144]

    Exit codes: 0 when a report was written (however the submission did), 1 when the grader
    itself cannot work (unreadable model, unwritable --out), 2 for bad usage.
    """
    for variable in defaults.THREAD_VARIABLES:  # before NumPy is imported; a value staff set is kept
        os.environ.setdefault(variable, str(defaults.GRADER_THREADS))


def _check_writable(out: Path) -> None:
    parent = out.resolve().parent
    if not parent.is_dir():
        raise GraderError(f"cannot write the report to {out}: the folder {parent} does not exist")
    if out.is_dir():
        raise GraderError(f"cannot write the report to {out}: it is a folder")
    if not os.access(parent, os.W_OK) or (out.exists() and not os.access(out, os.W_OK)):
        raise GraderError(f"cannot write the report to {out}: permission denied")


@main.command("run")
@click.argument("submission", type=click.Path(exists=True, path_type=Path))
@click.option(
    "--out",
    "-o",
    type=click.Path(path_type=Path),
    default=Path("results.json"),
    show_default=True,
    help="The results.json to write; for a class, the folder of reports. A path ending in .json is "
    "always one submission.",
)
@click.option(
    "--format",
    "report_format",
    type=click.Choice(["gradescope", "prairielearn"]),
    default="gradescope",
    show_default=True,
    help="The results format: Gradescope's results.json or PrairieLearn's.",
)
@options(GRADING_OPTIONS, BATCH_OPTIONS, PRESENTATION_OPTIONS)
def run(
    submission: Path, out: Path, report_format: str, jobs: int | None, force: bool, quiet: bool, **grading: Any
) -> None:
    """Grade SUBMISSION and write its report.

    SUBMISSION is a folder holding pretrained.py (at its top, in src/, or the course's chapter layout with
    lab04_pretrained_weights/ and lab03_decoder_transformer/), a .zip of one, or a .ipynb notebook.

    \b
    Batch mode: when SUBMISSION is a folder of submissions (each sub-folder, .zip or .ipynb is one
    student) or --jobs is given, OUT is a folder: one NAME.json per student, gradebook.csv and
    summary.html. A re-run skips submissions whose report is current.
    """
    from .grading.batch import looks_like_class

    with exit_codes(f"write the report to {out}"):
        config = make_config(submission, out, quiet=quiet, **grading)
        presentation = make_presentation(**grading)
        single = out.suffix == ".json"
        if not single and (jobs is not None or force or looks_like_class(submission)):
            if presentation != Presentation():
                raise ConfigError(
                    "the Gradescope presentation options apply to one submission's results.json, not to batch mode"
                )
            _run_batch(config, jobs or defaults.JOBS, force, quiet)
            return
        _check_writable(out)
        if not quiet:
            click.echo(f"Grading {submission} against {config.model} ...", err=True)
        from .grading.engine import grade

        report = grade(config, progress=None if quiet else print_progress)
        report.presentation = presentation
        _write(report, out, report_format)
    if not quiet:
        print_summary(report, out)


def _write(report: Any, out: Path, report_format: str) -> None:
    if report_format == "prairielearn":
        from .outputs.prairielearn import write_prairielearn

        write_prairielearn(report, out)
    else:
        from .outputs.report import write_report

        write_report(report, out)


def _run_batch(config: GradeConfig, jobs: int, force: bool, quiet: bool, only: tuple[str, ...] = ()) -> None:
    """Grade a folder of submissions into the folder ``config.out``, with progress and an ETA."""
    from .grading.batch import BatchConfig, State, discover, job_bytes, memory_jobs, run_batch
    from .grading.checkpoints import resolve_model
    from .outputs.summary import build_class_summary, class_result, load_rows

    if not config.submission.is_dir():
        raise ConfigError(f"batch mode needs a folder of submissions, not {config.submission}")
    if config.out.exists() and not config.out.is_dir():
        raise ConfigError(f"batch mode writes one report per submission: --out must be a folder, not {config.out}")
    need = job_bytes(resolve_model(config.model, config.checkpoint_dir).shape.parameters)
    allowed = memory_jobs(jobs, need)
    if allowed < jobs and not quiet:
        click.echo(
            f"Running {allowed} job(s), not {jobs}: the available memory holds {allowed} job(s) "
            f"of about {need / 2**30:.1f} GiB each on {config.model}.",
            err=True,
        )
    batch = BatchConfig(config.submission, config.out, config, jobs=allowed, force=force, only=only)
    total = len(only) if only else len(discover(config.submission))
    previous = State(config.out / ".batch-state.json").mean_seconds() if config.out.is_dir() else None
    reporter = BatchProgress(total, allowed, previous, quiet)
    outcomes = run_batch(batch, progress=reporter)
    failed = [f"{o.name}: {o.message}" for o in outcomes if o.status == "failed"]
    gradebook, html = build_class_summary(config.out, config.submission)
    graded = sum(o.status == "graded" for o in outcomes)
    current = sum(o.status == "current" for o in outcomes)
    click.echo(f"{graded} graded, {current} already current, {len(failed)} failed by the grader.")
    for line in failed:
        click.echo(f"  grader failure: {line}", err=True)
    click.echo(class_result(load_rows(config.out)))
    click.echo(f"Reports in {config.out}; gradebook {gradebook}; summary {html}")


@main.command("regrade")
@click.argument("reports_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("names", nargs=-1, required=True)
@options(GRADING_OPTIONS)
def regrade(reports_dir: Path, names: tuple[str, ...], quiet: bool, **grading: Any) -> None:
    """Regrade the students NAMES of the batch in REPORTS_DIR (their submissions are found where the batch
    found them), with the batch's options; other reports are kept."""
    from .grading.batch import STATE_FILE, State

    state = State(reports_dir / STATE_FILE)
    if not state.source:
        raise click.UsageError(f"{reports_dir} has no {STATE_FILE}: it is not the folder of a batch run")
    with exit_codes():
        config = make_config(Path(state.source), reports_dir, quiet=quiet, **grading)
        _run_batch(config, defaults.JOBS, False, quiet, only=names)


@main.command("summary")
@click.argument("reports_dir", type=click.Path(path_type=Path))
@click.option(
    "--submissions",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="The submissions folder, to flag reports whose submission is gone and to find Gradescope's "
    "submission_metadata.yml [default: the batch's, from .batch-state.json].",
)
@click.option(
    "--roster",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="A CSV of who each submission is: a 'name' column (the report's NAME) and any of email, sid, "
    "full_name, canvas_id, login_id, section. It wins over Gradescope's metadata.",
)
@click.option(
    "--canvas",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also write a Canvas gradebook import CSV here (needs --assignment).",
)
@click.option(
    "--assignment",
    default=None,
    metavar="NAME",
    help='The Canvas assignment column, e.g. "Lab 04" or, to update an existing one, "Lab 04 (1234)".',
)
def summary(
    reports_dir: Path, submissions: Path | None, roster: Path | None, canvas: Path | None, assignment: str | None
) -> None:
    """(Re)build the class gradebook (gradebook.csv), summary page (summary.html) and the students' pages
    (students/) from the reports (*.json) in REPORTS_DIR; with --canvas, a Canvas import CSV too."""
    from .outputs.gradebook import write_canvas
    from .outputs.summary import class_result, load_class, write_outputs

    if not reports_dir.is_dir():
        raise click.UsageError(f"REPORTS_DIR {reports_dir} is not a folder")
    if submissions is not None and not submissions.is_dir():
        raise click.UsageError(f"--submissions {submissions} is not a folder")
    if canvas is not None and not (assignment or "").strip():
        raise click.UsageError("--canvas needs --assignment: the name of the Canvas assignment column")
    with exit_codes("write the summary"):
        data = load_class(reports_dir, submissions, roster)
        written = list(write_outputs(data))
        if canvas is not None:
            data.warnings += write_canvas(data.rows, canvas, (assignment or "").strip())
            written.append(canvas)
    for warning in data.warnings:
        click.echo(f"warning: {warning}", err=True)
    for path in written:
        click.echo(path)
    click.echo(class_result(data.rows))


@main.group()
def checkpoints() -> None:
    """Build and list the offline GPT-2 checkpoints."""


@checkpoints.command("build")
@click.argument("names", nargs=-1)
@click.option("--all", "build_all", is_flag=True, help="Build every built-in checkpoint (large is 3 GB).")
@click.option(
    "--dir",
    "root",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Target folder [default: $LAB04_CHECKPOINT_DIR or ~/.cache/lab04/checkpoints].",
)
def checkpoints_build(names: tuple[str, ...], build_all: bool, root: Path | None) -> None:
    """Build checkpoints NAMES (default: tiny and wide). Deterministic; already built ones are kept."""
    from lab04_checks.checkpoints import default_root, ensure_checkpoint

    from .grading.checkpoints import BUILTIN, DEFAULT_BUILD, weights_sha256

    chosen = list(BUILTIN) if build_all else list(names) or list(DEFAULT_BUILD)
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
        click.echo(f"{name:<6} {folder}  sha256 {weights_sha256(folder)}  ({time.monotonic() - started:.1f} s)")


@checkpoints.command("list")
@click.option("--dir", "root", type=click.Path(file_okay=False, path_type=Path), default=None)
def checkpoints_list(root: Path | None) -> None:
    """Show the built-in checkpoints and whether they are built."""
    from lab04_checks.checkpoints import default_root

    from .grading.checkpoints import BUILTIN, BUILTIN_HELP

    root = root or default_root()
    for name in BUILTIN:
        state = "built" if (root / name / "lab04-checkpoint.json").is_file() else "not built"
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
    from .artifacts.template import REPO, TemplateError, build_template, differences

    dest = dest or REPO / "student_template"
    try:
        if check:
            diffs = differences(dest)
            if diffs:
                shown = ", ".join(diffs[:5]) + (f" and {len(diffs) - 5} more" if len(diffs) > 5 else "")
                raise click.ClickException(f"{dest} is out of date ({shown}): run `grade template build`")
            click.echo(f"{dest} is up to date.")
            return
        written = build_template(dest)
    except (TemplateError, GraderError, OSError, RuntimeError) as exc:  # a bad marker; the public checkpoint unbuilt
        raise click.ClickException(str(exc)) from None
    click.echo(f"Wrote {len(written)} files to {dest}")


@main.group()
def gradescope() -> None:
    """Build the Gradescope autograder bundle."""


@gradescope.command("build")
@options(BUNDLE_OPTIONS, BUNDLE_GRADING, PRESENTATION_OPTIONS)
def gradescope_build(out: Path, **o: Any) -> None:
    """Write the autograder zip to upload to Gradescope: setup.sh and run_autograder at its root, the
    grader's source, lab04.conf (the options and the checkpoint pins), constraints.txt (every
    dependency, locked from this virtualenv) and any local checkpoint.

    setup.sh bakes the checkpoints into the image, checked by sha256, so grading never needs the
    network. Exit codes: 0 when the zip was written, 1 when it cannot be, 2 for bad usage (a hub
    model without --revision and --sha256, for example).
    """
    from .artifacts.gradescope import build_bundle, bundle_config

    with exit_codes():
        config = bundle_config(
            out,
            presentation=make_presentation(**o),
            **{
                k: o[k]
                for k in (
                    "model",
                    "second_model",
                    "function_model",
                    "revision",
                    "sha256",
                    "second_revision",
                    "second_sha256",
                    "checkpoint_dir",
                    "points",
                    "timeout",
                    "memory_mb",
                    "threads",
                    "deadline",
                )
            },
        )
        entries = build_bundle(config)
    for role, pin in (
        ("model", config.model),
        ("second model", config.second_model),
        ("function model", config.function_model),
    ):
        at = f" @ {pin.revision}" if pin and pin.revision else ""
        click.echo(f"{role:<15} " + (f"{pin.kind} {pin.name}{at}  (sha256 {pin.sha256[:16]}...)" if pin else "none"))
    click.echo(
        f"torch           {config.torch} (CPU build, from {config.torch_index}); "
        f"{len(config.constraints)} distributions locked in constraints.txt"
    )
    for warning in config.warnings:
        click.echo(f"Warning: {warning}", err=True)
    click.echo(
        f"Wrote {out} ({len(entries)} files, {out.stat().st_size / 2**20:.1f} MB). Upload it in Gradescope: "
        "Configure Autograder > Zip file upload (see README.md, On Gradescope)."
    )


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
