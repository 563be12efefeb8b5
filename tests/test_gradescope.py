"""The Gradescope bundle, simulated locally: build the zip, unpack it into a temporary
AUTOGRADER_ROOT as Gradescope would, run its setup.sh and run_autograder, and validate every
results.json against Gradescope's documented format (tests/schemas/).

setup.sh runs with LAB04_VENV set to this test's own virtualenv, so it installs nothing (no
apt, no pip, no network) but bakes and checks the checkpoints exactly as on Gradescope. As
root (as on Gradescope, and in CI) the fake /autograder lives in /var/lib, outside the
temporary folders that the sandbox hides from student code wholesale.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

import jsonschema
import pytest
from click.testing import CliRunner, Result
from conftest import REPO

from grader import __version__
from grader.cli import main
from grader.lab.checkpoints import default_root

SCHEMA = json.loads((REPO / "tests" / "schemas" / "gradescope_results.schema.json").read_text())
VENV = Path(sys.prefix)  # the virtualenv running these tests, with the grader installed
FAKE_REVISION = "0123456789abcdef0123456789abcdef01234567"
FAKE_SHA = "ab" * 32
TIER_NAMES = ("mapping", "shapes", "embedding", "logits", "compare")
AS_ROOT = os.geteuid() == 0  # as on Gradescope: only then can the sandbox hide paths and drop privileges


def build(*args: str | Path) -> Result:
    return CliRunner().invoke(main, ["gradescope", "build", *(str(a) for a in args)])


def strict_json(text: str) -> dict:
    """Parse as Gradescope would: NaN and Infinity are not JSON."""

    def refuse(name: str) -> None:
        raise ValueError(f"{name} is not valid JSON")

    return json.loads(text, parse_constant=refuse)


def validate(results: dict) -> None:
    errors = sorted(jsonschema.Draft202012Validator(SCHEMA).iter_errors(results), key=str)
    assert not errors, "results.json does not follow Gradescope's format:\n" + "\n".join(e.message for e in errors)


def unpack(bundle: Path, root: Path) -> Path:
    """What Gradescope does with the zip: extract it into source/ (modes kept), copy run_autograder up."""
    source = root / "source"
    with zipfile.ZipFile(bundle) as archive:
        archive.extractall(source)
        for info in archive.infolist():
            mode = (info.external_attr >> 16) & 0o777
            if mode:
                (source / info.filename).chmod(mode)
    shutil.copy2(source / "run_autograder", root / "run_autograder")
    return root


def setup(root: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(root / "source" / "setup.sh")],
        env={**os.environ, "AUTOGRADER_ROOT": str(root), "LAB04_VENV": str(VENV), **env},
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def run_autograder(root: Path, submission: Path | dict[str, str], venv: Path = VENV) -> tuple[dict, str]:
    """Grade ``submission`` (a folder to copy, or files to write) with the unpacked bundle; return results and output."""
    target = root / "submission"
    shutil.rmtree(target, ignore_errors=True)
    shutil.rmtree(root / "results", ignore_errors=True)
    if isinstance(submission, Path):
        shutil.copytree(submission, target)
    else:
        for name, text in submission.items():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            (target / name).write_text(text)
    done = subprocess.run(
        ["bash", str(root / "run_autograder")],
        env={**os.environ, "AUTOGRADER_ROOT": str(root), "LAB04_VENV": str(venv)},
        capture_output=True, text=True, errors="replace", timeout=600,
    )  # fmt: skip
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    results_file = root / "results" / "results.json"
    assert results_file.is_file(), f"no results.json:\n{output}"
    results = strict_json(results_file.read_text(encoding="utf-8"))
    validate(results)
    return results, output


def statuses(results: dict) -> dict[str, str]:
    return {t["tags"][0]: t["status"] for t in results["tests"]}


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def reference_files() -> dict[str, str]:
    return {name: (REPO / "reference" / name).read_text() for name in ("pretrained.py", "decoder.py")}


# ---------------------------------------------------------------- building the bundle


@pytest.fixture(scope="module")
def tiny_dir() -> Path:
    """A local HuggingFace checkpoint folder (the built-in tiny one, used as --model DIR)."""
    result = CliRunner().invoke(main, ["checkpoints", "build", "tiny"])
    assert result.exit_code == 0, result.output
    return default_root() / "tiny"


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory, tiny_dir: Path) -> Path:
    out = tmp_path_factory.mktemp("bundle") / "autograder.zip"
    result = build("--out", out, "--model", tiny_dir, "--second-model", "none")
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module")
def autograder(bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A fake /autograder: the bundle unpacked and set up (checkpoint baked, nothing installed).

    As root it lives outside the temporary folders, which the sandbox hides from student code
    anyway: like /autograder, only run_autograder's --hide options keep source/ out of sight.
    """
    if AS_ROOT:
        parent = Path(tempfile.mkdtemp(prefix="lab04-autograder-test-", dir="/var/lib"))
        parent.chmod(0o755)  # as open as /autograder: only the sandbox may keep student code out
    else:
        parent = tmp_path_factory.mktemp("autograder")
    try:
        root = unpack(bundle, parent / "autograder")
        done = setup(root)
        assert done.returncode == 0, done.stdout + done.stderr
        yield root
    finally:
        if AS_ROOT:
            shutil.rmtree(parent, ignore_errors=True)


def conf(root: Path) -> dict[str, str]:
    """lab04.conf's values, as bash sees them."""
    script = f'set -a; . "{root}/source/lab04.conf"; env -0'
    pairs = subprocess.run(["env", "-i", "bash", "-c", script], capture_output=True, text=True, check=True).stdout
    return dict(p.split("=", 1) for p in pairs.split("\0") if p.startswith("LAB04_"))


def test_bundle_has_gradescopes_layout_and_is_reproducible(bundle: Path, tiny_dir: Path, tmp_path: Path) -> None:
    """setup.sh and run_autograder at the root, executable; the grader's source without the solution;
    the local checkpoint with its hash in lab04.conf; the same bytes when built again."""
    with zipfile.ZipFile(bundle) as archive:
        infos = {i.filename: i for i in archive.infolist()}
        names = list(infos)
        assert names == sorted(names)
        for script in ("setup.sh", "run_autograder"):
            assert (infos[script].external_attr >> 16) & 0o777 == 0o755, script
            assert infos[script].create_system == 3
            assert archive.read(script).startswith(b"#!/usr/bin/env bash\n")
        assert {i.date_time for i in infos.values()} == {(1980, 1, 1, 0, 0, 0)}
        for name in ("lab04.conf", "points.toml", "constraints.txt", "lab04_grader/pyproject.toml",
                     "lab04_grader/grader/cli.py", "lab04_grader/reference/decoder.py",
                     "models/primary/config.json", "models/primary/model.safetensors"):  # fmt: skip
            assert name in infos, name
        assert "lab04_grader/reference/pretrained.py" not in infos  # the solution stays out of the image
        assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
        constraints = archive.read("constraints.txt").decode()
        assert re.search(r"^torch==\d+\.\d+\.\d+$", constraints, re.MULTILINE), constraints
    root = unpack(bundle, tmp_path / "root")
    values = conf(root)
    assert values["LAB04_MODEL_KIND"] == "dir" and values["LAB04_MODEL"] == "models/primary"
    sha = values["LAB04_MODEL_SHA256"]
    assert sha == _sha256(tiny_dir / "model.safetensors") == _sha256(root / "source/models/primary/model.safetensors")
    assert values["LAB04_SECOND_MODEL_KIND"] == "none"
    assert values["LAB04_GRADER_VERSION"] == __version__
    again = tmp_path / "again.zip"
    assert build("--out", again, "--model", tiny_dir, "--second-model", "none").exit_code == 0
    assert again.read_bytes() == bundle.read_bytes()
    for script in ("setup.sh", "run_autograder"):
        syntax = subprocess.run(["bash", "-n", str(root / "source" / script)], capture_output=True, text=True)
        assert syntax.returncode == 0, syntax.stderr


@pytest.mark.parametrize(
    "pins", [[], ["--revision", FAKE_REVISION], ["--sha256", FAKE_SHA]], ids=["no pins", "revision only", "sha256 only"]
)
def test_hub_model_without_both_pins_is_refused(tmp_path: Path, pins: list[str]) -> None:
    """`--model gpt2` must come with --revision and --sha256: exit 2, one line saying how to find them, no zip."""
    out = tmp_path / "autograder.zip"
    result = build("--out", out, "--model", "gpt2", "--second-model", "none", *pins)
    assert result.exit_code == 2, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.stderr
    assert all(word in errors[0] for word in ("gpt2", "--revision", "--sha256", "model_info")), errors[0]
    assert not out.exists() and not list(tmp_path.iterdir())


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--model", "gpt2", "--revision", "main", "--sha256", FAKE_SHA], "40-hex-digit commit"),
        (["--model", "gpt2", "--revision", FAKE_REVISION, "--sha256", "abc"], "64 hex digits"),
        (["--model", "tiny", "--revision", FAKE_REVISION, "--sha256", FAKE_SHA], "pin a HuggingFace hub model"),
        (["--model", "./no/such/folder"], "no such checkpoint folder"),
        (["--timeout", "200"], "--deadline 540 is too short"),
    ],
    ids=["branch as revision", "short sha256", "pins on a built-in", "missing folder", "deadline below the tiers"],
)
def test_bad_bundle_options_exit_2(tmp_path: Path, args: list[str], expected: str) -> None:
    out = tmp_path / "autograder.zip"
    result = build("--out", out, "--second-model", "none", *args)
    assert result.exit_code == 2, result.output
    assert expected in result.stderr, result.stderr
    assert not out.exists()


def test_hub_model_is_pinned_in_the_bundle(tmp_path: Path) -> None:
    """A pinned hub model ships no weights: lab04.conf tells setup.sh what to download and which hash to demand."""
    out = tmp_path / "autograder.zip"
    result = build("--out", out, "--model", "gpt2", "--revision", FAKE_REVISION, "--sha256", FAKE_SHA.upper(),
                   "--second-model", "none", "--timeout", "30", "--memory-mb", "4096", "--deadline", "600")  # fmt: skip
    assert result.exit_code == 0, result.output
    root = unpack(out, tmp_path / "root")
    values = conf(root)
    assert (values["LAB04_MODEL_KIND"], values["LAB04_MODEL"]) == ("hub", "gpt2")
    assert (values["LAB04_MODEL_REVISION"], values["LAB04_MODEL_SHA256"]) == (FAKE_REVISION, FAKE_SHA)
    assert (values["LAB04_TIMEOUT"], values["LAB04_MEMORY_MB"], values["LAB04_DEADLINE"]) == ("30", "4096", "600")
    assert not (root / "source" / "models").exists()


def test_setup_bakes_builtin_checkpoints_and_checks_their_hash(tmp_path: Path) -> None:
    """The default bundle (built-in tiny and wide): setup.sh builds both offline, and they hash as pinned."""
    out = tmp_path / "autograder.zip"
    result = build("--out", out)
    assert result.exit_code == 0, result.output
    root = unpack(out, tmp_path / "root")
    done = setup(root)
    assert done.returncode == 0, done.stdout + done.stderr
    values = conf(root)
    for prefix, name in (("LAB04_MODEL", "tiny"), ("LAB04_SECOND_MODEL", "wide")):
        assert (values[f"{prefix}_KIND"], values[prefix]) == ("builtin", name)
        baked = root / "lab04" / "checkpoints" / name / "model.safetensors"
        assert _sha256(baked) == values[f"{prefix}_SHA256"], name
    assert done.stdout.count("(as pinned)") == 2, done.stdout


def test_setup_fails_loudly_when_a_checkpoint_differs_from_its_pin(bundle: Path, tmp_path: Path) -> None:
    """Weights that are not the pinned ones stop the image build, with both hashes in the message."""
    root = unpack(bundle, tmp_path / "root")
    weights = root / "source" / "models" / "primary" / "model.safetensors"
    with weights.open("ab") as fh:
        fh.write(b"\0")
    done = setup(root)
    assert done.returncode != 0, done.stdout
    assert "sha256" in done.stderr and conf(root)["LAB04_MODEL_SHA256"] in done.stderr, done.stderr
    assert _sha256(weights) in done.stderr


# ---------------------------------------------------------------- grading with run_autograder


@pytest.mark.slow
@pytest.mark.parametrize(
    ("case", "score", "expected"),
    [
        ("reference", 100, dict.fromkeys(TIER_NAMES, "passed")),
        ("example", 25, {**dict.fromkeys(TIER_NAMES, "failed"), "embedding": "passed", "compare": "passed"}),
        ("template", 0, dict.fromkeys(TIER_NAMES, "failed")),
    ],
)
def test_run_autograder_grades_submissions(autograder: Path, case: str, score: float, expected: dict) -> None:
    """The reference scores 100, the example submission 25, the untouched template 0: valid results each time."""
    submission = {
        "reference": reference_files(),
        "example": REPO / "examples" / "submission",
        "template": REPO / "student_template" / "src",
    }[case]
    results, output = run_autograder(autograder, submission)
    assert results["score"] == score, output
    assert statuses(results) == expected
    assert results["extra_data"]["max_score"] == 100
    assert "grader_failure" not in results["extra_data"]


HOSTILE = """
import os

ROOT = {root!r}


def attempt(what, action):
    try:
        action()
    except Exception as exc:
        print(f"HOSTILE {{what}}: blocked ({{type(exc).__name__}})", flush=True)
    else:
        print(f"HOSTILE {{what}}: succeeded", flush=True)


def read_source():
    with open(os.path.join(ROOT, "source", "lab04.conf")) as fh:
        fh.read()


def write_results():
    with open(os.path.join(ROOT, "results", "results.json"), "w") as fh:
        fh.write('{{"score": 1000, "output": "pwned"}}')


attempt("read source", read_source)
attempt("write results", write_results)
"""


@pytest.mark.slow
@pytest.mark.skipif(not AS_ROOT, reason="hiding paths from student code needs root (as on Gradescope)")
def test_student_code_cannot_read_source_or_write_results(autograder: Path) -> None:
    """A correct solution that, at import, tries to read source/lab04.conf and to write results.json:
    both attempts fail, and the results file is the grader's (100, not the forged 1000)."""
    assert not autograder.is_relative_to(tempfile.gettempdir())  # else the sandbox hides it all anyway
    files = reference_files()
    files["pretrained.py"] += HOSTILE.format(root=str(autograder))
    results, output = run_autograder(autograder, files)
    stdout = results["extra_data"]["student_output"]["stdout"]
    attempts = dict(re.findall(r"HOSTILE (read source|write results): (\w+)", stdout))
    assert attempts == {"read source": "blocked", "write results": "blocked"}, stdout
    assert results["score"] == 100 and "pwned" not in json.dumps(results), output


# ---------------------------------------------------------------- when the grader itself fails


def _fallback_checks(results: dict) -> tuple[str, dict]:
    """A fallback results file: score 0, a message, the details in a hidden test and in extra_data."""
    assert results["score"] == 0
    assert "not a verdict on your code" in results["output"] and "Staff:" in results["output"]
    (staff,) = results["tests"]
    assert staff["visibility"] == "hidden" and staff["max_score"] == 0
    failure = results["extra_data"]["grader_failure"]
    assert failure["reason"] in staff["output"]
    return staff["output"], failure


@pytest.mark.slow
def test_grader_failure_gives_a_valid_fallback(autograder: Path, tmp_path: Path) -> None:
    """The baked checkpoint is gone: `grade` exits 1, and run_autograder still writes valid results for staff."""
    root = tmp_path / "root"
    shutil.copytree(autograder, root, symlinks=True)
    shutil.rmtree(root / "lab04" / "models" / "primary")
    results, _ = run_autograder(root, reference_files())
    staff, failure = _fallback_checks(results)
    assert failure["exit_status"] == "1", failure
    assert "is not a checkpoint directory" in failure["output_tail"] and "is not a checkpoint directory" in staff
    assert str(root) not in results["output"]  # no internal paths in what students see


# What a failing grader might print: quotes, a backslash, a tab, CR, an escape sequence, NUL,
# UTF-8, something that looks like JSON, a traceback line, and bytes that are not UTF-8.
NASTY = b'He said "stop" \\ and left\ttab\r\x1b[31mred\x00 \xc3\xa9t\xc3\xa9 {"score": 100}\nTraceback (most recent call last):\n\xff\xfe not UTF-8\n'

FAKE_GRADERS = {
    # (the fake `grade` script's body, the expected reason, the expected exit status)
    "fails with hostile output": ('cat "$(dirname "$0")/nasty.txt" >&2; exit 3', "exited with status 3", "3"),
    "exits 0 with invalid JSON": (
        'for a in "$@"; do [ "$prev" = --out ] && printf \'{"score": NaN,\' >"$a"; prev=$a; done; exit 0',
        "missing or invalid", "0",
    ),
    "hangs past the deadline": ("echo started; exec sleep 60", "did not finish within the deadline", "124"),
}


@pytest.mark.parametrize("case", list(FAKE_GRADERS))
def test_fallback_is_valid_json_whatever_the_grader_does(autograder: Path, tmp_path: Path, case: str) -> None:
    """A stand-in `grade` that prints quotes, backslashes, control characters and invalid UTF-8, writes
    broken JSON, or hangs: the fallback results file is still valid, and names what happened."""
    body, reason, status = FAKE_GRADERS[case]
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    fake = venv / "bin" / "grade"
    fake.write_text(f"#!/usr/bin/env bash\n{body}\n")
    fake.chmod(0o755)
    (venv / "bin" / "nasty.txt").write_bytes(NASTY)
    root = tmp_path / "root"
    (root / "source").mkdir(parents=True)
    shutil.copy2(autograder / "run_autograder", root / "run_autograder")
    shutil.copy2(autograder / "source" / "lab04.conf", root / "source" / "lab04.conf")
    if case == "hangs past the deadline":
        with (root / "source" / "lab04.conf").open("a") as fh:
            fh.write("LAB04_DEADLINE=2\n")
    results, output = run_autograder(root, {"pretrained.py": "X = 1\n"}, venv=venv)
    staff, failure = _fallback_checks(results)
    assert reason in failure["reason"] and failure["exit_status"] == status, failure
    assert "warning" not in output, output  # bash had nothing to complain about (NUL bytes, say)
    if case == "fails with hostile output":
        assert 'He said "stop" \\ and left' in failure["output_tail"]
        assert '{"score": 100}' in staff and "not UTF-8" in staff
