"""The one channel through which the library says what it is doing.

Whatever taskkit has to say as it works (a note, a warning, a problem, a debug line, how far a
transfer got, a plan about to run) goes to one :class:`Observer` value that the caller passes
as ``observer=`` to :func:`~taskkit.transfer.stage.stage`, :func:`~taskkit.transfer.upload.upload`,
:func:`~taskkit.runner.run.run`, :func:`~taskkit.runner.steps.run_step` and
:class:`~taskkit.runner.logs.LogSink`. The command line passes the observer that renders lines
and progress bars (:mod:`taskkit.cli.report`); everyone else gets :class:`LoggingObserver`,
which writes records to the ``"taskkit"`` logger.

Invariants: the library itself never writes to the console. The ``"taskkit"`` logger carries a
:class:`logging.NullHandler` (added by ``import taskkit``), so a program that configures no
logging hears nothing, warnings included; one that does (``logging.basicConfig``) gets
records. An observer's methods may be called from worker threads, one call at a time per
transfer for :meth:`Observer.progress`; they should be quick and must not raise.

Modelled on the way fsspec's ``Callback`` bundles a transfer's hooks into one value, without
its base-class machinery: a protocol, a silent base to subclass, the logging default, and a
fan-out.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from taskkit.redaction import redact

__all__ = [
    "OBSERVED",
    "LoggingObserver",
    "NullObserver",
    "Observer",
    "Observers",
    "Progress",
    "Shown",
    "observer_or_default",
]

#: The attribute a :class:`LoggingObserver` sets on each record it makes, so that a handler
#: copying the logger's warnings elsewhere (an attempt's ``taskkit.txt``) can tell them from
#: warnings logged deep inside (a retry, a stat-cache set aside): the observer's lines are
#: noted by whoever told the observer.
OBSERVED = "taskkit_observed"


@dataclass(frozen=True)
class Progress:
    """How far one transfer got: ``doing`` (``"staging"``, ``"uploading"``), bytes and files
    done of the totals its plan will move. ``file`` is the line of a file that has just
    arrived (what ``-v`` shows), ``None`` for a report of bytes; ``ended``: the transfer is
    over and sends no more reports."""

    doing: str
    bytes: int
    total_bytes: int
    files: int
    total_files: int
    file: str | None = None
    ended: bool = False


class Shown(Protocol):
    """A plan that can say itself, one line per thing it would do (what ``--dry-run``
    prints)."""

    def lines(self) -> Iterable[str]: ...


class Observer(Protocol):
    """Whatever hears what the library says. Lines may quote URLs: an observer that shows
    them to a person should pass them through :func:`taskkit.redaction.redact`."""

    def note(self, text: str) -> None:
        """Something done, worth a line: a transfer's summary, a goal already met."""

    def warning(self, text: str) -> None:
        """Something that did not go as it should and did not stop the work."""

    def problem(self, problem: Exception | str) -> None:
        """Something that failed: a file that could not be moved, an attempt's error."""

    def debug(self, text: str) -> None:
        """A line for whoever debugs taskkit (a traceback with ``TASKKIT_DEBUG``)."""

    def progress(self, progress: Progress) -> None:
        """A transfer moved bytes or finished a file (see :class:`Progress`)."""

    def plan(self, plan: Shown) -> None:
        """A plan about to be carried out (or, for a dry run, only shown)."""


class NullObserver:
    """Hears everything and says nothing: the base of an observer that wants a few calls."""

    def note(self, text: str) -> None:
        pass

    def warning(self, text: str) -> None:
        pass

    def problem(self, problem: Exception | str) -> None:
        pass

    def debug(self, text: str) -> None:
        pass

    def progress(self, progress: Progress) -> None:
        pass

    def plan(self, plan: Shown) -> None:
        pass


class LoggingObserver:
    """The default: records on ``logger`` (the ``"taskkit"`` logger). Notes and plan lines
    are INFO, warnings WARNING, problems ERROR, debug lines and progress DEBUG; nothing is
    formatted for a level the logger does not handle, and no record holds a credential
    (:func:`~taskkit.redaction.redact`): a log file is a console that lasts."""

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self.logger = logger or logging.getLogger("taskkit")

    def __repr__(self) -> str:
        return f"LoggingObserver({self.logger.name!r})"

    def _log(self, level: int, text: str) -> None:
        if self.logger.isEnabledFor(level):
            self.logger.log(level, "%s", redact(text), extra={OBSERVED: True})

    def note(self, text: str) -> None:
        self._log(logging.INFO, text)

    def warning(self, text: str) -> None:
        self._log(logging.WARNING, text)

    def problem(self, problem: Exception | str) -> None:
        self._log(logging.ERROR, str(problem))

    def debug(self, text: str) -> None:
        self._log(logging.DEBUG, text)

    def progress(self, progress: Progress) -> None:
        if not self.logger.isEnabledFor(logging.DEBUG):
            return
        if progress.file is not None:
            self._log(logging.DEBUG, progress.file)
        else:
            self._log(
                logging.DEBUG,
                f"{progress.doing}: {progress.bytes} of {progress.total_bytes} bytes, "
                f"{progress.files}/{progress.total_files} files"
                + (" (ended)" if progress.ended else ""),
            )

    def plan(self, plan: Shown) -> None:
        if self.logger.isEnabledFor(logging.INFO):
            for line in plan.lines():
                self._log(logging.INFO, line)


class Observers:
    """Several observers heard as one, each call passed to each in turn."""

    def __init__(self, *observers: Observer) -> None:
        self.observers = observers

    def note(self, text: str) -> None:
        for observer in self.observers:
            observer.note(text)

    def warning(self, text: str) -> None:
        for observer in self.observers:
            observer.warning(text)

    def problem(self, problem: Exception | str) -> None:
        for observer in self.observers:
            observer.problem(problem)

    def debug(self, text: str) -> None:
        for observer in self.observers:
            observer.debug(text)

    def progress(self, progress: Progress) -> None:
        for observer in self.observers:
            observer.progress(progress)

    def plan(self, plan: Shown) -> None:
        for observer in self.observers:
            observer.plan(plan)


def observer_or_default(observer: Observer | None) -> Observer:
    """``observer``, or the default :class:`LoggingObserver` for ``None``."""
    return LoggingObserver() if observer is None else observer
