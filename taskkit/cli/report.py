"""What ``taskkit stage`` and ``taskkit upload`` show as they go: the plan (a dry run), problems,
progress, files done, and the closing line.

Problems and progress go to stderr, one line each; the plan, ``-v`` lines and the summary go to
stdout, so ``--json`` output stays one parseable object at the end. Every line leaves through
:func:`say` or :func:`echo`, which :func:`~taskkit.redaction.redact` it: whatever a message
quotes, no credential reaches the console.
"""

from __future__ import annotations

import contextlib
import sys
from typing import TYPE_CHECKING

import click

from taskkit.cli.progress import Progress, format_size
from taskkit.redaction import redact
from taskkit.transfer import summary as summary_lines
from taskkit.transfer.summary import Telling

if TYPE_CHECKING:
    from taskkit.transfer.stage_plan import Plan
    from taskkit.transfer.summary import Summary
    from taskkit.transfer.upload_plan import UploadPlan

__all__ = ["Report", "echo", "say", "stage_line", "upload_line"]


def say(kind: str, message: str) -> None:
    """One line on stderr, never more: newlines in ``message`` are shown escaped."""
    text = redact(message).replace("\n", "\\n").replace("\r", "\\r")
    click.echo(f"taskkit: {kind}: {text}", err=True)


def echo(line: str) -> None:
    """One line of a plan or a report on stdout."""
    click.echo(redact(line))


class Report(Telling):
    """The running report of one transfer command; its methods are the library's callbacks.
    A dry run shows the plan after its problems, and no progress."""

    def __init__(
        self,
        stack: contextlib.ExitStack,
        *,
        doing: str,
        dry_run: bool,
        verbose: bool,
        interval: float,
    ) -> None:
        self.stack = stack
        self.doing = doing
        self.dry_run = dry_run
        self.verbose = verbose
        self.interval = interval
        self.progress: Progress | None = None

    def tell(self, kind: str, line: str) -> None:
        """Notes on stdout, warnings and errors on stderr."""
        if kind == "note":
            echo(line)
        else:
            say(kind, line)

    def _start(self, total_bytes: int, files: int) -> None:
        if self.dry_run:
            return
        tty = sys.stderr.isatty()
        self.progress = self.stack.enter_context(
            Progress(
                total_bytes, files, sys.stderr, tty=tty, interval=self.interval, doing=self.doing
            )
        )

    def staging_planned(self, plan: Plan) -> None:
        super().staging_planned(plan)
        if self.dry_run:
            if plan.create_workdir:
                click.echo(f"would create the working directory {plan.workdir}")
            for entry in plan.removals:
                click.echo(f"{entry.action:<8} {entry.dest}  ({entry.reason})")
            for entry in plan.entries:
                echo(
                    f"{entry.action:<8} {entry.source.url} -> {entry.dest}  "
                    f"({format_size(entry.source.size)}; {entry.reason})"
                )

    def upload_planned(self, plan: UploadPlan) -> None:
        super().upload_planned(plan)
        if self.dry_run:
            for publication in plan.publications:
                for entry in publication.entries:
                    echo(
                        f"{entry.action:<5} {entry.local} -> {entry.url}  "
                        f"({format_size(entry.size)}; {entry.reason})"
                    )
                if plan.problems:
                    echo(f"{'keep':<5} {publication.manifest_url}  (not published: problems)")
                else:
                    echo(f"{'publish':<5} {publication.manifest_url}  (written last)")


def stage_line(summary: Summary) -> str:
    return f"taskkit: {summary_lines.stage_line(summary)}"


def upload_line(summary: Summary) -> str:
    return f"taskkit: {summary_lines.upload_line(summary)}"
