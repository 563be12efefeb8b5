"""One student's grading: their two sandboxed processes and what the tiers learn, shared between tiers.

The "torch" process imports the submission with torch and transformers, so loaders and
comparison functions run as written. The "numpy" process has neither (inert stand-ins):
the judged forward passes run there, on the model the torch process built and pickled.
Both are started at once (their start overlaps the trusted side's own preparation) and
restarted on demand after a crash or a time-out. Whatever a tier needs that an earlier
tier already did (the import, a load) is kept, failures included, so one hang costs one tier.
"""

from __future__ import annotations

import itertools
import os
import shutil
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from lab04_checks.contract import ModelShape

from .. import defaults
from ..errors import SandboxError
from ..sandbox import protocol
from ..sandbox.limits import Limits
from ..sandbox.plan import CHECKPOINTS, FALLBACK, build_plan
from ..sandbox.process import StudentProcess
from ..sandbox.protocol import ProtocolError, Reply, Signature
from ..sandbox.zygote import Zygote
from .outcome import Deadline, Failure, Stop, failure_of
from .submission import Prepared
from .truth import Expected

REFERENCE_DECODER = Path(__file__).resolve().parents[2] / "reference" / "decoder.py"
COURSE_FUNCTIONS = (
    "get_gpt2_config",
    "create_gpt2_model",
    "get_weight_mapping",
    "load_gpt2_weights",
    "compare_outputs",
    "compare_intermediate_outputs",
    "analyze_weight_differences",
    "generate_text",
)
TIE = "lm_head.weight"
_uids = itertools.count()


def next_uid() -> int:
    """A uid for one grading run: distinct across the runs of a batch and, very likely, across processes."""
    low, high = defaults.UID_RANGE
    return low + (os.getpid() * 97 + next(_uids)) % (high - low)


def export_budget(shape: ModelShape) -> int:
    """Room for a loaded model pickled for the torch-free process: three copies of its float32 weights."""
    return 3 * 4 * (shape.parameters + shape.vocab_size * shape.d_model) + (64 << 20)


@dataclass(frozen=True)
class ModelClass:
    origin: str  # the student's file that defines GPTModel, or "reference"
    init: Signature | None
    call: Signature | None
    forward: Signature | None


@dataclass(frozen=True)
class Imported:
    """What importing the submission showed: its functions, its GPTModel, notebook cells that raised."""

    functions: dict[str, Signature | None]
    model_class: ModelClass | None
    cells: tuple[dict[str, Any], ...] = ()

    def has(self, name: str) -> bool:
        return self.functions.get(name) is not None


class Agent:
    """One student process (torch or numpy flavour) with the submission imported in it."""

    def __init__(self, session: Session, flavour: str):
        self.session = session
        self.flavour = flavour
        self.process: StudentProcess | None = None
        self.imported: Imported | None = None
        self.import_failure: Failure | None = None
        self.handles: dict[str, int] = {}  # per start of the process

    def start(self) -> None:
        s = self.session
        if self.process is None:
            limits = s.limits
            if self.flavour == "torch":  # the exported model is written into a memfd: the file limit must hold it
                biggest = max(export_budget(e.shape) for e in s.checkpoints.values())
                limits = replace(limits, file_bytes=max(limits.file_bytes, biggest))
            root = s.scratch / f"root-{self.flavour}"
            root.mkdir(exist_ok=True)
            checkpoints = {e.name: s.readable_checkpoint(e.name) for e in s.checkpoints.values()}
            plan = build_plan(
                self.flavour,
                root,
                s.prepared.work,
                s.prepared.code_folder,
                checkpoints,
                s.fallback,
                s.limits.scratch_bytes,
                s.uid,
            )
            self.process = StudentProcess(s.zygotes[self.flavour], plan, limits, s.scratch, self.flavour, s.uid)
        if not self.process.alive:
            self.imported = None
            self.handles = {}
            self.process.start()

    def checkpoint_path(self, name: str) -> str:
        """The checkpoint folder as this process sees it (the readable copy, without a private root)."""
        return self.process.path(self.session.readable_checkpoint(name), f"{CHECKPOINTS}/{name}")

    def ready(self, deadline: Deadline) -> Imported:
        """The submission imported in a live process; ``Stop`` when importing it failed."""
        if self.import_failure is not None:
            raise Stop(self.import_failure)
        other = self.session.numpy if self is self.session.torch else self.session.torch
        if other.import_failure is not None and other.import_failure.kind == "skipped":
            raise Stop(other.import_failure)  # the same import hung or crashed in the other process
        self.start()
        if self.imported is not None:
            return self.imported
        try:
            self.process.wait_ready()  # its view of the file system decides the paths below
        except SandboxError:
            raise
        p = self.session.prepared
        if deadline.end - time.monotonic() < MIN_IMPORT_SECONDS:  # an earlier step used up this tier's time
            raise Stop(Failure("timeout", f"no time was left in this tier to import {p.module_label} again"))
        request = {
            "module": p.module,
            "names": list(COURSE_FUNCTIONS),
            "model_class": [
                ["attribute", "GPTModel"],
                *(["file", f] for f in p.decoders),
                ["reference", self.process.path(self.session.fallback / "decoder.py", f"{FALLBACK}/decoder.py")],
            ],
            "path_back": [self.process.path(self.session.fallback, FALLBACK)],
            "reference": self.process.path(self.session.fallback / "decoder.py", f"{FALLBACK}/decoder.py"),
        }
        reply = self.process.request("import", request, float(deadline), budget=0)
        if not reply.ok:
            failure = failure_of(reply, f"importing {p.module_label}", self.session.limits)
            # The same code fails the same way: never import it again. A hang or a crash costs one tier.
            if reply.status in ("raised", "protocol"):
                self.import_failure = failure
            elif reply.status in ("timeout", "crashed"):
                what = "timed out" if reply.status == "timeout" else "crashed"
                self.import_failure = Failure("skipped", f"importing {p.module_label} {what} in an earlier tier")
            raise Stop(failure)
        try:
            self.imported = _imported(reply.fields)
        except ProtocolError as exc:
            self.import_failure = Failure("protocol", f"importing {p.module_label}: the reply cannot be used ({exc})")
            raise Stop(self.import_failure) from None
        return self.imported

    def ask(self, op: str, fields: dict, deadline: Deadline, what: str, **kwargs: Any) -> Reply:
        """One request that must succeed; ``Stop`` with the failure otherwise."""
        reply = self.try_ask(op, fields, deadline, what, **kwargs)
        if not reply.ok:
            raise Stop(failure_of(reply, what, self.session.limits))
        return reply

    def try_ask(self, op: str, fields: dict, deadline: Deadline, what: str, **kwargs: Any) -> Reply:
        """One request whatever its outcome (after importing the submission)."""
        self.ready(deadline)
        reply = self.process.request(op, fields, float(deadline), **kwargs)
        self.session.requests += 1
        return reply

    def goodbye(self) -> None:
        if self.process is not None:
            self.process.goodbye()

    def close(self) -> None:
        if self.process is not None:
            self.process.close()


def _imported(fields: dict) -> Imported:
    functions = protocol.mapping(fields.get("functions", {}), "the functions", 64)
    protocol.exactly_keys(functions, list(COURSE_FUNCTIONS), "the functions")
    found = {name: protocol.signature(functions.get(name), name) for name in COURSE_FUNCTIONS}
    model_class = None
    raw = fields.get("model_class")
    if raw is not None:
        raw = protocol.mapping(raw, "the model class", 8)
        origin = protocol.text(raw.get("origin", ""), "the origin", 300) or "?"
        if raw.get("how") == "reference":
            origin = "reference"
        model_class = ModelClass(
            origin,
            protocol.signature(raw.get("init"), "GPTModel"),
            protocol.signature(raw.get("call"), "GPTModel.__call__"),
            protocol.signature(raw.get("forward"), "GPTModel.forward"),
        )
    cells = []
    for cell in protocol.sequence(fields.get("cells", []), "the cells", 50):
        cell = protocol.mapping(cell, "a cell", 8)
        cells.append(
            {
                "cell": protocol.integer(cell.get("cell"), "a cell", 0, 10**6),
                "type": protocol.text(cell.get("type", ""), "a cell", 100),
                "message": protocol.text(cell.get("message", ""), "a cell", 300),
                "line": protocol.integer(cell.get("line"), "a cell", 0, 10**6, optional=True),
            }
        )
    return Imported(found, model_class, tuple(cells))


class Session:
    """Everything one student's grading shares between tiers."""

    def __init__(
        self, prepared: Prepared, expectations: Any, limits: Limits, zygotes: dict[str, Zygote], scratch: Path
    ) -> None:
        self.prepared = prepared
        self.expectations = expectations
        self.inputs = expectations.inputs
        self.roles: dict[str, str] = expectations.roles  # primary, second (optional), function -> checkpoint name
        self.checkpoints: dict[str, Expected] = expectations.checkpoints  # by name
        self.limits = limits
        self.zygotes = zygotes
        self.scratch = scratch
        self.uid = limits.uid if limits.uid is not None else next_uid()
        self.fallback = scratch / "fallback"
        self.fallback.mkdir(exist_ok=True)
        shutil.copyfile(REFERENCE_DECODER, self.fallback / "decoder.py")
        for folder in (self.fallback, self.scratch):
            folder.chmod(0o755)
        self.torch = Agent(self, "torch")
        self.numpy = Agent(self, "numpy")
        self.loads: dict[str, Any] = {}  # checkpoint -> loading.Load, once it ended
        self.load_locks = {name: threading.Lock() for name in self.checkpoints}  # held while one loads
        self.primary_loaded = threading.Event()  # the primary's load ended (or will not run)
        self.adopted: dict[tuple[str, int], int] = {}  # (checkpoint, start of the numpy process) -> handle
        self.requests = 0
        self.notes: list[str] = []
        self.cache: dict[Any, Any] = {}

    def readable_checkpoint(self, name: str) -> Path:
        """The checkpoint folder as the student's uid can read it: itself, or a staged copy (hard links)."""
        source = self.checkpoints[name].source.path
        if _world_readable(source):
            return source
        staged = self.scratch / "checkpoints" / name
        if not staged.is_dir():
            staged.mkdir(parents=True)
            (self.scratch / "checkpoints").chmod(0o755)
            staged.chmod(0o755)
            for entry in sorted(source.iterdir()):
                real = entry.resolve()  # the hub cache holds symbolic links into its blobs folder
                if not real.is_file():
                    continue
                try:
                    if not real.stat().st_mode & 0o004:
                        raise PermissionError("not world-readable")  # a link would not help: copy
                    os.link(real, staged / entry.name)
                except OSError:
                    shutil.copyfile(real, staged / entry.name)
                    (staged / entry.name).chmod(0o644)
        return staged

    @property
    def primary_name(self) -> str:
        return self.roles["primary"]

    def load_order(self) -> list[str]:
        """The checkpoints the loader runs on: the primary, then the second one."""
        return [self.roles[r] for r in ("primary", "second") if self.roles.get(r)]

    def expected(self, role: str) -> Expected:
        return self.checkpoints[self.roles[role]]

    def start(self) -> None:
        """Start both student processes now; their start overlaps the caller's own preparation."""
        self.numpy.start()  # its fork server is ready first
        self.torch.start()

    # ---------------------------------------------------------------- models

    def model_kwargs(self, imported: Imported, name: str) -> dict[str, Any]:
        """``GPTModel(...)`` as the course's create_gpt2_model builds it: no dropout, tied head."""
        kwargs: dict[str, Any] = {k: {"v": v} for k, v in self.checkpoints[name].shape.constructor_kwargs().items()}
        init = imported.model_class.init if imported.model_class else None
        if init is not None and init.accepts("dropout"):
            kwargs["dropout"] = {"v": 0.0}
        if init is not None and init.accepts("tie_weights"):
            kwargs["tie_weights"] = {"v": True}
        return kwargs

    @staticmethod
    def forward_call(imported: Imported, handle: int, ids: dict, label: str = "the forward pass") -> dict:
        """``model(ids, training=False)`` when the model accepts ``training``, else ``model(ids)``."""
        cls = imported.model_class
        if cls is not None and cls.call is not None and not cls.call.opaque and cls.call.accepts("training"):
            return {"fn": handle, "args": [ids], "kwargs": {"training": {"v": False}}, "label": label}
        if cls is not None and cls.forward is not None and cls.forward.accepts("training"):
            return {
                "fn": handle,
                "method": "forward",
                "args": [ids],
                "kwargs": {"training": {"v": False}},
                "label": label,
            }
        return {"fn": handle, "args": [ids], "label": label}

    def new_model(self, agent: Agent, name: str, deadline: Deadline) -> int:
        """A fresh ``GPTModel`` for checkpoint ``name`` in ``agent``'s process; its handle."""
        imported = agent.ready(deadline)
        if imported.model_class is None:
            raise Stop(
                Failure(
                    "raised",
                    "no GPTModel class was found: pretrained.py must define or import GPTModel "
                    "(from your Lab 03 decoder.py)",
                )
            )
        reply = agent.ask("new", {"kwargs": self.model_kwargs(imported, name)}, deadline, "GPTModel(...)")
        result = protocol.desc(reply.fields.get("result"), "the model")
        if result.handle is None:
            raise Stop(Failure("raised", f"GPTModel(...) gave {result.describe()}, not a model"))
        return result.handle

    def adopted_model(self, name: str, deadline: Deadline) -> int:
        """The loaded model of checkpoint ``name`` in the torch-free process; ``Stop`` when it cannot be had."""
        load = self.loads.get(name)
        if load is None:
            from .loading import load as run_loader  # loading builds on this module

            load = run_loader(self, name, deadline)
        if load.failure is not None:
            # The loader raised: every tier that needs it fails the same way. It hung or crashed: skip them.
            kind = "skipped" if load.failure.kind in ("timeout", "crashed", "skipped") else "raised"
            raise Stop(
                Failure(kind, f"load_gpt2_weights failed in the shapes tier: {load.failure.text}", load.failure.raised)
            )
        if load.blob < 0:
            raise Stop(Failure("raised", load.blob_problem or "your model could not be sent to the torch-free process"))
        agent = self.numpy
        agent.ready(deadline)
        key = (name, agent.process.starts)
        if key not in self.adopted:
            reply = agent.ask(
                "adopt",
                {},
                deadline,
                "receiving your model in the torch-free process",
                blob_fd=load.blob,
                blob_blocks=load.blob_blocks,
            )
            result = protocol.desc(reply.fields.get("result"), "the model")
            if result.handle is None:
                raise Stop(Failure("protocol", "the torch-free process did not get a model"))
            self.adopted[key] = result.handle
        return self.adopted[key]

    # ---------------------------------------------------------------- models the grader fills itself

    def close(self) -> None:
        for agent in (self.torch, self.numpy):
            agent.goodbye()  # both end at once: each frees a model's memory on its way out
        for agent in (self.torch, self.numpy):
            agent.close()
        # Views of the exported model keep its memfd (hundreds of MB) alive; the session is part of reference
        # cycles that only the garbage collector breaks, so let go of them now. Freeing the pages takes the
        # kernel 0.1 s on small: a thread does it while the caller goes on (a batch, to the next student).
        held = []
        for load in self.loads.values():
            held.append((load.blob, load.exported, load.arrays))
            load.blob, load.exported, load.arrays = -1, {}, {}
        threading.Thread(target=_release, args=(held,), daemon=True).start()


def _release(held: list[tuple[int, dict, dict]]) -> None:
    """Close the exported models' memfds and drop the views into them (the last unmaps them)."""
    while held:
        blob, exported, arrays = held.pop()
        if blob >= 0:
            os.close(blob)
        exported.clear()
        arrays.clear()


MIN_IMPORT_SECONDS = 1.0  # an import started with less time left is not tried (nor remembered as a hang)


def _world_readable(folder: Path) -> bool:
    """True when any user can reach ``folder`` (every parent searchable), list it and read each of its files.

    Without a private root the student process sees the host's path, so the parents count too."""
    try:
        if folder.stat().st_mode & 0o005 != 0o005:
            return False
        if any(parent.stat().st_mode & 0o001 == 0 for parent in folder.resolve().parents):
            return False
        return all(e.is_file() and not e.is_symlink() and e.stat().st_mode & 0o004 for e in folder.iterdir())
    except OSError:
        return False
