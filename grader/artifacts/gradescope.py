"""The Gradescope autograder bundle: ``grade gradescope build`` writes it, Gradescope runs it.

The zip holds, at its root, ``setup.sh`` and ``run_autograder`` (from ``gradescope_files/``),
``lab04.conf`` (every grading option and every pin, sourced by both scripts),
``points.toml``, ``constraints.txt`` (the exact versions this machine runs), the grader's
source in ``lab04_grader/`` and, for ``--model DIR``, the checkpoint in ``models/``.

Gradescope unpacks the zip into ``/autograder/source`` and runs ``setup.sh`` once, when it
builds the image: Python, the CPU build of torch and the grader go into a virtualenv, and
the checkpoints are baked in, each checked against the sha256 recorded here. The venv and
the checkpoints live in ``$AUTOGRADER_ROOT/lab04``, outside ``source/``, because student
code must not see ``source/`` (the grader hides it from the student process). Nothing here
needs the network; ``setup.sh`` does, once, at image build time.
"""

from __future__ import annotations

import hashlib
import os
import re
import shlex
import stat
import tempfile
import tomllib
import zipfile
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

from . import __version__
from .errors import ConfigError, GraderError

FILES = Path(__file__).with_name("gradescope_files")
PROJECT = Path(__file__).resolve().parent.parent
SCRIPTS = ("setup.sh", "run_autograder")
PROJECT_DIR = "lab04_grader"  # where the grader's source sits in the bundle
HOME_DIR = "lab04"  # $AUTOGRADER_ROOT/lab04: the venv and the baked checkpoints
TORCH_INDEX = "https://download.pytorch.org/whl/cpu"
DEFAULT_TORCH = "2.13.0"
DEFAULT_DEADLINE = 540  # Gradescope's default time-out is 10 minutes: keep a minute for the fallback
ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # the earliest date a zip can hold: the same bytes on every build
# The files of a HuggingFace GPT-2 folder that grading uses; anything else stays out of the bundle.
CHECKPOINT_FILES = (
    "config.json", "model.safetensors", "pytorch_model.bin", "vocab.json", "merges.txt",
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "generation_config.json",
)  # fmt: skip
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
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
    weights: str = "model.safetensors"


@dataclass(frozen=True)
class BundleConfig:
    """Everything ``build_bundle`` needs; made by ``bundle_config`` from the command line's words."""

    out: Path
    model: ModelPin
    second_model: ModelPin | None
    points: dict[str, float]
    timeout: float = 60.0
    memory_mb: int = 6144
    threads: int = 1
    deadline: int = DEFAULT_DEADLINE
    torch: str = DEFAULT_TORCH
    constraints: dict[str, str] = field(default_factory=dict)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def pin_model(
    name: str, revision: str | None = None, sha256: str | None = None, checkpoint_dir: Path | None = None,
    option: str = "--model",
) -> ModelPin:  # fmt: skip
    """Resolve ``name`` (a built-in, a local folder or a hub name) to a pin; ConfigError when it cannot be pinned."""
    from .lab.checkpoints import default_root, ensure_checkpoint
    from .models import BUILTIN

    revision_option = option.replace("model", "revision")
    sha_option = option.replace("model", "sha256")
    folder = Path(name).expanduser()
    if (name in BUILTIN or folder.is_dir()) and (revision or sha256):
        raise ConfigError(
            f"{revision_option} and {sha_option} pin a HuggingFace hub model; {option} {name} is a "
            f"{'built-in checkpoint' if name in BUILTIN else 'local folder'}, pinned by its own hash"
        )
    if name in BUILTIN:
        root = checkpoint_dir or default_root()
        try:
            built = ensure_checkpoint(BUILTIN[name], root)
        except OSError as exc:
            raise GraderError(f"cannot build the checkpoint {name!r} in {root}: {exc}") from None
        return ModelPin("builtin", name, sha256_file(built / "model.safetensors"))
    if folder.is_dir():
        weights = next((w for w in WEIGHT_FILES if (folder / w).is_file()), None)
        if weights is None or not (folder / "config.json").is_file():
            raise ConfigError(f"{option} {name}: the folder needs config.json and model.safetensors (or pytorch_model.bin)")
        return ModelPin("dir", str(folder.resolve()), sha256_file(folder / weights), weights=weights)
    if name.startswith((".", "/", "~")) or folder.exists():
        raise ConfigError(f"{option} {name}: no such checkpoint folder")
    if not revision or not sha256:
        raise ConfigError(
            f"{option} {name} is a HuggingFace hub name: pin it with {revision_option} COMMIT and {sha_option} HASH "
            f"(the commit of the model repo and the sha256 of its model.safetensors), so that the image holds exactly "
            f"the weights you tested. Find both with: python -c \"from huggingface_hub import HfApi; "
            f"i = HfApi().model_info('{name}', files_metadata=True); "
            f"print(i.sha, next(s.lfs.sha256 for s in i.siblings if s.rfilename == 'model.safetensors'))\""
        )
    if not _HEX40.fullmatch(revision):
        raise ConfigError(f"{revision_option} must be a full 40-hex-digit commit hash (a branch or tag can move), not {revision!r}")
    if not _HEX64.fullmatch(sha256.lower()):
        raise ConfigError(f"{sha_option} must be a sha256 of 64 hex digits, not {sha256!r}")
    return ModelPin("hub", name, sha256.lower(), revision=revision)


def installed_versions() -> dict[str, str]:
    """``name -> version`` of the project's dependencies as installed here, for constraints.txt."""
    data = tomllib.loads((PROJECT / "pyproject.toml").read_text())
    versions = {}
    for requirement in data["project"]["dependencies"]:
        name = re.match(r"[A-Za-z0-9._-]+", requirement).group(0)
        try:
            versions[name] = metadata.version(name).split("+")[0]  # 2.13.0+cpu -> 2.13.0
        except metadata.PackageNotFoundError:
            continue
    return dict(sorted(versions.items(), key=lambda kv: kv[0].lower()))


def bundle_config(
    out: Path, model: str = "tiny", second_model: str | None = "wide", *, revision: str | None = None,
    sha256: str | None = None, second_revision: str | None = None, second_sha256: str | None = None,
    checkpoint_dir: Path | None = None, points: Path | None = None, timeout: float = 60.0, memory_mb: int = 6144,
    threads: int = 1, deadline: int = DEFAULT_DEADLINE,
) -> BundleConfig:  # fmt: skip
    """Check the options and pin the checkpoints; ConfigError for bad usage."""
    from .config import load_points
    from .lab.tiers import TIER_NAMES

    if timeout < 1 or memory_mb < 256 or threads < 1:
        raise ConfigError("--timeout must be >= 1, --memory-mb >= 256 and --threads >= 1")
    # Every tier may use its whole time-out, and starting the student process takes a while.
    floor = int(len(TIER_NAMES) * timeout + 60)
    if deadline < floor:
        raise ConfigError(
            f"--deadline {deadline} is too short for --timeout {timeout:g}: {len(TIER_NAMES)} tiers may take "
            f"{timeout:g} s each, so give it at least {floor} s (and Gradescope's time-out a minute more)"
        )
    if not PROJECT.joinpath("pyproject.toml").is_file():
        raise GraderError(f"the grader's source is not beside {Path(__file__).parent}: build the bundle from a checkout")
    primary = pin_model(model, revision, sha256, checkpoint_dir, "--model")
    second = None
    if second_model is not None and second_model.lower() != "none":
        second = pin_model(second_model, second_revision, second_sha256, checkpoint_dir, "--second-model")
    elif second_revision or second_sha256:
        raise ConfigError("--second-revision and --second-sha256 need a hub --second-model")
    constraints = installed_versions()
    return BundleConfig(
        out=Path(out), model=primary, second_model=second, points=load_points(points), timeout=float(timeout),
        memory_mb=int(memory_mb), threads=int(threads), deadline=int(deadline),
        torch=constraints.get("torch", DEFAULT_TORCH), constraints=constraints,
    )  # fmt: skip


# ---------------------------------------------------------------- the bundle's files


def project_files() -> dict[str, Path]:
    """The grader's source as the bundle ships it (bundle path -> file): never reference/pretrained.py."""
    files = {name: PROJECT / name for name in ("pyproject.toml", "README.md")}
    for path in sorted((PROJECT / "grader").rglob("*")):
        rel = path.relative_to(PROJECT)
        if path.is_file() and not any(p == "__pycache__" or p.startswith(".") for p in rel.parts) and path.suffix != ".pyc":
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
    lines += [
        f"{prefix}_REVISION={shlex.quote(pin.revision)}",
        f"{prefix}_WEIGHTS={shlex.quote(pin.weights)}",
        f"{prefix}_SHA256={pin.sha256}",
    ]
    return lines


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
        f"LAB04_TORCH={shlex.quote(config.torch)}",
        f"LAB04_TORCH_INDEX={shlex.quote(TORCH_INDEX)}",
        *_model_lines("LAB04_MODEL", "primary", config.model),
        *_model_lines("LAB04_SECOND_MODEL", "second", config.second_model),
        f"LAB04_TIMEOUT={config.timeout:g}",
        f"LAB04_MEMORY_MB={config.memory_mb}",
        f"LAB04_THREADS={config.threads}",
        "# run_autograder stops the grader after this many seconds and reports the failure itself;",
        "# keep it below Gradescope's time-out for the assignment.",
        f"LAB04_DEADLINE={config.deadline}",
    ]
    return "\n".join(lines) + "\n"


def render_points(points: dict[str, float]) -> str:
    body = "".join(f"{name} = {value:g}\n" for name, value in points.items())
    return "# Points per tier, as graded on Gradescope (written by `grade gradescope build`).\n" + body


def render_constraints(config: BundleConfig) -> str:
    pins = {**config.constraints, "torch": config.torch}
    body = "".join(f"{name}=={version}\n" for name, version in sorted(pins.items(), key=lambda kv: kv[0].lower()))
    return "# The versions the bundle was built and tested with (written by `grade gradescope build`).\n" + body


def _checkpoint_files(pin: ModelPin, role: str) -> dict[str, Path]:
    folder = Path(pin.name)
    names = [n for n in CHECKPOINT_FILES if (folder / n).is_file() and (n not in WEIGHT_FILES or n == pin.weights)]
    return {f"models/{role}/{n}": folder / n for n in names}


def bundle_entries(config: BundleConfig) -> dict[str, bytes | Path]:
    """Every file of the bundle: path in the zip -> its bytes, or the file to copy."""
    project = project_files()
    entries: dict[str, bytes | Path] = {name: FILES / name for name in SCRIPTS}
    entries.update(project)
    entries["lab04.conf"] = render_conf(config, _tree_sha256(project)).encode()
    entries["points.toml"] = render_points(config.points).encode()
    entries["constraints.txt"] = render_constraints(config).encode()
    for role, pin in (("primary", config.model), ("second", config.second_model)):
        if pin is not None and pin.kind == "dir":
            entries.update(_checkpoint_files(pin, role))
    return entries


def build_bundle(config: BundleConfig) -> list[str]:
    """Write the bundle to ``config.out`` (atomically, the same bytes for the same inputs); return its entries.

    GraderError when it cannot be written or a shipped checkpoint changed since it was pinned.
    """
    out = Path(config.out)
    if not out.resolve().parent.is_dir():
        raise GraderError(f"cannot write the bundle to {out}: the folder {out.resolve().parent} does not exist")
    entries = bundle_entries(config)
    for role, pin in (("primary", config.model), ("second", config.second_model)):
        if pin is not None and pin.kind == "dir":
            weights = entries[f"models/{role}/{pin.weights}"]
            if sha256_file(weights) != pin.sha256:
                raise GraderError(f"{weights} changed while the bundle was being built")
    fd, tmp = tempfile.mkstemp(prefix=".bundle-", suffix=".zip", dir=out.resolve().parent)
    try:
        with os.fdopen(fd, "wb") as fh, zipfile.ZipFile(fh, "w", zipfile.ZIP_DEFLATED) as bundle:
            for name in sorted(entries):
                info = zipfile.ZipInfo(name, date_time=ZIP_DATE)
                info.compress_type = zipfile.ZIP_DEFLATED
                info.create_system = 3  # Unix, so that unzip honours the permission bits below
                mode = 0o755 if name in SCRIPTS else 0o644
                info.external_attr = (stat.S_IFREG | mode) << 16
                content = entries[name]
                bundle.writestr(info, content if isinstance(content, bytes) else content.read_bytes())
        os.replace(tmp, out)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise GraderError(f"cannot write the bundle to {out}: {exc.strerror or exc}") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return sorted(entries)
