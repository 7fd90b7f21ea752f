"""A real child whose supervisor dies, with the SIGTERM it gets landing on a chosen line.

``python -m tests.support.orphan DSN POOL_ID EVENTS_FILE INJECT JOB_ID...`` plays a minimal
supervisor: it forks a child exactly as ``Supervisor.spawn`` does (a socket pair, the
supervisor's end closed in the child, ``child_main``), waits for READY, sends one RUN with
the job ids (which the caller has claimed for POOL_ID) and exits. The child's
``PR_SET_PDEATHSIG`` then sends it the real SIGTERM a dead supervisor causes.

The child holds that SIGTERM back (blocked: it stays pending) and traces its own batch
loop: every line event in the functions of :data:`TRACED` is numbered and written to
EVENTS_FILE (``n function line``). At event number INJECT the signal is unblocked, so the
child's handler runs right there, before that line's first bytecode, as if the supervisor
had died at that instant. INJECT -1 only counts. Lines inside a ``with
sigterm_deferred():`` block are not injection points (the child holds SIGTERM there itself,
so a real signal could not be handled on them), nor lines that start with a NOP (see
``Injector.line_trace``).

The caller reads the child's pid from stdout; the child keeps stdout/stderr open until it
exits, so ``subprocess.run`` returns when the child is gone.
"""

from __future__ import annotations

import ast
import dis
import inspect
import os
import signal
import sys
import time
from pathlib import Path
from types import CodeType, FrameType
from typing import Any

from kongtaskd import child as child_module
from kongtaskd import protocol
from kongtaskd.child import Child, ChildSettings, child_main
from kongtaskd.logs import setup_logging

#: The child's methods that make up the batch loop, from receiving the ids to reporting.
TRACED = (
    "serve",
    "serve_next",
    "run_batch",
    "load",
    "run_job",
    "call",
    "report",
    "report_returned",
)

WAIT_SECONDS = 20.0
_NOP = dis.opmap["NOP"]


def deferred_lines() -> set[int]:
    """Lines of child.py inside ``with sigterm_deferred():`` bodies."""
    tree = ast.parse(Path(inspect.getfile(child_module)).read_text())
    lines: set[int] = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.With):
            continue
        for item in node.items:
            call = item.context_expr
            if (
                isinstance(call, ast.Call)
                and isinstance(call.func, ast.Name)
                and call.func.id == "sigterm_deferred"
            ):
                for statement in node.body:
                    lines.update(range(statement.lineno, (statement.end_lineno or 0) + 1))
    return lines


class Injector:
    def __init__(self, events_path: str, inject: int, supervisor_pid: int) -> None:
        self.events = open(events_path, "a", buffering=1)  # noqa: SIM115 - the child _exits
        self.inject = inject
        self.supervisor_pid = supervisor_pid
        self.codes: dict[CodeType, str] = {}
        for name in TRACED:
            method = getattr(Child, name, None)
            if method is not None:
                self.codes[method.__code__] = name
        self.skip = deferred_lines()
        self.count = 0
        self.waited = False

    def global_trace(self, frame: FrameType, event: str, arg: Any) -> Any:
        if frame.f_code in self.codes:
            return self.line_trace
        return None

    def line_trace(self, frame: FrameType, event: str, arg: Any) -> Any:
        if event != "line" or frame.f_lineno in self.skip:
            return self.line_trace
        if frame.f_code.co_code[frame.f_lasti] == _NOP:
            # A line that starts with a NOP (``try:``): CPython never runs a signal handler
            # there (a NOP does not check for pending calls), and an exception raised at a
            # NOP is outside every handler of the frame. The signal lands on the next line.
            return self.line_trace
        if not self.waited:
            # The supervisor must be dead before the batch starts: an outcome sent to a live
            # supervisor that then dies is the supervisor's loss, not the child's.
            self.waited = True
            deadline = time.monotonic() + WAIT_SECONDS
            while signal.SIGTERM not in signal.sigpending():
                if time.monotonic() > deadline:
                    self.events.write("timeout waiting for PDEATHSIG\n")
                    os._exit(99)
                time.sleep(0.001)
        n = self.count
        self.count += 1
        self.events.write(f"{n} {self.codes[frame.f_code]} {frame.f_lineno}\n")
        if n == self.inject:
            sys.settrace(None)
            frame.f_trace = None
            # pthread_sigmask runs the Python handler before it returns: here, now.
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
            return None
        return self.line_trace


def main(argv: list[str]) -> None:
    dsn, pool_id, events_path, inject_text, *id_texts = argv
    job_ids = tuple(int(text) for text in id_texts)
    settings = ChildSettings(
        index=1,
        pool_id=pool_id,
        dsn=dsn,
        schema="graphile_worker",
        tasks={"remember": "handlers:remember"},
        python_path=(str(Path(__file__).resolve().parents[1] / "fixtures"),),
    )
    setup_logging("info", "text")
    parent_end, child_end = protocol.channel_pair()
    supervisor_pid = os.getpid()
    pid = os.fork()
    if pid == 0:
        try:
            parent_end.sock.close()
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
            injector = Injector(events_path, int(inject_text), supervisor_pid)
            sys.settrace(injector.global_trace)
            child_main(settings, child_end)
        finally:
            os._exit(98)
    child_end.close()
    ready = parent_end.receive()
    if ready is None or ready.kind is not protocol.Kind.READY:
        print(f"child did not start: {ready}", file=sys.stderr)
        os._exit(2)
    parent_end.send(protocol.encode_run(*job_ids))
    print(pid, flush=True)
    os._exit(0)  # the supervisor is gone: the child's PDEATHSIG fires


if __name__ == "__main__":
    main(sys.argv[1:])
