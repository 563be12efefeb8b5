"""The Gradescope autograder bundle: ``grade gradescope build`` writes it, Gradescope runs it.

The zip holds, at its root, ``setup.sh`` and ``run_autograder`` (from ``gradescope_files/``),
``lab04.conf`` (every grading and presentation option and every pin, sourced by both
scripts), ``points.toml``, ``constraints.txt`` (the whole dependency closure, locked from
this virtualenv: ``lock``), the grader's source in ``lab04_grader/`` and, for a
``--model DIR``, the checkpoint in ``models/``.

Gradescope unpacks the zip into ``/autograder/source`` and runs ``setup.sh`` once, when it
builds the image: Python, the CPU build of torch and the grader go into a virtualenv, and
the checkpoints are baked in, each checked against the sha256 recorded here. The venv and
the checkpoints live in ``$AUTOGRADER_ROOT/lab04``, outside ``source/``. Grading never
needs the network; ``setup.sh`` does, once, at image build time. This module checks and
pins; ``gradescope_bundle`` renders and writes the files.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

from ..errors import ConfigError, GraderError
from ..outputs.report import Presentation
from . import lock

PROJECT = lock.PROJECT
TORCH_INDEX = "https://download.pytorch.org/whl/cpu"
DEFAULT_DEADLINE = 540  # Gradescope's default time-out is 10 minutes: keep a minute for the fallback
WEIGHTS = "model.safetensors"  # the grader reads weights with safetensors only
_HEX40 = re.compile(r"[0-9a-f]{40}")
_HEX64 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class ModelPin:
    """One checkpoint as the image will hold it, and the sha256 its weights must have there.

    ``kind`` is ``builtin`` (built offline by ``grade checkpoints build``), ``dir`` (a local
    folder, shipped in the bundle) or ``hub`` (downloaded from the HuggingFace hub at image
    build time, at ``revision``).
    """

    kind: str
    name: str  # a built-in name, a hub repo id, or the local folder
    sha256: str
    revision: str = ""
    weights: str = WEIGHTS


@dataclass(frozen=True)
class BundleConfig:
    """Everything ``build_bundle`` needs; made by ``bundle_config`` from the command line's words."""

    out: Path
    model: ModelPin
    second_model: ModelPin | None
    function_model: ModelPin
    points: dict[str, float]
    timeout: float = 60.0
    memory_mb: int = 6144
    threads: int = 1
    deadline: int = DEFAULT_DEADLINE
    presentation: Presentation = field(default_factory=Presentation)
    torch: str = "2.13.0+cpu"
    torch_index: str = TORCH_INDEX
    python: str = f"{sys.version_info.major}.{sys.version_info.minor}"
    constraints: dict[str, str] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()


def _pin_builtin(name: str, checkpoint_dir: Path | None) -> ModelPin:
    from lab04_checks.checkpoints import default_root, ensure_checkpoint

    from ..grading.checkpoints import BUILTIN, weights_sha256

    root = checkpoint_dir or default_root()
    try:
        built = ensure_checkpoint(BUILTIN[name], root)
    except OSError as exc:
        raise GraderError(f"cannot build the checkpoint {name!r} in {root}: {exc}") from None
    return ModelPin("builtin", name, weights_sha256(built))


def _pin_folder(folder: Path, option: str) -> ModelPin:
    from ..grading.checkpoints import weights_sha256

    if not (folder / WEIGHTS).is_file() or not (folder / "config.json").is_file():
        raise ConfigError(
            f"{option} {folder}: the folder needs config.json and {WEIGHTS} (the grader reads weights with safetensors)"
        )
    return ModelPin("dir", str(folder.resolve()), weights_sha256(folder))


def _hub_help(name: str, revision_option: str, sha_option: str) -> str:
    return (
        f"{name} is a HuggingFace hub name: pin it with {revision_option} COMMIT and {sha_option} HASH (the commit "
        f"of the model repo and the sha256 of its {WEIGHTS}), so that the image holds exactly the weights you "
        f"tested. Find both with: python -c \"from huggingface_hub import HfApi; i = HfApi().model_info('{name}', "
        f"files_metadata=True); print(i.sha, next(s.lfs.sha256 for s in i.siblings if s.rfilename == "
        f"'{WEIGHTS}'))\""
    )


def pin_model(
    name: str,
    revision: str | None = None,
    sha256: str | None = None,
    checkpoint_dir: Path | None = None,
    option: str = "--model",
) -> ModelPin:
    """Resolve ``name`` (a built-in, a local folder or a hub name) to a pin; ConfigError when it cannot be pinned."""
    from ..grading.checkpoints import BUILTIN

    revision_option = option.replace("model", "revision")
    sha_option = option.replace("model", "sha256")
    folder = Path(name).expanduser()
    if (name in BUILTIN or folder.is_dir()) and (revision or sha256):
        kind = "built-in checkpoint" if name in BUILTIN else "local folder"
        raise ConfigError(
            f"{revision_option} and {sha_option} pin a HuggingFace hub model; {option} {name} is a {kind}, "
            "pinned by its own hash"
        )
    if name in BUILTIN:
        return _pin_builtin(name, checkpoint_dir)
    if folder.is_dir():
        return _pin_folder(folder, option)
    if name.startswith((".", "/", "~")) or folder.exists():
        raise ConfigError(f"{option} {name}: no such checkpoint folder")
    if not revision or not sha256:
        raise ConfigError(f"{option} {_hub_help(name, revision_option, sha_option)}")
    if not _HEX40.fullmatch(revision):
        raise ConfigError(
            f"{revision_option} must be a full 40-hex-digit commit hash (a branch or tag can move), not {revision!r}"
        )
    if not _HEX64.fullmatch(sha256.lower()):
        raise ConfigError(f"{sha_option} must be a sha256 of 64 hex digits, not {sha256!r}")
    return ModelPin("hub", name, sha256.lower(), revision=revision)


def _check_limits(timeout: float, deadline: int) -> None:
    from ..grading.tiers import TIER_NAMES

    # Every tier may use its whole time-out, and starting the student processes takes a while.
    floor = int(len(TIER_NAMES) * timeout + 60)
    if deadline < floor:
        raise ConfigError(
            f"--deadline {deadline} is too short for --timeout {timeout:g}: {len(TIER_NAMES)} tiers may "
            f"take {timeout:g} s each, so give it at least {floor} s (and Gradescope's time-out a minute "
            "more)"
        )


def _torch_pin() -> tuple[str, list[str]]:
    """The CPU build of the torch version running here, and a warning when this is not the CPU build."""
    try:
        here = metadata.version("torch")
    except metadata.PackageNotFoundError:
        raise GraderError(
            "torch is not installed in this virtualenv: the bundle pins the version tested here"
        ) from None
    pin = lock.cpu_torch(here)
    warnings = [] if here == pin else [f"this virtualenv runs torch {here}; the bundle installs the CPU build {pin}"]
    return pin, warnings


def bundle_config(
    out: Path,
    model: str = "tiny",
    second_model: str | None = "wide",
    function_model: str = "tiny",
    *,
    revision: str | None = None,
    sha256: str | None = None,
    second_revision: str | None = None,
    second_sha256: str | None = None,
    checkpoint_dir: Path | None = None,
    points: Path | None = None,
    timeout: float = 60.0,
    memory_mb: int = 6144,
    threads: int = 1,
    deadline: int = DEFAULT_DEADLINE,
    presentation: Presentation | None = None,
) -> BundleConfig:
    """Check the options, pin the checkpoints and lock the dependencies; ConfigError for bad usage."""
    from ..config import load_points

    if timeout < 1 or memory_mb < 1024 or threads < 1:
        raise ConfigError("--timeout must be >= 1, --memory-mb >= 1024 and --threads >= 1")
    _check_limits(timeout, deadline)
    if not PROJECT.joinpath("pyproject.toml").is_file():
        raise GraderError(
            f"the grader's source is not beside {Path(__file__).parent}: build the bundle from a checkout"
        )
    primary = pin_model(model, revision, sha256, checkpoint_dir, "--model")
    second = None
    if second_model is not None and second_model.lower() != "none":
        second = pin_model(second_model, second_revision, second_sha256, checkpoint_dir, "--second-model")
    elif second_revision or second_sha256:
        raise ConfigError("--second-revision and --second-sha256 need a hub --second-model")
    from ..grading.checkpoints import BUILTIN

    if function_model not in BUILTIN and not Path(function_model).expanduser().is_dir():
        raise ConfigError(f"--function-model {function_model}: a bundle takes a built-in checkpoint or a local folder")
    function = pin_model(function_model, None, None, checkpoint_dir, "--function-model")
    torch, warnings = _torch_pin()
    return BundleConfig(
        out=Path(out),
        model=primary,
        second_model=second,
        function_model=function,
        points=load_points(points),
        timeout=float(timeout),
        memory_mb=int(memory_mb),
        threads=int(threads),
        deadline=int(deadline),
        presentation=presentation or Presentation(),
        torch=torch,
        constraints=lock.locked_versions(),
        warnings=tuple(warnings),
    )


def build_bundle(config: BundleConfig) -> list[str]:
    """Write the bundle to ``config.out`` (atomically, the same bytes for the same inputs); return its entries."""
    from .gradescope_bundle import write_bundle

    return write_bundle(config)
