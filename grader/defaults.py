"""Every default and fixed number of the grader, in one place (the CLI's help text reads them here)."""

from __future__ import annotations

# The student processes (``grade run --help``; the README's threat model explains each).
TIMEOUT_S = 60.0  # wall clock per tier
MEMORY_MB = 6144  # address space of each student process: GPT-2 small's loader holds two copies
FILE_MB = 2048  # largest file a student process may write (GPT-2 XL's largest array fits)
SCRATCH_MB = 512  # the private /tmp of each student process
STARTUP_TIMEOUT_S = 120.0  # a student process's own start, before any student code
THREADS = 1  # BLAS/OpenMP threads in each student process
# BLAS threads of the grader's own process (its float64 GPT-2): the student processes need the cores; with
# OpenBLAS's default of one per core, a single run on small took 1.4 s longer (scripts/benchmark.py).
GRADER_THREADS = 1
COMPARE_THREADS = 2  # threads comparing an exported model's bytes with the truth: 0.15 s -> 0.09 s on small
THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
PROCESSES = 64  # processes and threads of the student's user
OUTPUT_KB = 1024  # stdout and stderr kept from each student process, each
REPORT_OUTPUT_CHARS = 20_000  # of each that reach the report
UID_RANGE = (61000, 64000)  # unprivileged uids for student code when the grader is root, one per run

# Checkpoints.
MODEL = "tiny"  # the primary checkpoint
SECOND_MODEL = "wide"  # another depth and width, for loaders hard-wired to 12 x 768
FUNCTION_MODEL = "tiny"  # the compare, intermediate and weight-analysis tiers test functions, not scale

# Numbers.
LOGITS_RTOL = 1e-5  # logits match when max |diff| <= LOGITS_RTOL * max(1, max |HuggingFace logit|)
WEIGHTS_RTOL = 1e-6  # loaded weights must equal their source (loading copies numbers)
NEAR_MISS = 1e-2  # the compare tier's near miss: any sensible tolerance rejects it, max_diff < 1.0 accepts it

# Batch mode.
JOBS = 1
# What one batch job holds resident, for --jobs: a base (the two student processes with NumPy and torch,
# the grader's share) plus bytes per parameter of the primary checkpoint (HuggingFace's copy, the
# student's, the exported model). Measured with scripts/benchmark.py: about 3 GiB per job on small.
JOB_BASE_MB = 1024
JOB_BYTES_PER_PARAMETER = 16
