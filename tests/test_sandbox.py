"""The sandbox itself: what a student process sees, what it may do, how it ends; as root, as a user, in Docker.

These drive ``grader.sandbox`` directly (fork servers, a plan, a student process and the agent
inside it) with a small probe module, so each layer is checked on its own. The hostile bank
(tests/test_hostile.py) checks the same layers through the whole grader.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from conftest import DOCKER_LIKE, REPO, make_submission

from grader.errors import SandboxError
from grader.grading.checkpoints import BUILTIN
from grader.sandbox.limits import Limits
from grader.sandbox.plan import build_plan, python_paths
from grader.sandbox.process import ResultsMemfd, StudentProcess
from grader.sandbox.zygote import INSIDE, Zygote
from lab04_checks.checkpoints import default_root, ensure_checkpoint

ROOT = os.geteuid() == 0
PROBE = """
import os, socket, ctypes
def listing(path="/"):
    return sorted(os.listdir(path))
def read(path):
    with open(path, "rb") as fh:
        return len(fh.read())
def who():
    return [os.getuid(), os.getgid(), os.getpid(), len([p for p in os.listdir("/proc") if p.isdigit()]) <= 3]
def interfaces():
    return sorted(os.listdir("/sys/class/net")) if os.path.isdir("/sys/class/net") else []
def connect(port):
    socket.create_connection(("127.0.0.1", port), timeout=1).close()
def shm():
    return ctypes.CDLL(None).shmget(0x4C414299, 4096, 0o1666) >= 0
def torch_file():
    import torch
    try:
        torch.from_numpy(__import__("numpy").zeros(1))
        return [torch.__file__, True]
    except Exception:
        return [torch.__file__, False]
def spin():
    while True:
        pass
def hog():
    return len(bytearray(2**33))
def quit():
    os._exit(4)
def crash():
    ctypes.string_at(0)
def memfd(n):
    fd = os.memfd_create("mine")
    chunk, written = b"x" * (1 << 20), 0
    try:
        while written < n:
            written += os.write(fd, chunk)
    except OSError:
        pass
    return written
def shout(n):
    import sys
    line = "y" * 1023 + chr(10)
    for _ in range(n // 1024):
        sys.stdout.write(line)
    sys.stdout.flush()
def forge():
    import json, threading
    sockets = []
    for fd in range(3, 64):
        try:
            s = socket.socket(fileno=os.dup(fd))
        except OSError:
            continue
        if s.type == socket.SOCK_SEQPACKET:
            sockets.append(s)
    for s in sockets:  # a reply to a request the grader never made, ahead of the real one
        try:
            s.send(json.dumps({"v": 1, "id": 987654, "status": "ok", "result": {"t": "int", "v": 42}}).encode())
        except OSError:
            pass
    return 7
def big(n):
    import numpy
    return numpy.zeros(n, dtype=numpy.float32)
def collector():
    import gc
    return [gc.isenabled(), gc.get_freeze_count()]
"""


@pytest.fixture(scope="module")
def zygotes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Zygote]]:
    folder = tmp_path_factory.mktemp("zygotes")
    made = {flavour: Zygote(flavour, 1, folder / f"{flavour}.log") for flavour in ("torch", "numpy")}
    yield made
    for zygote in made.values():
        zygote.close()


def start(zygotes: dict[str, Zygote], tmp_path: Path, flavour: str, **limits: object) -> StudentProcess:
    sub = make_submission(tmp_path / "sub", {"pretrained.py": PROBE})
    root = tmp_path / f"root-{flavour}"
    root.mkdir()
    tiny = ensure_checkpoint(BUILTIN["tiny"])  # as grading does: it also makes the files readable by all
    plan = build_plan(flavour, root, sub, ".", {"tiny": tiny}, REPO / "reference", 16 << 20, 61777)
    tmp_path.chmod(0o755)
    process = StudentProcess(zygotes[flavour], plan, Limits(**limits), tmp_path, flavour, 61777)
    reply = process.request("import", {"module": "pretrained.py", "names": [], "model_class": []}, deadline())
    assert reply.ok, reply.detail
    return process


def _line(text: str) -> int:
    """The line of PROBE holding ``text`` (as the student process numbers it)."""
    return PROBE.splitlines().index(text) + 1


def deadline(seconds: float = 10) -> float:
    return time.monotonic() + seconds


def call(process: StudentProcess, fn: str, *args: object, seconds: float = 10, budget: int = 1 << 16):
    return process.request(
        "call", {"fn": fn, "args": [{"v": a} for a in args], "label": fn}, deadline(seconds), budget=budget
    )


def value(reply) -> object:
    result = reply.fields["result"]
    if result["t"] == "list":
        return [item.get("v", item) for item in result["items"]]
    return result.get("v")


@pytest.mark.skipif(not ROOT, reason="the separate user needs root (a normal user: see the user-namespace test)")
@pytest.mark.parametrize("flavour", ["torch", "numpy"])
def test_the_student_process_sees_only_its_allow_list(flavour: str, zygotes: dict, tmp_path: Path) -> None:
    process = start(zygotes, tmp_path, flavour)
    try:
        top = value(call(process, "listing"))
        # the Python installation is bound where it lies (a venv in a clone: /work, /check, ...)
        python_tops = {Path(p).parts[1] for p in python_paths()}
        fixed = {"bin", "checkpoints", "dev", "etc", "lab04", "lib", "lib32", "lib64", "proc", "root"}
        assert set(top) <= fixed | {"sbin", "submission", "sys", "tmp", "usr"} | python_tops, top
        assert {"home", "var", "opt"} & set(top) <= python_tops
        etc = set(value(call(process, "listing", "/etc")))
        assert etc <= {"group", "hostname", "ld.so.cache", "ld.so.conf", "ld.so.conf.d", "localtime", "passwd"}, etc
        assert "shadow" not in etc and "passwd" in etc
        for secret in (
            str(REPO / "grader" / "grading" / "answers.py"),
            "/etc/shadow",
            str(REPO / "reference"),
            str(default_root() / "tiny" / "model.safetensors"),
        ):
            assert call(process, "read", secret).status == "raised", secret
        assert call(process, "read", "/checkpoints/tiny/model.safetensors").ok  # its own checkpoint, by design
        uid, gid, pid, few = value(call(process, "who"))
        assert (uid, gid) == (61777, 61777) and pid == 1 and few  # PID 1 of its own namespace
        with socket.create_server(("127.0.0.1", 0)) as listener:  # the machine's loopback, listening
            assert call(process, "connect", listener.getsockname()[1]).status == "raised"
        assert value(call(process, "interfaces")) in ([], ["lo"])
        print(f"\nlayers as root, {flavour} process: {process.layers}")  # for the README's table (run with -s)
        assert "mount namespace" in process.layers["held"] and not process.layers["unavailable"]
    finally:
        process.close()


def test_a_memory_file_of_its_own_is_bounded_by_the_file_limit(zygotes: dict, tmp_path: Path) -> None:
    """memfd pages are RAM outside the address-space limit: the file-size limit bounds each one."""
    process = start(zygotes, tmp_path, "numpy", file_bytes=32 << 20)
    try:
        assert value(call(process, "memfd", 128 << 20)) == 32 << 20
    finally:
        process.close()


def test_output_is_capped_where_it_is_written(zygotes: dict, tmp_path: Path) -> None:
    """50 MB printed: the grader keeps the first and last half of its 1 MB cap on disk, not 50 MB."""
    process = start(zygotes, tmp_path, "numpy", output_bytes=1 << 20)
    try:
        assert call(process, "shout", 50 << 20, seconds=60).ok
    finally:
        process.close()
    assert process.stdout_path.stat().st_size <= (1 << 20) + 4096
    assert process.output()[0].count("y") > 1000


def test_a_reply_to_another_request_is_not_taken_for_this_one(zygotes: dict, tmp_path: Path) -> None:
    """Student code can write on the agent's socket; only a reply carrying this request's id answers it."""
    process = start(zygotes, tmp_path, "numpy")
    try:
        assert value(call(process, "forge")) == 7
        assert call(process, "listing").ok  # and the next request gets its own reply
    finally:
        process.close()


def test_the_graders_packages_are_covered_where_a_bound_tree_holds_them(tmp_path: Path, monkeypatch) -> None:
    """Installed without -e (as a bundle may be), grader/ lies in the bound site-packages: an empty mount hides it."""
    from grader.sandbox import plan

    inside = os.path.join(plan.site_packages()[0], "grader")
    outside = str(tmp_path / "elsewhere" / "grader")  # not under any bound tree: nothing to cover
    monkeypatch.setattr(plan, "own_package_dirs", lambda: [inside, outside])
    made = plan.build_plan("torch", tmp_path / "root", tmp_path / "sub", ".", {}, REPO / "reference", 1 << 20, 61777)
    assert inside in made["cover"] and outside not in made["cover"]


BUILD_ROOT = """
import json, os, sys
sys.path.insert(0, sys.argv[1])
import lab04_jail
plan = json.loads(sys.argv[2])
lab04_jail.build_root(plan, lab04_jail.Layers())
installed = plan["ro"][0][1]
print(json.dumps([sorted(os.listdir(installed)), sorted(os.listdir("/tmp"))]))
"""


@pytest.mark.skipif(not ROOT, reason="mount namespaces and binds need root")
def test_a_bound_installation_under_tmp_is_seen_inside_the_private_tmp(tmp_path: Path) -> None:
    """A checkout and its venv cloned under /tmp (git clone . /tmp/fresh) stay visible to the student process."""
    installed = Path("/tmp") / f"lab04-installed-{os.getpid()}"
    (installed / "lib").mkdir(parents=True)
    (installed / "lib" / "numpy_random.py").write_text("")
    root = tmp_path / "root"
    root.mkdir()
    plan = {"root": str(root), "ro": [[str(installed), str(installed)]], "tmpfs": [["/tmp", 1 << 20]]}
    try:
        done = subprocess.run(
            ["unshare", "--mount", sys.executable, "-I", "-c", BUILD_ROOT, str(INSIDE), json.dumps(plan)],
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        shutil.rmtree(installed, ignore_errors=True)
    assert done.returncode == 0, done.stderr
    listed, private_tmp = json.loads(done.stdout)
    assert listed == ["lib"]  # bound inside the private /tmp, not hidden under it
    assert private_tmp == [installed.name]  # and nothing else of the host's /tmp


def test_start_up_is_timed_when_the_process_was_ready_not_when_it_was_read(zygotes: dict, tmp_path: Path) -> None:
    """The grader starts processes early and reads "ready" when it needs them: the wait is not start-up."""
    sub = make_submission(tmp_path / "sub", {"pretrained.py": PROBE})
    root = tmp_path / "root"
    root.mkdir()
    plan = build_plan("numpy", root, sub, ".", {}, REPO / "reference", 16 << 20, 61777)
    tmp_path.chmod(0o755)
    process = StudentProcess(zygotes["numpy"], plan, Limits(), tmp_path, "numpy", 61777)
    try:
        process.start()
        time.sleep(2.0)  # the grader busy elsewhere
        process.wait_ready()
        assert 0 < process.startup_seconds < 1.0, process.startup_seconds
    finally:
        process.close()


@pytest.mark.skipif(not ROOT, reason="needs root")
def test_the_torch_free_process_has_no_torch_anywhere(zygotes: dict, tmp_path: Path) -> None:
    process = start(zygotes, tmp_path, "numpy")
    try:
        path, usable = value(call(process, "torch_file"))
        assert usable is False
        sources = call(process, "read", path)
        assert sources.ok and value(sources) < 10_000  # the stand-in, not torch's 80 kB __init__.py
        site = str(Path(path).parent.parent)
        assert "lib" not in value(call(process, "listing", f"{site}/torch"))  # no libtorch on this file system
    finally:
        process.close()


@pytest.mark.parametrize("flavour", ["torch", "numpy"])
def test_the_fork_servers_imports_are_frozen_out_of_the_students_garbage_collection(
    flavour: str, zygotes: dict, tmp_path: Path
) -> None:
    process = start(zygotes, tmp_path, flavour)
    try:
        enabled, frozen = value(call(process, "collector"))
        assert enabled is True  # the student's own objects are collected as usual
        assert frozen > (100_000 if flavour == "torch" else 10_000)  # torch, transformers, numpy: never walked
    finally:
        process.close()


def test_a_hang_is_timed_out_and_located(zygotes: dict, tmp_path: Path) -> None:
    process = start(zygotes, tmp_path, "numpy")
    started = time.monotonic()
    reply = call(process, "spin", seconds=1.5)
    assert reply.status == "timeout" and time.monotonic() - started < 4
    assert reply.where in (
        f"pretrained.py, line {_line('    while True:')} in spin",
        f"pretrained.py, line {_line('        pass')} in spin",
    )  # where the signal landed
    assert not process.alive


def test_exits_crashes_and_memory_are_named(zygotes: dict, tmp_path: Path) -> None:
    process = start(zygotes, tmp_path, "torch", memory_bytes=3 << 30)
    reply = call(process, "hog")
    assert reply.status == "raised" and reply.raised.type == "MemoryError"
    reply = call(process, "quit")
    assert reply.status == "crashed" and "os._exit(4)" in reply.detail
    assert reply.where == f"pretrained.py, line {_line('    os._exit(4)')}"
    process.start()
    process.request("import", {"module": "pretrained.py", "names": [], "model_class": []}, deadline())
    reply = call(process, "crash")
    assert reply.status == "crashed" and "SIGSEGV" in reply.detail
    process.close()


def test_results_larger_than_the_budget_do_not_cross(zygotes: dict, tmp_path: Path) -> None:
    process = start(zygotes, tmp_path, "numpy")
    try:
        small = call(process, "big", 10, budget=1 << 10)
        assert small.ok and small.array(small.fields["result"]["a"]).shape == (10,)
        reply = call(process, "big", 1 << 20, budget=1 << 10)
        assert reply.status == "error" and "did not fit" in reply.detail
    finally:
        process.close()


def test_a_memory_limit_with_no_room_is_a_sandbox_error(zygotes: dict, tmp_path: Path) -> None:
    with pytest.raises(SandboxError, match="leaves no room"):
        start(zygotes, tmp_path, "torch", memory_bytes=256 << 20)


@pytest.mark.skipif(not ROOT, reason="needs root")
def test_sysv_ipc_objects_die_with_the_process(zygotes: dict, tmp_path: Path) -> None:
    before = Path("/proc/sysvipc/shm").read_text()
    process = start(zygotes, tmp_path, "numpy")
    assert value(call(process, "shm")) is True
    process.close()
    assert Path("/proc/sysvipc/shm").read_text() == before


def _unprivileged(script: str, user: str = "nobody") -> dict:
    """Run ``script`` (Python) as ``user``; the Python installation is made traversable for the run."""
    import tempfile

    tmp_path = Path(tempfile.mkdtemp(prefix="lab04-usertest-"))
    tmp_path.chmod(0o777)
    changed = []
    for parent in Path(sys.prefix).resolve().parents, Path(sys.base_prefix).resolve().parents, default_root().parents:
        for folder in parent:
            mode = folder.stat().st_mode & 0o777
            if not mode & 0o001:
                changed.append((folder, mode))
                folder.chmod(mode | 0o001)
    try:
        done = subprocess.run(
            ["runuser", "-u", user, "--", sys.executable, "-c", script],
            capture_output=True,
            text=True,
            timeout=300,
            cwd=tmp_path,
            check=False,
        )
    finally:
        for folder, mode in changed:
            folder.chmod(mode)
        subprocess.run(["rm", "-rf", str(tmp_path)], check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


USER_SCRIPT = f"""
import json, os, sys, tempfile, time
sys.path.insert(0, {str(REPO)!r})
from pathlib import Path
from grader.sandbox.limits import Limits
from grader.sandbox.plan import build_plan, python_paths
from grader.sandbox.process import ResultsMemfd, StudentProcess
from grader.sandbox.zygote import Zygote
scratch = Path(tempfile.mkdtemp(prefix="lab04-sandbox-test-"))
scratch.chmod(0o755)
sub = scratch / "sub"; sub.mkdir(); (sub / "pretrained.py").write_text({PROBE!r})
zygote = Zygote("numpy", 1, scratch / "z.log")
root = scratch / "root"; root.mkdir()
plan = build_plan("numpy", root, sub, ".", {{}}, Path({str(REPO / "reference")!r}), 16 << 20, os.getuid())
p = StudentProcess(zygote, plan, Limits(), scratch, "numpy", os.getuid())
p.request("import", {{"module": "pretrained.py", "names": [], "model_class": []}}, time.monotonic() + 30)
reply = p.request("call", {{"fn": "listing"}}, time.monotonic() + 30, budget=1 << 16)
print(json.dumps({{"layers": p.layers, "listing": [i["v"] for i in reply.fields["result"]["items"]]}}))
p.close(); zygote.close()
import shutil; shutil.rmtree(scratch, ignore_errors=True)
"""


@pytest.mark.slow
@pytest.mark.skipif(not ROOT, reason="makes an unprivileged user run the sandbox; needs root to become one")
def test_a_normal_user_gets_the_same_isolation_through_a_user_namespace(tmp_path: Path) -> None:
    seen = _unprivileged(USER_SCRIPT)
    print(f"\nlayers as a normal user: {seen['layers']}")  # for the README's table (run with -s)
    assert "user namespace" in seen["layers"]["held"] and "allow-list root file system" in seen["layers"]["held"]
    assert "no capabilities" in seen["layers"]["held"] and not seen["layers"]["unavailable"]
    assert "submission" in seen["listing"] and "home" not in seen["listing"]


@pytest.mark.slow
@pytest.mark.skipif(not ROOT, reason="needs root to drop CAP_SYS_ADMIN")
def test_in_a_docker_like_container_the_missing_layers_are_reported(tmp_path: Path) -> None:
    script = USER_SCRIPT.replace("os.getuid())\np = ", "61778)\np = ").replace(
        'StudentProcess(zygote, plan, Limits(), scratch, "numpy", os.getuid())',
        'StudentProcess(zygote, plan, Limits(), scratch, "numpy", 61778)',
    )
    (tmp_path / "docker_like.py").write_text(DOCKER_LIKE)
    done = subprocess.run(
        [sys.executable, str(tmp_path / "docker_like.py"), sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"\nlayers in a Docker-like container: {seen['layers']}")  # for the README's table (run with -s)
    assert any("namespaces" in u for u in seen["layers"]["unavailable"]), seen
    assert "separate user (uid 61778)" in seen["layers"]["held"]  # root without CAP_SYS_ADMIN can still switch users
    assert "home" in seen["listing"] or "root" in seen["listing"]  # no private root: it sees the machine


@pytest.mark.parametrize("flavour", ["numpy"])
def test_without_isolation_nothing_is_hidden(flavour: str, zygotes: dict, tmp_path: Path) -> None:
    process = start(zygotes, tmp_path, flavour, isolate=False)
    try:
        assert call(process, "read", str(REPO / "grader" / "grading" / "answers.py")).ok
        assert "isolation switched off (--no-isolation)" in process.layers["unavailable"]
    finally:
        process.close()


def test_inputs_reach_the_student_as_private_copies(zygotes: dict, tmp_path: Path) -> None:
    process = start(zygotes, tmp_path, "numpy")
    try:
        reply = process.request(
            "call",
            {"fn": "big", "args": [{"a": 0}], "label": "big"},
            deadline(),
            inputs=[np.asarray(5)],
            budget=1 << 16,
        )
        assert reply.ok and reply.array(reply.fields["result"]["a"]).shape == (5,)
    finally:
        process.close()


def test_a_results_memfd_made_ahead_holds_its_pages_and_is_taken_once() -> None:
    spare = ResultsMemfd(64 << 20, 16 << 20)
    fd = spare.take(64 << 20)
    try:
        assert os.fstat(fd).st_size == 64 << 20
        assert os.fstat(fd).st_blocks * 512 >= 16 << 20  # allocated before the student process writes
        with pytest.raises(OSError):
            os.ftruncate(fd, 128 << 20)  # sealed against growing, like every results memfd
        with pytest.raises(ValueError):
            spare.take(64 << 20)
    finally:
        os.close(fd)
    other = ResultsMemfd(1 << 20, 1 << 20)
    with pytest.raises(ValueError):
        other.take(2 << 20)  # made for another budget
    other.close()
    assert other.fd == -1
