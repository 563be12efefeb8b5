"""The sandbox: hangs, crashes, memory blow-ups, floods of output and tampering never change a verdict.

The tests grade real submissions through the engine (a child process per run,
verdicts in this process) and assert the exact status of all five tiers, the
feedback that names the cause, and that the report can still be written. The
submissions are the reference solution with a few hostile lines added. The
last section holds tests for holes found while writing these; they fail until
the holes are fixed.
"""

from __future__ import annotations

import json
import os
import signal
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from bank import BANK
from conftest import grade_submission, make_submission, reference_files, statuses, tier

from grader.report import Report, dumps, write_report
from grader.sandbox import ChildSession, Limits, child_environment

P, D = "pretrained.py", "decoder.py"
TIERS = ("mapping", "shapes", "embedding", "logits", "compare")
ALL_PASSED = dict.fromkeys(TIERS, "passed")
SHORT = 5.0  # seconds per tier for the submissions that hang
PATIENT = 8.0  # a longer time-out where the whole run's duration is checked: room for a slow, busy machine

# Anchors in the reference solution, each found exactly once.
IMPORTS = "from transformers import GPT2LMHeadModel\n"  # the last import of pretrained.py
MAPPING = "    ### BEGIN SOLUTION\n    def same("  # the start of get_weight_mapping's body
LOAD = "    hf_model = GPT2LMHeadModel.from_pretrained(model_name)\n"  # the first line of load_gpt2_weights
MAX_DIFF = "    max_diff = float(np.max(np.abs(ours - theirs)))\n"  # in compare_outputs, after both forwards
RETURN_MATCH = "    return max_diff <= logits_tolerance(theirs), max_diff\n"
DTYPE = "DTYPE = np.float32\n"  # decoder.py, after its imports
GELU = "    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))\n"

TRANSPOSED_C_PROJ = next(bug for bug in BANK if bug.name == "transposed_c_proj")


# ---------------------------------------------------------------- helpers


def edited(*edits: tuple[str, str, str], with_decoder: bool = False) -> dict[str, str]:
    """The reference files with each (file, old, new) edit applied; ``old`` must occur once."""
    files = reference_files(with_decoder)
    for name, old, new in edits:
        assert files[name].count(old) == 1, f"the anchor must occur once in {name}: {old!r}"
        files[name] = files[name].replace(old, new)
    return files


def line_of(text: str, marker: str) -> int:
    """The number of the only line of ``text`` that contains ``marker``."""
    lines = [n for n, line in enumerate(text.splitlines(), start=1) if marker in line]
    assert len(lines) == 1, f"{marker!r} should be on exactly one line"
    return lines[0]


def grade_files(folder: Path, files: dict[str, str], **options: Any) -> Report:
    """Write ``files`` as a submission in ``folder`` and grade it."""
    return grade_submission(make_submission(folder, files), **options)


def details(report: Report) -> str:
    """Every tier's status and feedback, for assertion messages."""
    return "\n".join(f"[{t.name}: {t.status}] {t.detail}" for t in report.tiers)


def assert_verdicts(report: Report, expected: dict[str, str]) -> dict[str, Any]:
    """Exactly these statuses, points only for passed tiers, and a report that serialises; returns it."""
    assert statuses(report) == expected, details(report)
    for t in report.tiers:
        assert t.score == (t.max_score if t.status == "passed" else 0), t
    document = json.loads(dumps(report))
    assert {name: entry["status"] for name, entry in document["extra_data"]["tiers"].items()} == expected
    assert document["score"] == sum(t.max_score for t in report.tiers if t.status == "passed")
    assert len(document["tests"]) == len(TIERS)
    return document


def processes_running(*argv: str) -> list[int]:
    """Pids of live (not zombie) processes whose command line is exactly ``argv``."""
    wanted = ("\0".join(argv) + "\0").encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if (entry / "cmdline").read_bytes() == wanted:
                pids.append(int(entry.name))
        except OSError:
            continue  # it ended while we looked
    return pids


# ---------------------------------------------------------------- hangs


def test_hang_in_the_loader_times_out_where_it_hung_and_skips_what_needs_a_model(tmp_path: Path):
    """A loader stuck in a loop: shapes times out naming the line; embedding and logits are skipped."""
    files = edited((P, LOAD, "    while True: pass  # HANG\n" + LOAD))
    line = line_of(files[P], "# HANG")
    started = time.monotonic()
    report = grade_files(tmp_path / "hang", files, timeout=PATIENT)
    elapsed = time.monotonic() - started
    expected = {"mapping": "passed", "shapes": "timeout", "embedding": "skipped", "logits": "skipped",
                "compare": "passed"}  # fmt: skip
    assert_verdicts(report, expected)
    shapes = tier(report, "shapes")
    assert f"load_gpt2_weights did not finish within {PATIENT:g} s" in shapes.detail
    assert f"pretrained.py, line {line}" in shapes.detail, shapes.detail
    assert PATIENT <= shapes.seconds < PATIENT + 3
    for name in ("embedding", "logits"):
        assert "load_gpt2_weights timed out in the shapes tier" in tier(report, name).detail
        assert "needs a loaded model" in tier(report, name).detail
    # One time-out, not one per tier: the skipped tiers did not wait for the loop again.
    assert elapsed < len(TIERS) * PATIENT, f"grading took {elapsed:.1f} s"
    assert report.execution_time < len(TIERS) * PATIENT
    assert report.resources["student_processes_started"] == 2  # a fresh process for compare
    out = tmp_path / "results.json"
    write_report(report, out)
    written = json.loads(out.read_text())
    assert written["score"] == tier(report, "mapping").max_score + tier(report, "compare").max_score
    assert written["extra_data"]["tiers"]["shapes"]["status"] == "timeout"


def test_hang_while_importing_times_out_the_first_tier_and_skips_the_rest(tmp_path: Path):
    """A module-level endless loop: mapping times out at that line, every later tier is skipped."""
    files = edited((P, IMPORTS, IMPORTS + "\nwhile True: pass  # HANG\n"))
    line = line_of(files[P], "# HANG")
    report = grade_files(tmp_path / "import_hang", files, timeout=SHORT)
    assert_verdicts(report, {"mapping": "timeout", **dict.fromkeys(TIERS[1:], "skipped")})
    mapping = tier(report, "mapping")
    assert f"importing pretrained.py did not finish within {SHORT:g} s" in mapping.detail
    assert f"pretrained.py, line {line}" in mapping.detail, mapping.detail
    for name in TIERS[1:]:
        assert "importing your code timed out in the mapping tier" in tier(report, name).detail
    assert report.execution_time < len(TIERS) * SHORT  # a single time-out, then nothing runs
    assert report.resources["student_processes_started"] == 1


def test_hang_inside_numpy_is_killed_on_time(tmp_path: Path):
    """An endless loop of huge matmuls spends its time in C code: it is still killed at the deadline."""
    busy = "    a = np.ones((8000, 8000), dtype=np.float32)\n    while True: a @ a  # HANG\n"
    files = edited((P, MAX_DIFF, busy + MAX_DIFF))
    line = line_of(files[P], "# HANG")
    report = grade_files(tmp_path / "numpy_hang", files, timeout=SHORT)
    assert_verdicts(report, {**ALL_PASSED, "compare": "timeout"})
    compare = tier(report, "compare")
    assert f"compare_outputs did not finish within {SHORT:g} s" in compare.detail
    assert f"pretrained.py, line {line}" in compare.detail, compare.detail
    assert SHORT <= compare.seconds < SHORT + 3, f"the tier took {compare.seconds:.1f} s"


@pytest.mark.parametrize("own_session", [False, True], ids=["same group", "own session (setsid)"])
def test_subprocesses_the_student_started_are_killed(tmp_path: Path, own_session: bool):
    """A subprocess the student started does not outlive grading, even in a session of its own."""
    # The process group is killed at the time-out; a setsid'ed one is found by the run token in its environment.
    argv = ("sleep", str(987_000_000 + os.getpid() * 2 + own_session))  # a command line no other process has
    assert not processes_running(*argv)
    spawn = (
        "    import subprocess, time\n"
        f"    subprocess.Popen({list(argv)!r}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, "
        f"start_new_session={own_session})\n"
        "    while True: time.sleep(0.05)  # HANG\n"
    )
    files = edited((P, MAX_DIFF, spawn + MAX_DIFF))
    try:
        report = grade_files(tmp_path / "spawn", files, timeout=SHORT)
        assert_verdicts(report, {**ALL_PASSED, "compare": "timeout"})
        assert f"pretrained.py, line {line_of(files[P], '# HANG')}" in tier(report, "compare").detail
        deadline = time.monotonic() + 3  # SIGKILL is delivered at once; allow for a slow reaper
        while processes_running(*argv) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not processes_running(*argv), "the student's subprocess survived grading"
    finally:
        for pid in processes_running(*argv):  # only ever the sleep this test started
            os.kill(pid, signal.SIGKILL)


# ---------------------------------------------------------------- crashes and exits


def test_os_exit_in_the_loader_is_an_error_at_its_line_and_the_child_restarts(tmp_path: Path):
    """os._exit(3) ends the student process: shapes says so and where, compare runs in a new process."""
    files = edited((P, LOAD, "    import os\n    os._exit(3)  # CRASH\n" + LOAD))
    line = line_of(files[P], "# CRASH")
    report = grade_files(tmp_path / "exit", files)
    expected = {"mapping": "passed", "shapes": "error", "embedding": "skipped", "logits": "skipped",
                "compare": "passed"}  # fmt: skip
    assert_verdicts(report, expected)
    shapes = tier(report, "shapes")
    assert "While running load_gpt2_weights, called os._exit(3)" in shapes.detail
    assert f"pretrained.py, line {line}" in shapes.detail, shapes.detail
    for name in ("embedding", "logits"):
        assert "load_gpt2_weights crashed in the shapes tier" in tier(report, name).detail
    assert report.resources["student_processes_started"] == 2  # a fresh process for compare


@pytest.mark.parametrize(
    ("code", "message"),
    [
        ("import ctypes; ctypes.string_at(0)", "killed by SIGSEGV"),
        ("import os; os.abort()", "called os.abort()"),
    ],
    ids=["segfault", "abort"],
)
def test_a_crash_in_compare_outputs_is_an_error(tmp_path: Path, code: str, message: str):
    """A segfault or an abort kills the student process: that tier is an error saying why, not a pass."""
    files = edited((P, MAX_DIFF, f"    {code}  # CRASH\n" + MAX_DIFF))
    report = grade_files(tmp_path / "crash", files)
    assert_verdicts(report, {**ALL_PASSED, "compare": "error"})
    compare = tier(report, "compare")
    assert compare.detail.startswith("While running compare_outputs, ")
    assert message in compare.detail, compare.detail
    if "os.abort" in code:  # the guarded abort knows the line; a signal does not
        assert f"pretrained.py, line {line_of(files[P], '# CRASH')}" in compare.detail


@pytest.mark.parametrize("where", ["import", "loader"])
def test_sys_exit_zero_is_an_error_not_a_pass(tmp_path: Path, where: str):
    """sys.exit(0) at import time or in a function is reported as such; it never ends grading with a pass."""
    if where == "import":
        files = edited((P, IMPORTS, IMPORTS + "import sys\nsys.exit(0)  # EXIT\n"))
        expected = dict.fromkeys(TIERS, "error")
    else:
        files = edited((P, LOAD, "    import sys\n    sys.exit(0)  # EXIT\n" + LOAD))
        expected = {**ALL_PASSED, "shapes": "error", "embedding": "error", "logits": "error"}
    line = line_of(files[P], "# EXIT")
    report = grade_files(tmp_path / "sys_exit", files)
    assert_verdicts(report, expected)
    for name, status in expected.items():
        if status == "error":
            detail = tier(report, name).detail
            assert "SystemExit: the code called sys.exit(0)" in detail, detail
            assert f"pretrained.py, line {line}" in detail, detail


@pytest.mark.parametrize("broken", [P, D])
def test_a_syntax_error_names_the_file_and_line_in_every_tier(tmp_path: Path, broken: str):
    """A SyntaxError in pretrained.py or in the student's decoder.py fails every tier, with file and line."""
    anchor = IMPORTS if broken == P else DTYPE
    files = edited((broken, anchor, anchor + "\ndef broken(:  # SYNTAX\n    pass\n"), with_decoder=True)
    line = line_of(files[broken], "# SYNTAX")
    report = grade_files(tmp_path / "syntax", files)
    assert_verdicts(report, dict.fromkeys(TIERS, "error"))
    for t in report.tiers:
        assert f"importing {broken} raised SyntaxError" in t.detail, t.detail
        assert f"({broken}, line {line}" in t.detail, t.detail


# ---------------------------------------------------------------- resources and output


def test_memory_beyond_the_limit_is_an_error_and_later_tiers_still_run(tmp_path: Path):
    """8 GiB under a 2 GiB limit: mapping says it ran out of memory; the same process then passes the rest."""
    blow_up = (
        "    if not getattr(np, 'blown_up', False):  # the first call only\n"
        "        np.blown_up = True\n"
        "        np.ones(2**30)  # MEMORY: 8 GiB, which fits in the test machine's RAM without the limit\n"
    )
    files = edited((P, MAPPING, blow_up + MAPPING))
    report = grade_files(tmp_path / "memory", files, memory_mb=2048)
    assert_verdicts(report, {**ALL_PASSED, "mapping": "error"})
    mapping = tier(report, "mapping")
    assert "MemoryError: ran out of memory" in mapping.detail, mapping.detail
    assert f"pretrained.py, line {line_of(files[P], '# MEMORY')}" in mapping.detail
    assert report.limits["memory_bytes"] == 2048 * 2**20
    assert report.resources["student_processes_started"] == 1  # it survived the MemoryError


def test_ten_megabytes_of_output_are_capped_and_change_nothing(tmp_path: Path):
    """10 MB on stdout and on stderr: the report keeps the start and the end, within the cap."""
    flood = (
        "import sys\n"
        "sys.stdout.write('OUT-START ' + 'o' * 10_000_000 + ' OUT-END\\n')\n"
        "sys.stderr.write('ERR-START ' + 'e' * 10_000_000 + ' ERR-END\\n')\n"
    )
    report = grade_files(tmp_path / "flood", edited((P, IMPORTS, IMPORTS + flood)))
    document = assert_verdicts(report, ALL_PASSED)
    cap = Limits().output_cap
    for text, start, end in ((report.student_stdout, "OUT-START", "OUT-END"),
                             (report.student_stderr, "ERR-START", "ERR-END")):  # fmt: skip
        assert start in text and end in text
        assert "characters cut" in text
        assert len(text) <= cap + 100, len(text)
    assert document["extra_data"]["student_output"]["stdout"] == report.student_stdout
    assert len(dumps(report)) < 5 * cap + 50_000  # the report itself stays small


# ---------------------------------------------------------------- integrity


def test_fake_results_printed_or_written_do_not_count(tmp_path: Path):
    """A wrong submission that prints a perfect results.json and writes one wherever it can."""
    fake = {"score": 100, "output": "All tests passed", "tests": [{"name": "everything", "score": 100}]}
    out = tmp_path / "results.json"  # where grade_submission's config points the report
    lies = (
        "import json\nfrom pathlib import Path\n"
        f"FAKE = json.dumps({fake!r})\n"
        "print(FAKE)\n"
        f"for folder in (Path.cwd(), Path(__file__).resolve().parent.parent, Path({str(tmp_path)!r})):\n"
        "    try:\n"
        "        (folder / 'results.json').write_text(FAKE)\n"
        "    except OSError:\n"
        "        pass\n"
    )
    files = edited(*TRANSPOSED_C_PROJ.edits, (P, IMPORTS, IMPORTS + lies))
    report = grade_files(tmp_path / "liar", files)
    assert_verdicts(report, TRANSPOSED_C_PROJ.expect)
    if os.geteuid() == 0:  # isolated: the report's folder is hidden from the student process
        assert not out.exists()
        out.write_text(json.dumps(fake))  # plant the lie ourselves, to show that the report replaces it
    assert json.loads(out.read_text())["score"] == 100  # the lie was written ...
    assert json.dumps(fake) in report.student_stdout  # ... and printed
    write_report(report, out)  # ... and the grader's report replaces it
    written = json.loads(out.read_text())
    assert written["score"] == report.score < 100
    assert written["extra_data"]["tiers"]["mapping"]["status"] == "failed"


NUMPY_PATCHES = (
    "np.allclose = lambda *a, **k: True\n"
    "np.array_equal = lambda *a, **k: True\n"
    "np.max = lambda *a, **k: 0.0\n"
    "np.abs = lambda x, *a, **k: np.zeros_like(x)\n"
    "np.testing.assert_allclose = lambda *a, **k: None\n"
    "np.testing.assert_array_equal = lambda *a, **k: None\n"
    "np.save = lambda *a, **k: None\n"
    "np.load = lambda *a, **k: np.zeros(1)\n"
)
# The json case fails today: compare.collect loads the tokenizer in the student process after the
# submission's import, and transformers 5 builds it with json.dumps, so the tier becomes an
# "internal problem" error instead of passing.
JSON_PATCHES = (
    'json.dumps = lambda *a, **k: \'{"score": 100, "tests": []}\'\n'
    "json.dump = lambda obj, fp, *a, **k: fp.write(json.dumps(obj))\n"
    "json.loads = lambda s, *a, **k: (lambda r: {**r, 'score': 100} if isinstance(r, dict) and 'tests' in r "
    "else r)(_loads(s, *a, **k))\n"
)


@pytest.mark.parametrize("patches", [NUMPY_PATCHES, JSON_PATCHES], ids=["numpy", "json"])
def test_patching_numpy_or_json_does_not_change_the_verdicts(tmp_path: Path, patches: str):
    """Wrong weights plus patched numpy or json: exactly the verdicts of the same bug without the patches."""
    keep = "import json\n_max, _abs, _loads = np.max, np.abs, json.loads\n"
    files = edited(*TRANSPOSED_C_PROJ.edits, (P, IMPORTS, IMPORTS + keep + patches))
    files[P] = files[P].replace("np.max(np.abs(", "_max(_abs(")  # the liar's own code keeps working copies
    report = grade_files(tmp_path / "patcher", files)
    assert_verdicts(report, TRANSPOSED_C_PROJ.expect)
    for name, text in TRANSPOSED_C_PROJ.feedback.items():
        assert text in tier(report, name).detail, details(report)
    assert report.score == sum(t.max_score for t in report.tiers if t.name in ("embedding", "compare"))
    assert report.internal_errors == []


def test_files_named_like_the_graders_modules_change_nothing(tmp_path: Path):
    """grader.py, json.py, numpy.py, torch.py ... that raise when imported: the reference still gets 100."""
    names = ("grader", "json", "numpy", "child", "report", "torch", "sandbox", "engine", "transformers", "common")
    hostile = {f"{name}.py": f"raise RuntimeError('hostile {name}.py was imported')\n" for name in names}
    report = grade_files(tmp_path / "shadows", {**reference_files(), **hostile})
    assert_verdicts(report, ALL_PASSED)
    assert report.score == report.max_score == 100
    assert "hostile" not in report.student_stdout + report.student_stderr


@pytest.mark.parametrize("where", ["import", "loader"])
def test_the_graders_code_cannot_be_imported(tmp_path: Path, where: str):
    """Importing grader.* or reference.* from a submission is an error that says they belong to the grader."""
    if where == "import":
        files = edited((P, IMPORTS, IMPORTS + "import grader.lab.contract  # GRADER\n"))
        expected = dict.fromkeys(TIERS, "error")
    else:
        borrow = "    from reference.pretrained import load_gpt2_weights as theirs  # GRADER\n"
        files = edited((P, LOAD, borrow + "    return theirs(your_model, model_name)\n" + LOAD))
        expected = {**ALL_PASSED, "shapes": "error", "embedding": "error", "logits": "error"}
    line = line_of(files[P], "# GRADER")
    report = grade_files(tmp_path / "borrow", files)
    assert_verdicts(report, expected)
    for name, status in expected.items():
        if status == "error":
            detail = tier(report, name).detail
            assert "is part of the grader and cannot be imported by a submission" in detail, detail
            assert f"pretrained.py, line {line}" in detail, detail


def test_torch_inside_the_forward_fails_the_logits_tier(tmp_path: Path):
    """A decoder whose GELU runs in torch gives correct logits, but the logits tier says it called torch."""
    torch_gelu = (
        "    import torch\n"
        "    return torch.nn.functional.gelu(torch.from_numpy(np.ascontiguousarray(x)), approximate='tanh').numpy()"
        "  # TORCH\n"
    )
    files = edited((D, GELU, torch_gelu), with_decoder=True)
    report = grade_files(tmp_path / "torch", files)
    assert_verdicts(report, {**ALL_PASSED, "logits": "failed"})
    logits = tier(report, "logits")
    assert "the forward pass called torch" in logits.detail, logits.detail
    assert f"decoder.py, line {line_of(files[D], '# TORCH')}" in logits.detail, logits.detail
    assert logits.max_diff is not None and logits.max_diff <= logits.tolerance  # the values were right
    assert report.decoder == "submission"


# ---------------------------------------------------------------- the trusted side


UNPICKLED: list[str] = []


def _record_unpickling(tag: str) -> str:
    """Runs only if someone unpickles a ``_Trap``."""
    UNPICKLED.append(tag)
    return tag


class _Trap:
    """Unpickling this object calls ``_record_unpickling``."""

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return _record_unpickling, ("unpickled",)


def test_the_parent_reads_arrays_without_pickle_and_checks_the_manifest(tmp_path: Path):
    """Pickled, mislabelled, garbled or out-of-folder arrays are missing, never unpickled or trusted."""
    UNPICKLED.clear()
    session = ChildSession(tmp_path / "work", "reference", Limits(), tmp_path / "scratch")
    request_id = 7
    folder = session.results / f"{request_id}-0123456789abcdef"
    folder.mkdir()
    good = np.arange(6, dtype=np.float32).reshape(2, 3)
    np.save(folder / "good.npy", good)
    np.save(folder / "pickled.npy", np.array([_Trap()], dtype=object), allow_pickle=True)
    np.save(folder / "float64.npy", np.zeros(3, dtype=np.float64))
    np.save(folder / "square.npy", np.zeros((2, 3), dtype=np.float32))
    (folder / "garbled.npy").write_bytes(b"\x93NUMPY not really")
    np.save(session.results / "outside.npy", good)  # beside the request folder, not in it
    (folder / "linked.npy").symlink_to(session.results / "outside.npy")  # a link out of it
    manifest = {
        "good": {"file": "good.npy", "dtype": "<f4", "shape": [2, 3]},
        "pickled": {"file": "pickled.npy", "dtype": "|O", "shape": [1]},
        "dtype_differs": {"file": "float64.npy", "dtype": "<f4", "shape": [3]},
        "shape_differs": {"file": "square.npy", "dtype": "<f4", "shape": [3, 2]},
        "garbled": {"file": "garbled.npy", "dtype": "<f4", "shape": [2, 3]},
        "escapes": {"file": "../outside.npy", "dtype": "<f4", "shape": [2, 3]},
        "linked": {"file": "linked.npy", "dtype": "<f4", "shape": [2, 3]},
    }
    event = {"event": "done", "id": request_id, "status": "ok", "arrays": manifest, "meta": {"k": 1},
             "folder": folder.name}  # fmt: skip
    for forged in ("7", "7-0123456789abcdeX", "../results", 7):  # a folder not named by the child: nothing counts
        assert session._load_arrays({**event, "folder": forged}, request_id).arrays == {}
    collected = session._load_arrays(event, request_id)
    assert list(collected.arrays) == ["good"]
    np.testing.assert_array_equal(collected.arrays["good"], good)
    assert UNPICKLED == [], "the parent unpickled data from the student process"
    assert collected.meta == {"k": 1}
    assert not folder.exists(), "the request's folder should be removed once read"
    session.close()
    assert not session.results.exists(), "the results folder should be removed with the session"


def test_the_child_environment_is_scrubbed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The student process sees the grader's few variables: offline hub, a private home, no secrets."""
    secret = "hunter2-do-not-leak"
    monkeypatch.setenv("SECRET_TOKEN", secret)
    monkeypatch.setenv("HF_TOKEN", secret)
    spy = (
        "import json, os\nfrom pathlib import Path\n"
        "Path('environment.json').write_text(json.dumps(dict(os.environ)))\n"
        "print('ENVIRONMENT ' + Path('environment.json').read_text())\n"
    )
    report = grade_files(tmp_path / "env", edited((P, IMPORTS, IMPORTS + spy)))
    assert_verdicts(report, ALL_PASSED)
    line = next(x for x in report.student_stdout.splitlines() if x.startswith("ENVIRONMENT "))
    seen = json.loads(line.removeprefix("ENVIRONMENT "))
    assert seen["HF_HUB_OFFLINE"] == "1"
    assert "SECRET_TOKEN" not in seen and "HF_TOKEN" not in seen
    assert secret not in report.student_stdout + report.student_stderr
    home = Path(seen["HOME"]).resolve()
    assert not home.is_relative_to(Path(os.environ["HOME"]).resolve()), home
    assert home.is_relative_to(Path(tempfile.gettempdir()).resolve()), home  # the run's private scratch folder
    own = set(child_environment(home, 1))  # what the grader sets on purpose
    leaked = {name for name, value in seen.items() if os.environ.get(name) == value} - own
    assert not leaked, f"the parent's variables reached the student process: {sorted(leaked)}"


# ---------------------------------------------------------------- known holes (these fail until fixed)


def test_patching_numpy_random_cannot_undo_the_corruption_compare_checks(tmp_path: Path):
    """compare_outputs that always says (True, 0.0) must fail, even if it patches np.random first."""
    # The compare tier corrupts a harness-built model in the student process with
    # np.random.default_rng(seed).normal(...); patched to zeros, the "corrupted" model
    # equals the matching one, and the parent, which only checks the reported number
    # against the logits it gets back, accepts a compare_outputs that never compares.
    quiet_rng = (
        "    class Zeros:\n"
        "        def __init__(self, rng):\n"
        "            self.rng = rng\n"
        "        def normal(self, loc=0.0, scale=1.0, size=None):\n"
        "            return np.zeros(size)\n"
        "        def __getattr__(self, name):\n"
        "            return getattr(self.rng, name)\n"
        "    real = np.random.default_rng\n"
        "    np.random.default_rng = lambda *a, **k: Zeros(real(*a, **k))\n"
        "    return True, 0.0\n"
    )
    files = edited((P, MAX_DIFF + RETURN_MATCH, quiet_rng))
    report = grade_files(tmp_path / "no_corruption", files)
    assert_verdicts(report, {**ALL_PASSED, "compare": "failed"})


def test_garbage_on_the_reply_pipe_is_a_crash_not_a_grader_failure(tmp_path: Path):
    """A student writing a non-event JSON line to the grader's reply pipe: an error tier, and still a report."""
    # The reply pipe's number is on the child's command line; _read_event returns any JSON
    # value, and ChildSession.run calls .get on it, so `[1]` raises AttributeError in the parent.
    garbage = "    import os, sys\n    os.write(int(sys.argv[sys.argv.index('--reply-fd') + 1]), b'[1]\\n')\n"
    report = grade_files(tmp_path / "garbage", edited((P, MAX_DIFF, garbage + MAX_DIFF)))
    assert_verdicts(report, {**ALL_PASSED, "compare": "error"})
