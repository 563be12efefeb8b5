"""One run of the student's loader: build a model, load a checkpoint, read every attribute back, export it.

The shapes tier judges what is read here; the later tiers use the exported model. Each
attribute is judged on the exported bytes themselves where the export holds it (the very
arrays the torch-free process computes with), else on its digest; whole arrays cross
again only for wrong attributes the export does not hold (for the diagnosis), within a budget.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from lab04_checks.contract import attribute_paths

from .. import defaults
from ..sandbox import protocol
from ..sandbox.process import ResultsMemfd
from ..sandbox.protocol import Desc, ProtocolError, Reply
from .outcome import Deadline, Failure, Stop, failure_of
from .session import TIE, Agent, Session, export_budget
from .truth import Expected

FETCH_BYTES = 1 << 30  # at most this much of wrong attributes crosses for the diagnosis


@dataclass(frozen=True)
class Entry:
    """What one attribute path held, as the agent read it."""

    kind: str  # array | tensor | object | missing
    dtype: str = ""
    shape: tuple[int, ...] = ()
    digest: str = ""
    sample: str = ""  # digest of a strided sample: enough to tell "unchanged since the model was built"
    oid: int = 0
    type_name: str = ""
    error: str = ""
    array: int | None = None


def _entry(value: Any, what: str) -> Entry:
    value = protocol.mapping(value, what, 12)
    kind = value.get("t")
    if kind not in ("array", "tensor", "object", "missing"):
        raise ProtocolError(f"{what}: an unknown kind")
    if kind == "missing":
        return Entry("missing", error=protocol.text(value.get("error", ""), what, 400))
    shape = tuple(protocol.integer(n, what, 0) for n in protocol.sequence(value.get("shape", []), what, 8))
    digest, sample = value.get("digest", ""), value.get("sample", "")
    for d in (digest, sample):
        if d and (not isinstance(d, str) or len(d) != 64):
            raise ProtocolError(f"{what}: a digest that is not sha256")
    return Entry(
        kind,
        dtype=protocol.text(value.get("dtype", ""), what, 40),
        shape=shape,
        digest=digest,
        sample=sample,
        oid=protocol.integer(value.get("oid", 0), what, 0),
        type_name=protocol.text(value.get("type", ""), what, 200),
        array=protocol.integer(value.get("a"), what, 0, optional=True),
    )


@dataclass
class Load:
    """One run of the student's loader on one checkpoint, as the shapes tier and later tiers need it."""

    expected: Expected
    failure: Failure | None = None
    before: dict[str, Entry] = field(default_factory=dict)
    after: dict[str, Entry] = field(default_factory=dict)
    returned: Desc | None = None
    model: int = 0  # the model's handle in the torch process
    arrays: dict[str, np.ndarray] = field(default_factory=dict)  # attributes whose digest differs
    blob: int = -1  # the pickled model: a sealed memfd holding its stream and its out-of-band buffers
    blob_blocks: list[dict] = field(default_factory=list)
    blob_problem: str = ""
    process_start: int = 0  # which start of the torch process holds ``model``
    dotted: list[str] = field(default_factory=list)  # attribute names with a dot (setattr with a whole path)
    exported: dict[str, np.ndarray] = field(default_factory=dict)  # attributes found in the export: its bytes
    _holds: dict[tuple[str, str], bool] = field(default_factory=dict)
    findings: list | None = None  # the shapes tier's findings on this load, once made

    def holds(self, path: str, expected_path: str | None = None) -> bool:
        """Whether attribute ``path`` holds exactly the expected array of ``expected_path`` (default: its own):
        same dtype, shape and bytes, judged on the exported bytes when there are any, else on the digest."""
        want = expected_path or path
        key = (path, want)
        if key not in self._holds:
            entry, view = self.after.get(path), self.exported.get(path)
            if view is not None:
                self._holds[key] = same_bytes(view, self.expected.attributes[want])
            else:
                self._holds[key] = (
                    entry is not None and bool(entry.digest) and entry.digest == self.expected.digests[want]
                )
        return self._holds[key]


def same_bytes(got: np.ndarray, want: np.ndarray) -> bool:
    """Same dtype, shape and bytes (what equal digests mean: -0.0 is not 0.0, a NaN equals its own bits)."""
    if got.dtype.str != want.dtype.str or got.shape != want.shape:
        return False
    width = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}.get(want.dtype.itemsize)
    if width is None or not got.flags.c_contiguous or not want.flags.c_contiguous:
        return got.tobytes() == want.tobytes()
    return bool(np.array_equal(got.view(width), want.view(width)))  # integers: exact bits, at memory speed


def read(
    agent: Agent,
    handle: int,
    paths: list[str],
    deadline: Deadline,
    what: str,
    full: list[str] = (),
    budget: int = 0,
    dotted: bool = False,
    digests: bool = True,
    sample: bool = False,
) -> tuple[dict[str, Entry], Reply]:
    request = {"h": handle, "paths": paths, "full": list(full), "dotted": dotted, "digests": digests, "sample": sample}
    reply = agent.ask("read", request, deadline, what, budget=budget)
    try:
        values = protocol.mapping(reply.fields.get("values"), "the values", len(paths) + 1)
        protocol.exactly_keys(values, paths, "the values")
        return {p: _entry(values[p], p) for p in paths}, reply
    except ProtocolError as exc:
        raise Stop(Failure("protocol", f"{what}: the reply cannot be used ({exc})")) from None


def load(session: Session, name: str, deadline: Deadline) -> Load:
    """Build a model, run the student's loader on checkpoint ``name``, read back every attribute, export it.

    Kept for later tiers, failures included (a loader that hung once is not run again). A tier that asks
    while another one's load of the same checkpoint runs waits for it, within its own time."""
    lock = session.load_locks[name]
    if not lock.acquire(timeout=max(0.0, deadline.end - time.monotonic())):
        raise Stop(Failure("timeout", f"loading the {name} checkpoint in the shapes tier took all of this tier's time"))
    try:
        if name not in session.loads:
            session.loads[name] = _load(session, name, deadline)
        return session.loads[name]
    finally:
        lock.release()
        if name == session.primary_name:
            session.primary_loaded.set()  # the torch-free lane's tiers may start


def finished(session: Session, name: str, deadline: Deadline) -> Load | None:
    """Checkpoint ``name``'s load once no tier is running it, or None when none ran (or it outlasted ``deadline``)."""
    lock = session.load_locks[name]
    if not lock.acquire(timeout=max(0.0, deadline.end - time.monotonic())):
        return None
    lock.release()
    return session.loads.get(name)


def _load(session: Session, name: str, deadline: Deadline) -> Load:
    expected = session.checkpoints[name]
    load = Load(expected)
    paths = [*attribute_paths(expected.shape.num_layers), TIE]
    spare: ResultsMemfd | None = None
    try:
        agent = session.torch
        imported = agent.ready(deadline)
        if not imported.has("load_gpt2_weights"):
            what = f"{session.prepared.module_label} does not define a function named load_gpt2_weights"
            raise Stop(Failure("raised", what))
        # The export's memfd, its pages allocated while the student's GPTModel(...) and loader run.
        spare = ResultsMemfd(export_budget(expected.shape), 4 * expected.shape.parameters + (1 << 20))
        load.model = session.new_model(agent, name, deadline)
        load.process_start = agent.process.starts
        load.before, _ = read(
            agent, load.model, paths, deadline, "reading the new model's attributes", digests=False, sample=True
        )
        reply = agent.ask(
            "call",
            {
                "fn": "load_gpt2_weights",
                "args": [{"h": load.model}, {"v": agent.checkpoint_path(name)}],
                "label": "load_gpt2_weights",
                "arrays": False,
            },
            deadline,
            "load_gpt2_weights",
        )
        load.returned = protocol.desc(reply.fields.get("result"), "what load_gpt2_weights returned")
        load.after, reply = read(
            agent, load.model, paths, deadline, "reading the loaded attributes", dotted=True, sample=True, digests=False
        )
        load.dotted = [
            protocol.text(n, "a name", 200)
            for n in protocol.sequence(reply.fields.get("dotted", []), "dotted names", 20)
        ]
        _export(session, agent, load, paths, deadline, spare)
        unseen = [p for p in paths if load.after[p].kind in ("array", "tensor") and p not in load.exported]
        if unseen:  # not in the export (a tensor, a strided view, no export at all): their digests, then
            digested, _ = read(agent, load.model, unseen, deadline, "reading the loaded attributes' digests")
            for p in unseen:  # only the digest: object ids (the tie) are numbered per read, so keep the first's
                same = (digested[p].kind, digested[p].dtype, digested[p].shape) == (
                    load.after[p].kind,
                    load.after[p].dtype,
                    load.after[p].shape,
                )
                load.after[p] = replace(load.after[p], digest=digested[p].digest if same else "")
        with ThreadPoolExecutor(defaults.COMPARE_THREADS) as pool:  # memory-bound: each thread its arrays
            held = dict(zip(paths[:-1], pool.map(load.holds, paths[:-1]), strict=True))
        wrong = [p for p in paths[:-1] if not held[p]]
        load.arrays = {p: load.exported[p] for p in wrong if p in load.exported}
        load.arrays.update(_fetch(session, agent, load, [p for p in wrong if p not in load.exported], deadline))
    except Stop as stop:
        load.failure = stop.failure
    except ProtocolError as exc:
        load.failure = Failure("protocol", f"load_gpt2_weights: the reply cannot be used ({exc})")
    finally:
        if spare is not None:
            spare.close()
    return load


def _fetch(session: Session, agent: Agent, load: Load, wrong: list[str], deadline: Deadline) -> dict[str, np.ndarray]:
    """The whole arrays of wrong attributes (for the diagnosis), as many as the budget allows."""
    expected = load.expected.attributes
    chosen, total = [], 0
    for path in wrong:
        entry = load.after[path]
        if entry.kind not in ("array", "tensor") or not entry.dtype:
            continue
        size = int(np.prod(entry.shape, dtype=np.float64)) * np.dtype(entry.dtype).itemsize
        if total + size > max(FETCH_BYTES, 2 * sum(a.nbytes for a in expected.values())) // 2:
            break
        chosen.append(path)
        total += size
    if not chosen:
        return {}
    entries, reply = read(
        agent, load.model, chosen, deadline, "reading the wrong attributes", full=chosen, budget=total + (1 << 16)
    )
    out = {}
    for path in chosen:
        if entries[path].array is not None:
            array = reply.array(entries[path].array, path)
            if array.dtype.str == entries[path].dtype and array.shape == entries[path].shape:
                out[path] = array
    return out


def _export(
    session: Session, agent: Agent, load: Load, paths: list[str], deadline: Deadline, spare: ResultsMemfd
) -> None:
    """Pickle the loaded model for the torch-free process (kept as a sealed memfd); note where its attributes are."""
    reply = agent.try_ask(
        "export",
        {"h": load.model, "paths": paths},
        deadline,
        "sending your model to the torch-free process",
        budget=spare.size,
        results=spare,
    )
    try:  # an export's reply holds its memfd's descriptor until closed, whatever its fields say
        _take_export(session, load, reply)
    finally:
        reply.close()


def _take_export(session: Session, load: Load, reply: Reply) -> None:
    """Keep the exported model's memfd and the views of the attributes it holds (or say why there is none)."""
    if not reply.ok:
        load.blob_problem = failure_of(reply, "pickling your model for the torch-free process", session.limits).text
        if reply.status in ("timeout", "crashed"):
            raise Stop(failure_of(reply, "pickling your model", session.limits))
        return
    torch_paths = reply.fields.get("torch_paths")
    if torch_paths:
        paths = [protocol.text(p, "a path", 200) for p in protocol.sequence(torch_paths, "torch paths", 20)]
        load.blob_problem = (
            f"your model holds torch tensors ({', '.join(paths[:4])}): the forward pass must "
            "run on NumPy arrays; convert with .detach().numpy() while loading"
        )
        return
    blocks = reply.bulk.blocks if reply.bulk else []
    indices = [
        protocol.integer(reply.fields.get("blob"), "the model", 0, len(blocks) - 1),
        *(
            protocol.integer(i, "a buffer", 0, len(blocks) - 1)
            for i in protocol.sequence(reply.fields.get("buffers", []), "the buffers", 1 << 16)
        ),
    ]
    load.blob_blocks = [
        {"dtype": "|u1", "shape": [blocks[i].nbytes], "offset": blocks[i].offset, "nbytes": blocks[i].nbytes}
        for i in indices
    ]
    load.blob = os.dup(reply.bulk.fd)
    load.exported = _located(load, reply, indices[1:])


def _located(load: Load, reply: Reply, buffers: list[int]) -> dict[str, np.ndarray]:
    """The exported bytes of each attribute the export says it holds, viewed as what the read said it is.

    A claim is only where to look: a block of another size is ignored (that attribute is then judged
    by its digest), and the bytes found there are what the shapes tier compares."""
    located = protocol.mapping(reply.fields.get("located", {}), "the located attributes", len(load.after) + 1)
    out = {}
    for path, index in located.items():
        entry = load.after.get(path)
        position = protocol.integer(index, "a buffer", 0, len(buffers) - 1) if buffers else None
        if entry is None or entry.kind != "array" or position is None or entry.dtype not in protocol.ALLOWED_DTYPES:
            continue
        dtype = np.dtype(entry.dtype)
        raw = reply.array(buffers[position], path)
        if raw.nbytes != int(np.prod(entry.shape, dtype=np.int64)) * dtype.itemsize:
            continue
        if raw.nbytes and raw.__array_interface__["data"][0] % dtype.itemsize:
            continue
        out[path] = raw.view(dtype).reshape(entry.shape)
    return out
