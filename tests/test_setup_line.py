"""What `pip install torch==2.13.0` installs on a fresh Linux machine, shown with this machine's own
torch wheel hidden.

Here pip is configured (pip.conf, PIP_FIND_LINKS) to find a CPU build of torch on the local disk
(/opt/wheels) and in local package mirrors: that is why the README's set-up line gives the CPU
build here. A fresh machine has none of that. Each test runs pip with no configuration at all
(PIP_CONFIG_FILE=/dev/null and --isolated: no config files, no PIP_* variables), resolving
(--dry-run --report, nothing installed) against PyPI as a fresh machine sees it; and against
PyTorch's CPU index, when it is reachable (it is not here: the test says so by skipping).
The results are for CPython 3.11 on Linux x86_64, where PyPI's torch is the CUDA build.
"""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
import sys
from pathlib import Path

import pytest

TORCH = "2.13.0"
CPU_INDEX = "https://download.pytorch.org/whl/cpu"
LOCAL_WHEELS = Path("/opt/wheels")  # this machine's torch (CPU build), found through PIP_FIND_LINKS
LINUX_X86_PY311 = sys.platform == "linux" and platform.machine() == "x86_64" and sys.version_info[:2] == (3, 11)
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not LINUX_X86_PY311, reason="a claim about CPython 3.11, Linux x86_64"),
]


def resolve(tmp_path: Path, *args: str) -> tuple[dict[str, dict], str]:
    """What pip, configured by nothing, would install for ``torch==2.13.0``: name -> the report's item."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env["PIP_CONFIG_FILE"] = os.devnull  # no pip.conf at any level (pip reads this one even when --isolated)
    report = tmp_path / "report.json"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--isolated",
            "install",
            "--dry-run",
            "--ignore-installed",
            "--disable-pip-version-check",
            "--verbose",
            "--report",
            str(report),
            "--retries",
            "1",
            "--timeout",
            "30",
            f"torch=={TORCH}",
            *args,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    output = done.stdout + done.stderr
    if done.returncode != 0:
        return {}, output
    items = json.loads(report.read_text())["install"]
    return {item["metadata"]["name"].lower(): item for item in items}, output


def reachable_or_skip(items: dict, output: str, what: str) -> None:
    """Skip when pip could not reach ``what`` at all (a connection error); fail on any other error."""
    if not items:
        reasons = [line for line in output.splitlines() if re.search(r"connection (error|broken)|timed out", line)]
        if reasons:
            pytest.skip(f"{what} is not reachable from here: {reasons[0][:300]}")
        pytest.fail(output[-5000:])


def test_pypi_gives_the_cuda_build(tmp_path: Path) -> None:
    """A fresh machine's `pip install torch==2.13.0` takes PyPI's torch 2.13.0 (no +cpu) and with it the
    CUDA libraries: nvidia-* wheels (cuBLAS, cuDNN, NCCL ...) and triton, all from PyPI's file host."""
    items, output = resolve(tmp_path)
    reachable_or_skip(items, output, "PyPI")
    torch = items["torch"]
    assert torch["metadata"]["version"] == TORCH, torch["metadata"]["version"]
    assert torch["download_info"]["url"].startswith("https://"), torch["download_info"]["url"]  # not the local wheel
    cuda = sorted(name for name in items if name.startswith("nvidia-"))
    assert {"nvidia-cublas", "nvidia-cudnn-cu13", "nvidia-nccl-cu13"} <= set(cuda), cuda
    assert "triton" in items


def test_a_cpu_build_beside_pypi_wins(tmp_path: Path) -> None:
    """PyPI plus a source of the CPU build (this machine's wheel, as --find-links): pip takes 2.13.0+cpu,
    which sorts above 2.13.0, and no CUDA library. This is what --extra-index-url of PyTorch's CPU index
    does on a fresh machine, since that index holds the same 2.13.0+cpu wheels."""
    if not any(LOCAL_WHEELS.glob(f"torch-{TORCH}+cpu-*.whl")):
        pytest.skip(f"no torch {TORCH}+cpu wheel in {LOCAL_WHEELS} on this machine")
    items, output = resolve(tmp_path, "--find-links", str(LOCAL_WHEELS))
    reachable_or_skip(items, output, "PyPI")
    assert items["torch"]["metadata"]["version"] == f"{TORCH}+cpu"
    assert not [name for name in items if name.startswith(("nvidia-", "triton", "cuda-"))], sorted(items)


def test_pytorch_cpu_index_gives_the_cpu_build(tmp_path: Path) -> None:
    """`pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu`: 2.13.0+cpu, no CUDA
    library. Skipped where that index is unreachable (here: only PyPI is)."""
    items, output = resolve(tmp_path, "--index-url", CPU_INDEX)
    reachable_or_skip(items, output, CPU_INDEX)
    assert items["torch"]["metadata"]["version"] == f"{TORCH}+cpu"
    assert not [name for name in items if name.startswith(("nvidia-", "triton", "cuda-"))], sorted(items)
