"""The agent: the only grader code inside a student process.

It imports the submission and carries out generic operations the grader asks for
(build an object, call a function, read attributes, copy arrays in, pickle a model
for the torch-free process, record what sub-modules received and returned), and
describes the results as plain data. It knows nothing of the lab: no mapping, no
expected values, no loader, no tolerance. Every verdict is made by the grader from
what this sends, and anything it sends may be forged by the student's code, which
shares the process; forging a right answer needs the right answer.

Messages are JSON datagrams on a SOCK_SEQPACKET socket (``grader/sandbox/protocol.py``
declares them); bulk arrays travel in memfds the grader creates, sizes and seals.
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import json
import math
import mmap
import os
import pickle
import socket
import sys
import traceback
from typing import Any

import numpy as np

PROTOCOL = 1
MAX_MESSAGE = 4 << 20  # bytes of one datagram, either way
MAX_ITEMS = 4096  # items of a container described
MAX_TEXT = 2000  # characters of a string described
MAX_DEPTH = 6  # nesting of a described container
SUBMISSION = "/submission"  # where the grader binds the submission (the real folder when not isolated)
NUMERIC_KINDS = "biufc"
PRELOADED: dict[str, Any] = {}  # checkpoint folder -> what the fork server loaded for it before forking


class StudentError(Exception):
    """Student code raised: ``record`` says what and where."""

    def __init__(self, record: dict):
        super().__init__(record.get("message", ""))
        self.record = record


class Agent:
    """Serve the grader's requests on ``sock`` until it says goodbye or goes away."""

    def __init__(self, sock: socket.socket, flavour: str, root: str):
        self.sock = sock
        self.flavour = flavour  # "torch" (loading, comparing) or "numpy" (the judged forward passes)
        self.root = os.path.realpath(root)
        self.objects: dict[int, Any] = {}
        self.handles: dict[int, int] = {}  # id(object) -> handle
        self.module: Any = None
        self.model_class: Any = None
        self.reference_class: Any = None  # the reference decoder's GPTModel, for models the grader builds
        # Private references: a submission that patches these later does not change what we send.
        self._dumps, self._loads = json.dumps, json.loads
        self._send = sock.send
        self._sha256 = hashlib.sha256
        self._write = os.write

    # ---------------------------------------------------------------- plumbing

    def send(self, message: dict) -> None:
        data = self._dumps(message, default=str).encode()
        if len(data) > MAX_MESSAGE:
            data = self._dumps(
                {
                    "v": PROTOCOL,
                    "id": message.get("id"),
                    "status": "error",
                    "error": {"message": "the reply was too large to send"},
                }
            ).encode()
        self._send(data)

    def serve(self, layers: dict) -> None:
        self._guard_exits()
        self.send({"v": PROTOCOL, "event": "ready", "flavour": self.flavour, "layers": layers, "vm": _vm_bytes()})
        while True:
            try:
                data, fds, _flags, _ = socket.recv_fds(self.sock, MAX_MESSAGE + 1, 4)
            except OSError:
                return
            if not data:
                return
            try:
                request = self._loads(data)
            except ValueError:
                continue
            if request.get("op") == "bye":
                return
            reply = {"v": PROTOCOL, "id": request.get("id"), "status": "ok"}
            results = Results(fds[0] if fds else -1, self._write)
            inputs = Inputs(fds[1] if len(fds) > 1 else -1, request.get("inputs", []))
            try:
                reply.update(getattr(self, "op_" + str(request.get("op")))(request, inputs, results))
            except StudentError as exc:
                reply.update(status="raised", error=exc.record)
            except ResultsFull:
                reply.update(status="error", error={"message": "the results did not fit the space the grader gave"})
            except MemoryError:
                reply.update(status="raised", error={"type": "MemoryError", "message": "ran out of memory"})
            except Exception as exc:  # noqa: BLE001 - the agent's own trouble: say it, keep serving
                reply.update(
                    status="error",
                    error={"message": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc(limit=8)},
                )
            finally:
                results.close()
                inputs.close()
            reply["arrays"] = results.manifest
            self._flush()
            self.send(reply)

    def _guard_exits(self) -> None:
        """``os._exit`` and ``os.abort`` say where they were called before the process ends."""
        real_exit, real_abort = os._exit, os.abort

        def where() -> str | None:
            for frame in reversed(traceback.extract_stack()):
                if self._own(frame.filename):
                    return f"{self._relative(frame.filename)}, line {frame.lineno}"
            return None

        def guarded_exit(code: int = 0) -> None:
            self._flush()
            self.send({"v": PROTOCOL, "event": "exit-called", "how": f"os._exit({code!r})", "where": where()})
            real_exit(code)

        def guarded_abort() -> None:
            self._flush()
            self.send({"v": PROTOCOL, "event": "exit-called", "how": "os.abort()", "where": where()})
            real_abort()

        os._exit, os.abort = guarded_exit, guarded_abort  # type: ignore[assignment]

    @staticmethod
    def _flush() -> None:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:  # noqa: BLE001 - a student may have replaced the streams
                pass

    # ---------------------------------------------------------------- handles and descriptions

    def keep(self, obj: Any) -> int:
        handle = self.handles.get(id(obj))
        if handle is None or self.objects.get(handle) is not obj:
            handle = len(self.objects) + 1
            while handle in self.objects:
                handle += 1
            self.objects[handle] = obj
            self.handles[id(obj)] = handle
        return handle

    def get(self, handle: Any) -> Any:
        if not isinstance(handle, int) or handle not in self.objects:
            raise ValueError(f"no object with handle {handle!r}")
        return self.objects[handle]

    def describe(self, obj: Any, results: Results | None, depth: int = 0) -> dict:
        """A JSON description of ``obj``; arrays go to ``results`` when given, other objects get a handle."""
        if obj is None:
            return {"t": "none"}
        if isinstance(obj, (bool, np.bool_)):
            return {"t": "bool", "v": bool(obj)}
        if isinstance(obj, (int, np.integer)):
            return {"t": "int", "v": int(obj)}
        if isinstance(obj, (float, np.floating)):
            value = float(obj)
            return {"t": "float", "v": value if math.isfinite(value) else str(value), "np": type(obj).__name__}
        if isinstance(obj, str):
            return {"t": "str", "v": obj[:MAX_TEXT], "len": len(obj)}
        if isinstance(obj, np.ndarray):
            return self._describe_array(obj, results)
        if _is_tensor(obj):
            out = {"t": "tensor", "dtype": str(obj.dtype), "shape": [int(n) for n in obj.shape]}
            try:
                out["array"] = self._describe_array(np.asarray(obj.detach().cpu()), results)
            except Exception as exc:  # noqa: BLE001
                out["problem"] = f"{type(exc).__name__}: {exc}"
            return out
        if depth < MAX_DEPTH and isinstance(obj, (tuple, list)):
            items = [self.describe(v, results, depth + 1) for v in obj[:MAX_ITEMS]]
            return {"t": "tuple" if isinstance(obj, tuple) else "list", "items": items, "len": len(obj)}
        if depth < MAX_DEPTH and isinstance(obj, dict):
            items = [
                [self.describe(k, None, MAX_DEPTH), self.describe(v, results, depth + 1)]
                for k, v in list(obj.items())[:MAX_ITEMS]
            ]
            return {"t": "dict", "items": items, "len": len(obj)}
        kind = "callable" if callable(obj) and not isinstance(obj, type) else "object"
        return {
            "t": kind,
            "type": type(obj).__qualname__[:200],
            "module": str(type(obj).__module__)[:200],
            "h": self.keep(obj),
        }

    def _describe_array(self, array: np.ndarray, results: Results | None) -> dict:
        out = {"t": "array", "dtype": array.dtype.str, "shape": [int(n) for n in array.shape]}
        if results is not None and array.dtype.kind in NUMERIC_KINDS:
            out["a"] = results.add(array)
        return out

    # ---------------------------------------------------------------- student calls

    def run_student(self, label: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except BaseException as exc:  # noqa: BLE001 - student code may raise anything, even SystemExit
            raise StudentError(self.record(exc, label)) from None

    def record(self, exc: BaseException, label: str) -> dict:
        """What raised, where in the student's files, and the code line."""
        message = str(exc)
        if isinstance(exc, SystemExit):
            message = f"the code called sys.exit({exc.code!r})"
        out: dict[str, Any] = {"function": label, "type": type(exc).__name__, "message": message[:MAX_TEXT]}
        if isinstance(exc, ModuleNotFoundError):
            out["module"] = str(exc.name)[:200]
        if isinstance(exc, SyntaxError) and exc.filename and self._own(exc.filename):
            out.update(file=self._relative(exc.filename), line=exc.lineno, code=(exc.text or "").strip()[:300])
            out["message"] = str(exc.msg)[:MAX_TEXT]
            return out
        frames = traceback.extract_tb(exc.__traceback__)
        own = [f for f in frames if self._own(f.filename)]
        out["frames"] = [
            [self._relative(f.filename), f.lineno, f.name[:100], (f.line or "").strip()[:300]] for f in own[-6:]
        ]
        if own:
            last = own[-1]
            out.update(file=self._relative(last.filename), line=last.lineno, code=(last.line or "").strip()[:300])
            if frames and frames[-1] is not last:
                parts = frames[-1].filename.split(os.sep)
                if "site-packages" in parts and parts.index("site-packages") + 1 < len(parts):
                    out["inside"] = parts[parts.index("site-packages") + 1].removesuffix(".py")[:100]
                elif "standins" in parts:
                    out["inside"] = parts[parts.index("standins") + 1][:100]
        return out

    def _own(self, filename: str) -> bool:
        try:
            path = os.path.realpath(filename)
        except (OSError, ValueError):
            return False
        return path == self.root or path.startswith(self.root + os.sep)

    def _relative(self, filename: str) -> str:
        return os.path.relpath(os.path.realpath(filename), self.root)[:300]

    def argument(self, spec: Any, inputs: Inputs) -> Any:
        """One argument of a call: a handle, a JSON value, an input array, or an input array as a torch tensor."""
        if not isinstance(spec, dict):
            raise ValueError(f"bad argument {spec!r}")
        if "h" in spec:
            return self.get(spec["h"])
        if "a" in spec:
            return inputs.array(spec["a"])
        if "torch" in spec:
            import torch

            return torch.from_numpy(inputs.array(spec["torch"]))
        if "tuple" in spec:
            return tuple(self.argument(item, inputs) for item in spec["tuple"])
        return spec.get("v")

    # ---------------------------------------------------------------- operations

    def op_import(self, request: dict, inputs: Inputs, results: Results) -> dict:
        """Import pretrained.py (and find GPTModel in the order the grader gives)."""
        path = os.path.join(self.root, request["module"])
        folder = os.path.dirname(path)
        for extra in reversed([folder, *request.get("path_front", [])]):
            if extra not in sys.path:
                sys.path.insert(0, extra)
        for extra in request.get("path_back", []):
            if extra not in sys.path:
                sys.path.append(extra)
        os.chdir(folder)
        module = self.run_student("importing " + request["module"], _import_file, "pretrained", path)
        self.module = module
        out: dict[str, Any] = {"functions": {}, "cells": []}
        for name in request.get("names", []):
            fn = getattr(module, name, None)
            out["functions"][name] = _signature(fn) if callable(fn) else None
        for item in getattr(module, "__notebook_errors__", [])[:50]:
            if isinstance(item, dict):
                out["cells"].append({k: str(v)[:MAX_TEXT] if isinstance(v, str) else v for k, v in item.items()})
        if request.get("reference"):
            reference = _import_file("_lab04_reference_decoder", request["reference"])
            self.reference_class = getattr(reference, "GPTModel", None)
        for how, where in request.get("model_class", []):
            cls = self._find_class(how, where)
            if isinstance(cls, type):
                self.model_class = cls
                source = os.path.realpath(inspect.getsourcefile(cls) or "")
                if self._own(source):
                    origin = self._relative(source)
                elif request.get("reference") and source == os.path.realpath(request["reference"]):
                    origin = "reference"
                else:
                    origin = f"module {getattr(cls, '__module__', '?')}"[:200]
                call = cls.__call__ if callable(cls) else None  # the instances' call, for its signature
                forward = getattr(cls, "forward", None)
                out["model_class"] = {
                    "origin": origin,
                    "how": how,
                    "init": _signature(cls),
                    "call": _signature(call),
                    "forward": _signature(forward),
                }
                break
        return out

    def _find_class(self, how: str, where: str) -> Any:
        if how == "attribute":
            return getattr(self.module, where, None)
        path = os.path.join(self.root, where) if how == "file" else where
        if not os.path.isfile(path):
            return None
        folder = os.path.dirname(path)
        if folder not in sys.path:
            sys.path.append(folder)
        name = "decoder"
        existing = sys.modules.get(name)
        if existing is not None and os.path.realpath(getattr(existing, "__file__", "") or "") == os.path.realpath(path):
            module = existing
        else:
            module = self.run_student(
                f"importing {self._relative(path) if how == 'file' else 'decoder.py'}", _import_file, name, path
            )
        return getattr(module, "GPTModel", None)

    def op_new(self, request: dict, inputs: Inputs, results: Results) -> dict:
        """Build the model class (or the reference's) with the grader's keyword arguments."""
        cls = self.reference_class if request.get("cls") == "reference" else self.model_class
        if cls is None:
            raise StudentError(
                {"function": "GPTModel(...)", "type": "NameError", "message": "no GPTModel class was found"}
            )
        kwargs = {str(k): self.argument(v, inputs) for k, v in request.get("kwargs", {}).items()}
        model = self.run_student("GPTModel(...)", cls, **kwargs)
        return {"result": self.describe(model, None)}

    def op_call(self, request: dict, inputs: Inputs, results: Results) -> dict:
        """Call a function of the submission, a method of a handle, or a handle itself."""
        target = request["fn"]
        if isinstance(target, str):
            fn = getattr(self.module, target, None)
            if not callable(fn):
                raise StudentError(
                    {
                        "function": target,
                        "type": "AttributeError",
                        "message": f"the submission defines no function {target}",
                    }
                )
        else:
            fn = self.get(target)
            for part in request.get("method", "").split(".") if request.get("method") else []:
                fn = getattr(fn, part)
        args = [self.argument(a, inputs) for a in request.get("args", [])]
        kwargs = {str(k): self.argument(v, inputs) for k, v in request.get("kwargs", {}).items()}
        result = self.run_student(request.get("label", str(target)), fn, *args, **kwargs)
        return {"result": self.describe(result, results if request.get("arrays", True) else None)}

    def op_read(self, request: dict, inputs: Inputs, results: Results) -> dict:
        """For each dotted path: what lives there, its digest, and the whole array when asked."""
        obj = self.get(request["h"])
        full = set(request.get("full", []))
        tokens: dict[int, int] = {}
        out = {}
        for path in request.get("paths", []):
            try:
                value = _follow(obj, path)
            except Exception as exc:  # noqa: BLE001 - a missing attribute, a property that raises
                out[path] = {"t": "missing", "error": f"{type(exc).__name__}: {str(exc)[:300]}"}
                continue
            entry: dict[str, Any] = {"oid": tokens.setdefault(id(value), len(tokens) + 1)}
            array = value
            if _is_tensor(value):
                entry.update(t="tensor", tdtype=str(value.dtype))
                try:
                    array = np.asarray(value.detach().cpu())
                except Exception:  # noqa: BLE001
                    array = None
            elif isinstance(value, np.ndarray):
                entry["t"] = "array"
            else:
                entry.update(t="object", type=type(value).__qualname__[:200])
                array = None
            if isinstance(array, np.ndarray):
                entry.update(dtype=array.dtype.str, shape=[int(n) for n in array.shape])
                if array.dtype.kind in NUMERIC_KINDS:
                    if request.get("digests", True):
                        entry["digest"] = digest(array, self._sha256)
                    if request.get("sample"):
                        entry["sample"] = digest(_strided(array), self._sha256)
                    if path in full:
                        entry["a"] = results.add(array)
            out[path] = entry
        reply: dict[str, Any] = {"values": out}
        if request.get("dotted"):
            reply["dotted"] = _dotted_names(obj)
        return reply

    def op_set(self, request: dict, inputs: Inputs, results: Results) -> dict:
        """Copy arrays into a model, into the existing arrays where they fit (ties survive), else by binding."""
        obj = self.get(request["h"])
        done = {}
        for path, index in request.get("values", {}).items():
            value = inputs.array(index)
            parent_path, _, name = path.rpartition(".")
            try:
                parent = _follow(obj, parent_path) if parent_path else obj
                existing = parent[int(name)] if name.isdigit() else getattr(parent, name, None)
                if isinstance(existing, np.ndarray) and existing.shape == value.shape and existing.flags.writeable:
                    existing[...] = value
                    done[path] = "copied"
                else:
                    if name.isdigit():
                        parent[int(name)] = value.copy()
                    else:
                        setattr(parent, name, value.copy())
                    done[path] = "bound"
            except Exception as exc:  # noqa: BLE001 - the student's class may not have this attribute
                done[path] = f"{type(exc).__name__}: {str(exc)[:200]}"
        return {"set": done}

    def op_export(self, request: dict, inputs: Inputs, results: Results) -> dict:
        """Pickle a model for the torch-free process; torch tensors inside it are named instead."""
        obj = self.get(request["h"])
        found = _torch_paths(obj)
        if found:
            return {"torch_paths": found[:20]}
        buffers: list[pickle.PickleBuffer] = []
        # Protocol 5 with out-of-band buffers: the arrays' bytes are written once, side by side, and the
        # torch-free process maps them instead of copying them again.
        data = self.run_student(
            "sending your model to the torch-free process",
            pickle.dumps,
            obj,
            protocol=5,
            buffer_callback=buffers.append,
        )
        stream = results.add_bytes(data)
        raw = []
        for buffer in buffers:
            results.align(64)
            raw.append(results.add_bytes(buffer.raw()))
        return {"blob": stream, "buffers": raw, "nbytes": results.offset}

    def op_adopt(self, request: dict, inputs: Inputs, results: Results) -> dict:
        """Unpickle the model the torch process exported (in the torch-free process)."""
        mapping, stream, buffers = inputs.pickled()
        model = self.run_student(
            "receiving your model in the torch-free process", pickle.loads, stream, buffers=buffers
        )
        self.keep(mapping)  # the model's arrays live in it (a private copy-on-write mapping)
        return {"result": self.describe(model, None)}

    def op_hf(self, request: dict, inputs: Inputs, results: Results) -> dict:
        """HuggingFace's model and tokenizer for a local checkpoint (the torch process only)."""
        from transformers import GPT2LMHeadModel, GPT2Tokenizer

        preloaded = PRELOADED.get(request.get("preloaded", ""))
        if preloaded is not None:  # loaded by the fork server before the fork: private to this process now
            model, tokenizer = preloaded
            for obj in (model, model.config, tokenizer):  # as if loaded from the path this process sees
                for attr in ("name_or_path", "_name_or_path"):
                    if hasattr(obj, attr):
                        setattr(obj, attr, request["path"])
        else:
            model = GPT2LMHeadModel.from_pretrained(request["path"]).eval()
            tokenizer = GPT2Tokenizer.from_pretrained(request["path"])
        return {"model": self.keep(model), "tokenizer": self.keep(tokenizer)}

    def op_tokenizer(self, request: dict, inputs: Inputs, results: Results) -> dict:
        """A GPT-2 tokenizer that needs no transformers (the torch-free process)."""
        from lab04_tokenizer import StandInTokenizer

        preloaded = PRELOADED.get(request.get("preloaded", ""))
        return {"tokenizer": self.keep(preloaded if preloaded is not None else StandInTokenizer(request["path"]))}

    def op_trace(self, request: dict, inputs: Inputs, results: Results) -> dict:
        """Run a call with spies on sub-modules; return what each first received and returned."""
        obj = self.get(request["h"])
        log: dict[str, tuple] = {}
        restore = []
        for owner_path, attr, label in request.get("spy", []):
            try:
                owner = _follow(obj, owner_path) if owner_path else obj
                inner = owner[int(attr)] if attr.isdigit() else getattr(owner, attr)
            except Exception:  # noqa: BLE001 - the student's model may not have this part
                continue
            spy = Spy(inner, label, log)
            try:
                if attr.isdigit():
                    owner[int(attr)] = spy
                else:
                    setattr(owner, attr, spy)
            except Exception:  # noqa: BLE001
                continue
            restore.append((owner, attr, inner))
        error = None
        try:
            self.op_call(request["call"] | {"arrays": False}, inputs, Results(-1, self._write))
        except StudentError as exc:
            error = exc.record
        finally:
            for owner, attr, inner in reversed(restore):
                if attr.isdigit():
                    owner[int(attr)] = inner
                else:
                    setattr(owner, attr, inner)
        out = {}
        for label, (given, returned) in log.items():
            out[label] = [self.describe(given, results, MAX_DEPTH), self.describe(returned, results, MAX_DEPTH)]
        return {"steps": out, "error": error}

    def op_clone(self, request: dict, inputs: Inputs, results: Results) -> dict:
        """A deep copy of an object (ties inside it survive): cheaper than building another model."""
        import copy

        clone = self.run_student("copying a model", copy.deepcopy, self.get(request["h"]))
        return {"result": self.describe(clone, None)}

    def op_release(self, request: dict, inputs: Inputs, results: Results) -> dict:
        for handle in request.get("h", []):
            obj = self.objects.pop(handle, None)
            if obj is not None:
                self.handles.pop(id(obj), None)
        return {}


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


# ---------------------------------------------------------------- bulk data


class ResultsFull(Exception):
    """The results did not fit the memfd the grader sized."""


class Results:
    """Arrays and blobs written one after another into the grader's memfd; the reply lists them."""

    def __init__(self, fd: int, write: Any):
        self.fd = fd
        self.offset = 0
        self.manifest: list[dict] = []
        self._write = write

    def _put(self, data: memoryview) -> None:
        if self.fd < 0:
            raise ResultsFull
        while data:
            try:
                n = self._write(self.fd, data)
            except OSError:
                raise ResultsFull from None
            if n <= 0:
                raise ResultsFull
            data = data[n:]
            self.offset += n

    def add(self, array: np.ndarray) -> int:
        plain = np.array(array, subok=False, order="C", copy=True)  # the base class: no overridden methods
        start = self.offset
        self._put(memoryview(plain).cast("B") if plain.size else memoryview(b""))
        self.manifest.append(
            {
                "dtype": plain.dtype.str,
                "shape": [int(n) for n in plain.shape],
                "offset": start,
                "nbytes": self.offset - start,
            }
        )
        return len(self.manifest) - 1

    def align(self, boundary: int) -> None:
        """Pad to a multiple of ``boundary`` bytes, so that arrays mapped from here are aligned."""
        pad = -self.offset % boundary
        if pad:
            self._put(memoryview(bytes(pad)))

    def add_bytes(self, data: bytes | memoryview) -> int:
        start = self.offset
        view = memoryview(data).cast("B")
        self._put(view)
        self.manifest.append({"dtype": "|u1", "shape": [len(view)], "offset": start, "nbytes": len(view)})
        return len(self.manifest) - 1

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class Inputs:
    """Arrays the grader sent in a sealed memfd, as listed in the request."""

    def __init__(self, fd: int, manifest: list):
        self.fd = fd
        self.manifest = manifest
        self.map = None
        if fd >= 0 and os.fstat(fd).st_size > 0:
            self.map = mmap.mmap(fd, 0, prot=mmap.PROT_READ)

    def array(self, index: int) -> np.ndarray:
        entry = self.manifest[index]
        count = int(np.prod(entry["shape"], dtype=np.int64))
        flat = np.frombuffer(self.map, dtype=np.dtype(entry["dtype"]), count=count, offset=entry["offset"])
        return flat.reshape(entry["shape"]).copy()  # a private, writable copy

    def pickled(self) -> tuple[mmap.mmap, memoryview, list[memoryview]]:
        """A private, writable (copy-on-write) mapping of a pickled model: the stream and its buffers."""
        mapping = mmap.mmap(self.fd, 0, access=mmap.ACCESS_COPY)
        views = [memoryview(mapping)[e["offset"] : e["offset"] + e["nbytes"]] for e in self.manifest]
        return mapping, views[0], views[1:]

    def close(self) -> None:
        if self.map is not None:
            self.map.close()
        if self.fd >= 0:
            os.close(self.fd)


# ---------------------------------------------------------------- helpers


def digest(array: np.ndarray, sha256: Any = hashlib.sha256) -> str:
    """sha256 of an array's dtype, shape and C-ordered bytes (the grader computes the same)."""
    plain = np.ascontiguousarray(array)
    h = sha256(f"{plain.dtype.str}{list(plain.shape)}".encode())
    h.update(memoryview(plain).cast("B") if plain.size else b"")
    return h.hexdigest()


def _strided(array: np.ndarray, count: int = 4096) -> np.ndarray:
    """At most ``count`` evenly spaced entries: a cheap fingerprint of a large array."""
    flat = array.reshape(-1)
    return flat[:: max(1, flat.size // count)][:count]


def _vm_bytes() -> int:
    """This process's address space now, before any student code: what its memory limit must leave room above."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmSize:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0


def _import_file(name: str, path: str) -> Any:
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module


def _follow(obj: Any, path: str) -> Any:
    for part in path.split(".") if path else []:
        obj = obj[int(part)] if part.isdigit() else getattr(obj, part)
    return obj


def _is_tensor(obj: Any) -> bool:
    module = type(obj).__module__ or ""
    return module == "torch" or module.startswith("torch.")


def _signature(fn: Any) -> dict | None:
    """Parameter names, kinds and simple defaults, so the grader can call the way the code accepts."""
    if fn is None:
        return None
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return {"params": [], "opaque": True}
    params = []
    for p in sig.parameters.values():
        entry: dict[str, Any] = {"name": p.name, "kind": p.kind.name}
        if p.default is not inspect.Parameter.empty:
            default = p.default
            if isinstance(default, (bool, int, float, str)) or default is None:
                entry["default"] = default if not isinstance(default, float) or math.isfinite(default) else None
            else:
                entry["default_type"] = type(default).__name__
        params.append(entry)
    return {"params": params}


def _dotted_names(obj: Any) -> list[str]:
    """Attribute names with a dot in them, on the model or its direct parts (a setattr with a path)."""
    found = []
    parts = [("", obj)]
    for name, value in list(getattr(obj, "__dict__", {}).items())[:MAX_ITEMS]:
        parts.append((name, value))
        if isinstance(value, (list, tuple)):
            parts += [(f"{name}.{i}", v) for i, v in enumerate(value[:MAX_ITEMS])]
    for prefix, part in parts:
        names = getattr(part, "__dict__", None)
        if isinstance(names, dict):
            found += [f"{prefix}.{k}".lstrip(".") if prefix else str(k) for k in names if "." in str(k)]
        if len(found) >= 20:
            break
    return [str(n)[:200] for n in found[:20]]


def _torch_paths(obj: Any, limit: int = 200_000) -> list[str]:
    """Attribute paths under ``obj`` that hold torch tensors (breadth first, bounded)."""
    found, seen = [], set()
    queue = [("", obj)]
    while queue and len(seen) < limit:
        path, value = queue.pop(0)
        if id(value) in seen:
            continue
        seen.add(id(value))
        if _is_tensor(value) or (type(value).__module__ or "").startswith(("torch", "transformers")):
            found.append(path or "(the model itself)")
            continue
        if isinstance(value, (str, bytes, int, float, bool, np.ndarray, type(None))):
            continue
        if isinstance(value, dict):
            queue += [(f"{path}[{k!r}]", v) for k, v in list(value.items())[:MAX_ITEMS]]
        elif isinstance(value, (list, tuple)):
            queue += [(f"{path}.{i}" if path else str(i), v) for i, v in enumerate(value[:MAX_ITEMS])]
        elif hasattr(value, "__dict__") and not isinstance(value, type):
            queue += [(f"{path}.{k}" if path else k, v) for k, v in vars(value).items()]
    return found
