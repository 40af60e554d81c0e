"""One transfer told to an observer, in the same words for ``taskkit stage``/``upload`` and
``taskkit run``.

:func:`~taskkit.transfer.stage.stage` and :func:`~taskkit.transfer.upload.upload` hand the
callbacks of their run (the plan, bytes moved, files done, a manifest that could not be
changed) to a :class:`Telling`, which turns them into calls of one
:class:`~taskkit.observer.Observer`: the upload plan's passed files are warnings, plan problems
and failed files are problems, the plan is shown, and the progress counts what the plan will
move (not for a dry run, which moves nothing).

Invariants: progress reports of one transfer reach the observer one at a time and in order
(bytes and files only grow), the first one after the plan and the last one (``ended``) before
the transfer returns, whatever it raised.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, ParamSpec, TypeVar

from taskkit.observer import Observer, Progress, observer_or_default
from taskkit.transfer.summary import warn_passed

if TYPE_CHECKING:
    from taskkit.exceptions import TaskFailure
    from taskkit.transfer.stage_plan import Plan, PlanEntry
    from taskkit.transfer.summary import Problem
    from taskkit.transfer.upload_plan import UploadEntry, UploadPlan

__all__ = ["BYTES_AT_ONCE", "BYTES_EVERY", "Telling"]

#: Seconds between two reports of small amounts of bytes alone.
BYTES_EVERY = 0.1
#: Bytes landing at once that are reported whatever the time since the last report.
BYTES_AT_ONCE = 1 << 20

_A = ParamSpec("_A")
_R = TypeVar("_R")


class Telling:
    """The callbacks of one transfer, told to ``observer`` (default: the logging one). A
    context manager: leaving it ends the progress (:meth:`executing` wraps the execution in
    it)."""

    def __init__(self, observer: Observer | None, doing: str, *, dry_run: bool) -> None:
        self.observer = observer_or_default(observer)
        self.doing, self.dry_run = doing, dry_run
        self._lock = threading.Lock()  # bytes and files arrive from worker threads
        self._started = False
        self._bytes = self._files = self._total_bytes = self._total_files = 0
        self._bytes_told = 0.0  # when bytes alone were last reported

    def __enter__(self) -> Telling:
        return self

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            if self._started:
                self._started = False
                self._report(ended=True)

    def executing(self, run: Callable[_A, _R]) -> Callable[_A, _R]:
        """``run`` (a transfer's execution), ending the progress when it returns or raises."""

        def executed(*args: _A.args, **kwargs: _A.kwargs) -> _R:
            with self:
                return run(*args, **kwargs)

        return executed

    def staging_planned(self, plan: Plan) -> None:
        for problem in plan.problems:
            self.problem(problem)
        self.observer.plan(plan)
        moving = [e for e in plan.entries if e.action != "skip"]
        self._start(sum(e.source.size for e in moving), len(moving))

    def upload_planned(self, plan: UploadPlan) -> None:
        warn_passed(plan, self.observer.warning)
        for problem in plan.problems:
            self.problem(problem)
        self.observer.plan(plan)
        moving = [e for e in plan.entries if e.action == "send"]
        self._start(sum(e.size for e in moving), len(moving))

    def moved(self, n: int, reused: bool) -> None:
        with self._lock:
            self._bytes += n
            # Small amounts are reported ten times a second at most: many small files move
            # bytes thousands of times a second, and each file's own report counts them too.
            # A range of a large file (megabytes) is reported as it lands.
            now = time.monotonic()
            if self._started and (n >= BYTES_AT_ONCE or now - self._bytes_told >= BYTES_EVERY):
                self._bytes_told = now
                self._report()

    def staged(self, entry: PlanEntry, error: TaskFailure | None) -> None:
        self._done(error, lambda: f"{entry.action:<8} {entry.source.url} -> {entry.dest}")

    def uploaded(self, entry: UploadEntry, error: TaskFailure | None) -> None:
        self._done(error, lambda: f"sent  {entry.local} -> {entry.url}")

    def problem(self, problem: Problem) -> None:
        self.observer.problem(problem.error)

    def _start(self, total_bytes: int, files: int) -> None:
        if self.dry_run:
            return
        with self._lock:
            self._total_bytes, self._total_files = total_bytes, files
            self._started = True
            self._report()

    def _done(self, error: TaskFailure | None, line: Callable[[], str]) -> None:
        with self._lock:
            self._files += 1
            if self._started:
                self._report(file=None if error is not None else line())
        if error is not None:
            self.observer.problem(error)

    def _report(self, file: str | None = None, ended: bool = False) -> None:
        """Called with the lock held: one report at a time, in order."""
        self.observer.progress(
            Progress(
                self.doing,
                self._bytes,
                self._total_bytes,
                self._files,
                self._total_files,
                file=file,
                ended=ended,
            )
        )
