"""Exceptions that reach the user, and the process exit codes they map to.

Every error a user can cause (bad config, bad arguments, a database that is out of
reach or too new) is a :class:`KongtaskError` carrying a one-line message that names
the problem and where it is, and the exit code the CLI should use. The CLI prints
``kongtaskd: <message>`` and exits; tracebacks are for ``--debug`` only.
"""

from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    """Process exit codes. systemd's unit uses them in ``RestartPreventExitStatus``."""

    OK = 0
    #: Something went wrong at run time (database lost for good, internal error).
    #: Restarting may help, so systemd restarts on it.
    FAILURE = 1
    #: The command line or the configuration is wrong, or a handler cannot be
    #: imported. Restarting cannot help until a human edits something.
    USAGE = 2
    #: The database carries a breaking migration newer than this kongtaskd knows.
    #: Restarting cannot help until kongtaskd is upgraded. (graphile-worker uses the
    #: same number internally for the same condition.)
    SCHEMA_TOO_NEW = 57
    #: A migration gave up waiting for a lock (``migration_lock_timeout``): another session
    #: held it too long. Temporary (sysexits' EX_TEMPFAIL), so systemd restarts on it.
    LOCK_TIMEOUT = 75
    #: SIGTERM, SIGINT (Ctrl-C) or SIGQUIT stopped the start-up (a migration) or a command
    #: line tool before it finished; a migration in progress was rolled back. 128 + SIGINT,
    #: as shells report a Ctrl-C.
    INTERRUPTED = 130


class KongtaskError(Exception):
    """An error with a user-facing one-line message and an exit code."""

    exit_code: ExitCode = ExitCode.FAILURE

    def __init__(self, message: str, *, exit_code: ExitCode | None = None) -> None:
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else self.__class__.__name__


class ConfigError(KongtaskError):
    """Bad configuration file, key, value, flag or environment variable."""

    exit_code = ExitCode.USAGE


class TaskImportError(ConfigError):
    """A handler named in the configuration cannot be imported or is not callable."""


class DatabaseError(KongtaskError):
    """The database is unreachable, refused us, or is in a state we cannot work with."""

    exit_code = ExitCode.FAILURE


class SchemaTooOldError(DatabaseError):
    """The database holds a graphile-worker schema older than we can upgrade (< migration 11)."""

    exit_code = ExitCode.USAGE


class SchemaTooNewError(DatabaseError):
    """The database carries a breaking migration newer than this kongtaskd ships."""

    exit_code = ExitCode.SCHEMA_TOO_NEW


class MigrationLockTimeout(DatabaseError):
    """A migration waited longer than ``migration_lock_timeout`` for a lock; nothing applied
    by the step that waited (its transaction rolled back)."""

    exit_code = ExitCode.LOCK_TIMEOUT


class MigrationInterrupted(KongtaskError):
    """A signal stopped a migration; the statement in flight was cancelled and rolled back."""

    exit_code = ExitCode.INTERRUPTED
