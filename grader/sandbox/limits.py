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

    def reported(self) -> dict[str, float | int]:
        """The limits a report records (the ones a student's code meets)."""
        return {
            "timeout_s": self.timeout,
            "memory_bytes": self.memory_bytes,
            "threads": self.threads,
            "processes": self.processes,
            "file_bytes": self.file_bytes,
            "scratch_bytes": self.scratch_bytes,
            "output_bytes": self.output_bytes,
        }
