"""Turn what a student handed in (a folder, a .zip or a notebook) into a folder the child imports.

The result always holds ``pretrained.py``; ``decoder.py`` is the student's
when they sent one and the reference's otherwise. A submission that cannot be
used (no ``pretrained.py``, a broken zip) is not an exception: it comes back
with ``problem`` set, and every tier reports it.
"""

from __future__ import annotations

import io
import json
import re
import shutil
import stat
import tokenize
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import nbformat

MAX_TOTAL_BYTES = 50 * 2**20  # more than any honest submission of this lab
MAX_FILE_BYTES = 10 * 2**20
MAX_FILES = 2000
SKIPPED_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".npz", ".npy", ".pyc")
NOTEBOOK_MAIN = "pretrained.py"
REFERENCE_DECODER = Path(__file__).resolve().parent.parent / "reference" / "decoder.py"
# Cell magics whose body is still Python: keep the body, drop the magic line.
PYTHON_CELL_MAGICS = ("%%time", "%%timeit", "%%capture")
# IPython-only lines: `%magic`, `!shell`, and their assignment forms `x = !ls`, `t = %timeit f()`.
_IPYTHON_LINE = re.compile(r"^\s*(?:[\w.,\s()\[\]]+=\s*)?[%!]")


@dataclass
class Prepared:
    """A submission laid out for import, and what was done to get there."""

    work: Path
    kind: str  # directory | zip | notebook
    decoder: str  # submission | reference
    files: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    problem: str | None = None
    cell_files: dict[str, str] = field(default_factory=dict)  # notebook: generated file -> "lab04.ipynb, cell 3"


def prepare(source: Path, work: Path) -> Prepared:
    """Lay ``source`` out in the empty folder ``work``."""
    source = Path(source)
    work.mkdir(parents=True, exist_ok=True)
    if source.is_file() and source.suffix == ".zip":
        extracted = work.parent / "extracted"
        problem = safe_extract(source, extracted)
        if problem:
            return Prepared(work, "zip", "reference", problem=problem)
        prepared = _prepare_directory(extracted, work)
        prepared.kind = "zip"
        return prepared
    if source.is_file() and source.suffix == ".ipynb":
        return _prepare_notebook(source, work)
    if source.is_file() and source.name == "pretrained.py":
        return _prepare_directory(source.parent, work, only=[source.name, "decoder.py"])
    if source.is_dir():
        return _prepare_directory(source, work)
    return Prepared(work, "unknown", "reference",
                    problem=f"{source.name} is not a folder, a .zip or a .ipynb notebook")  # fmt: skip


def safe_extract(archive: Path, dest: Path) -> str | None:
    """Extract a zip, refusing entries that would land outside ``dest``; a problem or None."""
    try:
        with zipfile.ZipFile(archive) as zf:
            members = zf.infolist()
            if len(members) > MAX_FILES:
                return f"the zip has {len(members)} entries (at most {MAX_FILES})"
            if sum(m.file_size for m in members) > MAX_TOTAL_BYTES:
                return f"the zip expands to more than {MAX_TOTAL_BYTES // 2**20} MB"
            dest.mkdir(parents=True, exist_ok=True)
            root = dest.resolve()
            for member in members:
                name = PurePosixPath(member.filename.replace("\\", "/"))
                target = (root / name).resolve()
                if name.is_absolute() or ".." in name.parts or not target.is_relative_to(root):
                    return f"the zip entry {member.filename!r} would land outside the submission folder"
                if stat.S_ISLNK(member.external_attr >> 16):
                    continue  # symbolic links are never followed
                if member.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(member) as src, target.open("wb") as out:
                    shutil.copyfileobj(src, out, length=1 << 20)
    except Exception as exc:  # noqa: BLE001 - corrupt streams raise zlib.error, RuntimeError, NotImplementedError...
        return f"the zip cannot be read ({type(exc).__name__}: {exc})"
    return None


def _skip(path: Path) -> bool:
    return any(part.startswith(".") or part in ("__pycache__", "__MACOSX") for part in path.parts)


def _real_file(path: Path) -> bool:
    return path.is_file() and not path.is_symlink()


def _linked(path: Path, root: Path) -> bool:
    """True when a folder between ``root`` and ``path`` is a symbolic link (links are never followed)."""
    folder = path.parent
    while folder != root:
        if folder.is_symlink():
            return True
        folder = folder.parent
    return False


def find_code_folder(root: Path) -> Path | None:
    """The folder holding pretrained.py: the root, src/, or the shallowest one below."""
    for candidate in (root, root / "src"):
        if not candidate.is_symlink() and _real_file(candidate / "pretrained.py"):
            return candidate
    found = sorted(
        (
            p
            for p in root.rglob("pretrained.py")
            if not _skip(p.relative_to(root)) and _real_file(p) and not _linked(p, root)
        ),
        key=lambda p: (len(p.parts), str(p)),
    )
    return found[0].parent if found else None


def _copy_tree(src: Path, dest: Path, only: list[str] | None = None) -> tuple[list[str], list[str]]:
    """Copy regular files (no links, no weights, nothing hidden), within the size caps."""
    copied, notes, total = [], [], 0
    for path in sorted(src.rglob("*")):
        rel = path.relative_to(src)
        if only is not None and str(rel) not in only:
            continue
        if _skip(rel) or path.is_symlink() or not path.is_file():
            continue
        if path.suffix in SKIPPED_SUFFIXES:
            notes.append(f"ignored {rel} (weights and binaries are not used)")
            continue
        size = path.stat().st_size
        if size > MAX_FILE_BYTES or total + size > MAX_TOTAL_BYTES or len(copied) >= MAX_FILES:
            notes.append(f"ignored {rel} (too large)")
            continue
        total += size
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, dest / rel)
        copied.append(rel.as_posix())
    return copied, notes


def _prepare_directory(root: Path, work: Path, only: list[str] | None = None) -> Prepared:
    code = find_code_folder(root)
    if code is None:
        notebooks = [p for p in root.rglob("*.ipynb") if not _skip(p.relative_to(root))]
        if len(notebooks) == 1:
            prepared = _prepare_notebook(notebooks[0], work)
            prepared.kind = "directory with a notebook"
            return prepared
        where = "a notebook" if notebooks else "pretrained.py"
        problem = (f"found {len(notebooks)} notebooks and no pretrained.py: hand in one" if len(notebooks) > 1
                   else f"no {where} found in the submission (looked in its top folder, src/ and below)")  # fmt: skip
        return Prepared(work, "directory", "reference", problem=problem)
    files, notes = _copy_tree(code, work, only)
    decoder = "submission" if (work / "decoder.py").is_file() else "reference"
    if decoder == "reference":
        shutil.copyfile(REFERENCE_DECODER, work / "decoder.py")
    if code != root:
        notes.insert(0, f"code found in {code.relative_to(root).as_posix() or '.'}/")
    return Prepared(work, "directory", decoder, files=files, notes=notes)


def notebook_cells(path: Path) -> list[tuple[int, str]]:
    """The Python source of each code cell (its 1-based position among all cells), without magics and shell lines."""
    nb = nbformat.read(str(path), as_version=4)
    cells = []
    for number, cell in enumerate(nb.cells, start=1):  # counted as Jupyter shows them, markdown included
        if cell.cell_type != "code":
            continue
        lines = cell.source.splitlines()
        if lines and lines[0].lstrip().startswith("%%"):
            if lines[0].split()[0] not in PYTHON_CELL_MAGICS:
                continue  # %%bash, %%writefile ...: not Python, never run
            lines[0] = ""
        # Keep line numbers stable: a dropped line becomes a blank one.
        kept: list[str] = []
        for line in lines:
            # Only at the start of a logical line: `   % x)` continuing an expression is Python.
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


def _prepare_notebook(path: Path, work: Path) -> Prepared:
    try:
        cells = notebook_cells(path)
    except Exception as exc:  # noqa: BLE001 - nbformat raises many kinds for a broken file
        return Prepared(work, "notebook", "reference", problem=f"{path.name} is not a readable notebook ({exc})")
    cell_files: dict[str, str] = {}
    loader = [
        '"""Generated by the grader: runs the notebook\'s code cells in order, as Jupyter would."""',
        "import sys as _sys",
        "_errors = []",
    ]
    for number, source in cells:
        name = f"_cell_{number:03d}.py"
        (work / name).write_text(source)
        cell_files[name] = f"{path.name}, cell {number}"
        # A failing cell (a demo that needs the hub, say) does not stop later cells, as in "Run All" with errors ignored.
        loader += [
            "try:",
            f"    exec(compile(open(__file__.replace('{NOTEBOOK_MAIN}', '{name}')).read(), "
            f"__file__.replace('{NOTEBOOK_MAIN}', '{name}'), 'exec'), globals())",
            "except BaseException as _exc:  # noqa: BLE001",
            f"    _errors.append(({number}, type(_exc).__name__, str(_exc)[:200]))",
        ]
    loader.append("__notebook_errors__ = _errors")
    (work / NOTEBOOK_MAIN).write_text("\n".join(loader) + "\n")
    shutil.copyfile(REFERENCE_DECODER, work / "decoder.py")
    decoder = "reference"  # the child switches to the notebook's own GPTModel when it defines one
    (work / "_cells.json").write_text(json.dumps(cell_files))
    return Prepared(work, "notebook", decoder, files=[path.name], cell_files=cell_files,
                    notes=[f"{len(cells)} code cells"])  # fmt: skip
