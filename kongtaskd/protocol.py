"""The messages that travel between the supervisor and its children, and their framing.

Each child has one ``AF_UNIX`` stream socket pair with the supervisor. A frame is::

    length: uint32 big-endian (of what follows) | kind: 1 byte | body

Bodies are binary for the hot messages (a job id, a job outcome) and JSON for the rare
ones (the child's hello, a fatal start-up error). The supervisor sends job *ids*; the
child reads the row itself, except for a job handed out within ``INLINE_ROW_MAX_AGE`` of the
claim that read its row (``RUN_ROWS``): then a small row travels with its id, as the text
the statement made of it (the supervisor never decodes it), and the child skips its load.

Supervisor -> child
    ``RUN``      body ``int64 job_id`` * n                   run these jobs, in this order
    ``RUN_ROWS`` (``int64 job_id, uint32 size, row``) * n    the same, each with its row
                 (UTF-8: task identifier, NUL, the JSON array of ``sql/settle.sql``),
                 size ``NO_ROW``: load it yourself;
                 received as a ``RUN`` whose ``rows`` are set
    ``STOP``     empty                                      exit when idle (recycle, drain)
    ``CANCEL``   ``int64 job_id, float64 grace`` + UTF-8     this job was cancelled (text: the
                 message); followed by SIGUSR1, since a child running a handler is not
                 reading its pipe: its signal handler takes the CANCELs out (``take``)

Child -> supervisor
    ``READY``    JSON ``{"pid", "tasks": [identifiers]}``   imports done, connected
    ``FATAL``    JSON ``{"error", "kind"}``                 cannot start; exits next
    ``DONE``     ``int64 job_id, float64 seconds``          the handler returned
    ``FAILED``   ``int64 job_id, float64 seconds`` + UTF-8  the handler raised; text = error
    ``SKIPPED``  ``int64 job_id`` + UTF-8 reason            the row was gone or not ours
    ``BYE``      UTF-8 reason                               exiting by itself (recycling)
    ``RETURNED`` ``int64 job_id`` * n                        these never started (stop, no db)
"""

from __future__ import annotations

import enum
import json
import select
import socket
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

_HEADER = struct.Struct(">IB")  # frame length (kind + body), kind
_ID = struct.Struct(">q")
_OUTCOME = struct.Struct(">qd")
_ID_ROW = struct.Struct(">qI")
#: RUN_ROWS: the size of a job that travels without its row.
NO_ROW = 0xFFFFFFFF
_READ_SIZE = 65536


class Kind(enum.IntEnum):
    RUN = 1
    STOP = 2
    CANCEL = 3
    RUN_ROWS = 4
    READY = 10
    FATAL = 11
    DONE = 12
    FAILED = 13
    SKIPPED = 14
    BYE = 15
    RETURNED = 16


@dataclass(frozen=True, slots=True)
class Message:
    kind: Kind
    job_id: int = 0
    #: RUN and RETURNED carry several ids; ``job_id`` is then the first.
    job_ids: tuple[int, ...] = ()
    #: RUN: the row of each job in ``job_ids`` that travelled with it (None: load it); empty
    #: when none did.
    rows: tuple[bytes | None, ...] = ()
    seconds: float = 0.0
    text: str = ""
    data: Any = None


def _frame(kind: Kind, body: bytes) -> bytes:
    return _HEADER.pack(len(body) + 1, kind) + body


def encode_run(*job_ids: int) -> bytes:
    return _frame(Kind.RUN, struct.pack(f">{len(job_ids)}q", *job_ids))


def encode_run_rows(jobs: list[tuple[int, bytes | None]]) -> bytes:
    """RUN with rows: (job id, its row or None) in order; a plain RUN when no row travels."""
    if all(row is None for _, row in jobs):
        return encode_run(*(job_id for job_id, _ in jobs))
    parts = []
    for job_id, row in jobs:
        if row is None:
            parts.append(_ID_ROW.pack(job_id, NO_ROW))
        else:
            parts.append(_ID_ROW.pack(job_id, len(row)))
            parts.append(row)
    return _frame(Kind.RUN_ROWS, b"".join(parts))


def encode_returned(job_ids: list[int]) -> bytes:
    return _frame(Kind.RETURNED, struct.pack(f">{len(job_ids)}q", *job_ids))


def encode_stop() -> bytes:
    return _frame(Kind.STOP, b"")


def encode_cancel(job_id: int, grace: float, message: str) -> bytes:
    return _frame(Kind.CANCEL, _OUTCOME.pack(job_id, grace) + message.encode("utf-8", "replace"))


def encode_ready(pid: int, tasks: list[str]) -> bytes:
    return _frame(Kind.READY, json.dumps({"pid": pid, "tasks": tasks}).encode())


#: Kinds of FATAL: a handler that cannot be imported will never start (stop the daemon);
#: a database that cannot be reached may come back (keep respawning, with back-off).
FATAL_IMPORT = "import"
FATAL_DATABASE = "database"


def encode_fatal(error: str, kind: str = FATAL_IMPORT) -> bytes:
    return _frame(Kind.FATAL, json.dumps({"error": error, "kind": kind}).encode())


def encode_done(job_id: int, seconds: float) -> bytes:
    return _frame(Kind.DONE, _OUTCOME.pack(job_id, seconds))


def encode_failed(job_id: int, seconds: float, error: str) -> bytes:
    return _frame(Kind.FAILED, _OUTCOME.pack(job_id, seconds) + error.encode("utf-8", "replace"))


def encode_skipped(job_id: int, reason: str) -> bytes:
    return _frame(Kind.SKIPPED, _ID.pack(job_id) + reason.encode("utf-8", "replace"))


def encode_bye(reason: str) -> bytes:
    return _frame(Kind.BYE, reason.encode("utf-8", "replace"))


def _decode_run_rows(body: bytes) -> Message:
    ids: list[int] = []
    rows: list[bytes | None] = []
    offset = 0
    while offset < len(body):
        job_id, size = _ID_ROW.unpack_from(body, offset)
        offset += _ID_ROW.size
        ids.append(job_id)
        if size == NO_ROW:
            rows.append(None)
        else:
            if offset + size > len(body):
                raise ProtocolError(f"RUN_ROWS: the row of job {job_id} runs past the frame")
            rows.append(body[offset : offset + size])
            offset += size
    return Message(Kind.RUN, job_id=ids[0] if ids else 0, job_ids=tuple(ids), rows=tuple(rows))


def _decode(kind: Kind, body: bytes) -> Message:
    if kind is Kind.RUN_ROWS:
        return _decode_run_rows(body)
    if kind in (Kind.RUN, Kind.RETURNED):
        ids = struct.unpack(f">{len(body) // _ID.size}q", body)
        return Message(kind, job_id=ids[0] if ids else 0, job_ids=ids)
    if kind is Kind.DONE:
        job_id, seconds = _OUTCOME.unpack(body)
        return Message(kind, job_id=job_id, seconds=seconds)
    if kind in (Kind.FAILED, Kind.CANCEL):  # CANCEL: ``seconds`` is the grace
        job_id, seconds = _OUTCOME.unpack_from(body)
        text = body[_OUTCOME.size :].decode("utf-8", "replace")
        return Message(kind, job_id=job_id, seconds=seconds, text=text)
    if kind is Kind.SKIPPED:
        (job_id,) = _ID.unpack_from(body)
        return Message(kind, job_id=job_id, text=body[_ID.size :].decode("utf-8", "replace"))
    if kind is Kind.BYE:
        return Message(kind, text=body.decode("utf-8", "replace"))
    if kind in (Kind.READY, Kind.FATAL):
        return Message(kind, data=json.loads(body))
    return Message(kind)


class ProtocolError(Exception):
    """The peer sent bytes that are not a frame we know."""


class Channel:
    """One end of a supervisor/child socket: buffered frame reading, whole-frame writes.

    The supervisor's ends are non-blocking and read when the selector says so; a child's end
    is blocking (it has nothing else to do while it waits for work).
    """

    __slots__ = ("_buffer", "_poller", "closed", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._buffer = bytearray()
        self._poller: select.poll | None = None  # wait()'s, made on first use
        self.closed = False

    def fileno(self) -> int:
        return self.sock.fileno()

    def send(self, frame: bytes) -> None:
        self.sock.sendall(frame)

    def feed(self) -> bool:
        """Read what is available into the buffer. Returns False at end of stream."""
        try:
            chunk = self.sock.recv(_READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return True
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            self.closed = True
            return False
        self._buffer += chunk
        return True

    def peek(self) -> Message | None:
        """Without blocking: the next complete message if one has arrived, left in place."""
        try:
            chunk = self.sock.recv(_READ_SIZE, socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            chunk = None
        except OSError:
            chunk = b""
        if chunk:
            self._buffer += chunk
        elif chunk == b"":
            self.closed = True
        if len(self._buffer) < _HEADER.size:
            return None
        length, kind_byte = _HEADER.unpack_from(self._buffer, 0)
        if len(self._buffer) < 4 + length:
            return None
        return _decode(Kind(kind_byte), bytes(self._buffer[_HEADER.size : 4 + length]))

    def drain(self) -> None:
        """Read everything already in the socket (without blocking), e.g. from a dead peer."""
        was_blocking = self.sock.getblocking()
        self.sock.setblocking(False)
        try:
            while not self.closed:
                try:
                    chunk = self.sock.recv(_READ_SIZE)
                except (BlockingIOError, InterruptedError):
                    break
                except OSError:
                    chunk = b""
                if not chunk:
                    self.closed = True
                    break
                self._buffer += chunk
        finally:
            if not self.closed:
                self.sock.setblocking(was_blocking)

    def next_message(self) -> Message | None:
        """Take one complete frame off the buffer, or None if no whole frame is there yet."""
        buf = self._buffer
        if len(buf) < _HEADER.size:
            return None
        length, kind_byte = _HEADER.unpack_from(buf, 0)
        end = 4 + length
        if len(buf) < end:
            return None
        try:
            kind = Kind(kind_byte)
        except ValueError as exc:
            raise ProtocolError(f"unknown message kind {kind_byte}") from exc
        body = bytes(buf[_HEADER.size : end])
        del buf[:end]
        return _decode(kind, body)

    def messages(self) -> Iterator[Message]:
        """Yield every complete frame in the buffer, leaving a partial one for later."""
        while (message := self.next_message()) is not None:
            yield message

    def wait(self) -> None:
        """Block until :meth:`receive` has something to start on: a whole frame already
        buffered, or bytes (or end of stream) on the socket. The child waits here with
        signals deliverable, then receives with SIGTERM held (see ``child.py``).
        """
        buf = self._buffer
        if len(buf) >= _HEADER.size and len(buf) >= 4 + _HEADER.unpack_from(buf, 0)[0]:
            return
        if self.closed:
            return
        if self._poller is None:
            self._poller = select.poll()
            self._poller.register(self.sock.fileno(), select.POLLIN)
        self._poller.poll()

    def unread(self) -> list[Message]:
        """Every whole message that has arrived and not been received yet, left in place
        (what a dead peer sent last)."""
        self.drain()
        found = []
        offset = 0
        buf = self._buffer
        while len(buf) - offset >= _HEADER.size:
            length, kind_byte = _HEADER.unpack_from(buf, offset)
            end = offset + 4 + length
            if len(buf) < end:
                break
            try:
                kind = Kind(kind_byte)
            except ValueError:
                break
            found.append(_decode(kind, bytes(buf[offset + _HEADER.size : end])))
            offset = end
        return found

    def take(self, kind: Kind) -> list[Message]:
        """Without blocking: read what has arrived, and take every whole message of ``kind``
        out of the buffer, leaving the others (in order) for ``receive``. A child's SIGUSR1
        handler uses it for CANCEL; the child holds SIGUSR1 back while it receives, so the
        two never work on the buffer at once."""
        self.drain()
        taken: list[Message] = []
        kept = bytearray()
        offset = 0
        buf = self._buffer
        while len(buf) - offset >= _HEADER.size:
            length, kind_byte = _HEADER.unpack_from(buf, offset)
            end = offset + 4 + length
            if len(buf) < end:
                break
            if kind_byte == kind:
                taken.append(_decode(kind, bytes(buf[offset + _HEADER.size : end])))
            else:
                kept += buf[offset:end]
            offset = end
        if taken:
            kept += buf[offset:]
            self._buffer = kept  # one store: whole frames only, never half of one
        return taken

    def receive(self) -> Message | None:
        """Blocking read of the next message; None at end of stream (the peer is gone)."""
        while True:
            message = self.next_message()
            if message is not None:
                return message
            if not self.feed():
                return None

    def close(self) -> None:
        self.closed = True
        self.sock.close()


def channel_pair() -> tuple[Channel, Channel]:
    """A connected pair: (supervisor's end, child's end)."""
    parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    return Channel(parent), Channel(child)
