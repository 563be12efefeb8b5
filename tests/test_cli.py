"""The grade command: exit codes first, then the text; quick to start; one line for every failure of its own."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import REPO, make_submission, reference_files
from course import layouts

from grader.cli import main


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.output


@pytest.mark.parametrize(
    ("command", "heavy"),
    [
        (["--help"], ("torch", "transformers", "numpy")),
        (["run", "--help"], ("torch", "transformers", "numpy")),
        (["regrade", "--help"], ("torch", "transformers", "numpy")),
        (["gradescope", "build", "--help"], ("torch",)),
        (["summary", "--help"], ("torch", "transformers")),
        (["checkpoints", "list"], ("torch", "transformers")),
    ],
)
def test_starting_imports_no_torch(command: list[str], heavy: tuple[str, ...], tmp_path: Path) -> None:
    code = (
        "import sys; sys.argv = ['grade', *sys.argv[1:]]\n"
        "try:\n    from grader.cli import main; main()\nexcept SystemExit: pass\n"
        f"heavy = sorted(m for m in sys.modules if m.split('.')[0] in {heavy!r})\n"
        "print('HEAVY', heavy)"
    )
    done = subprocess.run([sys.executable, "-c", code, *command], capture_output=True, text=True, cwd=REPO, check=False)
    assert "HEAVY []" in done.stdout, done.stdout[-500:] + done.stderr[-500:]


def test_help_lists_the_commands_and_the_main_options() -> None:
    code, text = invoke("--help")
    assert code == 0
    for word in ("grade SUBMISSION --out results.json", "regrade", "summary", "gradescope build", "--timeout"):
        assert word in text
    code, text = invoke("run", "--help")
    assert code == 0 and "--require-isolation" in text and "--format" in text


def test_a_broken_submission_still_gives_exit_0_and_a_report(tmp_path: Path) -> None:
    sub = make_submission(tmp_path / "sub", {"pretrained.py": "def oops(:\n"})
    code, text = invoke("run", str(sub), "--out", str(tmp_path / "r.json"), "--seed", "1")
    assert code == 0, text
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["score"] == 0 and "SyntaxError" in report["tests"][0]["output"]
    assert "pretrained.py, line 1" in report["tests"][0]["output"]


def test_the_grader_failing_is_exit_1_in_one_line(tmp_path: Path) -> None:
    sub = make_submission(tmp_path / "sub", reference_files(False))
    for options, words in (
        (["--model", str(tmp_path / "nothing")], "is not a checkpoint directory"),
        (["--out", str(tmp_path / "missing" / "r.json")], "does not exist"),
        (["--memory-mb", "256"], "leaves no room"),
    ):
        args = [
            "run",
            str(sub),
            "--seed",
            "1",
            "-q",
            *(["--out", str(tmp_path / "r.json")] if "--out" not in options else []),
            *options,
        ]
        code, text = invoke(*args)
        assert code == 1, (options, text)
        assert words in text and "Traceback" not in text and len(text.strip().splitlines()) == 1, text


def test_bad_usage_is_exit_2(tmp_path: Path) -> None:
    sub = make_submission(tmp_path / "sub", reference_files(False))
    bad_points = tmp_path / "points.toml"
    bad_points.write_text("nonsense = 5\n")
    for args in (
        ["run", str(sub), "--timeout", "0"],
        ["run", str(sub), "--points", str(bad_points)],
        ["checkpoints", "build", "enormous"],
        ["run", str(tmp_path / "absent")],
    ):
        code, text = invoke(*args)
        assert code == 2, (args, text)
        assert "Traceback" not in text


def test_a_folder_at_the_report_path_is_refused_not_written_into(tmp_path: Path) -> None:
    sub = make_submission(tmp_path / "sub", reference_files(False))
    (tmp_path / "r.json").mkdir()
    code, text = invoke("run", str(sub), "--out", str(tmp_path / "r.json"), "-q")
    assert code == 1 and "it is a folder" in text


@pytest.mark.slow
def test_a_chapter_folder_with_a_json_out_is_one_submission(tmp_path: Path) -> None:
    chapter = make_submission(tmp_path / "ch03", layouts()["chapter folder, Lab 03 decoder in the sibling folder"])
    code, text = invoke("run", str(chapter), "--out", str(tmp_path / "report.json"), "--seed", "1")
    assert code == 0, text
    assert (tmp_path / "report.json").is_file()
    assert json.loads((tmp_path / "report.json").read_text())["score"] == 100
    assert "Lab 04: 100/100 points" in text


@pytest.mark.slow
def test_the_terminal_summary_carries_no_escape_codes(tmp_path: Path) -> None:
    files = reference_files(False)
    files["pretrained.py"] = files["pretrained.py"].replace(
        "    hf_model = GPT2LMHeadModel.from_pretrained(model_name)\n",
        "    raise ValueError('\\x1b[2J\\x1b]0;owned\\x07 cleared your screen')\n",
        1,
    )
    sub = make_submission(tmp_path / "sub", files)
    code, text = invoke("run", str(sub), "--out", str(tmp_path / "r.json"), "--seed", "1")
    assert code == 0
    assert "\x1b" not in text and "\x07" not in text and "cleared your screen" in text


def test_checkpoints_list_names_every_built_in() -> None:
    code, text = invoke("checkpoints", "list")
    assert code == 0
    for name in ("tiny", "wide", "small", "medium", "large"):
        assert name in text


def test_checkpoints_build_prints_the_one_hash(tmp_path: Path) -> None:
    code, text = invoke("checkpoints", "build", "tiny")
    assert code == 0
    from grader.grading.checkpoints import resolve_model

    assert resolve_model("tiny").sha256 in text
