"""Run student code in a separate, resource-limited process and bring back raw arrays.

One child process serves the tiers in turn, so that torch and the student's
modules are imported once. Each request has its own wall-clock time-out;
when it expires, the child is asked for a traceback (to say where the
student's code was stuck) and is killed with everything it started. The next
request starts a fresh child.

When the grader runs as root, the child runs in new PID, mount and network
namespaces as an unprivileged user of its own, with the grader's files hidden
(``grader.jail``); this module prepares what that user must be able to read
(its copy of the submission, the checkpoint) and write (its results folder).
"""

from __future__ import annotations

import itertools
import json
import os
import re
import secrets
import select
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .lab.common import Collected


@dataclass(frozen=True)
class Limits:
    """Resource limits of the student process."""

    timeout: float = 60.0  # seconds of wall clock per tier
    memory_bytes: int = 6 * 2**30
    file_bytes: int = 2 * 2**30  # the largest file it may write (arrays of a 124M-parameter model fit)
    startup_timeout: float = 120.0  # importing torch and transformers, before any student code
    threads: int = 1
    processes: int = 64  # processes and threads of the student's user (when the grader is root)
    output_bytes: int = 2**20  # bytes of stdout and of stderr kept from the student process
    output_cap: int = 20_000  # characters of each that reach the report
    isolate: bool = True  # namespaces, hidden files and an unprivileged user, when the grader is root
    uid: int | None = None  # that user; None picks one per grading run from UID_RANGE
    hide: tuple[Path, ...] = ()  # more paths the student process must not see


UID_RANGE = (61000, 64000)  # unprivileged uids for student code, one per concurrent grading run
NEVER_HIDDEN = {Path(p) for p in ("/", "/usr", "/lib", "/lib64", "/bin", "/sbin", "/etc", "/dev", "/proc", "/sys")}


_uids = itertools.count()


def _next_uid() -> int:
    """A uid for one grading run: distinct across the runs of a batch and, very likely, across processes."""
    span = UID_RANGE[1] - UID_RANGE[0]
    return UID_RANGE[0] + (os.getpid() * 97 + next(_uids)) % span


def default_hidden() -> list[Path]:
    """What no submission needs to see: the grader, the reference solution, homes, shared temp folders."""
    import grader
    import reference

    own = Path(grader.__file__).resolve().parent
    paths = [own, Path(reference.__file__).resolve().parent]
    if (own.parent / "pyproject.toml").is_file():  # a source checkout: its tests and examples too
        paths.append(own.parent)
    paths += [Path.home(), Path("/root"), Path("/home"), Path("/tmp"), Path("/var/tmp"), Path("/dev/shm")]
    return paths


def stage_checkpoint(source: Path, dest: Path) -> Path:
    """A copy of a checkpoint folder that any user can read: hard links where allowed, else copies."""
    dest.mkdir(parents=True, exist_ok=True)
    dest.chmod(0o755)
    for entry in sorted(Path(source).iterdir()):
        real = entry.resolve()  # the hub cache holds symbolic links into its blobs folder
        if not real.is_file():
            continue
        target = dest / entry.name
        try:
            if not real.stat().st_mode & 0o004:
                raise PermissionError("not world-readable")  # linking would not help: copy
            os.link(real, target)
        except OSError:
            shutil.copyfile(real, target)
            target.chmod(0o644)
    return dest


@dataclass
class Reply:
    """What came back from one request."""

    kind: str  # ok | student_error | timeout | crashed | harness_error
    collected: Collected | None = None
    record: dict[str, Any] | None = None  # for student_error
    function: str | None = None  # the student function running when it timed out or crashed
    where: str | None = None  # file and line, when known
    detail: str = ""
    decoder: str | None = None
    seconds: float = 0.0


class ForkedProcess:
    """A launcher started by the fork server: the parts of ``subprocess.Popen`` the session uses."""

    def __init__(self, pid: int, status_fd: int):
        self.pid = pid
        self.status_fd = status_fd
        self.returncode: int | None = None

    def wait(self, timeout: float | None = None) -> int:
        """The launcher's exit code (negative: the signal that ended the student process)."""
        if self.returncode is not None:
            return self.returncode
        ready, _, _ = select.select([self.status_fd], [], [], timeout)
        if not ready:
            raise subprocess.TimeoutExpired("launcher", timeout or 0)
        data = b""
        while chunk := os.read(self.status_fd, 64):
            data += chunk
        os.close(self.status_fd)
        try:
            self.returncode = os.waitstatus_to_exitcode(int(data.strip()))
        except ValueError:
            self.returncode = -signal.SIGKILL  # killed before it could say: the launcher itself was killed
        return self.returncode


class ForkServer:
    """One process that has imported NumPy, torch and transformers, forking a launcher per student process.

    Saves each student process the imports (about 4 s). Student code is imported only after
    the fork, in the launched process, with the same namespaces, user and limits as a fresh one.
    """

    def __init__(self, limits: Limits, log: Path):
        import socket

        self.home = Path(tempfile.mkdtemp(prefix="lab04-forkserver-"))
        self.sock, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        with log.open("ab") as err:
            self.process = subprocess.Popen(
                [sys.executable, "-I", "-m", "grader.child", "--fork-server", str(theirs.fileno())],
                env=child_environment(self.home, limits.threads),
                cwd=self.home,
                stdin=subprocess.DEVNULL,
                stdout=err,
                stderr=err,
                pass_fds=(theirs.fileno(),),
                start_new_session=True,
            )
        theirs.close()
        self.lock = threading.Lock()

    def spawn(self, argv: list[str], fds: list[int], env: dict[str, str], cwd: Path, status_fd: int) -> ForkedProcess:
        """Start a launcher with ``argv`` ("{n}" stands for ``fds[n]``); the descriptors are passed, not kept."""
        import socket

        message = json.dumps({"argv": argv, "env": env, "cwd": str(cwd)}).encode()
        with self.lock:
            socket.send_fds(self.sock, [message], fds)
            reply = self.sock.recv(1 << 16)
        if not reply:
            raise RuntimeError("the fork server is gone")
        return ForkedProcess(int(json.loads(reply)["pid"]), status_fd)

    def close(self) -> None:
        """Stop the server (launchers it started are not its to stop: their sessions do that)."""
        self.sock.close()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        shutil.rmtree(self.home, ignore_errors=True)

    def __enter__(self) -> ForkServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class _Child:
    process: subprocess.Popen | ForkedProcess  # the launcher
    control: int
    reply: int
    spawned: float = 0.0
    ready: bool = False
    buffer: bytes = b""
    student_pid: int | None = None  # the process that runs student code, as this process sees it


RUN_TOKEN_VAR = "LAB04_GRADING_RUN"


def child_environment(home: Path, threads: int, token: str = "") -> dict[str, str]:
    """A scrubbed environment: no credentials, no hub, a private home."""
    env = {
        RUN_TOKEN_VAR: token,  # inherited by anything the student starts, so it can be found and killed
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": str(home),
        "TMPDIR": str(home),
        "LANG": "C.UTF-8",
        "HF_HOME": str(home / "hf"),
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


_FRAME = re.compile(r'File "(?P<file>[^"]+)", line (?P<line>\d+) in (?P<func>\S+)')


def stuck_location(trace_text: str, work: Path) -> str | None:
    """The innermost student frame in a faulthandler dump: 'pretrained.py, line 31 in load'."""
    for match in _FRAME.finditer(trace_text):  # faulthandler lists the most recent call first
        path = Path(match["file"])
        if path.is_relative_to(work):
            return f"{path.relative_to(work).as_posix()}, line {match['line']} in {match['func']}"
    return None


class ChildSession:
    """The student process and its pipes; restarted after a time-out or a crash."""

    def __init__(self, work: Path, decoder: str, limits: Limits, scratch: Path, fork_server: ForkServer | None = None):
        self.work = work.resolve()
        self.decoder = decoder
        self.limits = limits
        self.scratch = scratch
        scratch.mkdir(parents=True, exist_ok=True)
        self.results = _results_dir(scratch)
        self.home = scratch / "home"
        self.home.mkdir(exist_ok=True)
        self.stdout_path = scratch / "stdout.txt"
        self.stderr_path = scratch / "stderr.txt"
        self.trace_path = scratch / "trace.txt"
        self.fork_server = fork_server
        self._child: _Child | None = None
        self._next_id = 0
        self.starts = 0
        self.token = secrets.token_hex(16)
        self.startup_seconds = 0.0  # spent starting children (imports), outside any tier's time
        self.peak_rss_bytes = 0  # the largest resident set any child reached
        self.isolation: dict[str, Any] = {}  # what the last child could set up (grader.jail.Isolation)
        self.as_root = os.geteuid() == 0 and limits.isolate
        self.uid = -1
        self.staged: dict[str, str] = {}  # checkpoint path -> the copy the student's user can read
        if self.as_root:
            self.uid = limits.uid if limits.uid is not None else _next_uid()
            self._hand_over()

    def _hand_over(self) -> None:
        """Let the student's user traverse the scratch folder and own its copy, results and home."""
        self.scratch.chmod(0o711)
        for top in (self.work, self.results, self.home):
            for folder, dirs, files in os.walk(top):
                for name in [folder, *(os.path.join(folder, f) for f in dirs + files)]:
                    os.lchown(name, self.uid, self.uid)
        for top in self.work.parents:  # a zip or notebook copy sits one level down in the scratch folder
            if top == self.scratch:
                break
            top.chmod(0o711)

    def hidden(self) -> list[Path]:
        """The paths the student process will not see."""
        paths = default_hidden() + [Path(p) for p in self.limits.hide]
        return [p for p in paths if p.resolve() not in NEVER_HIDDEN]

    def _child_job(self, job: dict[str, Any]) -> dict[str, Any]:
        """``job`` with each checkpoint path replaced by a copy the student's user can read."""
        if not self.as_root:
            return job
        job = json.loads(json.dumps(job))
        for checkpoint in job.get("checkpoints", []):
            path = checkpoint["path"]
            if path not in self.staged:
                dest = self.scratch / "models" / str(len(self.staged))
                self.staged[path] = str(stage_checkpoint(Path(path), dest))
                (self.scratch / "models").chmod(0o755)
            checkpoint["path"] = self.staged[path]
        return job

    # ---------------------------------------------------------------- process life

    def start(self) -> None:
        """Spawn a child now, without waiting: its imports overlap with the caller's own work."""
        if self._child is None:
            self._child = self._spawn()

    def _spawn(self) -> _Child:
        control_r, control_w = os.pipe()
        reply_r, reply_w = os.pipe()
        # A backstop behind the wall-clock time-outs: CPU seconds for every tier on every thread.
        cpu = int((self.limits.timeout * 5 + self.limits.startup_timeout) * max(2, self.limits.threads)) + 60
        forked = self.fork_server is not None
        command = [
            "--work", str(self.work), "--results", str(self.results),
            "--control-fd", "{0}" if forked else str(control_r), "--reply-fd", "{1}" if forked else str(reply_w),
            "--trace-file", str(self.trace_path), "--decoder", self.decoder,
            "--memory-bytes", str(self.limits.memory_bytes), "--cpu-seconds", str(cpu),
            "--file-bytes", str(self.limits.file_bytes), "--processes", str(self.limits.processes),
            "--stdout-file", str(self.stdout_path), "--stderr-file", str(self.stderr_path),
            "--output-bytes", str(self.limits.output_bytes), "--uid", str(self.uid),
            "--keep", str(self.scratch), "--keep", str(self.results),
        ]  # fmt: skip
        if self.limits.isolate:
            command.append("--isolate")
        for path in self.hidden():
            command += ["--hide", str(path)]
        env = child_environment(self.home, self.limits.threads, self.token)
        if forked:
            status_r, status_w = os.pipe()
            try:
                process = self.fork_server.spawn(
                    [*command, "--status-fd", "{2}"], [control_r, reply_w, status_w], env, self.work, status_r
                )
            finally:
                for fd in (control_r, reply_w, status_w):
                    os.close(fd)
            self.starts += 1
            return _Child(process, control_w, reply_r, spawned=time.monotonic())
        with self.stderr_path.open("ab") as err:  # the launcher's own complaints, if any
            process = subprocess.Popen(
                [sys.executable, "-I", "-m", "grader.child", *command],
                cwd=self.work,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=err,
                stderr=err,
                pass_fds=(control_r, reply_w),
                start_new_session=True,  # its own process group, killed as a whole
            )
        os.close(control_r)
        os.close(reply_w)
        self.starts += 1
        return _Child(process, control_w, reply_r, spawned=time.monotonic())

    def _ready(self) -> _Child:
        """The running child, started and past its imports; a new one if the last was killed."""
        self.start()
        child = self._child
        if not child.ready:
            event = self._read_event(child, child.spawned + self.limits.startup_timeout)
            if event is not None and event.get("event") == "launched":
                child.student_pid = event.get("pid") if isinstance(event.get("pid"), int) else None
                event = self._read_event(child, child.spawned + self.limits.startup_timeout)
            if event is not None and event.get("event") == "ready" and isinstance(event.get("isolation"), dict):
                self.isolation = event["isolation"]
            if event is None or event.get("event") != "ready":
                self._kill(child)
                self._child = None
                raise RuntimeError("the student process did not start: " + self._tail(self.stderr_path, 2000))
            child.ready = True
            self.startup_seconds += time.monotonic() - child.spawned
        return child

    def _note_peak(self, child: _Child) -> None:
        """Read the child's high-water mark of resident memory while it still exists."""
        try:
            status = Path(f"/proc/{child.student_pid or child.process.pid}/status").read_text()
        except OSError:
            return
        match = re.search(r"^VmHWM:\s+(\d+) kB", status, re.MULTILINE)
        if match:
            self.peak_rss_bytes = max(self.peak_rss_bytes, int(match.group(1)) * 1024)

    def _kill(self, child: _Child) -> None:
        self._note_peak(child)
        for kill, target in ((os.killpg, child.process.pid), (os.kill, child.student_pid)):
            try:
                if target:  # the student process, as PID 1 of its namespace, takes everything along
                    kill(target, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        child.process.wait()
        for fd in (child.control, child.reply):
            try:
                os.close(fd)
            except OSError:
                pass

    def _kill_stragglers(self) -> None:
        """Kill processes the student started in a session of their own: they carry our token."""
        marker = f"{RUN_TOKEN_VAR}={self.token}".encode()
        for proc in Path("/proc").glob("[0-9]*"):
            try:
                if marker in (proc / "environ").read_bytes().split(b"\0"):
                    os.kill(int(proc.name), signal.SIGKILL)
            except (OSError, ValueError):
                continue

    def close(self) -> None:
        """Stop the child, if one runs, and anything it left behind."""
        try:
            self._close_child()
        finally:
            self._kill_stragglers()
            if not self.results.is_relative_to(self.scratch):
                shutil.rmtree(self.results, ignore_errors=True)

    def _close_child(self) -> None:
        if self._child is not None and not self._child.ready:
            self._kill(self._child)  # still importing: nothing to wait for
            self._child = None
        if self._child is not None:
            self._note_peak(self._child)
            try:
                os.write(self._child.control, b'{"tier": "exit"}\n')
                self._child.process.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                pass
            self._kill(self._child)
            self._child = None

    # ---------------------------------------------------------------- requests

    def _read_event(self, child: _Child, deadline: float) -> dict[str, Any] | None:
        """The next event line, or None at the deadline or end of file."""
        while b"\n" not in child.buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            ready, _, _ = select.select([child.reply], [], [], remaining)
            if not ready:
                return None
            chunk = os.read(child.reply, 1 << 20)
            if not chunk:
                return {"event": "eof"}
            child.buffer += chunk
        line, child.buffer = child.buffer.split(b"\n", 1)
        try:
            event = json.loads(line)
        except ValueError:
            return {"event": "garbage"}
        return event if isinstance(event, dict) else {"event": "garbage"}

    def run(self, tier: str, job: dict[str, Any]) -> Reply:
        """Ask the child to collect ``tier`` for ``job``; never raises for anything the student does."""
        child = self._ready()
        started = time.monotonic()
        self._next_id += 1
        request_id = self._next_id
        try:
            request = {"id": request_id, "tier": tier, "job": self._child_job(job)}
            os.write(child.control, (json.dumps(request) + "\n").encode())
        except OSError:  # the child died between requests (a student thread may have ended it)
            reply = self._crashed(child, None, None)
            reply.seconds = time.monotonic() - started
            return reply
        deadline = time.monotonic() + self.limits.timeout
        function, exit_call = None, None
        while True:
            event = self._read_event(child, deadline)
            if event is None:
                reply = self._timed_out(child, function)
                break
            kind = event.get("event")
            if kind == "calling":
                function = str(event.get("function"))[:200]
            elif kind == "exit-called":
                exit_call = event
            elif kind == "done" and event.get("id") == request_id:
                self._note_peak(child)
                reply = self._finished(event, request_id)
                break
            elif kind in ("eof", "garbage"):
                reply = self._crashed(child, function, exit_call)
                break
        reply.seconds = time.monotonic() - started
        return reply

    def _finished(self, event: dict[str, Any], request_id: int) -> Reply:
        status = event.get("status")
        decoder = event.get("decoder") if event.get("decoder") in ("submission", "reference") else None
        if status == "ok":
            return Reply("ok", collected=self._load_arrays(event, request_id), decoder=decoder)
        if status == "student_error":
            record = event.get("record")
            if not isinstance(record, dict) or not isinstance(record.get("summary"), str):
                record = {"summary": "your code failed in a way the grader could not read", "type": "unknown"}
            return Reply("student_error", record=record, decoder=decoder)
        return Reply("harness_error", detail=str(event.get("traceback", "")), decoder=decoder)

    def _load_arrays(self, event: dict[str, Any], request_id: int) -> Collected:
        """Read the arrays with ``allow_pickle=False`` and check them against the manifest."""
        folder_name = event.get("folder")
        if not isinstance(folder_name, str) or not re.fullmatch(rf"{request_id}-[0-9a-f]{{16}}", folder_name):
            return Collected(arrays={}, meta={})  # a folder named by someone else: nothing in it counts
        folder = self.results / folder_name
        arrays: dict[str, np.ndarray] = {}
        manifest = event.get("arrays")
        for name, entry in manifest.items() if isinstance(manifest, dict) else []:
            try:
                array = _read_npy(folder / Path(entry["file"]).name)
            except (OSError, ValueError, KeyError, TypeError, EOFError):
                continue  # unreadable data counts as missing; the tier then says what is missing
            if array.dtype.str == entry.get("dtype") and list(array.shape) == entry.get("shape"):
                arrays[name] = array
        shutil.rmtree(folder, ignore_errors=True)
        meta = event.get("meta") if isinstance(event.get("meta"), dict) else {}
        return Collected(arrays=arrays, meta=meta)

    def _timed_out(self, child: _Child, function: str | None) -> Reply:
        self.trace_path.write_text("")
        for kill, target in ((os.killpg, child.process.pid), (os.kill, child.student_pid)):
            try:
                if target:
                    kill(target, signal.SIGUSR1)  # faulthandler writes the stacks; the launcher ignores it
            except (ProcessLookupError, PermissionError):
                pass
        time.sleep(0.5)
        where = stuck_location(self.trace_path.read_text(errors="replace"), self.work)
        self._kill(child)
        self._child = None
        return Reply("timeout", function=function, where=where,
                     detail=f"did not finish within {self.limits.timeout:g} s")  # fmt: skip

    def _crashed(self, child: _Child, function: str | None, exit_call: dict[str, Any] | None) -> Reply:
        try:
            code = child.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            code = None
        self._kill(child)
        self._child = None
        if exit_call is not None:
            detail = f"called {exit_call['how']}, which ended the process"
            return Reply("crashed", function=function, where=exit_call.get("where"), detail=detail)
        if code is not None and code < 0:
            name = signal.Signals(-code).name
            detail = f"the process was killed by {name}"
            if -code == signal.SIGXCPU:
                detail += " (CPU time limit)"
            elif -code == signal.SIGXFSZ:
                detail += " (it wrote more data than the file size limit)"
            elif -code in (signal.SIGKILL, signal.SIGSEGV, signal.SIGABRT, signal.SIGBUS):
                detail += f" (possibly out of memory: the limit is {self.limits.memory_bytes / 2**30:.3g} GiB)"
        else:
            detail = f"the process exited early with code {code}"
        return Reply("crashed", function=function, detail=detail)

    # ---------------------------------------------------------------- output for staff

    @staticmethod
    def _tail(path: Path, cap: int) -> str:
        try:
            data = path.read_bytes()
        except OSError:
            return ""
        text = data.decode("utf-8", errors="replace")
        if len(text) <= cap:
            return text
        half = cap // 2
        return text[:half] + f"\n... [{len(text) - cap} characters cut] ...\n" + text[-half:]

    def output(self) -> tuple[str, str]:
        """The student process's stdout and stderr, cut to the cap."""
        return self._tail(self.stdout_path, self.limits.output_cap), self._tail(
            self.stderr_path, self.limits.output_cap
        )


def _read_npy(path: Path) -> np.ndarray:
    """An array file the student's user wrote: a regular file (no link to elsewhere), no pickles."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    with os.fdopen(fd, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ValueError(f"{path.name} is not a regular file")
        return np.load(fh, allow_pickle=False)


def _results_dir(scratch: Path) -> Path:
    """Where the student process leaves its arrays: in memory (/dev/shm) when there is one, since a
    GPT-2-small-sized model is half a gigabyte per grading; else in the scratch folder."""
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK):
        try:
            return Path(tempfile.mkdtemp(prefix="lab04-results-", dir=shm))
        except OSError:
            pass
    folder = scratch / "results"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def scratch_dir() -> Path:
    """A private folder for one grading run."""
    return Path(tempfile.mkdtemp(prefix="lab04-grade-"))
