"""The `grade` command: exit codes (0 graded, 1 grader cannot work, 2 bad usage), report, summary, subcommands."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from conftest import REPO, make_submission, reference_files

from grader.cli import main
from grader.lab.checkpoints import default_root

TIER_NAMES = ("mapping", "shapes", "embedding", "logits", "compare")
FAST = ["--second-model", "none"]  # one checkpoint is enough to test the command line


def invoke(*args: str | Path) -> Result:
    """Run `grade ARGS...` in-process, stdout and stderr kept apart."""
    return CliRunner().invoke(main, [str(a) for a in args])


def error_line(result: Result) -> str:
    """The one-line reason on stderr: exactly one 'Error:' line, and it is the last line."""
    assert "Traceback" not in result.output, result.output
    assert isinstance(result.exception, SystemExit), f"uncaught {result.exception!r}"
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("Error:")]
    assert len(errors) == 1 and lines[-1] == errors[0], result.stderr
    return errors[0]


@pytest.fixture
def simple_submission(tmp_path: Path) -> Path:
    """A folder with a pretrained.py, for commands that stop before grading."""
    return make_submission(tmp_path / "simple", {"pretrained.py": "X = 1\n"})


@pytest.fixture
def unusable_submission(tmp_path: Path) -> Path:
    """A folder without pretrained.py: graded quickly (no student process), every tier an error."""
    return make_submission(tmp_path / "unusable", {"notes.txt": "forgot the code\n"})


# ---------------------------------------------------------------- help


@pytest.mark.parametrize("args", [["--help"], ["run", "--help"]], ids=["grade --help", "grade run --help"])
def test_help_documents_usage_options_and_exit_codes(args: list[str]) -> None:
    """Help names SUBMISSION, --out, --model, --timeout, and what exit codes 0, 1 and 2 mean."""
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    text = " ".join(result.stdout.split())
    missing = [word for word in ("SUBMISSION", "--out", "--model", "--timeout") if word not in text]
    assert not missing, f"{' '.join(args)} does not mention {missing}:\n{result.stdout}"
    found = re.search(r"exit code", text, re.IGNORECASE)
    assert found, f"{' '.join(args)} does not explain the exit codes:\n{result.stdout}"
    meaning = text[found.start() : found.start() + 300]
    for code in ("0", "1", "2"):
        assert re.search(rf"\b{code}\b", meaning), f"exit code {code} is not explained: {meaning!r}"


# ---------------------------------------------------------------- grading (exit 0)


@pytest.mark.slow
def test_grading_the_reference_exits_0_with_report_and_summary(tmp_path: Path) -> None:
    """The reference gets 100: exit 0, a valid results.json, and a summary table of the five tiers."""
    submission = make_submission(tmp_path / "ref", reference_files())
    out = tmp_path / "results.json"
    result = invoke(submission, "--out", out, *FAST)
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["score"] == 100 and report["extra_data"]["max_score"] == 100
    assert [t["status"] for t in report["tests"]] == ["passed"] * 5
    assert set(report["extra_data"]["tiers"]) == set(TIER_NAMES)
    assert "100/100" in result.stdout
    table = result.stdout.splitlines()
    for name in TIER_NAMES:
        assert any(re.match(rf"\s+{name}\s+passed\s", line) for line in table), f"no row for {name}:\n{result.stdout}"
    assert f"Report written to {out}" in result.stdout


@pytest.mark.slow
def test_broken_submission_still_exits_0_with_a_report(tmp_path: Path) -> None:
    """A syntax error is the student's problem, not the grader's: exit 0 and a report scoring 0."""
    submission = make_submission(tmp_path / "broken", {"pretrained.py": "def get_weight_mapping(:\n    pass\n"})
    out = tmp_path / "results.json"
    result = invoke(submission, "--out", out, *FAST)
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["score"] == 0
    tiers = report["extra_data"]["tiers"]
    assert all(tiers[name]["status"] == "error" for name in TIER_NAMES), tiers
    assert "SyntaxError" in tiers["mapping"]["detail"]
    assert "0/100" in result.stdout


def test_custom_points_change_max_score(tmp_path: Path, unusable_submission: Path) -> None:
    """--points with mapping = 50 (the rest default) makes the report out of 130."""
    points = tmp_path / "points.toml"
    points.write_text("mapping = 50\n")
    out = tmp_path / "results.json"
    result = invoke(unusable_submission, "--out", out, "--points", points, *FAST)
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["extra_data"]["max_score"] == 130
    maxima = {name: tier["max_score"] for name, tier in report["extra_data"]["tiers"].items()}
    assert maxima == {"mapping": 50, "shapes": 20, "embedding": 10, "logits": 35, "compare": 15}
    assert [t["max_score"] for t in report["tests"]] == [50, 20, 10, 35, 15]
    assert "0/130" in result.stdout


@pytest.mark.parametrize("form", ["default", "options first"])
def test_default_command_is_run(tmp_path: Path, unusable_submission: Path, form: str) -> None:
    """`grade SUB --out X` (or `grade --out X SUB`) does exactly what `grade run SUB --out X` does."""
    with_run, without_run = tmp_path / "with_run.json", tmp_path / "without_run.json"
    explicit = invoke("run", unusable_submission, "--out", with_run, *FAST)
    args = (
        [unusable_submission, "--out", without_run]
        if form == "default"
        else ["--out", without_run, unusable_submission]
    )
    implicit = invoke(*args, *FAST)
    assert explicit.exit_code == 0, explicit.output
    assert implicit.exit_code == 0, implicit.output

    def comparable(path: Path) -> dict:
        report = json.loads(path.read_text())
        report.pop("execution_time")
        report["extra_data"].pop("resources", None)  # peak memory and timings vary from run to run
        return report

    assert comparable(without_run) == comparable(with_run)
    assert comparable(without_run)["extra_data"]["submission"]["problem"]

    def table(result: Result, out: Path) -> list[str]:
        return [line for line in result.stdout.replace(str(out), "OUT").splitlines() if "Report written" not in line]

    assert table(implicit, without_run) == table(explicit, with_run)


# ---------------------------------------------------------------- bad usage (exit 2)


BAD_POINTS = {
    "unknown tier": ("bogus = 3\n", "unknown tiers ['bogus']"),
    "negative": ("mapping = -5\n", "mapping must be a number >= 0"),
    "not a number": ('mapping = "ten"\n', "mapping must be a number >= 0"),
    "not TOML": ("mapping = = 3\n[[[\n", "cannot read the points file"),
}


@pytest.mark.parametrize("case", list(BAD_POINTS))
def test_bad_points_file_exits_2(tmp_path: Path, simple_submission: Path, case: str) -> None:
    """A points file with an unknown tier, a negative or non-numeric value, or broken TOML: exit 2, one line."""
    text, expected = BAD_POINTS[case]
    points = tmp_path / "points.toml"
    points.write_text(text)
    out = tmp_path / "results.json"
    result = invoke(simple_submission, "--out", out, "--points", points)
    assert result.exit_code == 2, result.output
    line = error_line(result)
    assert expected in line and str(points) in line
    assert not out.exists()


@pytest.mark.parametrize(
    "case",
    ["unknown option", "missing submission", "timeout 0", "negative timeout", "points file missing"],
)
def test_bad_usage_exits_2(tmp_path: Path, simple_submission: Path, case: str) -> None:
    """Unknown options, a nonexistent SUBMISSION, an invalid --timeout: exit 2 with a one-line message."""
    out = tmp_path / "results.json"
    args, expected = {
        "unknown option": ([simple_submission, "--out", out, "--frobnicate"], "--frobnicate"),
        "missing submission": ([tmp_path / "nowhere", "--out", out], "SUBMISSION"),
        "timeout 0": ([simple_submission, "--out", out, "--timeout", "0"], "--timeout"),
        "negative timeout": ([simple_submission, "--out", out, "--timeout", "-3"], "--timeout"),
        "points file missing": ([simple_submission, "--out", out, "--points", tmp_path / "none.toml"], "--points"),
    }[case]
    result = invoke(*args)
    assert result.exit_code == 2, result.output
    assert expected in error_line(result)
    assert not out.exists()


# ---------------------------------------------------------------- the grader cannot work (exit 1)


def _empty_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "empty_model"
    folder.mkdir()
    return folder


def _corrupt_config(tmp_path: Path) -> Path:
    folder = tmp_path / "corrupt_config"
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "gpt2", ')
    shutil.copy(default_root() / "tiny" / "model.safetensors", folder / "model.safetensors")
    return folder


def _corrupt_weights(tmp_path: Path) -> Path:
    folder = tmp_path / "corrupt_weights"
    folder.mkdir()
    shutil.copy(default_root() / "tiny" / "config.json", folder / "config.json")
    (folder / "model.safetensors").write_bytes(b"\0" * 64)
    return folder


UNREADABLE_MODELS = {
    "empty folder": (_empty_dir, "has no model.safetensors"),
    "corrupt config.json": (_corrupt_config, "cannot read the model config"),
    "corrupt weights": (_corrupt_weights, "cannot load the checkpoint"),
}


@pytest.mark.parametrize(
    ("case", "usable"),
    [(case, False) for case in UNREADABLE_MODELS] + [("empty folder", True)],
    ids=[*UNREADABLE_MODELS, "empty folder, student process started"],
)
def test_unreadable_model_exits_1(
    tmp_path: Path, simple_submission: Path, unusable_submission: Path, case: str, usable: bool
) -> None:
    """--model naming a folder the grader cannot read: exit 1, a one-line reason on stderr, no report."""
    make_model, expected = UNREADABLE_MODELS[case]
    model = make_model(tmp_path)
    out = tmp_path / "results.json"
    submission = simple_submission if usable else unusable_submission
    result = invoke(submission, "--out", out, "--model", model, *FAST)
    assert result.exit_code == 1, result.output
    line = error_line(result)
    assert expected in line and str(model) in line
    assert not out.exists()


def test_unknown_hub_model_offline_exits_1(
    tmp_path: Path, unusable_submission: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A hub name that is neither built in nor cached, with the hub offline: exit 1 with a one-line reason."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(_empty_dir(tmp_path)))
    out = tmp_path / "results.json"
    result = invoke(unusable_submission, "--out", out, "--model", "no-such-org/no-such-gpt2", *FAST)
    assert result.exit_code == 1, result.output
    line = error_line(result)
    assert "no-such-org/no-such-gpt2" in line and "not a built-in checkpoint" in line
    assert not out.exists()


@pytest.mark.parametrize("case", ["folder does not exist", "out is a folder"])
def test_unwritable_out_exits_1(tmp_path: Path, simple_submission: Path, case: str) -> None:
    """--out in a nonexistent folder, or --out naming a folder: exit 1 before any grading."""
    out = tmp_path / "missing" / "results.json" if case == "folder does not exist" else tmp_path
    expected = "does not exist" if case == "folder does not exist" else "it is a folder"
    result = invoke(simple_submission, "--out", out)
    assert result.exit_code == 1, result.output
    line = error_line(result)
    assert f"cannot write the report to {out}" in line and expected in line
    assert "Grading" not in result.stderr  # refused before grading started
    assert not (tmp_path / "missing").exists()


# ---------------------------------------------------------------- checkpoints


def test_checkpoints_build_and_list(tmp_path: Path) -> None:
    """`checkpoints build tiny --dir D` builds only tiny; `checkpoints list --dir D` shows what is built."""
    root = tmp_path / "checkpoints"
    before = invoke("checkpoints", "list", "--dir", root)
    assert before.exit_code == 0, before.output
    assert [line.split()[:3] for line in before.stdout.splitlines()] == [
        ["tiny", "not", "built"],
        ["wide", "not", "built"],
        ["small", "not", "built"],
    ]
    built = invoke("checkpoints", "build", "tiny", "--dir", root)
    assert built.exit_code == 0, built.output
    assert built.stdout.startswith(f"tiny   {root / 'tiny'}")
    for name in ("config.json", "model.safetensors", "vocab.json", "merges.txt"):
        assert (root / "tiny" / name).is_file(), name
    assert not (root / "wide").exists()
    after = invoke("checkpoints", "list", "--dir", root)
    assert after.exit_code == 0, after.output
    states = {line.split()[0]: line.split()[1] for line in after.stdout.splitlines()}
    assert states == {"tiny": "built", "wide": "not", "small": "not"}


def test_checkpoints_build_unknown_name_exits_2(tmp_path: Path) -> None:
    """An unknown checkpoint name is bad usage: exit 2, nothing built."""
    root = tmp_path / "checkpoints"
    result = invoke("checkpoints", "build", "tiny", "gigantic", "--dir", root)
    assert result.exit_code == 2, result.output
    line = error_line(result)
    assert "'gigantic'" in line and "tiny, wide, small" in line
    assert not root.exists()


# ---------------------------------------------------------------- template


def test_template_check_passes_on_the_committed_template() -> None:
    """The committed student_template/ is what `template build` generates."""
    result = invoke("template", "build", "--check")
    assert result.exit_code == 0, result.output
    assert "up to date" in result.stdout


def _copy_template(tmp_path: Path) -> Path:
    dest = tmp_path / "template"
    shutil.copytree(REPO / "student_template", dest, ignore=shutil.ignore_patterns("__pycache__", ".*"))
    return dest


TEMPLATE_CHANGES = {
    "edited": ("src/pretrained.py", lambda p: p.write_text(p.read_text() + "\n# my edit\n")),
    "deleted": ("lab04.ipynb", lambda p: p.unlink()),
    "added": ("src/extra.py", lambda p: p.write_text("EXTRA = 1\n")),
}


@pytest.mark.parametrize("change", list(TEMPLATE_CHANGES))
def test_template_check_fails_on_a_modified_copy(tmp_path: Path, change: str) -> None:
    """A faithful copy passes --check; once a file is edited, deleted or added, --check exits 1 naming it."""
    dest = _copy_template(tmp_path)
    clean = invoke("template", "build", "--check", "--dest", dest)
    assert clean.exit_code == 0, clean.output
    rel, apply = TEMPLATE_CHANGES[change]
    apply(dest / rel)
    result = invoke("template", "build", "--check", "--dest", dest)
    assert result.exit_code == 1, result.output
    line = error_line(result)
    assert "out of date" in line and rel in line


def test_template_build_writes_a_template_that_passes_check(tmp_path: Path) -> None:
    """`template build --dest D` writes the template, and --check then agrees with it."""
    dest = tmp_path / "fresh"
    built = invoke("template", "build", "--dest", dest)
    assert built.exit_code == 0, built.output
    assert (dest / "lab04.ipynb").is_file() and (dest / "src" / "pretrained.py").is_file()
    assert invoke("template", "build", "--check", "--dest", dest).exit_code == 0
