"""How a task function's failure is classified, and what is kept of it when it is permanent.

A function says it outright by raising :class:`Permanent` or :class:`Retryable` (or a subclass,
or with one of them as the ``__cause__`` of what it raises). Otherwise the task's
``permanent_on`` and ``retry_on`` classes decide, the most specific match first; then
taskkit's own errors keep their verdict (:func:`~taskkit.runner.policy.error_verdict`); then the
default table: programming errors (:data:`PROGRAMMING_ERRORS`) are permanent, anything else
(``OSError``, ``TimeoutError``, ``ConnectionError``, ``MemoryError``, ...) is retryable.

A permanent failure is recorded as text (type name, message, traceback), never as a pickled
exception, and a later call of the same key raises :class:`PermanentFailure` with that text.

Invariants: the classification is a pure function of the exception and the task's classes;
text kept in the journal is :func:`~taskkit.redaction.redact`-ed, as every message is.
"""

from __future__ import annotations

import traceback
from collections.abc import Sequence
from typing import NamedTuple

from taskkit.exceptions import TaskFailure, TaskkitError
from taskkit.redaction import redact
from taskkit.runner.policy import Verdict, error_verdict

__all__ = [
    "EX_CALL_PERMANENT",
    "EX_CALL_RETRYABLE",
    "MESSAGE_CHARS",
    "PROGRAMMING_ERRORS",
    "Classified",
    "Permanent",
    "PermanentFailure",
    "Retryable",
    "classify",
    "failure_text",
    "said",
]

#: What ``taskkit call`` exits with when the function failed permanently (now or before).
EX_CALL_PERMANENT = 1
#: What ``taskkit call`` exits with when the function failed and a retry may succeed.
EX_CALL_RETRYABLE = 75

#: Errors another call with the same arguments would meet again: a bug or bad data.
PROGRAMMING_ERRORS: tuple[type[BaseException], ...] = (
    TypeError,
    ValueError,
    KeyError,
    IndexError,
    AttributeError,
    NameError,
    AssertionError,
    NotImplementedError,
    ZeroDivisionError,
    RecursionError,
)

#: How much of a traceback a record keeps (its end, where the error was raised).
_TRACEBACK_CHARS = 16_000
#: How much of an error's message a record and a line keep (the traceback has the rest).
MESSAGE_CHARS = 2_000


def said(exc: BaseException) -> str:
    """``exc``'s message, whatever its ``__str__`` does (a broken one must not turn the
    function's failure into taskkit's), cut to :data:`MESSAGE_CHARS`."""
    try:
        text = str(exc)
    except Exception as broken:
        text = f"<its message cannot be shown: {type(broken).__name__}>"
    if len(text) > MESSAGE_CHARS:
        text = text[:MESSAGE_CHARS] + f"... ({len(text)} characters)"
    return text


class Permanent(Exception):
    """Raise it (or ``raise Permanent(...) from error``) in a task to say: another call with
    the same arguments would fail again; record it and do not retry."""


class Retryable(Exception):
    """Raise it in a task to say: this failure may pass; retry."""


class PermanentFailure(TaskFailure):
    """A call of a task whose key has a permanent failure recorded: the original error's type
    name, message and traceback text (never the exception object)."""

    exit_code = EX_CALL_PERMANENT
    run_code = EX_CALL_PERMANENT

    def __init__(
        self, task: str, type_name: str, message: str, traceback_text: str, attempt: int
    ) -> None:
        super().__init__(
            f"{task}: permanent failure recorded in attempt {attempt}: {type_name}: {message}"
            " (forget() it or 'taskkit call --rerun' to run it again)"
        )
        self.line = self.message
        self.task, self.type_name, self.attempt = task, type_name, attempt
        self.message = redact(message)
        self.traceback_text = redact(traceback_text)

    def __str__(self) -> str:
        return self.line


class Classified(NamedTuple):
    """A failure's verdict and one line saying why."""

    verdict: Verdict
    why: str


def _distance(exc: BaseException, classes: Sequence[type[BaseException]]) -> int | None:
    """How far up the exception's class hierarchy the nearest of ``classes`` is, or None."""
    found = [type(exc).__mro__.index(c) for c in classes if isinstance(exc, c)]
    return min(found, default=None)


def classify(
    exc: BaseException,
    *,
    retry_on: Sequence[type[BaseException]] = (),
    permanent_on: Sequence[type[BaseException]] = (),
) -> Classified:
    """Permanent or retryable, as the module docstring orders the rules."""
    name = type(exc).__name__
    for said in (exc, exc.__cause__):
        if isinstance(said, Permanent):
            return Classified(Verdict.PERMANENT, f"{type(said).__name__} says permanent")
        if isinstance(said, Retryable):
            return Classified(Verdict.RETRYABLE, f"{type(said).__name__} says retryable")
    permanent, retryable = _distance(exc, permanent_on), _distance(exc, retry_on)
    if permanent is not None and (retryable is None or permanent <= retryable):
        return Classified(Verdict.PERMANENT, f"{name} is in permanent_on")
    if retryable is not None:
        return Classified(Verdict.RETRYABLE, f"{name} is in retry_on")
    if isinstance(exc, PermanentFailure):
        return Classified(Verdict.PERMANENT, "a task it called failed permanently")
    if isinstance(exc, TaskkitError):
        verdict = error_verdict(exc)
        return Classified(verdict, f"taskkit's {name} is {verdict.value}")
    if isinstance(exc, PROGRAMMING_ERRORS):
        return Classified(Verdict.PERMANENT, f"{name} is a programming error: permanent")
    return Classified(Verdict.RETRYABLE, f"{name} may pass: retryable")


def failure_text(exc: BaseException) -> tuple[str, str, str]:
    """The type name, message and traceback text a record keeps of ``exc`` (redacted; the
    traceback cut to its last part)."""
    kind = type(exc)
    if isinstance(exc, PermanentFailure):  # a task it called: its words, once, not nested
        message = f"{exc.task} failed permanently: {exc.type_name}: {exc.message}"
        return "PermanentFailure", redact(message), exc.traceback_text
    module = kind.__module__
    type_name = kind.__qualname__
    if module not in ("builtins", "__main__"):
        type_name = f"{module}.{type_name}"
    try:
        text = "".join(traceback.format_exception(kind, exc, exc.__traceback__))
    except Exception:
        text = "".join(traceback.format_tb(exc.__traceback__)) + f"{type_name}: {said(exc)}\n"
    if len(text) > _TRACEBACK_CHARS:
        text = "...\n" + text[-_TRACEBACK_CHARS:]
    return type_name, redact(said(exc)), redact(text)
