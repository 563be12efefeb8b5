"""The notebook version of the template: the same stubs as ``src/pretrained.py``, one cell per definition.

Cells get fixed ids, so that a rebuild is byte-identical. The "Try it" cell loads the
public checkpoint, built on the student's machine, so it works offline.
"""

from __future__ import annotations

import ast
import re

import nbformat

_BANNER = re.compile(r"^# =+\n# (.+)\n# =+\n", re.MULTILINE)

INTRO = """\
# Lab 04: load pretrained GPT-2 weights (notebook version)

This notebook is the same lab as `src/pretrained.py`; work in whichever you prefer, and hand in that one.

* The first code cell is the Lab 03 model (`GPTModel`), given. Replace it by your own if you like.
* Write the functions marked `# YOUR CODE HERE`.
* The grader (and the public tests) run the code cells **in order, top to bottom**, as *Kernel > Restart and \
Run All* does, skipping `%magics` and `!shell` lines. Keep experiments under `if __name__ == "__main__":` so that \
they do not run then.
* Check your work from a terminal, in this folder: `python -m pytest tests/ --notebook lab04.ipynb`

`README.md` explains what the grader checks, its tolerance and its time budget."""

TRY_IT = """\
if __name__ == "__main__":  # runs in Jupyter; skipped when the grader or the tests run this notebook
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path("tests").resolve()))  # the public checkpoint's recipe is in tests/lab04_checks
    from lab04_checks.checkpoints import PUBLIC_TINY, ensure_checkpoint
    from transformers import GPT2LMHeadModel, GPT2Tokenizer

    # A 2-layer GPT-2 with random weights and GPT-2's real tokenizer, built on this machine: no download.
    # With internet access, name = "gpt2" loads the real GPT-2 small (500 MB) instead.
    name = str(ensure_checkpoint(PUBLIC_TINY))
    hf_model = GPT2LMHeadModel.from_pretrained(name)
    tokenizer = GPT2Tokenizer.from_pretrained(name)
    c = hf_model.config
    model = GPTModel(c.vocab_size, c.n_embd, c.n_layer, c.n_head, 4 * c.n_embd, c.n_positions,
                     dropout=0.0, tie_weights=True)
    load_gpt2_weights(model, name)
    match, max_diff = compare_outputs(model, hf_model, tokenizer, "My own NumPy GPT-2 gives these logits.")
    print(f"Match: {match}, max diff: {max_diff:.2e}")"""


def without_docstring(source: str) -> str:
    """``source`` without its module docstring."""
    first = ast.parse(source).body[0]
    if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
        return "".join(source.splitlines(keepends=True)[first.end_lineno :]).lstrip("\n")
    return source


def module_cells(source: str) -> list[tuple[str, str]]:
    """(kind, text) cells of a module: its header, a markdown cell per ``# ===`` banner, a code cell per definition."""
    source = without_docstring(source)
    banners = [(source.count("\n", 0, m.start()) + 1, m.group(1).strip()) for m in _BANNER.finditer(source)]
    source = _BANNER.sub(lambda m: "\n" * 3, source)  # blank the banners, keeping line numbers
    lines = source.splitlines(keepends=True)
    starts = []
    for node in ast.parse(source).body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            first = min([node.lineno] + [d.lineno for d in node.decorator_list])
            while first > 1 and lines[first - 2].lstrip().startswith("#"):
                first -= 1  # the comments just above a definition go with it
            starts.append(first)
    cells: list[tuple[str, str]] = []
    bounds = [1, *starts, len(lines) + 1]
    for i in range(len(bounds) - 1):
        a, b = bounds[i], bounds[i + 1]
        before = bounds[i - 1] if i else a  # a banner in the previous segment introduces this one
        cells += [("markdown", f"## {title}") for line, title in banners if before <= line < a]
        text = "".join(lines[a - 1 : b - 1]).strip("\n")
        if text.strip():
            cells.append(("code", text))
    return cells


def notebook(pretrained: str, decoder: str) -> str:
    """The notebook of ``pretrained`` (the stubs, or for tests the reference) after the given ``decoder``."""
    md, code = nbformat.v4.new_markdown_cell, nbformat.v4.new_code_cell
    cells = [
        md(INTRO),
        md("## Your Lab 03 model (given)"),
        code(without_docstring(decoder).strip("\n")),
        md("## Lab 04: imports"),
    ]
    for kind, text in module_cells(pretrained):
        cells.append(md(text) if kind == "markdown" else code(text))
    cells += [md("## Try it"), code(TRY_IT)]
    for number, cell in enumerate(cells, start=1):
        cell["id"] = f"lab04-{number:02d}"
    nb = nbformat.v4.new_notebook()
    nb.metadata = {
        "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
        "language_info": {"name": "python"},
    }
    nb.cells = cells
    return nbformat.writes(nb)
