"""A child's stdout and stderr, caught at the file descriptor, turned into log records.

A handler's ``print()``, its ``sys.stderr`` writes, and whatever an extension or a
subprocess writes to fd 1 or 2 would otherwise go straight to the daemon's stderr: raw
lines that break ``log.format: json`` and carry no job id. In a child, fds 1 and 2 are the
write ends of two pipes; a reader thread drains them continuously (a handler that prints a
lot never blocks on a full pipe) and logs each line on the logger ``kongtaskd.stdout``
(INFO) or ``kongtaskd.stderr`` (WARNING), with the ``job_id`` and ``task`` of the job that
was running when it was written and ``stream`` naming the pipe.

"The job that was running" is exact, not a guess from timing: at each job boundary the
child calls :meth:`OutputCapture.set_job`, which flushes Python's own buffers and reads the
pipes dry (under the lock the reader holds while it handles a chunk) before the job changes,
and ends a job's last unterminated line as a line of that job. :meth:`OutputCapture.close`
does the same before the child's ``os._exit``, which would otherwise drop it.

The log handler itself writes to stderr: before fd 2 is redirected, its stream is replaced
by a copy of the original fd, or every log line would come back through the pipe forever.

Started after the fork, in the child (a thread does not survive a fork).
"""

from __future__ import annotations

import logging
import os
import select
import sys
import threading
from typing import IO, Any

from kongtaskd import logs, tunables

_STREAMS = (("stdout", 1, logging.INFO), ("stderr", 2, logging.WARNING))


class _Pipe:
    """One captured fd: the read end of its pipe and the unterminated rest of its last read."""

    __slots__ = ("fd", "level", "logger", "name", "partial", "read_fd")

    def __init__(self, name: str, fd: int, level: int, read_fd: int) -> None:
        self.name = name
        self.fd = fd
        self.level = level
        self.read_fd = read_fd
        self.logger = logging.getLogger(f"kongtaskd.{name}")
        self.partial = b""


class OutputCapture:
    def __init__(self, pipes: list[_Pipe]) -> None:
        self.pipes = pipes
        self.by_fd = {pipe.read_fd: pipe for pipe in pipes}
        #: Held by whoever reads a pipe and logs what it read: the reader thread, or the main
        #: thread at a job boundary. No byte is ever out of the pipe but not yet logged
        #: while the lock is free. Reentrant: an exit from a signal handler may interrupt
        #: the main thread inside a boundary.
        self.lock = threading.RLock()
        self.job: tuple[int, str] | None = None
        #: The last boundary ended a job and read the pipes dry (see ``set_job``).
        self.settled = False
        # Two poll objects: CPython refuses concurrent poll() calls on one.
        self.poller = select.poll()  # the reader thread's
        self.sync_poller = select.poll()  # the main thread's
        for pipe in pipes:
            self.poller.register(pipe.read_fd, select.POLLIN)
            self.sync_poller.register(pipe.read_fd, select.POLLIN)
        #: Where captured lines go: the root handlers of the moment the capture started.
        #: Not through the logger hierarchy: a handler the application adds later that
        #: writes to sys.stderr would feed every captured line back into the pipe, forever.
        self.handlers = list(logging.getLogger().handlers)
        self.thread = threading.Thread(target=self._run, name="kongtaskd-output", daemon=True)

    @classmethod
    def start(cls) -> OutputCapture:
        """Redirect fds 1 and 2 of this process into the log (see the module docstring)."""
        _keep_log_handlers_on_the_original_streams()
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError, AttributeError):
                pass
        pipes = []
        for name, fd, level in _STREAMS:
            read_fd, write_fd = os.pipe()
            os.set_blocking(read_fd, False)
            os.set_inheritable(read_fd, False)
            os.dup2(write_fd, fd)  # the handler's writes block only while the reader is busy
            os.close(write_fd)
            pipes.append(_Pipe(name, fd, level, read_fd))
        # print() at every newline, not at 8 KiB: a long job's output shows while it runs.
        for stream in (sys.stdout, sys.stderr):
            reconfigure = getattr(stream, "reconfigure", None)
            if reconfigure is not None:
                try:
                    reconfigure(line_buffering=True)
                except (OSError, ValueError):
                    pass
        capture = cls(pipes)
        capture.thread.start()
        return capture

    # -- the main thread ---------------------------------------------------------------------
    def set_job(self, job: tuple[int, str] | None) -> None:
        """From now on lines belong to ``job`` (None: outside any job). What was written
        before is logged first, as the previous job's, its last partial line included.

        One system call per job, not two: a job's start right after a job's end (only
        kongtaskd's own code ran in between, which writes nothing to fds 1 and 2) needs no
        read of the pipes, the end already read them dry. What a process left behind by an
        earlier job writes in that gap is logged as no job's if the reader thread reads it
        in the gap, else as the starting job's: it was no job's code anyway.
        """
        if job is not None and self.job is None and self.settled:
            self.settled = False
            self.job = job
            return
        self.sync(end_lines=True)
        self.job = job
        self.settled = job is None

    def sync(self, end_lines: bool = False) -> None:
        """Log everything written so far; ``end_lines``: unterminated lines too."""
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError, AttributeError):
                pass
        # The lock is almost always free: try without a timeout first (half the cost).
        if not self.lock.acquire(False) and not self.lock.acquire(
            timeout=tunables.OUTPUT_SYNC_TIMEOUT
        ):
            return  # the reader is stuck writing the log: losing order beats hanging a job
        try:
            if any(pipe.partial for pipe in self.pipes) or self.sync_poller.poll(0):
                for pipe in self.pipes:
                    self._read(pipe)
                    if end_lines and pipe.partial:
                        self._emit(pipe, pipe.partial)
                        pipe.partial = b""
        finally:
            self.lock.release()

    def close(self) -> None:
        """Before ``os._exit``: log what is left, the last partial lines included."""
        self.sync(end_lines=True)

    # -- the reader thread -------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            try:
                ready = self.poller.poll()
            except OSError:
                return
            with self.lock:
                for fd, _events in ready:
                    pipe = self.by_fd.get(fd)
                    if pipe is not None and not self._read(pipe):
                        self.poller.unregister(fd)
                        del self.by_fd[fd]
            # The log is buffered in a child (logs.defer_flushes): output read here, while a
            # job runs or after it, goes out now, not at the next job's end.
            logs.flush()
            if not self.by_fd:
                return

    def _read(self, pipe: _Pipe) -> bool:
        """Read the pipe dry, logging whole lines. False at end of file."""
        while True:
            try:
                chunk = os.read(pipe.read_fd, tunables.OUTPUT_READ_BYTES)
            except BlockingIOError:
                return True
            except OSError:
                return False
            if not chunk:
                return False
            data = pipe.partial + chunk
            lines = data.split(b"\n")
            pipe.partial = lines.pop()
            for line in lines:
                self._emit(pipe, line)
            while len(pipe.partial) >= tunables.OUTPUT_LINE_MAX_BYTES:  # no newline in sight
                self._emit(pipe, pipe.partial[: tunables.OUTPUT_LINE_MAX_BYTES])
                pipe.partial = pipe.partial[tunables.OUTPUT_LINE_MAX_BYTES :]

    def _emit(self, pipe: _Pipe, line: bytes) -> None:
        if not pipe.logger.isEnabledFor(pipe.level):
            return
        job = self.job
        text = line.rstrip(b"\r").decode("utf-8", "backslashreplace")
        extra: dict[str, Any] = {
            "job_id": job[0] if job else None,
            "task": job[1] if job else None,
            "stream": pipe.name,
        }
        record = pipe.logger.makeRecord(
            pipe.logger.name, pipe.level, "(captured)", 0, "%s", (text,), None, extra=extra
        )
        for handler in self.handlers:
            if record.levelno >= handler.level:
                handler.handle(record)


def _keep_log_handlers_on_the_original_streams() -> None:
    """Point every root log handler that writes to fd 1 or 2 at a copy of that fd, so the
    log keeps reaching the real stdout/stderr once they are redirected into the pipes."""
    copies: dict[int, IO[str]] = {}
    for handler in logging.getLogger().handlers:
        stream = getattr(handler, "stream", None)
        if not isinstance(handler, logging.StreamHandler) or stream is None:
            continue
        try:
            fd = stream.fileno()
        except (OSError, ValueError, AttributeError):
            continue  # not a file (a StringIO in tests): nothing to protect
        if fd not in (1, 2):
            continue
        if fd not in copies:
            stream.flush()
            # Block-buffered: kongtaskd's handler flushes at each job's end and before exit
            # (logs.defer_flushes), a stdlib StreamHandler after every record anyway.
            copies[fd] = os.fdopen(
                os.dup(fd),
                "w",
                encoding=getattr(stream, "encoding", None) or "utf-8",
                errors="backslashreplace",
                closefd=True,
            )
        handler.setStream(copies[fd])
