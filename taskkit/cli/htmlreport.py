"""``taskkit report``: a job's journal as one self-contained HTML page.

The page is written whole or not at all; where it goes is checked before the journal is read,
so a bad ``-o`` costs no reading of ten thousand records.
"""

from __future__ import annotations

import sys

import click

from taskkit.cli._app import CONTEXT, cli, jobs_option, journal_options
from taskkit.cli.report import say
from taskkit.exceptions import EX_OK, UsageError

__all__ = ["report_command", "write_page"]


@cli.command("report", context_settings=CONTEXT)
@journal_options
@click.option(
    "-o",
    "--output",
    metavar="FILE",
    default=None,
    help="Where the page goes (-: stdout) [default: report-JOB.html].",
)
@jobs_option("Journal records read at once [default: 32].")
def report_command(state: str, job_id: str, output: str | None, jobs: int | None) -> int:
    """Write a job's attempts as one HTML page: a timeline with a lane per node, each attempt
    coloured by what became of it, the totals and the work saved. Built from the journal
    alone (a job on Batch or in 'taskkit local run' alike); the page needs no network.

    \b
    Examples:
      taskkit report --state az://state/runs --job-id align-2026-11
      taskkit report --state file://.taskkit-local/state --job-id local -o local.html
    """
    from taskkit.runner.spec import check_setting

    try:
        check_setting("job_id", job_id)
    except ValueError as exc:
        raise UsageError(f"--job-id: {exc}") from None
    target = f"report-{job_id}.html" if output is None else output
    write_page(state, job_id, target, jobs=jobs)
    return EX_OK


def write_page(
    state: str, job_id: str, target: str, *, jobs: int | None = None, allow_empty: bool = False
) -> None:
    """Read the journal of ``job_id`` and write its page at ``target`` (-: stdout), saying
    so in one line. ``allow_empty``: a job without a journal still gets its page (``local
    run``, whose tasks need not run ``taskkit run``)."""
    from taskkit.batch.htmlreport import check_target, render, write_report
    from taskkit.exceptions import InputNotFound
    from taskkit.runner.timeline import DEFAULT_JOBS, Timeline, read_timeline
    from taskkit.storage.stores import Stores
    from taskkit.transfer.summary import format_size

    if target != "-":
        check_target(target)
    with Stores() as stores:
        try:
            timeline = read_timeline(stores, state, job_id, jobs=jobs or DEFAULT_JOBS)
        except InputNotFound as exc:
            if not allow_empty:
                raise
            timeline = Timeline.empty(job_id, state, str(exc))
    page = render(timeline)
    if target == "-":
        sys.stdout.write(page)
        sys.stdout.flush()
        return
    size = write_report(page, target)
    say(
        "report",
        f"wrote {target}: {len(timeline.tasks)} tasks, {len(timeline.bars)} bars on "
        f"{len(timeline.nodes)} nodes ({format_size(size)})",
    )
