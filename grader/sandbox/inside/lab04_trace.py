"""Spies on a model's sub-modules: what each first received and returned during one call."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from lab04_inspect import StudentError, follow


class Spy:
    """Stands in for a sub-module and records the first thing it was given and what it returned."""

    def __init__(self, inner: Any, label: str, log: dict):
        object.__setattr__(self, "_spy", (inner, label, log))

    def _record(self, method: Any, args: tuple, kwargs: dict) -> Any:
        _, label, log = object.__getattribute__(self, "_spy")
        result = method(*args, **kwargs)
        if label not in log:
            log[label] = (args[0] if args else next(iter(kwargs.values()), None), result)
        return result

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._record(object.__getattribute__(self, "_spy")[0], args, kwargs)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self._record(object.__getattribute__(self, "_spy")[0].forward, args, kwargs)

    def __getattr__(self, attr: str) -> Any:
        return getattr(object.__getattribute__(self, "_spy")[0], attr)

    def __setattr__(self, attr: str, value: Any) -> None:
        setattr(object.__getattribute__(self, "_spy")[0], attr, value)

    def __getitem__(self, key: Any) -> Any:
        return object.__getattribute__(self, "_spy")[0][key]

    def __len__(self) -> int:
        return len(object.__getattribute__(self, "_spy")[0])

    def __iter__(self) -> Any:
        return iter(object.__getattribute__(self, "_spy")[0])


def traced(obj: Any, spies: list, run: Callable[[], Any]) -> tuple[dict[str, tuple], dict | None]:
    """Call ``run`` with a ``Spy`` on each ``[owner_path, attr, label]`` of ``spies`` under ``obj``.

    Returns what each spy first received and returned, by label, and the record of the student's
    error when ``run`` raised one. The real sub-modules are put back whatever happens."""
    log: dict[str, tuple] = {}
    restore = []
    for owner_path, attr, label in spies:
        try:
            owner = follow(obj, owner_path) if owner_path else obj
            inner = owner[int(attr)] if attr.isdigit() else getattr(owner, attr)
        except Exception:  # noqa: BLE001 - the student's model may not have this part
            continue
        spy = Spy(inner, label, log)
        try:
            _put(owner, attr, spy)
        except Exception:  # noqa: BLE001
            continue
        restore.append((owner, attr, inner))
    error = None
    try:
        run()
    except StudentError as exc:
        error = exc.record
    finally:
        for owner, attr, inner in reversed(restore):
            _put(owner, attr, inner)
    return log, error


def _put(owner: Any, attr: str, value: Any) -> None:
    """Bind ``value`` as item ``attr`` (a number) or attribute ``attr`` of ``owner``."""
    if attr.isdigit():
        owner[int(attr)] = value
    else:
        setattr(owner, attr, value)
