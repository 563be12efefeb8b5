"""The fork servers of student processes as the grader sees them, and the environment those processes get.

A ``Zygote`` is ``inside/lab04_zygote.py`` running in a process of its own: it has
imported what its flavour needs and forks a launcher per student process
(``process.StudentProcess`` asks it to). It never runs student code.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
from pathlib import Path

from ..errors import SandboxError

INSIDE = Path(__file__).resolve().parent / "inside"
STANDINS = INSIDE / "standins"


def environment(home: str, threads: int) -> dict[str, str]:
    """The scrubbed environment of student processes: no credentials, no hub, one thread."""
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": home,
        "TMPDIR": home,
        "LANG": "C.UTF-8",
        "HF_HOME": f"{home}/hf",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "TRANSFORMERS_VERBOSITY": "error",
        "TOKENIZERS_PARALLELISM": "false",
        "PYTHONHASHSEED": "0",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONUNBUFFERED": "1",
    }
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = str(threads)
    return env


class Zygote:
    """A fork server of one flavour ("torch" or "numpy"); it never runs student code."""

    def __init__(self, flavour: str, threads: int, log: Path, preload: tuple[str, ...] = ()):
        self.flavour = flavour
        self.preloaded = preload  # checkpoint folders whose harness objects it loads before forking
        self.sock, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        with open(log, "ab") as err:
            self.process = subprocess.Popen(
                [sys.executable, "-I", str(INSIDE / "lab04_zygote.py"), flavour, str(theirs.fileno()), *preload],
                env=environment("/tmp", threads),
                cwd="/",
                stdin=subprocess.DEVNULL,
                stdout=err,
                stderr=err,
                pass_fds=(theirs.fileno(),),
                start_new_session=True,
            )
        theirs.close()
        self.lock = threading.Lock()
        self.log = log

    def spawn(self, request: dict, fds: list[int]) -> int:
        """Fork a launcher for ``request``; returns its pid. The descriptors are passed, not kept."""
        data = json.dumps(request).encode()
        with self.lock:
            try:
                socket.send_fds(self.sock, [data], fds)
                reply = self.sock.recv(1 << 16)
            except OSError as exc:
                raise SandboxError(f"the {self.flavour} fork server is gone: {exc}") from None
        if not reply:
            tail = self.log.read_bytes()[-2000:].decode(errors="replace") if self.log.exists() else ""
            raise SandboxError(f"the {self.flavour} fork server is gone: {tail.strip()}")
        return int(json.loads(reply)["pid"])

    def close(self) -> None:
        """Stop it at once: it holds nothing worth a slow interpreter shutdown (torch takes about a second)."""
        self.sock.close()
        self.process.kill()
        self.process.wait()
