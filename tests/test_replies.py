"""For each tier: an empty, partial, oversized or wrongly typed reply from the student process fails it.

A real grading of the reference is recorded once (every reply the agents sent, with its bulk
data, and which tier asked). Each case then replays that recording through stand-in
processes, with one reply of the chosen tier replaced by a broken one, through the very
validation the real processes' replies go through (``protocol.decode``, ``parse_reply``).
The unbroken replay passes every tier, so each case can fail.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from conftest import SEED, Grader, make_submission, reference_files

from grader.grading import engine, session
from grader.grading.tiers import LANES, TIER_NAMES
from grader.sandbox import process, protocol

_where = threading.local()


@dataclass
class Recorded:
    tier: str
    flavour: str
    op: str
    message: dict
    data: bytes


IMPORT = "import"  # the engine's own step before the tiers; a broken reply there is the first tier's verdict


@contextlib.contextmanager
def _tagged() -> Iterator[None]:
    """Tag every request with the tier that makes it (or IMPORT), in whatever thread it runs."""
    real_run_tier, real_import = engine._run_tier, engine._import_first

    def run_tier(tier: Any, *args: Any) -> Any:
        _where.tier = tier.NAME
        return real_run_tier(tier, *args)

    def import_first(*args: Any) -> Any:
        _where.tier = IMPORT
        return real_import(*args)

    engine._run_tier, engine._import_first = run_tier, import_first
    try:
        yield
    finally:
        engine._run_tier, engine._import_first = real_run_tier, real_import


def _record(grader: Grader, folder: Path) -> list[Recorded]:
    """Grade the reference for real and keep every reply, tagged with the tier that asked."""
    recorded: list[Recorded] = []
    real_parse, real_request = protocol.parse_reply, process.StudentProcess.request

    def parse(op: str, message: dict, fd: int) -> protocol.Reply:
        blocks = message.get("arrays") or []
        end = max((b["offset"] + b["nbytes"] for b in blocks), default=0)
        data = os.pread(fd, end, 0) if end else b""
        recorded.append(
            Recorded(getattr(_where, "tier", "?"), getattr(_where, "flavour", "?"), op, copy.deepcopy(message), data)
        )
        return real_parse(op, message, fd)

    def request(self: process.StudentProcess, *args: Any, **kwargs: Any) -> protocol.Reply:
        _where.flavour = self.name
        return real_request(self, *args, **kwargs)

    protocol.parse_reply, process.StudentProcess.request = parse, request
    try:
        with _tagged():
            report = grader(make_submission(folder, reference_files(True)))
    finally:
        protocol.parse_reply, process.StudentProcess.request = real_parse, real_request
    assert report.score == 100
    return recorded


@pytest.fixture(scope="module")
def recording(grader: Grader, tmp_path_factory: pytest.TempPathFactory) -> list[Recorded]:
    return _record(grader, tmp_path_factory.mktemp("recorded") / "reference")


class Replay:
    """Stand-in student processes that answer from a recording, one reply broken."""

    def __init__(self, recorded: list[Recorded], target: tuple[str, int] | None, breaker: Callable[[dict], Any]):
        self.queues: dict[tuple[str, str], list[Recorded]] = {}
        for item in recorded:
            self.queues.setdefault((item.tier, item.flavour), []).append(item)
        self.seen: dict[tuple[str, str], int] = {}
        self.target, self.breaker = target, breaker
        self.broken = False

    def process(self, zygote: Any, plan: dict, limits: Any, scratch: Path, name: str, uid: int) -> Any:
        return _FakeProcess(self, name, plan, limits)

    def reply(self, flavour: str, op: str) -> protocol.Reply:
        key = (getattr(_where, "tier", "?"), flavour)
        index = self.seen.get(key, 0)
        self.seen[key] = index + 1
        queue = self.queues.get(key, [])
        if index >= len(queue) or queue[index].op != op:
            return protocol.Reply("protocol", detail="the replay went another way")
        item = queue[index]
        message = copy.deepcopy(item.message)
        if self.target == (key[0], index):
            message = self.breaker(message)
            self.broken = True
        data = json.dumps(message).encode() if not isinstance(message, bytes) else message
        try:
            decoded = protocol.decode(data, truncated=len(data) > protocol.MAX_MESSAGE)
        except protocol.ProtocolError as exc:
            return protocol.Reply("protocol", detail=str(exc))
        if decoded.get("id") != item.message.get("id") or "status" not in decoded:
            return protocol.Reply("timeout", detail="no reply to the request")  # a stray message is not a reply
        fd = protocol.new_memfd("replay", max(len(item.data), 1), item.data)
        return protocol.parse_reply(op, decoded, fd)


class _FakeProcess:
    def __init__(self, replay: Replay, name: str, plan: dict, limits: Any):
        self.replay, self.name, self.plan, self.limits = replay, name, plan, limits
        self.alive, self.ready, self.isolated_root, self.starts = False, False, True, 0
        self.layers = {"held": ["a replay"], "unavailable": [], "uid": None}
        self.startup_seconds, self.peak_rss_bytes = 0.0, 0

    def start(self) -> None:
        self.alive, self.starts = True, self.starts + 1

    def wait_ready(self) -> None:
        self.ready = True

    def path(self, host: Any, inside: str) -> str:
        return inside

    def request(self, op: str, fields: dict, deadline: float, **kwargs: Any) -> protocol.Reply:
        return self.replay.reply(self.name, op)

    def goodbye(self) -> None:
        pass

    def close(self) -> None:
        self.alive = False

    def output(self) -> tuple[str, str]:
        return "", ""


def _replay(
    grader: Grader,
    folder: Path,
    recorded: list[Recorded],
    target: tuple[str, int] | None = None,
    breaker: Callable[[dict], Any] = lambda m: m,
) -> tuple[dict[str, str], Replay]:
    replay = Replay(recorded, target, breaker)
    real_process = session.StudentProcess
    session.StudentProcess = replay.process
    try:
        config = replace(
            grader.config,
            submission=make_submission(folder, reference_files(True)),
            out=folder.parent / "r.json",
            seed=SEED,
        )
        with _tagged():
            report = engine.grade(config, expectations=grader.expectations, zygotes={"torch": None, "numpy": None})
    finally:
        session.StudentProcess = real_process
    return {t.name: t.status for t in report.tiers}, replay


# ---------------------------------------------------------------- the broken replies


def _empty(message: dict) -> dict:
    return {"v": message["v"], "id": message["id"], "status": "ok"}


def _partial(message: dict) -> dict:
    """The reply with half of its main field's entries gone (or the field itself, when it is not a container)."""
    for key in ("values", "functions", "result", "results", "set", "steps", "blob", "model", "tokenizer"):
        if key in message:
            value = message[key]
            if isinstance(value, dict) and len(value) > 1:
                message[key] = dict(list(value.items())[: len(value) // 2])
            elif key == "results" and isinstance(value, list) and len(value) > 1:
                message[key] = value[: len(value) // 2]  # fewer results than calls
            elif isinstance(value, dict) and "items" in value and len(value["items"]) > 0:
                value["items"] = value["items"][: len(value["items"]) // 2]
                value["len"] = len(value["items"])
            else:
                del message[key]
            return message
    message.pop("arrays", None)
    return message


def _oversized(message: dict) -> dict:
    message["padding"] = "x" * (protocol.MAX_MESSAGE + 1)
    return message


def _wrong_type(message: dict) -> dict:
    for key in ("values", "functions", "result", "results", "set", "steps", "blob", "model", "tokenizer"):
        if key in message:
            message[key] = "a string where a structure belongs"
            return message
    message["arrays"] = "not a list"
    return message


BREAKERS = {"empty": _empty, "partial": _partial, "oversized": _oversized, "wrongly typed": _wrong_type}


def _targets(recorded: list[Recorded]) -> Iterator[tuple[str, int, str]]:
    """For each tier (and the import), the first reply of each kind of request it made: (tier, index within the
    tier, op). Each tier talks to one student process, so an index within the tier names one reply."""
    for tier in (IMPORT, *TIER_NAMES):
        mine = [item for item in recorded if item.tier == tier]
        assert len({item.flavour for item in mine}) <= 1, tier
        # The export is the next tiers' model; the shapes tier falls back to digests without it (a request the
        # recording cannot answer), so its broken replies are tested below, field by field.
        seen: set[str] = {"export"}
        for position, item in enumerate(mine):
            if item.op not in seen:
                seen.add(item.op)
                yield tier, position, item.op


def test_the_replay_passes_every_tier(grader: Grader, recording: list[Recorded], tmp_path: Path) -> None:
    statuses, _ = _replay(grader, tmp_path / "sub", recording)
    assert set(statuses.values()) == {"passed"}, statuses
    assert {r.tier for r in recording} >= set(TIER_NAMES)


def test_every_tier_runs_once_in_the_lane_of_the_process_it_talks_to(recording: list[Recorded]) -> None:
    planned = [t for lane in LANES.values() for t in lane]
    assert sorted(t.NAME for t in planned) == sorted(TIER_NAMES)
    for flavour, lane in LANES.items():
        for t in lane:
            assert {r.flavour for r in recording if r.tier == t.NAME} == {flavour}, t.NAME


@pytest.mark.parametrize("breaker", list(BREAKERS))
def test_a_broken_reply_fails_its_tier(breaker: str, grader: Grader, recording: list[Recorded], tmp_path: Path) -> None:
    failures = []
    checked = 0
    for tier, position, op in _targets(recording):
        statuses, replay = _replay(grader, tmp_path / f"{tier}-{op}", recording, (tier, position), BREAKERS[breaker])
        if not replay.broken:
            continue
        checked += 1
        if statuses[TIER_NAMES[0] if tier == IMPORT else tier] == "passed":
            failures.append(f"{tier}: the {breaker} reply to {op} still passed")
    assert checked >= len(TIER_NAMES), checked
    assert not failures, failures


@pytest.mark.parametrize("breaker", list(BREAKERS))
def test_a_broken_export_fails_the_tiers_that_use_the_model(
    breaker: str, grader: Grader, recording: list[Recorded], tmp_path: Path
) -> None:
    shapes = [r for r in recording if r.tier == "shapes"]
    position = next(i for i, r in enumerate(shapes) if r.op == "export")
    statuses, replay = _replay(grader, tmp_path / "export", recording, ("shapes", position), BREAKERS[breaker])
    assert replay.broken
    assert all(statuses[t] != "passed" for t in ("embedding", "logits", "generate")), statuses


def _claims_rotated(message: dict) -> dict:
    """Each claim moved to the next attribute whose claimed block has the same size: right sizes, other bytes."""
    blocks, buffers = message["arrays"], message["buffers"]
    by_size: dict[int, list[str]] = {}
    for path, index in message["located"].items():
        by_size.setdefault(blocks[buffers[index]]["nbytes"], []).append(path)
    for paths in by_size.values():
        claims = [message["located"][p] for p in paths]
        for path, claim in zip(paths, claims[1:] + claims[:1], strict=True):
            message["located"][path] = claim
    return message


def test_claims_of_where_attributes_lie_moved_to_other_bytes_fail_the_shapes_tier(
    grader: Grader, recording: list[Recorded], tmp_path: Path
) -> None:
    shapes = [r for r in recording if r.tier == "shapes"]
    position = next(i for i, r in enumerate(shapes) if r.op == "export")
    assert shapes[position].message.get("located"), "the recorded export claims where its attributes lie"
    statuses, replay = _replay(grader, tmp_path / "export", recording, ("shapes", position), _claims_rotated)
    assert replay.broken
    assert statuses["shapes"] != "passed", statuses
