"""Serving the children while the settle statement is in flight.

The settle (``settle.py``) is the supervisor's one round trip per loop turn. While
PostgreSQL runs it (0.2 ms of server CPU for an outcome, 4 ms for 128 outcomes and a claim
of 128; more on a busy server) a blocking driver call would leave every child that finishes
meanwhile idle, though the supervisor holds jobs for them (measured at the defaults: the
supervisor waited on the settle 60-67% of its wall time, a child waited for work 27% of
its own).

So the settle is sent through psycopg2's wait callback (its "green" mode: libpq sends the
statement and reads the answer without blocking, and the callback waits for the socket).
``ServeWhileWaiting`` waits for the database's socket *and* the children's pipes; when a
child writes, it reads the child's outcomes into the job book and hands out jobs already
in hand (``serve``). What needs the database (claims, writes, registering a child's tasks)
waits for the next loop turn: the connection is busy. Outcomes read meanwhile go out with
the next settle; ``JobBook.take_outcomes`` keeps them apart from those in flight.

The callback is installed around the one statement only (``serving``), so no other
connection of the process (the children's are in other processes) is put in green mode.

Measured (perf/results/analysis.md, "Session 6"): 3-8% more jobs/s for handlers that wait
(2 ms sleeps, 4 children); nothing measurable for no-op jobs or many daemons on 2 cores
shared with PostgreSQL, where a child idle during the round trip gives its core to the
statement it waits for. The round trip it hides grows with a database on another host.
"""

from __future__ import annotations

import contextlib
import select
from collections.abc import Callable, Iterator, Mapping

import psycopg2.extensions


class ServeWhileWaiting:
    """A psycopg2 wait callback that also serves the children.

    ``watched()``: the descriptors to watch besides the database's, each with what to call
    when it is readable (a child's pipe: read what it wrote). ``serve()``: act on what was
    read (outcomes into the book, jobs in hand to idle children). An exception from either
    would make psycopg2 abandon the statement (and the connection): it is kept and raised
    once the statement is done (``serving``).
    """

    def __init__(
        self, watched: Callable[[], Mapping[int, Callable[[], None]]], serve: Callable[[], None]
    ) -> None:
        self.watched = watched
        self.serve = serve
        self.error: BaseException | None = None
        #: Times ``serve`` ran while a statement was in flight (for tests and profiles).
        self.served = 0

    @contextlib.contextmanager
    def serving(self) -> Iterator[None]:
        """Run the statements of the ``with`` block through this callback."""
        previous = psycopg2.extensions.get_wait_callback()
        psycopg2.extensions.set_wait_callback(self.wait)
        try:
            yield
        finally:
            psycopg2.extensions.set_wait_callback(previous)
            error, self.error = self.error, None
            if error is not None:
                raise error

    def wait(self, conn: psycopg2.extensions.connection) -> None:
        """Until the statement's answer is in: poll the connection, and between its
        readiness serve whoever else wrote. Database errors raise from ``conn.poll()``,
        as with psycopg2's own wait."""
        while True:
            state = conn.poll()
            if state == psycopg2.extensions.POLL_OK:
                return
            poller = select.poll()
            if state == psycopg2.extensions.POLL_READ:
                poller.register(conn.fileno(), select.POLLIN)
            elif state == psycopg2.extensions.POLL_WRITE:
                poller.register(conn.fileno(), select.POLLOUT)
            else:  # pragma: no cover - psycopg2 documents only these three
                raise psycopg2.OperationalError(f"bad state from poll: {state}")
            readers = self.readers()
            for fd in readers:
                poller.register(fd, select.POLLIN)
            fed = False
            for fd, _ in poller.poll():
                reader = readers.get(fd)
                if reader is not None:
                    fed = self.call(reader) or fed
            if fed and self.call(self.serve):
                self.served += 1

    def readers(self) -> Mapping[int, Callable[[], None]]:
        if self.error is not None:
            return {}  # something went wrong serving: only wait for the database
        try:
            return self.watched()
        except BaseException as exc:  # kept, raised after the statement (see class doc)
            self.error = exc
            return {}

    def call(self, what: Callable[[], None]) -> bool:
        if self.error is not None:
            return False
        try:
            what()
        except BaseException as exc:  # kept, raised after the statement (see class doc)
            self.error = exc
            return False
        return True
