"""The console's observers: what ``taskkit stage``/``upload`` (:class:`Report`) and ``taskkit
run``/``step`` (:class:`RunReport`) show of what the library tells them (see
:mod:`taskkit.observer`): the plan (a dry run), problems, progress, files done, and the closing
line.

For stage and upload, problems and progress go to stderr, one line each; the plan, ``-v``
lines and the summary go to stdout, so ``--json`` output stays one parseable object at the
end. For run and step every line goes to stderr. Every line leaves through :func:`say` or
:func:`echo`, which :func:`~taskkit.redaction.redact` it: whatever a message quotes, no
credential reaches the console.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
from typing import TYPE_CHECKING

import click

from taskkit import observer
from taskkit.cli.progress import Progress
from taskkit.redaction import redact
from taskkit.transfer import summary as summary_lines

if TYPE_CHECKING:
    from taskkit.observer import Shown
    from taskkit.transfer.summary import Summary

__all__ = ["Report", "RunReport", "echo", "say", "stage_line", "upload_line"]


def say(kind: str, message: str) -> None:
    """One line on stderr, never more: newlines in ``message`` are shown escaped."""
    text = redact(message).replace("\n", "\\n").replace("\r", "\\r")
    click.echo(f"taskkit: {kind}: {text}", err=True)


def echo(line: str) -> None:
    """One line of a plan or a report on stdout."""
    click.echo(redact(line))


class _Console:
    """What both console observers share: warnings, errors and debug lines on stderr as
    ``taskkit: KIND: ...``, and a transfer's progress drawn by :class:`Progress` from the
    reports it hears (the ``-v`` line of each file done included)."""

    def __init__(self, *, verbose: bool, interval: float) -> None:
        self.verbose = verbose
        self.interval = interval
        self.shown: Progress | None = None  # the transfer's progress, while it moves files
        self._told = (0, 0)  # bytes and files ``shown`` was told of

    def warning(self, text: str) -> None:
        say("warning", text)

    def problem(self, problem: Exception | str) -> None:
        say("error", str(problem))

    def debug(self, text: str) -> None:
        # Asked for: -v, or TASKKIT_DEBUG (a switch of this process, as for tracebacks).
        if self.verbose or os.environ.get("TASKKIT_DEBUG"):
            say("debug", text)

    def progress(self, progress: observer.Progress) -> None:
        if self.shown is None and not progress.ended:
            self.shown = self._start(progress)
            self._told = (0, 0)
        if self.shown is not None:
            _advance(self.shown, self._told, progress)
            self._told = (progress.bytes, progress.files)
            if progress.ended:
                self._stop()
        if progress.file is not None and self.verbose:
            self._file_line(progress.file)

    def _start(self, progress: observer.Progress) -> Progress | None:
        raise NotImplementedError

    def _file_line(self, text: str) -> None:
        raise NotImplementedError

    def _stop(self) -> None:
        if self.shown is not None:
            self.shown.__exit__()
            self.shown = None


class Report(_Console):
    """The observer of one transfer command (``taskkit stage``, ``taskkit upload``): notes and
    ``-v`` lines on stdout, warnings and problems on stderr, progress as a bar on a terminal
    (plain lines every ``interval`` elsewhere). A dry run shows the plan after its problems,
    and no progress. The bar stops at the transfer's end, or with ``stack`` at the latest."""

    def __init__(
        self,
        stack: contextlib.ExitStack,
        *,
        doing: str,
        dry_run: bool,
        verbose: bool,
        interval: float,
    ) -> None:
        super().__init__(verbose=verbose, interval=interval)
        self.doing = doing
        self.dry_run = dry_run
        stack.callback(self._stop)

    def note(self, text: str) -> None:
        echo(text)

    def plan(self, plan: Shown) -> None:
        if self.dry_run:
            for line in plan.lines():
                echo(line)

    def _start(self, progress: observer.Progress) -> Progress:
        return Progress(
            progress.total_bytes,
            progress.total_files,
            sys.stderr,
            tty=sys.stderr.isatty(),
            interval=self.interval,
            doing=self.doing,
        ).__enter__()

    def _file_line(self, text: str) -> None:
        echo(text)


class RunReport(_Console):
    """The observer of ``taskkit run`` and ``taskkit step``: every line on stderr as
    ``taskkit: KIND: ...`` (stdout is the command's own), and while a transfer moves files a
    plain progress line every ``interval`` (``taskkit: staging: ...``; a Batch task's stderr
    is a file, never a terminal)."""

    def note(self, text: str) -> None:
        say("note", text)

    def plan(self, plan: Shown) -> None:
        pass  # the attempt's plan is what --dry-run prints (taskkit.cli.dryrun)

    def _start(self, progress: observer.Progress) -> Progress | None:
        if not progress.total_files:
            return None
        return Progress(
            progress.total_bytes,
            progress.total_files,
            _SaidLines(progress.doing),
            tty=False,
            interval=self.interval,
            doing=progress.doing,
        ).__enter__()

    def _file_line(self, text: str) -> None:
        say("note", text)


def _advance(shown: Progress, was: tuple[int, int], now: observer.Progress) -> None:
    """Bring ``shown`` from the counts it was told (``was``) to those of ``now``: a
    transfer's reports come one at a time and in order, so the differences add up."""
    if now.bytes > was[0]:
        shown.add_bytes(now.bytes - was[0])
    for _ in range(now.files - was[1]):
        shown.file_done()


class _SaidLines(io.StringIO):
    """A stream for :class:`~taskkit.cli.progress.Progress` whose lines are said, so each
    gets the one prefix :func:`say` gives."""

    def __init__(self, doing: str) -> None:
        super().__init__()
        self.doing = doing

    def write(self, text: str) -> int:
        # Progress writes "taskkit: staging: ..." lines; say() puts back that very prefix.
        for line in text.splitlines():
            if line.strip():
                say(self.doing, line.removeprefix(f"taskkit: {self.doing}: "))
        return len(text)


def stage_line(summary: Summary) -> str:
    return f"taskkit: {summary_lines.stage_line(summary)}"


def upload_line(summary: Summary) -> str:
    return f"taskkit: {summary_lines.upload_line(summary)}"
