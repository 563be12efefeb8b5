"""The resource limits of a student process (importable without NumPy, for the command line)."""

from __future__ import annotations

from dataclasses import dataclass

from .. import defaults


@dataclass(frozen=True)
class Limits:
    """Resource limits of each student process (the defaults live in ``grader.defaults``)."""

    timeout: float = defaults.TIMEOUT_S  # wall clock per tier
    memory_bytes: int = defaults.MEMORY_MB << 20
    file_bytes: int = defaults.FILE_MB << 20
    scratch_bytes: int = defaults.SCRATCH_MB << 20  # the private /tmp
    startup_timeout: float = defaults.STARTUP_TIMEOUT_S
    threads: int = defaults.THREADS
    processes: int = defaults.PROCESSES
    output_bytes: int = defaults.OUTPUT_KB << 10  # of stdout and of stderr kept, each
    output_cap: int = defaults.REPORT_OUTPUT_CHARS  # characters of each that reach the report
    isolate: bool = True
    require_isolation: bool = False
    uid: int | None = None
