"""What a student hands in (folder, src/ layout, nested folder, .zip, notebook) becomes a folder the child imports."""

from __future__ import annotations

import json
import os
import stat
import zipfile
from pathlib import Path

import nbformat
import pytest
from conftest import REFERENCE, REPO, grade_submission, make_submission, reference_files, statuses

from grader.report import Report, dumps
from grader.submission import MAX_FILE_BYTES, MAX_FILES, MAX_TOTAL_BYTES, prepare, safe_extract

REFERENCE_DECODER = (REFERENCE / "decoder.py").read_text()
REFERENCE_PRETRAINED = (REFERENCE / "pretrained.py").read_text()
# The student's own decoder: the reference plus a marker, so that we can tell which one was used.
OWN_DECODER = REFERENCE_DECODER + "\n# my own Lab 03 decoder\n"
TIER_NAMES = ("mapping", "shapes", "embedding", "logits", "compare")
LAYOUTS = {"flat": "", "src": "src/", "nested": "myname/lab04/src/"}


def layout_files(prefix: str, with_decoder: bool) -> dict[str, str]:
    """The reference solution under ``prefix`` (the student's decoder beside it when asked)."""
    files = {f"{prefix}pretrained.py": REFERENCE_PRETRAINED, "README.md": "my notes\n"}
    if with_decoder:
        files[f"{prefix}decoder.py"] = OWN_DECODER
    return files


def write_zip(path: Path, entries: dict[str, str | bytes], method: int = zipfile.ZIP_DEFLATED) -> Path:
    """A zip holding ``entries`` (name -> content), names kept exactly as given."""
    with zipfile.ZipFile(path, "w", method) as zf:
        for name, content in entries.items():
            zf.writestr(name, content)
    return path


def write_notebook(path: Path, cells: list[str | tuple[str, str]]) -> Path:
    """A notebook of code cells; ("markdown", text) makes a markdown cell."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_markdown_cell(c[1]) if isinstance(c, tuple) else nbformat.v4.new_code_cell(c) for c in cells
    ]
    nbformat.write(nb, str(path))
    return path


def grade_e2e(submission: Path) -> Report:
    """Grade through the real engine against the tiny checkpoint only (the second model adds time, not coverage)."""
    return grade_submission(submission, second_model=None)


def all_details(report: Report) -> str:
    """Every tier's feedback, for assertion messages."""
    return "\n".join(f"[{t.name}: {t.status}] {t.detail}" for t in report.tiers)


def files_under(folder: Path) -> set[str]:
    """Relative paths of every file and link below ``folder``."""
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file() or p.is_symlink()}


# ---------------------------------------------------------------- folders


@pytest.mark.parametrize("with_decoder", [True, False], ids=["own decoder", "no decoder"])
@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_folder_layouts_are_found(tmp_path: Path, layout: str, with_decoder: bool) -> None:
    """pretrained.py is found at the top, in src/ or in a nested folder; decoder.py is the student's or the reference's."""
    prefix = LAYOUTS[layout]
    submission = make_submission(tmp_path / "submission", layout_files(prefix, with_decoder))
    prepared = prepare(submission, tmp_path / "work")
    assert prepared.problem is None
    assert prepared.kind == "directory"
    assert (prepared.work / "pretrained.py").read_text() == REFERENCE_PRETRAINED
    if with_decoder:
        assert prepared.decoder == "submission"
        assert (prepared.work / "decoder.py").read_text() == OWN_DECODER
    else:
        assert prepared.decoder == "reference"
        assert (prepared.work / "decoder.py").read_text() == REFERENCE_DECODER
    if prefix:
        assert prepared.notes[0] == f"code found in {prefix}", prepared.notes
        assert "README.md" not in prepared.files  # only the code folder is copied


def test_a_pretrained_py_file_brings_only_its_decoder(tmp_path: Path) -> None:
    """Given pretrained.py itself, only it and the decoder.py beside it are used."""
    folder = make_submission(tmp_path / "sub", {**layout_files("", True), "helper.py": "x = 1\n"})
    prepared = prepare(folder / "pretrained.py", tmp_path / "work")
    assert prepared.problem is None
    assert sorted(prepared.files) == ["decoder.py", "pretrained.py"]
    assert prepared.decoder == "submission"
    assert not (prepared.work / "helper.py").exists()


@pytest.mark.parametrize(
    "files",
    [
        {"decoder.py": REFERENCE_DECODER, "notes.txt": "todo\n"},
        {".backup/pretrained.py": REFERENCE_PRETRAINED, "__pycache__/pretrained.py": REFERENCE_PRETRAINED},
        {},
    ],
    ids=["only a decoder", "only in hidden folders", "empty"],
)
def test_no_pretrained_py_is_a_problem(tmp_path: Path, files: dict[str, str]) -> None:
    """A folder without a usable pretrained.py comes back with a problem, not an exception."""
    folder = make_submission(tmp_path / "sub", files)
    folder.mkdir(exist_ok=True)
    prepared = prepare(folder, tmp_path / "work")
    assert prepared.problem is not None and "pretrained.py" in prepared.problem


def test_weights_big_hidden_and_cache_files_are_not_copied(tmp_path: Path) -> None:
    """Weights, binaries, files over the size cap, hidden folders and __pycache__ stay out of the work folder."""
    folder = make_submission(
        tmp_path / "sub",
        {
            **layout_files("", True),
            "helpers/util.py": "X = 1\n",
            "model.safetensors": "weights",
            "pytorch_model.bin": "weights",
            "cache.npy": "array",
            ".git/config": "[core]\n",
            ".ipynb_checkpoints/pretrained-checkpoint.py": "old\n",
            ".secret.py": "hidden\n",
            "__pycache__/pretrained.cpython-311.pyc": "bytecode",
            "__MACOSX/._pretrained.py": "resource fork",
        },
    )
    with (folder / "big.txt").open("wb") as fh:
        fh.truncate(MAX_FILE_BYTES + 1)  # sparse: large on paper, cheap on disk
    prepared = prepare(folder, tmp_path / "work")
    assert prepared.problem is None
    expected = {"README.md", "decoder.py", "helpers/util.py", "pretrained.py"}
    assert set(prepared.files) == expected
    assert files_under(prepared.work) == expected
    notes = "\n".join(prepared.notes)
    assert "model.safetensors" in notes and "big.txt (too large)" in notes


def test_symlinked_file_in_a_folder_is_not_followed(tmp_path: Path) -> None:
    """A link to a file outside the submission is not copied."""
    outside = make_submission(tmp_path / "outside", {"secret.py": "TOKEN = 'secret'\n"})
    folder = make_submission(tmp_path / "sub", layout_files("", False))
    (folder / "helper.py").symlink_to(outside / "secret.py")
    (folder / "lib").symlink_to(outside, target_is_directory=True)
    prepared = prepare(folder, tmp_path / "work")
    assert prepared.problem is None
    assert set(prepared.files) == {"README.md", "pretrained.py"}
    assert files_under(prepared.work) == {"README.md", "decoder.py", "pretrained.py"}


def test_symlinked_src_folder_is_not_followed(tmp_path: Path) -> None:
    """A src/ that links to a folder outside the submission is not read: nothing from outside is copied."""
    outside = make_submission(tmp_path / "outside", {"pretrained.py": "STOLEN = 1\n", "secret.txt": "secret\n"})
    folder = make_submission(tmp_path / "sub", {"README.md": "hi\n"})
    (folder / "src").symlink_to(outside, target_is_directory=True)
    prepared = prepare(folder, tmp_path / "work")
    copied = files_under(prepared.work)
    assert "secret.txt" not in copied, f"files from outside the submission were copied: {prepared.files}"
    assert (
        not (prepared.work / "pretrained.py").is_file() or "STOLEN" not in (prepared.work / "pretrained.py").read_text()
    )
    assert prepared.problem is not None


@pytest.mark.slow
def test_end_to_end_reference_decoder_when_none_is_sent(tmp_path: Path) -> None:
    """src/ layout without decoder.py: full marks with the reference decoder, and the report says so."""
    submission = make_submission(tmp_path / "sub", layout_files("src/", with_decoder=False))
    report = grade_e2e(submission)
    assert report.score == report.max_score == 100, all_details(report)
    assert report.decoder == "reference"
    assert "reference decoder" in report.summary()
    assert report.to_gradescope()["extra_data"]["decoder"] == "reference"


@pytest.mark.slow
def test_end_to_end_nested_folder_uses_the_students_decoder(tmp_path: Path) -> None:
    """A nested folder with decoder.py: found, graded with the student's decoder, and the report says so."""
    submission = make_submission(tmp_path / "sub", layout_files("myname/lab04/src/", with_decoder=True))
    report = grade_e2e(submission)
    assert report.score == report.max_score == 100, all_details(report)
    assert report.decoder == "submission"
    assert "your decoder.py" in report.summary()
    assert "code found in myname/lab04/src/" in report.submission["notes"]


@pytest.mark.slow
def test_end_to_end_missing_pretrained_py_errors_every_tier(tmp_path: Path) -> None:
    """No pretrained.py: every tier is an error naming the problem, and the report is still produced."""
    submission = make_submission(tmp_path / "sub", {"decoder.py": REFERENCE_DECODER})
    report = grade_e2e(submission)
    problem = report.submission["problem"]
    assert problem and "pretrained.py" in problem
    assert statuses(report) == dict.fromkeys(TIER_NAMES, "error")
    for t in report.tiers:
        assert problem in t.detail and t.score == 0
    document = json.loads(dumps(report))
    assert document["score"] == 0 and document["extra_data"]["max_score"] == 100
    assert problem in document["output"]


# ---------------------------------------------------------------- zips


def test_good_zip_is_prepared_like_the_folder(tmp_path: Path) -> None:
    """A zip of a nested folder gives the same work folder as the folder itself."""
    files = layout_files("myname/lab04/src/", with_decoder=True)
    archive = write_zip(tmp_path / "submission.zip", files)
    from_zip = prepare(archive, tmp_path / "zip" / "work")
    from_folder = prepare(make_submission(tmp_path / "folder", files), tmp_path / "dir" / "work")
    assert from_zip.problem is None
    assert from_zip.kind == "zip"
    assert from_zip.decoder == from_folder.decoder == "submission"
    assert from_zip.files == from_folder.files
    assert from_zip.notes == from_folder.notes
    for name in ("pretrained.py", "decoder.py"):
        assert (from_zip.work / name).read_text() == (from_folder.work / name).read_text()


@pytest.mark.slow
def test_end_to_end_zip_grades_like_the_folder(tmp_path: Path) -> None:
    """A good zip gets full marks with its own decoder, and the report calls it a zip."""
    archive = write_zip(tmp_path / "submission.zip", layout_files("lab04/", with_decoder=True))
    report = grade_e2e(archive)
    assert report.score == report.max_score == 100, all_details(report)
    assert report.decoder == "submission"
    assert report.submission["kind"] == "zip"


ZIP_SLIP = {
    "parent": ("../evil.py", lambda dest: dest.parent / "evil.py"),
    "deep parent": ("lab/../../evil.py", lambda dest: dest.parent / "evil.py"),
    "backslash parent": ("..\\evil.py", lambda dest: dest.parent / "evil.py"),
    "absolute": (None, lambda dest: dest.parent / "absolute_evil.py"),
}


@pytest.mark.parametrize("case", list(ZIP_SLIP))
def test_zip_slip_is_refused_and_writes_nothing_outside(tmp_path: Path, case: str) -> None:
    """An entry that would land outside the extraction folder is refused, and nothing is written there."""
    dest = tmp_path / "box" / "extracted"
    name, would_land = ZIP_SLIP[case]
    target = would_land(dest)
    name = name or str(target)  # the absolute entry names the would-be target itself
    archive = write_zip(tmp_path / "evil.zip", {"pretrained.py": "x = 1\n", name: "import os  # evil\n"})
    problem = safe_extract(archive, dest)
    assert problem is not None and "outside" in problem and "evil.py" in problem
    assert not target.exists()
    assert not any(p.name.endswith("evil.py") for p in tmp_path.rglob("*") if p != archive)


def test_zip_slip_through_prepare_is_a_problem(tmp_path: Path) -> None:
    """prepare() turns a zip-slip entry into a problem and leaves the folders around the work folder alone."""
    archive = write_zip(tmp_path / "evil.zip", {"lab/pretrained.py": REFERENCE_PRETRAINED, "../evil.py": "x = 1\n"})
    work = tmp_path / "scratch" / "submission"
    prepared = prepare(archive, work)
    assert prepared.kind == "zip"
    assert prepared.problem is not None and "outside" in prepared.problem
    assert not (work.parent / "evil.py").exists()
    assert not (tmp_path / "evil.py").exists()


def test_zip_symlink_entries_are_not_followed(tmp_path: Path) -> None:
    """Symbolic-link entries are never created, so later entries cannot write through them."""
    outside = make_submission(tmp_path / "outside", {"secret.py": "TOKEN = 'secret'\n"})
    archive = tmp_path / "links.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for name, target in (("pretrained.py", outside / "secret.py"), ("lib", outside)):
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, str(target))
        zf.writestr("lib/planted.py", "planted = True\n")
    dest = tmp_path / "extracted"
    assert safe_extract(archive, dest) is None
    assert not (dest / "pretrained.py").exists() and not (dest / "pretrained.py").is_symlink()
    assert not (dest / "lib").is_symlink()
    assert not (outside / "planted.py").exists()
    assert files_under(outside) == {"secret.py"}
    prepared = prepare(archive, tmp_path / "scratch" / "submission")
    assert prepared.problem is not None and "pretrained.py" in prepared.problem


def test_zip_over_the_size_cap_is_refused(tmp_path: Path) -> None:
    """A zip that expands past the cap (a small file on disk) is refused before anything is written."""
    archive = tmp_path / "bomb.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("pretrained.py", "x = 1\n")
        with zf.open("padding.txt", "w", force_zip64=True) as fh:
            block = b"\0" * 2**20
            for _ in range(MAX_TOTAL_BYTES // len(block) + 1):
                fh.write(block)
    assert archive.stat().st_size < MAX_TOTAL_BYTES // 100
    dest = tmp_path / "extracted"
    problem = safe_extract(archive, dest)
    assert problem is not None and "MB" in problem
    assert not dest.exists() or not any(dest.iterdir())


def test_zip_with_too_many_entries_is_refused(tmp_path: Path) -> None:
    """More entries than the cap is refused."""
    archive = write_zip(tmp_path / "many.zip", {f"f{i}.txt": "" for i in range(MAX_FILES + 1)}, zipfile.ZIP_STORED)
    problem = safe_extract(archive, tmp_path / "extracted")
    assert problem is not None and "entries" in problem


def _flip_data_bytes(data: bytearray) -> None:
    """Scramble the middle of the first member's compressed stream."""
    for i in range(80, 400):
        data[i] ^= 0x5A


def _set_encrypted(data: bytearray) -> None:
    """Mark the member as encrypted (flag bit 0) in its local and central headers."""
    data[6] |= 1
    central = data.find(b"PK\x01\x02")
    data[central + 8] |= 1


def _unknown_method(data: bytearray) -> None:
    """Give the member a compression method zipfile does not know (99)."""
    data[8:10] = (99).to_bytes(2, "little")
    central = data.find(b"PK\x01\x02")
    data[central + 10 : central + 12] = (99).to_bytes(2, "little")


CORRUPTIONS = {
    "not a zip": lambda data: data.__setitem__(slice(None), b"this is not a zip file"),
    "truncated": lambda data: data.__delitem__(slice(len(data) // 2, None)),
    "scrambled stream": _flip_data_bytes,
    "encrypted": _set_encrypted,
    "unknown method": _unknown_method,
}


@pytest.mark.parametrize("corruption", list(CORRUPTIONS))
def test_corrupt_zip_is_a_problem_not_an_exception(tmp_path: Path, corruption: str) -> None:
    """Whatever is wrong with the archive, prepare() reports a problem instead of raising."""
    content = "".join(f"line_{i} = {i * 7919 % 1000}\n" for i in range(400))
    archive = write_zip(tmp_path / "broken.zip", {"pretrained.py": content})
    data = bytearray(archive.read_bytes())
    CORRUPTIONS[corruption](data)
    archive.write_bytes(bytes(data))
    problem = safe_extract(archive, tmp_path / "extracted")
    assert problem is not None and "zip" in problem
    prepared = prepare(archive, tmp_path / "scratch" / "submission")
    assert prepared.kind == "zip" and prepared.problem is not None


@pytest.mark.slow
def test_end_to_end_corrupt_zip_still_gives_a_report(tmp_path: Path) -> None:
    """A truncated zip: every tier is an error that says the zip cannot be read."""
    archive = write_zip(tmp_path / "broken.zip", layout_files("", with_decoder=True))
    archive.write_bytes(archive.read_bytes()[:200])
    report = grade_e2e(archive)
    assert statuses(report) == dict.fromkeys(TIER_NAMES, "error")
    assert all("cannot be read" in t.detail for t in report.tiers), all_details(report)
    assert report.score == 0


# ---------------------------------------------------------------- notebooks


def shell_and_magic_cells(marker1: Path, marker2: Path, marker3: Path) -> list[str | tuple[str, str]]:
    """Cells full of magics and shell lines, each of which would create a marker file if it ran."""
    return [
        ("markdown", "# My lab\n%pip install nothing\n!touch nothing"),
        f"%pip install numpy\n!touch {marker1}\nimport math\n  !touch {marker1}\nA = 1",
        f"%%bash\ntouch {marker2}",
        "%%time\nB = 2",
        f"%time C = 3\n%env X=1\nD = 4\n%system touch {marker3}",
    ]


def test_notebook_cells_drop_magics_and_shell_lines(tmp_path: Path) -> None:
    """Magics and !lines become blank lines (line numbers kept); %%bash cells vanish; %%time bodies stay."""
    from grader.submission import notebook_cells

    markers = [tmp_path / f"marker{i}" for i in (1, 2, 3)]
    path = write_notebook(tmp_path / "nb.ipynb", shell_and_magic_cells(*markers))
    cells = notebook_cells(path)
    assert [number for number, _ in cells] == [2, 4, 5]  # positions among all cells; the %%bash one dropped
    sources = dict(cells)
    assert sources[2].splitlines() == ["", "", "import math", "", "A = 1"]
    assert sources[4].splitlines() == ["", "B = 2"]
    assert sources[5].splitlines() == ["", "", "D = 4", ""]
    namespace: dict = {}
    for _, source in cells:
        exec(compile(source, "<cell>", "exec"), namespace)
    assert (namespace["A"], namespace["B"], namespace["D"]) == (1, 2, 4)
    assert not any(m.exists() for m in markers)


def test_notebook_shell_assignment_does_not_break_its_cell(tmp_path: Path) -> None:
    """`files = !ls` and `t = %timeit ...` are IPython lines too: the rest of their cell must still run."""
    from grader.submission import notebook_cells

    marker = tmp_path / "marker"
    cell = f"files = !touch {marker}\nelapsed = %timeit -o sum(range(3))\n\ndef helper():\n    return 42\n"
    path = write_notebook(tmp_path / "nb.ipynb", [cell])
    ((_, source),) = notebook_cells(path)
    namespace: dict = {}
    exec(compile(source, "nb.ipynb, cell 1", "exec"), namespace)
    assert namespace["helper"]() == 42
    assert not marker.exists()


def test_notebook_is_prepared_with_a_loader(tmp_path: Path) -> None:
    """A notebook becomes one file per code cell plus a loader; the reference decoder is put beside them."""
    path = write_notebook(tmp_path / "lab04.ipynb", ["import math", "%%bash\necho hi", "X = 1"])
    prepared = prepare(path, tmp_path / "work")
    assert prepared.problem is None
    assert prepared.kind == "notebook"
    assert prepared.cell_files == {"_cell_001.py": "lab04.ipynb, cell 1", "_cell_003.py": "lab04.ipynb, cell 3"}
    assert (prepared.work / "pretrained.py").is_file()
    assert (prepared.work / "decoder.py").read_text() == REFERENCE_DECODER


def test_folder_with_one_notebook_uses_it(tmp_path: Path) -> None:
    """A folder holding one notebook (its Jupyter checkpoint copy does not count) is graded as that notebook."""
    folder = tmp_path / "sub"
    (folder / ".ipynb_checkpoints").mkdir(parents=True)
    write_notebook(folder / "lab04.ipynb", ["X = 1"])
    write_notebook(folder / ".ipynb_checkpoints" / "lab04-checkpoint.ipynb", ["X = 0"])
    prepared = prepare(folder, tmp_path / "work")
    assert prepared.problem is None
    assert prepared.kind == "directory with a notebook"
    assert prepared.files == ["lab04.ipynb"]


def test_folder_with_two_notebooks_is_a_problem(tmp_path: Path) -> None:
    """Two notebooks and no pretrained.py: the student is asked to hand in one."""
    folder = tmp_path / "sub"
    folder.mkdir()
    write_notebook(folder / "a.ipynb", ["X = 1"])
    write_notebook(folder / "b.ipynb", ["X = 2"])
    prepared = prepare(folder, tmp_path / "work")
    assert prepared.problem is not None and "2 notebooks" in prepared.problem


def test_unreadable_notebook_is_a_problem(tmp_path: Path) -> None:
    """A .ipynb that is not JSON is a problem, not an exception."""
    path = tmp_path / "lab04.ipynb"
    path.write_text("{ this is not a notebook")
    prepared = prepare(path, tmp_path / "work")
    assert prepared.kind == "notebook"
    assert prepared.problem is not None and "lab04.ipynb" in prepared.problem


@pytest.mark.slow
def test_end_to_end_notebook_with_its_own_model_magics_and_a_failing_demo(tmp_path: Path) -> None:
    """Own GPTModel is used, magics and shell lines never run, and a failing demo cell does not stop grading."""
    markers = [tmp_path / f"marker{i}" for i in (1, 2, 3)]
    demo = "from transformers import GPT2LMHeadModel\nhf = GPT2LMHeadModel.from_pretrained('gpt2')  # no hub here\n"
    cells = [
        *shell_and_magic_cells(*markers),
        "%load_ext autoreload\n!echo the decoder follows\n" + REFERENCE_DECODER,  # magics in a cell that matters
        demo,
        "%%time\n" + REFERENCE_PRETRAINED,
        demo,
    ]
    path = write_notebook(tmp_path / "lab04.ipynb", cells)
    report = grade_e2e(path)
    assert report.score == report.max_score == 100, all_details(report)
    assert report.decoder == "submission"
    assert report.submission["kind"] == "notebook"
    assert not any(m.exists() for m in markers)


@pytest.mark.slow
def test_end_to_end_notebook_errors_point_at_the_cell(tmp_path: Path) -> None:
    """Without its own GPTModel the reference is used; an error in a cell's function names the cell and line."""
    old = "def get_weight_mapping(num_layers: int) -> Mapping:\n"
    assert REFERENCE_PRETRAINED.count(old) == 1
    broken = REFERENCE_PRETRAINED.replace(old, old + "    raise ValueError('broken mapping')\n")
    line = broken.splitlines().index("    raise ValueError('broken mapping')") + 1
    path = write_notebook(tmp_path / "my lab.ipynb", ["import numpy as np\nprint('hello')", broken])
    report = grade_e2e(path)
    assert report.decoder == "reference"
    mapping = next(t for t in report.tiers if t.name == "mapping")
    assert mapping.status == "error"
    assert f"(my lab.ipynb, cell 2, line {line}: `raise ValueError('broken mapping')`)" in mapping.detail
    assert "_cell_" not in json.dumps(report.to_gradescope()["tests"])
    assert "_cell_" not in all_details(report)


@pytest.mark.slow
def test_end_to_end_untouched_template_notebook_scores_zero() -> None:
    """The student template notebook as handed out: 0 points, NotImplementedError in every tier."""
    template = REPO / "student_template" / "lab04.ipynb"
    assert template.is_file()
    report = grade_e2e(template)
    assert report.score == 0
    assert statuses(report) == dict.fromkeys(TIER_NAMES, "error"), all_details(report)
    for t in report.tiers:
        assert "NotImplementedError" in t.detail, all_details(report)
        assert "lab04.ipynb, cell" in t.detail
    assert report.decoder == "submission"  # the template's first code cell defines GPTModel


def test_nothing_is_left_in_the_source_folder(tmp_path: Path) -> None:
    """Preparing never writes into the student's folder."""
    folder = make_submission(tmp_path / "sub", reference_files(with_decoder=False))
    before = {p: p.stat().st_mtime_ns for p in folder.rglob("*")}
    prepare(folder, tmp_path / "work")
    assert {p: p.stat().st_mtime_ns for p in folder.rglob("*")} == before
    assert sorted(os.listdir(folder)) == ["pretrained.py"]
