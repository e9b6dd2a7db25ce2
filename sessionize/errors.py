"""Typed exceptions: the library raises these, only the CLI prints them and sets exit codes.

Every message says what went wrong, where (file, row, column) and the flag or fix.
"""

from __future__ import annotations


class SessionizeError(Exception):
    """Base class of every error sessionize raises on purpose."""

    #: Exit code the CLI uses for this error.
    exit_code: int = 1


class UsageError(SessionizeError):
    """An option has a value that cannot work (bad duration, unknown time zone, ...)."""

    exit_code = 2


class EngineUnavailableError(UsageError):
    """The chosen engine cannot run here: its optional package (PySpark, Dask) or Java is missing."""


class EngineError(SessionizeError):
    """The engine failed while it ran (a Spark job that died: memory, a lost executor, ...)."""


class InputError(SessionizeError):
    """An input path or file cannot be used."""


class NoInputFilesError(InputError):
    """A path, directory or glob matched no supported file."""


class UnknownFormatError(InputError):
    """A file's format cannot be told from its extension."""


class UnreadableInputError(InputError):
    """A file is missing, unreadable, corrupt or not in the format it claims."""


class IncompleteOutputError(InputError):
    """A directory of part files without the ``_SUCCESS`` marker that a distributed engine (Dask,
    Spark) writes last: the run that wrote it did not finish."""


class MissingColumnError(SessionizeError):
    """A required column (user id or timestamp) is not in the input."""


class NotASessionTableError(MissingColumnError):
    """A file given to ``sessionize report`` is not a session table (no ``session_start``, ...)."""


class InvalidEventsError(SessionizeError):
    """Some rows cannot be sessionized (empty user id, unparsable timestamp)."""


class BadTimestampError(InvalidEventsError):
    """Timestamps that do not parse as ISO 8601, epoch numbers or native timestamps."""


class BadNumberError(InvalidEventsError):
    """Values of a column that ``--agg`` sums, averages or compares that are not numbers."""


class SumOverflowError(BadNumberError):
    """An ``--agg`` sum (of a session, or of a user's sessions) beyond the largest 64-bit float, which no
    output can hold."""


class MissingUserIdError(InvalidEventsError):
    """Rows whose user id is empty."""


class OutOfRangeError(InvalidEventsError):
    """Timestamps before ``--valid-from`` or after ``--valid-until``."""


class LateEventsError(InvalidEventsError):
    """Events of an incremental run older than ``--lateness`` before their user's last processed event, or
    that would join a session already written as final."""


class MalformedRowsError(InvalidEventsError):
    """CSV rows with the wrong number of fields, a bad quote or bytes that do not decode."""


class RefererDatabaseError(InputError):
    """The referer database (``--referers``) is missing, unreadable or not in referer-parser's format."""


class GeoIPDatabaseError(SessionizeError):
    """The GeoIP database is missing, corrupt or of the wrong type."""


class OutputError(SessionizeError):
    """The output cannot be written where asked."""


class ClosedPipeError(OutputError):
    """The reader of a pipe closed it before the output was complete (``sessionize run | head``).

    Exit code 141 (128 + SIGPIPE), as a shell reports a program killed by a closed pipe; the CLI ends
    quietly, without a panel (in JSON mode, its one line)."""

    exit_code = 141


class StoppedError(SessionizeError):
    """A signal stopped the run (SIGTERM from cron or systemd, Ctrl-C): exit code 128 + the signal's
    number, as a shell reports it (143, 130); no output was published, or (``published``) all were."""

    def __init__(self, signum: int, *, published: bool = False) -> None:
        import signal

        name = signal.Signals(signum).name
        if published:
            message = f"Stopped by {name} after every output was written: they are complete."
        else:
            message = f"Stopped by {name} before the run finished: no output was written or changed."
        super().__init__(message)
        self.exit_code = 128 + signum


class StateError(SessionizeError):
    """The state directory of incremental runs (``--state``) cannot be read or used."""


class StateLockedError(StateError):
    """Another run holds the state directory's lock (exit code 75, EX_TEMPFAIL: try again later)."""

    exit_code = 75


class SessionizeWarning(UserWarning):
    """Something the user should know that does not stop the run (the CLI prints it on stderr)."""


def permission_denied(path: str, what: str | None = None) -> str:
    """The one wording of a path the user who runs sessionize may not use: the path, "permission
    denied" (``what``: which way, such as a directory that cannot be entered), and what to do. Finding
    the inputs, reading them and the command line's catch-all (a state, an output's folder) all say it."""
    detail = f" ({what})" if what else ""
    return (
        f"{path}: permission denied{detail}. Give the user who runs sessionize access to it (chmod, or its "
        "owner and group; a directory also needs x to be entered), or run as a user who has it."
    )
