"""The template's notebook filled with the reference's code, in order and out of order."""

from __future__ import annotations

from pathlib import Path

import nbformat

from grader.artifacts.template_notebook import notebook

REFERENCE = Path(__file__).resolve().parents[1] / "reference"


def filled_notebook() -> str:
    """The template's notebook with the reference's code in its cells."""
    return notebook((REFERENCE / "pretrained.py").read_text(), (REFERENCE / "decoder.py").read_text())


def shuffled_notebook() -> str:
    """The filled notebook with its imports cell moved to the end: a later cell defines what earlier ones use."""
    nb = nbformat.reads(filled_notebook(), as_version=4)
    index = next(
        i
        for i, c in enumerate(nb.cells)
        if c.cell_type == "code" and c.source.startswith("from __future__") and "from typing import Any" in c.source
    )
    nb.cells.append(nb.cells.pop(index))
    return nbformat.writes(nb)


def first_user_of_any(text: str) -> int:
    """The 1-based number of the first cell that uses ``Any`` (it raises NameError when the imports come last)."""
    nb = nbformat.reads(text, as_version=4)
    return next(i for i, c in enumerate(nb.cells, 1) if c.source.startswith("def get_attribute(model: Any"))
