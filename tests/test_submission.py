"""What a student hands in (folder, src/, chapter layout, .zip, notebook) becomes a folder the student processes import.

Covers ``grader/grading/submission.py`` (``prepare``, ``safe_extract``, ``is_untouched_stub``,
``Prepared``) and ``lab04_checks/notebook.py`` (``notebook_cells``, ``write_loader``, ``cell_of``),
including a run of the generated notebook loader in a fresh interpreter.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import nbformat
import pytest
from conftest import REFERENCE, make_submission

from grader.artifacts.template import stub_source
from grader.artifacts.template_notebook import notebook as template_notebook
from grader.grading.submission import (
    MAX_FILE_BYTES,
    MAX_FILES,
    MAX_TOTAL_BYTES,
    Prepared,
    is_untouched_stub,
    prepare,
    safe_extract,
)
from lab04_checks.notebook import LOADER_NAME, cell_of, notebook_cells, write_loader

PRETRAINED = (REFERENCE / "pretrained.py").read_text()
DECODER = (REFERENCE / "decoder.py").read_text()
STUB = stub_source()  # src/pretrained.py as the course template hands it out
LAB03 = "lab03_decoder_transformer/src/decoder.py"
LAB04 = "lab04_pretrained_weights/src/pretrained.py"


def write_zip(path: Path, entries: dict[str, str | bytes], method: int = zipfile.ZIP_DEFLATED) -> Path:
    """A zip holding ``entries`` (name -> content), names kept exactly as given."""
    with zipfile.ZipFile(path, "w", method) as zf:
        for name, content in entries.items():
            zf.writestr(name, content)
    return path


def write_notebook(path: Path, cells: list[str | tuple[str, str]]) -> Path:
    """A notebook of code cells; ("markdown", text) and ("raw", text) make the other kinds."""
    make = {"markdown": nbformat.v4.new_markdown_cell, "raw": nbformat.v4.new_raw_cell}
    nb = nbformat.v4.new_notebook()
    nb.cells = [make[c[0]](c[1]) if isinstance(c, tuple) else nbformat.v4.new_code_cell(c) for c in cells]
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, str(path))
    return path


def files_under(folder: Path) -> set[str]:
    """Relative paths of every file and link below ``folder``."""
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file() or p.is_symlink()}


RUN_LOADER = """
import importlib.util, json, sys
spec = importlib.util.spec_from_file_location("student_notebook", sys.argv[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
names = {n: getattr(module, n) for n in sys.argv[2:] if isinstance(getattr(module, n, None), (int, str))}
print(json.dumps({"errors": module.__notebook_errors__, "names": names}))
"""


def run_loader(work: Path, *names: str) -> dict:
    """Import the generated loader in a fresh interpreter: its ``__notebook_errors__`` and the named globals."""
    done = subprocess.run(
        [sys.executable, "-c", RUN_LOADER, str(work / LOADER_NAME), *names],
        cwd=work,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.splitlines()[-1])


# ---------------------------------------------------------------- folders


@pytest.mark.parametrize(
    ("prefix", "kind"),
    [("", "folder"), ("src/", "folder"), ("alice/work/code/src/", "folder")],
    ids=["flat", "src", "nested deeper"],
)
def test_pretrained_py_is_found_and_its_folder_structure_kept(tmp_path: Path, prefix: str, kind: str) -> None:
    """pretrained.py at the top, in src/ or deeper: graded where it is, every other file kept at its place."""
    files = {f"{prefix}pretrained.py": PRETRAINED, "README.md": "my notes\n", f"{prefix}helpers/util.py": "X = 1\n"}
    prepared = prepare(make_submission(tmp_path / "sub", files), tmp_path / "work")
    assert prepared.problem is None
    assert prepared.kind == kind
    assert prepared.module == f"{prefix}pretrained.py"
    assert prepared.code_folder == (prefix.rstrip("/") or ".")
    assert prepared.decoders == []  # no decoder.py anywhere: none to try
    assert files_under(prepared.work) == set(files) == set(prepared.files)
    assert (prepared.work / prepared.module).read_text() == PRETRAINED


def test_decoder_beside_pretrained_is_the_first_to_try(tmp_path: Path) -> None:
    """decoder.py beside pretrained.py is tried first, the course's sibling Lab 03 one second."""
    files = {
        "lab04_pretrained_weights/src/pretrained.py": PRETRAINED,
        "lab04_pretrained_weights/src/decoder.py": DECODER,
        LAB03: DECODER,
    }
    prepared = prepare(make_submission(tmp_path / "sub", files), tmp_path / "work")
    assert prepared.decoders == ["lab04_pretrained_weights/src/decoder.py", LAB03]
    flat = prepare(
        make_submission(tmp_path / "flat", {"pretrained.py": PRETRAINED, "decoder.py": DECODER}), tmp_path / "flat_work"
    )
    assert flat.decoders == ["decoder.py"]


@pytest.mark.parametrize("top", ["", "chapters/ch03_complete_transformer/"], ids=["chapter", "course"])
def test_course_chapter_layout_keeps_its_paths_and_lists_the_sibling_decoder(tmp_path: Path, top: str) -> None:
    """lab04_pretrained_weights/src/ beside lab03_decoder_transformer/src/ is one submission, paths as they were."""
    files = {top + LAB04: PRETRAINED, top + LAB03: DECODER, top + "lab04_pretrained_weights/README.md": "hi\n"}
    prepared = prepare(make_submission(tmp_path / "sub", files), tmp_path / "work")
    assert prepared.problem is None
    assert prepared.kind == ("chapter folder" if not top else "course folder")
    assert prepared.module == top + LAB04
    assert prepared.decoders == [top + LAB03]
    # The template's sys.path line (two folders up, then lab03_decoder_transformer/src) reaches it in the copy.
    code = prepared.work / prepared.module
    assert (code.parent.parent.parent / "lab03_decoder_transformer" / "src" / "decoder.py").read_text() == DECODER


def test_sibling_decoder_outside_the_submission_is_not_listed(tmp_path: Path) -> None:
    """src/pretrained.py at depth 2: the Lab 03 path would leave the submission, so no decoder is listed."""
    make_submission(tmp_path, {LAB03: DECODER})  # beside the work folder, where ../../ from src/ would reach
    prepared = prepare(make_submission(tmp_path / "sub", {"src/pretrained.py": PRETRAINED}), tmp_path / "work")
    assert prepared.decoders == []


def test_the_shallowest_pretrained_py_wins_and_a_note_names_the_others(tmp_path: Path) -> None:
    """Several pretrained.py: the shallowest is graded; the note names the others."""
    files = {
        "src/pretrained.py": PRETRAINED,
        "old/attempt/pretrained.py": "OLD = 1\n",
        "backup/v2/src/pretrained.py": "",
    }
    prepared = prepare(make_submission(tmp_path / "sub", files), tmp_path / "work")
    assert prepared.module == "src/pretrained.py"
    assert prepared.notes == [
        "graded src/pretrained.py; also found old/attempt/pretrained.py, backup/v2/src/pretrained.py"
    ]


def test_at_equal_depth_the_course_folder_wins_over_others(tmp_path: Path) -> None:
    """Same depth: the one in a lab04 folder is graded even when another sorts first."""
    files = {"attempt/src/pretrained.py": "A = 1\n", LAB04: PRETRAINED}
    prepared = prepare(make_submission(tmp_path / "sub", files), tmp_path / "work")
    assert prepared.module == LAB04
    assert prepared.notes == [f"graded {LAB04}; also found attempt/src/pretrained.py"]


def test_the_course_folder_preference_ignores_where_the_submission_sits(tmp_path: Path) -> None:
    """The same zip, laid out in a scratch folder named as the engine names it, still grades the lab04 code."""
    archive = write_zip(tmp_path / "sub.zip", {"attempt/src/pretrained.py": "A = 1\n", LAB04: PRETRAINED})
    prepared = prepare(archive, tmp_path / "lab04-grade-x1y2" / "submission")
    assert prepared.module == LAB04


def test_a_pretrained_py_file_brings_only_itself_and_its_decoder(tmp_path: Path) -> None:
    """Given pretrained.py itself, only it and the decoder.py beside it are used."""
    folder = make_submission(
        tmp_path / "sub",
        {"pretrained.py": PRETRAINED, "decoder.py": DECODER, "helper.py": "x = 1\n", "src/other.py": "y = 2\n"},
    )
    prepared = prepare(folder / "pretrained.py", tmp_path / "work")
    assert prepared.problem is None
    assert sorted(prepared.files) == ["decoder.py", "pretrained.py"]
    assert files_under(prepared.work) == {"decoder.py", "pretrained.py"}
    assert prepared.decoders == ["decoder.py"]


def test_preparing_never_writes_into_the_students_folder(tmp_path: Path) -> None:
    """The source folder is read, never written."""
    folder = make_submission(tmp_path / "sub", {"src/pretrained.py": PRETRAINED, "src/decoder.py": DECODER})
    before = {p: p.stat().st_mtime_ns for p in folder.rglob("*")}
    prepare(folder, tmp_path / "work")
    assert {p: p.stat().st_mtime_ns for p in folder.rglob("*")} == before


# ---------------------------------------------------------------- links, skipped folders, caps, names


def test_symlinks_in_a_folder_are_never_followed(tmp_path: Path) -> None:
    """A linked file, a linked folder and a linked pretrained.py: none is copied, none is graded."""
    outside = make_submission(
        tmp_path / "outside", {"secret.py": "TOKEN = 'secret'\n", "pretrained.py": "STOLEN = 1\n"}
    )
    folder = make_submission(tmp_path / "sub", {"code/pretrained.py": PRETRAINED})
    (folder / "helper.py").symlink_to(outside / "secret.py")
    (folder / "lib").symlink_to(outside, target_is_directory=True)
    (folder / "pretrained.py").symlink_to(outside / "pretrained.py")  # shallower than the real one
    prepared = prepare(folder, tmp_path / "work")
    assert prepared.problem is None
    assert prepared.module == "code/pretrained.py"
    assert files_under(prepared.work) == {"code/pretrained.py"}
    assert not any(p.is_symlink() for p in prepared.work.rglob("*"))


def test_a_linked_folder_is_never_read(tmp_path: Path) -> None:
    """A linked src/ holding a shallower pretrained.py: neither graded nor copied; the real, deeper one is graded."""
    outside = make_submission(tmp_path / "outside", {"pretrained.py": "STOLEN = 1\n", "secret.txt": "secret\n"})
    folder = make_submission(tmp_path / "sub", {"code/deep/pretrained.py": PRETRAINED})
    (folder / "src").symlink_to(outside, target_is_directory=True)
    prepared = prepare(folder, tmp_path / "work")
    assert prepared.module == "code/deep/pretrained.py"
    assert files_under(prepared.work) == {"code/deep/pretrained.py"}


def test_a_linked_src_folder_alone_is_no_submission(tmp_path: Path) -> None:
    """src/ linking to a folder outside: nothing is read through it, so there is no pretrained.py."""
    outside = make_submission(tmp_path / "outside", {"pretrained.py": "STOLEN = 1\n", "secret.txt": "secret\n"})
    folder = make_submission(tmp_path / "sub", {"README.md": "hi\n"})
    (folder / "src").symlink_to(outside, target_is_directory=True)
    prepared = prepare(folder, tmp_path / "work")
    assert prepared.problem is not None and "pretrained.py" in prepared.problem
    assert "secret.txt" not in {p.name for p in tmp_path.joinpath("work").rglob("*")}


def test_weights_and_tool_folders_are_skipped(tmp_path: Path) -> None:
    """Weights are left out with a note; .venv, venv, .git, __pycache__, checkpoints and caches silently."""
    skipped = {
        ".venv/lib/site.py",
        "venv/bin/pretrained.py",
        ".git/config",
        "__pycache__/pretrained.cpython-311.pyc",
        ".ipynb_checkpoints/pretrained-checkpoint.py",
        "node_modules/x.js",
        "src/__pycache__/pretrained.py",
        "__MACOSX/._pretrained.py",
    }
    weights = {"model.safetensors", "src/pytorch_model.bin", "cache.npy", "w.pt"}
    kept = {"src/pretrained.py", "src/decoder.py", "README.md"}
    files = dict.fromkeys(skipped | weights | kept, "x = 1\n")
    prepared = prepare(make_submission(tmp_path / "sub", files), tmp_path / "work")
    assert prepared.module == "src/pretrained.py"
    assert files_under(prepared.work) == kept == set(prepared.files)
    assert sorted(prepared.notes) == sorted(f"ignored {w} (weights and binaries are not used)" for w in weights)


def test_a_file_over_the_size_cap_is_left_out_with_a_note(tmp_path: Path) -> None:
    """A file larger than MAX_FILE_BYTES is not copied; the note says why."""
    folder = make_submission(tmp_path / "sub", {"pretrained.py": PRETRAINED})
    with (folder / "big.txt").open("wb") as fh:
        fh.truncate(MAX_FILE_BYTES + 1)  # sparse: large on paper, cheap on disk
    with (folder / "fits.txt").open("wb") as fh:
        fh.truncate(MAX_FILE_BYTES)
    prepared = prepare(folder, tmp_path / "work")
    assert files_under(prepared.work) == {"pretrained.py", "fits.txt"}
    assert prepared.notes == ["ignored big.txt (too large)"]


def test_files_past_the_total_size_cap_are_left_out(tmp_path: Path) -> None:
    """Once MAX_TOTAL_BYTES are copied, the next file that would pass it is left out."""
    folder = make_submission(tmp_path / "sub", {"pretrained.py": PRETRAINED})  # sorts after data_*: room is left
    each = 9 * 2**20
    count = MAX_TOTAL_BYTES // each + 1
    for i in range(count):
        with (folder / f"data_{i}.bin.txt").open("wb") as fh:
            fh.truncate(each)
    prepared = prepare(folder, tmp_path / "work")
    copied = sorted(p for p in files_under(prepared.work) if p.startswith("data_"))
    assert len(copied) == MAX_TOTAL_BYTES // each
    assert prepared.notes == [f"ignored data_{count - 1}.bin.txt (too large)"]
    assert sum((prepared.work / p).stat().st_size for p in files_under(prepared.work)) <= MAX_TOTAL_BYTES


def test_files_past_the_count_cap_are_left_out(tmp_path: Path) -> None:
    """At most MAX_FILES files are copied; pretrained.py at the top is among them."""
    folder = make_submission(tmp_path / "sub", {"pretrained.py": PRETRAINED})
    (folder / "notes").mkdir()
    for i in range(MAX_FILES + 3):
        (folder / "notes" / f"n{i:05d}.txt").write_text("")
    prepared = prepare(folder, tmp_path / "work")
    assert len(files_under(prepared.work)) == len(prepared.files) == MAX_FILES
    assert (prepared.work / "pretrained.py").is_file()
    assert len(prepared.notes) == 4 and all(n.endswith("(too large)") for n in prepared.notes)


def test_the_graded_pretrained_py_survives_the_caps(tmp_path: Path) -> None:
    """MAX_FILES files that sort before src/: either pretrained.py is copied, or the submission has a problem."""
    folder = make_submission(tmp_path / "sub", {"src/pretrained.py": PRETRAINED})
    (folder / "a_data").mkdir()
    for i in range(MAX_FILES):
        (folder / "a_data" / f"{i:05d}.txt").write_text("")
    prepared = prepare(folder, tmp_path / "work")
    assert prepared.problem is not None or (prepared.work / prepared.module).is_file()


def test_a_file_name_that_is_not_utf8_is_noted_not_copied(tmp_path: Path) -> None:
    """notes\\xff.txt (bytes a Linux folder may hold): a printable note, the rest graded, no exception."""
    folder = make_submission(tmp_path / "sub", {"pretrained.py": PRETRAINED})
    with open(os.path.join(os.fsencode(folder), b"notes\xff.txt"), "w") as fh:
        fh.write("todo\n")
    prepared = prepare(folder, tmp_path / "work")
    assert prepared.problem is None and prepared.module == "pretrained.py"
    assert prepared.notes == ["ignored notes?.txt (its name is not UTF-8)"]
    assert files_under(prepared.work) == {"pretrained.py"}
    json.dumps(prepared.notes, ensure_ascii=False).encode("utf-8")  # the report can hold it


def test_pretrained_py_under_a_folder_name_that_is_not_utf8(tmp_path: Path) -> None:
    """Either a problem, or a module that exists in the work folder."""
    folder = tmp_path / "sub"
    code = os.path.join(os.fsencode(folder), b"my\xffcode")
    os.makedirs(code)
    with open(os.path.join(code, b"pretrained.py"), "w") as fh:
        fh.write(PRETRAINED)
    prepared = prepare(folder, tmp_path / "work")
    assert prepared.problem is not None or (prepared.work / prepared.module).is_file()


# ---------------------------------------------------------------- no usable pretrained.py


@pytest.mark.parametrize(
    ("files", "says"),
    [
        ({"decoder.py": DECODER, "notes.txt": "todo\n"}, "no pretrained.py or notebook"),
        (
            {".backup/pretrained.py": PRETRAINED, "__pycache__/pretrained.py": "", ".venv/pretrained.py": ""},
            "no pretrained.py or notebook",
        ),
        ({}, "no pretrained.py or notebook"),
        ({"a.ipynb": "{}", "b.ipynb": "{}"}, "found 2 notebooks and no pretrained.py"),
    ],
    ids=["only a decoder", "only in skipped folders", "empty", "two notebooks"],
)
def test_no_pretrained_py_is_a_problem_not_an_exception(tmp_path: Path, files: dict[str, str], says: str) -> None:
    """A folder without a usable pretrained.py comes back with a problem saying so."""
    folder = make_submission(tmp_path / "sub", files)
    folder.mkdir(exist_ok=True)
    prepared = prepare(folder, tmp_path / "work")
    assert prepared.problem is not None and says in prepared.problem


@pytest.mark.parametrize("name", ["notes.txt", "missing_folder"])
def test_neither_folder_zip_nor_notebook_is_a_problem(tmp_path: Path, name: str) -> None:
    """A plain file or a path that does not exist: kind unknown, a problem naming it."""
    source = tmp_path / name
    if name.endswith(".txt"):
        source.write_text("hello\n")
    prepared = prepare(source, tmp_path / "work")
    assert prepared.kind == "unknown"
    assert prepared.problem == f"{name} is not a folder, a .zip or a .ipynb notebook"


# ---------------------------------------------------------------- zips


@pytest.mark.parametrize("top", ["", "alice_lab4/"], ids=["files at the top", "one extra top folder"])
def test_zip_is_prepared_like_the_same_folder(tmp_path: Path, top: str) -> None:
    """A zip gives the same module, decoders, files and contents as the folder it was made from."""
    files = {f"{top}src/pretrained.py": PRETRAINED, f"{top}src/decoder.py": DECODER, f"{top}README.md": "hi\n"}
    from_zip = prepare(write_zip(tmp_path / "sub.zip", files), tmp_path / "z" / "work")
    from_folder = prepare(make_submission(tmp_path / "folder", files), tmp_path / "f" / "work")
    assert from_zip.problem is None
    assert from_zip.kind == "zip (folder)"
    assert from_zip.module == from_folder.module == f"{top}src/pretrained.py"
    assert from_zip.decoders == from_folder.decoders == [f"{top}src/decoder.py"]
    assert from_zip.files == from_folder.files
    assert {p: (from_zip.work / p).read_text() for p in files} == files


def test_zip_of_the_chapter_layout(tmp_path: Path) -> None:
    """The course's two chapter folders in a zip: kind says so, the sibling decoder is listed."""
    archive = write_zip(tmp_path / "sub.zip", {LAB04: PRETRAINED, LAB03: DECODER})
    prepared = prepare(archive, tmp_path / "z" / "work")
    assert prepared.kind == "zip (chapter folder)"
    assert (prepared.module, prepared.decoders) == (LAB04, [LAB03])


@pytest.mark.parametrize(
    "name",
    ["../evil.py", "lab/../../evil.py", "..\\evil.py", "ABSOLUTE"],
    ids=["parent", "deep parent", "backslash parent", "absolute"],
)
def test_zip_entries_that_leave_the_folder_are_refused(tmp_path: Path, name: str) -> None:
    """An entry that would land outside the extraction folder is refused, and nothing is written outside."""
    dest = tmp_path / "box" / "extracted"
    if name == "ABSOLUTE":
        name = str(tmp_path / "box" / "evil.py")  # the absolute entry names the would-be target itself
    archive = write_zip(tmp_path / "evil.zip", {"pretrained.py": "x = 1\n", name: "import os  # evil\n"})
    problem = safe_extract(archive, dest)
    assert problem is not None and "would land outside the submission folder" in problem and "evil.py" in problem
    assert [p for p in tmp_path.rglob("evil.py")] == []


def test_zip_traversal_through_prepare_is_a_problem(tmp_path: Path) -> None:
    """prepare() turns a traversal entry into a problem of kind zip and leaves the folders around alone."""
    archive = write_zip(tmp_path / "evil.zip", {"lab/pretrained.py": PRETRAINED, "../evil.py": "x = 1\n"})
    prepared = prepare(archive, tmp_path / "scratch" / "submission")
    assert prepared.kind == "zip"
    assert prepared.problem is not None and "outside" in prepared.problem
    assert [p for p in tmp_path.rglob("evil.py")] == []


def test_zip_symlink_entries_are_never_created(tmp_path: Path) -> None:
    """Link entries are skipped, so a later entry cannot write through them; a real pretrained.py is still graded."""
    outside = make_submission(tmp_path / "outside", {"secret.py": "TOKEN = 'secret'\n"})
    archive = tmp_path / "links.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for name, target in (("pretrained.py", outside / "secret.py"), ("lib", outside)):
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, str(target))
        zf.writestr("lib/planted.py", "planted = True\n")
        zf.writestr("code/pretrained.py", PRETRAINED)
    prepared = prepare(archive, tmp_path / "scratch" / "submission")
    extracted = tmp_path / "scratch" / "extracted"
    assert not any(p.is_symlink() for p in extracted.rglob("*"))
    assert not (extracted / "pretrained.py").exists()
    assert files_under(outside) == {"secret.py"}
    assert prepared.module == "code/pretrained.py"
    assert files_under(prepared.work) == {"code/pretrained.py", "lib/planted.py"}


def test_zip_skips_weights_and_tool_folders(tmp_path: Path) -> None:
    """Weights, .git, .venv, __pycache__ and __MACOSX entries are not even extracted."""
    entries = {
        "src/pretrained.py": PRETRAINED,
        "model.safetensors": "w",
        "src/x.bin": "w",
        ".git/config": "c",
        ".venv/lib/y.py": "y",
        "src/__pycache__/p.py": "p",
        "__MACOSX/src/._pretrained.py": "m",
    }
    prepared = prepare(write_zip(tmp_path / "sub.zip", entries), tmp_path / "z" / "work")
    assert files_under(tmp_path / "z" / "extracted") == {"src/pretrained.py"}
    assert files_under(prepared.work) == {"src/pretrained.py"}


def test_zip_with_too_many_entries_is_refused(tmp_path: Path) -> None:
    """More than 4 x MAX_FILES entries: refused before anything is extracted."""
    archive = write_zip(tmp_path / "many.zip", {f"f{i}.txt": "" for i in range(MAX_FILES * 4 + 1)}, zipfile.ZIP_STORED)
    dest = tmp_path / "extracted"
    assert safe_extract(archive, dest) == f"the zip has {MAX_FILES * 4 + 1} entries (at most {MAX_FILES * 4})"
    assert not dest.exists()


def test_zip_that_expands_past_the_size_cap_is_refused(tmp_path: Path) -> None:
    """A small zip that expands past 4 x MAX_TOTAL_BYTES is refused before anything is written."""
    archive = tmp_path / "bomb.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("pretrained.py", "x = 1\n")
        with zf.open("padding.txt", "w", force_zip64=True) as fh:
            block = b"\0" * 2**22
            for _ in range(MAX_TOTAL_BYTES * 4 // len(block) + 1):
                fh.write(block)
    assert archive.stat().st_size < MAX_TOTAL_BYTES // 50
    dest = tmp_path / "extracted"
    assert safe_extract(archive, dest) == f"the zip expands to more than {MAX_TOTAL_BYTES * 4 // 2**20} MB"
    assert not dest.exists()


def _scramble_stream(data: bytearray) -> None:
    for i in range(80, 400):
        data[i] ^= 0x5A


def _set_encrypted(data: bytearray) -> None:
    data[6] |= 1
    data[data.find(b"PK\x01\x02") + 8] |= 1


def _unknown_method(data: bytearray) -> None:
    data[8:10] = (99).to_bytes(2, "little")
    central = data.find(b"PK\x01\x02")
    data[central + 10 : central + 12] = (99).to_bytes(2, "little")


CORRUPTIONS = {
    "not a zip": lambda data: data.__setitem__(slice(None), b"this is not a zip file"),
    "truncated": lambda data: data.__delitem__(slice(len(data) // 2, None)),
    "scrambled stream": _scramble_stream,
    "encrypted": _set_encrypted,
    "unknown method": _unknown_method,
}


@pytest.mark.parametrize("corruption", list(CORRUPTIONS))
def test_broken_zip_is_a_problem_not_an_exception(tmp_path: Path, corruption: str) -> None:
    """Whatever is wrong with the archive, safe_extract and prepare report a problem instead of raising."""
    content = "".join(f"line_{i} = {i * 7919 % 1000}\n" for i in range(400))
    archive = write_zip(tmp_path / "broken.zip", {"pretrained.py": content})
    data = bytearray(archive.read_bytes())
    CORRUPTIONS[corruption](data)
    archive.write_bytes(bytes(data))
    problem = safe_extract(archive, tmp_path / "extracted")
    assert problem is not None and problem.startswith("the zip cannot be read (")
    prepared = prepare(archive, tmp_path / "scratch" / "submission")
    assert prepared.kind == "zip" and prepared.problem is not None


def test_zip_entry_names_that_are_not_utf8_never_raise(tmp_path: Path) -> None:
    """Without the UTF-8 flag a name is cp437 text (graded); with the flag and bad bytes, a problem (no exception)."""
    archive = write_zip(tmp_path / "sub.zip", {"pretrained.py": PRETRAINED, "notesQ.txt": "x"})
    data = bytearray(archive.read_bytes().replace(b"notesQ.txt", b"notes\xff.txt"))
    archive.write_bytes(bytes(data))
    prepared = prepare(archive, tmp_path / "a" / "work")
    assert prepared.problem is None and prepared.module == "pretrained.py"
    central = data.find(b"PK\x01\x02")
    while central != -1:  # claim UTF-8 names: b"\xff" is then invalid
        data[central + 9] |= 0x08
        central = data.find(b"PK\x01\x02", central + 1)
    archive.write_bytes(bytes(data))
    flagged = prepare(archive, tmp_path / "b" / "work")
    assert flagged.problem is not None and flagged.problem.startswith("the zip cannot be read (UnicodeDecodeError")


# ---------------------------------------------------------------- notebooks: cells


def test_notebook_cells_blank_magics_and_count_every_cell(tmp_path: Path) -> None:
    """%, ! and `x = !cmd` lines become blank (line numbers kept); cells are numbered among ALL cells."""
    cells = [
        ("markdown", "# My lab\n%pip install nothing"),
        "%pip install numpy\n!touch marker\nimport math\n  !touch marker\nfiles = !ls\nt = %timeit -o f()\nA = 1",
        ("raw", "raw text"),
        "%matplotlib inline\nB = 2",
    ]
    found = notebook_cells(write_notebook(tmp_path / "nb.ipynb", cells))
    assert [number for number, _ in found] == [2, 4]
    assert dict(found)[2] == "\n\nimport math\n\n\n\nA = 1\n"
    assert dict(found)[4] == "\nB = 2\n"


def test_cell_magics_drop_shell_cells_and_keep_timed_python(tmp_path: Path) -> None:
    """%%bash and %%writefile cells vanish; %%time, %%timeit and %%capture bodies stay, their first line blank."""
    cells = [
        "%%bash\ntouch marker",
        "%%time\nA = 1",
        "%%writefile x.py\nprint(1)",
        "%%timeit -n1\nB = 2",
        "  %%capture out\nC = 3",
        "%%html\n<b>hi</b>",
    ]
    found = notebook_cells(write_notebook(tmp_path / "nb.ipynb", cells))
    assert found == [(2, "\nA = 1\n"), (4, "\nB = 2\n"), (5, "\nC = 3\n")]


def test_lines_starting_with_percent_inside_python_are_kept(tmp_path: Path) -> None:
    """A `%` or `!` line that continues a bracket or a triple-quoted string is Python, not a magic."""
    cell = 'y = (10\n% 3)\ntext = """\n!not a shell line\n"""\nz = 1'
    ((_, source),) = notebook_cells(write_notebook(tmp_path / "nb.ipynb", [cell]))
    assert source == cell + "\n"
    namespace: dict = {}
    exec(compile(source, "cell", "exec"), namespace)
    assert namespace["y"] == 1 and "!not a shell line" in namespace["text"]


@pytest.mark.parametrize(
    ("name", "number"),
    [
        ("_cell_012.py", 12),
        ("/tmp/lab04-grade-x/submission/_cell_003.py", 3),
        ("_cell_1234.py", 1234),
        ("pretrained.py", None),
        ("_cell_3.py", None),
        ("_cell_003.pyc", None),
    ],
)
def test_cell_of_reads_the_cell_number_of_a_generated_file(name: str, number: int | None) -> None:
    assert cell_of(name) == number


def test_write_loader_names_every_cell_file_after_its_cell(tmp_path: Path) -> None:
    """One file per cell, named so that cell_of gives the cell back; labels say notebook and cell."""
    labels = write_loader([(2, "A = 1\n"), (1001, "B = 2\n")], tmp_path, "my lab.ipynb")
    assert labels == {"_cell_002.py": "my lab.ipynb, cell 2", "_cell_1001.py": "my lab.ipynb, cell 1001"}
    assert {cell_of(name) for name in labels} == {2, 1001}
    assert (tmp_path / "_cell_1001.py").read_text() == "B = 2\n"
    assert (tmp_path / LOADER_NAME).is_file()


# ---------------------------------------------------------------- notebooks: the loader, run


def test_loader_runs_every_cell_and_records_each_failure(tmp_path: Path) -> None:
    """A failing cell is recorded (cell, type, message, line) and the later cells still run, in order."""
    cells = [
        ("markdown", "# intro"),
        "%pip install x\nA = 1",
        "x = 1\n!echo hi\n\nraise ValueError('boom in cell 3')",
        "def f(:\n    pass",
        ("markdown", "more"),
        "B = A + 1\nundefined_name",
        "%%time\nC = B + 1",
    ]
    prepared = prepare(write_notebook(tmp_path / "lab04.ipynb", cells), tmp_path / "work")
    result = run_loader(prepared.work, "A", "B", "C")
    assert result["names"] == {"A": 1, "B": 2, "C": 3}
    errors = result["errors"]
    assert [(e["cell"], e["type"], e["line"]) for e in errors] == [
        (3, "ValueError", 4),
        (4, "SyntaxError", 1),
        (6, "NameError", 2),
    ]
    assert errors[0]["message"] == "boom in cell 3"
    assert errors[2]["message"] == "name 'undefined_name' is not defined"


def test_loader_finds_the_cell_line_when_the_error_is_raised_deeper(tmp_path: Path) -> None:
    """An exception raised in a function of an earlier cell is recorded on the calling cell's line."""
    cells = ["def broken():\n    raise KeyError('deep')", "\n\nbroken()"]
    prepared = prepare(write_notebook(tmp_path / "lab04.ipynb", cells), tmp_path / "work")
    assert run_loader(prepared.work)["errors"] == [{"cell": 2, "type": "KeyError", "message": "'deep'", "line": 3}]


def test_notebook_is_prepared_as_cell_files_and_a_loader(tmp_path: Path) -> None:
    """A notebook becomes one file per code cell plus the loader, labelled by notebook and cell."""
    path = write_notebook(tmp_path / "lab04.ipynb", ["import math", "%%bash\necho hi", ("markdown", "x"), "X = 1"])
    prepared = prepare(path, tmp_path / "work")
    assert prepared.problem is None
    assert (prepared.kind, prepared.module, prepared.module_label) == ("notebook", LOADER_NAME, "the notebook")
    assert prepared.cell_files == {"_cell_001.py": "lab04.ipynb, cell 1", "_cell_004.py": "lab04.ipynb, cell 4"}
    assert prepared.files == ["lab04.ipynb"]
    assert prepared.notes == ["2 code cells"]
    assert (prepared.notebook, prepared.cells) == ("lab04.ipynb", notebook_cells(path))
    assert files_under(prepared.work) == {LOADER_NAME, "_cell_001.py", "_cell_004.py"}


def test_rename_points_at_the_notebook_cell(tmp_path: Path) -> None:
    """Generated cell files, bare or with any folder before them, become "lab04.ipynb, cell N, line M"."""
    prepared = prepare(write_notebook(tmp_path / "lab04.ipynb", ["A = 1", ("markdown", "x"), "B = 2"]), tmp_path / "w")
    text = "(_cell_003.py, line 7: `raise`)\n/tmp/lab04-grade-x/submission/_cell_001.py, line 2\npretrained.py, line 5"
    assert prepared.rename(text) == (
        "(lab04.ipynb, cell 3, line 7: `raise`)\nlab04.ipynb, cell 1, line 2\npretrained.py, line 5"
    )
    folder = prepare(make_submission(tmp_path / "sub", {"pretrained.py": PRETRAINED}), tmp_path / "w2")
    assert folder.rename(text) == text  # nothing to rename for a folder
    assert folder.module_label == "pretrained.py"


def test_rename_survives_a_backslash_in_the_notebook_name(tmp_path: Path) -> None:
    prepared = Prepared(tmp_path, "notebook", cell_files={"_cell_001.py": "my\\lab.ipynb, cell 1"})
    assert prepared.rename("_cell_001.py, line 3") == "my\\lab.ipynb, cell 1, line 3"


def test_unreadable_notebook_is_a_problem(tmp_path: Path) -> None:
    """A .ipynb that is not JSON: a problem naming it, not an exception."""
    path = tmp_path / "lab04.ipynb"
    path.write_text("{ this is not a notebook")
    prepared = prepare(path, tmp_path / "work")
    assert prepared.kind == "notebook"
    assert prepared.problem is not None and prepared.problem.startswith("lab04.ipynb is not a readable notebook")


# ---------------------------------------------------------------- notebooks in folders


def test_folder_with_one_notebook_grades_it(tmp_path: Path) -> None:
    """A folder holding one notebook (its Jupyter checkpoint copy does not count) is graded as that notebook."""
    folder = tmp_path / "sub"
    write_notebook(folder / "lab04.ipynb", ["X = 1"])
    write_notebook(folder / ".ipynb_checkpoints" / "lab04-checkpoint.ipynb", ["X = 0"])
    prepared = prepare(folder, tmp_path / "work")
    assert prepared.problem is None
    assert (prepared.kind, prepared.module, prepared.files) == ("folder with a notebook", LOADER_NAME, ["lab04.ipynb"])
    assert prepared.cell_files == {"_cell_001.py": "lab04.ipynb, cell 1"}


def test_template_stubs_beside_a_completed_notebook_grade_the_notebook(tmp_path: Path) -> None:
    """src/pretrained.py untouched and the notebook done: the notebook is graded, and a note says why."""
    folder = make_submission(tmp_path / "sub", {"src/pretrained.py": STUB, "src/decoder.py": DECODER})
    (folder / "lab04.ipynb").write_text(template_notebook(PRETRAINED, DECODER))
    prepared = prepare(folder, tmp_path / "work")
    assert prepared.problem is None
    assert (prepared.kind, prepared.module) == ("folder with a notebook", LOADER_NAME)
    assert prepared.notes[0] == "graded lab04.ipynb: src/pretrained.py still holds the template's stubs"
    assert prepared.cell_files


@pytest.mark.parametrize(
    ("code", "notebook_code"), [(STUB, STUB), (PRETRAINED, PRETRAINED)], ids=["both untouched", "pretrained.py done"]
)
def test_pretrained_py_is_graded_unless_only_the_notebook_is_done(
    tmp_path: Path, code: str, notebook_code: str
) -> None:
    """With a stub notebook, or a completed pretrained.py, the folder's pretrained.py is graded."""
    folder = make_submission(tmp_path / "sub", {"src/pretrained.py": code, "src/decoder.py": DECODER})
    (folder / "lab04.ipynb").write_text(template_notebook(notebook_code, DECODER))
    prepared = prepare(folder, tmp_path / "work")
    assert (prepared.kind, prepared.module, prepared.cell_files) == ("folder", "src/pretrained.py", {})


@pytest.mark.parametrize(
    ("source", "untouched"),
    [
        (STUB, True),
        (PRETRAINED, False),
        ('def load_gpt2_weights(m, name):\n    """Docs."""\n    raise NotImplementedError("todo")\n', True),
        ("def load_gpt2_weights(m, name):\n    x = 1\n    raise NotImplementedError\n", False),
        ("def load_gpt2_weights(m, name):\n    raise ValueError\n", False),
        ("def get_weight_mapping(n):\n    raise NotImplementedError\n", False),
        ("def load_gpt2_weights(:\n", False),
    ],
    ids=["template", "reference", "docstring and raise", "started", "other raise", "no loader", "syntax error"],
)
def test_is_untouched_stub(tmp_path: Path, source: str, untouched: bool) -> None:
    """True only when load_gpt2_weights is still nothing but the template's raise NotImplementedError."""
    path = tmp_path / "pretrained.py"
    path.write_text(source)
    assert is_untouched_stub(path) is untouched
