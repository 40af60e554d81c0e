"""Every exception taskkit raises on purpose, and the exit codes each one stands for.

The tree, with ``exit_code`` and ``run_code``::

    TaskkitError                    70 206  root; catch this to catch everything taskkit raises
    +-- TaskFailure                 70 206  the work could not be done; ``exit_code`` says why
    |   +-- UsageError              64 200  a command line that makes no sense
    |   |   +-- LinkOut             64 203  ... a path led out of the workdir by a link on
    |   |                                   this node
    |   +-- DataError               65 202  ValueError: bytes are not what they should be
    |   +-- InputNotFound           66 201  FileNotFoundError: a named input does not exist
    |   +-- IOFailure               74 203  OSError: reading or writing local files failed
    |   +-- TransientError          75 204  worth retrying: throttling, timeouts, lost connections
    |   |   +-- Conflict            75 204  another writer changed the file first (a
    |   |   |                               conditional write or delete lost the race)
    |   |   +-- SourceChanged       75 204  a source changed after it was listed (a read
    |   |                                   conditional on the listed version failed)
    |   +-- PermissionDenied        77 200  PermissionError: an input or target may not be
    |   |   |                               touched
    |   |   +-- LocalPermissionDenied 77 203  ... a local path of this node
    |   +-- ConfigError             78 200  ValueError: settings, spec or credentials are wrong
    +-- MisuseError                 70 206  TypeError: the library API was called wrongly (a bug
        |                                   in the caller's code, never a fault of the data)
        +-- BadTask                 64 200  ... a task function, or a call of it, that cannot
                                            be: a bad option, an argument that cannot be keyed,
                                            a call of itself (permanent: the code must change)

``exit_code`` is what ``taskkit stage``, ``upload`` and ``hash`` exit with. The codes follow
BSD ``sysexits.h`` so that shell users and Azure Batch exit conditions can tell a retryable
failure (75) from a permanent one. ``run_code`` is what ``taskkit run`` and ``taskkit step``
exit with when their own work fails: a band of their own, 200-206, apart from any code the
wrapped command could mean; 200-202 are permanent (another attempt would meet them again),
203-206 retryable (205, the deadline, is no exception's). A local path this node may not
touch is local I/O there (203), not a verdict on the work: another node may well be able to.
Both codes are read off the class, nowhere else. Only :func:`taskkit.cli.main` turns an
exception into a process exit; the library raises.

A message never holds a credential: it is :func:`~taskkit.redaction.redact`-ed when the
exception is made.

Classes that describe a filesystem condition also derive from the built-in a caller already
catches: ``except FileNotFoundError`` sees :class:`InputNotFound`.
"""

from __future__ import annotations

import os
from typing import ClassVar

from taskkit.redaction import redact

__all__ = [
    "BadTask",
    "ConfigError",
    "Conflict",
    "DataError",
    "IOFailure",
    "InputNotFound",
    "LinkOut",
    "LocalPermissionDenied",
    "MisuseError",
    "PermissionDenied",
    "SourceChanged",
    "TaskFailure",
    "TaskkitError",
    "TransientError",
    "UsageError",
]

EX_OK = 0
EX_USAGE = 64
EX_DATAERR = 65
EX_NOINPUT = 66
EX_SOFTWARE = 70
EX_IOERR = 74
EX_TEMPFAIL = 75
EX_NOPERM = 77
EX_CONFIG = 78
EX_INTERRUPTED = 130

# The run band: what `taskkit run` exits with when its own work fails (README, "The exit-code
# policy"). Up to EX_RUN_DATA permanent, the rest retryable.
EX_RUN_CONFIG = 200
EX_RUN_NOINPUT = 201
EX_RUN_DATA = 202
EX_RUN_IOERR = 203
EX_RUN_TEMPFAIL = 204
EX_RUN_DEADLINE = 205
EX_RUN_SOFTWARE = 206


class TaskkitError(Exception):
    """Root of every exception taskkit raises on purpose."""

    exit_code: ClassVar[int] = EX_SOFTWARE
    #: What ``taskkit run`` exits with when its own work fails with this error (200-206).
    run_code: ClassVar[int] = EX_RUN_SOFTWARE
    retryable: ClassVar[bool] = False

    def __init__(self, message: str) -> None:
        # Messages quote what they were given (a URL, an upstream error): no credential in
        # them reaches a console, a log or a journal record, whoever built the message.
        message = redact(message)
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class TaskFailure(TaskkitError):
    """The work could not be done. ``exit_code`` and ``retryable`` tell Batch what to do next."""


class UsageError(TaskFailure):
    """The command line makes no sense (an unknown option, a malformed argument)."""

    exit_code = EX_USAGE
    run_code = EX_RUN_CONFIG


class DataError(TaskFailure, ValueError):
    """Bytes are not what they should be: a digest mismatch, a malformed digest string."""

    exit_code = EX_DATAERR
    run_code = EX_RUN_DATA


class _PathFailure(TaskFailure, OSError):
    """A failure about one path; ``filename`` and ``errno`` are set as on an ``OSError``."""

    def __init__(
        self, message: str, *, path: str | os.PathLike[str] | None = None, errno: int | None = None
    ) -> None:
        super().__init__(message)
        self.filename = None if path is None else os.fspath(path)
        self.errno = errno


class InputNotFound(_PathFailure, FileNotFoundError):
    """A named input does not exist (a local path, a blob, a prefix that lists nothing)."""

    exit_code = EX_NOINPUT
    run_code = EX_RUN_NOINPUT


class IOFailure(_PathFailure):
    """Reading or writing local files failed: disk full, a read error, a file that changed."""

    exit_code = EX_IOERR
    run_code = EX_RUN_IOERR


class PermissionDenied(_PathFailure, PermissionError):
    """An input may not be read, or a target may not be written."""

    exit_code = EX_NOPERM
    run_code = EX_RUN_CONFIG


class LocalPermissionDenied(PermissionDenied):
    """This node may not touch a local path (EACCES/EPERM: another user's folder, an immutable
    or read-only-bound directory). Same exit as its parent for ``stage``/``upload``, but
    ``taskkit run`` treats it as local I/O (203, retryable): another node may well be able to,
    so it must never be recorded as a permanent verdict for the work."""

    run_code = EX_RUN_IOERR


class LinkOut(UsageError):
    """A path leads out of the working directory through a link that is there on this node.
    Same exit as its parent for ``stage``/``upload``; ``taskkit run`` treats it as local I/O
    (203, retryable): it is the state of one node's files, not a verdict on the work."""

    run_code = EX_RUN_IOERR


class TransientError(TaskFailure):
    """A failure that a later attempt may not meet: throttling, a timeout, a refused connection."""

    exit_code = EX_TEMPFAIL
    run_code = EX_RUN_TEMPFAIL
    retryable = True


class Conflict(TransientError):
    """Another writer changed the file first: a write or delete conditional on the file's
    version (or on its absence) found another version there. Trying the same request again
    cannot help, so the storage layer never retries it; a later attempt of the task reads the
    file afresh and sees what the other writer decided, hence exit 75."""


class SourceChanged(TransientError):
    """The source changed after it was listed. Retrying the same request cannot help (it is
    conditional on the listed version); a new attempt of the task lists it afresh."""


class ConfigError(TaskFailure, ValueError):
    """Settings, a spec file or credentials are wrong; retrying will not help."""

    exit_code = EX_CONFIG
    run_code = EX_RUN_CONFIG


class MisuseError(TaskkitError, TypeError):
    """The library API was called wrongly: a bug in the calling code, not a fault of the data."""

    exit_code = EX_SOFTWARE
    run_code = EX_RUN_SOFTWARE


class BadTask(MisuseError):
    """A task function, or a call of it, that cannot be (see the tree): a usage error of the
    program, permanent, which ``taskkit call`` exits with as taskkit's own (200)."""

    exit_code = EX_USAGE
    run_code = EX_RUN_CONFIG


def from_os_error(exc: OSError, what: str) -> TaskFailure:
    """Translate an ``OSError`` met while touching a local path into a :class:`TaskFailure`.

    ``what`` names the action for the message, e.g. ``"cannot hash"``. The caller raises the
    result ``from exc`` so the cause is kept.
    """
    path = exc.filename
    reason = (exc.strerror or str(exc)).lower()
    shown = f"{what} {path!r}: {reason}" if path is not None else f"{what}: {reason}"
    if isinstance(exc, FileNotFoundError):
        return InputNotFound(shown, path=path, errno=exc.errno)
    if isinstance(exc, PermissionError):
        return LocalPermissionDenied(shown, path=path, errno=exc.errno)
    return IOFailure(shown, path=path, errno=exc.errno)
