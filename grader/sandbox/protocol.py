"""Everything that crosses the trust boundary, declared once and validated in the grader.

The grader talks to the agent in a student process (``inside/lab04_agent.py``) with JSON
datagrams on a SOCK_SEQPACKET socket; bulk arrays travel in memfds the grader creates,
sizes and seals. This module is the single description of those messages (like an
nsjail config): the operations the grader may ask for (``OPS``), what it accepts back
(``parse_reply``, ``call_results`` and the types below), and how bulk data is read. Nothing from the
student process is used before it has passed through here: sizes, nesting, counts,
types, names and strings are all checked, and a reply that is missing, partial,
oversized or malformed becomes a ``ProtocolError``, which fails the check it was for.

It is one file on purpose, longer than the others: the one place to read and audit all
that a student process can say. ``desc`` is one function for the same reason: it is the
whole grammar of a described value.
"""

from __future__ import annotations

import fcntl
import json
import math
import mmap
import os
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..text import clean

VERSION = 1
MAX_MESSAGE = 4 << 20  # bytes of one datagram, either way
MAX_DEPTH = 12  # JSON nesting accepted from the student process
MAX_ITEMS = 4096  # items of one described container
MAX_TEXT = 2000  # characters of a string from the student process
MAX_DIMS = 8
ALLOWED_DTYPES = frozenset(
    np.dtype(t).str for t in ("f2", "f4", "f8", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", "b1", "c8", "c16")
)
OPS = (
    "import",
    "new",
    "call",
    "calls",
    "read",
    "set",
    "export",
    "adopt",
    "clone",
    "hf",
    "tokenizer",
    "trace",
    "release",
    "bye",
)
DESC_KINDS = ("none", "bool", "int", "float", "str", "array", "tensor", "tuple", "list", "dict", "callable", "object")
F_SEAL_SEAL, F_SEAL_SHRINK, F_SEAL_GROW, F_SEAL_WRITE = 1, 2, 4, 8
F_ADD_SEALS = 1033


class ProtocolError(Exception):
    """A message from the student process that the grader cannot accept."""


# ---------------------------------------------------------------- JSON in


def _depth_ok(data: bytes, limit: int) -> bool:
    """True when brackets nest at most ``limit`` deep (checked before parsing, so json never recurses far)."""
    depth = 0
    in_string = escaped = False
    for byte in data:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):
            depth += 1
            if depth > limit:
                return False
        elif byte in (0x5D, 0x7D):
            depth -= 1
    return True


def decode(data: bytes, truncated: bool = False) -> dict:
    """One datagram from the student process as a dict, or ProtocolError."""
    if truncated or len(data) > MAX_MESSAGE:
        raise ProtocolError(f"a message of more than {MAX_MESSAGE} bytes")
    if not _depth_ok(data, MAX_DEPTH):
        raise ProtocolError(f"a message nested more than {MAX_DEPTH} deep")
    try:
        message = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise ProtocolError(f"a message that is not JSON ({type(exc).__name__})") from None
    if not isinstance(message, dict):
        raise ProtocolError("a message that is not a JSON object")
    if message.get("v") != VERSION:
        raise ProtocolError(f"a message of protocol version {clean(message.get('v'), 20)!r}, not {VERSION}")
    return message


def encode(message: dict) -> bytes:
    data = json.dumps({"v": VERSION, **message}, allow_nan=False).encode()
    if len(data) > MAX_MESSAGE:
        raise ValueError(f"a request of {len(data)} bytes is larger than {MAX_MESSAGE}")
    return data


# ---------------------------------------------------------------- field checks


def text(value: Any, what: str, limit: int = MAX_TEXT, optional: bool = False) -> str | None:
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise ProtocolError(f"{what} is a {type(value).__name__}, not a string")
    return clean(value, limit)


def integer(value: Any, what: str, low: int = -(2**63), high: int = 2**63 - 1, optional: bool = False) -> int | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ProtocolError(f"{what} is not an integer in [{low}, {high}]")
    return value


def mapping(value: Any, what: str, limit: int = MAX_ITEMS) -> dict:
    """A JSON object of at most ``limit`` entries."""
    return _container(value, what, dict, "an object", limit)


def sequence(value: Any, what: str, limit: int = MAX_ITEMS) -> list:
    """A JSON list of at most ``limit`` items."""
    return _container(value, what, list, "a list", limit)


def _container(value: Any, what: str, kind: type, named: str, limit: int) -> Any:
    if not isinstance(value, kind):
        raise ProtocolError(f"{what} is a {type(value).__name__}, not {named}")
    if len(value) > limit:
        raise ProtocolError(f"{what} has more than {limit} {'entries' if kind is dict else 'items'}")
    return value


def only_keys(value: dict, allowed: set[str] | frozenset[str] | list[str], what: str) -> None:
    extra = [k for k in value if k not in allowed]
    if extra:
        raise ProtocolError(f"{what} has unexpected entries {clean(extra[:3], 200)}")


def exactly_keys(value: dict, wanted: list[str], what: str) -> None:
    """The reply covers exactly the names the grader asked about: none missing, none extra."""
    missing = [k for k in wanted if k not in value]
    if missing:
        raise ProtocolError(f"{what} misses {clean(missing[:3], 200)}")
    only_keys(value, set(wanted), what)


# ---------------------------------------------------------------- descriptions of student values


@dataclass(frozen=True)
class Desc:
    """A student value as the agent described it; arrays are indices into the reply's bulk data."""

    kind: str
    value: Any = None  # bool, int, float, str
    items: tuple = ()  # Desc for tuple/list; (Desc, Desc) pairs for dict
    length: int = 0
    dtype: str = ""
    shape: tuple[int, ...] = ()
    array: int | None = None  # index into the reply's arrays
    handle: int | None = None  # for callables and other objects
    type_name: str = ""
    module: str = ""
    inner: Desc | None = None  # a tensor's NumPy conversion
    problem: str = ""

    def describe(self) -> str:
        """A short phrase for feedback: 'a tuple of 2', 'a float32 array of shape (3, 4)', 'None'."""
        if self.kind == "none":
            return "None"
        if self.kind in ("bool", "int", "float"):
            return f"the {self.kind} {self.value!r}"
        if self.kind == "str":
            return f"a string of {self.length} characters"
        if self.kind in ("array", "tensor"):
            what = "NumPy array" if self.kind == "array" else "torch tensor"
            return f"a {self.dtype_name} {what} of shape {tuple(self.shape)}"
        if self.kind in ("tuple", "list", "dict"):
            return f"a {self.kind} of {self.length} item{'s' if self.length != 1 else ''}"
        return f"a {self.type_name or self.kind}"

    @property
    def dtype_name(self) -> str:
        try:
            return np.dtype(self.dtype).name
        except TypeError:
            return self.dtype

    @property
    def number(self) -> float | None:
        """The value as a float when it is a plain number (bool excluded), else None."""
        if self.kind in ("int", "float") and not isinstance(self.value, bool):
            if isinstance(self.value, str):
                return float(self.value) if self.value in ("nan", "inf", "-inf") else None
            return float(self.value)
        return None


def desc(value: Any, what: str = "the value", depth: int = 0) -> Desc:
    """Validate one description from the agent."""
    if depth > MAX_DEPTH:
        raise ProtocolError(f"{what} is nested too deep")
    value = mapping(value, what, 16)
    kind = value.get("t")
    if kind not in DESC_KINDS:
        raise ProtocolError(f"{what} has an unknown kind {clean(kind, 30)!r}")
    if kind == "none":
        return Desc("none")
    if kind == "bool":
        if not isinstance(value.get("v"), bool):
            raise ProtocolError(f"{what}: a bool that is not one")
        return Desc("bool", value["v"])
    if kind == "int":
        return Desc("int", integer(value.get("v"), what, -(2**1000), 2**1000))
    if kind == "float":
        v = value.get("v")
        if isinstance(v, str) and v in ("nan", "inf", "-inf"):
            return Desc("float", v, type_name=text(value.get("np", "float"), what, 30))
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise ProtocolError(f"{what}: a float that is not one")
        return Desc("float", float(v), type_name=text(value.get("np", "float"), what, 30))
    if kind == "str":
        return Desc("str", text(value.get("v"), what), length=integer(value.get("len", 0), what, 0))
    if kind == "array":
        dtype = text(value.get("dtype"), what, 40)
        shape = tuple(integer(n, what, 0) for n in sequence(value.get("shape"), what, MAX_DIMS))
        index = integer(value.get("a"), what, 0, MAX_ITEMS * 8, optional=True)
        return Desc("array", dtype=dtype, shape=shape, array=index)
    if kind == "tensor":
        shape = tuple(integer(n, what, 0) for n in sequence(value.get("shape"), what, MAX_DIMS))
        inner = desc(value["array"], what, depth + 1) if "array" in value else None
        if inner is not None and inner.kind != "array":
            raise ProtocolError(f"{what}: a tensor whose NumPy copy is not an array")
        return Desc(
            "tensor",
            dtype=text(value.get("dtype"), what, 40),
            shape=shape,
            inner=inner,
            problem=text(value.get("problem", ""), what),
        )
    if kind in ("tuple", "list"):
        items = tuple(desc(v, what, depth + 1) for v in sequence(value.get("items"), what))
        return Desc(kind, items=items, length=integer(value.get("len", len(items)), what, 0))
    if kind == "dict":
        pairs = []
        for pair in sequence(value.get("items"), what):
            pair = sequence(pair, what, 2)
            if len(pair) != 2:
                raise ProtocolError(f"{what}: a dict item that is not a pair")
            pairs.append((desc(pair[0], what, depth + 1), desc(pair[1], what, depth + 1)))
        return Desc("dict", items=tuple(pairs), length=integer(value.get("len", len(pairs)), what, 0))
    return Desc(
        kind,
        handle=integer(value.get("h"), what, 1),
        type_name=text(value.get("type", ""), what, 200),
        module=text(value.get("module", ""), what, 200),
    )


# ---------------------------------------------------------------- student exceptions


@dataclass(frozen=True)
class Raised:
    """Student code raised: what, and where in the student's own files."""

    function: str
    type: str
    message: str
    file: str | None = None
    line: int | None = None
    code: str | None = None
    inside: str | None = None  # the library it was inside, called from the student's line
    module: str | None = None  # for ModuleNotFoundError: the missing module
    frames: tuple[tuple[str, int, str, str], ...] = ()

    def summary(self) -> str:
        """One line a student can act on: what raised, where, and the code line."""
        what = f"{self.type}: {self.message}" if self.message else self.type
        out = f"{self.function} raised {what}"
        if self.file:
            where = f"{self.file}, line {self.line}"
            if self.inside:
                where = f"inside {self.inside}, called from {where}"
            out += f" ({where}" + (f": `{self.code}`)" if self.code else ")")
        return out


def raised(value: Any, function: str) -> Raised:
    value = mapping(value, "the error", 16)
    frames = []
    for frame in sequence(value.get("frames", []), "the error's frames", 8):
        frame = sequence(frame, "a frame", 4)
        if len(frame) != 4:
            raise ProtocolError("a frame that is not (file, line, function, code)")
        frames.append(
            (
                text(frame[0], "a frame", 300),
                integer(frame[1], "a frame", 0),
                text(frame[2], "a frame", 100),
                text(frame[3], "a frame", 300),
            )
        )
    first_line = (text(value.get("message", ""), "the message") or "").strip().splitlines()
    return Raised(
        function=text(value.get("function", function), "the function", 200) or function,
        type=text(value.get("type", "Exception"), "the exception type", 100) or "Exception",
        message=(first_line[0] if first_line else "")[:500],
        file=text(value.get("file"), "the file", 300, optional=True),
        line=integer(value.get("line"), "the line", 0, 10**7, optional=True),
        code=text(value.get("code"), "the code", 300, optional=True),
        inside=text(value.get("inside"), "the library", 100, optional=True),
        module=text(value.get("module"), "the module", 200, optional=True),
        frames=tuple(frames),
    )


@dataclass(frozen=True)
class CallResult:
    """One call of a ``calls`` request: what it returned, or what it raised; ``torch`` when only a torch
    tensor worked."""

    result: Desc | None = None
    raised: Raised | None = None
    torch: bool = False


def call_results(value: Any, labels: list[str]) -> list[CallResult]:
    """The results of a ``calls`` reply: exactly one per call asked, in order."""
    items = sequence(value, "the calls' results", len(labels))
    if len(items) != len(labels):
        raise ProtocolError(f"{len(items)} results for {len(labels)} calls")
    out = []
    for item, label in zip(items, labels, strict=True):
        item = mapping(item, f"the result of {label}", 4)
        only_keys(item, {"status", "result", "torch", "error"}, f"the result of {label}")
        status, torch = item.get("status"), item.get("torch", False)
        if not isinstance(torch, bool):
            raise ProtocolError(f"the result of {label}: a torch flag that is not a bool")
        if status == "ok":
            out.append(CallResult(result=desc(item.get("result"), label), torch=torch))
        elif status == "raised" and not torch:
            out.append(CallResult(raised=raised(item.get("error"), label)))
        else:
            raise ProtocolError(f"the result of {label} has status {clean(status, 20)!r}")
    return out


# ---------------------------------------------------------------- bulk data (memfds)


def new_memfd(name: str, size: int, data: bytes | memoryview | None = None) -> int:
    """A memfd of exactly ``size`` bytes that can never grow or shrink; filled with ``data`` when given."""
    fd = os.memfd_create(name, os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    try:
        if data is not None:
            view = memoryview(data).cast("B")
            while view:
                view = view[os.write(fd, view) :]
        os.ftruncate(fd, size)
        fcntl.fcntl(fd, F_ADD_SEALS, F_SEAL_GROW | F_SEAL_SHRINK)
    except BaseException:
        os.close(fd)
        raise
    return fd


def seal(fd: int) -> int:
    """Freeze a memfd the student process wrote; a writable mapping it kept forces a private copy."""
    try:
        fcntl.fcntl(fd, F_ADD_SEALS, F_SEAL_WRITE | F_SEAL_SEAL)
        return fd
    except OSError:
        size = os.fstat(fd).st_size
        with mmap.mmap(fd, size, prot=mmap.PROT_READ) if size else _Empty() as data:
            copy = new_memfd("lab04-copy", size, bytes(data))
        os.close(fd)
        fcntl.fcntl(copy, F_ADD_SEALS, F_SEAL_WRITE | F_SEAL_SEAL)
        return copy


class _Empty(bytes):
    def __enter__(self) -> bytes:
        return b""

    def __exit__(self, *exc: object) -> None:
        return None


@dataclass(frozen=True)
class Block:
    """One array or blob in a results memfd, as the reply's manifest lists it."""

    dtype: str
    shape: tuple[int, ...]
    offset: int
    nbytes: int


def manifest(value: Any, size: int) -> list[Block]:
    """The reply's list of arrays, each checked against the sealed memfd's real size."""
    blocks = []
    for i, entry in enumerate(sequence(value if value is not None else [], "the arrays", MAX_ITEMS * 8)):
        entry = mapping(entry, f"array {i}", 8)
        only_keys(entry, {"dtype", "shape", "offset", "nbytes"}, f"array {i}")
        dtype = entry.get("dtype")
        if dtype not in ALLOWED_DTYPES:
            raise ProtocolError(f"array {i} has a dtype that is not a plain number type")
        shape = tuple(
            integer(n, f"array {i}'s shape", 0, 2**40) for n in sequence(entry.get("shape"), "a shape", MAX_DIMS)
        )
        offset = integer(entry.get("offset"), f"array {i}'s offset", 0, size)
        nbytes = integer(entry.get("nbytes"), f"array {i}'s size", 0, size)
        if int(np.prod(shape, dtype=np.float64)) * np.dtype(dtype).itemsize != nbytes:
            raise ProtocolError(f"array {i}: its shape and dtype do not add up to its size")
        if offset + nbytes > size:
            raise ProtocolError(f"array {i} lies past the end of the data")
        blocks.append(Block(dtype, shape, offset, nbytes))
    return blocks


class Bulk:
    """A sealed results memfd and its validated manifest; arrays are read-only views into it."""

    def __init__(self, fd: int, blocks: list[Block], hold: bool = False):
        self.size = os.fstat(fd).st_size
        self.blocks = blocks
        self._map = mmap.mmap(fd, self.size, prot=mmap.PROT_READ) if self.size else None
        self.fd = fd
        if not hold:  # the mapping outlives the descriptor: keep no descriptor per reply
            os.close(fd)
            self.fd = -1

    def array(self, index: int | None, what: str = "an array") -> np.ndarray:
        if index is None or not 0 <= index < len(self.blocks):
            raise ProtocolError(f"{what}: the reply names no such data")
        block = self.blocks[index]
        count = int(np.prod(block.shape, dtype=np.int64))
        if block.nbytes == 0:
            return np.zeros(block.shape, dtype=block.dtype)
        flat = np.frombuffer(self._map, dtype=np.dtype(block.dtype), count=count, offset=block.offset)
        return flat.reshape(block.shape)

    def close(self) -> None:
        self._map = None  # views keep the mapping alive as long as they need it
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def input_memfd(arrays: list[np.ndarray]) -> tuple[int, list[dict]]:
    """A sealed memfd holding ``arrays`` for the student process, and the manifest the request carries."""
    entries, chunks, offset = [], [], 0
    for array in arrays:
        plain = np.ascontiguousarray(array)
        if plain.dtype.str not in ALLOWED_DTYPES:
            raise ValueError(f"cannot send an array of dtype {plain.dtype}")
        entries.append({"dtype": plain.dtype.str, "shape": list(plain.shape), "offset": offset, "nbytes": plain.nbytes})
        chunks.append(memoryview(plain).cast("B") if plain.size else memoryview(b""))
        offset += plain.nbytes
    fd = new_memfd("lab04-inputs", offset, b"".join(chunks))
    fcntl.fcntl(fd, F_ADD_SEALS, F_SEAL_WRITE | F_SEAL_SEAL)
    return fd, entries


# ---------------------------------------------------------------- replies


@dataclass
class Reply:
    """What came back for one request. ``status``: ok, raised, error, timeout, crashed, protocol."""

    status: str
    fields: dict = field(default_factory=dict)
    raised: Raised | None = None
    detail: str = ""  # for error, timeout, crashed, protocol: what happened
    where: str | None = None  # for timeout and crashed: the student's file and line, when known
    bulk: Bulk | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def array(self, index: int | None, what: str = "an array") -> np.ndarray:
        if self.bulk is None:
            raise ProtocolError(f"{what}: the reply carries no data")
        return self.bulk.array(index, what)

    def close(self) -> None:
        if self.bulk is not None:
            self.bulk.close()


REPLY_FIELDS: dict[str, set[str]] = {
    "import": {"functions", "cells", "model_class"},
    "new": {"result"},
    "call": {"result"},
    "calls": {"results"},
    "read": {"values", "dotted"},
    "set": {"set"},
    "export": {"torch_paths", "blob", "buffers", "nbytes", "located"},
    "adopt": {"result"},
    "clone": {"result"},
    "hf": {"model", "tokenizer"},
    "tokenizer": {"tokenizer"},
    "trace": {"steps", "error"},
    "release": set(),
}
REQUIRED_FIELDS: dict[str, tuple[set[str], ...]] = {  # each set: one of its fields must be there
    "import": ({"functions"},),
    "new": ({"result"},),
    "call": ({"result"},),
    "calls": ({"results"},),
    "read": ({"values"},),
    "set": ({"set"},),
    "export": ({"blob", "torch_paths"},),
    "adopt": ({"result"},),
    "clone": ({"result"},),
    "hf": ({"model"}, {"tokenizer"}),
    "tokenizer": ({"tokenizer"},),
    "trace": ({"steps"},),
    "release": (),
}
COMMON_FIELDS = {"v", "id", "status", "error", "arrays"}
_LABEL = re.compile(r"[\w .:/\[\]()'-]{1,200}")


def check_fields(op: str, message: dict) -> dict:
    """The op's fields of an ok reply, with unknown entries refused."""
    only_keys(message, COMMON_FIELDS | REPLY_FIELDS[op], f"the reply to {op}")
    for needed in REQUIRED_FIELDS[op]:
        if not needed & set(message):
            raise ProtocolError(f"the reply to {op} has no {' or '.join(sorted(needed))}")
    return {k: message[k] for k in REPLY_FIELDS[op] if k in message}


def parse_reply(op: str, message: dict, results_fd: int) -> Reply:
    """A decoded reply to ``op`` as a checked ``Reply``; its results memfd is sealed (and then owned by it)."""
    status = message.get("status")
    try:
        if status == "raised":
            results_fd = _close(results_fd)
            return Reply("raised", raised=raised(message.get("error"), op))
        if status == "error":
            results_fd = _close(results_fd)
            error = mapping(message.get("error", {}), "the error", 4)
            return Reply("error", detail=text(error.get("message", ""), "the error") or "")
        if status != "ok":
            raise ProtocolError(f"a reply of status {text(str(status), 'status', 20)!r}")
        fields = check_fields(op, message)
        sealed = seal(results_fd)
        results_fd = -1
        bulk = Bulk(sealed, manifest(message.get("arrays"), os.fstat(sealed).st_size), hold=op == "export")
        return Reply("ok", fields=fields, bulk=bulk)
    except ProtocolError as exc:
        _close(results_fd)
        return Reply("protocol", detail=str(exc))


def _close(fd: int) -> int:
    if fd >= 0:
        os.close(fd)
    return -1


@dataclass(frozen=True)
class Signature:
    """A callable's parameters as the agent read them: names, kinds, simple defaults."""

    params: tuple[tuple[str, str, bool, Any], ...]  # (name, kind, has_default, default)
    opaque: bool = False

    def accepts(self, name: str) -> bool:
        return self.opaque or any(p[0] == name or p[1] == "VAR_KEYWORD" for p in self.params)

    def default(self, name: str) -> Any:
        for pname, _, has, value in self.params:
            if pname == name and has:
                return value
        return None

    def names(self) -> list[str]:
        return [p[0] for p in self.params]


KINDS = ("POSITIONAL_ONLY", "POSITIONAL_OR_KEYWORD", "VAR_POSITIONAL", "KEYWORD_ONLY", "VAR_KEYWORD")


def signature(value: Any, what: str) -> Signature | None:
    if value is None:
        return None
    value = mapping(value, what, 4)
    params = []
    for p in sequence(value.get("params", []), what, 64):
        p = mapping(p, what, 4)
        kind = p.get("kind")
        if kind not in KINDS:
            raise ProtocolError(f"{what}: an unknown parameter kind")
        default = p.get("default")
        if default is not None and (
            isinstance(default, (dict, list)) or (isinstance(default, str) and len(default) > 200)
        ):
            raise ProtocolError(f"{what}: a default that is not a plain value")
        if isinstance(default, float) and not math.isfinite(default):
            default = None
        params.append((text(p.get("name"), what, 100), kind, "default" in p or "default_type" in p, default))
    return Signature(tuple(params), bool(value.get("opaque", False)))
