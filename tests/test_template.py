"""The student template: mechanical stripping, no drift from the reference, public tests that work offline."""

from __future__ import annotations

import ast
import importlib.util
import inspect
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest
from conftest import REFERENCE, REPO, grade_submission, statuses

from grader import inputs
from grader.lab.checkpoints import default_root
from grader.models import BUILTIN
from grader.template import TemplateError, differences, solution_lines, strip_solutions

TEMPLATE = REPO / "student_template"
PUBLIC_TESTS = ("test_weight_mapping", "test_loaded_weights", "test_embeddings", "test_logits", "test_compare_outputs")


def lines(text: str) -> list[str]:
    return text.splitlines(keepends=True)


# ---------------------------------------------------------------- strip_solutions, a pure function


def test_strip_replaces_each_region_with_an_indented_stub():
    source = lines(
        'def f(x):\n    """Doc stays."""\n    ### BEGIN SOLUTION\n    return x + 1\n    ### END SOLUTION\n\nKEEP = 1\n'
    )
    before = list(source)
    out = strip_solutions(source, "f.py")
    assert "".join(out) == (
        'def f(x):\n    """Doc stays."""\n    # YOUR CODE HERE\n    raise NotImplementedError\n\nKEEP = 1\n'
    )
    assert source == before, "strip_solutions must not modify its input"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("### BEGIN SOLUTION\n### BEGIN SOLUTION\n### END SOLUTION\n", "f.py:2: nested"),
        ("x = 1\n    ### BEGIN SOLUTION\ny = 2\n", "f.py:2: ### BEGIN SOLUTION is never closed"),
        ("x = 1\n### END SOLUTION\n", "f.py:2: ### END SOLUTION without a matching"),
        ("## BEGIN SOLUTION\n### END SOLUTION\n", "f.py:1: malformed marker"),
        ("### BEGIN SOLUTION\n### end solutions\n", "f.py:2: malformed marker"),
    ],
    ids=["nested", "unclosed", "orphan end", "two hashes", "misspelt end"],
)
def test_strip_fails_loudly_on_bad_markers(text: str, message: str):
    with pytest.raises(TemplateError, match=message.replace("(", r"\(")):
        strip_solutions(lines(text), "f.py")


def test_reference_has_one_solution_region_per_function():
    source = (REFERENCE / "pretrained.py").read_text()
    stub = "".join(strip_solutions(lines(source), "pretrained.py"))
    assert stub.count("raise NotImplementedError") == 3
    assert "BEGIN SOLUTION" not in stub and "END SOLUTION" not in stub


# ---------------------------------------------------------------- drift checks


def test_committed_template_equals_a_fresh_regeneration():
    assert differences(TEMPLATE) == [], "run `grade template build` and commit the result"


def _load(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_stub_module_imports_with_the_reference_names_and_signatures():
    stub = _load(TEMPLATE / "src" / "pretrained.py", "lab04_stub_pretrained")
    ref = _load(REFERENCE / "pretrained.py", "lab04_ref_pretrained")

    def public(module) -> dict[str, str]:
        return {
            name: str(inspect.signature(obj)) if callable(obj) else type(obj).__name__
            for name, obj in vars(module).items()
            if not name.startswith("_") and getattr(obj, "__module__", module.__name__) == module.__name__
        }

    assert public(stub) == public(ref)
    for name in ("get_weight_mapping", "load_gpt2_weights", "compare_outputs"):
        with pytest.raises(NotImplementedError):
            getattr(stub, name)(*[None] * len(inspect.signature(getattr(stub, name)).parameters))
    assert (TEMPLATE / "src" / "decoder.py").read_text() == (REFERENCE / "decoder.py").read_text()


def test_no_solution_line_leaks_into_the_template():
    """No distinctive solution line (30+ characters, not a comment) appears in any template file."""
    solution = {line.strip() for line in solution_lines(lines((REFERENCE / "pretrained.py").read_text()))}
    solution = {s for s in solution if len(s) >= 30 and not s.startswith("#")}
    assert len(solution) > 20, "the reference should have a real solution to protect"
    for path in TEMPLATE.rglob("*"):
        if path.is_file() and "__pycache__" not in path.parts:
            text = path.read_text()
            present = _notebook_lines(text) if path.suffix == ".ipynb" else {line.strip() for line in text.splitlines()}
            leaked = solution & present
            assert not leaked, f"{path.relative_to(REPO)} contains solution lines: {sorted(leaked)[:3]}"


def _notebook_lines(text: str) -> set[str]:
    nb = nbformat.reads(text, as_version=4)
    return {line.strip() for cell in nb.cells for line in cell.source.splitlines()}


def test_hidden_inputs_and_checkpoints_stay_out_of_the_template():
    hidden = [inputs.LONG_TEXT, inputs.BATCH_TEXT, *inputs.COMPARE_TEXTS]
    specs = [f"seed={spec.seed}" for spec in BUILTIN.values()] + [f'"{name}"' for name in BUILTIN]
    for path in TEMPLATE.rglob("*"):
        if path.is_file() and "__pycache__" not in path.parts:
            text = path.read_text()
            for item in hidden:
                assert item[:40] not in text, f"{path.relative_to(REPO)} contains a hidden input"
            for spec in specs:
                assert spec not in text, f"{path.relative_to(REPO)} names the grader's checkpoint {spec}"


def test_the_notebook_is_valid_and_holds_the_stubs():
    nb = nbformat.read(str(TEMPLATE / "lab04.ipynb"), as_version=4)
    nbformat.validate(nb)
    code = "\n".join(cell.source for cell in nb.cells if cell.cell_type == "code")
    assert code.count("raise NotImplementedError") == 3
    assert "class GPTModel" in code
    for cell in nb.cells:
        if cell.cell_type == "code":
            ast.parse(cell.source)  # every cell is valid Python on its own


# ---------------------------------------------------------------- the public tests, run as a student would


def _run_public_tests(folder: Path, report: Path) -> tuple[dict[str, dict], float]:
    env = {**os.environ, "LAB04_CHECKPOINT_DIR": str(default_root()), "HF_HUB_OFFLINE": "1"}
    started = time.monotonic()
    subprocess.run(
        [sys.executable, "-m", "pytest", "tests/", "-p", "no:cacheprovider", "--json-report",
         f"--json-report-file={report}", "-q"],
        cwd=folder, env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    seconds = time.monotonic() - started
    data = json.loads(report.read_text())
    return {t["nodeid"].split("::")[-1]: t for t in data["tests"]}, seconds


@pytest.fixture
def template_copy(tmp_path: Path) -> Path:
    return Path(shutil.copytree(TEMPLATE, tmp_path / "student_template", ignore=shutil.ignore_patterns("__pycache__")))


def test_untouched_template_fails_every_public_test_with_not_implemented(template_copy: Path, tmp_path: Path):
    results, seconds = _run_public_tests(template_copy, tmp_path / "stubs.json")
    print(f"public tests on the stubs: {seconds:.1f} s")
    assert sorted(results) == sorted(PUBLIC_TESTS)
    for name, result in results.items():
        text = json.dumps(result)
        assert result["outcome"] == "failed", name
        assert "NotImplementedError" in text, f"{name} should fail with NotImplementedError"
        assert "ImportError" not in text and "SyntaxError" not in text, name


def test_reference_copied_into_the_template_passes_every_public_test(template_copy: Path, tmp_path: Path):
    shutil.copyfile(REFERENCE / "pretrained.py", template_copy / "src" / "pretrained.py")
    results, seconds = _run_public_tests(template_copy, tmp_path / "reference.json")
    print(f"public tests on the reference: {seconds:.1f} s")
    assert {name: r["outcome"] for name, r in results.items()} == {name: "passed" for name in PUBLIC_TESTS}


def test_grading_the_untouched_template_gives_zero_and_names_not_implemented(template_copy: Path):
    report = grade_submission(template_copy)
    assert report.score == 0
    assert set(statuses(report).values()) == {"error"}
    for t in report.tiers:
        assert "NotImplementedError" in t.detail, (t.name, t.detail)


def test_grading_the_template_with_the_reference_gives_full_marks(template_copy: Path):
    shutil.copyfile(REFERENCE / "pretrained.py", template_copy / "src" / "pretrained.py")
    report = grade_submission(template_copy)
    assert report.score == report.max_score == 100, [t.detail for t in report.tiers]
