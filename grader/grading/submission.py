"""Turn what a student handed in into a folder the student processes import.

Accepted (LAB_CONTRACT.md section 1): a folder holding ``pretrained.py`` at its top,
in ``src/`` or deeper (the course's chapter layout, ``lab04_pretrained_weights/src/``
beside ``lab03_decoder_transformer/src/``, is one submission), a ``.zip`` of one, or a
Jupyter notebook (or a folder holding exactly one). The folder structure is kept, so
the course template's ``sys.path`` line that reaches the sibling Lab 03 folder works.
A submission that cannot be used is not an exception: it comes back with ``problem``.
"""

from __future__ import annotations

import ast
import os
import re
import shutil
import stat
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from lab04_checks.notebook import LOADER_NAME, notebook_cells, write_loader

from ..text import clean

MAX_TOTAL_BYTES = 50 * 2**20  # more than any honest submission of this lab
MAX_FILE_BYTES = 10 * 2**20
MAX_FILES = 2000
SKIPPED_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".npz", ".npy", ".pyc", ".h5", ".gguf")
SKIPPED_DIRS = {
    "__pycache__",
    "__MACOSX",
    ".git",
    ".venv",
    "venv",
    "env",
    ".ipynb_checkpoints",
    "node_modules",
    "site-packages",
    ".pytest_cache",
    ".mypy_cache",
    ".ruff_cache",
}
LAB03_FROM_CODE = ("..", "..", "lab03_decoder_transformer", "src", "decoder.py")


@dataclass
class Prepared:
    """A submission laid out for import, and what was done to get there."""

    work: Path
    kind: str  # folder | zip | notebook | chapter folder | ...
    module: str = "pretrained.py"  # path of pretrained.py inside ``work``
    decoders: list[str] = field(default_factory=list)  # decoder.py files to try for GPTModel, in order
    files: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    problem: str | None = None
    cell_files: dict[str, str] = field(default_factory=dict)  # notebook: generated file -> "lab04.ipynb, cell 3"
    cells: list[tuple[int, str]] = field(default_factory=list)  # notebook: (cell number, source) of each code cell
    notebook: str = ""  # notebook: its file name, as the student knows it

    @property
    def code_folder(self) -> str:
        return str(PurePosixPath(self.module).parent)

    @property
    def module_label(self) -> str:
        return "the notebook" if self.cell_files else self.module

    def rename(self, text: str) -> str:
        """Point notebook students at their cells, not at the grader's generated files."""
        for generated, label in self.cell_files.items():
            text = re.sub(rf"(?:[\w./-]*/)?{re.escape(generated)}, line", lambda _, label=label: f"{label}, line", text)
        return text


def prepare(source: Path, work: Path) -> Prepared:
    """Lay ``source`` out in the empty folder ``work``."""
    source = Path(source)
    work.mkdir(parents=True, exist_ok=True)
    if source.is_file() and source.suffix.lower() == ".zip":
        extracted = work.parent / "extracted"
        problem = safe_extract(source, extracted)
        if problem:
            return Prepared(work, "zip", problem=problem)
        prepared = _prepare_folder(extracted, work)
        prepared.kind = f"zip ({prepared.kind})"
        return prepared
    if source.is_file() and source.suffix == ".ipynb":
        return _prepare_notebook(source, work)
    if source.is_file() and source.name == "pretrained.py":
        return _prepare_folder(source.parent, work, only={"pretrained.py", "decoder.py"})
    if source.is_dir():
        return _prepare_folder(source, work)
    return Prepared(work, "unknown", problem=f"{clean(source.name, 200)} is not a folder, a .zip or a .ipynb notebook")


def safe_extract(archive: Path, dest: Path) -> str | None:
    """Extract a zip, refusing entries that would land outside ``dest``; a problem or None."""
    try:
        with zipfile.ZipFile(archive) as zf:
            members = zf.infolist()
            if len(members) > MAX_FILES * 4:
                return f"the zip has {len(members)} entries (at most {MAX_FILES * 4})"
            if sum(m.file_size for m in members) > MAX_TOTAL_BYTES * 4:
                return f"the zip expands to more than {MAX_TOTAL_BYTES * 4 // 2**20} MB"
            dest.mkdir(parents=True, exist_ok=True)
            root = dest.resolve()
            for member in members:
                name = PurePosixPath(member.filename.replace("\\", "/"))
                target = (root / name).resolve()
                if name.is_absolute() or ".." in name.parts or not target.is_relative_to(root):
                    return f"the zip entry {clean(member.filename, 200)!r} would land outside the submission folder"
                if stat.S_ISLNK(member.external_attr >> 16):
                    continue  # symbolic links are never followed
                if member.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                if _skip(PurePosixPath(*name.parts[:-1])) or name.suffix in SKIPPED_SUFFIXES:
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(member) as src, target.open("wb") as out:
                    shutil.copyfileobj(src, out, length=1 << 20)
    except Exception as exc:  # noqa: BLE001 - corrupt streams raise zlib.error, RuntimeError, NotImplementedError...
        return f"the zip cannot be read ({type(exc).__name__}: {clean(exc, 200)})"
    return None


def _skip(rel: PurePosixPath | Path) -> bool:
    return any(part.startswith(".") or part in SKIPPED_DIRS for part in rel.parts)


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


def _walk(root: Path) -> list[Path]:
    """Regular files under ``root``: no links followed, no hidden or tool folders, names that are text."""
    out = []
    for folder, dirs, files in os.walk(root, followlinks=False):
        rel = Path(folder).relative_to(root)
        dirs[:] = sorted(d for d in dirs if not _skip(rel / d))
        for name in sorted(files):
            out.append(Path(folder) / name)
            if len(out) > MAX_FILES * 4:
                return out
    return out


def _candidates(root: Path, files: list[Path]) -> list[Path]:
    """The pretrained.py files, best first: the shallowest, a lab04 folder before others."""
    found = [
        p
        for p in files
        if p.name == "pretrained.py" and _real_file(p) and not _linked(p, root) and _utf8(p.relative_to(root))
    ]
    # "lab04" in the path below the submission's root only: where the grader unpacked it says nothing
    return sorted(
        found, key=lambda p: (len(p.relative_to(root).parts), "lab04" not in p.relative_to(root).as_posix(), str(p))
    )


def _utf8(rel: Path) -> bool:
    """A path the student processes can be given (a name that is not UTF-8 cannot be copied)."""
    try:
        rel.as_posix().encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _prepare_folder(root: Path, work: Path, only: set[str] | None = None) -> Prepared:
    files = _walk(root)
    candidates = _candidates(root, files)
    notebooks = [p for p in files if p.suffix == ".ipynb" and _real_file(p)]
    if candidates and len(notebooks) == 1 and is_untouched_stub(candidates[0]) and _notebook_is_filled(notebooks[0]):
        prepared = _prepare_notebook(notebooks[0], work)
        prepared.kind = "folder with a notebook"
        prepared.notes.insert(
            0,
            f"graded {clean(notebooks[0].name, 100)}: "
            f"{clean(candidates[0].relative_to(root).as_posix(), 200)} still holds the "
            "template's stubs",
        )
        return prepared
    if not candidates:
        if len(notebooks) == 1:
            prepared = _prepare_notebook(notebooks[0], work)
            prepared.kind = "folder with a notebook"
            return prepared
        problem = (
            f"found {len(notebooks)} notebooks and no pretrained.py: hand in one"
            if len(notebooks) > 1
            else "no pretrained.py or notebook found in the submission (looked in its top folder, src/ and below)"
        )
        return Prepared(work, "folder", problem=problem)
    code = candidates[0]
    module = code.relative_to(root).as_posix()
    # the graded code and what sits beside it first, so that the caps never push it out
    lab03 = Path(os.path.normpath(code.parent.joinpath(*LAB03_FROM_CODE)))
    files = sorted(files, key=lambda p: (p != code, p != lab03, p.parent != code.parent))
    copied, notes = _copy_tree(root, files, work, only)
    if not (work / module).is_file():
        return Prepared(
            work, _kind(root, code), problem=f"{clean(module, 200)} could not be copied: {'; '.join(notes[:3])}"
        )
    prepared = Prepared(work, _kind(root, code), module=module, files=copied, notes=notes)
    beside = PurePosixPath(module).parent / "decoder.py"
    if (work / beside).is_file():
        prepared.decoders.append(str(beside))
    sibling = os.path.normpath(os.path.join(str(PurePosixPath(module).parent), *LAB03_FROM_CODE))
    if not sibling.startswith("..") and (work / sibling).is_file():
        prepared.decoders.append(sibling)
    if len(candidates) > 1:
        prepared.notes.append(
            f"graded {module}; also found "
            + ", ".join(clean(c.relative_to(root).as_posix(), 200) for c in candidates[1:4])
        )
    return prepared


def _kind(root: Path, code: Path) -> str:
    parts = code.relative_to(root).parts
    if len(parts) >= 3 and parts[-2] == "src" and parts[-3].startswith("lab04"):
        return "chapter folder" if len(parts) == 3 else "course folder"
    return "folder"


def _copy_tree(root: Path, files: list[Path], dest: Path, only: set[str] | None) -> tuple[list[str], list[str]]:
    """Copy regular files (no links, no weights, nothing hidden), within the size caps."""
    copied, notes, total = [], [], 0
    for path in files:
        rel = path.relative_to(root)
        if only is not None and rel.as_posix() not in only:
            continue
        shown = clean(rel.as_posix(), 200)
        if not _utf8(rel):
            notes.append(f"ignored {shown} (its name is not UTF-8)")
            continue
        if path.is_symlink() or not path.is_file():
            continue
        if path.suffix in SKIPPED_SUFFIXES:
            notes.append(f"ignored {shown} (weights and binaries are not used)")
            continue
        size = path.stat().st_size
        if size > MAX_FILE_BYTES or total + size > MAX_TOTAL_BYTES or len(copied) >= MAX_FILES:
            notes.append(f"ignored {shown} (too large)")
            continue
        total += size
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, dest / rel)
        copied.append(shown)
    return copied, notes[:50]


_STUB_BODY = re.compile(r"^\s*raise\s+NotImplementedError\b")


def is_untouched_stub(path: Path) -> bool:
    """True when load_gpt2_weights in ``path`` is still the template's ``raise NotImplementedError``."""
    try:
        tree = ast.parse(path.read_text(errors="replace"))
    except (SyntaxError, ValueError, OSError):
        return False
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and node.name == "load_gpt2_weights":
            body = [n for n in node.body if not (isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant))]
            return len(body) == 1 and isinstance(body[0], ast.Raise) and "NotImplementedError" in ast.unparse(body[0])
    return False


def _notebook_is_filled(path: Path) -> bool:
    try:
        cells = notebook_cells(path)
    except Exception:  # noqa: BLE001 - an unreadable notebook is not the one to grade
        return False
    source = "\n".join(code for _, code in cells)
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return "def load_gpt2_weights" in source
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and node.name == "load_gpt2_weights":
            body = [n for n in node.body if not (isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant))]
            return not (len(body) == 1 and isinstance(body[0], ast.Raise))
    return False


def _prepare_notebook(path: Path, work: Path) -> Prepared:
    try:
        cells = notebook_cells(path)
    except Exception as exc:  # noqa: BLE001 - nbformat raises many kinds for a broken file
        return Prepared(
            work, "notebook", problem=f"{clean(path.name, 100)} is not a readable notebook ({clean(exc, 200)})"
        )
    name = clean(path.name, 100)
    cell_files = write_loader(cells, work, name)
    return Prepared(
        work,
        "notebook",
        module=LOADER_NAME,
        files=[clean(path.name, 200)],
        cell_files=cell_files,
        cells=cells,
        notebook=name,
        notes=[f"{len(cells)} code cells"],
    )
