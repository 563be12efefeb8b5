"""The fork server ("zygote") and the launcher of each student process.

Started by the grader as ``python -I lab04_zygote.py FLAVOUR SOCKET_FD [CHECKPOINT...]``. It imports
what every student process of its flavour needs (NumPy; for the "torch" flavour also
torch and transformers, which loaders use; the "numpy" flavour never imports them),
then forks one launcher per request. It never runs student code.

A launcher enters new namespaces (``lab04_jail``), forks the student process and relays
its output, capped, until it ends. The student process builds its allow-list root,
applies its limits, drops to its own user and serves the agent's requests.

Requests (JSON datagrams with descriptors, from ``grader.sandbox.process``):
``{"plan", "limits", "env", "isolate", "uid", "output_bytes", "path_front"}`` plus the
descriptors [agent socket, stdout file, stderr file, status pipe, trace file].
"""

from __future__ import annotations

import gc
import json
import os
import select
import signal
import socket
import sys
import time
import traceback

INSIDE = os.path.dirname(os.path.abspath(__file__))


def _preload(flavour: str, folders: list[str]) -> None:
    """The heavy imports, once, before any fork; and the harness's own objects for ``folders``."""
    import lab04_ops
    import numpy  # noqa: F401

    if flavour == "torch":
        import torch
        import transformers
        from transformers import GPT2LMHeadModel, GPT2Tokenizer

        transformers.utils.logging.disable_progress_bar()
        transformers.utils.logging.set_verbosity_error()
        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
        for folder in folders:  # HuggingFace's model for the compare tiers, shared copy-on-write
            lab04_ops.PRELOADED[folder] = (
                GPT2LMHeadModel.from_pretrained(folder).eval(),
                GPT2Tokenizer.from_pretrained(folder),
            )
    else:
        # What the stand-ins import lazily, loaded now: without a private root, the student's user may not
        # be able to read the Python installation (one under /root, say) once it has dropped to it.
        import importlib.abc
        import importlib.machinery  # noqa: F401

        from lab04_tokenizer import StandInTokenizer  # the torch-free tokenizer

        for folder in folders:
            lab04_ops.PRELOADED[folder] = StandInTokenizer(folder)


def serve(flavour: str, sock_fd: int, folders: list[str]) -> None:
    """Fork a launcher per request until the grader closes its end."""
    # No cyclic garbage collection while importing: torch and transformers make half a million objects, and
    # collecting among them took a quarter of the import (about 1 s of 4). They are frozen once imported, so
    # no student process's collections walk them again (nor touch, and so copy, the pages they lie on).
    gc.disable()
    sys.path.insert(0, INSIDE)
    # Our modules are imported now, while INSIDE is on the path: a student process has it neither on its path
    # nor, with a private root, on its file system. lab04_agent imports lab04_ops, _buffers, _inspect, _trace.
    import lab04_agent  # noqa: F401
    import lab04_jail  # noqa: F401

    _preload(flavour, folders)
    sys.path.remove(INSIDE)
    gc.freeze()
    gc.enable()
    real_exit = os._exit
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # launchers are reaped at once; their status goes over a pipe
    server = socket.socket(fileno=sock_fd)
    while True:
        try:
            message, fds, _, _ = socket.recv_fds(server, 1 << 20, 8)
        except OSError:
            return
        if not message:
            return
        pid = os.fork()
        if pid == 0:
            code = 70
            try:
                server.close()
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                launch(flavour, json.loads(message), fds)
                code = 0
            except BaseException:  # noqa: BLE001 - the launcher's own failure: say it, then go
                traceback.print_exc()
            finally:
                _flush()
                real_exit(code)
        for fd in fds:
            os.close(fd)
        server.send(json.dumps({"pid": pid}).encode())


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # noqa: BLE001
            pass


def launch(flavour: str, request: dict, fds: list[int]) -> None:
    """The launcher: namespaces, then the student process; relay its output and pass on its status."""
    import lab04_jail as jail

    agent_fd, stdout_fd, stderr_fd, status_fd, trace_fd = fds
    os.setsid()  # a process group of its own, killed as a whole
    layers = jail.Layers()
    isolated = bool(request.get("isolate")) and jail.enter_namespaces(layers)
    if not request.get("isolate"):
        layers.unavailable.append("isolation switched off (--no-isolation)")
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    life_r, life_w = os.pipe()  # end of file on it means the launcher is gone
    pid = os.fork()
    if pid:
        for fd in (out_w, err_w, life_r, agent_fd, trace_fd):
            os.close(fd)
        os.write(status_fd, f"pid {pid}\n".encode())
        for sig in (signal.SIGUSR1, signal.SIGINT, signal.SIGPIPE):
            signal.signal(sig, signal.SIG_IGN)
        status = relay_output(pid, [(out_r, stdout_fd), (err_r, stderr_fd)], int(request.get("output_bytes", 1 << 20)))
        os.write(status_fd, f"status {status}\n".encode())
        return
    for fd in (out_r, err_r, life_w, status_fd, stdout_fd, stderr_fd):
        os.close(fd)
    jail.die_with_parent()
    if select.select([life_r], [], [], 0)[0]:  # the launcher died before we asked to die with it
        os._exit(1)
    os.close(life_r)
    os.dup2(out_w, 1)
    os.dup2(err_w, 2)
    os.close(out_w)
    os.close(err_w)
    student_process(flavour, request, agent_fd, trace_fd, layers, isolated)


def student_process(flavour: str, request: dict, agent_fd: int, trace_fd: int, layers, isolated: bool) -> None:
    """Root file system, limits, user; then serve the agent until the grader says goodbye."""
    import faulthandler

    import lab04_agent
    import lab04_jail as jail

    os.environ.clear()
    os.environ.update(request.get("env", {}))
    plan = request["plan"]
    if isolated:
        try:
            jail.build_root(plan, layers)
        except OSError as exc:
            # Half a root is no root: stop here, the grader reports a sandbox failure.
            print(f"lab04 sandbox: cannot build the root file system: {exc}", file=sys.stderr)
            _flush()
            os._exit(71)
        submission, standins = plan["submission"], plan.get("standins")
    else:
        layers.unavailable.append(
            "allow-list file system: no mount namespace, so student code can read whatever the grader's user can"
        )
        os.chdir(plan["cwd_host"])
        submission, standins = plan["submission_host"], plan.get("standins_host")
    if flavour == "numpy":
        _block_torch(standins, layers, isolated)
    for extra in reversed(request.get("path_front", [])):
        sys.path.insert(0, extra)
    jail.apply_limits(request.get("limits", {}))
    jail.drop_privileges(layers, int(request.get("uid", -1)), int(request.get("limits", {}).get("processes", 0)))
    faulthandler.register(signal.SIGUSR1, file=trace_fd, all_threads=True, chain=False)
    agent = lab04_agent.Agent(socket.socket(fileno=agent_fd), flavour, submission)
    try:
        agent.serve(layers.to_json())
    finally:
        _flush()
    os._exit(0)


def _block_torch(standins: str | None, layers, isolated: bool) -> None:
    """torch and transformers resolve to inert stand-ins; without a private root, only by import order."""
    if standins and standins not in sys.path:
        sys.path.insert(0, standins)
    for name in [m for m in sys.modules if m.split(".")[0] in ("torch", "transformers")]:
        del sys.modules[name]  # never imported here, but be sure
    if standins:
        # Imported before any student code, as the torch process has the real ones: a student file named
        # torch.py or transformers.py shadows neither, in either process.
        import torch  # noqa: F401
        import transformers  # noqa: F401
    if isolated:
        layers.held.append("no torch or transformers on the file system (inert stand-ins)")
    else:
        sys.meta_path.insert(0, _StandInsFirst(standins))
        layers.unavailable.append(
            "torch hidden only by import order: without a private root, the real torch is still on disk"
        )


class _StandInsFirst:
    """Without a private root: resolve torch and transformers to the stand-ins (advisory only)."""

    def __init__(self, standins: str | None):
        self.standins = standins

    def find_spec(self, fullname: str, path: object = None, target: object = None) -> object:
        if fullname.split(".")[0] not in ("torch", "transformers") or not self.standins:
            return None
        import importlib.machinery

        return importlib.machinery.PathFinder.find_spec(fullname, [self.standins] if "." not in fullname else path)


# ---------------------------------------------------------------- output relay (the launcher)


def relay_output(pid: int, streams: list[tuple[int, int]], cap: int) -> int:
    """Copy each (pipe, file) keeping the first and last ``cap // 2`` bytes, until ``pid`` has ended
    and its pipes are drained; return its wait status. Student code never writes these files."""
    relays = {fd: _Relay(out, cap) for fd, out in streams}
    status, drain_until = None, None
    while relays:
        if drain_until is not None and time.monotonic() > drain_until:
            break  # a process it left behind holds the pipe open: stop waiting for it
        ready, _, _ = select.select(list(relays), [], [], 0.2)
        for fd in ready:
            try:
                chunk = os.read(fd, 1 << 16)
            except OSError:
                chunk = b""
            if chunk:
                relays[fd].add(chunk)
            else:
                relays.pop(fd).close()
                os.close(fd)
        if status is None:
            done, status_now = os.waitpid(pid, os.WNOHANG)
            if done:
                status, drain_until = status_now, time.monotonic() + 1.0
    for fd in list(relays):
        relays.pop(fd).close()
        os.close(fd)
    if status is None:
        _, status = os.waitpid(pid, 0)
    return status


class _Relay:
    """One output stream: its head goes straight to the file, its tail waits in memory."""

    def __init__(self, fd: int, cap: int):
        self.fd = fd
        self.head_room = cap // 2
        self.tail_cap = cap - cap // 2
        self.tail = bytearray()
        self.dropped = 0

    def add(self, chunk: bytes) -> None:
        if self.head_room:
            head = chunk[: self.head_room]
            os.write(self.fd, head)
            self.head_room -= len(head)
            chunk = chunk[len(head) :]
        self.tail += chunk
        if len(self.tail) > self.tail_cap:
            excess = len(self.tail) - self.tail_cap
            self.dropped += excess
            del self.tail[:excess]

    def close(self) -> None:
        if self.dropped:
            os.write(self.fd, f"\n[... {self.dropped} bytes of output dropped by the grader ...]\n".encode())
        if self.tail:
            os.write(self.fd, bytes(self.tail))
        os.close(self.fd)


if __name__ == "__main__":
    serve(sys.argv[1], int(sys.argv[2]), sys.argv[3:])
