"""A stand-in supervisor for the zygote's integration tests, run as its own process.

``python -m tests.support.zygote_driver SCENARIO JSON`` becomes a child subreaper (as the
supervisor does), launches a real zygote and real children from it, and prints one JSON
line of what it saw. A process of its own, so that the test runner never becomes a
subreaper and a scenario may end by killing itself.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any

from kongtaskd import protocol, tunables
from kongtaskd.child import ChildSettings
from kongtaskd.zygote import HandlerSpec, State, Zygote, ZygoteKeeper, become_subreaper


def fd_targets(pid: int) -> dict[int, str]:
    """fd -> what it points at (``socket:[123]``, ``pipe:[456]``, a path) for one process."""
    found: dict[int, str] = {}
    base = Path(f"/proc/{pid}/fd")
    for entry in base.iterdir():
        try:
            found[int(entry.name)] = os.readlink(entry)
        except OSError:
            continue
    return found


def settings(args: dict[str, Any], index: int, **extra: Any) -> ChildSettings:
    return ChildSettings(
        index=index,
        pool_id=args["pool_id"],
        dsn=args["dsn"],
        schema="graphile_worker",
        tasks=args["tasks"],
        task_modules=tuple(args.get("task_modules", ())),
        python_path=tuple(args["python_path"]),
        **extra,
    )


def ready_child(zygote: Zygote, args: dict[str, Any], index: int) -> tuple[int, Any]:
    pid, channel = zygote.spawn(settings(args, index))
    channel.sock.setblocking(True)
    message = channel.receive()
    assert message is not None and message.kind is protocol.Kind.READY, message
    return pid, channel


def hung_reload(args: dict[str, Any]) -> None:
    """A reload whose import hangs: the keeper gives up after the (shortened) time limit,
    while the children of the good zygote keep being served."""
    tunables.CHILD_START_TIMEOUT = 1.0
    keeper = ZygoteKeeper(forget=lambda: None)
    good = HandlerSpec(tasks=args["tasks"], python_path=tuple(args["python_path"]))
    keeper.launch(good)
    while not keeper.await_ready(5):
        pass
    keeper.propose(HandlerSpec(tasks={"hang": "hangs_mod:f"}, python_path=(args["hang_dir"],)))
    events: list[Any] = []
    deadline = time.monotonic() + 30
    while not events and time.monotonic() < deadline:
        time.sleep(0.05)
        if keeper.due(time.monotonic()):
            events = keeper.poll()
    pid, _channel = keeper.spawn(settings(args, 0))
    hung = list(keeper.leaving)
    keeper.stop()
    for zygote_pid in keeper.pids():
        os.kill(zygote_pid, signal.SIGKILL)
    os.kill(pid, signal.SIGKILL)
    out = {"events": [[e.kind, e.error] for e in events], "spawned": pid, "hung": hung}
    print(json.dumps(out), flush=True)


def main() -> None:
    scenario, args = sys.argv[1], json.loads(sys.argv[2])
    become_subreaper()
    if scenario == "hung_reload":
        hung_reload(args)
        return
    # Stand-ins for what a supervisor holds and must not pass on: a "database" socket and
    # a signal wake-up pipe. ``forget`` below does nothing on purpose: the zygote itself
    # must drop every fd it was not meant to keep.
    held_socket = socket.socketpair()
    held_pipe = os.pipe()
    spec = HandlerSpec(
        tasks=args["tasks"],
        task_modules=tuple(args.get("task_modules", ())),
        python_path=tuple(args["python_path"]),
    )
    zygote = Zygote.launch(spec, forget=lambda: None)
    state = zygote.wait_ready(60)
    out: dict[str, Any] = {
        "state": state.value,
        "error": zygote.error,
        "zygote": zygote.pid,
        "driver": os.getpid(),
    }
    if state is not State.READY:
        _, status = os.waitpid(zygote.pid, 0)
        zygote.exited(status)
        out["exit"] = os.waitstatus_to_exitcode(status)
        print(json.dumps(out), flush=True)
        return

    if scenario == "run":
        pid, channel = ready_child(zygote, args, 0)
        out["child"] = pid
        out["child_ppid"] = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        channel.send(protocol.encode_run(args["job_id"]))
        message = channel.receive()
        out["outcome"] = message.kind.name if message else None
        channel.send(protocol.encode_stop())
        _, status = os.waitpid(pid, 0)
        out["child_exit"] = os.waitstatus_to_exitcode(status)
    elif scenario == "fds":
        kids = [ready_child(zygote, args, index) for index in range(3)]
        out["children"] = [pid for pid, _ in kids]
        out["fds"] = {str(pid): fd_targets(pid) for pid, _ in kids}
        out["fds"][str(zygote.pid)] = fd_targets(zygote.pid)
        out["fds"][str(os.getpid())] = fd_targets(os.getpid())
        out["held"] = [
            os.readlink(f"/proc/self/fd/{fd}")
            for fd in (held_socket[0].fileno(), held_socket[1].fileno(), *held_pipe)
        ]
        for pid, channel in kids:
            channel.send(protocol.encode_stop())
            os.waitpid(pid, 0)
    elif scenario == "orphan":
        pid, _channel = ready_child(zygote, args, 0)
        print(json.dumps({"zygote": zygote.pid, "child": pid}), flush=True)
        os.kill(os.getpid(), signal.SIGKILL)  # die without a word, as an OOM kill would
        time.sleep(60)
    zygote.stop(reap=True)
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
