"""Run a notebook's code cells as one module, top to bottom, as Jupyter's "Run All" would.

The grader and the public tests share this: each code cell becomes a file of its own
(so a traceback says which cell and line), IPython magics and shell lines are blanked
(never run), and a cell that raises does not stop the later ones; what it raised is
kept in ``__notebook_errors__`` for the feedback.
"""

from __future__ import annotations

import io
import re
import tokenize
from pathlib import Path

LOADER_NAME = "pretrained.py"
PYTHON_CELL_MAGICS = ("%%time", "%%timeit", "%%capture")  # cell magics whose body is still Python
# IPython-only lines: `%magic`, `!shell`, and their assignment forms `x = !ls`, `t = %timeit f()`.
_IPYTHON_LINE = re.compile(r"^\s*(?:[\w.,\s()\[\]]+=\s*)?[%!]")
_CELL_FILE = re.compile(r"_cell_(\d{3,})\.py$")


def notebook_cells(path: Path) -> list[tuple[int, str]]:
    """The Python source of each code cell, numbered by its position among all cells (as Jupyter shows them)."""
    import nbformat

    nb = nbformat.read(str(path), as_version=4)
    cells = []
    for number, cell in enumerate(nb.cells, start=1):
        if cell.cell_type != "code":
            continue
        lines = cell.source.splitlines()
        if lines and lines[0].lstrip().startswith("%%"):
            if lines[0].split()[0] not in PYTHON_CELL_MAGICS:
                continue  # %%bash, %%writefile ...: not Python, never run
            lines[0] = ""
        kept: list[str] = []  # a dropped line becomes a blank one, so line numbers stay right
        for line in lines:
            ipython = _IPYTHON_LINE.match(line) and not _continues("\n".join(kept))
            kept.append("" if ipython else line)
        cells.append((number, "\n".join(kept) + "\n"))
    return cells


def _continues(source: str) -> bool:
    """True when ``source`` ends inside a bracket, a backslash continuation or a triple-quoted string."""
    try:
        for _ in tokenize.generate_tokens(io.StringIO(source + "\n").readline):
            pass
    except tokenize.TokenError:
        return True
    except (SyntaxError, IndentationError):
        return False
    return False


LOADER = '''"""Generated from {notebook}: runs its code cells in order, as Jupyter's Run All would."""

import os as __lab04_os
import traceback as __lab04_traceback

__notebook_errors__ = []
for __lab04_cell, __lab04_file in {cells!r}:
    __lab04_path = __lab04_os.path.join(__lab04_os.path.dirname(__file__), __lab04_file)
    try:
        with open(__lab04_path) as __lab04_fh:
            exec(compile(__lab04_fh.read(), __lab04_path, "exec"), globals())
    except BaseException as __lab04_exc:  # noqa: BLE001 - a failing cell does not stop the next ones
        __lab04_line = getattr(__lab04_exc, "lineno", None) if isinstance(__lab04_exc, SyntaxError) else None
        for __lab04_frame in __lab04_traceback.extract_tb(__lab04_exc.__traceback__):
            if __lab04_frame.filename == __lab04_path:
                __lab04_line = __lab04_frame.lineno
        __notebook_errors__.append({{"cell": __lab04_cell, "type": type(__lab04_exc).__name__,
                                    "message": str(__lab04_exc)[:300], "line": __lab04_line}})
'''


def write_loader(cells: list[tuple[int, str]], folder: Path, notebook: str) -> dict[str, str]:
    """Write one file per cell and the module that runs them; returns {cell file: "lab04.ipynb, cell N"}."""
    files = []
    labels = {}
    for number, source in cells:
        name = f"_cell_{number:03d}.py"
        (folder / name).write_text(source)
        files.append((number, name))
        labels[name] = f"{notebook}, cell {number}"
    (folder / LOADER_NAME).write_text(LOADER.format(notebook=notebook, cells=files))
    return labels


def cell_of(filename: str) -> int | None:
    """The cell number of a generated cell file name, or None."""
    match = _CELL_FILE.search(filename)
    return int(match.group(1)) if match else None


def names_defined(source: str) -> set[str]:
    """The names a cell binds at its top level: assignments, imports, functions and classes."""
    import ast

    try:
        tree = ast.parse(source)
    except SyntaxError:
        return set()
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name))
    return names


_UNDEFINED = re.compile(r"name '(\w+)' is not defined")
RUN_ALL = "use Kernel > Restart and Run All to check that the notebook runs from top to bottom"


def describe_errors(errors: list[dict], cells: list[tuple[int, str]], notebook: str) -> str:
    """The first cell that raised, as ``NOTEBOOK, cell N, line M: ...``, saying when cells are out of order."""
    first = errors[0]
    where = f"{notebook}, cell {first.get('cell')}" + (f", line {first['line']}" if first.get("line") else "")
    text = f"{where}: {first.get('type')}: {first.get('message')}"
    missing = _UNDEFINED.search(str(first.get("message", "")))
    later = [
        n
        for n, source in cells
        if n > int(first.get("cell") or 0) and missing and missing.group(1) in names_defined(source)
    ]
    if later:
        text += (
            f"\nCell {later[0]} defines {missing.group(1)}, further down: the cells are out of order. Move that "
            f"cell above cell {first.get('cell')}, then {RUN_ALL}."
        )
    else:
        text += f"\nThe notebook's code cells run in order, as in Jupyter: {RUN_ALL}."
    if len(errors) > 1:
        text += f" ({len(errors) - 1} later cell{'s' if len(errors) > 2 else ''} raised too, often for the same cause.)"
    return text
