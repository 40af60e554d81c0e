"""``taskkit batch status``: a job's tasks as Batch and taskkit's journal see them, one table."""

from __future__ import annotations

import json
import os
from typing import Any

import click

from taskkit.cli._app import CONTEXT
from taskkit.cli.batch import batch_group
from taskkit.cli.report import echo as _echo
from taskkit.cli.report import say as _say
from taskkit.exceptions import EX_OK, InputNotFound, UsageError

__all__ = ["batch_status_command"]


@batch_group.command("status", context_settings=CONTEXT)
@click.option("--job-id", required=True, metavar="ID", help="The job.")
@click.option("--state", metavar="URL", help="Where the tasks' journals live [env: TASKKIT_STATE].")
@click.option(
    "--endpoint", metavar="URL", help="The Batch account's endpoint [env: AZURE_BATCH_ENDPOINT]."
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object.")
def batch_status_command(
    job_id: str, state: str | None, endpoint: str | None, as_json: bool
) -> int:
    """Show each task of a job: Batch's state, exit code, retries and node beside taskkit's
    outcome, attempts, interruptions and reason from the journal.

    Without a Batch endpoint (--endpoint, AZURE_BATCH_ENDPOINT) the journal alone is shown;
    without a state (--state, TASKKIT_STATE), Batch's side alone. Reads only.

    \b
    Examples:
      taskkit batch status --job-id nightly --state az://state/runs
      taskkit batch status --job-id nightly --json | jq '.tasks[] | select(.outcome == "permanent")'
    """
    from taskkit.batch.jobstatus import joined
    from taskkit.runner.spec import check_setting

    try:
        check_setting("job_id", job_id)
    except ValueError as exc:
        raise UsageError(f"--job-id: {exc}") from None
    state = state or os.environ.get("TASKKIT_STATE") or None
    endpoint = endpoint or os.environ.get("AZURE_BATCH_ENDPOINT") or None
    if state is None and endpoint is None:
        raise UsageError(
            "nothing to read: give --state URL (the journals), --endpoint URL (Batch), or both"
        )
    journal = _journal(state, job_id, batch=endpoint is not None) if state else []
    batch = None
    if endpoint is not None:
        from taskkit.batch.service import open_service

        with open_service(endpoint) as service:
            if service.job(job_id) is None:
                raise InputNotFound(f"Batch has no job {job_id!r}")
            batch = service.task_states(job_id)
    rows = joined(journal, batch)
    if as_json:
        _echo(json.dumps({"job": job_id, "tasks": rows}))
        return EX_OK
    if endpoint is None:
        _say("note", "no Batch endpoint (--endpoint, AZURE_BATCH_ENDPOINT): the journal alone")
    _table(rows)
    return EX_OK


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
        return "-" if value is None else str(value)

    _echo(
        f"{'TASK':<24} {'BATCH':<9} {'EXIT':>4} {'RETRIES':>7} {'NODE':<14} "
        f"{'TASKKIT':<11} {'ATTEMPTS':>8} {'KILLED':>6}  REASON"
    )
    for row in rows:
        exit_code = row["exit_code"] if row["exit_code"] is not None else row["journal_exit_code"]
        _echo(
            f"{row['task']:<24} {text(row['state']):<9} {text(exit_code):>4} "
            f"{text(row['retries']):>7} {text(row['node']):<14} {text(row['outcome']):<11} "
            f"{text(row['attempts']):>8} {text(row['interrupted']):>6}  {row['reason'] or ''}"
        )
