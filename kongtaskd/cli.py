"""The ``kongtaskd`` command: argument parsing, the verbs, and turning errors into one line.

Every verb is one entry of :data:`VERBS` (name, one-line help, a function adding its
arguments, a function running it). A new verb (``jobs``, ``status``, ``cleanup``,
``init``) is a new entry there; nothing else in this module needs to change.

Errors reach the user as one line on stderr, ``kongtaskd: <what and where>``, with the
exit code of :class:`~kongtaskd.errors.ExitCode` (0 ok, 1 runtime failure, 2 usage or
configuration, 57 schema newer than this kongtaskd, 75 a migration's lock wait timed out;
130 after Ctrl-C, or a signal during a migration; 141 when the reader of stdout went away).
Tracebacks are printed only with ``--debug`` or log level debug, and every message goes
through :func:`~kongtaskd.dsn.mask_secrets` so no password is ever shown.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import getpass
import json
import logging
import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import psycopg2
import psycopg2.errors

from kongtaskd import __version__, starter
from kongtaskd.binds import check_binds
from kongtaskd.config import Config, handler_specs, load_config
from kongtaskd.dsn import connect, mask_secrets
from kongtaskd.embedded import EmbeddedNotInstalled, EmbeddedServer, data_dir_of
from kongtaskd.embedded import start as start_embedded
from kongtaskd.enqueue import (
    SMALLINT_MAX,
    SMALLINT_MIN,
    InvalidJobArgument,
    InvalidJobArgumentType,
    add_job,
    check_job_arguments,
)
from kongtaskd.errors import ConfigError, DatabaseError, ExitCode, KongtaskError
from kongtaskd.job import Job
from kongtaskd.logs import LEVELS, setup_logging

PROG = "kongtaskd"
#: Exit code after Ctrl-C, as shells report a process killed by SIGINT (128 + 2).
EXIT_INTERRUPTED = ExitCode.INTERRUPTED
#: Exit code when the reader of stdout went away (``jobs list --json | head``), as shells
#: report a process killed by SIGPIPE (128 + 13); nothing is printed about it.
EXIT_BROKEN_PIPE = 141


class UsageError(Exception):
    """A command-line mistake found by argparse; exit code 2."""


class StdoutClosed(Exception):
    """The reader of a listing's stdout went away (``| head``): stop quietly, exit 141.

    Only raised where stdout is written, so a broken pipe elsewhere stays an error."""


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (``kongtaskd: ...``) instead of usage + error."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see '{self.prog} --help')")


_FORMATTER = argparse.RawDescriptionHelpFormatter


# --- arguments shared by every verb ---------------------------------------------------------


def _add_common(parser: argparse.ArgumentParser, *, in_verb: bool) -> None:
    """-c, --connection, --schema, --log-level, --debug: accepted before and after the verb.

    On a verb's parser the defaults are SUPPRESSed, so a value given before the verb
    (``kongtaskd -c FILE migrate``) is not overwritten by the verb's default.
    """
    unset: Any = argparse.SUPPRESS if in_verb else None
    parser.add_argument(
        "-c",
        "--config",
        metavar="FILE",
        default=unset,
        help="YAML (or JSON) configuration file (default: none; built-in defaults, "
        "environment and flags only)",
    )
    parser.add_argument(
        "--connection",
        metavar="DSN",
        default=unset,
        help="PostgreSQL URI or key=value string, or embedded[:PATH] for a private server "
        "from kongtaskd[embedded] (default: DATABASE_URL, then the config file's "
        "connection, then libpq's PG* variables)",
    )
    parser.add_argument(
        "--schema",
        metavar="NAME",
        default=unset,
        help="schema of the queue tables (default: the config's, KONGTASK_SCHEMA, "
        "GRAPHILE_WORKER_SCHEMA, else graphile_worker)",
    )
    parser.add_argument(
        "--log-level",
        choices=LEVELS,
        default=unset,
        help="lowest log level written to stderr (default: the config's log.level, else info)",
    )
    parser.add_argument(
        "--debug",
        action="store_true",
        default=False if not in_verb else argparse.SUPPRESS,
        help="log level debug, and show tracebacks with errors",
    )


def _add_run_options(parser: argparse.ArgumentParser, *, in_verb: bool) -> None:
    unset: Any = argparse.SUPPRESS if in_verb else None
    parser.add_argument(
        "--once",
        action="store_true",
        default=False if not in_verb else argparse.SUPPRESS,
        help="run until no job is ready, then exit 0 (default: run until SIGTERM/SIGINT)",
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        metavar="N",
        default=unset,
        help="child processes, one job at a time each (default: the config's, else 4)",
    )


# --- helpers shared by the verbs ------------------------------------------------------------


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    level = "debug" if getattr(args, "debug", False) else getattr(args, "log_level", None)
    return {
        "connection": getattr(args, "connection", None),
        "schema": getattr(args, "schema", None),
        "concurrency": getattr(args, "concurrency", None),
        "log.level": level,
    }


def _load(args: argparse.Namespace) -> Config:
    """The configuration with this command line's flags on top; logging set up from it."""
    config = load_config(getattr(args, "config", None), overrides=_overrides(args))
    setup_logging(config.log.level, config.log.format)
    if config.log.level == "debug":
        args.show_tracebacks = True
    return config


#: Embedded servers this command started or reused; main() closes them on its way out
#: (stopping the ones it started), whatever happened.
_embedded_servers: list[EmbeddedServer] = []


def _with_database(config: Config) -> Config:
    """``config`` with ``connection: embedded[:PATH]`` replaced by the URI of that server,
    started (or reused) here and kept up until main() returns. Other configs unchanged.

    Every verb that needs the database comes through here, so the daemon and the short
    verbs alike work with the embedded default. A server kongtaskd started is stopped
    when its last kongtaskd user exits: a ``kongtaskd add`` with no daemon up starts it
    and stops it again (a server nobody uses should not outlive the command that needed
    it); one run beside the daemon leaves it to the daemon.
    """
    if not config.is_embedded:
        return config
    assert config.connection is not None
    data_dir = data_dir_of(config.connection)
    for server in _embedded_servers:
        if server.data_dir == data_dir:
            return dataclasses.replace(config, connection=server.uri)
    try:
        server = start_embedded(data_dir)
    except EmbeddedNotInstalled as error:
        # Named where the setting came from, which is where the user can change it.
        where = config.connection_origin or "configuration"
        raise EmbeddedNotInstalled(f"{where}: {error.message}") from None
    _embedded_servers.append(server)
    logging.getLogger("kongtaskd.embedded").info(
        "embedded PostgreSQL %s %s in %s; applications connect with %s",
        server.version,
        server.how,
        server.data_dir,
        server.uri,
    )
    return dataclasses.replace(config, connection=server.uri)


def _close_embedded() -> None:
    while _embedded_servers:
        _embedded_servers.pop().close()


def _connect(config: Config, application_name: str) -> psycopg2.extensions.connection:
    return connect(_with_database(config).dsn, application_name=application_name)


def _ranges(numbers: list[int]) -> str:
    """[1, 2, 3, 5] -> '1-3, 5'."""
    runs: list[list[int]] = []
    for number in sorted(numbers):
        if runs and number == runs[-1][1] + 1:
            runs[-1][1] = number
        else:
            runs.append([number, number])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)


# --- the verbs ------------------------------------------------------------------------------


def _run(args: argparse.Namespace) -> int:
    config = _load(args)
    config.require_tasks()
    # Before anything starts (an embedded server, the migration, the children): a port that
    # cannot be bound is the user's to fix, exit 2, not a restart loop.
    check_binds(config)
    # Imported here: the supervisor pulls in the child machinery, which the other verbs
    # never need, and an import problem there must not break `migrate` or `add`.
    from kongtaskd.supervisor import run

    asked_for = config.connection
    config = _with_database(config)

    def reload() -> Config:
        """SIGHUP: the same file and flags, read again."""
        fresh = load_config(getattr(args, "config", None), overrides=_overrides(args))
        fresh.require_tasks()
        if fresh.connection == asked_for:
            # Still the same embedded server (if it is one): keep its URI.
            fresh = dataclasses.replace(fresh, connection=config.connection)
        return fresh

    return run(config, once=bool(getattr(args, "once", False)), reload=reload)


def _migrate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--silent",
        action="store_true",
        help="print nothing on success (default: print one summary line)",
    )
    parser.add_argument(
        "--lock-timeout",
        type=_lock_timeout,
        metavar="SECONDS",
        help="give up (exit 75) after waiting this long for a lock another session holds "
        "(default: the config's migration_lock_timeout, 30)",
    )


def _lock_timeout(text: str) -> float:
    """--lock-timeout's value: seconds > 0 (argparse names the flag in the error)."""
    try:
        seconds = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a number of seconds > 0, got {text!r}"
        ) from None
    if not 0 < seconds < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number of seconds > 0, got {text!r}")
    return seconds


def _migrate(args: argparse.Namespace) -> int:
    if args.silent and getattr(args, "log_level", None) is None and not args.debug:
        args.log_level = "warning"
    config = _load(args)
    if args.lock_timeout is not None:
        config = dataclasses.replace(config, migration_lock_timeout=args.lock_timeout)
    from kongtaskd.schema import migrate
    from kongtaskd.schema.waiting import connect_interruptibly, stop_on_signals

    # SIGTERM, SIGINT and SIGQUIT are recorded from before the connection exists: one that
    # comes while connecting, or while a statement waits for a lock (cancelled, rolled
    # back), ends the verb with exit 130.
    with stop_on_signals() as should_stop:
        conn = connect_interruptibly(lambda: _connect(config, "kongtaskd migrate"), should_stop)
        try:
            report = migrate(
                conn,
                config.schema,
                lock_timeout=config.migration_lock_timeout,
                should_stop=should_stop,
                observer=lambda: _connect(config, "kongtaskd migrate (lock watch)"),
            )
        finally:
            conn.close()
    if not args.silent:
        done = []
        if report.applied:
            done.append(f"graphile-worker migrations {_ranges(report.applied)}")
        if report.applied_kongtaskd:
            done.append(f"kongtaskd migrations {_ranges(report.applied_kongtaskd)}")
        summary = f"applied {', '.join(done)}" if done else "nothing to apply"
        if report.newer_non_breaking:
            # Harmless (graphile-worker only warns too), but worth knowing: a newer
            # graphile-worker has been here.
            summary += (
                f"; the database also has newer non-breaking migrations "
                f"{_ranges(report.newer_non_breaking)}"
            )
        print(f"schema {config.schema} is up to date ({summary})")
    return ExitCode.OK


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("task", metavar="TASK", help="task identifier, e.g. send_email")
    parser.add_argument(
        "--payload",
        metavar="JSON",
        help="the job's payload as JSON, @FILE to read it from FILE, or - to read it from "
        "standard input, for payloads too large for a command line (default: {})",
    )
    parser.add_argument(
        "--queue",
        metavar="Q",
        help="named queue: its jobs run one at a time, in order (default: none, parallel)",
    )
    parser.add_argument(
        "--run-at",
        metavar="ISO8601",
        help="when to run, with a UTC offset: 2026-11-23T09:00:00Z or ...+01:00 "
        "(default: now); a time without an offset is refused, not guessed",
    )
    parser.add_argument(
        "--max-attempts", type=int, metavar="N", help="attempts before giving up (default: 25)"
    )
    parser.add_argument(
        "--job-key", metavar="K", help="unique key: adding again updates that job (default: none)"
    )
    parser.add_argument(
        "--job-key-mode",
        choices=("replace", "preserve_run_at", "unsafe_dedupe"),
        help="what adding an existing key does, as graphile-worker (default: replace)",
    )
    parser.add_argument(
        "--priority", type=int, metavar="N", help="lower runs first, -32768..32767 (default: 0)"
    )
    parser.add_argument(
        "--flag",
        dest="flags",
        action="append",
        metavar="F",
        help="a flag for forbidden_flags; repeat for several (default: none)",
    )
    parser.add_argument(
        "--json", action="store_true", help="print the job row as JSON (default: just its id)"
    )


# Which flag (or argument) each enqueue argument came from, for error messages.
_ADD_FLAGS = {
    "identifier": "TASK",
    "payload": "--payload",
    "queue_name": "--queue",
    "run_at": "--run-at",
    "max_attempts": "--max-attempts",
    "job_key": "--job-key",
    "job_key_mode": "--job-key-mode",
    "priority": "--priority",
    "flags": "--flag",
    "schema": "--schema",
}


#: ``--payload -``: the payload is read from standard input.
PAYLOAD_STDIN = "-"
#: ``--payload @FILE``: the payload is read from FILE.
PAYLOAD_FILE_PREFIX = "@"


def _parse_payload(text: str | None) -> Any:
    """The job's payload from ``--payload``: JSON itself, ``@FILE`` or ``-`` (stdin).

    JSON cannot start with ``@`` or be a lone ``-``, so the two forms mean nothing else.
    Files and stdin may carry a UTF-8 byte-order mark (some editors write one).
    """
    if text is None:
        return None
    if text == PAYLOAD_STDIN:
        where = f"--payload {PAYLOAD_STDIN} (standard input)"
        data = sys.stdin.buffer.read()
        empty = "standard input is empty; expected JSON"
    elif text.startswith(PAYLOAD_FILE_PREFIX):
        where = f"--payload {text}"
        data = _read_payload_file(text[len(PAYLOAD_FILE_PREFIX) :], where)
        empty = "the file is empty; expected JSON"
    else:
        return _decode_json(text, "--payload")
    if not data.strip():
        raise ConfigError(f"{where}: {empty}")
    try:
        decoded = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise ConfigError(f"{where}: not UTF-8 text (byte {error.start})") from None
    return _decode_json(decoded, where)


def _read_payload_file(name: str, where: str) -> bytes:
    if not name:
        raise ConfigError(f"{where}: give a file name after @ (or - for standard input)")
    try:
        return Path(name).expanduser().read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{where}: no such file") from None
    except IsADirectoryError:
        raise ConfigError(f"{where}: is a directory, not a file") from None
    except OSError as error:
        raise ConfigError(f"{where}: cannot read it: {error.strerror}") from None


def _decode_json(text: str, where: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise ConfigError(
            f"{where}: invalid JSON at line {error.lineno} column {error.colno}: {error.msg}"
        ) from None
    except RecursionError:
        raise ConfigError(f"{where}: invalid JSON: nested too deeply") from None


def _parse_run_at(text: str | None) -> dt.datetime | None:
    if text is None:
        return None
    try:
        moment = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise ConfigError(
            f"--run-at: {text!r} is not an ISO 8601 date-time (e.g. 2026-11-23T09:00:00Z)"
        ) from None
    if moment.tzinfo is None or moment.utcoffset() is None:
        # Guessing UTC or local time would silently shift the job by hours for someone.
        shown = moment.isoformat()
        raise ConfigError(
            f"--run-at: {text!r} has no UTC offset; add one, e.g. {shown}Z or {shown}+01:00"
        )
    return moment


def _job_json(job: Job) -> str:
    def default(value: object) -> str:
        if isinstance(value, dt.datetime):
            return value.isoformat()
        return str(value)

    return json.dumps(dataclasses.asdict(job), default=default)


def _add(args: argparse.Namespace) -> int:
    payload = _parse_payload(args.payload)
    run_at = _parse_run_at(args.run_at)
    config = _load(args)
    options = {
        "queue_name": args.queue,
        "run_at": run_at,
        "max_attempts": args.max_attempts,
        "job_key": args.job_key,
        "job_key_mode": args.job_key_mode,
        "priority": args.priority,
        "flags": args.flags,
        "schema": config.schema,
    }
    try:
        # Checked before connecting, so a bad flag costs no connection attempt.
        check_job_arguments(args.task, payload, **options)
    except (InvalidJobArgument, InvalidJobArgumentType) as error:
        raise _flag_error(error) from None
    conn = _connect(config, "kongtaskd add")
    try:
        with conn:
            job = add_job(conn, args.task, payload, **options)
    except (InvalidJobArgument, InvalidJobArgumentType) as error:
        raise _flag_error(error) from None
    except (psycopg2.errors.UndefinedFunction, psycopg2.errors.InvalidSchemaName) as error:
        raise DatabaseError(
            f"schema {config.schema} has no graphile-worker add_job() "
            f"(run 'kongtaskd migrate' first): {_first_line(error)}"
        ) from None
    finally:
        conn.close()
    print(_job_json(job) if args.json else job.id)
    return ExitCode.OK


def _flag_error(error: InvalidJobArgument | InvalidJobArgumentType) -> ConfigError:
    argument: str = error.argument
    base = argument.split("[", 1)[0]
    flag = _ADD_FLAGS.get(base, base)
    message = str(error).removeprefix(argument).strip()
    return ConfigError(f"{flag}: {message}")


# --- admin verbs: jobs, status, cleanup, init -----------------------------------------------

#: Job ids are bigint identities.
_MAX_JOB_ID = 2**63 - 1
#: Rows of the `jobs list` table without --limit (a screenful or a few; --json has no cap).
TABLE_LIMIT = 100


def _job_id(text: str) -> int:
    """argparse type of a job id: a positive integer that fits a bigint."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a job id (a positive integer)") from None
    if not 1 <= value <= _MAX_JOB_ID:
        raise argparse.ArgumentTypeError(f"{text!r} is not a job id (1..{_MAX_JOB_ID})")
    return value


def _limit(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of jobs") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is negative; 0 means no limit")
    return value


def _check_priority(priority: int | None) -> None:
    if priority is not None and not SMALLINT_MIN <= priority <= SMALLINT_MAX:
        raise ConfigError(
            f"--priority: must be between {SMALLINT_MIN} and {SMALLINT_MAX}, got {priority}"
        )


def _add_ids(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "ids", metavar="ID", type=_job_id, nargs="+", help="job ids (as 'jobs list' shows them)"
    )


_SKIPPED = (
    "Jobs a worker is running are left alone (graphile-worker's rule: locked less than 4 h\n"
    "ago; jobs of a kongtaskd daemon still sending heartbeats, however long they run).\n"
    "The other ids are acted on; then, if any id was running or does not exist, one error\n"
    "line names them all and the exit code is 1."
)


def _jobs_list_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "List jobs, oldest first, as a table (or JSON). STATE is ready (due now), scheduled\n"
        "(run_at ahead), retrying (failed before, will run again), locked (a worker holds\n"
        "it) or failed (no attempts left)."
    )
    parser.add_argument("--task", metavar="T", help="only jobs of task T (default: all tasks)")
    parser.add_argument("--queue", metavar="Q", help="only jobs in queue Q (default: any queue)")
    only = parser.add_mutually_exclusive_group()
    only.add_argument(
        "--failed",
        dest="only",
        action="store_const",
        const="failed",
        help="only jobs whose last attempt failed: retrying and permanently failed ones "
        "(default: jobs in any state)",
    )
    only.add_argument(
        "--locked",
        dest="only",
        action="store_const",
        const="locked",
        help="only jobs a worker holds right now",
    )
    only.add_argument(
        "--scheduled",
        dest="only",
        action="store_const",
        const="scheduled",
        help="only jobs waiting for a future run_at, retries in back-off included",
    )
    parser.add_argument(
        "--limit",
        type=_limit,
        default=None,
        metavar="N",
        help="show at most N jobs, the oldest; 0 shows all; a cut list says so (the table "
        "in a last line, --json on stderr) (default: 100 for the table, all for --json)",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="print a JSON array of jobs, payload included, timestamps ISO 8601 UTC, "
        "written as the rows arrive, so any number of jobs fits (default: a table)",
    )


def _jobs_retry_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Run jobs again now: attempts reset to 0 and run_at set to now, so permanently\n"
        "failed jobs run again too. last_error is kept (the record of why it failed) until\n"
        "the job fails again or succeeds.\n\n" + _SKIPPED
    )
    _add_ids(parser)


def _jobs_fail_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Fail jobs permanently: attempts = max_attempts, so no worker runs them again;\n"
        "they stay listed as failed until removed or 'cleanup --permafailed'.\n\n" + _SKIPPED
    )
    _add_ids(parser)
    parser.add_argument(
        "--message",
        metavar="M",
        help="the jobs' last_error (default: graphile-worker's 'Manually marked as failed')",
    )


def _jobs_cancel_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Cancel jobs, running or not: each ends permanently failed with last_error\n"
        "'cancelled by USER@HOST at TIME' and is never retried ('jobs retry' revives it,\n"
        "'jobs remove' deletes it). A job a kongtaskd daemon is running is interrupted\n"
        "there (ctx.cancelled at once, JobInterrupted after its cancel_grace); one held by a\n"
        "graphile-worker worker or a dead daemon is not interrupted, but fails with the\n"
        "cancel message when let go. Ids that do not exist (a job that just finished is\n"
        "gone) and jobs already permanently failed are left alone: the others are cancelled,\n"
        "then one error line names them all and the exit code is 1."
    )
    _add_ids(parser)


def _jobs_remove_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = "Delete jobs (graphile-worker's complete_jobs).\n\n" + _SKIPPED
    _add_ids(parser)


def _jobs_reschedule_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Move jobs to another time and/or priority; attempts and last_error stay.\n\n" + _SKIPPED
    )
    _add_ids(parser)
    parser.add_argument(
        "--run-at",
        metavar="ISO8601",
        help="the new run_at, with a UTC offset: 2026-11-23T09:00:00Z or ...+01:00 "
        "(default: unchanged; a time without an offset is refused, not guessed)",
    )
    parser.add_argument(
        "--priority",
        type=int,
        metavar="N",
        help="the new priority, lower runs first, -32768..32767 (default: unchanged)",
    )


#: The actions of `kongtaskd jobs`: name, help, example, arguments.
_JOB_ACTIONS: tuple[tuple[str, str, str, Callable[[argparse.ArgumentParser], None]], ...] = (
    (
        "list",
        "list jobs (table or JSON)",
        "kongtaskd jobs list -c kongtask.yaml --failed --task send_email\n"
        "  kongtaskd jobs list --connection postgresql://app@db/app --queue reports --json",
        _jobs_list_arguments,
    ),
    (
        "retry",
        "run jobs again now, attempts reset",
        "kongtaskd jobs retry -c kongtask.yaml 42 43",
        _jobs_retry_arguments,
    ),
    (
        "fail",
        "fail jobs permanently",
        "kongtaskd jobs fail -c kongtask.yaml 42 --message 'bad address, gave up'",
        _jobs_fail_arguments,
    ),
    (
        "cancel",
        "cancel jobs, running or not: permanently failed, never retried",
        "kongtaskd jobs cancel -c kongtask.yaml 42 43",
        _jobs_cancel_arguments,
    ),
    (
        "remove",
        "delete jobs",
        "kongtaskd jobs remove -c kongtask.yaml 42 43",
        _jobs_remove_arguments,
    ),
    (
        "reschedule",
        "move jobs to another time or priority",
        "kongtaskd jobs reschedule -c kongtask.yaml 42 --run-at 2026-11-23T09:00:00Z\n"
        "  kongtaskd jobs reschedule -c kongtask.yaml 42 43 --priority -10",
        _jobs_reschedule_arguments,
    ),
)


def _jobs_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "List and manage jobs, beside running workers: every change goes through\n"
        "graphile-worker's own SQL functions, which never touch a job a worker is running."
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", title="actions", required=True)
    for name, help_text, example, arguments in _JOB_ACTIONS:
        sub = actions.add_parser(
            name,
            help=help_text,
            description=help_text[:1].upper() + help_text[1:] + ".",
            epilog=f"example:\n  {example}",
            formatter_class=_FORMATTER,
        )
        _add_common(sub, in_verb=True)
        arguments(sub)


def _cancel_operator() -> str:
    from kongtaskd import cancel

    return cancel.canceller()


def _cli_operator() -> str:
    """Who a CLI action's audit line names: the operating-system user."""
    try:
        return f"cli:{getpass.getuser()}"
    except Exception:  # no user name for this uid (containers): the uid still says who
        return f"cli:uid {os.getuid()}"


def _audit_to_syslog() -> None:
    """The CLI's audit lines go to syslog (the journal on systemd hosts), not to stderr:
    the verbs' output and one-line errors stay what scripts parse. Without /dev/log
    (containers) they are dropped unless the log level is debug."""
    import logging.handlers

    from kongtaskd.actions import AUDIT_LOGGER

    audit = logging.getLogger(AUDIT_LOGGER)
    if logging.getLogger().level <= logging.DEBUG:
        return  # debug: everything, the audit line included, goes to stderr
    audit.propagate = False
    if os.path.exists("/dev/log") and not audit.handlers:
        try:
            handler = logging.handlers.SysLogHandler(address="/dev/log")
        except OSError:
            return
        handler.setFormatter(logging.Formatter("kongtaskd: %(message)s"))
        audit.addHandler(handler)


def _jobs(args: argparse.Namespace) -> int:
    from kongtaskd import actions  # imported here, not at the top: `run` starts faster

    action: str = args.action
    # Flags are checked before connecting: a typo costs no connection attempt.
    run_at = None
    if action == "reschedule":
        run_at = _parse_run_at(args.run_at)
        _check_priority(args.priority)
        if run_at is None and args.priority is None:
            raise ConfigError("jobs reschedule: give --run-at, --priority or both")
    config = _load(args)
    conn = _connect(config, f"kongtaskd jobs {action}")
    try:
        if action == "list":
            return _jobs_list(conn, config, args)
        _audit_to_syslog()
        result = actions.apply(
            conn,
            config.schema,
            actions.Action[action.upper()],
            actions.Ids(tuple(args.ids)),
            # A cancel's message names who cancelled, as user@host (the job's last_error
            # outlives the audit line); the other actions' audit lines name the OS user.
            who=_cancel_operator() if action == "cancel" else _cli_operator(),
            run_at=run_at,
            priority=args.priority if action == "reschedule" else None,
            message=args.message if action == "fail" else None,
            stale_after=config.stale_after,
        )
    finally:
        conn.close()
    if result.notes:  # cancel: one line per job, whether its holder interrupts it now
        for job_id in result.changed:
            print(result.notes[job_id], flush=True)
    else:
        summary = result.summary()
        if summary:
            print(summary, flush=True)
    problems = result.problems()
    if problems:
        raise KongtaskError(problems, exit_code=ExitCode.FAILURE)
    return ExitCode.OK


def _jobs_list(
    conn: psycopg2.extensions.connection, config: Config, args: argparse.Namespace
) -> int:
    try:
        return _write_jobs_list(conn, config, args)
    except BrokenPipeError:
        raise StdoutClosed() from None


def _write_jobs_list(
    conn: psycopg2.extensions.connection, config: Config, args: argparse.Namespace
) -> int:
    from kongtaskd import admin  # imported here, not at the top: `run` starts faster

    if not args.json:
        limit = TABLE_LIMIT if args.limit is None else args.limit or None
        listing = admin.list_jobs(
            conn, config.schema, task=args.task, queue=args.queue, only=args.only, limit=limit
        )
        print(admin.format_jobs(listing))
        return ExitCode.OK
    # --json is for scripts: no default cap (a silent one made scripts act on part of the
    # queue), rows streamed so memory does not grow with the list.
    written = admin.write_jobs_json(
        conn,
        config.schema,
        sys.stdout,
        task=args.task,
        queue=args.queue,
        only=args.only,
        limit=args.limit or None,
    )
    sys.stdout.flush()
    if written.capped:
        print(
            f"{PROG}: jobs list --limit {args.limit}: listed {written.shown} of "
            f"{written.total} matching jobs (without --limit, --json lists all)",
            file=sys.stderr,
            flush=True,
        )
    return ExitCode.OK


def _status_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Show the kongtaskd daemons alive on this queue (from their heartbeats: pool id,\n"
        "host, pid, busy and idle children, uptime, last beat; 'STALE' once the last beat\n"
        "is older than the config's stale_after), anyone else holding locks (graphile-worker\n"
        "pools write no heartbeat), and how many jobs each task and named queue has ready,\n"
        "scheduled, locked and failed."
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="print the same as one JSON object, timestamps ISO 8601 UTC (default: text)",
    )


def _status(args: argparse.Namespace) -> int:
    from kongtaskd import admin  # imported here, not at the top: `run` starts faster

    config = _load(args)
    conn = _connect(config, "kongtaskd status")
    try:
        report = admin.status(conn, config.schema, stale_after=config.stale_after)
    finally:
        conn.close()
    print(admin.to_json(report) if args.json else admin.format_status(report))
    return ExitCode.OK


def _steer_arguments(parser: argparse.ArgumentParser, verb: str) -> None:
    parser.add_argument("tasks", nargs="*", metavar="TASK", help=f"task identifiers to {verb}")
    parser.add_argument(
        "--queue",
        action="append",
        default=[],
        metavar="NAME",
        help=f"a named queue to {verb} (repeatable; default: none)",
    )


def _pause_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Pause tasks and/or named queues on every daemon on this database: no new job of\n"
        "them is claimed once this commits (running jobs finish; jobs a daemon claimed but\n"
        "had not started are handed back). Persisted: restarts stay paused. A paused named\n"
        "queue's row is also held so graphile-worker workers skip it. A task no daemon has\n"
        "registered yet may be paused (it is said so)."
    )
    _steer_arguments(parser, "pause")


def _resume_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = "Lift pauses made by 'kongtaskd pause'; daemons claim at once."
    _steer_arguments(parser, "resume")


def _steer(args: argparse.Namespace, verb: str) -> int:
    from kongtaskd import actions, steer

    if not args.tasks and not args.queue:
        print(f"{PROG} {verb}: name at least one TASK or --queue NAME", file=sys.stderr)
        return ExitCode.USAGE
    for name in [*args.tasks, *args.queue]:
        if not name.strip():
            print(f"{PROG} {verb}: an empty name is not a task or queue", file=sys.stderr)
            return ExitCode.USAGE
    config = _load(args)
    conn = _connect(config, f"kongtaskd {verb}")
    try:
        _audit_to_syslog()
        changed = actions.steer(
            conn,
            config.schema,
            actions.Steer.PAUSE if verb == "pause" else actions.Steer.RESUME,
            tasks=args.tasks,
            queues=args.queue,
            who=_cli_operator(),
        )  # committed: the pause (and its NOTIFY) has taken effect
        listed = {(p.kind, p.name): p for p in steer.pauses(conn, schema=config.schema)}
    finally:
        conn.close()
    done = set(changed.changed)
    for kind, name in [("task", t) for t in args.tasks] + [("queue", q) for q in args.queue]:
        if verb == "pause":
            state = "paused" if (kind, name) in done else "already paused"
            known = listed.get((kind, name))
            if known is not None and not known.known:
                state += f" (no {kind} {name!r} in the database yet: it takes effect when one is)"
        else:
            state = "resumed" if (kind, name) in done else "was not paused"
        print(f"{kind} {name}: {state}")
    return ExitCode.OK


def _pause(args: argparse.Namespace) -> int:
    return _steer(args, "pause")


def _resume(args: argparse.Namespace) -> int:
    return _steer(args, "resume")


def _cleanup_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Clean the queue tables as graphile-worker's --cleanup does. Without flags:\n"
        "--tasks and --queues (graphile-worker's default). Deleting failed jobs destroys\n"
        "their record, so it runs only with --permafailed. The task identifiers of the\n"
        "configuration (its tasks, and the @task handlers of its task_modules, which are\n"
        "imported to learn them) are always kept: a running worker knows its tasks by id\n"
        "and would not see new jobs of a task whose row was deleted and made again."
    )
    parser.add_argument(
        "--tasks",
        action="store_true",
        help="delete task identifiers no job uses (GC_TASK_IDENTIFIERS)",
    )
    parser.add_argument(
        "--queues",
        action="store_true",
        help="delete named queues no job uses and nobody holds (GC_JOB_QUEUES)",
    )
    parser.add_argument(
        "--permafailed",
        action="store_true",
        help="delete permanently failed jobs nobody holds (DELETE_PERMAFAILED_JOBS)",
    )
    parser.add_argument(
        "--keep-task",
        dest="keep_tasks",
        action="append",
        default=[],
        metavar="T",
        help="also keep task identifier T (e.g. served only by Node workers); repeat for "
        "several (default: only the configuration's)",
    )


def _cleanup(args: argparse.Namespace) -> int:
    from kongtaskd import admin  # imported here, not at the top: `run` starts faster

    config = _load(args)
    tasks, queues, permafailed = args.tasks, args.queues, args.permafailed
    if not (tasks or queues or permafailed):
        tasks = queues = True
    keep = set(config.tasks) | set(args.keep_tasks)
    if tasks and config.task_modules:
        # Decorated handlers name their task only in code: import the modules, as the
        # daemon's children do, to learn which identifiers this configuration serves.
        from kongtaskd.registry import load_handlers

        specs = handler_specs(config.tasks)
        keep |= set(load_handlers(specs, config.task_modules, config.python_path))
    conn = _connect(config, "kongtaskd cleanup")
    try:
        report = admin.cleanup(
            conn,
            config.schema,
            tasks=tasks,
            queues=queues,
            permafailed=permafailed,
            keep_tasks=sorted(keep),
        )
    finally:
        conn.close()
    print(admin.format_cleanup(report))
    return ExitCode.OK


def _init_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        f"Write a starter {starter.CONFIG_FILE} (every configuration key with its default and\n"
        f"what changing it trades) and {starter.HANDLERS_FILE}, a handler module with one\n"
        f"example task the configuration names. Existing files are never overwritten.\n"
        "Needs no database."
    )
    parser.add_argument(
        "path",
        metavar="PATH",
        nargs="?",
        default=".",
        help="directory to write into, created if missing (default: the current directory)",
    )


def _init(args: argparse.Namespace) -> int:
    written = starter.init_project(args.path)
    config = written[0]
    print(f"wrote {', '.join(str(path) for path in written)}")
    print(f"next: set 'connection' in {config} (or DATABASE_URL), then")
    print(f"  kongtaskd migrate -c {config}")
    print(f'  kongtaskd add {starter.EXAMPLE_TASK} --payload \'{{"name": "world"}}\' -c {config}')
    print(f"  kongtaskd -c {config}")
    return ExitCode.OK


def _web_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "action",
        nargs="?",
        choices=("hash-password",),
        help="hash-password: read a password (stdin, or asked twice on a terminal) and "
        "print the hash for web.auth.basic.password_hash",
    )
    parser.add_argument("--host", help="address to bind (default: web.host, else 127.0.0.1)")
    parser.add_argument(
        "--port", type=_port, help="TCP port to listen on (default: web.port, else 8080)"
    )
    parser.add_argument(
        "--insecure-no-auth",
        action="store_true",
        help="serve a non-loopback address without web.auth (only when something in front, "
        "e.g. an authenticating proxy, guards it)",
    )


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}") from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port from 1 to 65535, got {port}")
    return port


def _web(args: argparse.Namespace) -> int:
    try:
        from kongtaskd.web import serve
    except ImportError as error:
        raise ConfigError(
            f"kongtaskd web needs the web extra ({error.name or error} is missing): "
            "pip install 'kongtaskd[web]'"
        ) from None
    if args.action == "hash-password":
        return serve.hash_password_command()
    config = _with_database(_load(args))
    return serve.serve(
        config, host=args.host, port=args.port, insecure_no_auth=args.insecure_no_auth
    )


@dataclasses.dataclass(frozen=True)
class Verb:
    """One subcommand: its name, a one-line help, its arguments and what runs it."""

    name: str
    help: str
    example: str
    arguments: Callable[[argparse.ArgumentParser], None]
    handler: Callable[[argparse.Namespace], int]
    #: Takes the daemon's --once/--concurrency.
    runs_daemon: bool = False


def _no_arguments(parser: argparse.ArgumentParser) -> None:
    pass


#: The verbs, in help order.
VERBS: tuple[Verb, ...] = (
    Verb(
        "run",
        "run the daemon (the default when no verb is given)",
        "kongtaskd -c /etc/kongtaskd/kongtask.yaml\n  kongtaskd run -c kongtask.yaml --once",
        _no_arguments,
        _run,
        runs_daemon=True,
    ),
    Verb(
        "migrate",
        "install or upgrade the database schema, then exit",
        "kongtaskd migrate -c kongtask.yaml\n"
        "  kongtaskd migrate --connection postgresql://app@db/app --silent",
        _migrate_arguments,
        _migrate,
    ),
    Verb(
        "add",
        "add one job (prints its id)",
        'kongtaskd add send_email --payload \'{"to": "a@b.example"}\' '
        "--run-at 2026-11-23T09:00:00Z\n"
        "  kongtaskd add import --payload @rows.json\n"
        "  produce_json | kongtaskd add import --payload -\n"
        "  kongtaskd add report --queue reports --job-key daily-report --json",
        _add_arguments,
        _add,
    ),
    Verb(
        "jobs",
        "list jobs; retry, fail, remove or reschedule them",
        "kongtaskd jobs list -c kongtask.yaml --failed\n"
        "  kongtaskd jobs retry -c kongtask.yaml 42 43\n"
        "  run 'kongtaskd jobs ACTION --help' for an action's options",
        _jobs_arguments,
        _jobs,
    ),
    Verb(
        "status",
        "show live daemons and job counts per task and queue",
        "kongtaskd status -c kongtask.yaml\n"
        "  kongtaskd status --connection postgresql://app@db/app --json",
        _status_arguments,
        _status,
    ),
    Verb(
        "pause",
        "pause tasks or named queues fleet-wide (running jobs finish)",
        "kongtaskd pause -c kongtask.yaml call_partner make_thumbnail\n"
        "  kongtaskd pause -c kongtask.yaml --queue billing",
        _pause_arguments,
        _pause,
    ),
    Verb(
        "resume",
        "resume paused tasks or named queues",
        "kongtaskd resume -c kongtask.yaml call_partner\n"
        "  kongtaskd resume -c kongtask.yaml --queue billing",
        _resume_arguments,
        _resume,
    ),
    Verb(
        "cleanup",
        "delete unused task identifiers and queues (and failed jobs with --permafailed)",
        "kongtaskd cleanup -c kongtask.yaml\n  kongtaskd cleanup -c kongtask.yaml --permafailed",
        _cleanup_arguments,
        _cleanup,
    ),
    Verb(
        "web",
        "serve the web dashboard (its own process; see docs/operations.md)",
        "kongtaskd web -c kongtask.yaml\n"
        "  kongtaskd web -c kongtask.yaml --host 0.0.0.0 --port 8080\n"
        "  kongtaskd web hash-password < password.txt",
        _web_arguments,
        _web,
    ),
    Verb(
        "init",
        "write a commented starter kongtask.yaml and a tasks.py handler skeleton",
        "kongtaskd init myproject\n  kongtaskd init  # into the current directory",
        _init_arguments,
        _init,
    ),
)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        description="PostgreSQL job queue daemon, schema-compatible with graphile-worker 0.18.",
        epilog="examples:\n  kongtaskd -c kongtask.yaml\n  kongtaskd migrate -c kongtask.yaml\n"
        '  kongtaskd add send_email --payload \'{"to": "a@b.example"}\'\n\n'
        "exit codes: 0 ok, 1 runtime failure, 2 usage or configuration error, "
        "57 database schema newer than this kongtaskd, 75 migration lock timeout, "
        "130 interrupted, 141 stdout closed by its reader\n"
        "run 'kongtaskd VERB --help' for a verb's options",
        formatter_class=_FORMATTER,
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    _add_common(parser, in_verb=False)
    _add_run_options(parser, in_verb=False)
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", title="verbs")
    for verb in VERBS:
        sub = verbs.add_parser(
            verb.name,
            help=verb.help,
            description=verb.help[:1].upper() + verb.help[1:] + ".",
            epilog=f"example:\n  {verb.example}",
            formatter_class=_FORMATTER,
        )
        _add_common(sub, in_verb=True)
        if verb.runs_daemon:
            _add_run_options(sub, in_verb=True)
        verb.arguments(sub)
        sub.set_defaults(handler=verb.handler, runs_daemon=verb.runs_daemon)
    parser.set_defaults(handler=_run, runs_daemon=True)
    return parser


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _report(message: str) -> None:
    line = " ".join(mask_secrets(message).split())
    print(f"{PROG}: {line}", file=sys.stderr, flush=True)


def _wants_tracebacks(args: argparse.Namespace | None) -> bool:
    if args is not None and (
        getattr(args, "show_tracebacks", False)
        or getattr(args, "debug", False)
        or getattr(args, "log_level", None) == "debug"
    ):
        return True
    return os.environ.get("KONGTASK_LOG_LEVEL", "").lower() == "debug"


def _print_traceback() -> None:
    print(mask_secrets(traceback.format_exc()), file=sys.stderr, end="", flush=True)


def entry() -> NoReturn:
    """The ``kongtaskd`` command and ``python -m kongtaskd``: :func:`main`, then the exit."""
    exit_now(main())


def exit_now(code: int) -> NoReturn:
    """End the process with ``code`` once :func:`main` is done, skipping the interpreter's
    teardown (every module and object freed one by one: 30-100 ms of a ``--once`` run's
    wall time here, and nothing of ours needs it). What an exit must still do is done
    first: the ``atexit`` functions (an imported library's), the log handlers and stdio
    flushed. With a thread of ours or a library's still running, the ordinary exit instead:
    it waits for non-daemon threads, ``os._exit`` would cut them off."""
    import atexit
    import threading

    if any(
        t.is_alive() and not t.daemon
        for t in threading.enumerate()
        if t is not threading.main_thread()
    ):
        raise SystemExit(code)
    atexit._run_exitfuncs()  # their errors are printed there, as at a normal exit
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            if stream is sys.stdout and code == 0:
                code = EXIT_BROKEN_PIPE  # the output did not reach its reader
    os._exit(code)


def main(argv: list[str] | None = None) -> int:
    """Run the command line ``argv`` (default ``sys.argv[1:]``); return the exit code."""
    parser = build_parser()
    args: argparse.Namespace | None = None
    try:
        args = parser.parse_args(argv)
        if not args.runs_daemon and (args.once or args.concurrency is not None):
            raise UsageError(
                f"--once and --concurrency only apply to running the daemon, not to '{args.verb}'"
            )
        return int(args.handler(args))
    except SystemExit as exit:  # --help, --version
        code = exit.code
        return code if isinstance(code, int) else (0 if code is None else ExitCode.USAGE)
    except UsageError as error:
        _report(str(error))
        return ExitCode.USAGE
    except KongtaskError as error:
        if _wants_tracebacks(args):
            _print_traceback()
        _report(error.message)
        return int(error.exit_code)
    except psycopg2.Error as error:
        if _wants_tracebacks(args):
            _print_traceback()
        code = f" {error.pgcode}" if error.pgcode else ""
        _report(f"database error{code}: {_first_line(error)}")
        return ExitCode.FAILURE
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except StdoutClosed:
        # Python would complain again when it flushes stdout at exit: point it at nothing.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except Exception as error:
        if _wants_tracebacks(args):
            _print_traceback()
        _report(f"internal error: {type(error).__name__}: {_first_line(error)}")
        return ExitCode.FAILURE
    finally:
        _close_embedded()
