"""The public tests' view of the student's code: import it (a folder or a notebook), call it, say where it failed.

Every failure becomes a ``StudentError`` whose message names the student's own file
and line (``pretrained.py, line 31``, or ``lab04.ipynb, cell 5, line 3``), never a
frame of the checks, and whose ``key`` names the root cause, so that the tests can
report each cause once.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import traceback
from pathlib import Path
from types import ModuleType
from typing import Any

from . import budget
from .notebook import LOADER_NAME, describe_errors, notebook_cells, write_loader

MODULE = "pretrained"
LAB03_FROM_SRC = ("..", "..", "lab03_decoder_transformer", "src")  # the course's chapter layout


class StudentError(Exception):
    """The student's code failed: ``summary`` says what, ``where`` names their line, ``key`` the root cause."""

    def __init__(self, summary: str, where: str = "", key: str = "", hint: str = ""):
        super().__init__(summary)
        self.summary, self.where, self.hint = summary, where, hint
        self.key = key or summary

    @property
    def message(self) -> str:
        """What the student reads: the summary, their line, a hint."""
        lines = [self.summary] + ([f"  {self.where}"] if self.where else []) + ([self.hint] if self.hint else [])
        return "\n".join(lines)


class Code:
    """The imported ``pretrained`` module and the files that count as the student's."""

    def __init__(self, module: ModuleType, files: dict[str, str], folders: dict[str, str], label: str):
        self.module = module
        self.files = files  # real path -> what the student calls it ("lab04.ipynb, cell 5")
        self.folders = folders  # real folder -> prefix of the names shown for files under it
        self.label = label  # "pretrained.py" or "lab04.ipynb"

    def function(self, name: str) -> Any:
        """The student's function ``name``; a StudentError when it is missing."""
        fn = getattr(self.module, name, None)
        if not callable(fn):
            raise StudentError(f"{self.label} defines no function {name}", key=f"missing:{name}")
        return fn

    def call(self, part: str, fn: Any, /, *args: Any, **kwargs: Any) -> Any:
        """Call student code, timed under ``part``; what it raises becomes a StudentError naming their line."""
        return self.call_as(part, part, fn, *args, **kwargs)

    def call_as(self, part: str, what: str, fn: Any, /, *args: Any, **kwargs: Any) -> Any:
        """``call``, with ``what`` naming the call in an error (``part`` only times it)."""
        try:
            with budget.timed(part):
                return fn(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - student code may raise anything
            raise self.error(exc, what) from None

    def error(self, exc: BaseException, what: str) -> StudentError:
        """The StudentError for ``exc``, raised by ``what``."""
        kind = type(exc).__name__
        text = str(exc.msg if isinstance(exc, SyntaxError) else exc).strip()  # a SyntaxError's str repeats the line
        text = text.splitlines()[0][:300] if text else ""
        where = self.where(exc)
        if isinstance(exc, NotImplementedError):
            summary = f"{what} raised NotImplementedError: it is still the template's stub, write it"
        else:
            summary = f"{what} raised {kind}" + (f": {text}" if text else "")
        # The key leaves out which function was called: a stub raising inside get_weight_mapping is one cause,
        # whether the test called it or load_gpt2_weights did.
        return StudentError(summary, where, key=f"{kind}:{where}" if where else f"{what}:{kind}")

    def where(self, exc: BaseException) -> str:
        """``pretrained.py, line 31: <the line>`` for the last frame in the student's files, or ''."""
        if isinstance(exc, SyntaxError) and exc.filename and self.name_of(exc.filename):
            return f"{self.name_of(exc.filename)}, line {exc.lineno}: {(exc.text or '').strip()}"
        frames = traceback.extract_tb(exc.__traceback__)
        own = [f for f in frames if self.name_of(f.filename)]
        if not own:
            return ""
        last = own[-1]
        inside = ""
        if frames[-1] is not last:
            parts = frames[-1].filename.split(os.sep)
            if "site-packages" in parts and parts.index("site-packages") + 1 < len(parts):
                inside = f"  (inside {parts[parts.index('site-packages') + 1].removesuffix('.py')})"
        return f"{self.name_of(last.filename)}, line {last.lineno}: {(last.line or '').strip()}{inside}"

    def name_of(self, filename: str) -> str:
        """What the student calls ``filename``, or '' when it is not theirs."""
        path = os.path.realpath(filename)
        if path in self.files:
            return self.files[path]
        for folder, prefix in self.folders.items():
            if path.startswith(folder + os.sep):
                return prefix + os.path.relpath(path, folder)
        return ""


def _import(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(MODULE, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[MODULE] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(MODULE, None)
        raise
    return module


def import_folder(src: Path) -> Code:
    """Import ``src/pretrained.py`` (its decoder.py, or the sibling Lab 03 one, come with it)."""
    src = Path(src).resolve()
    path = src / "pretrained.py"
    lab03 = Path(os.path.normpath(src.joinpath(*LAB03_FROM_SRC)))
    folders = {str(src): "", str(lab03): "lab03_decoder_transformer/src/"}
    code = Code(ModuleType(MODULE), {}, folders, "pretrained.py")
    if not path.is_file():
        raise StudentError(f"there is no {path}", key="import")
    if str(src) not in sys.path:
        sys.path.insert(0, str(src))
    try:
        with budget.timed("import pretrained.py"):
            code.module = _import(path)
    except Exception as exc:  # noqa: BLE001 - an import can raise anything
        error = code.error(exc, "importing pretrained.py")
        error.key = "import"
        raise error from None
    return code


def import_notebook(notebook: Path, work: Path) -> Code:
    """Run a notebook's code cells top to bottom (as Restart and Run All would) in a module written to ``work``."""
    notebook = Path(notebook).resolve()
    try:
        cells = notebook_cells(notebook)
    except Exception as exc:  # noqa: BLE001 - nbformat raises many kinds for a broken file
        raise StudentError(f"{notebook.name} is not a readable notebook: {exc}", key="import") from None
    labels = write_loader(cells, work, notebook.name)
    files = {os.path.realpath(work / name): label for name, label in labels.items()}
    code = Code(ModuleType(MODULE), files, {}, notebook.name)
    try:
        with budget.timed(f"running {notebook.name}"):
            code.module = _import(work / LOADER_NAME)
    except Exception as exc:  # noqa: BLE001 - the loader itself keeps cell errors; this is anything else
        raise code.error(exc, f"running {notebook.name}") from None
    errors = getattr(code.module, "__notebook_errors__", [])
    if errors:
        raise StudentError(describe_errors(errors, cells, notebook.name), key="import")
    return code
