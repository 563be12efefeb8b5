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
from .sandbox import UID_RANGE, Limits

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
      grade CLASS_DIR --out reports/ -j 2     grade a folder of submissions, resumably, in parallel
      grade checkpoints build                 build the offline checkpoints
      grade template build                    regenerate student_template/ from reference/
      grade summary REPORTS_DIR               class gradebook.csv and summary.html from a folder of reports
      grade gradescope build                  the autograder zip to upload to Gradescope

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
@click.option(
    "--processes",
    type=click.IntRange(min=8),
    default=Limits.processes,
    show_default=True,
    help="Processes and threads the student's user may have (needs root).",
)
@click.option(
    "--output-mb",
    type=click.FloatRange(min=0.01),
    default=Limits.output_bytes / 2**20,
    show_default=True,
    help="Stdout and stderr of the student process kept, each; the rest is dropped.",
)
@click.option(
    "--hide",
    "hide",
    multiple=True,
    type=click.Path(path_type=Path),
    help="Another path the student process must not see (repeatable; needs root). The grader, the "
    "reference, homes, temporary folders, the checkpoints and the report's folder are always hidden.",
)
@click.option(
    "--sandbox-uid",
    type=click.IntRange(min=1),
    default=None,
    help=f"The unprivileged uid student code runs as when the grader is root [one per run from "
    f"{UID_RANGE[0]}-{UID_RANGE[1] - 1}].",
)
@click.option(
    "--no-isolation",
    is_flag=True,
    help="Run student code without namespaces, hidden files or a user of its own (for debugging only).",
)
@click.option(
    "--jobs",
    "-j",
    type=click.IntRange(min=1),
    default=None,
    help="Batch mode: submissions graded at once [1], capped by the memory available at --memory-mb each.",
)
@click.option("--force", is_flag=True, help="Batch mode: regrade every submission, even those with a current report.")
@click.option("--keep-workdir", is_flag=True, help="Keep the temporary folder (submission copy, logs) for debugging.")
@click.option("--quiet", "-q", is_flag=True, help="Print nothing but errors; the report is still written.")
def run(submission: Path, out: Path, model: str, second_model: str, checkpoint_dir: Path | None, points: Path | None,
        timeout: float, memory_mb: int, threads: int, processes: int, output_mb: float, hide: tuple[Path, ...],
        sandbox_uid: int | None, no_isolation: bool, jobs: int | None, force: bool, keep_workdir: bool,
        quiet: bool) -> None:  # fmt: skip
    """Grade SUBMISSION and write a Gradescope results.json.

    SUBMISSION is a folder holding pretrained.py (at its top or in src/, decoder.py optional), a .zip of
    such a folder, or a .ipynb notebook. The exit code is 0 whenever the report was written, however the
    submission did; 1 when the grader itself cannot work; 2 for bad usage.

    \b
    Batch mode: when SUBMISSION is a folder of submissions (each sub-folder, .zip or .ipynb is one
    student), or --jobs is given, OUT is a folder: one NAME.json per student, gradebook.csv and
    summary.html. Re-running skips submissions whose report is current; --force regrades all.
    """
    from .batch import looks_like_class
    from .engine import grade

    try:
        config = GradeConfig(
            submission=submission,
            out=out,
            model=model,
            second_model=None if second_model.lower() == "none" else second_model,
            checkpoint_dir=checkpoint_dir,
            points=load_points(points),
            limits=Limits(
                timeout=timeout,
                memory_bytes=memory_mb * 2**20,
                threads=threads,
                processes=processes,
                output_bytes=int(output_mb * 2**20),
                isolate=not no_isolation,
                uid=sandbox_uid,
                hide=(*hide, *([points] if points else [])),
            ),
            keep_workdir=keep_workdir,
        )
        if jobs is not None or force or looks_like_class(submission):
            _run_batch(config, jobs or 1, force, quiet)
            return
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


def _run_batch(config: GradeConfig, jobs: int, force: bool, quiet: bool) -> None:
    """Grade a folder of submissions into the folder ``config.out``, with a progress bar."""
    from .batch import BatchConfig, discover, memory_jobs, run_batch
    from .summary import build_class_summary, class_result, load_rows

    if not config.submission.is_dir():
        raise ConfigError(f"batch mode needs a folder of submissions, not {config.submission}")
    if config.out.exists() and not config.out.is_dir():
        raise ConfigError(f"batch mode writes one report per submission: --out must be a folder, not {config.out}")
    allowed = memory_jobs(jobs, config.limits.memory_bytes)
    if allowed < jobs and not quiet:
        click.echo(f"Running {allowed} job(s), not {jobs}: the available memory holds {allowed} student "
                   f"process(es) at --memory-mb {config.limits.memory_bytes >> 20}.", err=True)  # fmt: skip
    batch = BatchConfig(config.submission, config.out, config, jobs=allowed, force=force)

    total = len(discover(config.submission))
    with click.progressbar(length=total, label="Grading", show_eta=True, show_pos=True, file=sys.stderr,
                           item_show_func=lambda o: o and f"{o.name}: {o.status}") as bar:  # fmt: skip
        outcomes = run_batch(batch, progress=None if quiet else lambda outcome: bar.update(1, outcome))
    failed = [f"{o.name}: {o.message}" for o in outcomes if o.status == "failed"]
    gradebook, html = build_class_summary(config.out)
    graded = sum(o.status == "graded" for o in outcomes)
    current = sum(o.status == "current" for o in outcomes)
    click.echo(f"{graded} graded, {current} already current, {len(failed)} failed by the grader.")
    for line in failed:
        click.echo(f"  grader failure: {line}", err=True)
    click.echo(class_result(load_rows(config.out)))
    click.echo(f"Reports in {config.out}; gradebook {gradebook}; summary {html}")


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


@main.command("summary")
@click.argument("reports_dir", type=click.Path(path_type=Path))
@click.option("--gradebook", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Where to write the CSV gradebook [default: REPORTS_DIR/gradebook.csv].")  # fmt: skip
@click.option("--html", "html_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Where to write the HTML summary [default: REPORTS_DIR/summary.html].")  # fmt: skip
def summary(reports_dir: Path, gradebook: Path | None, html_path: Path | None) -> None:
    """(Re)build the class gradebook (CSV) and HTML summary from the reports (*.json) in REPORTS_DIR."""
    from .summary import GRADEBOOK_NAME, SUMMARY_NAME, class_result, load_rows, write_gradebook, write_summary

    if not reports_dir.is_dir():
        raise click.UsageError(f"REPORTS_DIR {reports_dir} is not a folder")
    rows = load_rows(reports_dir)
    try:
        written = [write_gradebook(rows, gradebook or reports_dir / GRADEBOOK_NAME),
                   write_summary(rows, html_path or reports_dir / SUMMARY_NAME)]  # fmt: skip
    except OSError as exc:
        raise click.ClickException(f"cannot write the summary: {exc.strerror or exc} ({exc.filename})") from None
    for path in written:
        click.echo(path)
    click.echo(class_result(rows))


@main.group()
def gradescope() -> None:
    """Build the Gradescope autograder bundle."""


@gradescope.command("build")
@click.option("--out", "-o", type=click.Path(dir_okay=False, path_type=Path), default=Path("autograder.zip"),
              show_default=True, help="The zip to upload to Gradescope.")  # fmt: skip
@click.option("--model", "-m", default="tiny", show_default=True, metavar="NAME_OR_DIR",
              help="Checkpoint to bake into the image: a built-in one (tiny, wide, small), a local HuggingFace "
              "folder (shipped in the zip), or a hub name such as gpt2 (needs --revision and --sha256).")  # fmt: skip
@click.option("--revision", default=None, metavar="COMMIT", help="For a hub --model: the commit to download.")
@click.option("--sha256", default=None, metavar="HASH", help="For a hub --model: the sha256 of its model.safetensors.")
@click.option("--second-model", default="wide", show_default=True, metavar="NAME_OR_DIR|none",
              help="A second checkpoint of another depth and width, baked in too; 'none' to skip.")  # fmt: skip
@click.option("--second-revision", default=None, metavar="COMMIT", help="For a hub --second-model.")
@click.option("--second-sha256", default=None, metavar="HASH", help="For a hub --second-model.")
@click.option("--checkpoint-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where built-in checkpoints are built here to record their hash "
              "[default: $LAB04_CHECKPOINT_DIR or ~/.cache/lab04/checkpoints].")  # fmt: skip
@click.option("--points", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="TOML file of points per tier (defaults: points.toml, summing to 100).")  # fmt: skip
@click.option("--timeout", type=click.FloatRange(min=1), default=60.0, show_default=True,
              help="Wall-clock seconds each tier may take in the student process.")  # fmt: skip
@click.option("--memory-mb", type=click.IntRange(min=256), default=6144, show_default=True,
              help="Address-space limit of the student process.")  # fmt: skip
@click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True,
              help="BLAS/OpenMP threads for the student process.")  # fmt: skip
@click.option("--deadline", type=click.IntRange(min=60), default=540, show_default=True,
              help="Seconds after which run_autograder stops the grader and reports the failure itself; "
              "keep it below the assignment's time-out on Gradescope (10 minutes by default).")  # fmt: skip
def gradescope_build(out: Path, model: str, revision: str | None, sha256: str | None, second_model: str,
                     second_revision: str | None, second_sha256: str | None, checkpoint_dir: Path | None,
                     points: Path | None, timeout: float, memory_mb: int, threads: int, deadline: int) -> None:  # fmt: skip
    """Write the autograder zip to upload to Gradescope: setup.sh and run_autograder at its root, the
    grader's source, lab04.conf (the options and the checkpoint pins) and any local checkpoint.

    setup.sh bakes the checkpoints into the image, checked by sha256, so grading never needs the
    network. Exit codes: 0 when the zip was written, 1 when it cannot be, 2 for bad usage (a hub
    model without --revision and --sha256, for example).
    """
    from .gradescope import build_bundle, bundle_config

    try:
        config = bundle_config(out, model, second_model, revision=revision, sha256=sha256,
                               second_revision=second_revision, second_sha256=second_sha256,
                               checkpoint_dir=checkpoint_dir, points=points, timeout=timeout, memory_mb=memory_mb,
                               threads=threads, deadline=deadline)  # fmt: skip
        entries = build_bundle(config)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    except GraderError as exc:
        raise click.ClickException(str(exc)) from None
    for role, pin in (("model", config.model), ("second model", config.second_model)):
        if pin is None:
            click.echo(f"{role:<13} none")
        else:
            at = f" @ {pin.revision}" if pin.revision else ""
            click.echo(f"{role:<13} {pin.kind} {pin.name}{at}  ({pin.weights} sha256 {pin.sha256[:16]}...)")
    click.echo(f"Wrote {out} ({len(entries)} files, {out.stat().st_size / 2**20:.1f} MB). Upload it in Gradescope: "
               "Configure Autograder > Zip file upload (see README.md, On Gradescope).")  # fmt: skip


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
