"""The allow-list of one student process: exactly what of the machine it may see.

A plan is data (a dict that ``inside/lab04_jail.build_root`` carries out): read-only
binds of the Python installation and the system's libraries, the student's own copy
of the submission, its checkpoints, a private size-limited ``/tmp``, and nothing else.
The torch-free flavour also gets inert stand-ins bound over torch and transformers,
and the grader's own packages are covered wherever they are installed.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

from .zygote import STANDINS

SUBMISSION = "/submission"
CHECKPOINTS = "/checkpoints"
FALLBACK = "/lab04/fallback"  # the reference decoder, for submissions without a decoder of their own
STANDINS_INSIDE = "/lab04/standins"
SYSTEM = ("/usr", "/lib", "/lib64", "/lib32", "/bin", "/sbin")
SYSTEM_FILES = ("/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/localtime", "/sys/devices/system/cpu")
OWN_PACKAGES = ("grader", "reference", "lab04_checks")
HIDDEN_IN_TORCH_FREE = ("torchgen", "functorch", "torch", "transformers")


def python_paths() -> list[str]:
    """The Python installation: the interpreter's prefix and the environment's (a venv)."""
    paths = {os.path.realpath(p) for p in (sys.base_prefix, sys.prefix, sys.exec_prefix)}
    paths.add(os.path.dirname(os.path.dirname(os.path.realpath(sys.executable))))
    return sorted(p for p in paths if os.path.isdir(p) and p != "/")


def site_packages() -> list[str]:
    return sorted({os.path.realpath(p) for p in sys.path if p.endswith("site-packages") and os.path.isdir(p)})


def own_package_dirs() -> list[str]:
    """Where the grader's own packages are installed (covered when that lies inside a bound tree)."""
    found = []
    for name in OWN_PACKAGES:
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            continue
        for location in (spec.submodule_search_locations or []) if spec else []:
            found.append(os.path.realpath(location))
    return found


def _under(path: str, roots: list[str]) -> bool:
    return any(path == r or path.startswith(r.rstrip("/") + "/") for r in roots)


def build_plan(
    flavour: str,
    root: Path,
    submission: Path,
    code_folder: str,
    checkpoints: dict[str, Path],
    fallback: Path,
    scratch_bytes: int,
    uid: int,
) -> dict:
    """The plan for a student process of ``flavour`` ("torch" or "numpy").

    ``root`` is an empty folder to build on; ``submission`` the prepared copy, with
    ``pretrained.py`` in its sub-folder ``code_folder``; ``checkpoints`` maps a name to a
    checkpoint folder (seen as ``/checkpoints/NAME``); ``fallback`` holds the reference decoder."""
    ro: list[list[str]] = []
    for path in SYSTEM:
        if os.path.isdir(path) and not os.path.islink(path):
            ro.append([path, path])
    symlinks = [[os.readlink(p), p] for p in SYSTEM if os.path.islink(p)]
    ro += [[p, p] for p in SYSTEM_FILES if os.path.exists(p)]
    python = python_paths()
    ro += [[p, p] for p in python if not _under(p, [r[0] for r in ro])]
    ro.append([str(submission), SUBMISSION])
    ro += [[str(folder), f"{CHECKPOINTS}/{name}"] for name, folder in checkpoints.items()]
    ro.append([str(fallback), FALLBACK])
    bound = [r[0] for r in ro]
    cover = [p for p in own_package_dirs() if _under(p, bound)]
    over: list[list[str]] = []
    if flavour == "numpy":
        ro.append([str(STANDINS), STANDINS_INSIDE])
        for site in site_packages():
            for name in HIDDEN_IN_TORCH_FREE:
                path = os.path.join(site, name)
                if name in ("torch", "transformers") and (STANDINS / name).is_dir():
                    over.append([str(STANDINS / name), path])
                else:
                    cover.append(path)
            cover += [os.path.join(site, d) for d in _listdir(site) if d.startswith(("torch-", "transformers-"))]
    passwd = f"root:x:0:0:root:/root:/usr/sbin/nologin\nstudent:x:{uid}:{uid}:student:/tmp:/usr/sbin/nologin\n"
    return {
        "root": str(root),
        "submission": SUBMISSION,
        "submission_host": str(submission),
        "cwd": f"{SUBMISSION}/{code_folder}".rstrip("/."),
        "cwd_host": str(submission / code_folder),
        "ro": ro,
        "over": over,
        "cover": sorted(set(cover)),
        "tmpfs": [["/tmp", scratch_bytes], ["/dev/shm", 1 << 20]],
        "symlinks": symlinks,
        "files": [
            ["/etc/passwd", passwd],
            ["/etc/group", f"root:x:0:\nstudent:x:{uid}:\n"],
            ["/etc/hostname", "lab04\n"],
        ],
        "standins": STANDINS_INSIDE if flavour == "numpy" else None,
        "standins_host": str(STANDINS) if flavour == "numpy" else None,
    }


def _listdir(path: str) -> list[str]:
    try:
        return os.listdir(path)
    except OSError:
        return []
