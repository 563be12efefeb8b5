"""The Gradescope bundle, simulated locally: build the zip, unpack it into a temporary
AUTOGRADER_ROOT as Gradescope would, run its setup.sh and run_autograder, and validate every
results.json against Gradescope's documented format (tests/schemas/).

setup.sh runs with LAB04_VENV set to this test's own virtualenv, so it installs nothing (no
apt, no pip, no network) but checks the venv against the bundle's lock and bakes and checks
the checkpoints exactly as on Gradescope. As root (as on Gradescope, and in CI) the fake
/autograder lives under /var/lib, where the grader itself can reach it. A default Docker
container refuses namespaces; ``DOCKER_LIKE`` reproduces that (a seccomp filter that fails
unshare(2) with EPERM, and no CAP_SYS_ADMIN) around setup.sh and run_autograder.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import jsonschema
import nbformat
import pytest
from click.testing import CliRunner, Result
from conftest import DOCKER_LIKE
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from grader import __version__
from grader.cli import main
from grader.grading.tiers import TIER_NAMES
from lab04_checks.checkpoints import default_root

REPO = Path(__file__).resolve().parents[1]
SCHEMA = json.loads((REPO / "tests" / "schemas" / "gradescope_results.schema.json").read_text())
VENV = Path(sys.prefix)  # the virtualenv running these tests, with the grader installed
FAKE_REVISION = "0123456789abcdef0123456789abcdef01234567"
FAKE_SHA = "ab" * 32
AS_ROOT = os.geteuid() == 0  # as on Gradescope: only then does the sandbox switch users


def build(*args: str | Path) -> Result:
    return CliRunner().invoke(main, ["gradescope", "build", *(str(a) for a in args)])


def strict_json(text: str) -> dict:
    """Parse as Gradescope would: NaN and Infinity are not JSON."""

    def refuse(name: str) -> None:
        raise ValueError(f"{name} is not valid JSON")

    return json.loads(text, parse_constant=refuse)


def validate(results: dict, schema: dict = SCHEMA) -> None:
    errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(results), key=str)
    assert not errors, "results.json does not follow the documented format:\n" + "\n".join(e.message for e in errors)


def unpack(bundle: Path, root: Path) -> Path:
    """What Gradescope does with the zip: extract it into source/ (modes kept), copy run_autograder up."""
    source = root / "source"
    with zipfile.ZipFile(bundle) as archive:
        archive.extractall(source)
        for info in archive.infolist():
            (source / info.filename).chmod((info.external_attr >> 16) & 0o777 or 0o644)
    shutil.copy2(source / "run_autograder", root / "run_autograder")
    return root


def wrapped(command: list[str], docker_like: bool, tmp: Path) -> list[str]:
    if not docker_like:
        return command
    (tmp / "docker_like.py").write_text(DOCKER_LIKE)
    return [sys.executable, "-I", str(tmp / "docker_like.py"), *command]


def setup(root: Path, docker_like: bool = False) -> subprocess.CompletedProcess:
    command = wrapped(["bash", str(root / "source" / "setup.sh")], docker_like, root.parent)
    return subprocess.run(
        command,
        env={**os.environ, "AUTOGRADER_ROOT": str(root), "LAB04_VENV": str(VENV)},
        capture_output=True,
        text=True,
        timeout=300,
    )


def put(target: Path, submission: Path | dict[str, str]) -> None:
    """A submission folder: a copy of ``submission``, or the files it maps to their text."""
    shutil.rmtree(target, ignore_errors=True)
    if isinstance(submission, Path):
        shutil.copytree(submission, target)
        return
    for name, text in submission.items():
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        (target / name).write_text(text)


def run_autograder(
    root: Path,
    submission: Path | dict[str, str],
    venv: Path = VENV,
    docker_like: bool = False,
    keep_results: bool = False,
) -> tuple[dict, str]:
    """Grade ``submission`` with the unpacked bundle; the validated results and run_autograder's output."""
    put(root / "submission", submission)
    if not keep_results:
        shutil.rmtree(root / "results", ignore_errors=True)
    command = wrapped(["bash", str(root / "run_autograder")], docker_like, root.parent)
    done = subprocess.run(
        command,
        env={**os.environ, "AUTOGRADER_ROOT": str(root), "LAB04_VENV": str(venv)},
        capture_output=True,
        text=True,
        errors="replace",
        timeout=600,
    )
    output = done.stdout + done.stderr
    for aside in re.findall(r"not a regular file; moved it to (\S+)", output):
        shutil.rmtree(aside, ignore_errors=True)  # what run_autograder moved out of the way
    assert done.returncode == 0, output
    results_file = root / "results" / "results.json"
    assert results_file.is_file() and not results_file.is_symlink(), f"no results.json file:\n{output}"
    results = strict_json(results_file.read_text(encoding="utf-8"))
    validate(results)
    return results, output


def statuses(results: dict) -> dict[str, str]:
    return {t["tags"][0]: t["tags"][1] for t in results["tests"]}


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def reference_files() -> dict[str, str]:
    return {name: (REPO / "reference" / name).read_text() for name in ("pretrained.py", "decoder.py")}


def conf(root: Path) -> dict[str, str]:
    """lab04.conf's values, as bash sees them."""
    script = f'set -a; . "{root}/source/lab04.conf"; env -0'
    pairs = subprocess.run(["env", "-i", "bash", "-c", script], capture_output=True, text=True, check=True).stdout
    return dict(p.split("=", 1) for p in pairs.split("\0") if p.startswith("LAB04_"))


def fake_root(tmp_path: Path) -> Path:
    """A folder for a fake /autograder that the grader can reach when it runs as root (not under /tmp)."""
    if not AS_ROOT:
        return tmp_path
    parent = Path(tempfile.mkdtemp(prefix="lab04-autograder-test-", dir="/var/lib"))
    parent.chmod(0o755)  # as open as /autograder: only the sandbox may keep student code out
    return parent


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
    result = build(
        "--out",
        out,
        "--model",
        tiny_dir,
        "--second-model",
        "none",
        "--leaderboard",
        "--tier-visibility",
        "generate=after_due_date",
        "--tier-visibility",
        "weights=hidden",
    )
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module")
def autograder(bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A fake /autograder: the bundle unpacked and set up (checkpoints baked, nothing installed)."""
    parent = fake_root(tmp_path_factory.mktemp("autograder"))
    try:
        root = unpack(bundle, parent / "autograder")
        done = setup(root)
        assert done.returncode == 0, done.stdout + done.stderr
        yield root
    finally:
        if AS_ROOT:
            shutil.rmtree(parent, ignore_errors=True)


def test_bundle_has_gradescopes_layout_and_is_reproducible(bundle: Path, tiny_dir: Path, tmp_path: Path) -> None:
    """setup.sh and run_autograder at the root, executable; the grader's source (lab04_checks too) without the
    solution; the local checkpoint with its hash in lab04.conf; the same bytes when built again."""
    with zipfile.ZipFile(bundle) as archive:
        infos = {i.filename: i for i in archive.infolist()}
        names = list(infos)
        assert names == sorted(names)
        for script in ("setup.sh", "run_autograder"):
            assert (infos[script].external_attr >> 16) & 0o777 == 0o755, script
            assert infos[script].create_system == 3
            assert archive.read(script).startswith(b"#!/usr/bin/env bash\n")
        assert {i.date_time for i in infos.values()} == {(1980, 1, 1, 0, 0, 0)}
        for name in (
            "lab04.conf",
            "points.toml",
            "constraints.txt",
            "lab04_grader/pyproject.toml",
            "lab04_grader/grader/cli.py",
            "lab04_grader/grader/sandbox/inside/lab04_zygote.py",
            "lab04_grader/lab04_checks/checkpoints.py",
            "lab04_grader/reference/decoder.py",
            "models/primary/config.json",
            "models/primary/model.safetensors",
        ):
            assert name in infos, name
        assert "lab04_grader/reference/pretrained.py" not in infos  # the solution stays out of the image
        assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    root = unpack(bundle, tmp_path / "root")
    values = conf(root)
    assert values["LAB04_MODEL_KIND"] == "dir" and values["LAB04_MODEL"] == "models/primary"
    sha = values["LAB04_MODEL_SHA256"]
    assert sha == _sha256(tiny_dir / "model.safetensors") == _sha256(root / "source/models/primary/model.safetensors")
    assert values["LAB04_SECOND_MODEL_KIND"] == "none"
    assert (values["LAB04_FUNCTION_MODEL_KIND"], values["LAB04_FUNCTION_MODEL"]) == ("builtin", "tiny")
    assert values["LAB04_GRADER_VERSION"] == __version__
    assert values["LAB04_PYTHON"] == f"{sys.version_info.major}.{sys.version_info.minor}"
    again = tmp_path / "again.zip"
    assert (
        build(
            "--out",
            again,
            "--model",
            tiny_dir,
            "--second-model",
            "none",
            "--leaderboard",
            "--tier-visibility",
            "generate=after_due_date",
            "--tier-visibility",
            "weights=hidden",
        ).exit_code
        == 0
    )
    assert again.read_bytes() == bundle.read_bytes()
    for script in ("setup.sh", "run_autograder"):
        syntax = subprocess.run(["bash", "-n", str(root / "source" / script)], capture_output=True, text=True)
        assert syntax.returncode == 0, syntax.stderr


def _pins(bundle: Path) -> dict[str, str]:
    with zipfile.ZipFile(bundle) as archive:
        lines = archive.read("constraints.txt").decode().splitlines()
    return dict(line.split("==") for line in lines if line and not line.startswith("#"))


def test_constraints_lock_every_distribution_the_grader_needs(bundle: Path) -> None:
    """constraints.txt pins each installed distribution at the version running here, torch as the CPU build;
    it is closed under requirements, and only the dev tools of `pip freeze` are left out."""
    pins = _pins(bundle)
    torch = metadata.version("torch")
    assert pins.pop("torch") == f"{torch.split('+')[0]}+cpu"
    for name, version in pins.items():
        assert metadata.version(name) == version, name
    pinned = set(pins) | {"torch"}
    for name in pinned:
        for text in metadata.distribution(name).requires or []:
            requirement = Requirement(text)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                assert canonicalize_name(requirement.name) in pinned, f"{name} needs {requirement.name}: not pinned"
    freeze = subprocess.run(
        [sys.executable, "-m", "pip", "freeze", "--exclude-editable"], capture_output=True, text=True, check=True
    ).stdout
    frozen = {canonicalize_name(line.split("==")[0]) for line in freeze.splitlines() if "==" in line}
    assert frozen - pinned <= {"ruff"}, frozen - pinned  # ruff is the dev extra, not needed to grade


def test_bundle_source_builds_a_complete_wheel(bundle: Path, tmp_path: Path) -> None:
    """What setup.sh installs: lab04_grader/ builds a wheel with every package and the sandbox's files,
    the reference decoder, and never the reference solution."""
    root = unpack(bundle, tmp_path / "root")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path / "wheel"),
            str(root / "source" / "lab04_grader"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    (wheel,) = (tmp_path / "wheel").glob("lab04_grader-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for name in (
        "grader/cli.py",
        "grader/grading/engine.py",
        "grader/sandbox/inside/lab04_agent.py",
        "grader/sandbox/inside/standins/torch/__init__.py",
        "grader/points.toml",
        "grader/artifacts/gradescope_files/run_autograder",
        "lab04_checks/notebook.py",
        "reference/decoder.py",
    ):
        assert name in names, name
    assert "reference/pretrained.py" not in names


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
        (["--function-model", "gpt2"], "a built-in checkpoint or a local folder"),
        (["--tier-visibility", "logits=secret"], "TIER=VISIBILITY"),
        (["--tier-visibility", "nosuchtier=hidden"], "TIER=VISIBILITY"),
        (["--visibility", "sometimes"], "'sometimes' is not one of"),
        (["--output-format", "html"], "'html' is not one of"),
    ],
    ids=[
        "branch as revision",
        "short sha256",
        "pins on a built-in",
        "missing folder",
        "deadline below the tiers",
        "hub function model",
        "unknown visibility",
        "unknown tier",
        "bad default visibility",
        "bad format",
    ],
)
def test_bad_bundle_options_exit_2(tmp_path: Path, args: list[str], expected: str) -> None:
    out = tmp_path / "autograder.zip"
    result = build("--out", out, "--second-model", "none", *args)
    assert result.exit_code == 2, result.output
    assert expected in result.stderr, result.stderr
    assert not out.exists()


def test_hub_model_and_presentation_are_written_to_lab04_conf(tmp_path: Path) -> None:
    """A pinned hub model ships no weights (lab04.conf says what to download and which hash to demand), and
    the presentation options are stored for run_autograder."""
    out = tmp_path / "autograder.zip"
    result = build(
        "--out",
        out,
        "--model",
        "gpt2",
        "--revision",
        FAKE_REVISION,
        "--sha256",
        FAKE_SHA.upper(),
        "--second-model",
        "none",
        "--timeout",
        "30",
        "--memory-mb",
        "4096",
        "--deadline",
        "600",
        "--output-format",
        "md",
        "--visibility",
        "after_published",
        "--stdout-visibility",
        "visible",
        "--tier-visibility",
        "logits=hidden",
        "--tier-visibility",
        "generate=after_due_date",
    )
    assert result.exit_code == 0, result.output
    values = conf(unpack(out, tmp_path / "root"))
    assert (values["LAB04_MODEL_KIND"], values["LAB04_MODEL"]) == ("hub", "gpt2")
    assert (values["LAB04_MODEL_REVISION"], values["LAB04_MODEL_SHA256"]) == (FAKE_REVISION, FAKE_SHA)
    assert (values["LAB04_TIMEOUT"], values["LAB04_MEMORY_MB"], values["LAB04_DEADLINE"]) == ("30", "4096", "600")
    assert (
        values["LAB04_OUTPUT_FORMAT"],
        values["LAB04_VISIBILITY"],
        values["LAB04_STDOUT_VISIBILITY"],
        values["LAB04_TIER_VISIBILITY"],
        values["LAB04_LEADERBOARD"],
    ) == ("md", "after_published", "visible", "logits=hidden generate=after_due_date", "0")
    assert not (tmp_path / "root" / "source" / "models").exists()


def test_setup_bakes_builtin_checkpoints_and_checks_their_hash(tmp_path: Path) -> None:
    """The default bundle (built-in tiny and wide): setup.sh checks the venv against the lock, builds both
    checkpoints offline (and the function one), and they hash as pinned."""
    out = tmp_path / "autograder.zip"
    assert build("--out", out).exit_code == 0
    root = unpack(out, tmp_path / "root")
    done = setup(root)
    assert done.returncode == 0, done.stdout + done.stderr
    values = conf(root)
    for prefix, name in (("LAB04_MODEL", "tiny"), ("LAB04_SECOND_MODEL", "wide"), ("LAB04_FUNCTION_MODEL", "tiny")):
        assert (values[f"{prefix}_KIND"], values[prefix]) == ("builtin", name)
        assert _sha256(root / "lab04" / "checkpoints" / name / "model.safetensors") == values[f"{prefix}_SHA256"]
    assert done.stdout.count("(as pinned)") == 3 and "every pin holds" in done.stdout, done.stdout


@pytest.mark.parametrize("broken", ["weights", "lock"])
def test_setup_fails_loudly_when_the_image_differs_from_the_bundle(bundle: Path, tmp_path: Path, broken: str) -> None:
    """Weights that are not the pinned ones, or a venv that is not the locked one, stop the image build, and
    the message names both sides."""
    root = unpack(bundle, tmp_path / "root")
    if broken == "weights":
        weights = root / "source" / "models" / "primary" / "model.safetensors"
        with weights.open("ab") as fh:
            fh.write(b"\0")
        expected = [conf(root)["LAB04_MODEL_SHA256"], _sha256(weights)]
    else:
        lock = root / "source" / "constraints.txt"
        lock.write_text(re.sub(r"^numpy==.*$", "numpy==1.0.0", lock.read_text(), flags=re.MULTILINE))
        expected = ["numpy: pinned 1.0.0, installed " + metadata.version("numpy"), "constraints.txt"]
    done = setup(root)
    assert done.returncode != 0, done.stdout
    assert all(text in done.stderr for text in expected), done.stderr


def test_grade_run_refuses_bad_presentation_options(tmp_path: Path) -> None:
    """`grade run` checks --tier-visibility before grading (exit 2), and the presentation options, which
    shape one results.json, are refused in batch mode (exit 2): nothing is written."""
    submission = REPO / "reference"
    bad = CliRunner().invoke(
        main, ["run", str(submission), "--out", str(tmp_path / "r.json"), "--tier-visibility", "logits=sometimes"]
    )
    assert bad.exit_code == 2 and "TIER=VISIBILITY" in bad.stderr, bad.output
    batch = CliRunner().invoke(
        main, ["run", str(REPO / "examples"), "--out", str(tmp_path / "reports"), "-j", "1", "--leaderboard"]
    )
    assert batch.exit_code == 2 and "batch mode" in batch.stderr, batch.output
    assert not list(tmp_path.iterdir())


@pytest.mark.slow
def test_grade_run_applies_the_presentation_options(tmp_path: Path) -> None:
    """`grade SUB --out results.json` with Markdown, a default and a per-tier visibility, stdout visibility and
    the leaderboard: exit 0, then a results.json that says all of it and follows Gradescope's format."""
    out = tmp_path / "results.json"
    result = CliRunner().invoke(
        main,
        [
            str(REPO / "reference"),
            "--out",
            str(out),
            "-q",
            "--output-format",
            "md",
            "--visibility",
            "after_due_date",
            "--tier-visibility",
            "logits=visible",
            "--stdout-visibility",
            "visible",
            "--leaderboard",
        ],
    )
    assert result.exit_code == 0, result.output
    results = strict_json(out.read_text())
    validate(results)
    assert (results["output_format"], results["visibility"], results["stdout_visibility"]) == (
        "md",
        "after_due_date",
        "visible",
    )
    assert {t["tags"][0]: t["visibility"] for t in results["tests"]} == {
        **dict.fromkeys(TIER_NAMES, "after_due_date"),
        "logits": "visible",
    }
    assert all(t["output_format"] == "md" and t["output"].startswith("**passed**") for t in results["tests"])
    assert results["leaderboard"][0]["order"] == "asc" and results["score"] == 100


# ---------------------------------------------------------------- grading with run_autograder


@pytest.mark.slow
def test_run_autograder_grades_the_reference_with_the_bundles_presentation(autograder: Path) -> None:
    """The reference: 100, every tier passed, the tier visibilities and the leaderboard of the bundle."""
    results, output = run_autograder(autograder, reference_files())
    assert results["score"] == 100, output
    assert statuses(results) == dict.fromkeys(TIER_NAMES, "passed")
    assert results["extra_data"]["max_score"] == 100 and "grader_failure" not in results["extra_data"]
    visibility = {t["tags"][0]: t["visibility"] for t in results["tests"]}
    assert visibility == {**dict.fromkeys(TIER_NAMES, "visible"), "generate": "after_due_date", "weights": "hidden"}
    (board,) = results["leaderboard"]
    assert board["order"] == "asc" and board["value"] == results["extra_data"]["tiers"]["logits"]["max_diff"] < 1e-3


@pytest.mark.slow
def test_run_autograder_names_the_stubs_of_the_untouched_template(autograder: Path) -> None:
    """The template as handed out: 0 points, and the feedback says the stubs raise NotImplementedError."""
    results, output = run_autograder(autograder, REPO / "student_template")
    assert results["score"] == 0, output
    assert "passed" not in statuses(results).values()
    assert "NotImplementedError" in results["output"] and "NotImplementedError" in results["tests"][0]["output"]


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


def hostile_attempts(results: dict) -> dict[str, str]:
    stdout = results["extra_data"]["student_output"]["stdout"]
    return dict(re.findall(r"HOSTILE (read source|write results): (\w+)", stdout))


@pytest.mark.slow
@pytest.mark.skipif(not AS_ROOT, reason="the sandbox switches users only as root (as on Gradescope)")
def test_student_code_cannot_read_source_or_write_results(autograder: Path) -> None:
    """A correct solution that, at import, tries to read source/lab04.conf and to write results.json: its
    allow-list root holds neither, and the results file is the grader's (100, not the forged 1000)."""
    files = reference_files()
    files["pretrained.py"] += HOSTILE.format(root=str(autograder))
    results, output = run_autograder(autograder, files)
    assert hostile_attempts(results) == {"read source": "blocked", "write results": "blocked"}, output
    assert results["score"] == 100 and "pwned" not in json.dumps(results), output


@pytest.mark.slow
@pytest.mark.skipif(not AS_ROOT or platform.machine() not in ("x86_64", "aarch64"), reason="needs root and seccomp")
def test_without_namespaces_grading_still_works_and_says_so(bundle: Path, tmp_path: Path) -> None:
    """As in a default Docker container (unshare refused, no CAP_SYS_ADMIN): setup.sh and run_autograder
    succeed; the student-facing output carries the reduced-isolation line (its own line in Markdown), staff
    get the reasons in extra_data.sandbox; and source/ and results/ stay closed to the student's user."""
    parent = fake_root(tmp_path)
    try:
        out = parent / "md.zip"
        assert (
            build(
                "--out", out, "--model", default_root() / "tiny", "--second-model", "none", "--output-format", "md"
            ).exit_code
            == 0
        )
        root = unpack(out, parent / "autograder")
        done = setup(root, docker_like=True)
        assert done.returncode == 0 and "namespaces: refused here" in done.stdout, done.stdout + done.stderr
        files = reference_files()
        files["pretrained.py"] += HOSTILE.format(root=str(root))
        results, output = run_autograder(root, files, docker_like=True)
    finally:
        if AS_ROOT:
            shutil.rmtree(parent, ignore_errors=True)
    sandbox = results["extra_data"]["sandbox"]
    assert any("namespaces" in reason and "refused" in reason for reason in sandbox["unavailable"]), sandbox
    lines = results["output"].split("\n")
    assert sandbox["student_warning"] + "  " in lines and results["output_format"] == "md", results["output"]
    assert "unshare" not in results["output"]  # the reasons are for staff
    assert hostile_attempts(results) == {"read source": "blocked", "write results": "blocked"}, output
    assert results["tests"][0]["status"] == "passed", results["tests"][0]  # student code did run


@pytest.mark.slow
def test_chapter_folder_is_one_submission_with_a_results_file(autograder: Path) -> None:
    """The course's chapter folder (Lab 03's decoder beside Lab 04's loader, a notebook in each) is graded as
    one submission, with the Lab 03 GPTModel, into one results.json file: never batch mode."""
    reference = reference_files()
    notebook = nbformat.writes(nbformat.v4.new_notebook())
    results, output = run_autograder(
        autograder,
        {
            "lab03_decoder_transformer/src/decoder.py": reference["decoder.py"],
            "lab03_decoder_transformer/lab03.ipynb": notebook,
            "lab04_pretrained_weights/src/pretrained.py": reference["pretrained.py"],
            "lab04_pretrained_weights/lab04.ipynb": notebook,
        },
    )
    assert results["score"] == 100, output
    submission = results["extra_data"]["submission"]
    assert submission["module"] == "lab04_pretrained_weights/src/pretrained.py", submission
    assert "lab03_decoder_transformer" in results["extra_data"]["decoder"], results["extra_data"]["decoder"]
    assert sorted(p.name for p in (autograder / "results").iterdir()) == ["results.json"]


@pytest.mark.slow
def test_a_folder_where_results_json_goes_still_ends_as_a_file(autograder: Path) -> None:
    """Something made results/results.json a folder before grading: it is moved aside, and the grader's
    results are a regular file."""
    blocker = autograder / "results" / "results.json"
    shutil.rmtree(autograder / "results", ignore_errors=True)
    (blocker / "inside").mkdir(parents=True)
    results, output = run_autograder(autograder, reference_files(), keep_results=True)
    assert results["score"] == 100 and "not a regular file" in output, output


def filled_template(folder: Path) -> Path:
    """The template folder as a student zips it: lab04.ipynb completed with the reference's functions,
    src/pretrained.py still the untouched stubs."""
    shutil.copytree(REPO / "student_template", folder)
    nb = nbformat.read(folder / "lab04.ipynb", as_version=4)
    solution = (REPO / "reference" / "pretrained.py").read_text()
    given = next(i for i, c in enumerate(nb.cells) if c.cell_type == "code" and "class GPTModel" in c.source)
    cells = [c for c in nb.cells if c.cell_type != "code" or "class GPTModel" in c.source or "__main__" in c.source]
    at = cells.index(nb.cells[given]) + 1  # the stub cells give way to one cell: the reference, after GPTModel
    nb.cells = [*cells[:at], nbformat.v4.new_code_cell(solution), *cells[at:]]
    nbformat.write(nb, folder / "lab04.ipynb")
    assert "raise NotImplementedError" in (folder / "src" / "pretrained.py").read_text()
    return folder


@pytest.mark.slow
def test_a_completed_notebook_beside_untouched_stubs_is_graded(autograder: Path, tmp_path: Path) -> None:
    """The zipped template folder (as Gradescope unpacks it) with a completed notebook and the untouched
    src/pretrained.py: the notebook is graded (100), and the report says why."""
    submission = tmp_path / "submission"
    filled_template(submission / "student_template")
    results, output = run_autograder(autograder, submission)
    assert results["score"] == 100, output
    info = results["extra_data"]["submission"]
    assert info["kind"] == "folder with a notebook" and "template's stubs" in " ".join(info["notes"]), info


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
    root = fake_root(tmp_path) / "root"
    try:
        shutil.copytree(autograder, root, symlinks=True)
        shutil.rmtree(root / "lab04" / "models" / "primary")
        results, _ = run_autograder(root, reference_files())
    finally:
        if AS_ROOT:
            shutil.rmtree(root.parent, ignore_errors=True)
    staff, failure = _fallback_checks(results)
    assert failure["exit_status"] == "1", failure
    assert "is not a checkpoint directory" in failure["output_tail"] and "is not a checkpoint directory" in staff
    assert str(root) not in results["output"]  # no internal paths in what students see


# What a failing grader might print: quotes, a backslash, a tab, CR, an escape sequence, NUL,
# UTF-8, something that looks like JSON, a traceback line, and bytes that are not UTF-8.
NASTY = b'He said "stop" \\ and left\ttab\r\x1b[31mred\x00 \xc3\xa9t\xc3\xa9 {"score": 100}\nTraceback (most recent call last):\n\xff\xfe not UTF-8\n'
AT_OUT = 'for a in "$@"; do [ "$prev" = --out ] && out=$a; prev=$a; done; '
FAKE_GRADERS = {
    # (the fake `grade` script's body, the expected reason, the expected exit status)
    "fails with hostile output": ('cat "$(dirname "$0")/nasty.txt" >&2; exit 3', "exited with status 3", "3"),
    "exits 0 with invalid JSON": (AT_OUT + 'printf \'{"score": NaN,\' >"$out"; exit 0', "missing or invalid", "0"),
    "makes results.json a folder": (AT_OUT + 'mkdir -p "$out/x"; exit 0', "missing or invalid", "0"),
    "hangs past the deadline": ("echo started; exec sleep 60", "did not finish within the deadline", "124"),
}


@pytest.mark.parametrize("case", list(FAKE_GRADERS))
def test_fallback_is_valid_json_whatever_the_grader_does(autograder: Path, tmp_path: Path, case: str) -> None:
    """A stand-in `grade` that prints quotes, backslashes, control characters and invalid UTF-8, writes
    broken JSON, leaves a folder where results.json goes, or hangs: the fallback results file is still a
    valid regular file, and names what happened."""
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
