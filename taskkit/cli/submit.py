"""``taskkit batch submit``: a file of tasks added to a Batch job, idempotently."""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING

import click

from taskkit.cli._app import CONTEXT, DURATION
from taskkit.cli.batch import batch_group
from taskkit.cli.report import echo as _echo
from taskkit.cli.report import say as _say
from taskkit.exceptions import EX_OK, DataError

if TYPE_CHECKING:
    from taskkit.batch.submit import Submission, Submitted

__all__ = ["submit_command"]


@batch_group.command("submit", context_settings=CONTEXT)
@click.argument("tasks", metavar="TASKS")
@click.option("--job-id", required=True, metavar="ID", help="The job the tasks are added to.")
@click.option("--pool-id", metavar="ID", help="With --create-job: the pool the new job runs on.")
@click.option(
    "--create-job",
    is_flag=True,
    help="Create the job when it is not there (usesTaskDependencies when a task has "
    "dependsOn, onTaskFailure performExitOptionsJobAction when a task sets a jobAction).",
)
@click.option(
    "--endpoint",
    metavar="URL",
    help="The Batch account's endpoint [env: AZURE_BATCH_ENDPOINT].",
)
@click.option(
    "--dry-run",
    is_flag=True,
    help="Check every task and print the requests it would send; send nothing.",
)
@click.option(
    "--patience",
    type=DURATION,
    metavar="DURATION",
    default="7m",
    show_default=True,
    help="How long throttling, server errors and lost connections are retried before the "
    "run stops (75); Batch asks clients for at least 5m.",
)
@click.option(
    "--progress-interval",
    type=DURATION,
    metavar="DURATION",
    default="2s",
    show_default=True,
    help="How often a progress line is written while tasks are sent.",
)
@click.option(
    "-j",
    "--jobs",
    type=click.IntRange(min=1, max=64),
    default=4,
    show_default=True,
    metavar="N",
    help="Requests in flight at once.",
)
@click.option("--json", "as_json", is_flag=True, help="The outcome as one JSON object.")
def submit_command(
    tasks: str,
    job_id: str,
    pool_id: str | None,
    create_job: bool,
    endpoint: str | None,
    dry_run: bool,
    patience: float,
    progress_interval: float,
    jobs: int,
    as_json: bool,
) -> int:
    """Add the tasks of TASKS (a file of task JSON, - for stdin) to job --job-id.

    TASKS is what 'taskkit batch task-json' and 'taskkit batch tasks' print and 'taskkit local
    run' takes. Every task is checked first; the tasks already in the job are not sent again,
    and a task Batch reports as existing counts as already there, so running the same command
    again adds only what is missing. Requests hold at most 100 tasks and stay under Batch's
    1 MB limit; throttling, server errors and lost connections are retried for several
    minutes. The job must exist, or give --create-job --pool-id POOL (reusing one job is the
    norm: an account may hold only 100-300 active jobs).

    Credentials: AZURE_BATCH_ACCOUNT and AZURE_BATCH_ACCESS_KEY (a shared key), else a managed
    identity or an Azure CLI login (DefaultAzureCredential). Exit codes: 0 every task is in the
    job; 65 some tasks were refused as written (each is named); 66 no such job; 75 the service
    stayed unavailable (re-run to add the rest); 77/78 access or settings.

    \b
    Examples:
      taskkit batch submit tasks.json --job-id nightly --dry-run
      taskkit batch submit tasks.json --job-id nightly
      taskkit batch submit tasks.json --job-id run-7 --create-job --pool-id spot-d4
    """
    from taskkit.batch.patience import Patience
    from taskkit.batch.service import open_service
    from taskkit.batch.submit import Submitted, plan_submission, submit
    from taskkit.cli.taskfile import read_task_file

    waiting = Patience.lasting(patience)
    text, source = read_task_file(tasks, "batch submit")
    plan = plan_submission(text, source, job_id=job_id, pool_id=pool_id, create_job=create_job)
    if dry_run:
        lines = plan.lines(endpoint)
        if as_json:
            _echo(json.dumps({"dryRun": True, "requests": lines[1:], "tasks": len(plan.tasks)}))
        else:
            for line in lines:
                _echo(line)
        return EX_OK
    outcome = Submitted()
    try:
        with open_service(endpoint, patience=waiting) as service:
            submit(
                plan,
                service,
                progress=_Progress(progress_interval),
                patience=waiting,
                outcome=outcome,
                jobs=jobs,
            )
    except KeyboardInterrupt:
        _say(
            "note",
            f"interrupted: job {plan.job_id}: {len(outcome.added):,} added, "
            f"{len(outcome.existing):,} already there so far; running the same command again "
            "adds only the rest",
        )
        raise
    return _report(plan, outcome, as_json)


class _Progress:
    """A line on stderr every few seconds while a long submission runs."""

    def __init__(self, every: float) -> None:
        self.every = every
        self.shown = time.monotonic()

    def __call__(self, outcome: Submitted, total: int) -> None:
        now = time.monotonic()
        if now - self.shown < self.every:
            return
        self.shown = now
        done = outcome.done + len(outcome.failed)
        click.echo(
            f"taskkit: submitting: {done:,}/{total:,} tasks ({len(outcome.added):,} added, "
            f"{len(outcome.existing):,} already there, {len(outcome.failed):,} failed)",
            err=True,
        )


def _report(plan: Submission, outcome: Submitted, as_json: bool) -> int:
    """The summary on stdout, each refused task on stderr; the exit code."""
    summary = (
        f"job {plan.job_id}: {len(outcome.added):,} added, {len(outcome.existing):,} already "
        f"there, {len(outcome.failed):,} failed, {len(outcome.unsent):,} not sent"
        + (" (job created)" if outcome.job_created else "")
    )
    if as_json:
        _echo(
            json.dumps(
                {
                    "jobId": plan.job_id,
                    "jobCreated": outcome.job_created,
                    "added": outcome.added,
                    "existing": outcome.existing,
                    "failed": outcome.failed,
                    "unsent": outcome.unsent,
                    "stopped": None if outcome.stopped is None else str(outcome.stopped),
                }
            )
        )
    else:
        _echo(summary)
    for task_id, reason in outcome.failed.items():
        _say("error", f"task {task_id!r} was refused: {reason}")
    if outcome.existing and not as_json:
        _say(
            "note",
            f"{len(outcome.existing):,} task(s) were already in the job and were left as they "
            "are (Batch keeps a task's first definition: a changed task needs a new id)",
        )
    if outcome.stopped is not None:
        _say(
            "error",
            f"{outcome.stopped} ({len(outcome.unsent):,} task(s) not sent; running the same "
            "command again adds only those)",
        )
        return outcome.stopped.exit_code
    if outcome.failed:
        return DataError.exit_code
    return EX_OK
