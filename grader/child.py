"""The student process: imports a submission and runs tiers' ``collect`` on request.

Started by ``grader.sandbox`` as ``python -I -m grader.child ...``. The process that
starts is a trusted launcher (``grader.jail``): it enters new namespaces, forks the
student process and relays its output, capped. The student process applies its
own resource limits before anything else, imports its dependencies before the
student's code (so a student file named ``numpy.py`` or ``json.py`` cannot
shadow them), and keeps private references to everything it uses to send
results, so that student code patching ``json``, ``numpy`` or ``os`` cannot
change what reaches the grader. Then it hides the grader's files and drops to an
unprivileged user, and only then imports the submission. It sends raw arrays
only: every verdict is made by the parent.

Protocol: one JSON request per line on the control pipe; JSON event lines on
the reply pipe (``launched`` from the launcher; ``ready``, ``calling``, ``exit-called``,
``done``); arrays as
``.npy`` files in a per-request folder.
"""

from __future__ import annotations

import argparse
import resource
import sys


def _apply_limits(memory_bytes: int, cpu_seconds: int, file_bytes: int) -> None:
    for limit, value in (
        (resource.RLIMIT_AS, memory_bytes),
        (resource.RLIMIT_FSIZE, file_bytes),
        (resource.RLIMIT_CORE, 0),
    ):
        if value >= 0:
            resource.setrlimit(limit, (value, value))
    if cpu_seconds > 0:  # the soft limit sends SIGXCPU, the hard one SIGKILL
        resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds + 5))


class _Blocker:
    """A meta path finder that refuses to import the grader's own packages."""

    def __init__(self, names: tuple[str, ...]):
        self.names = names

    def find_spec(self, fullname: str, path: object = None, target: object = None) -> None:
        if fullname.split(".")[0] in self.names:
            raise ImportError(f"{fullname} is part of the grader and cannot be imported by a submission")
        return None


def _parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="grader.child")
    parser.add_argument("--work", required=True)
    parser.add_argument("--results", required=True)
    parser.add_argument("--control-fd", type=int, required=True)
    parser.add_argument("--reply-fd", type=int, required=True)
    parser.add_argument("--trace-file", required=True)
    parser.add_argument("--decoder", choices=("submission", "reference"), required=True)
    parser.add_argument("--memory-bytes", type=int, default=-1)
    parser.add_argument("--cpu-seconds", type=int, default=0)
    parser.add_argument("--file-bytes", type=int, default=-1)
    parser.add_argument("--processes", type=int, default=0, help="RLIMIT_NPROC once the user is dropped")
    parser.add_argument("--stdout-file", required=True)
    parser.add_argument("--stderr-file", required=True)
    parser.add_argument("--output-bytes", type=int, default=1 << 20, help="stdout and stderr kept, each")
    parser.add_argument("--isolate", action="store_true", help="namespaces, hidden paths, another user")
    parser.add_argument("--uid", type=int, default=-1, help="the user to run student code as (root only)")
    parser.add_argument("--hide", action="append", default=[], help="a path student code must not see")
    parser.add_argument("--keep", action="append", default=[], help="a path student code needs")
    parser.add_argument("--status-fd", type=int, default=-1, help="where the launcher writes the exit status")
    return parser.parse_args(argv)


def _launch(args: argparse.Namespace):
    """Enter the namespaces, fork the student process and, in this trusted launcher, relay its
    output until it ends, then exit as it did. Returns (in the student process only)."""
    import json
    import os
    import select
    import signal

    from grader import jail

    isolation = jail.Isolation()
    if args.isolate:
        jail.enter_namespaces(isolation)
    else:
        isolation.unavailable.append("isolation switched off (--no-isolation)")
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    life_r, life_w = os.pipe()  # end of file on it means the launcher is gone
    pid = os.fork()
    if pid:
        for fd in (out_w, err_w, life_r, args.control_fd):
            os.close(fd)
        # Tell the parent which process to watch, then let go of the reply pipe: its end of
        # file must mean that the student process is gone.
        os.write(args.reply_fd, (json.dumps({"event": "launched", "pid": pid}) + "\n").encode())
        os.close(args.reply_fd)
        for sig in (signal.SIGUSR1, signal.SIGINT, signal.SIGPIPE):
            signal.signal(sig, signal.SIG_IGN)
        status = jail.relay_output(pid, [(out_r, args.stdout_file), (err_r, args.stderr_file)], args.output_bytes)
        if args.status_fd >= 0:  # started by the fork server: its parent cannot wait for us
            os.write(args.status_fd, f"{status}\n".encode())
        jail.exit_like(status)
    os.close(out_r)
    os.close(err_r)
    os.close(life_w)
    if args.status_fd >= 0:
        os.close(args.status_fd)
    jail.die_with_parent()
    if select.select([life_r], [], [], 0)[0]:  # the launcher died before we asked to die with it
        os._exit(1)
    os.close(life_r)
    os.dup2(out_w, 1)
    os.dup2(err_w, 2)
    os.close(out_w)
    os.close(err_w)
    jail.mount_private_proc(isolation)
    return isolation


def _import_everything() -> None:
    """What the student process needs before any student code: the heavy imports, once."""
    import numpy  # noqa: F401
    import torch  # noqa: F401
    import transformers
    from transformers import GPT2LMHeadModel, GPT2Tokenizer  # noqa: F401

    transformers.utils.logging.disable_progress_bar()
    from grader import jail  # noqa: F401
    from grader.lab import common  # noqa: F401
    from grader.lab.tiers import BY_NAME  # noqa: F401


def fork_server(sock_fd: int) -> None:
    """Import everything once, then fork a launcher per request; student code runs only after the fork.

    Requests arrive on a SOCK_SEQPACKET socket: a JSON message (the launcher's arguments,
    with "{0}", "{1}"... standing for the descriptors passed alongside, its working folder
    and environment) and the descriptors themselves. The reply is the launcher's pid.
    """
    import json
    import os
    import signal
    import socket
    import traceback

    _import_everything()
    real_exit = os._exit
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # launchers are reaped at once; their status goes over a pipe
    server = socket.socket(fileno=sock_fd)
    while True:
        try:
            message, fds, _, _ = socket.recv_fds(server, 1 << 20, 16)
        except OSError:
            return
        if not message:
            return
        request = json.loads(message)
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                server.close()
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                os.setsid()  # a process group of its own, killed as a whole
                os.chdir(request["cwd"])
                os.environ.clear()
                os.environ.update(request["env"])
                main([arg.format(*fds) for arg in request["argv"]])
                code = 0
            except BaseException:  # noqa: BLE001 - the launcher's own failure: say it, then go
                traceback.print_exc()
            finally:
                real_exit(code)
        for fd in fds:
            os.close(fd)
        server.send(json.dumps({"pid": pid}).encode())


def main(argv: list[str] | None = None) -> None:
    args = _parse(argv)
    isolation = _launch(args)
    _apply_limits(args.memory_bytes, args.cpu_seconds, args.file_bytes)

    import faulthandler
    import json
    import os
    import signal
    import traceback
    from pathlib import Path
    from secrets import token_hex

    # What the student's code will need anyway, imported before it can shadow anything
    # (at once when forked from the fork server, which has imported it all already).
    _import_everything()
    import numpy as np

    from grader import jail
    from grader.lab import common
    from grader.lab.common import Collected, Job, StudentFailure, hf_assets, import_student
    from grader.lab.tiers import BY_NAME

    # The grader's and the reference solution's modules are not for submissions: hide the ones
    # imported so far (we keep our references) and refuse new imports of them.
    hidden = ("grader", "reference")
    for name in [m for m in sys.modules if m.split(".")[0] in hidden]:
        del sys.modules[name]
    sys.meta_path.insert(0, _Blocker(hidden))

    # Private references: later patches of these module attributes do not reach us.
    dumps, loads = json.dumps, json.loads
    os_write, os_read, os_open, os_close = os.write, os.read, os.open, os.close
    to_plain_array = np.array
    real_exit, real_abort = os._exit, os.abort
    results = Path(args.results)
    work = Path(args.work).resolve()

    trace_fh = open(args.trace_file, "w")  # noqa: SIM115 - kept open for the process's life
    faulthandler.register(signal.SIGUSR1, file=trace_fh, all_threads=True, chain=False)

    def send(event: dict) -> None:
        data = (dumps(event) + "\n").encode()
        while data:
            data = data[os_write(args.reply_fd, data) :]

    def where_called() -> str | None:
        for frame in reversed(traceback.extract_stack()):
            try:
                path = Path(frame.filename).resolve()
            except (OSError, ValueError):
                continue
            if path.is_relative_to(work):
                return f"{path.relative_to(work).as_posix()}, line {frame.lineno}"
        return None

    def guarded_exit(code: int = 0) -> None:
        send({"event": "exit-called", "how": f"os._exit({code})", "where": where_called()})
        real_exit(code)

    def guarded_abort() -> None:
        send({"event": "exit-called", "how": "os.abort()", "where": where_called()})
        real_abort()

    os._exit, os.abort = guarded_exit, guarded_abort  # type: ignore[assignment]

    # Progress reports, so that a time-out or a crash can say which student function was running.
    original_call = common.call_student

    def reporting_call(root, label, fn, *a, **k):  # type: ignore[no-untyped-def]
        send({"event": "calling", "function": label})
        return original_call(root, label, fn, *a, **k)

    common.call_student = reporting_call

    def write_npy(path: Path, array: np.ndarray) -> dict:
        plain = to_plain_array(array, subok=False, order="C")  # a base-class copy: no overridden methods
        header = f"{{'descr': {plain.dtype.str!r}, 'fortran_order': False, 'shape': {tuple(plain.shape)!r}, }}"
        header += " " * (63 - (len(header) + 10) % 64) + "\n"
        fd = os_open(str(path), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            data = memoryview(plain).cast("B") if plain.size else b""
            for chunk in (b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header.encode("latin1"), data):
                view = memoryview(chunk)
                while view:
                    view = view[os_write(fd, view) :]
        finally:
            os_close(fd)
        return {"file": path.name, "dtype": plain.dtype.str, "shape": list(plain.shape)}

    # Everything trusted is imported and referenced: from here on, only what a stranger may see.
    keep = [Path(p) for p in args.keep] + [Path(sys.prefix), Path(sys.base_prefix)]
    keep += [Path(p) for p in sys.path if p and Path(p).is_dir()]
    try:
        jail.hide_paths(isolation, [Path(p) for p in args.hide], keep)
    except OSError as exc:
        isolation.unavailable.append(f"hidden files: {exc}")
    if args.uid >= 0 and os.geteuid() == 0:
        if args.processes > 0:  # counts the new user's processes and threads; root is exempt
            resource.setrlimit(resource.RLIMIT_NPROC, (args.processes, args.processes))
        jail.drop_privileges(isolation, args.uid)
    else:
        jail.drop_privileges(isolation, -1)  # no new privileges, at least
        isolation.unavailable.append(
            "process limit: needs a user of its own (root), so only the wall clock bounds forks"
        )

    student = None
    import_failure = None
    buffer = b""
    send({"event": "ready", "isolation": isolation.to_json()})
    while True:
        while b"\n" not in buffer:
            chunk = os_read(args.control_fd, 1 << 16)
            if not chunk:
                return
            buffer += chunk
        line, buffer = buffer.split(b"\n", 1)
        request = loads(line)
        if request.get("tier") == "exit":
            return
        reply: dict = {"event": "done", "id": request["id"]}
        try:
            if student is None and import_failure is None:
                for checkpoint in request["job"]["checkpoints"][:1]:
                    hf_assets(checkpoint["path"])  # before any student code can patch what loading uses
                send({"event": "calling", "function": "importing pretrained.py"})
                try:
                    student = import_student(work, decoder_origin=args.decoder)
                except StudentFailure as failure:
                    import_failure = failure
            reply["decoder"] = student.decoder_origin if student else args.decoder
            if import_failure is not None:
                raise import_failure
            tier = BY_NAME[request["tier"]]
            collected: Collected = tier.collect(student, Job.from_json(request["job"]))
            folder = results / f"{request['id']}-{token_hex(8)}"  # a name student code cannot prepare
            folder.mkdir(mode=0o700)
            manifest = {}
            for n, (name, array) in enumerate(collected.arrays.items()):
                if array.dtype.kind not in "biufc":
                    continue  # objects, strings, dates: not data the checks can use
                manifest[name] = write_npy(folder / f"{n}.npy", array)
            reply.update(status="ok", folder=folder.name, arrays=manifest, meta=collected.meta)
        except StudentFailure as failure:
            reply.update(status="student_error", record=failure.record)
        except MemoryError:
            reply.update(status="student_error", record={"function": "the grader's bookkeeping", "type": "MemoryError",
                                                         "message": "ran out of memory", "summary": "ran out of memory"})  # fmt: skip
        except Exception:  # noqa: BLE001 - a bug of ours: report it, keep the process alive
            reply.update(status="harness_error", traceback=traceback.format_exc(limit=20))
        send(reply)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--fork-server"]:
        sys.exit(fork_server(int(sys.argv[2])))
    sys.exit(main())
