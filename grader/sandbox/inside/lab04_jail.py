"""Isolation of one student process (Linux): namespaces, an allow-list root, limits, a user of its own.

Runs in the trusted launcher and in the student process before any student code. It
imports only the standard library, so that the student process holds no code of the
grader's but this and the agent.

The order, in ``grader.sandbox.inside.lab04_zygote``:

1. ``enter_namespaces`` (the launcher): new mount, PID, network, IPC and UTS namespaces;
   as root directly, otherwise inside a new user namespace when the kernel allows it.
2. The launcher forks the student process: PID 1 of the new PID namespace, so that when
   it ends the kernel kills everything it started.
3. ``build_root`` (the student process): a fresh tmpfs becomes its root file system,
   holding only what the plan binds into it (the Python installation, its own copy of
   the submission, its checkpoints, a size-limited scratch folder); ``pivot_root`` and
   a lazy unmount make the rest of the machine unreachable.
4. ``apply_limits`` and ``drop_privileges``: rlimits, then an unprivileged uid (as root)
   or no capabilities (in a user namespace), and ``no_new_privs``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform
import resource
import signal

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
NAMESPACES = CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS

MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_NOATIME, MS_NODIRATIME, MS_BIND, MS_REC = 32, 1024, 2048, 4096, 16384
MS_PRIVATE, MS_RELATIME = 1 << 18, 1 << 21
MNT_DETACH = 2
PR_SET_PDEATHSIG, PR_CAPBSET_DROP, PR_SET_NO_NEW_PRIVS = 1, 24, 38
SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41}.get(platform.machine())
SYS_CAPSET = {"x86_64": 126, "aarch64": 91}.get(platform.machine())
# statvfs flags a bind mount inherits; a remount inside a user namespace must keep the locked ones.
_KEPT_FLAGS = (
    (os.ST_NOSUID, MS_NOSUID),
    (os.ST_NODEV, MS_NODEV),
    (os.ST_NOEXEC, MS_NOEXEC),
    (os.ST_NOATIME, MS_NOATIME),
    (os.ST_NODIRATIME, MS_NODIRATIME),
    (os.ST_RELATIME, MS_RELATIME),
)
DEVICES = ("null", "zero", "full", "random", "urandom")

_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    def enc(s: str | None) -> bytes | None:
        return s.encode() if s is not None else None

    _check(_libc.mount(enc(source), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data)), f"mount {target}")


class Layers:
    """Which isolation layers a student process got, and why the others are missing."""

    def __init__(self) -> None:
        self.held: list[str] = []
        self.unavailable: list[str] = []
        self.uid: int | None = None

    def to_json(self) -> dict:
        return {"held": self.held, "unavailable": self.unavailable, "uid": self.uid}


# ---------------------------------------------------------------- the launcher


def enter_namespaces(layers: Layers) -> bool:
    """Unshare the namespaces; as non-root inside a new user namespace. True when they are held."""
    uid, gid = os.geteuid(), os.getegid()
    attempts = [("", NAMESPACES)] if uid == 0 else []
    attempts.append((" in a user namespace", NAMESPACES | CLONE_NEWUSER))
    reasons = []
    for how, flags in attempts:
        if _libc.unshare(ctypes.c_int(flags)) == 0:
            if flags & CLONE_NEWUSER:
                _map_own_user(uid, gid)
                layers.held.append("user namespace")
            layers.held += ["mount namespace", "PID namespace", "network namespace", "IPC namespace", "UTS namespace"]
            return True
        reasons.append(f"unshare{how}: {os.strerror(ctypes.get_errno())}")
    layers.unavailable.append(
        "namespaces (mount, PID, network, IPC, UTS): the kernel refused them ("
        + "; ".join(reasons)
        + "), so student code sees the machine's files, network and processes"
    )
    return False


def _map_own_user(uid: int, gid: int) -> None:
    """Inside a fresh user namespace: keep our own uid and gid (the only mapping allowed unprivileged)."""
    with open("/proc/self/setgroups", "w") as fh:
        fh.write("deny")
    with open("/proc/self/uid_map", "w") as fh:
        fh.write(f"{uid} {uid} 1")
    with open("/proc/self/gid_map", "w") as fh:
        fh.write(f"{gid} {gid} 1")


def die_with_parent() -> None:
    """Be killed when the launcher dies (and, as PID 1, take the whole namespace along)."""
    _check(_libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0), "prctl(PDEATHSIG)")


# ---------------------------------------------------------------- the root file system


def _bind(source: str, target: str, read_only: bool) -> None:
    if os.path.isdir(source):
        os.makedirs(target, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(target), exist_ok=True)
        if not os.path.exists(target):
            open(target, "w").close()
    _mount(source, target, None, MS_BIND | MS_REC)
    if read_only:
        kept = os.statvfs(target).f_flag
        flags = MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV
        for st, ms in _KEPT_FLAGS:
            if kept & st:
                flags |= ms
        _mount(None, target, None, flags)


def _inside(root: str, path: str) -> str:
    return root + "/" + path.lstrip("/")


def build_root(plan: dict, layers: Layers) -> None:
    """Make a tmpfs holding only the plan's paths the root file system (``pivot_root``).

    ``plan`` (made by the parent, ``grader.sandbox.plan``): ``root`` (an empty folder to build
    on), ``ro`` and ``rw`` ([source, target] binds), ``over`` (read-only binds over a path
    already bound, for stand-ins), ``cover`` (paths hidden under an empty read-only tmpfs),
    ``tmpfs`` ([target, bytes]), ``files`` ([target, text]), ``symlinks`` ([target, link]), ``cwd``.
    """
    root = plan["root"]
    _mount(None, "/", None, MS_REC | MS_PRIVATE)  # nothing we mount propagates back to the host
    _mount("tmpfs", root, "tmpfs", MS_NOSUID | MS_NODEV, "size=16m,nr_inodes=4096,mode=755")
    # The private /tmp first, the binds after: a Python installation or checkout that lies under /tmp on the
    # host (a venv in /tmp/clone/.venv) is then bound inside it, not hidden by it.
    for target, size in plan.get("tmpfs", []):
        path = _inside(root, target)
        os.makedirs(path, exist_ok=True)
        _mount("tmpfs", path, "tmpfs", MS_NOSUID | MS_NODEV, f"size={int(size)},nr_inodes=65536,mode=1777")
    for source, target in plan.get("ro", []):
        if os.path.exists(source):
            _bind(source, _inside(root, target), read_only=True)
    for source, target in plan.get("rw", []):
        if os.path.exists(source):
            _bind(source, _inside(root, target), read_only=False)
    for source, target in plan.get("over", []):
        if os.path.exists(_inside(root, target)):
            _bind(source, _inside(root, target), read_only=True)
    for target in plan.get("cover", []):
        path = _inside(root, target)
        if os.path.isdir(path):
            _mount("tmpfs", path, "tmpfs", MS_NOSUID | MS_NODEV | MS_RDONLY, "size=4k,nr_inodes=4,mode=755")
        elif os.path.exists(path):
            _mount("/dev/null", path, None, MS_BIND)
    for name in DEVICES:
        _bind(f"/dev/{name}", _inside(root, f"/dev/{name}"), read_only=False)
    for target, link in plan.get("symlinks", []):
        path = _inside(root, link)
        if not os.path.lexists(path):
            os.makedirs(os.path.dirname(path), exist_ok=True)
            os.symlink(target, path)
    for target, text in plan.get("files", []):
        path = _inside(root, target)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as fh:
            fh.write(text)
    os.makedirs(_inside(root, "/proc"), exist_ok=True)
    _mount("proc", _inside(root, "/proc"), "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    old = _inside(root, "/.old-root")
    os.makedirs(old, exist_ok=True)
    if SYS_PIVOT_ROOT is None:
        raise OSError(0, f"pivot_root: unknown system call number on {platform.machine()}")
    _check(_libc.syscall(SYS_PIVOT_ROOT, root.encode(), old.encode()), "pivot_root")
    os.chdir("/")
    _check(_libc.umount2(b"/.old-root", MNT_DETACH), "umount the old root")
    os.rmdir("/.old-root")
    _mount(None, "/", None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)
    os.chdir(plan.get("cwd", "/"))
    layers.held.append("allow-list root file system")


# ---------------------------------------------------------------- limits and user


def apply_limits(limits: dict) -> None:
    """Address space, CPU, file size, open files, no core dumps; the process count comes with the user."""
    pairs = [
        (resource.RLIMIT_AS, limits.get("memory_bytes", -1)),
        (resource.RLIMIT_FSIZE, limits.get("file_bytes", -1)),
        (resource.RLIMIT_NOFILE, limits.get("open_files", 1024)),
        (resource.RLIMIT_CORE, 0),
    ]
    for limit, value in pairs:
        if value >= 0:
            resource.setrlimit(limit, (value, value))
    cpu = limits.get("cpu_seconds", 0)
    if cpu > 0:  # the soft limit sends SIGXCPU, the hard one SIGKILL
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 5))


def drop_privileges(layers: Layers, uid: int, processes: int) -> None:
    """Become ``uid`` for good as root; in a user namespace, give up every capability; no new privileges."""
    if os.geteuid() == 0 and uid > 0 and "user namespace" not in layers.held:
        if processes > 0:  # counts the new user's processes and threads; root is exempt
            resource.setrlimit(resource.RLIMIT_NPROC, (processes, processes))
        os.setgroups([])
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)
        layers.uid = uid
        layers.held.append(f"separate user (uid {uid})")
        layers.held.append(f"process limit ({processes})")
    elif "user namespace" in layers.held:
        if processes > 0:  # counted per user namespace (Linux 5.14 and later)
            resource.setrlimit(resource.RLIMIT_NPROC, (processes, processes))
            layers.held.append(f"process limit ({processes})")
        _drop_capabilities()
        layers.uid = os.geteuid()
        layers.held.append("no capabilities")
    else:
        layers.unavailable.append(
            "separate user: the grader does not run as root and has no user namespace, so student code "
            "runs as the grader's own user; only the wall clock bounds forks"
        )
    _check(_libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl(NO_NEW_PRIVS)")


def _drop_capabilities() -> None:
    """Empty the bounding, effective, permitted and inheritable sets (a user namespace grants them all)."""
    for cap in range(64):
        if _libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            break  # past the last capability this kernel knows
    header = (ctypes.c_uint32 * 2)(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3, this process
    data = (ctypes.c_uint32 * 6)()  # two {effective, permitted, inheritable} structs, all zero
    if SYS_CAPSET is not None:
        _check(_libc.syscall(SYS_CAPSET, header, data), "capset")
