"""The agent: the only grader code inside a student process.

It imports the submission and carries out generic operations the grader asks for
(build an object, call a function, read attributes, copy arrays in, pickle a model
for the torch-free process, record what sub-modules received and returned), and
describes the results as plain data. It knows nothing of the lab: no mapping, no
expected values, no loader, no tolerance. Every verdict is made by the grader from
what this sends, and anything it sends may be forged by the student's code, which
shares the process; forging a right answer needs the right answer.

Messages are JSON datagrams on a SOCK_SEQPACKET socket (``grader/sandbox/protocol.py``
declares them); bulk arrays travel in memfds the grader creates, sizes and seals
(``lab04_buffers``). This module is the core: the serve loop, handles, descriptions and
the record of what student code raised; ``lab04_ops`` carries out each operation.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import socket
import sys
import traceback
from typing import Any

import numpy as np
from lab04_buffers import Inputs, Results, ResultsFull
from lab04_inspect import MAX_DEPTH, MAX_ITEMS, MAX_TEXT, NUMERIC_KINDS, StudentError, is_tensor, vm_bytes
from lab04_ops import OPS, Operation

PROTOCOL = 1
MAX_MESSAGE = 4 << 20  # bytes of one datagram, either way
SUBMISSION = "/submission"  # where the grader binds the submission (the real folder when not isolated)


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
        # Our own references: a submission that patches these later does not change what we send.
        self._dumps, self._loads = json.dumps, json.loads
        self._send = sock.send
        self.sha256 = hashlib.sha256
        self.write = os.write

    # ---------------------------------------------------------------- plumbing

    def send(self, message: dict) -> None:
        """Send one message; one too large for a datagram becomes an error reply to the same request."""
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
        """Say "ready" (with the isolation ``layers`` held), then answer requests until "bye" or end of file."""
        self._guard_exits()
        self.send({"v": PROTOCOL, "event": "ready", "flavour": self.flavour, "layers": layers, "vm": vm_bytes()})
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
            results = Results(fds[0] if fds else -1, self.write)
            inputs = Inputs(fds[1] if len(fds) > 1 else -1, request.get("inputs", []))
            try:
                reply.update(_operation(request.get("op"))(self, request, inputs, results))
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
                if self.own(frame.filename):
                    return f"{self.relative(frame.filename)}, line {frame.lineno}"
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
        """The handle of ``obj``, a new one the first time; the object is kept alive until released."""
        handle = self.handles.get(id(obj))
        if handle is None or self.objects.get(handle) is not obj:
            handle = len(self.objects) + 1
            while handle in self.objects:
                handle += 1
            self.objects[handle] = obj
            self.handles[id(obj)] = handle
        return handle

    def get(self, handle: Any) -> Any:
        """The object of ``handle``; ValueError for a handle never given out (or released)."""
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
        if is_tensor(obj):
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
        """``fn(*args, **kwargs)``; whatever it raises comes out as a ``StudentError`` named ``label``."""
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
        if isinstance(exc, SyntaxError) and exc.filename and self.own(exc.filename):
            out.update(file=self.relative(exc.filename), line=exc.lineno, code=(exc.text or "").strip()[:300])
            out["message"] = str(exc.msg)[:MAX_TEXT]
            return out
        frames = traceback.extract_tb(exc.__traceback__)
        own = [f for f in frames if self.own(f.filename)]
        out["frames"] = [
            [self.relative(f.filename), f.lineno, f.name[:100], (f.line or "").strip()[:300]] for f in own[-6:]
        ]
        if own:
            last = own[-1]
            out.update(file=self.relative(last.filename), line=last.lineno, code=(last.line or "").strip()[:300])
            if frames and frames[-1] is not last:
                parts = frames[-1].filename.split(os.sep)
                if "site-packages" in parts and parts.index("site-packages") + 1 < len(parts):
                    out["inside"] = parts[parts.index("site-packages") + 1].removesuffix(".py")[:100]
                elif "standins" in parts:
                    out["inside"] = parts[parts.index("standins") + 1][:100]
        return out

    def own(self, filename: str) -> bool:
        """Whether ``filename`` is one of the submission's files."""
        try:
            path = os.path.realpath(filename)
        except (OSError, ValueError):
            return False
        return path == self.root or path.startswith(self.root + os.sep)

    def relative(self, filename: str) -> str:
        """``filename`` relative to the submission, as feedback names it."""
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


def _operation(op: Any) -> Operation:
    """The handler of operation ``op``."""
    handler = OPS.get(str(op))
    if handler is None:
        # Word for word what the grader was told when the operations were methods of ``Agent``.
        raise AttributeError(f"'Agent' object has no attribute 'op_{op!s}'")
    return handler
