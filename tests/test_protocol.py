"""The trust boundary's declaration: every kind of bad message from a student process is refused."""

from __future__ import annotations

import fcntl
import json
import mmap
import os

import numpy as np
import pytest

from grader.grading.truth import digest
from grader.sandbox import protocol
from grader.sandbox.protocol import ProtocolError


def _message(**fields: object) -> bytes:
    return json.dumps({"v": protocol.VERSION, "id": 1, "status": "ok", **fields}).encode()


def test_decode_refuses_what_is_not_a_versioned_json_object() -> None:
    assert protocol.decode(_message())["id"] == 1
    for data in (b"not json", b"[1, 2]", json.dumps({"v": 99}).encode(), b"\xff\xfe"):
        with pytest.raises(ProtocolError):
            protocol.decode(data)


def test_decode_refuses_deep_nesting_before_parsing_it() -> None:
    with pytest.raises(ProtocolError, match="nested"):
        protocol.decode(b"[" * 200_000)
    deep = {"v": 1}
    for _ in range(protocol.MAX_DEPTH + 2):
        deep = {"v": 1, "x": deep}
    with pytest.raises(ProtocolError, match="nested"):
        protocol.decode(json.dumps(deep).encode())
    assert protocol.decode(json.dumps({"v": 1, "s": "[[[[[[[[[[[[[[[[[[[[[["}).encode())  # brackets in strings


def test_decode_refuses_oversized_and_truncated_datagrams() -> None:
    with pytest.raises(ProtocolError, match="more than"):
        protocol.decode(_message(pad="x" * protocol.MAX_MESSAGE))
    with pytest.raises(ProtocolError):
        protocol.decode(_message(), truncated=True)


@pytest.mark.parametrize(
    "value",
    [
        {"t": "bool", "v": 1},
        {"t": "float", "v": "1.0"},
        {"t": "float", "v": True},
        {"t": "int", "v": 1.5},
        {"t": "array", "dtype": "<f4", "shape": [-1]},
        {"t": "array", "dtype": "<f4", "shape": [1] * 9},
        {"t": "tuple", "items": "no"},
        {"t": "dict", "items": [[{"t": "none"}]]},
        {"t": "object"},
        {"t": "nope"},
        {"t": "str", "v": 3},
        "a string",
        {"t": "tensor", "shape": [1], "array": {"t": "int", "v": 1}},
    ],
)
def test_descriptions_of_the_wrong_type_are_refused(value: object) -> None:
    with pytest.raises(ProtocolError):
        protocol.desc(value)


def test_descriptions_are_read_and_their_strings_cleaned() -> None:
    value = protocol.desc(
        {"t": "tuple", "len": 2, "items": [{"t": "bool", "v": True}, {"t": "str", "v": "a\udcff\x1b[2Jb", "len": 9}]}
    )
    assert value.kind == "tuple" and value.items[0].value is True
    assert value.items[1].value == "a??b"
    assert protocol.desc({"t": "float", "v": "nan"}).number != protocol.desc({"t": "float", "v": "nan"}).number


def test_student_exception_records_are_typed_and_bounded() -> None:
    record = protocol.raised(
        {
            "type": "ValueError",
            "message": "x" * 10_000 + "\nsecond line",
            "file": "p.py",
            "line": 3,
            "code": "raise ValueError()",
            "frames": [["p.py", 3, "f", "raise"]],
        },
        "f",
    )
    assert len(record.message) <= 500 and "second line" not in record.message
    assert record.summary().startswith("f raised ValueError: xxx") and "(p.py, line 3" in record.summary()
    for bad in ([1], {"line": "three"}, {"frames": [["p.py", "3"]]}, {"frames": [[1, 2, 3, 4]]}):
        with pytest.raises(ProtocolError):
            protocol.raised(bad, "f")


def _results(data: bytes) -> int:
    fd = protocol.new_memfd("test", len(data), data)
    return protocol.seal(fd)


def test_manifest_must_fit_the_sealed_data() -> None:
    array = np.arange(6, dtype=np.float32)
    fd = _results(array.tobytes())
    size = os.fstat(fd).st_size
    good = [{"dtype": "<f4", "shape": [6], "offset": 0, "nbytes": 24}]
    assert protocol.Bulk(fd, protocol.manifest(good, size)).array(0).tolist() == array.tolist()
    for bad in (
        [{"dtype": "<f4", "shape": [2**40], "offset": 0, "nbytes": 2**42}],  # claims 4 TiB
        [{"dtype": "<f4", "shape": [7], "offset": 0, "nbytes": 28}],  # past the end
        [{"dtype": "<f4", "shape": [6], "offset": 8, "nbytes": 24}],  # starts inside, ends past the end
        [{"dtype": "<f4", "shape": [6], "offset": 0, "nbytes": 20}],  # shape and size disagree
        [{"dtype": "|O", "shape": [1], "offset": 0, "nbytes": 8}],  # objects: a pickle in disguise
        [{"dtype": "<f4", "shape": [6], "offset": 0, "nbytes": 24, "path": "/etc/passwd"}],  # an unknown entry
        "not a list",
    ):
        with pytest.raises(ProtocolError):
            protocol.manifest(bad, size)


def test_a_memfd_given_to_a_student_process_cannot_grow() -> None:
    fd = protocol.new_memfd("test", 16)
    with pytest.raises(OSError):
        os.pwrite(fd, b"x" * 32, 0)
    with pytest.raises(OSError):
        os.ftruncate(fd, 1 << 30)
    os.close(fd)


def test_sealing_survives_a_writable_mapping_held_by_the_writer() -> None:
    fd = protocol.new_memfd("test", 8, b"abcdefgh")
    writer = mmap.mmap(fd, 8)  # what a hostile student process could keep
    sealed = protocol.seal(fd)
    writer[:4] = b"ZZZZ"  # too late: the grader sealed its own copy
    assert os.pread(sealed, 8, 0) == b"abcdefgh"
    assert fcntl.fcntl(sealed, fcntl.F_GET_SEALS) & protocol.F_SEAL_WRITE
    writer.close()
    os.close(sealed)


def test_reply_fields_are_declared_per_operation() -> None:
    fd = _results(b"")
    assert protocol.parse_reply("call", protocol.decode(_message(result={"t": "none"})), fd).ok
    for op, message in (
        ("call", _message()),
        ("read", _message(result={"t": "none"})),
        ("call", _message(result={"t": "none"}, extra=1)),
        ("import", _message(cells=[])),
    ):
        reply = protocol.parse_reply(op, protocol.decode(message), _results(b""))
        assert reply.status == "protocol", (op, message)


def test_signatures_say_what_a_callable_accepts() -> None:
    sig = protocol.signature(
        {
            "params": [
                {"name": "x", "kind": "POSITIONAL_OR_KEYWORD"},
                {"name": "atol", "kind": "POSITIONAL_OR_KEYWORD", "default": 1e-4},
            ]
        },
        "f",
    )
    assert sig.accepts("atol") and not sig.accepts("training") and sig.default("atol") == 1e-4
    assert protocol.signature({"params": [{"name": "kw", "kind": "VAR_KEYWORD"}]}, "f").accepts("training")
    with pytest.raises(ProtocolError):
        protocol.signature({"params": [{"name": "x", "kind": "SOMETHING"}]}, "f")


def test_the_agent_and_the_grader_digest_arrays_alike() -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("agent", "grader/sandbox/inside/lab04_buffers.py")
    agent = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(agent)
    for array in (np.arange(12, dtype=np.float32).reshape(3, 4), np.arange(12.0).reshape(3, 4).T, np.zeros(0)):
        assert agent.digest(array) == digest(array)
    assert digest(np.zeros(3, np.float32)) != digest(np.zeros(3, np.float64))


def test_exported_bytes_are_judged_as_equal_digests_would_judge_them() -> None:
    from grader.grading.loading import same_bytes

    a = np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4)
    assert same_bytes(a.copy(), a) and digest(a.copy()) == digest(a)
    nan = np.array([np.nan, 1.0], np.float32)
    cases = [
        (np.array([-0.0, 1.0], np.float32), np.array([0.0, 1.0], np.float32)),  # equal numbers, other bits
        (a.astype(np.float64), a),  # the right values, the wrong dtype
        (a.reshape(4, 3), a),  # the right bytes, the wrong shape
        (a + np.float32(1e-7), a),
    ]
    for got, want in cases:
        assert not same_bytes(got, want) and digest(got) != digest(want)
    assert same_bytes(nan.copy(), nan) and digest(nan.copy()) == digest(nan)  # a NaN is its own bits
    assert same_bytes(np.asfortranarray(a), a)  # judged in C order, as the digest is


def test_a_malformed_claim_of_where_an_attribute_lies_is_refused() -> None:
    from grader.grading.loading import Entry, Load, _located
    from grader.sandbox.protocol import ProtocolError

    class Claimed:
        def __init__(self, located: object):
            self.fields = {"located": located}

        def array(self, index: int, what: str) -> np.ndarray:
            return np.zeros(16, np.uint8)

    load = Load(expected=None, after={"a.b": Entry("array", "<f4", (4,))})
    assert _located(load, Claimed({"a.b": 0}), [0])["a.b"].shape == (4,)
    assert _located(load, Claimed({"a.b": 0}), [0])["a.b"].dtype == np.float32
    assert _located(load, Claimed({"elsewhere": 0}), [0]) == {}  # not an attribute that was read: ignored
    for located in ("a string", [["a.b", 0]], {"a.b": 1}, {"a.b": -1}, {"a.b": "0"}):
        with pytest.raises(ProtocolError):
            _located(load, Claimed(located), [0])


def test_the_results_of_several_calls_are_one_per_call_or_refused() -> None:
    ok = {"status": "ok", "result": {"t": "int", "v": 3}}
    raised = {"status": "raised", "error": {"type": "ValueError", "message": "no"}}
    labels = ["the transform of a", "the transform of b"]
    done = protocol.call_results([ok, {**ok, "torch": True}], labels)
    assert [d.result.value for d in done] == [3, 3] and [d.torch for d in done] == [False, True]
    done = protocol.call_results([raised, ok], labels)
    assert done[0].raised.type == "ValueError" and done[0].result is None and done[1].raised is None
    for results in (
        [ok],  # one result short
        [ok, ok, ok],  # one too many
        "not a list",
        [ok, {"status": "fine", "result": {"t": "none"}}],  # an unknown status
        [ok, {"status": "ok"}],  # no result
        [ok, {**ok, "torch": "yes"}],  # a torch flag that is not a bool
        [ok, {**raised, "torch": True}],  # raised, and yet the torch call worked
        [ok, {**ok, "extra": 1}],
    ):
        with pytest.raises(ProtocolError):
            protocol.call_results(results, labels)
