"""Types and helpers shared by every tier: jobs, collected data, verdicts, student calls."""

from __future__ import annotations

import importlib
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType, TracebackType
from typing import Any

import numpy as np

from .contract import ModelShape, expected_attributes, get_path, set_path

# Float32 noise is 1e-6 to 2e-6 of the largest logit and the smallest classic
# mistake (exact-erf GELU) about 2e-4 of it; the tolerance sits between them.
LOGITS_RTOL = 1e-5
# Loading copies numbers, it does not compute them: weights must match exactly
# up to float32 rounding of the source.
WEIGHTS_RTOL = 1e-6


def logits_tolerance(reference_logits: np.ndarray) -> float:
    """The largest max-abs logit difference that counts as a match: 1e-5 of the largest logit."""
    scale = float(np.max(np.abs(reference_logits))) if np.size(reference_logits) else 0.0
    return LOGITS_RTOL * max(1.0, scale)


@dataclass(frozen=True)
class CheckpointRef:
    """A local checkpoint directory and the model shape its config gives."""

    path: str
    shape: ModelShape
    label: str

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "shape": self.shape.__dict__, "label": self.label}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CheckpointRef:
        return cls(data["path"], ModelShape(**data["shape"]), data["label"])


@dataclass(frozen=True)
class TokenInput:
    """Token ids to run a model on: shape (T,) or (B, T)."""

    label: str
    ids: tuple  # nested tuples of ints, so that the job stays hashable and JSON-friendly

    def array(self) -> np.ndarray:
        return np.array(self.ids, dtype=np.int64)

    @classmethod
    def of(cls, label: str, ids: Any) -> TokenInput:
        return cls(label, _freeze(np.asarray(ids, dtype=np.int64).tolist()))


def _freeze(value: Any) -> Any:
    return tuple(_freeze(v) for v in value) if isinstance(value, list) else value


@dataclass(frozen=True)
class Job:
    """Everything a tier needs to exercise a submission. Inputs only: no expected values."""

    checkpoints: tuple[CheckpointRef, ...]
    inputs: tuple[TokenInput, ...] = ()
    trace_input: int = 0  # which input the logits tier traces sub-step by sub-step
    texts: tuple[str, ...] = ()
    mapping_layers: tuple[int, ...] = (1, 2)
    coverage_layers: tuple[int, ...] = ()
    seed: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "checkpoints": [c.to_json() for c in self.checkpoints],
            "inputs": [[i.label, i.ids] for i in self.inputs],
            "trace_input": self.trace_input,
            "texts": list(self.texts),
            "mapping_layers": list(self.mapping_layers),
            "coverage_layers": list(self.coverage_layers),
            "seed": self.seed,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Job:
        return cls(
            checkpoints=tuple(CheckpointRef.from_json(c) for c in data["checkpoints"]),
            inputs=tuple(TokenInput(label, _freeze(ids)) for label, ids in data["inputs"]),
            trace_input=data["trace_input"],
            texts=tuple(data["texts"]),
            mapping_layers=tuple(data["mapping_layers"]),
            coverage_layers=tuple(data["coverage_layers"]),
            seed=data["seed"],
        )


@dataclass
class Collected:
    """Raw data a tier gathered from student code: arrays plus JSON-friendly facts."""

    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class Verdict:
    """A tier's judgement, made in the trusted process from collected data."""

    status: str  # passed | failed | error
    detail: str
    max_diff: float | None = None
    tolerance: float | None = None
    facts: dict[str, Any] = field(default_factory=dict)


_HF_ASSETS: dict[str, tuple[Any, Any, dict[str, np.ndarray]]] = {}


def hf_assets(path: str) -> tuple[Any, Any, dict[str, np.ndarray]]:
    """HuggingFace's model, tokenizer and NumPy state dict for a checkpoint, loaded once per process.

    The student process loads them before it imports the submission, so that student code
    patching json, numpy or transformers cannot break the harness's own loading.
    """
    if path not in _HF_ASSETS:
        from transformers import GPT2LMHeadModel, GPT2Tokenizer

        model = GPT2LMHeadModel.from_pretrained(path).eval()
        state = {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}
        _HF_ASSETS[path] = (model, GPT2Tokenizer.from_pretrained(path), state)
    return _HF_ASSETS[path]


# ---------------------------------------------------------------- student calls


class StudentFailure(Exception):
    """Student code raised; ``record`` says what, where and in which function."""

    def __init__(self, record: dict[str, Any], original: BaseException | None = None):
        super().__init__(record.get("summary", "student code failed"))
        self.record = record
        self.original = original  # for in-process runs (public tests), to show the student's own traceback


def _student_frames(tb: TracebackType | None, root: Path) -> list[traceback.FrameSummary]:
    frames = traceback.extract_tb(tb)
    return [f for f in frames if _is_under(f.filename, root)]


def _is_under(filename: str, root: Path) -> bool:
    try:
        return Path(filename).resolve().is_relative_to(root)
    except (OSError, ValueError):
        return False


def _relative(filename: str, root: Path) -> str:
    try:
        return Path(filename).resolve().relative_to(root).as_posix()
    except ValueError:
        return Path(filename).name


def describe_exception(exc: BaseException, label: str, root: Path) -> dict[str, Any]:
    """A record of an exception raised while running ``label``, located in the student's files."""
    root = root.resolve()
    kind = type(exc).__name__
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if isinstance(exc, SystemExit):
        message = f"the code called sys.exit({exc.code!r})"
    elif isinstance(exc, MemoryError):
        message = "ran out of memory" + (f": {message}" if message else "")
    if len(message) > 300:
        message = message[:297] + "..."
    record: dict[str, Any] = {"function": label, "type": kind, "message": message, "file": None, "line": None}
    if isinstance(exc, SyntaxError) and exc.filename and _is_under(exc.filename, root):
        record.update(file=_relative(exc.filename, root), line=exc.lineno, code=(exc.text or "").strip())
        record["message"] = exc.msg
    else:
        frames = _student_frames(exc.__traceback__, root)
        if frames:
            last = frames[-1]
            record.update(file=_relative(last.filename, root), line=last.lineno, code=(last.line or "").strip())
            all_frames = traceback.extract_tb(exc.__traceback__)
            innermost = all_frames[-1] if all_frames else None
            if innermost is not None and innermost is not last and "site-packages" in Path(innermost.filename).parts:
                record["inside"] = _library_name(innermost.filename)
        record["traceback"] = "".join(traceback.format_list(frames[-5:]))
    record["summary"] = summarize_failure(record)
    return record


def _library_name(filename: str) -> str:
    parts = Path(filename).parts
    i = parts.index("site-packages")
    return parts[i + 1].removesuffix(".py") if i + 1 < len(parts) else Path(filename).stem


def summarize_failure(record: dict[str, Any]) -> str:
    """One line a student can act on: what raised, where, and the code line."""
    what = f"{record['type']}: {record['message']}" if record.get("message") else record["type"]
    text = f"{record['function']} raised {what}"
    if record.get("file"):
        where = f"{record['file']}, line {record['line']}"
        if record.get("inside"):
            where = f"inside {record['inside']}, called from {where}"
        text += f" ({where}"
        text += f": `{record['code']}`)" if record.get("code") else ")"
    return text


def call_student(root: Path, label: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call student code; any exception, ``SystemExit`` included, becomes a ``StudentFailure``."""
    __tracebackhide__ = True  # pytest: show students their frames, not ours
    try:
        return fn(*args, **kwargs)
    except BaseException as exc:  # noqa: BLE001 - student code may raise anything, even SystemExit
        raise StudentFailure(describe_exception(exc, label, root), exc) from None


# ---------------------------------------------------------------- the submission's modules


@dataclass
class StudentCode:
    """A submission's imported modules, and the models built from them (cached per checkpoint)."""

    root: Path
    pretrained: ModuleType
    GPTModel: type
    decoder_origin: str  # "submission" | "reference"
    loaded: dict[str, Any] = field(default_factory=dict)

    def function(self, name: str) -> Callable[..., Any]:
        """A function of ``pretrained.py``, or a failure that says it is missing."""
        fn = getattr(self.pretrained, name, None)
        if not callable(fn):
            record = {"function": name, "type": "AttributeError", "file": "pretrained.py", "line": None,
                      "message": f"pretrained.py does not define {name}()"}  # fmt: skip
            record["summary"] = f"pretrained.py does not define a function named {name}"
            for cell, kind, message in getattr(self.pretrained, "__notebook_errors__", []):
                record["summary"] += f"; cell {cell} of the notebook raised {kind}: {message}"
            raise StudentFailure(record)
        return fn

    def call(self, label: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return call_student(self.root, label, fn, *args, **kwargs)

    def new_model(self, shape: ModelShape) -> Any:
        """``GPTModel(...)`` with the checkpoint's sizes."""
        return self.call("GPTModel(...)", self.GPTModel, **shape.constructor_kwargs())

    def loaded_model(self, checkpoint: CheckpointRef, before_load: Callable[[Any], None] | None = None) -> Any:
        """A model built and filled by the student's ``load_gpt2_weights``; failures are cached too."""
        cached = self.loaded.get(checkpoint.path)
        if cached is None:
            try:
                model = self.new_model(checkpoint.shape)
                if before_load is not None:
                    before_load(model)
                returned = self.call("load_gpt2_weights", self.function("load_gpt2_weights"), model, checkpoint.path)
                cached = ("ok", model, returned)
            except StudentFailure as failure:
                cached = ("failed", failure, None)
            self.loaded[checkpoint.path] = cached
        if cached[0] == "failed":
            raise cached[1]
        return cached[1]

    def returned_by_loader(self, checkpoint: CheckpointRef) -> Any:
        """What ``load_gpt2_weights`` returned for ``checkpoint`` (it should be the model)."""
        return self.loaded[checkpoint.path][2]

    def reference_loaded_model(self, checkpoint: CheckpointRef, hf_state: dict[str, np.ndarray]) -> Any:
        """A model whose attributes the harness set itself, so that a loader bug cannot leak in."""
        model = self.new_model(checkpoint.shape)
        for path, value in expected_attributes(hf_state, checkpoint.shape.num_layers).items():
            self.call(f"setting {path}", set_path, model, path, value.copy())
        return model


def import_student(root: Path, module: str = "pretrained", decoder_origin: str | None = None) -> StudentCode:
    """Import ``pretrained`` (and ``decoder``) from ``root``; import problems become a ``StudentFailure``."""
    root = root.resolve()
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    pretrained = _import(module, root)
    own = getattr(pretrained, "GPTModel", None)
    if (root / "decoder.py").is_file() and decoder_origin != "reference":
        decoder = _import("decoder", root)
        cls, origin = getattr(decoder, "GPTModel", None), decoder_origin or "submission"
        if cls is None:
            record = {"function": "import decoder", "type": "AttributeError", "file": "decoder.py", "line": None,
                      "message": "decoder.py does not define GPTModel"}  # fmt: skip
            record["summary"] = "decoder.py does not define a class named GPTModel"
            raise StudentFailure(record)
    elif isinstance(own, type) and own.__module__ == pretrained.__name__:
        cls, origin = own, "submission"  # a notebook that defines its own GPTModel
    else:
        decoder = _import("decoder", root)
        cls, origin = decoder.GPTModel, decoder_origin or "reference"
    return StudentCode(root=root, pretrained=pretrained, GPTModel=cls, decoder_origin=origin)


def _import(name: str, root: Path) -> ModuleType:
    if name in sys.modules:
        return sys.modules[name]
    try:
        return importlib.import_module(name)
    except BaseException as exc:  # noqa: BLE001 - a submission's import may raise anything
        record = describe_exception(exc, f"importing {name}.py", root)
        if isinstance(exc, ModuleNotFoundError) and record.get("file") is None:
            record["message"] = f"no module named {exc.name!r}"
        elif isinstance(exc, ModuleNotFoundError):
            # Like Flask's locate_app: the module was found, but it imports something that is missing.
            record["message"] = f"it imports {exc.name!r}, which is not installed in the grading environment"
        record["summary"] = summarize_failure(record)
        raise StudentFailure(record, exc) from None


__all__ = [
    "CheckpointRef",
    "Collected",
    "Job",
    "StudentCode",
    "StudentFailure",
    "TokenInput",
    "Verdict",
    "call_student",
    "describe_exception",
    "get_path",
    "import_student",
    "logits_tolerance",
    "summarize_failure",
]  # fmt: skip
