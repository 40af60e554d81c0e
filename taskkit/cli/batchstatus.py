"""``taskkit batch status``: a job's tasks as Batch and taskkit's journal see them, one table."""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Any

import click

from taskkit.cli._app import CONTEXT, DURATION
from taskkit.cli.batch import batch_group
from taskkit.cli.report import echo as _echo
from taskkit.cli.report import say as _say
from taskkit.exceptions import EX_OK, InputNotFound, TransientError, UsageError

if TYPE_CHECKING:
    from taskkit.batch.service import TaskFacts

__all__ = ["batch_status_command"]


@batch_group.command("status", context_settings=CONTEXT)
@click.option("--job-id", required=True, metavar="ID", help="The job.")
@click.option("--state", metavar="URL", help="Where the tasks' journals live [env: TASKKIT_STATE].")
@click.option(
    "--endpoint", metavar="URL", help="The Batch account's endpoint [env: AZURE_BATCH_ENDPOINT]."
)
@click.option(
    "--patience",
    type=DURATION,
    metavar="DURATION",
    default="1m",
    show_default=True,
    help="How long Batch's throttling and failures are retried before the journal is shown "
    "alone (exit 75).",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object.")
def batch_status_command(
    job_id: str, state: str | None, endpoint: str | None, patience: float, as_json: bool
) -> int:
    """Show each task of a job: Batch's state, exit code, retries and node beside taskkit's
    outcome, attempts, interruptions and reason from the journal.

    Without a Batch endpoint (--endpoint, AZURE_BATCH_ENDPOINT; --endpoint '' for none) the
    journal alone is shown; without a state (--state, TASKKIT_STATE), Batch's side alone.
    When Batch cannot be read (unreachable, or no such job), the journal is shown alone with
    a warning (exit 75, or 0 when Batch has no such job). A task of a grouped task is shown as
    its shards. EXIT is Batch's exit code, else the journal's. Below the table, where the
    latest attempt's logs are for each task that has not succeeded (--json: every task's).
    Reads only.

    \b
    Examples:
      taskkit batch status --job-id nightly --state az://state/runs
      taskkit batch status --job-id nightly --json | jq '.tasks[] | select(.outcome == "permanent")'
    """
    from taskkit.batch.jobstatus import joined
    from taskkit.batch.service import ENDPOINT_ENV
    from taskkit.runner.spec import check_setting

    try:
        check_setting("job_id", job_id)
    except ValueError as exc:
        raise UsageError(f"--job-id: {exc}") from None
    state = state if state is not None else os.environ.get("TASKKIT_STATE")
    endpoint = endpoint if endpoint is not None else os.environ.get(ENDPOINT_ENV)
    state, endpoint = state or None, endpoint or None  # '' is none
    if state is None and endpoint is None:
        raise UsageError(
            "nothing to read: give --state URL (the journals), --endpoint URL (Batch), or both"
        )
    journal = _journal(state, job_id, batch=endpoint is not None) if state else []
    batch, code = None, EX_OK
    if endpoint is not None:
        batch, code = _batch(endpoint, job_id, patience, journal=bool(journal))
    rows = joined(journal, batch)
    if as_json:
        _echo(json.dumps({"job": job_id, "tasks": rows}))
        return code
    if endpoint is None:
        _say("note", "no Batch endpoint (--endpoint, AZURE_BATCH_ENDPOINT): the journal alone")
    _table(rows)
    return code


def _batch(
    endpoint: str, job_id: str, patience: float, *, journal: bool
) -> tuple[list[TaskFacts] | None, int]:
    """Batch's side, and the exit code; when it cannot be had and the journal has rows, a
    warning and none (the journal is shown alone)."""
    from taskkit.batch.patience import Patience
    from taskkit.batch.service import open_service

    try:
        with open_service(endpoint, patience=Patience.lasting(patience)) as service:
            if service.job(job_id) is None:
                raise InputNotFound(f"Batch has no job {job_id!r}")
            return service.task_states(job_id), EX_OK
    except (InputNotFound, TransientError) as exc:
        if not journal:
            raise
        _say("warning", f"{exc}: the journal alone")
        return None, EX_OK if isinstance(exc, InputNotFound) else exc.exit_code


def _journal(state: str, job_id: str, *, batch: bool) -> list[dict[str, Any]]:
    """The journal's rows; none (rather than an error) when Batch has the tasks to show."""
    from taskkit.runner.status import job_status
    from taskkit.storage.stores import Stores

    with Stores() as stores:
        try:
            return job_status(stores, state, job_id)
        except InputNotFound:
            if batch:
                return []
            raise


def _table(rows: list[dict[str, Any]]) -> None:
    def text(value: object) -> str:
        """A cell: '-' for none, control characters shown escaped (one row a line)."""
        if value is None:
            return "-"
        return "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(value))

    _echo(
        f"{'TASK':<24} {'BATCH':<9} {'EXIT':>4} {'RETRIES':>7} {'NODE':<14} "
        f"{'TASKKIT':<11} {'ATTEMPTS':>8} {'KILLED':>6}  REASON"
    )
    for row in rows:
        exit_code = row["exit_code"] if row["exit_code"] is not None else row["journal_exit_code"]
        _echo(
            f"{text(row['task']):<24} {text(row['state']):<9} {text(exit_code):>4} "
            f"{text(row['retries']):>7} {text(row['node']):<14} {text(row['outcome']):<11} "
            f"{text(row['attempts']):>8} {text(row['interrupted']):>6}  {text(row['reason'] or '')}"
        )
    unsettled = [r for r in rows if r["logs"] and r["outcome"] != "success"]
    if unsettled:
        _echo("")
        _echo("logs of the latest attempt of each task that has not succeeded:")
        width = max(len(text(r["task"])) for r in unsettled)
        for row in unsettled:
            _echo(f"  {text(row['task']):<{width}}  {text(row['logs'])}")
