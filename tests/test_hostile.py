"""The hostile bank: submissions that try to cheat, escape, or take the grader or a classmate down.

Each case is the reference solution plus a few hostile lines (or a submission with no lab
logic at all), run through the real ``grade`` command in a fresh process, in single mode
and, all together, in batch mode. Each asserts the exact verdicts, that a report was
written, a time bound, the grader's own peak memory, and that nothing is left behind: no
process of a sandbox uid, no SysV IPC object, no temporary folder, no file planted outside.

The isolation needs root or unprivileged user namespaces (root here, in CI and on
Gradescope); ``test_protections_can_be_removed`` runs the probes with ``--no-isolation``
to show that the attacks then work, so each of these tests can fail.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from conftest import REPO, expect, make_submission, reference_files

from grader import defaults
from grader.grading.tiers import TIER_NAMES

P, D = "pretrained.py", "decoder.py"
SHORT = 4.0  # seconds per tier for the cases that hang
IMPORTS = "from transformers import GPT2LMHeadModel, GPT2Tokenizer\n"
LOAD = "    hf_model = GPT2LMHeadModel.from_pretrained(model_name)\n"
MAPPING = "    ### BEGIN SOLUTION\n    def same("
MAX_DIFF = "    max_diff = float(np.max(np.abs(ours - theirs)))\n"
FORWARD = "        x = self.token_embedding(ids) + self.pos_embedding(T)  # [B, T, d] + [T, d]\n"
GRADER_MB = 800  # the grader's own peak memory on tiny, whatever the submission does (a correct one: about 300)
ZERO = dict.fromkeys(TIER_NAMES, "error")
MARKER = "LAB04-CLASSMATE-SECRET-7f3a"
# A port of the machine's loopback that listens for the whole session: the probes try to reach it.
LISTENER = socket.create_server(("127.0.0.1", 0))
LISTENER.listen(64)
PORT = LISTENER.getsockname()[1]


def edited(*edits: tuple[str, str, str]) -> dict[str, str]:
    """The reference files (decoder included) with each (file, old, new) edit; ``old`` occurs once."""
    files = reference_files(with_decoder=True)
    for name, old, new in edits:
        assert files[name].count(old) == 1, f"anchor not unique in {name}: {old!r}"
        files[name] = files[name].replace(old, new)
    return files


def at_import(code: str) -> tuple[str, str, str]:
    """An edit that runs ``code`` when pretrained.py is imported."""
    return (P, IMPORTS, IMPORTS + code)


# ---------------------------------------------------------------- what a run leaves behind


def _uid(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/status").read_text().split("Uid:")[1].split()[0])
    except (OSError, IndexError, ValueError):
        return None


def _sandbox_processes() -> set[tuple[int, str]]:
    low, high = defaults.UID_RANGE
    found = set()
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            status = (proc / "status").read_text()
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        uid = int(status.split("Uid:")[1].split()[0])
        if low <= uid < high or "lab04_zygote.py" in cmdline:
            found.add((int(proc.name), cmdline[:80]))
    return found


def _ipc_objects() -> set[str]:
    out = set()
    for kind in ("shm", "msg", "sem"):
        try:
            lines = Path(f"/proc/sysvipc/{kind}").read_text().splitlines()[1:]
        except OSError:
            continue
        out |= {f"{kind}:{line.split()[0]}:{line.split()[1]}" for line in lines if line.strip()}
    return out


def _holding(folder: Path) -> set[tuple[int, str]]:
    """Processes that still hold a file under ``folder`` (a run's own temporary folder)."""
    found = set()
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            for fd in (proc / "fd").iterdir():
                if os.readlink(fd).startswith(str(folder)):
                    found.add((int(proc.name), (proc / "cmdline").read_bytes()[:80].decode(errors="replace")))
                    break
        except OSError:
            continue
    return found


def _leftovers(tmpdir: Path | None = None) -> dict[str, set]:
    """What a run may leave: processes holding its files, its scratch folders, IPC objects, planted files."""
    return {
        "processes": _holding(tmpdir) if tmpdir else set(),
        "ipc": _ipc_objects(),
        "scratch": set(tmpdir.glob("*")) if tmpdir else set(),
        "planted": set(Path("/tmp").glob("lab04-pwned*")),
    }


def assert_nothing_left(before: dict[str, set], tmpdir: Path, uids: set[int], reports: Path) -> None:
    deadline = time.monotonic() + 5
    while True:
        after = _leftovers(tmpdir)
        after["processes"] |= {p for p in _sandbox_processes() if _uid(p[0]) in uids} | _holding(reports)
        new = {k: after[k] - before[k] for k in after}
        if not any(new.values()) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert not any(new.values()), new


@dataclass
class Run:
    exit_code: int
    output: str
    reports: dict[str, dict]
    seconds: float

    def statuses(self, name: str = "results") -> dict[str, str]:
        return {n: e["status"] for n, e in self.reports[name]["extra_data"]["tiers"].items()}


def grade_command(target: Path, out: Path, *options: str, timeout: float = 900) -> Run:
    """``grade TARGET --out OUT`` in a fresh process, as staff run it; checks what it leaves behind."""
    tmpdir = out.parent / f".tmp-{out.stem}"
    tmpdir.mkdir(parents=True)
    before = _leftovers(tmpdir)
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "grader.cli", "run", str(target), "--out", str(out), "--seed", "1", *options],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=REPO,
        env={**os.environ, "TMPDIR": str(tmpdir)},
    )
    seconds = time.monotonic() - started
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    paths = [out] if out.suffix == ".json" else sorted(p for p in out.glob("*.json") if not p.name.startswith("."))
    reports = {p.stem: json.loads(p.read_text()) for p in paths}
    uids = {r["extra_data"]["sandbox"].get("uid") for r in reports.values()} - {None}
    assert_nothing_left(before, tmpdir, uids, out if out.suffix != ".json" else tmpdir)
    for report in reports.values():
        assert report["score"] == sum(t["score"] for t in report["tests"])
        assert set(report["extra_data"]["tiers"]) == set(TIER_NAMES)
        assert report["extra_data"]["resources"]["grader_peak_rss_mb"] < GRADER_MB, report["extra_data"]["resources"]
        assert (out if out.suffix == ".json" else out / "x").parent.is_dir()
    return Run(done.returncode, done.stdout + done.stderr, reports, seconds)


# ---------------------------------------------------------------- the cases


@dataclass
class Case:
    """One hostile submission and what the grader must make of it."""

    name: str
    files: dict[str, str]
    expected: dict[str, str]  # tier -> status
    options: tuple[str, ...] = ()
    within: float = 90.0  # seconds the whole grading may take
    says: tuple[str, ...] = ()  # words the feedback must contain
    stdout_says: tuple[str, ...] = ()  # words the student's captured stdout must contain
    check: Callable[[dict], None] | None = None
    raw: dict[bytes, bytes] = field(default_factory=dict)  # files with names that are not text


NO_LAB = """
import gc, sys, os
found = sorted({getattr(o, "__qualname__", "") for o in gc.get_objects() if callable(o)
                and getattr(o, "__module__", "") and str(getattr(o, "__module__", "")).split(".")[0]
                in ("grader", "reference", "lab04_checks", "contract", "common", "answers", "truth")})
print("BORROWABLE:", found, [m for m in sys.modules if m.split(".")[0] in ("grader", "reference", "lab04_checks")])
def get_weight_mapping(num_layers):
    return {}
def load_gpt2_weights(your_model, model_name="gpt2"):
    return None
def compare_outputs(your_model, hf_model, tokenizer, text, atol=1e-4):
    return True, 0.0
def compare_intermediate_outputs(your_model, hf_model, token_ids):
    return {}
def analyze_weight_differences(your_model, hf_model):
    return {}
def generate_text(model, tokenizer, prompt, max_length=50, temperature=1.0):
    return prompt
from decoder import GPTModel
"""

# A thread that answers the grader's requests itself, with replies that look valid but hold nothing.
FORGER = """
import os, socket, threading, json
def _forge():
    for fd in range(3, 64):
        try:
            s = socket.socket(fileno=os.dup(fd))
            if s.type != socket.SOCK_SEQPACKET:
                s.detach(); continue
        except OSError:
            continue
        for i in range(1, 400):
            for reply in ({"v": 1, "id": i, "status": "ok"},
                          {"v": 1, "id": i, "status": "ok", "arrays": [{"dtype": "<f4", "shape": [2**40],
                           "offset": 0, "nbytes": 2**42}], "result": {"t": "array", "a": 0, "dtype": "<f4", "shape": [2**40]}},
                          {"v": 1, "event": "exit-called"}, {"v": 1, "id": i, "status": "raised", "error": [1, 2]}):
                try:
                    s.send(json.dumps(reply).encode())
                    s.send(b"[" * 200000)
                except OSError:
                    break
threading.Thread(target=_forge, daemon=True).start()
"""

# Claims, for the exported model, that each attribute lies in the first buffer of its size: the grader then
# compares those bytes, and a loader that loaded nothing has no right bytes to point at.
LOCATED_FORGER = """
import sys
import numpy as _np
_ops = sys.modules.get("lab04_ops")
def _claim(obj, request, buffers):
    sizes = {}
    for i, buffer in enumerate(buffers):
        sizes.setdefault(buffer.raw().nbytes, i)
    out = {}
    for path in request.get("paths", []):
        try:
            value = _ops.follow(obj, path)
        except Exception:
            continue
        if isinstance(value, _np.ndarray) and value.nbytes in sizes:
            out[path] = sizes[value.nbytes]
    return out
if _ops is not None:
    _ops._located = _claim
"""
NEVER_LOADS = (P, LOAD, "    return None\n" + LOAD)

# Reads whatever the process can reach: the grader, the reference, the checkpoints cache, other students.
PROBE = f'''
import os, socket, time
def _probe():
    seen = []
    stop = time.monotonic() + 8  # without a private root the machine is large: look for a while, then report
    for root in ("/work", "/root", "/home", "/tmp", "/srv", "/opt", "/var", "/run", "/mnt", "/etc", "/"):
        if root == "/checkpoints":
            continue
        for folder, dirs, files in os.walk(root):
            if time.monotonic() > stop:
                break
            dirs[:] = [d for d in dirs if d not in ("proc", "sys", "dev", "usr", "lib", "lib64", "bin", "sbin",
                                                    "checkpoints")]  # its own checkpoints: there by design
            for name in files:
                if name in ("answers.py", "truth.py", "oracle.py", "lab04-checkpoint.json") or name == "pretrained.py" \\
                        and not folder.startswith("/submission"):
                    seen.append(os.path.join(folder, name))
                path = os.path.join(folder, name)
                if name.endswith(".py") and not folder.startswith(("/submission", "/lab04")) and "site-packages" not in folder:
                    try:
                        if "{MARKER}" in open(path, errors="ignore").read(200000):
                            seen.append("MARKER:" + path)
                    except OSError:
                        pass
            if len(seen) > 20:
                break
    try:
        socket.create_connection(("127.0.0.1", {PORT}), timeout=1)
        seen.append("network reached")
    except OSError:
        pass
    try:
        open("/tmp/lab04-pwned", "w").write("x")
    except OSError:
        pass
    return seen
print("PROBE SAW:", _probe())
'''

IPC_WRITER = """
import ctypes
_libc = ctypes.CDLL(None, use_errno=True)
SHM_KEY, MSG_KEY = 0x4C414234, 0x4C414235
shm = _libc.shmget(SHM_KEY, 4096, 0o1666)  # IPC_CREAT | 0666
msg = _libc.msgget(MSG_KEY, 0o1666)
print("IPC CREATED:", shm >= 0, msg >= 0)
"""
IPC_READER = """
import ctypes, time
_libc = ctypes.CDLL(None, use_errno=True)
time.sleep(1.0)
print("IPC SEEN:", _libc.shmget(0x4C414234, 0, 0) >= 0, _libc.msgget(0x4C414235, 0) >= 0)
"""

FILLER = """
import os
for where in ("/dev/shm", "/tmp"):
    try:
        with open(where + "/fill", "wb") as fh:
            while True:
                fh.write(b"x" * 2**20)
    except OSError as exc:
        print("FULL:", where, type(exc).__name__, os.path.getsize(where + "/fill") >> 20, "MB")
"""

FD_BOMB = """
import os
for fd in range(3, 256):
    for attempt in (lambda: os.ftruncate(fd, 2**31), lambda: os.pwrite(fd, b"x" * 2**20, 2**31 - 2**20)):
        try:
            attempt()
        except OSError:
            pass
"""

PRECOMPUTE = """
import gc
_STASH = {}
def _stash(hf_model):
    import torch
    for obj in gc.get_objects():
        if isinstance(obj, np.ndarray) and obj.dtype.kind == "i" and obj.ndim == 2 and obj.size < 4096:
            with torch.no_grad():
                _STASH[obj.tobytes()] = hf_model(torch.from_numpy(obj.astype(np.int64))).logits.numpy()
"""

TORCH_TRICKS = """
        import importlib.util, sys, os
        for path in [os.path.join(p, "torch", "__init__.py") for p in sys.path if os.path.isdir(p)][:20]:
            if not os.path.exists(path):
                continue
            spec = importlib.util.spec_from_file_location("realtorch", path)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            if hasattr(module, "from_numpy") and not isinstance(module.from_numpy, type(sys)):
                module.from_numpy(np.zeros(1))
        import torch
        torch.zeros(1)
"""

DAEMON = """
import os, time
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        os.environ.clear()
        open("/tmp/lab04-pwned-daemon", "w")
        time.sleep(600)
    os._exit(0)
children = 0
for _ in range(500):
    try:
        if os.fork() == 0:
            time.sleep(30)
            os._exit(0)
        children += 1
    except OSError:
        break
print("FORKED:", children)
"""


def _stdout(report: dict) -> str:
    return report["extra_data"]["student_output"]["stdout"]


def _json_is_ascii(report_text: str) -> None:
    report_text.encode("ascii")


CASES = [
    Case(
        "no lab logic, borrowing the grader's code",
        {P: NO_LAB},
        dict.fromkeys(TIER_NAMES, "failed"),
        stdout_says=("BORROWABLE: [] []",),
    ),
    Case("the template's public checks copied in", {**reference_files(False)}, expect(), check=None),
    # The forger races the agent, so which check its garbage lands on varies; that it earns nothing does not.
    Case(
        "forged replies from a thread",
        {**reference_files(True), P: NO_LAB + FORGER},
        {},
        within=150,
        check=lambda r: _earns_nothing(r),
    ),
    Case(
        "forged claims of where the exported attributes lie",
        edited(at_import(LOCATED_FORGER), NEVER_LOADS),
        expect(shapes="failed", embedding="failed", logits="failed", generate="failed"),
        says=("unchanged since GPTModel(...) created it",),
    ),
    Case(
        "endless loop at import",
        edited(at_import("while True: pass\n")),
        {"mapping": "timeout", **dict.fromkeys(TIER_NAMES[1:], "skipped")},
        options=("--timeout", str(SHORT)),
        says=("importing pretrained.py did not finish",),
    ),
    Case(
        "endless loop in one transform, on the grader's tensors only",
        edited(
            (
                P,
                "        return w  # Conv1D is already (in, out): nothing to do",
                "        while w.shape[-1] == 48:  # the mapping tier's synthetic width, never a checkpoint's\n"
                "            pass\n"
                "        return w",
            )
        ),
        expect(mapping="timeout"),
        options=("--timeout", str(SHORT)),
        says=("pretrained.py, line 9",),
    ),
    Case(
        "endless loop in the forward pass",
        edited((D, FORWARD, "        while True: pass\n" + FORWARD)),
        expect(embedding="passed", logits="timeout", generate="timeout", compare="passed"),
        options=("--timeout", str(SHORT)),
        says=("decoder.py, line",),
    ),
    Case(
        "memory bomb in the loader",
        edited((P, LOAD, "    hog = []\n    while True: hog.append(np.ones(2**27))\n" + LOAD)),
        expect(shapes="error", embedding="error", logits="error", generate="error"),
        options=("--memory-mb", "2048"),
        says=("MemoryError",),
    ),
    Case(
        "50 MB of output at import",
        edited(at_import("import sys\nfor _ in range(50):\n    sys.stdout.write('x' * 2**20)\n")),
        expect(),
        check=lambda r: _output_capped(r),
    ),
    Case("sys.exit at import", edited(at_import("import sys\nsys.exit(0)\n")), ZERO, says=("SystemExit",)),
    Case(
        "os._exit in load_gpt2_weights",
        edited((P, LOAD, "    import os\n    os._exit(3)\n" + LOAD)),
        expect(shapes="error", embedding="skipped", logits="skipped", generate="skipped"),
        says=("called os._exit(3)",),
    ),
    Case(
        "os._exit in compare_outputs",
        edited((P, MAX_DIFF, "    import os\n    os._exit(0)\n" + MAX_DIFF)),
        expect(compare="error"),
        says=("called os._exit(0)",),
    ),
    Case(
        "segfault in the forward pass",
        edited((D, FORWARD, "        import ctypes; ctypes.string_at(0)\n" + FORWARD)),
        expect(embedding="passed", logits="error", generate="error"),
        says=("SIGSEGV",),
    ),
    Case(
        "shadowing json, numpy and subprocess",
        {
            **reference_files(True),
            "json.py": "raise ImportError('shadow')\n",
            "subprocess.py": "x = 1\n",
            "transformers.py": "raise RuntimeError('shadowed transformers')\n",
            "torch.py": "raise RuntimeError('shadowed torch')\n",
            "numpy.py": "raise RuntimeError('shadowed numpy')\n",
        },
        expect(),
    ),
    Case(
        "torch in the forward pass, every way",
        edited((D, FORWARD, TORCH_TRICKS + FORWARD)),
        expect(logits="error", generate="error"),
        says=("not available here",),
    ),
    Case(
        "precomputing HuggingFace's logits in the loader",
        edited(
            at_import(PRECOMPUTE),
            (P, LOAD, LOAD + "    _stash(hf_model)\n"),
            (
                D,
                FORWARD,
                "        import pretrained\n        for key, value in pretrained._STASH.items():\n"
                "            if key == np.asarray(token_ids, dtype=np.int64).tobytes():\n"
                "                return value\n        return np.zeros((*np.shape(token_ids), self.vocab_size), "
                "dtype=np.float32)\n" + FORWARD,
            ),
        ),
        expect(logits="failed", generate="failed"),
    ),
    Case(
        "probing files, the network and the report", edited(at_import(PROBE)), expect(), stdout_says=("PROBE SAW: []",)
    ),
    # Its own sleeping children use up its process limit, so its loader cannot start a thread: its loss only.
    Case(
        "a daemon and a fork bomb",
        edited(at_import(DAEMON)),
        expect(shapes="error", embedding="error", logits="error", generate="error"),
        stdout_says=("FORKED:",),
        says=("can't start new thread",),
        check=lambda r: _forks_capped(r),
    ),
    Case(
        "filling its /tmp and /dev/shm",
        edited(at_import(FILLER)),
        expect(),
        stdout_says=("FULL: /dev/shm", "FULL: /tmp"),
        check=lambda r: _scratch_capped(r),
    ),
    Case("writing 2 GiB through every descriptor", edited(at_import(FD_BOMB)), expect()),
    Case(
        "a lone surrogate and escape codes in an exception",
        edited((P, LOAD, "    raise ValueError('bad \\udcff \\x1b[31mred\\x1b[0m \\x07 name')\n" + LOAD)),
        expect(shapes="error", embedding="error", logits="error", generate="error"),
        says=("bad ? ?red? ? name",),
    ),
    Case(
        "a file whose name is not UTF-8 beside a correct solution",
        reference_files(True),
        expect(),
        raw={b"notes\xff.txt": b"hello"},
    ),
]


def _earns_nothing(report: dict) -> None:
    assert report["score"] == 0
    assert all(e["status"] in ("failed", "error", "timeout", "skipped") for e in report["extra_data"]["tiers"].values())


def _output_capped(report: dict) -> None:
    stdout = _stdout(report)
    assert len(stdout) < 2 * defaults.REPORT_OUTPUT_CHARS + 500, len(stdout)  # heads and tails, not 50 MB
    assert "characters cut" in stdout


def _scratch_capped(report: dict) -> None:
    """The private /tmp filled up at its size (--scratch-mb), not at the file-size limit or the machine's RAM."""
    written = {w: int(n) for w, n in re.findall(r"FULL: (\S+) OSError (\d+) MB", _stdout(report))}
    assert written["/tmp"] <= defaults.SCRATCH_MB and written["/dev/shm"] <= 1, written


def _forks_capped(report: dict) -> None:
    forked = int(_stdout(report).split("FORKED:")[1].split()[0])
    assert forked < defaults.PROCESSES, forked


def _materialise(case: Case, folder: Path) -> Path:
    sub = make_submission(folder, case.files)
    if case.name.startswith("the template's public checks"):
        checks = REPO / "student_template" / "tests"
        for path in checks.rglob("*"):
            if path.is_file() and "__pycache__" not in path.parts:
                target = sub / path.relative_to(checks)
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(path.read_bytes())
    for name, data in case.raw.items():
        with open(os.path.join(os.fsencode(sub), name), "wb") as fh:
            fh.write(data)
    return sub


def _judge(case: Case, report: dict, seconds: float | None = None) -> None:
    statuses = {n: e["status"] for n, e in report["extra_data"]["tiers"].items()}
    details = "\n".join(f"[{t['name']}] {t['output'][:600]}" for t in report["tests"])
    assert not case.expected or statuses == case.expected, details
    text = "\n".join(t["output"] for t in report["tests"])
    for needle in case.says:
        assert needle in text, f"{needle!r} not in:\n{details}"
    for needle in case.stdout_says:
        assert needle in _stdout(report), _stdout(report)[-2000:]
    if case.check:
        case.check(report)
    if seconds is not None:
        assert seconds < case.within, seconds


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_hostile_submission_single(case: Case, tmp_path: Path) -> None:
    sub = _materialise(case, tmp_path / "submission")
    (tmp_path / "out").mkdir()
    run = grade_command(sub, tmp_path / "out" / "results.json", "-q", *case.options)
    _judge(case, run.reports["results"], run.seconds)
    text = (tmp_path / "out" / "results.json").read_text()
    _json_is_ascii(text)
    assert "\x1b" not in run.output


@pytest.mark.slow
def test_hostile_submissions_as_a_class(tmp_path: Path) -> None:
    """Every case at once in one batch with two jobs: same verdicts; classmates cannot reach each other."""
    cls = tmp_path / "class"
    plain = [c for c in CASES if not c.options]
    for i, case in enumerate(plain):
        _materialise(case, cls / f"s{i:02d}")
    make_submission(cls / "alice", {**reference_files(True), "notes.py": f"# {MARKER}\n"})
    make_submission(cls / "bob", {**edited(at_import(IPC_WRITER))})
    make_submission(cls / "carol", {**edited(at_import(IPC_READER + PROBE))})
    make_submission(cls / "dave", reference_files(True))  # an honest classmate beside the filler and the bombs
    run = grade_command(cls, tmp_path / "reports", "--jobs", "2", "-q", timeout=1800)
    for i, case in enumerate(plain):
        _judge(case, run.reports[f"s{i:02d}"])
    assert run.reports["alice"]["score"] == run.reports["dave"]["score"] == 100
    carol = _stdout(run.reports["carol"])
    assert "IPC SEEN: False False" in carol and "PROBE SAW: []" in carol, carol[-2000:]
    assert "IPC CREATED: True True" in _stdout(run.reports["bob"])


def test_path_traversal_zip_is_refused(tmp_path: Path) -> None:
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("pretrained.py", reference_files(False)["pretrained.py"])
        zf.writestr("../../lab04-pwned-zip", "x")
    run = grade_command(archive, tmp_path / "r.json", "-q")
    assert run.reports["r"]["score"] == 0
    assert "would land outside the submission folder" in run.reports["r"]["output"]
    assert not (tmp_path.parent / "lab04-pwned-zip").exists()


@pytest.mark.slow
def test_protections_can_be_removed(tmp_path: Path) -> None:
    """With --no-isolation the probe reaches the grader's files and the network is there: the tests above can fail."""
    sub = make_submission(tmp_path / "probe", edited(at_import(PROBE.replace("/tmp/lab04-pwned", "/tmp/lab04-open"))))
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "grader.cli",
            "run",
            str(sub),
            "--out",
            str(tmp_path / "r.json"),
            "--seed",
            "1",
            "--no-isolation",
            "-q",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        cwd=REPO,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    seen = _stdout(json.loads((tmp_path / "r.json").read_text()))
    assert "answers.py" in seen or "lab04-checkpoint.json" in seen or "MARKER" in seen, seen[-2000:]
    assert "network reached" in seen, seen[-2000:]
    assert Path("/tmp/lab04-open").exists()
    Path("/tmp/lab04-open").unlink()
