"""What the ``grade`` command prints on the terminal: tier progress, the score table, batch progress."""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path
from typing import Any

import click

STATUS_COLOURS = {"passed": "green", "failed": "red", "error": "red", "timeout": "yellow", "skipped": "yellow"}


def print_progress(result: Any) -> None:
    """One line per finished tier, coloured by its status."""
    colour = STATUS_COLOURS.get(result.status)
    click.echo(
        f"  {result.name:<12} " + click.style(f"{result.status:<8}", fg=colour) + f" {result.seconds:5.1f} s", err=True
    )


def print_summary(report: Any, out: Path) -> None:
    """A short table: one line per tier, the first line of its feedback."""
    from .text import clean

    width = shutil.get_terminal_size((100, 20)).columns
    model = report.models.get("primary", {}).get("source", "?")
    click.echo(f"\nLab 04: {report.score:g}/{report.max_score:g} points  (model: {model}; GPTModel: {report.decoder})")
    if report.start_here:
        click.echo(clean(f"Start here: {report.start_here}", 400))
    click.echo(f"  {'tier':<12} {'status':<8} {'points':>7}  detail")
    for t in report.tiers:
        lines = clean(t.detail, 20_000).splitlines() or [""]
        first = lines[0]
        if first.endswith(":") and len(lines) > 1:  # a heading: show what it announces
            first = f"{first} {lines[1].lstrip(' -')}"
        room = max(20, width - 35)
        first = first if len(first) <= room else first[: room - 3] + "..."
        status = click.style(f"{t.status:<8}", fg=STATUS_COLOURS.get(t.status))
        click.echo(f"  {t.name:<12} {status} {t.score:>3g}/{t.max_score:<3g}  {first}")
    click.echo(f"Report written to {out} ({report.execution_time:.1f} s). Full feedback is in each test's output.")


class BatchProgress:
    """One line per student when not on a terminal; a bar with an ETA from measured times on one."""

    def __init__(self, total: int, jobs: int, mean: float | None, quiet: bool):
        self.total, self.jobs, self.mean, self.quiet = total, jobs, mean, quiet
        self.done, self.graded_seconds, self.graded = 0, 0.0, 0
        self.started = time.monotonic()
        self.tty = sys.stderr.isatty()

    def __call__(self, outcome: Any) -> None:
        self.done += 1
        if outcome.status == "graded":
            self.graded += 1
            self.graded_seconds += outcome.seconds
        if self.quiet:
            return
        mean = self.graded_seconds / self.graded if self.graded else self.mean
        left = "?" if mean is None else f"{mean * (self.total - self.done) / self.jobs:.0f} s"
        score = "" if outcome.score is None else f" {outcome.score:g}"
        line = (
            f"[{self.done}/{self.total}] {outcome.name}: {outcome.status}{score} ({outcome.seconds:.1f} s); ETA {left}"
        )
        if self.tty:
            click.echo(
                "\r" + line[: shutil.get_terminal_size((100, 20)).columns - 1].ljust(60),
                err=True,
                nl=self.done == self.total,
            )
        else:
            click.echo(line, err=True)
