"""The zygote: a pre-imported template process from which the children are forked.

The supervisor never imports handler code. A zygote does it for it: forked from the
supervisor, it drops every fd the supervisor owns, applies ``python_path``, imports every
handler (``tasks:`` specs and ``task_modules``, :func:`kongtaskd.registry.load_handlers`)
and says so, once: READY with the task identifiers, or FAILED with the import error
(module, file:line, exception). Then it waits for spawn requests. It never connects to the
database. A child forked from it starts with the handlers already imported (faster, and
sharing their memory copy-on-write) and runs the code that imported cleanly, whatever is
on disk now. That is what makes a reload safe: the supervisor starts a new zygote for the
new configuration and replaces children only once that one said READY; until then, and for
good if it failed, replacements fork from the last good one.

Children must stay the supervisor's children (it reaps them with ``waitpid`` and talks to
them over their socket pair), so the supervisor is a child subreaper
(:func:`become_subreaper`) and the zygote double-forks: an intermediate process forks the
child and exits at once, and the kernel hands the orphan to the supervisor. The zygote makes
the child's socket pair, and passes the supervisor's end back with the child's pid over its
control socket (``SCM_RIGHTS``), then closes its copies. No fd of the supervisor, of the
zygote's control socket or of a sibling reaches a child.

Control messages (one ``AF_UNIX`` ``SOCK_SEQPACKET`` pair, one pickled tuple per packet;
both ends are processes of this daemon)::

    zygote -> supervisor   ("ready", ([task identifiers], {identifier: (concurrency, rate)}))
                                                           handlers imported; the caps
                                                           their @kongtaskd.task gave
                           ("failed", "one-line error")    import failed; the zygote exits
                           ("spawned", pid) + 1 fd         a child and its channel's end
                           ("spawn_failed", "error")       fork failed (EAGAIN, ENOMEM)
    supervisor -> zygote   ("spawn", ChildSettings)        fork one child
                           end of stream                   exit

A zygote dies with the supervisor (``PR_SET_PDEATHSIG`` SIGKILL: it holds nothing to save).
"""

from __future__ import annotations

import ctypes
import enum
import os
import pickle
import select
import signal
import socket
import struct
import sys
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NoReturn

from setproctitle import setproctitle

from kongtaskd import protocol, tunables

if TYPE_CHECKING:
    from kongtaskd.child import ChildSettings
    from kongtaskd.config import Config, Rate

    Caps = tuple[int | None, Rate | None]

_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36

#: Exit statuses of a zygote (the supervisor's reaper reads them; nothing acts on them
#: but the log).
EXIT_OK = 0
EXIT_IMPORT_FAILED = 3
EXIT_ORPHANED = 5

_PACKET_MAX = 1 << 20  # a FAILED message is one line; a ChildSettings pickle is < 4 KiB
_PID = struct.Struct("=q")

#: In a zygote and in every child forked from it: the supervisor's pid (the process that
#: adopts the child). None elsewhere. Read by :func:`adopter`.
_supervisor_pid: int | None = None


class State(enum.Enum):
    STARTING = "starting"  # importing the handlers
    READY = "ready"  # imported; serves spawn requests
    FAILED = "failed"  # an import failed (``Zygote.error`` says why); exiting
    GONE = "gone"  # exited or stopped (killed, OOM, stop())


class ZygoteError(Exception):
    """A spawn request could not be served (the zygote is gone, or fork failed)."""


@dataclass(frozen=True)
class HandlerSpec:
    """What a zygote imports: the part of the configuration that names handler code."""

    tasks: Mapping[str, str]
    task_modules: tuple[str, ...] = ()
    python_path: tuple[str, ...] = ()
    #: Django mode: ``django.setup()`` before the first handler import.
    django_settings: str | None = None
    #: The ``hooks:`` module, imported after the handlers (its import error refuses too).
    hooks: str | None = None
    #: ``tasks:`` entries without a handler (caps only): identifier -> where it was set.
    #: Some module must register each, or the import "fails" (``check_caps_only``).
    caps_only: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, config: Config) -> HandlerSpec:
        from kongtaskd.config import handler_specs

        return cls(
            tasks=handler_specs(config.tasks),
            task_modules=tuple(config.task_modules),
            python_path=tuple(str(p) for p in config.python_path),
            django_settings=config.django_settings,
            hooks=config.hooks,
            caps_only={
                name: spec.where for name, spec in config.tasks.items() if spec.handler is None
            },
        )


def become_subreaper() -> None:
    """Make this process adopt its orphaned descendants (the zygote's grandchildren).

    Linux only; elsewhere the children would be adopted by init and the supervisor could
    not reap them, so the zygote is Linux-only, like PDEATHSIG.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"prctl(PR_SET_CHILD_SUBREAPER): {os.strerror(errno)}")


def adopter() -> int | None:
    """In a child forked from a zygote: the pid of the supervisor that adopts it."""
    return _supervisor_pid


class Zygote:
    """The supervisor's handle on one zygote process."""

    def __init__(self, pid: int, sock: socket.socket, spec: HandlerSpec) -> None:
        self.pid = pid
        self.spec = spec
        self.sock = sock
        self.state = State.STARTING
        #: The import error of a FAILED zygote (one line: module, file:line, exception).
        self.error = ""
        #: Task identifiers its children can run (from READY).
        self.tasks: tuple[str, ...] = ()
        #: The caps ``@kongtaskd.task`` gave them (from READY): identifier -> (concurrency,
        #: rate), only those with any.
        self.caps: dict[str, Caps] = {}
        self.started = time.monotonic()
        #: The waitpid status once reaped (by ``exited`` or ``stop``).
        self.status: int | None = None

    # -- life --------------------------------------------------------------------------
    @classmethod
    def launch(cls, spec: HandlerSpec, forget: Callable[[], None]) -> Zygote:
        """Fork a zygote that imports ``spec``; returns at once (it reports via ``poll``).

        ``forget`` runs first in the fork: it lets go of the caller's fds without using
        them (the supervisor's database socket, children's channels, selector).
        """
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        supervisor = os.getpid()
        pid = os.fork()
        if pid == 0:  # ---- the zygote; never returns ----
            try:
                ours.detach()  # closed below with every other fd the supervisor had
                forget()
                _zygote_main(theirs, spec, supervisor)
            finally:
                os._exit(EXIT_ORPHANED)
        theirs.close()
        ours.setblocking(False)
        return cls(pid, ours, spec)

    def fileno(self) -> int:
        """Readable when a report arrived or the zygote went away: then call ``poll``."""
        return self.sock.fileno()

    def poll(self) -> State:
        """Take the reports that arrived (without blocking); the current state."""
        while self.state in (State.STARTING, State.READY):
            try:
                data = self.sock.recv(_PACKET_MAX, socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                data = b""
            if not data:  # end of stream: it exited (or was killed)
                if self.state is State.STARTING:
                    self.error = self.error or self.death()
                self.state = State.FAILED if self.error else State.GONE
                break
            kind, value = pickle.loads(data)
            if kind == "ready" and self.state is State.STARTING:
                tasks, caps = value
                self.tasks, self.caps = tuple(tasks), dict(caps)
                self.state = State.READY
            elif kind == "failed":
                self.error = str(value)
                self.state = State.FAILED
        return self.state

    def wait_ready(self, timeout: float) -> State:
        """Block up to ``timeout`` seconds while it imports; the state then."""
        deadline = time.monotonic() + timeout
        while self.poll() is State.STARTING:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            select.select([self.sock], [], [], left)
        return self.state

    def spawn(self, settings: ChildSettings) -> tuple[int, protocol.Channel]:
        """Fork a child of these handlers; its pid and the supervisor's (non-blocking) end.

        Blocks for the fork only (milliseconds). Raises ZygoteError if the zygote is not
        READY, is gone, or could not fork.
        """
        if self.poll() is not State.READY:
            raise ZygoteError(f"the zygote (pid {self.pid}) is {self.state.value}")
        self.sock.settimeout(tunables.ZYGOTE_SPAWN_TIMEOUT)
        try:
            self.sock.send(pickle.dumps(("spawn", settings)))
            data, fds, _flags, _addr = socket.recv_fds(self.sock, _PACKET_MAX, 1)
        except OSError as exc:  # TimeoutError included: a zygote that hangs is as good as gone
            self.state = State.GONE
            raise ZygoteError(f"the zygote (pid {self.pid}) did not answer: {exc}") from None
        finally:
            self.sock.setblocking(False)
        if not data:
            self.state = State.GONE
            for fd in fds:
                os.close(fd)
            raise ZygoteError(f"the zygote (pid {self.pid}) went away")
        kind, value = pickle.loads(data)
        if kind != "spawned" or len(fds) != 1:
            for fd in fds:
                os.close(fd)
            raise ZygoteError(f"the zygote (pid {self.pid}) could not fork a child: {value}")
        sock = socket.socket(fileno=fds[0])
        sock.setblocking(False)
        return int(value), protocol.Channel(sock)

    def exited(self, status: int) -> None:
        """The supervisor's reaper collected this zygote's exit status."""
        self.status = status
        self.poll()  # a FAILED report may still be in the socket
        if self.state is State.STARTING:
            self.error = self.death()
            self.state = State.FAILED
        elif self.state is State.READY:
            self.state = State.GONE

    def death(self) -> str:
        """Why it is gone, for a zygote that ended without saying why."""
        if self.status is None:
            return f"the zygote (pid {self.pid}) ended before it reported"
        return f"the zygote (pid {self.pid}) {_describe(self.status)} before it reported"

    def stop(self, *, reap: bool = False) -> None:
        """Let it go: it exits at the end of its control stream (SIGKILL if importing).

        ``reap``: also wait for it here (callers without a reaper of their own); the
        supervisor's reaper collects it otherwise.
        """
        importing = self.state is State.STARTING
        if self.sock.fileno() >= 0:
            self.sock.close()
        if importing or reap:
            # An import may hang; and nothing a zygote holds needs a clean exit.
            try:
                os.kill(self.pid, signal.SIGKILL if importing else signal.SIGTERM)
            except ProcessLookupError:
                pass
        if reap and self.status is None:
            try:
                _, self.status = os.waitpid(self.pid, 0)
            except ChildProcessError:
                pass
        self.state = State.GONE


def _describe(status: int) -> str:
    if os.WIFSIGNALED(status):
        try:
            name = signal.Signals(os.WTERMSIG(status)).name
        except ValueError:
            name = str(os.WTERMSIG(status))
        return f"was killed by signal {name}"
    return f"exited with code {os.waitstatus_to_exitcode(status)}"


# ==========================================================================================
# In the zygote
# ==========================================================================================
def _zygote_main(control: socket.socket, spec: HandlerSpec, supervisor: int) -> NoReturn:
    global _supervisor_pid
    _supervisor_pid = supervisor
    _die_with(supervisor)
    # Whatever ``forget`` missed: nothing but stdio and the control socket may reach the
    # handlers' imports, and through them the children.
    keep = control.fileno()
    os.closerange(3, keep)
    os.closerange(keep + 1, _max_fd())
    _quiet_signals()
    setproctitle("kongtaskd: zygote importing handlers")
    from kongtaskd.errors import KongtaskError
    from kongtaskd.registry import check_caps_only, decorated_caps, load_handlers

    try:
        if spec.django_settings:  # the app registry before any model is imported
            from kongtaskd.contrib.django import runtime

            runtime.setup(spec.django_settings)
        handlers = load_handlers(spec.tasks, spec.task_modules, spec.python_path)
        check_caps_only(spec.caps_only, handlers)
        if spec.hooks:
            from kongtaskd.hooks import load_module

            load_module(spec.hooks)
    except KongtaskError as exc:
        _report(control, ("failed", exc.message))
        os._exit(EXIT_IMPORT_FAILED)
    except BaseException as exc:  # an import can raise anything (SystemExit too)
        _report(control, ("failed", f"{type(exc).__name__}: {exc}"))
        os._exit(EXIT_IMPORT_FAILED)
    _report(control, ("ready", (sorted(handlers), decorated_caps(handlers))))
    setproctitle(f"kongtaskd: zygote ({len(handlers)} tasks)")
    _serve(control)


def _die_with(supervisor: int) -> None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass
    if os.getppid() != supervisor:  # it died before the request took effect
        os._exit(EXIT_ORPHANED)


def _max_fd() -> int:
    try:
        return os.sysconf("SC_OPEN_MAX")
    except (OSError, ValueError):
        return 65536


def _quiet_signals() -> None:
    """The supervisor's handlers only record into its (now closed) wake-up fd: reset them.

    A terminal's Ctrl-C, SIGHUP and the job-control signals are the supervisor's business;
    SIGTERM (default: exit) and the control stream's end are how a zygote is stopped.
    """
    signal.set_wakeup_fd(-1)
    for signum in (signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGTTIN, signal.SIGTTOU):
        signal.signal(signum, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # it waits for its intermediates


def _report(control: socket.socket, message: tuple[str, Any]) -> None:
    try:
        control.send(pickle.dumps(message))
    except OSError:
        os._exit(EXIT_ORPHANED)


def _serve(control: socket.socket) -> NoReturn:
    while True:
        try:
            data = control.recv(_PACKET_MAX)
        except InterruptedError:
            continue
        except OSError:
            data = b""
        if not data:  # the supervisor let us go (or died)
            os._exit(EXIT_OK)
        kind, settings = pickle.loads(data)
        if kind == "spawn":
            _spawn(control, settings)


def _spawn(control: socket.socket, settings: ChildSettings) -> None:
    """Double-fork one child; send its pid and the supervisor's end of its channel."""
    parent_end, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    pid_r, pid_w = os.pipe()
    try:
        intermediate = os.fork()
    except OSError as exc:
        for fd in (pid_r, pid_w):
            os.close(fd)
        parent_end.close()
        child_end.close()
        _report(control, ("spawn_failed", f"fork: {exc.strerror}"))
        return
    if intermediate == 0:  # ---- the intermediate: fork the child, exit at once ----
        try:
            os.close(pid_r)
            child = os.fork()
            if child == 0:
                os.close(pid_w)
                control.close()
                parent_end.close()
                _child_main(settings, child_end)
            os.write(pid_w, _PID.pack(child))
        finally:
            os._exit(0)
    os.close(pid_w)
    child_end.close()
    with os.fdopen(pid_r, "rb") as pipe:
        data = pipe.read(_PID.size)
    # The intermediate is gone once waitpid returns, so the child has been adopted by the
    # supervisor before the supervisor learns its pid.
    try:
        os.waitpid(intermediate, 0)
    except ChildProcessError:
        pass
    if len(data) != _PID.size:
        parent_end.close()
        _report(control, ("spawn_failed", "fork: the intermediate process died"))
        return
    (pid,) = _PID.unpack(data)
    try:
        socket.send_fds(control, [pickle.dumps(("spawned", pid))], [parent_end.fileno()])
    except OSError:
        os._exit(EXIT_ORPHANED)
    finally:
        parent_end.close()


def _child_main(settings: ChildSettings, end: socket.socket) -> NoReturn:
    setproctitle(f"kongtaskd: child {settings.index} starting")
    from kongtaskd.child import child_main

    try:
        child_main(settings, protocol.Channel(end))
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(3)


# ==========================================================================================
# The supervisor's side: which zygote children fork from
# ==========================================================================================
@dataclass(frozen=True)
class Event:
    """Something the keeper's zygotes did, for the supervisor to act on.

    ``kind``: "reload_ready" (the proposed handlers imported: replace the children),
    "reload_failed" (they did not: keep everything, ``error`` says why), "lost" (the
    zygote children fork from died: ``error`` says how; a replacement is starting),
    "restored" (the replacement is up), "degraded" (it failed: ``error``; retried later).
    """

    kind: str
    error: str = ""
    tasks: tuple[str, ...] = ()


#: Event kinds.
RELOAD_READY, RELOAD_FAILED = "reload_ready", "reload_failed"
LOST, RESTORED, DEGRADED = "lost", "restored", "degraded"


class ZygoteKeeper:
    """The zygote children fork from (the last configuration that imported cleanly), a
    reload's candidate while it imports, and the replacement of one that died.

    Non-blocking except ``await_ready`` (start-up): reports arrive on fds the supervisor's
    loop selects on (``watch``/``unwatch`` register them), and ``poll`` turns them into
    events.
    """

    def __init__(
        self,
        forget: Callable[[], None],
        watch: Callable[[int], None] = lambda fd: None,
        unwatch: Callable[[int], None] = lambda fd: None,
    ) -> None:
        self.forget = forget
        self.watch = watch
        self.unwatch = unwatch
        #: READY, children fork from it (None while a lost one is being replaced).
        self.current: Zygote | None = None
        #: What ``current`` imported (and what a replacement imports).
        self.spec: HandlerSpec | None = None
        #: A reload's candidate, importing.
        self.candidate: Zygote | None = None
        #: A replacement for a lost ``current``, importing.
        self.replacement: Zygote | None = None
        #: Stopped or failed zygotes not yet reaped, by pid.
        self.leaving: dict[int, Zygote] = {}
        self.degraded: str | None = None
        self.retry_at: float | None = None
        self.retry_delay = tunables.ZYGOTE_RETRY_FIRST
        self.events: list[Event] = []

    # -- start-up --------------------------------------------------------------------------
    def launch(self, spec: HandlerSpec) -> None:
        """Start importing ``spec`` (at start-up; ``await_ready`` says how it went)."""
        self.spec = spec
        self.replacement = self._launch(spec)

    def await_ready(self, timeout: float) -> bool:
        """Wait up to ``timeout`` for the start-up zygote: True once the handlers imported,
        False while it is still importing; TaskImportError (once, with module, file:line
        and exception) if they cannot be imported."""
        from kongtaskd.errors import TaskImportError

        zygote = self.replacement
        if zygote is None:
            return self.current is not None
        state = zygote.wait_ready(timeout)
        if state is State.STARTING:
            return False
        self.replacement = None
        if state is State.READY:
            self.current = zygote
            return True
        self._retire(zygote)
        raise TaskImportError(zygote.error)

    # -- children ----------------------------------------------------------------------------
    def can_spawn(self) -> bool:
        # No syscall: the loop polls the zygote when its fd says something happened.
        return self.current is not None and self.current.state is State.READY

    def spawn(self, settings: ChildSettings) -> tuple[int, protocol.Channel]:
        """Fork a child from the current zygote. ZygoteError if there is none right now (the
        loss is noticed here too: a replacement is started)."""
        if self.current is None:
            raise ZygoteError(self.degraded or "no zygote is ready")
        try:
            return self.current.spawn(settings)
        except ZygoteError:
            self._lost_current()
            raise

    # -- reload ------------------------------------------------------------------------------
    def propose(self, spec: HandlerSpec) -> None:
        """A reload: import ``spec`` in a new zygote; ``poll`` says how it went. A candidate
        still importing from an earlier reload is dropped (the newest configuration wins)."""
        if self.candidate is not None:
            self._retire(self.candidate)
        self.candidate = self._launch(spec)

    # -- the loop ------------------------------------------------------------------------------
    def exited(self, pid: int, status: int) -> bool:
        """The supervisor's reaper found ``pid``; True if it was one of ours."""
        zygote = self.leaving.pop(pid, None)
        if zygote is not None:
            zygote.status = status
            return True
        for live in (self.current, self.candidate, self.replacement):
            if live is not None and live.pid == pid:
                live.exited(status)
                return True
        return False

    def poll(self) -> list[Event]:
        """Turn what the zygotes reported (or how they died) into events."""
        events, self.events = self.events, []
        self._give_up_hung_imports()
        candidate = self.candidate
        if candidate is not None and candidate.poll() is not State.STARTING:
            self.candidate = None
            if candidate.state is State.READY:
                if self.current is not None:
                    self._retire(self.current)
                self.current, self.spec = candidate, candidate.spec
                if self.replacement is not None:  # it would import the old spec
                    self._retire(self.replacement)
                    self.replacement = None
                self._healthy()
                events.append(Event(RELOAD_READY, tasks=candidate.tasks))
            else:
                self._retire(candidate)
                events.append(Event(RELOAD_FAILED, error=candidate.error))
        if self.current is not None and self.current.poll() is not State.READY:
            self._lost_current()
            events += self.events
            self.events = []
        replacement = self.replacement
        if replacement is not None and replacement.poll() is not State.STARTING:
            self.replacement = None
            if replacement.state is State.READY:
                self.current = replacement
                self._healthy()
                events.append(Event(RESTORED, tasks=replacement.tasks))
            else:
                self._retire(replacement)
                self.degraded = (
                    f"cannot fork replacement children: a new zygote failed ({replacement.error})"
                )
                self.retry_at = time.monotonic() + self.retry_delay
                self.retry_delay = min(self.retry_delay * 2, tunables.ZYGOTE_RETRY_MAX)
                events.append(Event(DEGRADED, error=self.degraded))
        if self.retry_at is not None and time.monotonic() >= self.retry_at:
            self.retry_at = None
            if self.current is None and self.replacement is None and self.spec is not None:
                self.replacement = self._launch(self.spec)
        return events

    def next_deadline(self) -> float | None:
        """When ``poll`` must run although no fd is readable: a retry, or an import's
        time limit."""
        deadlines = [self.retry_at]
        for zygote in (self.candidate, self.replacement):
            if zygote is not None:
                deadlines.append(zygote.started + tunables.CHILD_START_TIMEOUT)
        return min((d for d in deadlines if d is not None), default=None)

    def due(self, now: float) -> bool:
        """``poll`` has something to say although no fd was readable."""
        deadline = self.next_deadline()
        return bool(self.events) or (deadline is not None and now >= deadline)

    def stop(self) -> None:
        """Let every zygote go (the supervisor's reaper, or ``reap_all``, collects them)."""
        for zygote in (self.current, self.candidate, self.replacement):
            if zygote is not None:
                self._retire(zygote)
        self.current = self.candidate = self.replacement = None

    def pids(self) -> set[int]:
        live = [z.pid for z in (self.current, self.candidate, self.replacement) if z is not None]
        return set(live) | set(self.leaving)

    # -- inside ------------------------------------------------------------------------------
    def _launch(self, spec: HandlerSpec) -> Zygote:
        zygote = Zygote.launch(spec, self.forget)
        self.watch(zygote.fileno())
        return zygote

    def _retire(self, zygote: Zygote) -> None:
        if zygote.sock.fileno() >= 0:
            self.unwatch(zygote.fileno())
        zygote.stop()
        if zygote.status is None:
            self.leaving[zygote.pid] = zygote

    def _give_up_hung_imports(self) -> None:
        """An import that takes longer than CHILD_START_TIMEOUT hangs: stop that zygote; its
        FAILED state reports it (a refused reload, or a degraded daemon)."""
        limit = time.monotonic() - tunables.CHILD_START_TIMEOUT
        for zygote in (self.candidate, self.replacement):
            if zygote is not None and zygote.state is State.STARTING and zygote.started < limit:
                self.unwatch(zygote.fileno())
                zygote.stop()  # SIGKILL: it is importing
                zygote.error = (
                    f"the handlers did not import within {tunables.CHILD_START_TIMEOUT:.0f}s "
                    "(a hanging import?)"
                )
                zygote.state = State.FAILED
                if zygote.status is None:
                    self.leaving[zygote.pid] = zygote

    def _lost_current(self) -> None:
        """The zygote children fork from died (OOM?): start another from the same spec."""
        lost = self.current
        if lost is None:
            return
        self.current = None
        status = lost.status
        self._retire(lost)
        how = _describe(status) if status is not None else "stopped answering"
        self.events.append(Event(LOST, error=f"the zygote (pid {lost.pid}) {how}"))
        if self.replacement is None and self.spec is not None:
            self.replacement = self._launch(self.spec)

    def _healthy(self) -> None:
        self.degraded = None
        self.retry_at = None
        self.retry_delay = tunables.ZYGOTE_RETRY_FIRST
