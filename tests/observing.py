"""Observers for the tests: one that records every call, one that hands each plan on."""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterator

from taskkit.observer import NullObserver, Progress, Shown


class Recorder(NullObserver):
    """Every call as ``(kind, value)``, in the order heard (from any thread)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, object]] = []
        self._lock = threading.Lock()

    def _add(self, kind: str, value: object) -> None:
        with self._lock:
            self.calls.append((kind, value))

    def note(self, text: str) -> None:
        self._add("note", text)

    def warning(self, text: str) -> None:
        self._add("warning", text)

    def problem(self, problem: Exception | str) -> None:
        self._add("problem", problem)

    def debug(self, text: str) -> None:
        self._add("debug", text)

    def progress(self, progress: Progress) -> None:
        self._add("progress", progress)

    def plan(self, plan: Shown) -> None:
        self._add("plan", plan)

    def of(self, kind: str) -> list[object]:
        """The values of the calls of ``kind``."""
        with self._lock:
            return [value for k, value in self.calls if k == kind]

    def progresses(self) -> list[Progress]:
        return [p for p in self.of("progress") if isinstance(p, Progress)]

    def files(self) -> list[str]:
        """The lines of the files done (what ``-v`` shows)."""
        return [p.file for p in self.progresses() if p.file is not None]


class OnPlan(NullObserver):
    """Hands each plan to ``seen`` (a test's hook between plan and execution)."""

    def __init__(self, seen: Callable[[object], object]) -> None:
        self.seen = seen

    def plan(self, plan: Shown) -> None:
        self.seen(plan)


class Warnings(list[str], NullObserver):
    """The warnings heard, as a list (and nothing else)."""

    def warning(self, text: str) -> None:
        self.append(text)


@contextlib.contextmanager
def taskkit_records(level: int = logging.DEBUG) -> Iterator[list[logging.LogRecord]]:
    """The records the ``"taskkit"`` logger handles meanwhile, heard at ``level`` and up
    (straight from the logger: a command line run in this process may have stopped its
    records from reaching the root logger)."""
    logger = logging.getLogger("taskkit")
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler, was = Keep(level), logger.level
    logger.addHandler(handler)
    logger.setLevel(level)
    try:
        yield records
    finally:
        logger.removeHandler(handler)
        logger.setLevel(was)
