"""The files of the Gradescope bundle, rendered from a ``BundleConfig``, and the zip that holds them."""

from __future__ import annotations

import hashlib
import os
import shlex
import stat
import tempfile
import zipfile
from pathlib import Path

from .. import __version__
from ..errors import GraderError
from . import lock
from .gradescope import PROJECT, WEIGHTS, BundleConfig, ModelPin

FILES = Path(__file__).with_name("gradescope_files")
SCRIPTS = ("setup.sh", "run_autograder")
PROJECT_DIR = "lab04_grader"  # where the grader's source sits in the bundle
HOME_DIR = "lab04"  # $AUTOGRADER_ROOT/lab04: the venv and the baked checkpoints
PACKAGES = ("grader", "lab04_checks")  # shipped whole; of reference/, only the decoder
ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # the earliest date a zip can hold: the same bytes on every build
# The files of a HuggingFace GPT-2 folder that grading uses; anything else stays out of the bundle.
CHECKPOINT_FILES = (
    "config.json",
    WEIGHTS,
    "vocab.json",
    "merges.txt",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "generation_config.json",
)
ROLES = ("primary", "second", "function")


def project_files() -> dict[str, Path]:
    """The grader's source as the bundle ships it (bundle path -> file): never reference/pretrained.py."""
    files = {name: PROJECT / name for name in ("pyproject.toml", "README.md")}
    for package in PACKAGES:
        for path in sorted((PROJECT / package).rglob("*")):
            rel = path.relative_to(PROJECT)
            hidden = any(p == "__pycache__" or p.startswith(".") for p in rel.parts)
            if path.is_file() and not hidden and path.suffix != ".pyc":
                files[rel.as_posix()] = path
    for name in ("__init__.py", "decoder.py"):  # the grader needs the reference decoder, not the solution
        files[f"reference/{name}"] = PROJECT / "reference" / name
    return {f"{PROJECT_DIR}/{rel}": path for rel, path in files.items()}


def _tree_sha256(files: dict[str, Path]) -> str:
    digest = hashlib.sha256()
    for name in sorted(files):
        digest.update(name.encode() + b"\0" + hashlib.sha256(files[name].read_bytes()).digest())
    return digest.hexdigest()


def _model_lines(prefix: str, role: str, pin: ModelPin | None) -> list[str]:
    if pin is None:
        return [f"{prefix}_KIND=none"]
    name = pin.name if pin.kind != "dir" else f"models/{role}"  # a local folder is shipped in the bundle
    lines = [f"{prefix}_KIND={pin.kind}", f"{prefix}={shlex.quote(name)}"]
    if pin.kind == "dir":
        lines.append(f"# ({role} was copied from {pin.name})")
    return [
        *lines,
        f"{prefix}_REVISION={shlex.quote(pin.revision)}",
        f"{prefix}_WEIGHTS={shlex.quote(pin.weights)}",
        f"{prefix}_SHA256={pin.sha256}",
    ]


def _presentation_lines(config: BundleConfig) -> list[str]:
    p = config.presentation
    tiers = " ".join(f"{tier}={visibility}" for tier, visibility in p.tier_visibility)
    return [
        "# How Gradescope shows the results (grade run's --output-format, --visibility, --tier-visibility,",
        "# --stdout-visibility and --leaderboard).",
        f"LAB04_OUTPUT_FORMAT={p.output_format}",
        f"LAB04_VISIBILITY={p.visibility}",
        f"LAB04_TIER_VISIBILITY={shlex.quote(tiers)}",
        f"LAB04_STDOUT_VISIBILITY={p.stdout_visibility}",
        f"LAB04_LEADERBOARD={int(p.leaderboard)}",
    ]


def render_conf(config: BundleConfig, source_sha256: str) -> str:
    """``lab04.conf``: shell assignments that setup.sh and run_autograder source."""
    lines = [
        "# Lab 04 autograder configuration, written by `grade gradescope build`.",
        "# setup.sh and run_autograder source this file. Paths are relative to $AUTOGRADER_ROOT",
        "# (/autograder on Gradescope); LAB04_HOME_DIR holds the venv and the baked checkpoints.",
        "# A model is builtin (built offline by `grade checkpoints build`), dir (shipped in models/)",
        "# or hub (downloaded at image build time at _REVISION); _SHA256 is its weights file's hash,",
        "# checked when the image is built.",
        f"LAB04_GRADER_VERSION={shlex.quote(__version__)}",
        f"LAB04_SOURCE_SHA256={source_sha256}",
        f"LAB04_PROJECT_DIR={PROJECT_DIR}",
        f"LAB04_HOME_DIR={HOME_DIR}",
        f"LAB04_PYTHON={config.python}",
        f"LAB04_TORCH={shlex.quote(config.torch)}",
        f"LAB04_TORCH_INDEX={shlex.quote(config.torch_index)}",
        *_model_lines("LAB04_MODEL", "primary", config.model),
        *_model_lines("LAB04_SECOND_MODEL", "second", config.second_model),
        *_model_lines("LAB04_FUNCTION_MODEL", "function", config.function_model),
        f"LAB04_TIMEOUT={config.timeout:g}",
        f"LAB04_MEMORY_MB={config.memory_mb}",
        f"LAB04_THREADS={config.threads}",
        "# run_autograder stops the grader after this many seconds and reports the failure itself;",
        "# keep it below Gradescope's time-out for the assignment.",
        f"LAB04_DEADLINE={config.deadline}",
        *_presentation_lines(config),
    ]
    return "\n".join(lines) + "\n"


def render_points(points: dict[str, float]) -> str:
    body = "".join(f"{name} = {value:g}\n" for name, value in points.items())
    return "# Points per tier, as graded on Gradescope (written by `grade gradescope build`).\n" + body


def _pins(config: BundleConfig) -> list[tuple[str, ModelPin]]:
    pins = zip(ROLES, (config.model, config.second_model, config.function_model), strict=True)
    return [(role, pin) for role, pin in pins if pin is not None]


def _checkpoint_files(pin: ModelPin, role: str) -> dict[str, Path]:
    folder = Path(pin.name)
    return {f"models/{role}/{n}": folder / n for n in CHECKPOINT_FILES if (folder / n).is_file()}


def bundle_entries(config: BundleConfig) -> dict[str, bytes | Path]:
    """Every file of the bundle: path in the zip -> its bytes, or the file to copy."""
    project = project_files()
    entries: dict[str, bytes | Path] = {name: FILES / name for name in SCRIPTS}
    entries.update(project)
    entries["lab04.conf"] = render_conf(config, _tree_sha256(project)).encode()
    entries["points.toml"] = render_points(config.points).encode()
    entries["constraints.txt"] = lock.render_constraints(config.constraints, config.torch).encode()
    for role, pin in _pins(config):
        if pin.kind == "dir":
            entries.update(_checkpoint_files(pin, role))
    return entries


def _zip(entries: dict[str, bytes | Path], fh: object) -> None:
    with zipfile.ZipFile(fh, "w", zipfile.ZIP_DEFLATED) as bundle:  # type: ignore[arg-type]
        for name in sorted(entries):
            info = zipfile.ZipInfo(name, date_time=ZIP_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.create_system = 3  # Unix, so that unzip honours the permission bits below
            info.external_attr = (stat.S_IFREG | (0o755 if name in SCRIPTS else 0o644)) << 16
            content = entries[name]
            bundle.writestr(info, content if isinstance(content, bytes) else content.read_bytes())


def write_bundle(config: BundleConfig) -> list[str]:
    """Write the zip atomically; GraderError when it cannot be written or a shipped checkpoint changed."""
    from lab04_checks.checkpoints import file_sha256

    out = Path(config.out)
    if not out.resolve().parent.is_dir():
        raise GraderError(f"cannot write the bundle to {out}: the folder {out.resolve().parent} does not exist")
    entries = bundle_entries(config)
    for role, pin in _pins(config):
        weights = entries.get(f"models/{role}/{pin.weights}")
        if pin.kind == "dir" and (not isinstance(weights, Path) or file_sha256(weights) != pin.sha256):
            raise GraderError(f"the {role} checkpoint {pin.name} changed while the bundle was being built")
    fd, tmp = tempfile.mkstemp(prefix=".bundle-", suffix=".zip", dir=out.resolve().parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            _zip(entries, fh)
        os.chmod(tmp, 0o644)
        os.replace(tmp, out)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise GraderError(f"cannot write the bundle to {out}: {exc.strerror or exc}") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return sorted(entries)
