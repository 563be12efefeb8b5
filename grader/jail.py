"""Operating-system isolation of the student process (Linux): namespaces, hidden paths, a dropped user.

Used by ``grader.child`` only, in this order:

1. ``enter_namespaces`` (the launcher, before any import of note): new PID, mount and
   network namespaces when the grader runs as root. The launcher then forks the
   student process, which is PID 1 of the new PID namespace: when it ends, the kernel
   kills everything it started, sessions and daemons included.
2. ``relay_output`` (the launcher, trusted, never runs student code): copies the
   student's stdout and stderr to files, up to a cap, and passes on the exit status.
3. ``hide_paths`` and ``drop_privileges`` (the student process, after its imports,
   before the student's code): the grader's own files, the reference solution,
   the checkpoint cache and the report folder disappear under empty tmpfs
   mounts, and the process becomes an unprivileged uid with no way back.

Nothing here is a container: see the threat model in the README.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import select
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

CLONE_NEWNS = 0x00020000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
MS_NOSUID, MS_NODEV, MS_NOEXEC = 2, 4, 8
MS_BIND, MS_REC, MS_PRIVATE = 4096, 16384, 1 << 18
PR_SET_PDEATHSIG, PR_SET_NO_NEW_PRIVS = 1, 38

_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    enc = lambda s: s.encode() if s is not None else None  # noqa: E731
    _check(_libc.mount(enc(source), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data)), f"mount {target}")


@dataclass
class Isolation:
    """What the launcher managed to set up; reported to the parent, then in the report."""

    pid_namespace: bool = False
    mount_namespace: bool = False
    network_namespace: bool = False
    uid: int | None = None  # the unprivileged uid student code runs as, when dropped
    hidden: list[str] = field(default_factory=list)
    unavailable: list[str] = field(default_factory=list)  # protections missing, with the reason

    def to_json(self) -> dict:
        return {
            "pid_namespace": self.pid_namespace,
            "mount_namespace": self.mount_namespace,
            "network_namespace": self.network_namespace,
            "uid": self.uid,
            "hidden": self.hidden,
            "unavailable": self.unavailable,
        }


def enter_namespaces(isolation: Isolation) -> None:
    """Unshare PID, mount and network namespaces (root only); records what is missing."""
    if os.geteuid() != 0:
        isolation.unavailable += [
            "separate user: the grader does not run as root, so student code runs as the grader's own user",
            "PID namespace: needs root; processes a submission detaches are found by an environment token instead",
            "network isolation: needs root; the student process can reach the network",
            "hidden files: needs root; student code can read whatever the grader's user can read",
        ]
        return
    try:
        _check(_libc.unshare(CLONE_NEWPID | CLONE_NEWNS | CLONE_NEWNET), "unshare")
    except OSError as exc:
        isolation.unavailable.append(f"namespaces: {exc}")
        return
    isolation.pid_namespace = isolation.mount_namespace = isolation.network_namespace = True


def die_with_parent() -> None:
    """Be killed when the launcher dies (and, as PID 1, take the whole namespace along)."""
    _check(_libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0), "prctl(PDEATHSIG)")


def mount_private_proc(isolation: Isolation) -> None:
    """Make mounts private to this namespace and show only its own processes in /proc."""
    if not isolation.mount_namespace:
        return
    _mount(None, "/", None, MS_REC | MS_PRIVATE)
    if isolation.pid_namespace:
        _mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)


def _under(path: Path, root: Path) -> bool:
    return path == root or path.is_relative_to(root)


def hide_paths(isolation: Isolation, hide: list[Path], keep: list[Path]) -> None:
    """Cover each path in ``hide`` with an empty tmpfs (a file: with /dev/null), then bring
    back the paths in ``keep`` that were covered (the Python installation, the student's
    folder). A hidden path inside a kept one is covered again afterwards."""
    if not isolation.mount_namespace:
        return
    hide = sorted({p.resolve() for p in hide if p.exists()}, key=lambda p: len(p.parts))
    keep = sorted({p.resolve() for p in keep if p.exists()}, key=lambda p: len(p.parts))
    first = [h for h in hide if not any(_under(h, k) and h != k for k in keep)]
    first = [h for h in first if not any(_under(h, o) and h != o for o in first)]  # outermost only
    covered = [k for k in keep if any(_under(k, h) for h in first)]
    covered = [k for k in covered if not any(_under(k, c) and k != c for c in covered)]  # outermost only
    # Hold each kept path open before covering its parent: the descriptor still reaches it.
    held = [(os.open(path, os.O_PATH), path) for path in covered]
    for path in first:
        _cover(path)
    for fd, path in held:
        if os.path.isdir(f"/proc/self/fd/{fd}"):
            path.mkdir(parents=True, exist_ok=True)  # a mount point inside the new tmpfs
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch()
        _mount(f"/proc/self/fd/{fd}", str(path), None, MS_BIND | MS_REC)
        os.close(fd)
    # Hidden paths inside a kept tree (the grader installed in the kept site-packages) are covered
    # again; those inside an already covered tree stay covered, and an ancestor of a kept path is
    # never covered again, which would hide the kept path with it.
    for path in hide:
        inside_kept = any(_under(path, k) and path != k for k in keep)
        holds_kept = any(_under(k, path) for k in keep)
        if path not in first and inside_kept and not holds_kept and path.exists():
            _cover(path)
    isolation.hidden = [str(p) for p in hide]


def _cover(path: Path) -> None:
    if path.is_dir():
        _mount("tmpfs", str(path), "tmpfs", MS_NOSUID | MS_NODEV, "size=64k,mode=755")
    else:
        _mount("/dev/null", str(path), None, MS_BIND)


def drop_privileges(isolation: Isolation, uid: int) -> None:
    """Become ``uid`` (and group ``uid``) for good: no supplementary groups, no new privileges.

    A negative ``uid`` keeps the user and only forbids gaining privileges (setuid programs)."""
    if uid >= 0 and os.geteuid() == 0:
        os.setgroups([])
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)
        isolation.uid = uid
    _check(_libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl(NO_NEW_PRIVS)")


def relay_output(pid: int, streams: list[tuple[int, str]], cap: int) -> int:
    """Copy each (pipe, file), keeping the first and the last ``cap // 2`` bytes, until the student
    process ``pid`` has ended and its pipes are drained; return its wait status. Runs in the
    trusted launcher: student code never writes these files itself."""
    relays = {fd: _Relay(path, cap) for fd, path in streams}
    status, drain_until = None, None
    while relays:
        if drain_until is not None and time.monotonic() > drain_until:
            break  # a process it left behind holds the pipe open: stop waiting for it
        ready, _, _ = select.select(list(relays), [], [], 0.2)
        for fd in ready:
            try:
                chunk = os.read(fd, 1 << 16)
            except OSError:
                chunk = b""
            if chunk:
                relays[fd].add(chunk)
            else:
                relays.pop(fd).close()
                os.close(fd)
        if status is None:
            done, status_now = os.waitpid(pid, os.WNOHANG)
            if done:
                status, drain_until = status_now, time.monotonic() + 1.0
    for fd in list(relays):
        relays.pop(fd).close()
        os.close(fd)
    if status is None:
        _, status = os.waitpid(pid, 0)
    return status


class _Relay:
    """One output stream: its head goes straight to the file, its tail waits in memory."""

    def __init__(self, path: str, cap: int):
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self.head_room = cap // 2
        self.tail_cap = cap - cap // 2
        self.tail = bytearray()
        self.dropped = 0

    def add(self, chunk: bytes) -> None:
        if self.head_room:
            head = chunk[: self.head_room]
            os.write(self.fd, head)
            self.head_room -= len(head)
            chunk = chunk[len(head) :]
        self.tail += chunk
        if len(self.tail) > self.tail_cap:
            excess = len(self.tail) - self.tail_cap
            self.dropped += excess
            del self.tail[:excess]

    def close(self) -> None:
        if self.dropped:
            os.write(self.fd, f"\n[... {self.dropped} bytes of output dropped by the grader ...]\n".encode())
        if self.tail:
            os.write(self.fd, bytes(self.tail))
        os.close(self.fd)


def exit_like(status: int) -> None:
    """End this process the way the student process ended, so the parent sees the same status."""
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        signal.signal(sig, signal.SIG_DFL)
        os.kill(os.getpid(), sig)
        os._exit(128 + sig)  # a signal that cannot kill us (should not happen)
    os._exit(os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 1)
