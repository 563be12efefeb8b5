"""The grading configuration: one frozen object built from the command line (or a test)."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from . import defaults
from .errors import ConfigError
from .sandbox.limits import Limits

DEFAULT_POINTS_FILE = Path(__file__).with_name("points.toml")


def load_points(path: Path | None = None) -> dict[str, float]:
    """Points per tier: the defaults, overridden by ``path`` when given."""
    points = _read_points(DEFAULT_POINTS_FILE)
    if path is not None:
        points.update(_read_points(path))
    return points


def _read_points(path: Path) -> dict[str, float]:
    from .grading.tiers import TIER_NAMES

    try:
        data = tomllib.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read the points file {path}: {exc}") from None
    unknown = sorted(set(data) - set(TIER_NAMES))
    if unknown:
        raise ConfigError(f"the points file {path} names unknown tiers {unknown}; the tiers are {list(TIER_NAMES)}")
    for name, value in data.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise ConfigError(f"the points file {path}: {name} must be a number >= 0, not {value!r}")
    return {name: float(value) for name, value in data.items()}


@dataclass(frozen=True)
class GradeConfig:
    """Everything one grading run needs."""

    submission: Path
    out: Path
    model: str = defaults.MODEL
    second_model: str | None = defaults.SECOND_MODEL
    function_model: str = defaults.FUNCTION_MODEL
    checkpoint_dir: Path | None = None
    points: dict[str, float] = field(default_factory=load_points)
    limits: Limits = field(default_factory=Limits)
    keep_workdir: bool = False
    seed: int | None = None  # the inputs' seed; None draws a fresh one (tests fix it)
