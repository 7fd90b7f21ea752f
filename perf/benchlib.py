"""What every scenario needs: throwaway databases, bulk queueing, both daemons, clocks, memory.

The two systems under test are driven the same way, as a user would run them:

* kongtaskd: ``python -m kongtaskd -c CONFIG [--once]`` from this checkout, readiness
  from its ``READY=1`` sd_notify datagram on a socket the driver binds;
* graphile-worker 0.18.0 from npm: ``node .../dist/cli.js -C CONFIG [--once] -c URL``
  in ``perf/graphile`` (its ``tasks/`` folder), readiness from the ``pool:listen:success``
  event (the moment it logs "Worker connected and looking for jobs").

Each system runs as its users run it (no ``log:`` section for kongtaskd, graphile-worker's
success lines on) and tuned (kongtaskd ``log: {level: warning}``, graphile-worker
``NO_LOG_SUCCESS=1``): a log line per job is a real cost, and the default is what most see.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import math
import os
import select
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg2
import yaml
from psycopg2 import sql
from psycopg2.extensions import connection as Connection
from psycopg2.extensions import make_dsn, parse_dsn

REPO = Path(__file__).resolve().parents[1]
PERF = REPO / "perf"
SQL_DIR = PERF / "sql"
GRAPHILE_DIR = PERF / "graphile"
INTEROP = REPO / "tests" / "interop"
GRAPHILE_PACKAGE = INTEROP / "node_modules" / "graphile-worker"
GRAPHILE_CLI = GRAPHILE_PACKAGE / "dist" / "cli.js"

#: kongtaskd's perf handlers, by task identifier (module ``perf/perf_handlers.py``).
KONGTASKD_TASKS = {name: f"perf_handlers:{name}" for name in ("noop", "latency", "burn", "record")}


class BenchError(Exception):
    """A run went wrong (a daemon failed, jobs were left): the message says which and why."""


# ------------------------------------------------------------------------------------------
# SQL and databases
# ------------------------------------------------------------------------------------------
def statement(name: str) -> str:
    return (SQL_DIR / f"{name}.sql").read_text()


def connect(dsn: str, *, autocommit: bool = True) -> Connection:
    conn = psycopg2.connect(dsn)
    conn.autocommit = autocommit
    return conn


def query(dsn: str, name: str, params: dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
    conn = connect(dsn)
    try:
        with conn.cursor() as cur:
            cur.execute(statement(name), params)
            return cur.fetchall() if cur.description else []
    finally:
        conn.close()


@dataclass
class Server:
    """The PostgreSQL server under test; every run gets a database of its own on it."""

    admin_dsn: str
    created: list[str] = field(default_factory=list)

    def create_database(self) -> str:
        name = f"kt_perf_{uuid.uuid4().hex[:12]}"
        conn = connect(self.admin_dsn)
        try:
            with conn.cursor() as cur:
                cur.execute(sql.SQL("create database {}").format(sql.Identifier(name)))
        finally:
            conn.close()
        self.created.append(name)
        params = parse_dsn(self.admin_dsn)
        params["dbname"] = name
        return make_dsn(**params)

    def drop_database(self, dsn: str) -> None:
        name = parse_dsn(dsn)["dbname"]
        conn = connect(self.admin_dsn)
        try:
            with conn.cursor() as cur:
                cur.execute(
                    sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name))
                )
        finally:
            conn.close()
        if name in self.created:
            self.created.remove(name)

    @contextlib.contextmanager
    def database(self, schema_by: str) -> Iterator[str]:
        """A fresh database with the queue schema installed by ``schema_by``'s own migrator."""
        dsn = self.create_database()
        try:
            if schema_by == "graphile-worker":
                graphile_schema_only(dsn)
            else:
                kongtaskd_migrate(dsn)
            yield dsn
        finally:
            self.drop_database(dsn)

    def settings(self) -> dict[str, str]:
        rows = query(self.admin_dsn, "server_settings")
        return {name: f"{value}{unit_suffix(unit)}" for name, value, unit in rows}


def unit_suffix(unit: str | None) -> str:
    if not unit:
        return ""
    return f" x {unit}" if unit[0].isdigit() else f" {unit}"


def kongtaskd_migrate(dsn: str) -> None:
    from kongtaskd.schema import migrate

    conn = connect(dsn)
    try:
        migrate(conn)
    finally:
        conn.close()


def graphile_schema_only(dsn: str) -> None:
    done = subprocess.run(
        ["node", str(GRAPHILE_CLI), "--schema-only", "-c", node_url(dsn)],
        capture_output=True,
        text=True,
        env=graphile_env(),
        timeout=120,
        check=False,
    )
    if done.returncode != 0:
        raise BenchError(f"graphile-worker --schema-only exited {done.returncode}: {done.stderr}")


def queue(
    dsn: str,
    task: str,
    count: int,
    *,
    run_at: dt.datetime | None = None,
    priority: int | None = None,
    payload: dict[str, Any] | None = None,
    chunk: int = 100_000,
    queues: int | None = None,
    queue_prefix: str = "q",
) -> float:
    """Queue ``count`` jobs with one ``add_jobs`` call per ``chunk``; returns the seconds.

    ``queues``: None = no named queue; N = the jobs spread round-robin over the N queues
    ``<queue_prefix>0`` .. ``<queue_prefix>N-1`` (N = count: a queue per job, the
    per-entity idiom).
    """
    conn = connect(dsn)
    started = time.perf_counter()
    try:
        with conn.cursor() as cur:
            for start in range(0, count, chunk):
                cur.execute(
                    statement("queue_jobs"),
                    {
                        "task": task,
                        "start": start,
                        "count": min(chunk, count - start),
                        "run_at": run_at,
                        "priority": priority,
                        "payload": json.dumps(payload) if payload is not None else None,
                        "queues": queues,
                        "queue_prefix": queue_prefix,
                    },
                )
    finally:
        conn.close()
    return time.perf_counter() - started


def add_idle_queues(dsn: str, count: int) -> float:
    """``count`` queue rows with no job (done, not yet cleaned up), straight into
    ``_private_job_queues`` as graphile-worker stores them; returns the seconds."""
    conn = connect(dsn)
    started = time.perf_counter()
    try:
        with conn.cursor() as cur:
            cur.execute(statement("idle_queues"), {"count": count})
    finally:
        conn.close()
    return time.perf_counter() - started


def vacuum(dsn: str) -> None:
    conn = connect(dsn)
    try:
        with conn.cursor() as cur:
            cur.execute(statement("vacuum"))
    finally:
        conn.close()


def jobs_left(dsn: str, task: str | None = None) -> int:
    if task is None:
        return int(query(dsn, "count_jobs")[0][0])
    return int(query(dsn, "count_ready", {"task": task})[0][0])


def wait_until(
    condition: Callable[[], bool], timeout: float, what: str, interval: float = 0.05
) -> None:
    """Poll ``condition`` until it holds; BenchError naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


def wait_drained(dsn: str, task: str, what: str, stall: float = 60.0) -> None:
    """Wait until no ready job of ``task`` is left; BenchError if none ran for ``stall`` s."""
    left = jobs_left(dsn, task)
    progress_at = time.monotonic()
    while left:
        time.sleep(0.2)
        now_left = jobs_left(dsn, task)
        if now_left < left:
            progress_at = time.monotonic()
        elif time.monotonic() - progress_at > stall:
            raise BenchError(f"{what}: no job finished for {stall:g}s ({now_left} left)")
        left = now_left


def node_url(dsn: str) -> str:
    """A postgres:// URL for node-postgres from a libpq key=value DSN."""
    params = parse_dsn(dsn)
    user = quote(params.get("user", ""), safe="")
    password = params.get("password")
    auth = f"{user}:{quote(password, safe='')}@" if password else (f"{user}@" if user else "")
    host = params.get("host", "localhost")
    port = params.get("port", "5432")
    return f"postgres://{auth}{host}:{port}/{quote(params['dbname'], safe='')}"


def graphile_env(log_success: bool = False) -> dict[str, str]:
    """graphile-worker's environment; ``log_success=False`` sets ``NO_LOG_SUCCESS=1``."""
    env = dict(os.environ)
    for name in (
        "DATABASE_URL",
        "GRAPHILE_WORKER_SCHEMA",
        "NODE_OPTIONS",
        "NOTIFY_SOCKET",
        "NO_LOG_SUCCESS",
    ):
        env.pop(name, None)
    if not log_success:
        env["NO_LOG_SUCCESS"] = "1"
    return env


#: Where the daemons' bytecode is cached during a suite run (set by run.py).
PYCACHE: Path | None = None


def kongtaskd_env() -> dict[str, str]:
    env = dict(os.environ)
    for name in ("DATABASE_URL", "NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
        env.pop(name, None)
    # This checkout's kongtaskd, whatever else is installed.
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    # Cached bytecode, as every installed package has: with PYTHONDONTWRITEBYTECODE=1 (set
    # on some CI machines) each start would compile the whole package from source again
    # (~40 ms here). The cache lives in the run's temporary directory, not in the checkout.
    if PYCACHE is not None:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(PYCACHE)
    return env


def warm_up(server: Server, workdir: Path) -> None:
    """One unmeasured ``--once`` and start/stop of kongtaskd: fills the bytecode cache
    (``PYCACHE`` mirrors the standard library and dependencies too), so no measured start
    pays for compiling."""
    system = Kongtaskd(workdir, 1)
    with server.database(system.schema_by) as dsn:
        system.run_once(dsn)
        with system.start(dsn) as running:
            running.wait_ready()
            running.stop()


# ------------------------------------------------------------------------------------------
# Processes
# ------------------------------------------------------------------------------------------
@dataclass
class OnceResult:
    """A ``--once`` run: wall seconds from exec to exit, CPU seconds of the process tree.

    ``capped``: the run was still going at its cap and was killed there (``seconds`` is
    then the cap: the caller counts the jobs done for a rate).
    """

    seconds: float
    cpu_seconds: float
    capped: bool = False


def pin(cpus: set[int] | None) -> Callable[[], None] | None:
    """preexec_fn that pins the daemon (and so its children) to ``cpus``."""
    if cpus is None:
        return None
    return lambda: os.sched_setaffinity(0, cpus)


def run_to_exit(
    argv: Sequence[str],
    *,
    env: dict[str, str],
    cwd: Path,
    timeout: float,
    cpus: set[int] | None,
    cap: float | None = None,
) -> OnceResult:
    """Run a process to its end; exec-to-exit wall time and its tree's CPU time (wait4).

    ``cap``: kill the process group after that many seconds and return a capped result
    instead of failing (a system too slow to finish in the suite's budget still gets a
    rate: jobs done by then over the cap). ``timeout`` without a cap is a failure.
    """
    capped = threading.Event()

    def on_timer(pid: int) -> None:
        if cap is not None:
            capped.set()
        _kill_group(pid)

    with tempfile.TemporaryFile() as output:
        started = time.perf_counter()
        proc = subprocess.Popen(
            list(argv),
            stdout=output,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=cwd,
            preexec_fn=pin(cpus),
            start_new_session=True,
        )
        killer = threading.Timer(timeout if cap is None else cap, on_timer, (proc.pid,))
        killer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            killer.cancel()
        elapsed = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        if cap is not None and capped.is_set():
            # Children of the group outlive a killed leader for a moment; gone before the
            # caller counts jobs (a killed daemon's locked jobs stay counted as left).
            _kill_group(proc.pid)
            return OnceResult(min(elapsed, cap), usage.ru_utime + usage.ru_stime, capped=True)
        if proc.returncode != 0:
            output.seek(0)
            text = output.read().decode(errors="replace")[-3000:]
            raise BenchError(f"{argv[0]} {' '.join(argv[1:3])} exited {proc.returncode}:\n{text}")
    return OnceResult(elapsed, usage.ru_utime + usage.ru_stime)


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


class Running:
    """A continuously running daemon started by the driver."""

    name = ""

    def __init__(self, proc: subprocess.Popen[bytes], started: float, log_path: Path) -> None:
        self.proc = proc
        self.started = started
        self.log_path = log_path
        self.ready_at: float | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_ready(self, timeout: float = 60.0) -> float:
        """Block until the daemon says it is ready; seconds from exec to that moment."""
        raise NotImplementedError

    def processes(self) -> dict[str, int]:
        """Role -> pid of every process of this daemon (supervisor and children)."""
        return {"main": self.pid}

    def stop(self, timeout: float = 60.0) -> float:
        """SIGTERM; seconds until the process exited. Raises if it exits non-zero."""
        started = time.perf_counter()
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.proc.pid, signal.SIGTERM)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise BenchError(f"{self.name} still running {timeout:g}s after SIGTERM") from None
        elapsed = time.perf_counter() - started
        # graphile-worker re-raises the signal after its graceful shutdown (exit by SIGTERM).
        if code not in (0, -signal.SIGTERM):
            raise BenchError(f"{self.name} exited {code} after SIGTERM:\n{self.log()[-3000:]}")
        return elapsed

    def kill(self) -> None:
        if self.proc.poll() is None:
            _kill_group(self.proc.pid)
            self.proc.wait(10)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def __enter__(self) -> Running:
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()


class RunningKongtaskd(Running):
    """kongtaskd with a notify socket that a thread reads for as long as the daemon runs.

    Read all the time, not only until READY: the daemon sends STATUS= updates every
    second, and a datagram socket nobody reads fills up until the sender blocks.
    """

    name = "kongtaskd"

    def __init__(self, argv: list[str], env: dict[str, str], workdir: Path, cpus: set[int] | None):
        self.notify_path = str(workdir / f"notify-{uuid.uuid4().hex[:8]}.sock")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.notify_path)
        self.ready = threading.Event()
        self.closing = False
        env = dict(env, NOTIFY_SOCKET=self.notify_path)
        log_path = workdir / f"kongtaskd-{uuid.uuid4().hex[:8]}.log"
        with open(log_path, "wb") as log_file:
            started = time.perf_counter()
            proc = subprocess.Popen(
                argv,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=workdir,
                preexec_fn=pin(cpus),
                start_new_session=True,
            )
        super().__init__(proc, started, log_path)
        self.reader = threading.Thread(target=self._read_notifications, daemon=True)
        self.reader.start()

    def _read_notifications(self) -> None:
        while not self.closing:
            readable, _, _ = select.select([self.sock], [], [], 0.2)
            if not readable:
                continue
            arrived = time.perf_counter()
            try:
                message = self.sock.recv(4096).decode(errors="replace")
            except OSError:
                return
            if "READY=1" in message.split("\n") and self.ready_at is None:
                self.ready_at = arrived
                self.ready.set()

    def wait_ready(self, timeout: float = 60.0) -> float:
        deadline = time.monotonic() + timeout
        while not self.ready.wait(0.2):
            if self.proc.poll() is not None:
                raise BenchError(f"kongtaskd exited {self.proc.returncode}:\n{self.log()}")
            if time.monotonic() > deadline:
                raise BenchError(f"kongtaskd sent no READY=1 within {timeout:g}s:\n{self.log()}")
        assert self.ready_at is not None
        return self.ready_at - self.started

    def processes(self) -> dict[str, int]:
        found = {"supervisor": self.pid}
        n = 0
        for pid in sorted(child_pids(self.pid)):
            # The zygote (the template children fork from) is the supervisor's child too:
            # named apart, so that "per child" means the processes that run jobs.
            if b"zygote" in _cmdline(pid):
                found["zygote"] = pid
                continue
            found[f"child {n}"] = pid
            n += 1
        return found

    def kill(self) -> None:
        super().kill()
        self.closing = True
        self.reader.join(5)
        self.sock.close()
        with contextlib.suppress(OSError):
            os.unlink(self.notify_path)


class RunningGraphile(Running):
    name = "graphile-worker"

    def __init__(self, argv: list[str], env: dict[str, str], workdir: Path, cpus: set[int] | None):
        log_path = workdir / f"graphile-{uuid.uuid4().hex[:8]}.log"
        self.log_file = open(log_path, "wb")  # noqa: SIM115 - closed in kill()
        started = time.perf_counter()
        proc = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=self.log_file,
            env=env,
            cwd=GRAPHILE_DIR,
            preexec_fn=pin(cpus),
            start_new_session=True,
        )
        super().__init__(proc, started, log_path)
        self.ready = threading.Event()
        self.reader = threading.Thread(target=self._read_stdout, daemon=True)
        self.reader.start()

    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith(b"PERF_READY") and self.ready_at is None:
                self.ready_at = time.perf_counter()
                self.ready.set()
            self.log_file.write(line)

    def wait_ready(self, timeout: float = 60.0) -> float:
        deadline = time.monotonic() + timeout
        while not self.ready.wait(0.2):
            if self.proc.poll() is not None:
                raise BenchError(f"graphile-worker exited {self.proc.returncode}:\n{self.log()}")
            if time.monotonic() > deadline:
                raise BenchError(f"graphile-worker not ready within {timeout:g}s:\n{self.log()}")
        assert self.ready_at is not None
        return self.ready_at - self.started

    def kill(self) -> None:
        super().kill()
        self.reader.join(5)
        self.log_file.close()


# ------------------------------------------------------------------------------------------
# The two systems
# ------------------------------------------------------------------------------------------
class System:
    """One daemon configuration under test (a row in the report)."""

    label = ""
    schema_by = ""

    def run_once(self, dsn: str, timeout: float = 900.0, cap: float | None = None) -> OnceResult:
        raise NotImplementedError

    def start(self, dsn: str) -> Running:
        raise NotImplementedError


@dataclass
class Kongtaskd(System):
    workdir: Path
    concurrency: int = 4
    cpus: set[int] | None = None
    #: None: no ``log:`` section at all (the daemon's default, as users run it).
    log_level: str | None = "warning"
    #: Suffix of the label, e.g. "daemon 2/4" when several run side by side.
    tag: str = ""
    schema_by = "kongtaskd"

    @property
    def label(self) -> str:  # type: ignore[override]
        children = f"{self.concurrency} {'child' if self.concurrency == 1 else 'children'}"
        logging_ = "default log" if self.log_level is None else f"log {self.log_level}"
        return f"kongtaskd, {children}, {logging_}" + (f", {self.tag}" if self.tag else "")

    def config(self, dsn: str) -> Path:
        path = self.workdir / f"kongtask-{uuid.uuid4().hex[:8]}.yaml"
        settings: dict[str, Any] = {
            "connection": dsn,
            "concurrency": self.concurrency,
            "python_path": [str(PERF)],
            "tasks": dict(KONGTASKD_TASKS),
        }
        if self.log_level is not None:
            settings["log"] = {"level": self.log_level}
        path.write_text(yaml.safe_dump(settings))
        return path

    def argv(self, dsn: str, *extra: str) -> list[str]:
        return [sys.executable, "-m", "kongtaskd", "-c", str(self.config(dsn)), *extra]

    def run_once(self, dsn: str, timeout: float = 900.0, cap: float | None = None) -> OnceResult:
        return run_to_exit(
            self.argv(dsn, "--once"),
            env=kongtaskd_env(),
            cwd=self.workdir,
            timeout=timeout,
            cpus=self.cpus,
            cap=cap,
        )

    def start(self, dsn: str) -> RunningKongtaskd:
        return RunningKongtaskd(self.argv(dsn), kongtaskd_env(), self.workdir, self.cpus)


@dataclass
class Graphile(System):
    workdir: Path
    #: "default" (--jobs 10) or "best" (local queue 50, batched completions).
    variant: str = "default"
    cpus: set[int] | None = None
    #: True: its default success line per job; False: ``NO_LOG_SUCCESS=1`` (tuned).
    log_success: bool = False
    schema_by = "graphile-worker"

    @property
    def label(self) -> str:  # type: ignore[override]
        logging_ = "default log" if self.log_success else "NO_LOG_SUCCESS"
        return f"graphile-worker 0.18.0, {self.variant}, {logging_}"

    def argv(self, dsn: str, *extra: str) -> list[str]:
        config = GRAPHILE_DIR / f"{self.variant}.config.mjs"
        return ["node", str(GRAPHILE_CLI), "-C", str(config), *extra, "-c", node_url(dsn)]

    def run_once(self, dsn: str, timeout: float = 900.0, cap: float | None = None) -> OnceResult:
        return run_to_exit(
            self.argv(dsn, "--once"),
            env=graphile_env(self.log_success),
            cwd=GRAPHILE_DIR,
            timeout=timeout,
            cpus=self.cpus,
            cap=cap,
        )

    def start(self, dsn: str) -> RunningGraphile:
        return RunningGraphile(
            self.argv(dsn), graphile_env(self.log_success), self.workdir, self.cpus
        )


# ------------------------------------------------------------------------------------------
# Latency
# ------------------------------------------------------------------------------------------
def measure_latency(
    dsn: str,
    workdir: Path,
    count: int,
    interval: float,
    warmup: int,
    *,
    options: Callable[[int], dict[str, Any]] | None = None,
    after_adding: Callable[[], None] | None = None,
    timeout: float = 120.0,
) -> list[float]:
    """Milliseconds from each ``add_job`` commit to its handler's first line.

    Jobs are added one by one with ``kongtaskd.add_job`` on one connection, each committed
    on its own, ``interval`` seconds apart (paced by absolute deadlines, so a slow commit
    does not shift the rest). The clock is read right after COMMIT returns. ``warmup``
    jobs go first and are not counted (first-use costs: imports, plan caches).
    ``options(i)``: extra ``add_job`` arguments of the i-th counted job (priority...);
    ``after_adding`` runs once the last job is committed, before waiting for the starts.
    """
    import kongtaskd

    out = workdir / f"latency-{uuid.uuid4().hex[:8]}.txt"
    out.touch()
    committed: dict[int, float] = {}
    conn = connect(dsn, autocommit=False)
    try:
        total = warmup + count
        next_at = time.monotonic()
        for i in range(total):
            delay = next_at - time.monotonic()
            if delay > 0:
                time.sleep(delay)  # pacing is the scenario: one job every `interval` seconds
            extra = options(i - warmup) if options is not None and i >= warmup else {}
            kongtaskd.add_job(conn, "latency", {"out": str(out), "i": i}, **extra)
            conn.commit()
            committed[i] = time.time()
            next_at += interval
    finally:
        conn.close()
    if after_adding is not None:
        after_adding()

    def all_started() -> bool:
        with open(out) as f:
            return sum(1 for _ in f) >= total

    wait_until(all_started, timeout, f"{total} latency jobs to start")
    started: dict[int, float] = {}
    for line in out.read_text().splitlines():
        ordinal, stamp = line.split()
        started[int(ordinal)] = float(stamp)
    out.unlink()
    return [(started[i] - committed[i]) * 1000 for i in range(warmup, total)]


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100): a value that was actually observed."""
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def latency_figures(samples: Sequence[float]) -> dict[str, float]:
    return {
        "p50": percentile(samples, 50),
        "p90": percentile(samples, 90),
        "p99": percentile(samples, 99),
        "max": max(samples),
    }


# ------------------------------------------------------------------------------------------
# Memory
# ------------------------------------------------------------------------------------------
def child_pids(pid: int) -> list[int]:
    """Direct children of ``pid``, from /proc."""
    kids: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            kids.append(int(entry.name))
    return kids


#: Clock ticks per second of /proc/PID/stat's times.
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def proc_times(pid: int) -> tuple[int, float, float]:
    """(parent pid, own utime+stime, reaped children's cutime+cstime) in seconds, or
    (0, 0, 0) for a process that is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0, 0.0, 0.0
    fields = stat.rsplit(")", 1)[1].split()
    # After the command: state ppid ... utime(12) stime(13) cutime(14) cstime(15).
    own = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    reaped = (int(fields[13]) + int(fields[14])) / CLOCK_TICKS
    return int(fields[1]), own, reaped


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds of ``pid`` and every descendant alive now, plus what the reaped ones
    used (cutime/cstime): a running daemon's whole process tree, from /proc."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            parent = proc_times(int(entry.name))[0]
            parents.setdefault(parent, []).append(int(entry.name))
    total, todo = 0.0, [pid]
    while todo:
        current = todo.pop()
        _, own, reaped = proc_times(current)
        total += own + reaped
        todo.extend(parents.get(current, []))
    return total


def postgres_cpu_seconds(postmaster: int) -> float:
    """CPU seconds of every PostgreSQL process so far: the postmaster, its live children
    (backends, autovacuum, WAL writer, checkpointer...) and its reaped ones (backends that
    disconnected: cutime/cstime). A difference of two readings is the server's CPU in
    between, whoever's work it was (on a shared machine, other databases' too)."""
    return tree_cpu_seconds(postmaster)


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def memory_mib(pid: int) -> dict[str, float]:
    """RSS (``/proc/PID/status``) and PSS (``/proc/PID/smaps_rollup``) in MiB.

    PSS splits pages shared after fork among the processes sharing them, so the PSS of
    all children plus the supervisor is what the fleet really costs; RSS counts shared
    pages in every process.
    """
    figures: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            figures["rss"] = int(line.split()[1]) / 1024
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            figures["pss"] = int(line.split()[1]) / 1024
    return figures


# ------------------------------------------------------------------------------------------
# Figures
# ------------------------------------------------------------------------------------------
def summary(values: Sequence[float], digits: int = 1) -> dict[str, Any]:
    """Median of the runs with min and max, and the runs themselves."""
    return {
        "median": round(statistics.median(values), digits),
        "min": round(min(values), digits),
        "max": round(max(values), digits),
        "runs": [round(v, digits) for v in values],
    }


def log(message: str) -> None:
    """Progress on stderr with a timestamp (the full suite runs for a while)."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)
