"""The dependency lock of an image: every distribution the grader needs, at the version this virtualenv runs.

``locked_versions`` walks the requirements of ``pyproject.toml`` (the truth, even when
the installed metadata is stale) and then, through ``importlib.metadata``, the
requirements of each installed distribution, extras and environment markers included,
as this interpreter evaluates them. The result pins the whole closure, so an image
built with ``pip install -c constraints.txt`` runs what was tested here. torch is pinned
to its CPU build (``2.13.0+cpu``) whatever build runs here.

``python -m grader.artifacts.lock`` prints the constraints file (for the PrairieLearn image).
"""

from __future__ import annotations

import platform
import sys
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from ..errors import GraderError

PROJECT = Path(__file__).resolve().parents[2]
PROJECT_NAME = "lab04-grader"


def project_requirements(pyproject: Path = PROJECT / "pyproject.toml") -> list[Requirement]:
    """The project's own requirements (no optional extras: the image does not need ruff)."""
    data = tomllib.loads(pyproject.read_text())
    return [Requirement(text) for text in data["project"]["dependencies"]]


def _applies(requirement: Requirement, extras: frozenset[str]) -> bool:
    if requirement.marker is None:
        return True
    return any(requirement.marker.evaluate({"extra": extra}) for extra in (extras or {""}))


def _installed(name: str, wanted_by: str) -> metadata.Distribution:
    try:
        return metadata.distribution(name)
    except metadata.PackageNotFoundError:
        raise GraderError(
            f"cannot lock the dependencies: {name} (needed by {wanted_by}) is not installed in "
            f"{sys.prefix}; install the grader there first (pip install -e .)"
        ) from None


def locked_versions(roots: list[Requirement] | None = None) -> dict[str, str]:
    """``canonical name -> installed version`` over the whole dependency closure; GraderError when a
    distribution is missing or does not satisfy what requires it."""
    queue = [(r, PROJECT_NAME) for r in (project_requirements() if roots is None else roots)]
    found: dict[str, str] = {}
    seen: set[tuple[str, frozenset[str]]] = set()
    while queue:
        requirement, parent = queue.pop(0)
        if not _applies(requirement, frozenset()):
            continue
        name = canonicalize_name(requirement.name)
        dist = _installed(requirement.name, parent)
        version = dist.version
        if requirement.specifier and not requirement.specifier.contains(version, prereleases=True):
            raise GraderError(
                f"cannot lock the dependencies: {parent} needs {requirement}, but {version} is installed here"
            )
        found[name] = version
        key = (name, frozenset(requirement.extras))
        if key in seen:
            continue
        seen.add(key)
        for text in dist.requires or []:
            try:
                child = Requirement(text)
            except InvalidRequirement:
                continue
            if _applies(child, frozenset(requirement.extras)):
                child.marker = None  # evaluated here, with the parent's extras
                queue.append((child, name))
    found.pop(PROJECT_NAME, None)
    return dict(sorted(found.items()))


def cpu_torch(version: str) -> str:
    """The CPU build's version of a torch version: ``2.13.0+cu130`` and ``2.13.0`` become ``2.13.0+cpu``."""
    return f"{Version(version).public}+cpu"


def render_constraints(versions: dict[str, str], torch: str) -> str:
    """``constraints.txt``: one ``name==version`` a line, torch as its CPU build."""
    pins = {**versions, "torch": torch}
    head = [
        "# Every distribution the Lab 04 grader needs, transitively, at the version of the virtualenv that",
        f"# built this file (Python {platform.python_version()}, {sys.platform} {platform.machine()}); torch as its "
        "CPU build.",
        "# Install with: pip install -c constraints.txt ...",
    ]
    return "\n".join(head + [f"{name}=={version}" for name, version in sorted(pins.items())]) + "\n"


def main() -> None:
    """Print the constraints of this virtualenv."""
    versions = locked_versions()
    sys.stdout.write(render_constraints(versions, cpu_torch(versions.get("torch", "2.13.0"))))


if __name__ == "__main__":  # pragma: no cover
    main()
