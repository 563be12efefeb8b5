"""The operations the grader may ask for, one function each, in the table ``OPS``.

Each is ``op(agent, request, inputs, results) -> dict``: it reads the request's fields,
carries the operation out on the agent's objects, and returns the reply's fields. What
student code raises comes out as ``StudentError``; nothing here judges a result.
"""

from __future__ import annotations

import inspect
import os
import pickle
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
from lab04_buffers import Inputs, Results, digest, strided
from lab04_inspect import (
    MAX_DEPTH,
    MAX_TEXT,
    NUMERIC_KINDS,
    StudentError,
    dotted_names,
    follow,
    import_file,
    is_tensor,
    signature,
    torch_paths,
)
from lab04_trace import traced

if TYPE_CHECKING:
    from lab04_agent import Agent

PRELOADED: dict[str, Any] = {}  # checkpoint folder -> what the fork server loaded for it before forking


def op_import(agent: Agent, request: dict, inputs: Inputs, results: Results) -> dict:
    """Import pretrained.py (and find GPTModel in the order the grader gives)."""
    path = os.path.join(agent.root, request["module"])
    folder = os.path.dirname(path)
    for extra in reversed([folder, *request.get("path_front", [])]):
        if extra not in sys.path:
            sys.path.insert(0, extra)
    for extra in request.get("path_back", []):
        if extra not in sys.path:
            sys.path.append(extra)
    os.chdir(folder)
    module = agent.run_student("importing " + request["module"], import_file, "pretrained", path)
    agent.module = module
    out: dict[str, Any] = {"functions": {}, "cells": []}
    for name in request.get("names", []):
        fn = getattr(module, name, None)
        out["functions"][name] = signature(fn) if callable(fn) else None
    for item in getattr(module, "__notebook_errors__", [])[:50]:
        if isinstance(item, dict):
            out["cells"].append({k: str(v)[:MAX_TEXT] if isinstance(v, str) else v for k, v in item.items()})
    if request.get("reference"):
        reference = import_file("_lab04_reference_decoder", request["reference"])
        agent.reference_class = getattr(reference, "GPTModel", None)
    for how, where in request.get("model_class", []):
        cls = _find_class(agent, how, where)
        if isinstance(cls, type):
            agent.model_class = cls
            out["model_class"] = _describe_class(agent, cls, how, request)
            break
    return out


def _describe_class(agent: Agent, cls: type, how: str, request: dict) -> dict:
    """Where the model class came from and the signatures it is built and called with."""
    source = os.path.realpath(inspect.getsourcefile(cls) or "")
    if agent.own(source):
        origin = agent.relative(source)
    elif request.get("reference") and source == os.path.realpath(request["reference"]):
        origin = "reference"
    else:
        origin = f"module {getattr(cls, '__module__', '?')}"[:200]
    call = cls.__call__ if callable(cls) else None  # the instances' call, for its signature
    forward = getattr(cls, "forward", None)
    return {
        "origin": origin,
        "how": how,
        "init": signature(cls),
        "call": signature(call),
        "forward": signature(forward),
    }


def _find_class(agent: Agent, how: str, where: str) -> Any:
    """GPTModel from pretrained.py ("attribute"), or from a decoder.py in the submission ("file") or outside it."""
    if how == "attribute":
        return getattr(agent.module, where, None)
    path = os.path.join(agent.root, where) if how == "file" else where
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
        module = agent.run_student(
            f"importing {agent.relative(path) if how == 'file' else 'decoder.py'}", import_file, name, path
        )
    return getattr(module, "GPTModel", None)


def op_new(agent: Agent, request: dict, inputs: Inputs, results: Results) -> dict:
    """Build the model class (or the reference's) with the grader's keyword arguments."""
    cls = agent.reference_class if request.get("cls") == "reference" else agent.model_class
    if cls is None:
        raise StudentError({"function": "GPTModel(...)", "type": "NameError", "message": "no GPTModel class was found"})
    kwargs = {str(k): agent.argument(v, inputs) for k, v in request.get("kwargs", {}).items()}
    model = agent.run_student("GPTModel(...)", cls, **kwargs)
    return {"result": agent.describe(model, None)}


def op_call(agent: Agent, request: dict, inputs: Inputs, results: Results) -> dict:
    """Call a function of the submission, a method of a handle, or a handle itself."""
    target = request["fn"]
    if isinstance(target, str):
        fn = getattr(agent.module, target, None)
        if not callable(fn):
            raise StudentError(
                {
                    "function": target,
                    "type": "AttributeError",
                    "message": f"the submission defines no function {target}",
                }
            )
    else:
        fn = agent.get(target)
        for part in request.get("method", "").split(".") if request.get("method") else []:
            fn = getattr(fn, part)
    args = [agent.argument(a, inputs) for a in request.get("args", [])]
    kwargs = {str(k): agent.argument(v, inputs) for k, v in request.get("kwargs", {}).items()}
    result = agent.run_student(request.get("label", str(target)), fn, *args, **kwargs)
    return {"result": agent.describe(result, results if request.get("arrays", True) else None)}


def op_calls(agent: Agent, request: dict, inputs: Inputs, results: Results) -> dict:
    """Handles called in turn on one input each (a mapping's transforms): on the NumPy array, and, when
    that raises, on it as a torch tensor. One reply for them all; each says how its call went."""
    out = []
    for call in request.get("calls", []):
        fn, label, index = agent.get(call["fn"]), str(call.get("label", "")), call["input"]
        try:
            out.append({"status": "ok", "result": _described(agent, label, fn, {"a": index}, inputs, results)})
        except StudentError as exc:
            try:
                result = _described(agent, label, fn, {"torch": index}, inputs, results)
                out.append({"status": "ok", "torch": True, "result": result})
            except StudentError:
                out.append({"status": "raised", "error": exc.record})  # what the NumPy call raised
    return {"results": out}


def _described(agent: Agent, label: str, fn: Any, argument: dict, inputs: Inputs, results: Results) -> Any:
    return agent.describe(agent.run_student(label, fn, agent.argument(argument, inputs)), results)


def op_read(agent: Agent, request: dict, inputs: Inputs, results: Results) -> dict:
    """For each dotted path: what lives there, its digest, and the whole array when asked."""
    obj = agent.get(request["h"])
    full = set(request.get("full", []))
    tokens: dict[int, int] = {}
    out = {}
    for path in request.get("paths", []):
        try:
            value = follow(obj, path)
        except Exception as exc:  # noqa: BLE001 - a missing attribute, a property that raises
            out[path] = {"t": "missing", "error": f"{type(exc).__name__}: {str(exc)[:300]}"}
            continue
        entry: dict[str, Any] = {"oid": tokens.setdefault(id(value), len(tokens) + 1)}
        array = value
        if is_tensor(value):
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
            _read_array(agent, request, entry, array, results if path in full else None)
        out[path] = entry
    reply: dict[str, Any] = {"values": out}
    if request.get("dotted"):
        reply["dotted"] = dotted_names(obj)
    return reply


def _read_array(agent: Agent, request: dict, entry: dict, array: np.ndarray, results: Results | None) -> None:
    """Add an array's dtype, shape and (numeric only) digests to ``entry``; the array itself to ``results``."""
    entry.update(dtype=array.dtype.str, shape=[int(n) for n in array.shape])
    if array.dtype.kind in NUMERIC_KINDS:
        if request.get("digests", True):
            entry["digest"] = digest(array, agent.sha256)
        if request.get("sample"):
            entry["sample"] = digest(strided(array), agent.sha256)
        if results is not None:
            entry["a"] = results.add(array)


def op_set(agent: Agent, request: dict, inputs: Inputs, results: Results) -> dict:
    """Copy arrays into a model, into the existing arrays where they fit (ties survive), else by binding."""
    obj = agent.get(request["h"])
    done = {}
    for path, index in request.get("values", {}).items():
        value = inputs.array(index)
        parent_path, _, name = path.rpartition(".")
        try:
            parent = follow(obj, parent_path) if parent_path else obj
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


def op_export(agent: Agent, request: dict, inputs: Inputs, results: Results) -> dict:
    """Pickle a model for the torch-free process; torch tensors inside it are named instead."""
    obj = agent.get(request["h"])
    found = torch_paths(obj)
    if found:
        return {"torch_paths": found[:20]}
    buffers: list[pickle.PickleBuffer] = []
    # Protocol 5 with out-of-band buffers: the arrays' bytes are written once, side by side, and the
    # torch-free process maps them instead of copying them again.
    data = agent.run_student(
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
    return {"blob": stream, "buffers": raw, "nbytes": results.offset, "located": _located(obj, request, buffers)}


def _located(obj: Any, request: dict, buffers: list[pickle.PickleBuffer]) -> dict[str, int]:
    """Which exported buffer holds each asked-for attribute's bytes (C-ordered arrays only), so the grader can
    compare them without a digest; the grader checks every claim against the bytes themselves."""
    where = {}
    for i, buffer in enumerate(buffers):
        view = buffer.raw()
        if view.nbytes:
            where[(np.frombuffer(view, dtype=np.uint8).__array_interface__["data"][0], view.nbytes)] = i
    out = {}
    for path in request.get("paths", []):
        try:
            value = follow(obj, path)
        except Exception:  # noqa: BLE001 - missing or raising: the read already said so
            continue
        if type(value) is np.ndarray and value.flags.c_contiguous and value.nbytes:
            i = where.get((value.__array_interface__["data"][0], value.nbytes))
            if i is not None:
                out[path] = i
    return out


def op_adopt(agent: Agent, request: dict, inputs: Inputs, results: Results) -> dict:
    """Unpickle the model the torch process exported (in the torch-free process)."""
    mapping, stream, buffers = inputs.pickled()
    model = agent.run_student("receiving your model in the torch-free process", pickle.loads, stream, buffers=buffers)
    agent.keep(mapping)  # the model's arrays live in it (a private copy-on-write mapping)
    return {"result": agent.describe(model, None)}


def op_hf(agent: Agent, request: dict, inputs: Inputs, results: Results) -> dict:
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
        # Loaded here, after the student's code ran: without transformers' loader threads, which a
        # student's fork bomb (the process limit) would leave it unable to start.
        before = os.environ.get("HF_DEACTIVATE_ASYNC_LOAD")
        os.environ["HF_DEACTIVATE_ASYNC_LOAD"] = "1"
        try:
            model = GPT2LMHeadModel.from_pretrained(request["path"]).eval()
            tokenizer = GPT2Tokenizer.from_pretrained(request["path"])
        finally:
            if before is None:
                os.environ.pop("HF_DEACTIVATE_ASYNC_LOAD", None)
            else:
                os.environ["HF_DEACTIVATE_ASYNC_LOAD"] = before
    return {"model": agent.keep(model), "tokenizer": agent.keep(tokenizer)}


def op_tokenizer(agent: Agent, request: dict, inputs: Inputs, results: Results) -> dict:
    """A GPT-2 tokenizer that needs no transformers (the torch-free process)."""
    from lab04_tokenizer import StandInTokenizer

    preloaded = PRELOADED.get(request.get("preloaded", ""))
    return {"tokenizer": agent.keep(preloaded if preloaded is not None else StandInTokenizer(request["path"]))}


def op_trace(agent: Agent, request: dict, inputs: Inputs, results: Results) -> dict:
    """Run a call with spies on sub-modules; return what each first received and returned."""
    obj = agent.get(request["h"])
    log, error = traced(
        obj,
        request.get("spy", []),
        lambda: op_call(agent, request["call"] | {"arrays": False}, inputs, Results(-1, agent.write)),
    )
    out = {}
    for label, (given, returned) in log.items():
        out[label] = [agent.describe(given, results, MAX_DEPTH), agent.describe(returned, results, MAX_DEPTH)]
    return {"steps": out, "error": error}


def op_clone(agent: Agent, request: dict, inputs: Inputs, results: Results) -> dict:
    """A deep copy of an object (ties inside it survive): cheaper than building another model."""
    import copy

    clone = agent.run_student("copying a model", copy.deepcopy, agent.get(request["h"]))
    return {"result": agent.describe(clone, None)}


def op_release(agent: Agent, request: dict, inputs: Inputs, results: Results) -> dict:
    """Forget the objects of the handles listed, so that they can be freed."""
    for handle in request.get("h", []):
        obj = agent.objects.pop(handle, None)
        if obj is not None:
            agent.handles.pop(id(obj), None)
    return {}


Operation = Callable[["Agent", dict, Inputs, Results], dict]

OPS: dict[str, Operation] = {
    "import": op_import,
    "new": op_new,
    "call": op_call,
    "calls": op_calls,
    "read": op_read,
    "set": op_set,
    "export": op_export,
    "adopt": op_adopt,
    "hf": op_hf,
    "tokenizer": op_tokenizer,
    "trace": op_trace,
    "clone": op_clone,
    "release": op_release,
}
