"""Set-up of the public tests: the grader's one thread, no hub, your code imported once, each failure reported once.

    python -m pytest tests/                          # your src/pretrained.py
    python -m pytest tests/ --notebook lab04.ipynb   # your notebook, its code cells run top to bottom

A failure in your code is reported by the first test that meets it, naming your file
and line; later tests that need the same thing are skipped and point at that test.
At the end, the time of each part of your code is shown against the grader's budget.
"""

from __future__ import annotations

import os
import sys

from lab04_checks import budget

NUMPY_FIRST = "numpy" in sys.modules  # then BLAS has already chosen its thread count
budget.one_thread()  # the grader gives your code one thread: time it the same way (before NumPy loads)
os.environ["HF_HUB_OFFLINE"] = "1"  # nothing here needs the internet, and the grader has none
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import pytest  # noqa: E402
from lab04_public import LAB, Lab  # noqa: E402


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--notebook",
        metavar="PATH",
        default=None,
        help="run the public tests on this notebook (e.g. lab04.ipynb) instead of src/pretrained.py",
    )


def pytest_configure(config: pytest.Config) -> None:
    notebook = config.getoption("notebook")
    if notebook:
        notebook = os.path.join(str(config.invocation_params.dir), notebook)
        if not os.path.isfile(notebook):
            raise pytest.UsageError(f"--notebook {config.getoption('notebook')}: no such file")
    LAB.configure(notebook)


def pytest_report_header(config: pytest.Config) -> str:
    return f"Lab 04 public tests on {LAB.target}, with {budget.THREADS} BLAS thread as in the grader"


@pytest.fixture(scope="session")
def lab() -> Lab:
    """What the tests share: your code, the public checkpoint and its expected values."""
    return LAB


@pytest.fixture(autouse=True)
def _current_test(request: pytest.FixtureRequest) -> None:
    LAB.current = request.node.name


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):  # a hook wrapper: it yields
    """Shorten an unexpected exception to a line or two, naming your line when it came from your code."""
    outcome = yield
    report = outcome.get_result()
    excinfo = call.excinfo
    if (
        report.failed
        and excinfo is not None
        and not isinstance(excinfo.value, (pytest.fail.Exception, pytest.skip.Exception))
    ):
        report.longrepr = LAB.unexpected(excinfo.value)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, exitstatus: int, config: pytest.Config) -> None:
    """The time of each part of your code, against the grader's budget."""
    if not budget.TIMES and not LAB.waiting:
        return
    write = terminalreporter.write_line
    if LAB.waiting:
        terminalreporter.section("skipped: each waits for a failure reported once", sep="-")
        for first, tests in LAB.waiting.items():
            write(
                f"{len(tests)} test{'s' if len(tests) > 1 else ''} need what {first} reported: {', '.join(tests[:4])}"
                + (", ..." if len(tests) > 4 else "")
            )
    terminalreporter.section("time of your code against the grader's budget", sep="-")
    write(
        f"The grader gives each tier {budget.tier_seconds():g} s of wall clock, {budget.THREADS} thread and "
        f"{budget.MEMORY_GIB} GiB. Here, on the small public checkpoint:"
    )
    for warning in budget.report(write):
        write(f"WARNING: {warning}", yellow=True, bold=True)
    if NUMPY_FIRST:
        write(
            "(NumPy was imported before these tests could ask for one thread: times may be shorter than the grader's.)"
        )
