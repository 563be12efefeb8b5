"""Time and peak memory of grading one correct submission, on the tiny and GPT-2-small-shaped checkpoints.

Usage: .venv/bin/python scripts/benchmark.py [--models tiny small] [--repeat 1]

Each grading runs `grade` in a fresh process (as course staff would), on the
reference solution handed in without decoder.py. Printed figures: wall time of
the whole command, the report's own execution time and per-tier times, the
time spent starting the student process, and the peak resident memory of the
grader process and of the student process.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def build(name: str) -> float:
    """Build (or find) a built-in checkpoint; seconds taken."""
    from grader.lab.checkpoints import ensure_checkpoint
    from grader.models import BUILTIN

    started = time.monotonic()
    ensure_checkpoint(BUILTIN[name])
    return time.monotonic() - started


def grade_once(model: str, workdir: Path) -> dict:
    submission = workdir / "submission"
    submission.mkdir(exist_ok=True)
    shutil.copyfile(REPO / "reference" / "pretrained.py", submission / "pretrained.py")
    out = workdir / f"{model}.json"
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "grader.cli", "run", str(submission), "--out", str(out), "--model", model, "-q"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    wall = time.monotonic() - started
    if done.returncode != 0:
        raise SystemExit(f"grading failed ({done.returncode}): {done.stderr.strip()}")
    report = json.loads(out.read_text())
    extra = report["extra_data"]
    return {
        "wall": wall,
        "execution_time": report["execution_time"],
        "score": report["score"],
        "tiers": {name: tier["seconds"] for name, tier in extra["tiers"].items()},
        **extra["resources"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["tiny", "small"])
    parser.add_argument("--repeat", type=int, default=1, help="gradings per model; the median is printed")
    args = parser.parse_args()
    for model in ["wide", *args.models]:
        print(f"checkpoint {model:<5}: ready in {build(model):6.1f} s (a cached build takes ~0 s)")
    print()
    header = f"{'model':<6} {'score':>5} {'wall s':>7} {'report s':>8} {'startup s':>9} {'grader MB':>9} {'student MB':>10}  per-tier s"
    print(header)
    for model in args.models:
        runs = []
        for _ in range(args.repeat):
            with tempfile.TemporaryDirectory() as tmp:
                runs.append(grade_once(model, Path(tmp)))
        run = sorted(runs, key=lambda r: r["wall"])[len(runs) // 2]
        tiers = " ".join(f"{name}={seconds:.2f}" for name, seconds in run["tiers"].items())
        print(f"{model:<6} {run['score']:>5g} {statistics.median(r['wall'] for r in runs):>7.1f} "
              f"{run['execution_time']:>8.1f} {run['student_startup_seconds']:>9.1f} {run['grader_peak_rss_mb']:>9.0f} "
              f"{run['student_peak_rss_mb']:>10.0f}  {tiers}")  # fmt: skip


if __name__ == "__main__":
    main()
