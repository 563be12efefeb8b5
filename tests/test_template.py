"""The student template: mechanical stubs, no drift from the reference, no answer key, public tests that work offline.

The public tests run as a student runs them: ``python -m pytest tests/`` in a temporary
copy of the template, in a subprocess (two at a time, started on first use).
"""

from __future__ import annotations

import ast
import importlib.util
import inspect
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import nbformat
import numpy as np
import pytest
from click.testing import CliRunner
from notebooks import filled_notebook, first_user_of_any, shuffled_notebook

from grader import defaults
from grader.artifacts import template_data
from grader.artifacts.template import (
    EXPECTED,
    VENDOR_HEADER,
    TemplateError,
    differences,
    solution_lines,
    strip_solutions,
    stub_source,
)
from grader.cli import main
from grader.grading import inputs
from grader.grading.checkpoints import BUILTIN
from grader.grading.truth import digest as grader_digest
from lab04_checks import budget, published

REPO = Path(__file__).resolve().parents[1]
REFERENCE = REPO / "reference"
TEMPLATE = REPO / "student_template"
STUBBED = (
    "get_weight_mapping",
    "load_gpt2_weights",
    "compare_outputs",
    "compare_intermediate_outputs",
    "analyze_weight_differences",
    "generate_text",
)
GIVEN_TESTS = {
    "test_gpt2_config[gpt2]",
    "test_gpt2_config[gpt2-medium]",
    "test_gpt2_config[gpt2-large]",
    "test_gpt2_config[gpt2-xl]",
    "test_create_gpt2_model",
    "test_model_for_the_public_checkpoint",
}
CHECK_INTERNALS = ("Traceback", "lab04_public.py", "lab04_checks/", "_pytest", "site-packages")


def lines(text: str) -> list[str]:
    return text.splitlines(keepends=True)


# ---------------------------------------------------------------- strip_solutions, a pure function


def test_strip_replaces_each_region_with_an_indented_stub():
    source = lines(
        'def f(x):\n    """Doc."""\n    ### BEGIN SOLUTION\n    return x + 1\n    ### END SOLUTION\n\nK = 1\n'
    )
    before = list(source)
    out = strip_solutions(source, "f.py")
    assert "".join(out) == 'def f(x):\n    """Doc."""\n    # YOUR CODE HERE\n    raise NotImplementedError\n\nK = 1\n'
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
    with pytest.raises(TemplateError, match=re.escape(message)):
        strip_solutions(lines(text), "f.py")


def test_reference_has_one_solution_region_per_function_to_write():
    stub = stub_source()
    assert stub.count("raise NotImplementedError") == len(STUBBED)
    assert "BEGIN SOLUTION" not in stub and "END SOLUTION" not in stub


# ---------------------------------------------------------------- drift: the committed template is the generated one


def test_template_build_check_passes_on_the_committed_template():
    result = CliRunner().invoke(main, ["template", "build", "--check"])
    assert result.exit_code == 0, result.output
    assert "up to date" in result.output
    assert differences(TEMPLATE) == []


def test_template_build_check_names_a_changed_file(tmp_path: Path):
    copy = _copy(TEMPLATE, tmp_path / "t")
    (copy / "src" / "decoder.py").write_text("# changed\n")
    (copy / "tests" / "stray.py").write_text("x = 1\n")
    result = CliRunner().invoke(main, ["template", "build", "--check", "--dest", str(copy)])
    assert result.exit_code == 1, result.output
    assert "out of date" in result.output and "src/decoder.py" in result.output and "tests/stray.py" in result.output


def _load(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_stubs_have_the_reference_names_and_signatures_and_raise_not_implemented():
    stub = _load(TEMPLATE / "src" / "pretrained.py", "lab04_stub_pretrained")
    ref = _load(REFERENCE / "pretrained.py", "lab04_ref_pretrained")

    def public(module) -> dict[str, str]:
        return {
            name: str(inspect.signature(obj)) if callable(obj) else type(obj).__name__
            for name, obj in vars(module).items()
            if not name.startswith("_") and getattr(obj, "__module__", module.__name__) == module.__name__
        }

    assert public(stub) == public(ref)
    for name in STUBBED:
        fn = getattr(stub, name)
        with pytest.raises(NotImplementedError):
            fn(*[None] * len(inspect.signature(fn).parameters))
    assert (TEMPLATE / "src" / "decoder.py").read_text() == (REFERENCE / "decoder.py").read_text()


def _template_files() -> list[Path]:
    return [p for p in TEMPLATE.rglob("*") if p.is_file() and "__pycache__" not in p.parts]


def test_no_solution_line_leaks_into_the_template():
    """No distinctive solution line (30+ characters, not a comment) appears in any template file."""
    solution = {line.strip() for line in solution_lines(lines((REFERENCE / "pretrained.py").read_text()))}
    solution = {s for s in solution if len(s) >= 30 and not s.startswith("#")}
    assert len(solution) > 20, "the reference should have a real solution to protect"
    for path in _template_files():
        text = path.read_text()
        present = _notebook_lines(text) if path.suffix == ".ipynb" else {line.strip() for line in text.splitlines()}
        leaked = solution & present
        assert not leaked, f"{path.relative_to(REPO)} contains solution lines: {sorted(leaked)[:3]}"


def _notebook_lines(text: str) -> set[str]:
    nb = nbformat.reads(text, as_version=4)
    return {line.strip() for cell in nb.cells for line in cell.source.splitlines()}


def test_the_template_carries_no_answer_key_and_no_grader_code():
    """The vendored checks are headed copies of lab04_checks/; nothing of grader/ (answers, truth, oracle) is there."""
    vendored = {p.name: p.read_text() for p in (TEMPLATE / "tests" / "lab04_checks").glob("*.py")}
    originals = {p.name: p.read_text() for p in (REPO / "lab04_checks").glob("*.py")}
    assert vendored.keys() == originals.keys()
    for name, text in vendored.items():
        assert text == VENDOR_HEADER.format(name=name) + originals[name], name
        assert text.splitlines()[0].startswith(f"# Generated by `grade template build` from lab04_checks/{name}")
    trusted = ("answers.py", "truth.py")  # the answer key and what computes expected values from it
    key_lines = {
        line.strip()
        for name in trusted
        for line in (REPO / "grader" / "grading" / name).read_text().splitlines()
        if len(line.strip()) >= 40 and not line.strip().startswith(("#", '"""', "from ", "import "))
    }
    key_lines -= {line.strip() for line in inspect.getsource(grader_digest).splitlines()}  # shared by design
    assert len(key_lines) > 30
    for path in _template_files():
        text = path.read_text()
        assert not re.search(r"^\s*(from|import) grader\b", text, re.MULTILINE), path
        leaked = key_lines & {line.strip() for line in text.splitlines()}
        assert not leaked, f"{path.relative_to(REPO)} holds grader lines: {sorted(leaked)[:2]}"


def test_hidden_inputs_and_checkpoints_stay_out_of_the_template():
    hidden = [*inputs.SENTENCES, *inputs.PROMPTS]
    specs = [f"seed={spec.seed}" for spec in BUILTIN.values()] + [f'"{name}"' for name in BUILTIN]
    for path in _template_files():
        text = path.read_text()
        for item in hidden:
            assert item not in text, f"{path.relative_to(REPO)} contains the grader's input {item!r}"
        for spec in specs:
            assert spec not in text, f"{path.relative_to(REPO)} names the grader's checkpoint {spec}"


# ---------------------------------------------------------------- the expected data, the pyproject, the notebook


def test_expected_data_equals_a_fresh_computation():
    committed = json.loads((TEMPLATE / EXPECTED).read_text())
    assert template_data.same(committed, template_data.compute()), "run `grade template build`"
    assert (TEMPLATE / EXPECTED).stat().st_size < 300_000
    labels = [item["label"] for item in committed["logits"]]
    assert labels[0] == "1-token" and np.asarray(committed["logits"][2]["ids"]).shape == (2, 7), labels
    for item in committed["logits"]:
        columns = np.asarray(item["columns"])
        assert 256 <= columns.size < 1000 and np.all(np.diff(columns) > 0) and columns[-1] < 50257
        assert np.asarray(item["values"]).shape == (*np.asarray(item["ids"]).shape, columns.size)
    changed = json.loads(json.dumps(committed))
    changed["logits"][1]["values"][0][3][7] += 1e-4
    assert not template_data.same(changed, committed)


@pytest.mark.parametrize(
    "array",
    [
        np.arange(12, dtype=np.float32).reshape(3, 4),
        np.zeros((0, 2)),
        np.asfortranarray(np.ones((2, 3), dtype=np.float64)),
    ],
    ids=["f32", "empty", "fortran"],
)
def test_the_public_digest_is_the_graders(array: np.ndarray):
    assert published.digest(array) == grader_digest(array)


def test_the_public_budget_is_the_graders():
    assert budget.TIER_SECONDS == defaults.TIMEOUT_S and budget.THREADS == defaults.THREADS
    assert budget.MEMORY_GIB * 1024 == defaults.MEMORY_MB and budget.STARTUP_SECONDS == defaults.STARTUP_TIMEOUT_S


def test_pyproject_gives_uv_the_cpu_build_of_torch_on_linux():
    project = tomllib.loads((TEMPLATE / "pyproject.toml").read_text())
    assert project["project"]["requires-python"] == ">=3.10"
    assert any(d.startswith("torch") for d in project["project"]["dependencies"])
    index = {i["name"]: i for i in project["tool"]["uv"]["index"]}
    assert index["pytorch-cpu"] == {
        "name": "pytorch-cpu",
        "url": "https://download.pytorch.org/whl/cpu",
        "explicit": True,
    }
    assert project["tool"]["uv"]["sources"]["torch"] == [{"index": "pytorch-cpu", "marker": "sys_platform == 'linux'"}]
    assert project["tool"]["pytest"]["ini_options"]["pythonpath"] == ["src", "tests"]
    for path in _template_files():  # requires-python >= 3.10: no newer syntax anywhere
        if path.suffix == ".py":
            ast.parse(path.read_text(), str(path), feature_version=(3, 10))


def test_the_notebook_is_valid_holds_the_stubs_and_tries_the_public_checkpoint():
    nb = nbformat.read(str(TEMPLATE / "lab04.ipynb"), as_version=4)
    nbformat.validate(nb)
    code = [cell.source for cell in nb.cells if cell.cell_type == "code"]
    assert "\n".join(code).count("raise NotImplementedError") == len(STUBBED)
    assert "class GPTModel" in code[0]
    for source in code:
        ast.parse(source)  # every cell is valid Python on its own
    assert "ensure_checkpoint(PUBLIC_TINY)" in code[-1] and 'from_pretrained("gpt2")' not in code[-1]
    assert [cell["id"] for cell in nb.cells] == [f"lab04-{i:02d}" for i in range(1, len(nb.cells) + 1)]


def test_the_filled_notebooks_try_it_cell_runs_offline(tmp_path: Path):
    """Its code cells run as Jupyter runs them (__name__ == "__main__"), with no hub: the public checkpoint is local."""
    copy = _copy(TEMPLATE, tmp_path / "t")
    (copy / "lab04.ipynb").write_text(filled_notebook())
    script = (
        "import nbformat\nnb = nbformat.read('lab04.ipynb', as_version=4)\nns = {'__name__': '__main__'}\n"
        "for cell in nb.cells:\n    if cell.cell_type == 'code':\n        exec(cell.source, ns)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=copy, env=_env(), capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Match: True, max diff:" in done.stdout, done.stdout


# ---------------------------------------------------------------- the public tests, run as a student runs them


@dataclass
class Run:
    outcomes: dict[str, str]
    messages: dict[str, str]
    stdout: str


def _copy(source: Path, dest: Path) -> Path:
    return Path(shutil.copytree(source, dest, ignore=shutil.ignore_patterns("__pycache__", ".pytest_cache")))


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "LAB04_TIER"))}
    return {**env, "HF_HUB_OFFLINE": "1", **extra}


def _run_public(folder: Path, *args: str, env: dict[str, str] | None = None) -> Run:
    report = folder / "report.json"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "tests/",
            "-p",
            "no:cacheprovider",
            "--json-report",
            f"--json-report-file={report}",
            *args,
        ],
        cwd=folder,
        env=env or _env(),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    data = json.loads(report.read_text())
    outcomes, messages = {}, {}
    for test in data["tests"]:
        name = test["nodeid"].split("::")[-1]
        outcomes[name] = test["outcome"]
        messages[name] = "\n".join(str(test.get(phase, {}).get("longrepr", "")) for phase in ("setup", "call"))
    return Run(outcomes, messages, done.stdout)


def _variant(name: str, tmp: Path) -> Run:
    copy = _copy(TEMPLATE, tmp / name)
    args: list[str] = []
    env = None
    if name == "reference":
        shutil.copyfile(REFERENCE / "pretrained.py", copy / "src" / "pretrained.py")
    if name == "transposing":  # with a budget so small that every part is slow, to see the warning
        source = (REFERENCE / "pretrained.py").read_text()
        wrong = "existing[...] = value.T if value.ndim == 2 and value.shape[0] == value.shape[1] else value"
        (copy / "src" / "pretrained.py").write_text(source.replace("existing[...] = value", wrong, 1))
        env = _env(LAB04_TIER_SECONDS="0.001")
    if name in ("notebook", "shuffled"):
        (copy / "lab04.ipynb").write_text(filled_notebook() if name == "notebook" else shuffled_notebook())
        args = ["--notebook", "lab04.ipynb"]
    return _run_public(copy, *args, env=env)


@pytest.fixture(scope="module")
def public(tmp_path_factory: pytest.TempPathFactory):
    """Every variant's run, two at a time in the background; ``public[name]`` waits for one."""
    tmp = tmp_path_factory.mktemp("public")
    names = ("untouched", "reference", "notebook", "shuffled", "transposing")
    with ThreadPoolExecutor(max_workers=2) as pool:
        yield _Runs({name: pool.submit(_variant, name, tmp) for name in names})


class _Runs(dict):
    def __getitem__(self, name: str) -> Run:
        future: Future = super().__getitem__(name)
        return future.result()


def test_untouched_template_fails_with_not_implemented_once_per_root_cause(public):
    run = public["untouched"]
    not_given = {n: o for n, o in run.outcomes.items() if n not in GIVEN_TESTS}
    assert {n: run.outcomes[n] for n in GIVEN_TESTS} == dict.fromkeys(GIVEN_TESTS, "passed")
    assert set(not_given.values()) == {"failed", "skipped"} and len(not_given) >= 18, run.outcomes
    for name in not_given:
        assert "NotImplementedError" in run.messages[name], (name, run.messages[name])
    failed = {n: run.messages[n] for n, o in not_given.items() if o == "failed"}
    assert sorted(failed) == ["test_compare_outputs[short]", "test_load_gpt2_weights", "test_weight_mapping"]
    for name, message in failed.items():
        assert re.search(r"pretrained\.py, line \d+: raise NotImplementedError", message), (name, message)
        assert not any(word in message for word in CHECK_INTERNALS), (name, message)
    assert "need what test_load_gpt2_weights reported" in run.stdout


def test_reference_copied_into_the_template_passes_every_public_test(public):
    run = public["reference"]
    assert len(run.outcomes) >= 24 and set(run.outcomes.values()) == {"passed"}, run.outcomes


def test_the_public_tests_show_each_parts_time_against_the_budget(public):
    run = public["reference"]
    assert "time of your code against the grader's budget" in run.stdout
    for part in ("load_gpt2_weights", "forward pass: model(ids)", "compare_outputs", "import pretrained.py"):
        assert re.search(rf"{re.escape(part)} +\d+\.\d\d s +\d+ calls? +[\d.]+% of (60|120) s", run.stdout), part
    assert "WARNING" not in run.stdout
    slow = public["transposing"]
    assert re.search(r"WARNING: load_gpt2_weights took [\d.]+ s, more than 50% of the 0.001 s", slow.stdout), (
        slow.stdout
    )


def test_a_filled_notebook_passes_and_one_out_of_order_names_the_cell(public):
    """A test runs the public tests on a filled notebook and on one with cells out of order."""
    assert set(public["notebook"].outcomes.values()) == {"passed"}, public["notebook"].outcomes
    run = public["shuffled"]
    failed = [n for n, o in run.outcomes.items() if o == "failed"]
    assert len(failed) == 1 and set(run.outcomes.values()) == {"failed", "skipped"}, run.outcomes
    nb = nbformat.reads(shuffled_notebook(), as_version=4)
    user = first_user_of_any(shuffled_notebook())
    message = run.messages[failed[0]]
    assert f"lab04.ipynb, cell {user}, line 1: NameError: name 'Any' is not defined" in message, message
    assert f"Cell {len(nb.cells)} defines Any, further down" in message and "Kernel > Restart and Run All" in message
    assert not any(word in message for word in CHECK_INTERNALS), message


def test_a_transposing_loader_fails_once_and_is_told_so_from_the_data(public):
    run = public["transposing"]
    failed = {n: run.messages[n] for n, o in run.outcomes.items() if o == "failed"}
    assert list(failed) == ["test_loaded_weights[attention]"], run.outcomes
    assert "blocks.{0,1}.attn.W_Q holds the transpose of the right array" in failed["test_loaded_weights[attention]"]
    assert run.outcomes["test_logits[long]"] == "skipped" and run.outcomes["test_loaded_weights[ffn]"] == "passed"
    assert run.outcomes["test_compare_outputs[short]"] == "passed"


# ---------------------------------------------------------------- nothing of the template earns a tier


BORROW = """

# A student who borrows from the template's files: each function the lab asks for, taken from them when found.
import importlib as _importlib

for _module in {modules!r}:
    try:
        _found = _importlib.import_module(_module)
    except Exception:
        continue
    for _name in {names!r}:
        if callable(getattr(_found, _name, None)):
            globals()[_name] = getattr(_found, _name)
"""


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["as in tests/", "flat"])
def test_no_template_file_copied_into_a_submission_earns_a_tier(tmp_path: Path, layout: str):
    """Every file of tests/ and the top folder, copied into the untouched template's src/ and imported by it: 0 points."""
    from grader.config import GradeConfig
    from grader.grading.engine import grade

    submission = _copy(TEMPLATE, tmp_path / "submission")
    modules = []
    for path in _template_files():
        rel = path.relative_to(TEMPLATE)
        if rel.parts[0] == "src":
            continue
        rel = rel.relative_to("tests") if rel.parts[0] == "tests" else rel
        rel = Path(rel.name) if layout == "flat" else rel
        target = submission / "src" / rel
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)
            if rel.suffix == ".py" and rel.name != "__init__.py":
                modules.append(".".join(rel.with_suffix("").parts))
    with (submission / "src" / "pretrained.py").open("a") as fh:
        fh.write(BORROW.format(modules=sorted(modules), names=STUBBED))
    report = grade(GradeConfig(submission=submission, out=tmp_path / "report.json", seed=1))
    assert report.score == 0, [(t.name, t.status, t.detail[:200]) for t in report.tiers]
    assert {t.status for t in report.tiers} <= {"error", "skipped", "failed"}
    assert "NotImplementedError" in next(t.detail for t in report.tiers if t.name == "shapes")
