"""Student processes as the grader sees them: start, ask, time out, kill, clean up.

A ``Zygote`` (in ``zygote``) has imported what its flavour needs and forks a launcher per
student process; a ``StudentProcess`` is one such process and the agent inside it. Each request
has a deadline; when it passes, the process is asked for its stacks (so the feedback
can say where the student's code was stuck) and killed with everything it started.
Every reply goes through ``protocol`` before anyone looks at it.
"""

from __future__ import annotations

import os
import platform
import re
import select
import signal
import socket
import struct
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import SandboxError
from . import protocol
from .limits import Limits
from .protocol import ProtocolError, Reply
from .zygote import Zygote, environment

TRACE_BYTES = 256 << 10  # the stack dump taken at a time-out
MEMORY_HEADROOM = 512 << 20  # address space a student process must have left above what it uses at its start
# socket(7): the kernel stamps each message with the time it was sent, so a process's start-up is
# measured when it said "ready", not when the grader got round to reading it. 35 on x86_64 and aarch64.
SO_TIMESTAMPNS = 35 if platform.machine() in ("x86_64", "aarch64") else None
_STAMP = struct.Struct("qq")


class ResultsMemfd:
    """A results memfd made before its request, with its first ``prefill`` bytes allocated by a thread
    meanwhile: the student process's writes then find the pages there instead of faulting each one in
    (an export of GPT-2 small's shape takes half the time). A head start only; the request takes it."""

    def __init__(self, size: int, prefill: int):
        self.size = size
        self.fd = protocol.new_memfd("lab04-results", size)
        self._filling = threading.Thread(target=self._fill, args=(min(prefill, size),), daemon=True)
        self._filling.start()

    def _fill(self, nbytes: int) -> None:
        try:
            if nbytes > 0:
                os.posix_fallocate(self.fd, 0, nbytes)
        except OSError:
            pass  # no room now: the writes allocate as they go, as without a head start

    def take(self, budget: int) -> int:
        """The descriptor, for a request of ``budget`` bytes of results; the caller owns it from here."""
        self._filling.join()
        if self.fd < 0 or budget != self.size:
            raise ValueError(f"a results memfd of {self.size} bytes, taken for {budget} (or taken twice)")
        fd, self.fd = self.fd, -1
        return fd

    def close(self) -> None:
        """Let go of it unless a request took it."""
        self._filling.join()
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


_FRAME = re.compile(r'File "(?P<file>[^"]+)", line (?P<line>\d+) in (?P<func>\S+)')


class StudentProcess:
    """One sandboxed process running the agent; restartable by the caller after it died."""

    def __init__(self, zygote: Zygote, plan: dict, limits: Limits, scratch: Path, name: str, uid: int):
        self.zygote = zygote
        self.plan = plan
        self.limits = limits
        self.scratch = scratch
        self.name = name
        self.uid = uid
        self.stdout_path = scratch / f"{name}-stdout.txt"
        self.stderr_path = scratch / f"{name}-stderr.txt"
        self.sock: socket.socket | None = None
        self.launcher_pid: int | None = None
        self.student_pid: int | None = None
        self.status_fd = -1
        self.trace_fd = -1
        self.spawned, self.spawned_wall = 0.0, 0.0
        self.sent_at: float | None = None  # when the last message read was sent (the kernel's stamp)
        self.ready = False
        self.layers: dict[str, Any] = {}
        self.isolated_root = False
        self.starts = 0
        self.startup_seconds = 0.0
        self.peak_rss_bytes = 0
        self._asked_to_end = False
        self._next_id = 0
        self.exit_call: dict[str, Any] | None = None

    # ---------------------------------------------------------------- life

    def start(self) -> None:
        """Fork the process now, without waiting for it: its start overlaps with the caller's work."""
        if self.sock is not None:
            return
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        if SO_TIMESTAMPNS is not None:
            mine.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        status_r, status_w = os.pipe()
        trace_fd = protocol.new_memfd("lab04-trace", TRACE_BYTES)
        out = os.open(self.stdout_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        err = os.open(self.stderr_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        request = {
            "plan": self.plan,
            "isolate": self.limits.isolate,
            "uid": self.uid if self.limits.isolate else -1,  # --no-isolation: no user of its own either
            "output_bytes": self.limits.output_bytes,
            "env": environment(
                "/tmp" if self.limits.isolate else str(self.scratch / f"{self.name}-home"), self.limits.threads
            ),
            "limits": {
                "memory_bytes": self.limits.memory_bytes,
                "file_bytes": self.limits.file_bytes,
                "cpu_seconds": int(self.limits.timeout * 12 + self.limits.startup_timeout) + 60,
                "processes": self.limits.processes,
            },
        }
        if not self.limits.isolate:
            (self.scratch / f"{self.name}-home").mkdir(exist_ok=True)
        try:
            self.spawned, self.spawned_wall = time.monotonic(), time.time()  # before: it may be ready at once
            self.launcher_pid = self.zygote.spawn(request, [theirs.fileno(), out, err, status_w, trace_fd])
        finally:
            for fd in (theirs.fileno(), out, err, status_w):
                os.close(fd)
            theirs.detach()
        self.sock, self.status_fd, self.trace_fd = mine, status_r, trace_fd
        self.sent_at = None
        self.ready = False
        self.starts += 1

    def wait_ready(self) -> None:
        self.start()
        if self.ready:
            return
        deadline = self.spawned + self.limits.startup_timeout
        while True:
            message = self._receive(deadline)
            if message is None or message == "eof":
                detail = "did not start" if message is None else "ended while starting"
                tail = _tail(self.stderr_path, 2000).strip()
                self.kill()
                raise SandboxError(f"the {self.name} student process {detail}" + (f": {tail}" if tail else ""))
            if message.get("event") == "ready":
                break
        self.layers = protocol.mapping(message.get("layers", {}), "the layers", 8)
        held = [protocol.text(x, "a layer", 200) for x in protocol.sequence(self.layers.get("held", []), "layers", 32)]
        missing = [
            protocol.text(x, "a layer", 400)
            for x in protocol.sequence(self.layers.get("unavailable", []), "layers", 32)
        ]
        self.layers = {"held": held, "unavailable": missing, "uid": self.layers.get("uid")}
        self.isolated_root = "allow-list root file system" in held
        vm = message.get("vm")
        if isinstance(vm, int) and vm + MEMORY_HEADROOM > self.limits.memory_bytes:
            self.kill()
            raise SandboxError(
                f"--memory-mb {self.limits.memory_bytes >> 20} leaves no room: the {self.name} student "
                f"process uses {vm >> 20} MB of address space before any student code runs; give it "
                f"at least {(vm + 2 * MEMORY_HEADROOM) >> 20}"
            )
        self._read_status()
        if self.limits.require_isolation and missing:
            self.kill()
            raise SandboxError("isolation is required (--require-isolation) but missing: " + "; ".join(missing))
        self.ready = True
        waited = time.monotonic() - self.spawned  # an upper bound: the process may have been ready long before
        stamped = self.sent_at - self.spawned_wall if self.sent_at is not None else waited
        self.startup_seconds += min(waited, max(0.0, stamped))

    def path(self, host: str | Path, inside: str) -> str:
        """A path as this process sees it: ``inside`` under its private root, else the host path."""
        return inside if self.isolated_root else str(host)

    @property
    def alive(self) -> bool:
        return self.sock is not None

    def _read_status(self) -> int | None:
        """The launcher's messages: the student pid, then (once it ended) its wait status."""
        status = None
        while self.status_fd >= 0 and _readable(self.status_fd, 0):
            data = os.read(self.status_fd, 256)
            if not data:
                os.close(self.status_fd)
                self.status_fd = -1
                break
            for line in data.decode(errors="replace").splitlines():
                word, _, number = line.partition(" ")
                if word == "pid" and number.isdigit():
                    self.student_pid = int(number)
                elif word == "status" and number.lstrip("-").isdigit():
                    status = int(number)
        return status

    def _note_peak(self) -> None:
        try:
            text = Path(f"/proc/{self.student_pid}/status").read_text()
        except (OSError, TypeError):
            return
        match = re.search(r"^VmHWM:\s+(\d+) kB", text, re.MULTILINE)
        if match:
            self.peak_rss_bytes = max(self.peak_rss_bytes, int(match.group(1)) * 1024)

    def kill(self, wait_for_status: float = 0.0) -> int | None:
        """Kill the process and everything it started; returns its wait status when the launcher said it.

        ``wait_for_status`` seconds are given to a process that ended by itself for its launcher
        to report how (a crash); a process being killed has nothing to report."""
        self._note_peak()
        status = self._await_status(wait_for_status) if wait_for_status else self._read_status()
        for kill, target in ((os.kill, self.student_pid), (os.killpg, self.launcher_pid)):
            try:
                if target:  # the student process, PID 1 of its namespace, takes everything along
                    kill(target, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        for fd in (self.status_fd, self.trace_fd):
            if fd >= 0:
                os.close(fd)
        self.status_fd = self.trace_fd = -1
        if self.sock is not None:
            self.sock.close()
        self.sock = None
        self.ready = False
        self.student_pid = None
        return status

    def _await_status(self, seconds: float) -> int | None:
        """The launcher's report of how the student process ended, waiting up to ``seconds``."""
        deadline = time.monotonic() + seconds
        while self.status_fd >= 0:
            status = self._read_status()
            if status is not None:
                return status
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not _readable(self.status_fd, remaining):
                return None

    def goodbye(self) -> bool:
        """Ask the process to end (it frees its memory meanwhile); True when it was asked."""
        if self.sock is None or not self.ready:
            return False
        self._note_peak()
        try:
            self.sock.send(protocol.encode({"id": 0, "op": "bye"}))
        except OSError:
            pass
        self.ready = False  # asked once: close() waits for it, then kills whatever is left
        self._asked_to_end = True
        return True

    def close(self) -> None:
        """Say goodbye (unless ``goodbye`` did), wait for the end, then make sure nothing is left."""
        if self.goodbye() or self._asked_to_end:
            self._await_status(2.0)
        self._asked_to_end = False
        if self.sock is not None:
            self.kill()

    # ---------------------------------------------------------------- requests

    def _receive(self, deadline: float) -> dict | str | None:
        """The next valid message, "eof" when the process is gone, None at the deadline."""
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            if not _readable(self.sock.fileno(), remaining):
                return None
            try:
                # Room for the kernel's time stamp only: a descriptor the student process sends is
                # dropped by the kernel, never installed here.
                data, ancillary, flags, _ = self.sock.recvmsg(protocol.MAX_MESSAGE + 1, socket.CMSG_SPACE(16))
            except OSError:
                return "eof"
            self.sent_at = _sent_at(ancillary)
            if not data:
                return "eof"
            try:
                message = protocol.decode(data, truncated=bool(flags & socket.MSG_TRUNC))
            except ProtocolError:
                continue  # garbage from the student's code: not a reply
            if message.get("event") == "exit-called":
                self.exit_call = {
                    "how": protocol.text(message.get("how", "os._exit"), "how", 100) or "os._exit",
                    "where": protocol.text(message.get("where"), "where", 300, optional=True),
                }
                continue
            return message

    def request(
        self,
        op: str,
        fields: dict,
        deadline: float,
        inputs: list[np.ndarray] | None = None,
        blob_fd: int = -1,
        blob_blocks: list[dict] | None = None,
        budget: int = 0,
        results: ResultsMemfd | None = None,
    ) -> Reply:
        """Send one operation and wait for its reply until ``deadline`` (a ``time.monotonic`` value).

        ``inputs`` travel in a sealed memfd; ``budget`` bytes of results may come back in another (or in
        ``results``, made ahead of time: the request takes it). Never raises for anything the student
        process does."""
        started = time.monotonic()
        if results is not None:
            results_fd = results.take(budget)
        else:
            results_fd = protocol.new_memfd("lab04-results", max(0, budget))
        reply = self._request(op, fields, deadline, inputs, blob_fd, blob_blocks or [], results_fd)
        reply.seconds = time.monotonic() - started
        return reply

    def _request(
        self,
        op: str,
        fields: dict,
        deadline: float,
        inputs: list[np.ndarray] | None,
        blob_fd: int,
        blob_blocks: list[dict],
        results_fd: int,
    ) -> Reply:
        try:
            self.wait_ready()
        except BaseException:
            os.close(results_fd)
            raise
        self._next_id += 1
        request_id = self._next_id
        self.exit_call = None
        fds = [results_fd]
        message = {"id": request_id, "op": op, **fields}
        if inputs is not None:
            input_fd, message["inputs"] = protocol.input_memfd(inputs)
            fds.append(input_fd)
        elif blob_fd >= 0:
            message["inputs"] = blob_blocks
            fds.append(os.dup(blob_fd))
        try:
            socket.send_fds(self.sock, [protocol.encode(message)], fds)
        except OSError:
            os.close(results_fd)
            return self._crashed()
        finally:
            for fd in fds[1:]:
                os.close(fd)
        while True:
            got = self._receive(deadline)
            if got is None:
                os.close(results_fd)
                return self._timed_out()
            if got == "eof":
                os.close(results_fd)
                return self._crashed()
            if got.get("id") == request_id and "status" in got:
                break
        self._note_peak()
        return protocol.parse_reply(op, got, results_fd)

    def _timed_out(self) -> Reply:
        # The trace memfd's offset is shared with the student process: the dump lands after it.
        before = os.lseek(self.trace_fd, 0, os.SEEK_CUR) if self.trace_fd >= 0 else 0
        for kill, target in ((os.killpg, self.launcher_pid), (os.kill, self.student_pid)):
            try:
                if target:
                    kill(target, signal.SIGUSR1)  # faulthandler writes the stacks; the launcher ignores it
            except (ProcessLookupError, PermissionError):
                pass
        time.sleep(0.3)
        where = None
        if self.trace_fd >= 0:
            after = os.lseek(self.trace_fd, 0, os.SEEK_CUR)
            data = os.pread(self.trace_fd, max(0, min(after, TRACE_BYTES) - before), before)
            where = self._stuck_location(data.decode(errors="replace"))
        self.kill()
        return Reply("timeout", detail="did not finish within the time limit", where=where)

    def _stuck_location(self, dump: str) -> str | None:
        """The innermost student frame of a faulthandler dump: 'pretrained.py, line 31 in load'."""
        root = self.plan["submission"] if self.isolated_root else self.plan["submission_host"]
        for match in _FRAME.finditer(dump):  # faulthandler lists the most recent call first
            file = match["file"]
            if file.startswith(root.rstrip("/") + "/"):
                return protocol.text(
                    f"{file[len(root.rstrip('/')) + 1 :]}, line {match['line']} in {match['func']}", "where", 300
                )
        return None

    def _crashed(self) -> Reply:
        exit_call = self.exit_call
        status = self.kill(wait_for_status=2.0)
        if exit_call is not None:
            return Reply(
                "crashed", detail=f"called {exit_call['how']}, which ended the process", where=exit_call.get("where")
            )
        return Reply("crashed", detail=describe_status(status, self.limits))

    def output(self) -> tuple[str, str]:
        """The process's stdout and stderr, cut to the cap (all its starts)."""
        cap = self.limits.output_cap
        return _tail(self.stdout_path, cap), _tail(self.stderr_path, cap)


def describe_status(status: int | None, limits: Limits) -> str:
    """What ended a student process, in words."""
    if status is None:
        return "the process ended unexpectedly"
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = f"signal {sig}"
        detail = f"the process was killed by {name}"
        if sig == signal.SIGXCPU:
            detail += " (CPU time limit)"
        elif sig == signal.SIGXFSZ:
            detail += " (it wrote more data than the file size limit)"
        elif sig == signal.SIGKILL:
            detail += f" (possibly out of memory: the limit is {limits.memory_bytes / 2**30:.3g} GiB)"
        elif sig in (signal.SIGSEGV, signal.SIGBUS, signal.SIGABRT):
            detail += " (a crash in native code: ctypes, a C extension, or memory running out inside NumPy)"
        return detail
    code = os.waitstatus_to_exitcode(status)
    return f"the process exited early with code {code}"


def _sent_at(ancillary: list[tuple[int, int, bytes]]) -> float | None:
    """The kernel's send time of a message (wall clock), when the socket stamps them."""
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(data) == _STAMP.size:
            seconds, nanoseconds = _STAMP.unpack(data)
            return seconds + nanoseconds / 1e9
    return None


def _readable(fd: int, timeout: float) -> bool:
    """True when ``fd`` has data (or end of file) within ``timeout`` seconds; poll, so any fd number works."""
    poller = select.poll()
    poller.register(fd, select.POLLIN | select.POLLHUP | select.POLLERR)
    return bool(poller.poll(max(0, int(timeout * 1000))))


def _tail(path: Path, cap: int) -> str:
    """At most ``cap`` characters of a file: its head and its tail."""
    try:
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            if size <= cap * 4:
                data = fh.read(cap * 4)
            else:
                data = fh.read(cap * 2) + b"\n...\n"
                fh.seek(size - cap * 2)
                data += fh.read(cap * 2)
    except OSError:
        return ""
    text = data.decode("utf-8", errors="replace")
    if len(text) <= cap:
        return text
    half = cap // 2
    return text[:half] + f"\n... [{len(text) - cap} characters cut] ...\n" + text[-half:]
