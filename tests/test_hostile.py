"""The hostile bank: submissions that try to cheat, escape or take the grader down.

Each case runs the real ``grade`` command (``CliRunner``) on a submission made
of the reference solution plus a few hostile lines, and asserts that the grader
exits 0, writes a sane report with the expected verdicts, and finishes within
its limits. Cases that probe an operating-system protection (hidden files, the
network, leftover processes) also run once with isolation switched off
(``--no-isolation``) and assert that the attack then *works*: that is the proof
that each test can fail when its protection is removed.

The isolation needs root (as in CI and on Gradescope); run as another user, the
isolated half of those cases fails, by design.
"""

from __future__ import annotations

import json
import os
import re
import socket
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import REPO, make_submission, reference_files

import grader
from grader.cli import main
from grader.lab.checkpoints import default_root

P, D = "pretrained.py", "decoder.py"
TIERS = ("mapping", "shapes", "embedding", "logits", "compare")
SHORT = 5.0  # seconds per tier for the cases that hang
IMPORTS = "from transformers import GPT2LMHeadModel\n"
MAPPING = "    ### BEGIN SOLUTION\n    def same("
LOAD = "    hf_model = GPT2LMHeadModel.from_pretrained(model_name)\n"
MAX_DIFF = "    max_diff = float(np.max(np.abs(ours - theirs)))\n"
FORWARD = "        x = self.token_embedding(ids) + self.pos_embedding(np.arange(T))  # [..., T, d]\n"

ROOT = os.geteuid() == 0


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


@dataclass
class Graded:
    exit_code: int
    output: str
    report: dict
    seconds: float

    @property
    def statuses(self) -> dict[str, str]:
        return {name: entry["status"] for name, entry in self.report["extra_data"]["tiers"].items()}

    @property
    def stdout(self) -> str:
        return self.report["extra_data"]["student_output"]["stdout"]


def grade_cli(tmp_path: Path, submission: Path, *options: str, out: Path | None = None,
              fork_server: bool = False) -> Graded:  # fmt: skip
    """Run ``grade SUBMISSION --out ...`` and read the report back; exit code 0 and a sane report.

    With ``fork_server``, the submission is graded as a class of one (``--jobs 1``): its student
    process comes from the batch's fork server instead of a fresh interpreter."""
    out = out or tmp_path / "report" / "results.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    target, destination = submission, out
    if fork_server:
        target, destination = tmp_path / "class", out.parent
        target.mkdir()
        submission.rename(target / out.stem)
        options = (*options, "--jobs", "1")
    started = time.monotonic()
    result = CliRunner().invoke(
        main,
        [str(target), "--out", str(destination), "--checkpoint-dir", str(default_root()), "-q", *options],
    )
    seconds = time.monotonic() - started
    assert result.exit_code == 0, (result.output, result.exception)
    report = json.loads(out.read_text())
    assert len(report["tests"]) == len(TIERS)
    assert report["score"] == sum(t["score"] for t in report["tests"])
    for entry in report["extra_data"]["tiers"].values():
        assert entry["score"] == (entry["max_score"] if entry["status"] == "passed" else 0)
    return Graded(result.exit_code, result.output, report, seconds)


@dataclass
class Case:
    """One hostile submission and what the grader must make of it."""

    name: str
    files: dict[str, str]
    expected: dict[str, str]  # tier -> status
    options: tuple[str, ...] = ()
    within: float = 60.0  # seconds the whole grading may take
    check: Callable[[Graded], None] | None = None
    extra: dict[str, bytes] = field(default_factory=dict)  # binary files to add


ALL_PASSED = dict.fromkeys(TIERS, "passed")
LOADER_GONE = {"mapping": "passed", "shapes": "error", "embedding": "skipped", "logits": "skipped", "compare": "passed"}


def _says(*needles: str) -> Callable[[Graded], None]:
    def check(graded: Graded) -> None:
        text = "\n".join(t["output"] for t in graded.report["tests"])
        for needle in needles:
            assert needle in text, text

    return check


def _output_capped(graded: Graded) -> None:
    stdout = graded.stdout
    assert len(stdout) < 25_000, len(stdout)  # the report keeps a head and a tail, not 50 MB
    assert "characters cut" in stdout
    cut = int(re.search(r"\[(\d+) characters cut\]", stdout).group(1))
    assert cut < 2**20, cut  # the launcher kept 1 MiB of the 50 (its head and tail), not all of it


CASES = [
    Case(
        "endless loop at import",
        edited(at_import("while True: pass\n")),
        {"mapping": "timeout", **dict.fromkeys(TIERS[1:], "skipped")},
        options=("--timeout", str(SHORT)),
        within=SHORT + 20,
        check=_says("importing pretrained.py did not finish"),
    ),
    Case(
        "endless loop in the forward pass",
        edited((D, FORWARD, "        while True: pass\n" + FORWARD)),
        {"mapping": "passed", "shapes": "passed", "embedding": "passed", "logits": "timeout", "compare": "timeout"},
        options=("--timeout", str(SHORT)),
        within=3 * SHORT + 25,
        check=_says("decoder.py, line"),
    ),
    Case(
        "memory bomb in the loader",
        edited((P, LOAD, "    hog = []\n    while True: hog.append(np.ones(2**27))\n" + LOAD)),
        {"mapping": "passed", "shapes": "error", "embedding": "error", "logits": "error", "compare": "passed"},
        options=("--memory-mb", "2048"),
        within=60,
        check=_says("load_gpt2_weights raised MemoryError"),
    ),
    Case(
        "50 MB of output at import",
        edited(at_import("import sys\nfor _ in range(50):\n    sys.stdout.write('x' * 2**20)\n")),
        ALL_PASSED,
        within=60,
        check=_output_capped,
    ),
    Case(
        "sys.exit at import",
        edited(at_import("import sys\nsys.exit(0)\n")),
        {"mapping": "error", **dict.fromkeys(TIERS[1:], "skipped")}
        | {"shapes": "error", "embedding": "error", "logits": "error", "compare": "error"},
        within=60,
        check=_says("SystemExit"),
    ),
    Case(
        "os._exit in get_weight_mapping",
        edited((P, MAPPING, "    import os\n    os._exit(0)\n" + MAPPING)),
        LOADER_GONE | {"mapping": "error"},
        within=60,
        check=_says("called os._exit(0)"),
    ),  # the loader calls it
    Case(
        "os._exit in load_gpt2_weights",
        edited((P, LOAD, "    import os\n    os._exit(0)\n" + LOAD)),
        LOADER_GONE,
        within=60,
        check=_says("called os._exit(0)"),
    ),
    Case(
        "os._exit in compare_outputs",
        edited((P, MAX_DIFF, "    import os\n    os._exit(0)\n" + MAX_DIFF)),
        {**ALL_PASSED, "compare": "error"},
        within=60,
        check=_says("called os._exit(0)"),
    ),
    Case(
        "os._exit in the forward pass",
        edited((D, FORWARD, "        import os\n        os._exit(0)\n" + FORWARD)),
        {"mapping": "passed", "shapes": "passed", "embedding": "passed", "logits": "error", "compare": "error"},
        within=60,
        check=_says("called os._exit(0)"),
    ),
    Case(
        "standard modules shadowed",
        {
            **reference_files(True),
            "json.py": "raise RuntimeError('shadowed json')\n",
            "numpy.py": "raise RuntimeError('shadowed numpy')\n",
            "subprocess.py": "raise RuntimeError('shadowed subprocess')\n",
            "transformers.py": "raise RuntimeError('shadowed transformers')\n",
        },
        ALL_PASSED,
        within=60,
    ),
    Case(
        "forward pass that runs the HuggingFace model",
        edited(
            (P, LOAD, LOAD + "    import decoder\n    decoder.HF = hf_model\n"),
            (
                D,
                FORWARD,
                "        if globals().get('HF') is not None:\n            import torch\n"
                "            return HF(torch.as_tensor(ids)).logits.detach().numpy()\n" + FORWARD,
            ),
        ),
        {"mapping": "passed", "shapes": "passed", "embedding": "passed", "logits": "error", "compare": "error"},
        within=60,
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_hostile_submission(tmp_path: Path, case: Case):
    """The grader exits 0 with a sane report, the expected verdicts, within the case's time."""
    submission = make_submission(tmp_path / "submission", case.files)
    graded = grade_cli(tmp_path, submission, *case.options)
    assert graded.statuses == case.expected, json.dumps(graded.report["extra_data"]["tiers"], indent=1)
    assert graded.seconds < case.within, f"took {graded.seconds:.1f} s"
    if case.check:
        case.check(graded)


# ---------------------------------------------------------------- operating-system protections

PROBE = """
import os, socket
def _probe(label, action):
    try:
        action()
        print(f"PROBE {{label}}: ALLOWED", flush=True)
    except Exception as exc:
        print(f"PROBE {{label}}: DENIED ({{type(exc).__name__}})", flush=True)
def _write_report():
    with open({report!r}, "w") as fh:
        fh.write('{{"score": 100}}')
def _connect():
    socket.create_connection(("127.0.0.1", {port}), timeout=2).close()
_probe("reference", lambda: open({reference!r}).read())
_probe("hidden inputs", lambda: open({inputs!r}).read())
_probe("checkpoint cache", lambda: os.listdir({cache!r}))
_probe("report folder", _write_report)
_probe("network", _connect)
"""


@pytest.fixture
def listener():
    """A TCP server on the loopback of the grader's network namespace."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        yield server.getsockname()[1]


def probe_submission(tmp_path: Path, port: int, report: Path) -> Path:
    code = PROBE.format(
        reference=str(REPO / "reference" / "pretrained.py"),
        inputs=str(Path(grader.__file__).parent / "inputs.py"),
        cache=str(default_root()),
        report=str(report),
        port=port,
    )
    return make_submission(tmp_path / "probe", edited(at_import(code)))


def probes(graded: Graded) -> dict[str, str]:
    lines = [line for line in graded.stdout.splitlines() if line.startswith("PROBE ")]
    return {line[6:].split(":")[0]: line.split(": ", 1)[1].split(" ")[0] for line in lines}


@pytest.mark.parametrize(
    ("isolated", "fork_server"),
    [(True, False), (True, True), (False, False)],
    ids=["isolated", "isolated, from the fork server", "protection removed"],
)
def test_student_code_cannot_read_the_graders_files_reach_the_network_or_write_the_report(
    tmp_path: Path, listener: int, isolated: bool, fork_server: bool
):
    """As root: hidden reference, inputs, cache and report folder, and no network; without isolation, all open."""
    out = tmp_path / "report" / "results.json"
    submission = probe_submission(tmp_path, listener, out)
    options = () if isolated else ("--no-isolation",)
    graded = grade_cli(tmp_path, submission, *options, out=out, fork_server=fork_server)
    seen = probes(graded)
    assert set(seen) == {"reference", "hidden inputs", "checkpoint cache", "report folder", "network"}, graded.stdout
    assert graded.report["score"] == 100  # the report is the grader's, whatever the student wrote
    sandbox = graded.report["extra_data"]["sandbox"]
    if isolated:
        assert seen == dict.fromkeys(seen, "DENIED"), seen
        assert sandbox["uid"] is not None and sandbox["uid"] != 0
        assert sandbox["network_namespace"] and sandbox["pid_namespace"] and sandbox["mount_namespace"]
        assert sandbox["unavailable"] == []
    else:
        assert seen == dict.fromkeys(seen, "ALLOWED"), seen
        assert sandbox["uid"] is None
        assert any("switched off" in reason for reason in sandbox["unavailable"])


DAEMON = """
import os, time
def _daemonise():
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            os.execve("/bin/sleep", ["sleep", "{marker}"], {{}})  # no environment: no run token to find it by
        os._exit(0)
    time.sleep(0.5)
_daemonise()
def _bomb():
    children = []
    for _ in range(500):
        try:
            pid = os.fork()
        except OSError:
            print("FORK REFUSED", flush=True)
            break
        if pid == 0:
            time.sleep(600)
            os._exit(0)
        children.append(pid)
    for pid in children[3:]:  # three are left behind, still sleeping
        os.kill(pid, 9)
        os.waitpid(pid, 0)
_bomb()
"""


def sleeping(marker: str) -> list[int]:
    """Live processes running ``sleep MARKER``."""
    wanted = f"sleep\0{marker}\0".encode()
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and (entry / "cmdline").read_bytes() == wanted:
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def processes_of(uid: int) -> list[int]:
    """Pids of processes whose real uid is ``uid``."""
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit():
                status = (entry / "status").read_text()
                if int(status.split("Uid:")[1].split()[0]) == uid:
                    pids.append(int(entry.name))
        except (OSError, IndexError, ValueError):
            continue
    return pids


@pytest.mark.parametrize(
    ("isolated", "fork_server"),
    [(True, False), (True, True), (False, False)],
    ids=["isolated", "isolated, from the fork server", "protection removed"],
)
def test_a_detached_daemon_and_a_fork_bomb_leave_nothing_running(tmp_path: Path, isolated: bool, fork_server: bool):
    """A double-forked, setsid'ed daemon and 500 forks: capped, and all gone when grading ends."""
    marker = str(900_000_000 + os.getpid() * 4 + isolated * 2 + fork_server)
    files = edited(at_import(DAEMON.format(marker=marker)))
    uid = 63999
    options = ("--sandbox-uid", str(uid), "--processes", "32") if isolated else ("--no-isolation",)
    try:
        submission = make_submission(tmp_path / "daemon", files)
        graded = grade_cli(tmp_path, submission, *options, fork_server=fork_server)
        assert graded.statuses == ALL_PASSED
        time.sleep(0.5)
        if isolated:
            assert "FORK REFUSED" in graded.stdout  # the process cap held
            assert sleeping(marker) == [], "the daemon survived grading"
            assert processes_of(uid) == [], "processes of the student's user survived grading"
        else:
            # Without a PID namespace and a user of its own, the daemon (which dropped the run token
            # from its environment) outlives grading, and all 500 forks succeed.
            assert "FORK REFUSED" not in graded.stdout
            assert sleeping(marker), "without isolation the daemon should have survived"
    finally:
        for pid in sleeping(marker) + processes_of(uid):
            os.kill(pid, 9)


def test_path_traversal_zip_entries_are_refused_and_nothing_lands_outside(tmp_path: Path):
    """Entries such as ../../evil.py or /etc/evil.py: the zip is refused, no file is written outside."""
    archive = tmp_path / "upload" / "submission.zip"
    archive.parent.mkdir()
    with zipfile.ZipFile(archive, "w") as zf:
        for name, text in reference_files(True).items():
            zf.writestr(name, text)
        zf.writestr("../../evil.py", "print('escaped')\n")
        zf.writestr("/tmp/evil_absolute.py", "print('escaped')\n")
    graded = grade_cli(tmp_path, archive)
    assert set(graded.statuses.values()) == {"error"}
    assert "outside" in graded.report["extra_data"]["submission"]["problem"]
    assert not list(tmp_path.rglob("evil.py")) and not Path("/tmp/evil_absolute.py").exists()


def test_a_folder_at_the_report_path_made_by_student_code_does_not_stop_the_report(tmp_path: Path):
    """Without isolation a submission could plant things in the report's folder; isolated, it cannot."""
    out = tmp_path / "report" / "results.json"
    plant = f"import os\ntry:\n    os.makedirs({str(out)!r} + '.d')\n    print('PLANTED')\nexcept OSError:\n    print('REFUSED')\n"
    graded = grade_cli(tmp_path, make_submission(tmp_path / "plant", edited(at_import(plant))), out=out)
    assert graded.report["score"] == 100
    assert "REFUSED" in graded.stdout and not Path(str(out) + ".d").exists()
