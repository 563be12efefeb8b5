"""Grading a class: the floor, the naive way and this grader, on the GPT-2-small-shaped checkpoint.

Usage: .venv/bin/python scripts/benchmark_batch.py [--count 20] [--jobs 1 2] [--medium]

Builds the `small` checkpoint (124M parameters) and a batch of COUNT submissions,
half correct (the reference, with and without decoder.py) and half with the
classic mistakes of tests/bank.py, then prints, in one run on this machine:

- floor: one warm process (NumPy, torch and transformers already imported) doing
  the student's own unavoidable work on one submission: load the checkpoint into
  the NumPy model with the student's loader and run the grading inputs forward;
- naive: a fresh Python process per submission that imports the submission,
  loads HuggingFace's model and compares the two on the grading inputs;
- this grader: `grade BATCH --out REPORTS --jobs N --force`, seconds per
  submission, and peak memory (grader process, largest student process);
- the ratios grader / floor (target at most 1.5) and naive / grader (target at least 2);
- with --medium: one grading on a GPT-2-medium-shaped checkpoint (24 x 1024, 355M).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

NAIVE = r"""
import json, sys, time
import numpy as np, torch
from transformers import GPT2LMHeadModel
sys.path.insert(0, sys.argv[1])
import pretrained, decoder
checkpoint, inputs = sys.argv[2], json.loads(open(sys.argv[3]).read())
hf = GPT2LMHeadModel.from_pretrained(checkpoint).eval()
cfg = hf.config
model = decoder.GPTModel(vocab_size=cfg.vocab_size, d_model=cfg.n_embd, num_layers=cfg.n_layer,
                         num_heads=cfg.n_head, d_ff=4 * cfg.n_embd, max_seq_len=cfg.n_positions)
ok = True
try:
    pretrained.load_gpt2_weights(model, checkpoint)
    for ids in inputs:
        ids = np.array(ids, dtype=np.int64)
        with torch.no_grad():
            want = hf(torch.from_numpy(np.atleast_2d(ids))).logits.numpy()
        got = model(ids)
        ok &= bool(np.max(np.abs(got.reshape(want.shape) - want)) <= 1e-5 * max(1.0, float(np.abs(want).max())))
except Exception:
    ok = False
print("PASS" if ok else "FAIL")
"""


def make_batch(folder: Path, count: int) -> None:
    """COUNT submissions: correct ones alternately with and without decoder.py, then bank mistakes."""
    from bank import BANK
    from conftest import make_submission, reference_files

    bugs = [b for b in BANK if not b.ships_decoder][: count - count // 2]
    for n in range(count // 2):
        make_submission(folder / f"correct_{n:02d}", reference_files(with_decoder=n % 2 == 0))
    for n, bug in enumerate(bugs):
        files = reference_files(with_decoder=False)
        for name, old, new in bug.edits:
            files[name] = files[name].replace(old, new)
        make_submission(folder / f"bug_{n:02d}_{bug.name}", files)


def grading_inputs(model: str) -> tuple[Path, list]:
    from grader.engine import prepare_expectations

    from grader.config import GradeConfig

    expectations = prepare_expectations(GradeConfig(submission=REPO, out=REPO / "x.json", model=model))
    return Path(expectations.primary.ref().path), [
        list(map(list, i.ids)) if isinstance(i.ids[0], tuple) else list(i.ids) for i in expectations.job.inputs
    ]


def floor_seconds(checkpoint: Path, inputs: list, repeat: int) -> float:
    """The student's own work on one submission, in this (warm) process: load, then forward every input."""
    import numpy as np
    from grader.lab.common import import_student
    from grader.models import resolve_model

    shape = resolve_model(str(checkpoint)).ref().shape
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("pretrained.py", "decoder.py"):
            shutil.copyfile(REPO / "reference" / name, Path(tmp) / name)
        student = import_student(Path(tmp))
        times = []
        for _ in range(repeat):
            started = time.monotonic()
            model = student.new_model(shape)
            student.function("load_gpt2_weights")(model, str(checkpoint))
            for ids in inputs:
                model(np.array(ids, dtype=np.int64))
            times.append(time.monotonic() - started)
        for name in ("pretrained", "decoder"):
            sys.modules.pop(name, None)
    return statistics.median(times)


def naive_seconds(batch: Path, checkpoint: Path, inputs: list) -> tuple[float, int]:
    """Seconds per submission with a fresh process each; how many passed."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as fh:
        json.dump(inputs, fh)
    passed, started = 0, time.monotonic()
    subs = sorted(p for p in batch.iterdir() if p.is_dir())
    for sub in subs:
        work = Path(tempfile.mkdtemp())
        shutil.copytree(sub, work, dirs_exist_ok=True)
        if not (work / "decoder.py").exists():
            shutil.copyfile(REPO / "reference" / "decoder.py", work / "decoder.py")
        done = subprocess.run(
            [sys.executable, "-c", NAIVE, str(work), str(checkpoint), fh.name],
            capture_output=True,
            text=True,
            check=False,
        )
        passed += done.stdout.strip() == "PASS"
        shutil.rmtree(work)
    os.unlink(fh.name)
    return (time.monotonic() - started) / len(subs), passed


def grader_run(batch: Path, model: str, jobs: int, extra: tuple[str, ...] = ()) -> dict:
    """Seconds per submission in batch mode, and the peak memory the reports recorded."""
    with tempfile.TemporaryDirectory() as reports:
        started = time.monotonic()
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "grader.cli",
                "run",
                str(batch),
                "--out",
                reports,
                "--model",
                model,
                "--jobs",
                str(jobs),
                "--force",
                "-q",
                *extra,
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        wall = time.monotonic() - started
        if done.returncode != 0:
            raise SystemExit(f"batch failed: {done.stderr.strip()[-2000:]}")
        reports_found = [json.loads(p.read_text()) for p in Path(reports).glob("[!.]*.json")]
    resources = [r["extra_data"]["resources"] for r in reports_found]
    return {
        "per_submission": wall / len(reports_found),
        "wall": wall,
        "scores": sorted(r["score"] for r in reports_found),
        "grader_mb": max(r.get("grader_peak_rss_mb", 0) for r in resources),
        "student_mb": max(r.get("student_peak_rss_mb", 0) for r in resources),
        "startup": statistics.median(r.get("student_startup_seconds", 0) for r in resources),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=20)
    parser.add_argument("--jobs", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--model", default="small")
    parser.add_argument("--medium", action="store_true", help="also grade one submission on a GPT-2-medium shape")
    args = parser.parse_args()
    from grader.lab.checkpoints import ensure_checkpoint
    from grader.models import BUILTIN

    for name in ("wide", args.model):
        ensure_checkpoint(BUILTIN[name])
    checkpoint, inputs = grading_inputs(args.model)
    print(
        f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}; checkpoint {args.model}; "
        f"{len(inputs)} grading inputs; batch of {args.count}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        batch = Path(tmp) / "batch"
        make_batch(batch, args.count)
        floor = floor_seconds(checkpoint, inputs, repeat=3)
        print(f"floor (warm process, load + forward, median of 3): {floor:6.2f} s per submission")
        naive, passed = naive_seconds(batch, checkpoint, inputs)
        print(
            f"naive (fresh process per submission):              {naive:6.2f} s per submission "
            f"({passed}/{args.count} passed)"
        )
        results = {}
        for jobs in args.jobs:
            run = grader_run(batch, args.model, jobs)
            results[jobs] = run
            print(
                f"grader --jobs {jobs}:  {run['per_submission']:6.2f} s per submission ({run['wall']:.0f} s in all); "
                f"peak memory: grader process {run['grader_mb']:.0f} MB, largest student process "
                f"{run['student_mb']:.0f} MB; student start-up {run['startup']:.1f} s"
            )
        best = min(r["per_submission"] for r in results.values())
        print(
            f"ratios: grader / floor = {best / floor:.2f} (target <= 1.5); "
            f"naive / grader = {naive / best:.2f} (target >= 2)"
        )
    if args.medium:
        from grader.lab.checkpoints import CheckpointSpec, default_root

        spec = CheckpointSpec("medium", n_layer=24, n_embd=1024, n_head=16, n_positions=1024, seed=24)
        started = time.monotonic()
        folder = ensure_checkpoint(spec, default_root().parent / "bench")
        print(f"medium-shaped checkpoint (355M) ready in {time.monotonic() - started:.0f} s: {folder}")
        with tempfile.TemporaryDirectory() as tmp:
            sub = Path(tmp) / "one"
            sub.mkdir()
            shutil.copyfile(REPO / "reference" / "pretrained.py", sub / "pretrained.py")
            out = Path(tmp) / "medium.json"
            started = time.monotonic()
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "grader.cli",
                    "run",
                    str(sub),
                    "--out",
                    str(out),
                    "--model",
                    str(folder),
                    "--memory-mb",
                    "12288",
                    "--timeout",
                    "300",
                    "-q",
                ],
                check=True,
            )
            wall = time.monotonic() - started
            report = json.loads(out.read_text())
            res = report["extra_data"]["resources"]
            print(
                f"medium: score {report['score']:g}, {wall:.0f} s, peak memory grader {res['grader_peak_rss_mb']:.0f} MB, "
                f"student process {res['student_peak_rss_mb']:.0f} MB"
            )


if __name__ == "__main__":
    main()
