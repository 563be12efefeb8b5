"""Remove each defence of the sandbox and the trust boundary in turn; show that a test turns red.

Usage: .venv/bin/python scripts/defence_mutations.py [NAME ...]     (root; a clean git tree)

Each mutation is one exact edit of the grader's source (a defence switched off) and the tests
that must then fail. The edit is made in place and undone with ``git checkout`` whatever
happens, so the tree must be clean. Prints one line per mutation (red: some test failed, as it
should; GREEN: no test noticed) and exits 1 when any stays green.
"""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
JAIL = "grader/sandbox/inside/lab04_jail.py"
ZYGOTE = "grader/sandbox/inside/lab04_zygote.py"
PROTOCOL = "grader/sandbox/protocol.py"
PROCESS = "grader/sandbox/process.py"
HOSTILE = "tests/test_hostile.py::test_hostile_submission_single[{}]"
CLASS = "tests/test_hostile.py::test_hostile_submissions_as_a_class"
ALLOW_LIST = "tests/test_sandbox.py::test_the_student_process_sees_only_its_allow_list[numpy]"


@dataclass(frozen=True)
class Mutation:
    """One defence switched off: ``old`` becomes ``new`` in ``path``; ``tests`` must go red."""

    name: str
    path: str
    old: str
    new: str
    tests: tuple[str, ...]


NS = "NAMESPACES = CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS"
MUTATIONS = (
    Mutation(
        "namespaces",
        JAIL,
        "        if _libc.unshare(ctypes.c_int(flags)) == 0:",
        "        if False:",
        (HOSTILE.format("probing files, the network and the report"), ALLOW_LIST),
    ),
    Mutation(
        "allow-list root file system",
        ZYGOTE,
        "    if isolated:\n        try:\n            jail.build_root(plan, layers)",
        "    if False:\n        try:\n            jail.build_root(plan, layers)",
        (HOSTILE.format("probing files, the network and the report"), ALLOW_LIST),
    ),
    Mutation(
        "grader's packages covered",
        "grader/sandbox/plan.py",
        "    cover = [p for p in own_package_dirs() if _under(p, bound)]",
        "    cover = []",
        ("tests/test_sandbox.py::test_the_graders_packages_are_covered_where_a_bound_tree_holds_them",),
    ),
    Mutation("network namespace", JAIL, NS, NS.replace(" | CLONE_NEWNET", ""), (ALLOW_LIST,)),
    Mutation("PID namespace", JAIL, NS, NS.replace(" | CLONE_NEWPID", ""), (ALLOW_LIST,)),
    Mutation(
        "IPC namespace",
        JAIL,
        NS,
        NS.replace(" | CLONE_NEWIPC", ""),
        ("tests/test_sandbox.py::test_sysv_ipc_objects_die_with_the_process", CLASS),
    ),
    Mutation(
        "separate user",
        JAIL,
        "        os.setresgid(uid, uid, uid)\n        os.setresuid(uid, uid, uid)\n",
        "",
        (ALLOW_LIST, HOSTILE.format("a daemon and a fork bomb")),
    ),
    Mutation(
        "process limit",
        JAIL,
        "            resource.setrlimit(resource.RLIMIT_NPROC, (processes, processes))\n        os.setgroups([])",
        "            pass\n        os.setgroups([])",
        (HOSTILE.format("a daemon and a fork bomb"),),
    ),
    Mutation(
        "memory limit",
        JAIL,
        '        (resource.RLIMIT_AS, limits.get("memory_bytes", -1)),\n',
        "",
        (HOSTILE.format("memory bomb in the loader"),),
    ),
    Mutation(
        "file size limit",
        JAIL,
        '        (resource.RLIMIT_FSIZE, limits.get("file_bytes", -1)),\n',
        "",
        ("tests/test_sandbox.py::test_a_memory_file_of_its_own_is_bounded_by_the_file_limit",),
    ),
    Mutation(
        "scratch size",
        JAIL,
        'f"size={int(size)},nr_inodes=65536,mode=1777"',
        '"nr_inodes=65536,mode=1777"',
        (HOSTILE.format("filling its /tmp and /dev/shm"),),
    ),
    Mutation(
        "torch-free process",
        ZYGOTE,
        '    if flavour == "numpy":\n        _block_torch(standins, layers, isolated)',
        "    if False:\n        _block_torch(standins, layers, isolated)",
        (HOSTILE.format("torch in the forward pass, every way"),),
    ),
    Mutation(
        "output cap",
        ZYGOTE,
        "    relays = {fd: _Relay(out, cap) for fd, out in streams}",
        "    relays = {fd: _Relay(out, 1 << 40) for fd, out in streams}",
        ("tests/test_sandbox.py::test_output_is_capped_where_it_is_written",),
    ),
    Mutation(
        "time limit",
        PROCESS,
        "            if got is None:\n                os.close(results_fd)\n                return self._timed_out()",
        "            if got is None:\n                time.sleep(0.05)\n                continue",
        (HOSTILE.format("endless loop in the forward pass"),),
    ),
    Mutation(
        "request ids",
        PROCESS,
        '            if got.get("id") == request_id and "status" in got:',
        '            if "status" in got:',
        (
            HOSTILE.format("forged replies from a thread"),
            "tests/test_sandbox.py::test_a_reply_to_another_request_is_not_taken_for_this_one",
        ),
    ),
    Mutation(
        "memfd seals",
        PROTOCOL,
        "        fcntl.fcntl(fd, F_ADD_SEALS, F_SEAL_WRITE | F_SEAL_SEAL)\n        return fd",
        "        return fd",
        ("tests/test_protocol.py",),
    ),
    Mutation(
        "manifest bounds",
        PROTOCOL,
        "        if offset + nbytes > size:",
        "        if False:",
        ("tests/test_protocol.py", "tests/test_replies.py"),
    ),
    Mutation(
        "message nesting",
        PROTOCOL,
        "    if not _depth_ok(data, MAX_DEPTH):",
        "    if False:",
        ("tests/test_protocol.py", "tests/test_replies.py"),
    ),
    Mutation(
        "every name answered",
        PROTOCOL,
        "    missing = [k for k in wanted if k not in value]",
        "    missing = []",
        ("tests/test_protocol.py", "tests/test_replies.py"),
    ),
    Mutation(
        "text made safe",
        "grader/text.py",
        '    value = _CONTROL.sub("?", value)\n',
        "",
        (HOSTILE.format("a lone surrogate and escape codes in an exception"), "tests/test_protocol.py"),
    ),
    Mutation(
        "harness model verified",
        "grader/grading/harness.py",
        "        if got.shape != want.shape or float(np.max(np.abs(got - want))) > expected.tolerance(ids) / 4:",
        "        if False:",
        ("tests/test_bank.py::test_bank_submission_gets_its_verdicts[compare_always_false_on_a_broken_decoder]",),
    ),
    Mutation(
        "exported bytes compared, not the export's claims",
        "grader/grading/loading.py",
        "                self._holds[key] = same_bytes(view, self.expected.attributes[want])",
        "                self._holds[key] = True",
        (HOSTILE.format("forged claims of where the exported attributes lie"),),
    ),
    Mutation(
        "zip entries kept inside",
        "grader/grading/submission.py",
        '                if name.is_absolute() or ".." in name.parts or not target.is_relative_to(root):',
        "                if False:",
        ("tests/test_hostile.py::test_path_traversal_zip_is_refused",),
    ),
)


def run(mutation: Mutation) -> tuple[bool, float, str]:
    """Apply, run its tests, undo. True when some test failed (the defence is tested)."""
    path = REPO / mutation.path
    text = path.read_text()
    if text.count(mutation.old) != 1:
        raise SystemExit(f"{mutation.name}: the anchor is not exactly once in {mutation.path}")
    started = time.monotonic()
    try:
        path.write_text(text.replace(mutation.old, mutation.new))
        done = subprocess.run(
            [sys.executable, "-m", "pytest", "-m", "", "-q", "-x", "-p", "no:cacheprovider", *mutation.tests],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=1800,
        )
    except subprocess.TimeoutExpired:
        return True, time.monotonic() - started, "the tests did not finish in 30 minutes"
    finally:
        subprocess.run(["git", "checkout", "--", mutation.path], cwd=REPO, check=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith(("FAILED", "ERROR"))]
    summary = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else done.stderr[-300:]
    return done.returncode != 0, time.monotonic() - started, (lines[0] if lines else summary)[:160]


def main() -> None:
    wanted = set(sys.argv[1:])
    dirty = subprocess.run(["git", "status", "--porcelain", "grader"], cwd=REPO, capture_output=True, text=True)
    if dirty.stdout.strip():
        raise SystemExit("grader/ has uncommitted changes: commit or stash them first (mutations are undone by git)")
    green = []
    for mutation in MUTATIONS:
        if wanted and mutation.name not in wanted:
            continue
        red, seconds, what = run(mutation)
        print(f"{'red  ' if red else 'GREEN'} {mutation.name:30} {seconds:6.0f} s  {what}", flush=True)
        if not red:
            green.append(mutation.name)
    if green:
        print(f"no test noticed: {', '.join(green)}")
        sys.exit(1)


if __name__ == "__main__":
    main()
