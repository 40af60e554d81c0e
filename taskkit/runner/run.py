"""The goal-seeking runner behind ``taskkit run``: one attempt of a task, safe to repeat.

The flow of every call::

    read the journal -> goal met for this work (its manifests still published)? exit 0
                     -> permanent failure recorded for this work? exit with its code
                     -> met once, published outputs gone? republish them from the working
                        directory if it holds them (no command), else run again
                     -> else claim the next attempt number and record its start
    end what an interrupted attempt on this host left running of its command
    -> stage inputs (removing what taskkit staged from blobs that are gone)
    -> remove the outputs earlier work of this task left in the working directory
    -> restore the checkpoint -> run the command (logs teed and streamed; it dies with taskkit)
    -> decide with the exit-code policy -> on success: claim, upload outputs, record success
    -> record the outcome (permanent; retries exhausted) and the attempt's end -> exit code

Each step of an attempt is a phase flushed to its stored ``taskkit.txt`` at once, so the store
says how far an attempt got whatever killed it.

Invariants: the command runs only after its attempt is recorded, so a ``kill -9`` anywhere
leaves an attempt without an end, counted as interrupted. Only the holder of the
``publishing`` claim uploads outputs, and success is recorded by replacing that claim, so two
attempts running at once publish once; an attempt whose work lost to other work published
meanwhile exits retryable (204). Nothing is written in a dry run.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from taskkit.cli.report import say as _say
from taskkit.exceptions import ConfigError, TaskFailure, UsageError
from taskkit.runner.fingerprint import Work, describe
from taskkit.runner.goal import CLAIM_TRIES, goal, wait_for
from taskkit.runner.journal import Journal, Outcome
from taskkit.runner.spec import RunSpec
from taskkit.storage.stores import Stores

if TYPE_CHECKING:
    from taskkit.runner.attempt import Launcher
    from taskkit.runner.published import Gone

__all__ = ["describe_work", "gone_outputs", "required", "run"]


def describe_work(spec: RunSpec, stores: Stores) -> tuple[Work, TaskFailure | None]:
    """The work, or, when an input cannot be listed, the work as given and why not."""
    try:
        return describe(spec.command, spec.inputs, spec.output_texts, stores), None
    except TaskFailure as exc:
        missing = tuple((given, (("", "unavailable"),)) for given in spec.input_texts)
        return Work(spec.command, missing, spec.output_texts), exc


def required(spec: RunSpec) -> tuple[str, str, str]:
    """The state, job id and task id a run needs; a clear error for what is missing."""
    if not spec.command:
        raise UsageError("no command to run (taskkit run [OPTIONS] -- COMMAND [ARGS...])")
    if not spec.state:
        raise ConfigError("no state: give --state URL or set TASKKIT_STATE")
    if not spec.job_id or not spec.task_id:
        raise ConfigError(
            "no job or task id: give --job-id and --task-id (Azure Batch sets "
            "AZ_BATCH_JOB_ID and AZ_BATCH_TASK_ID on its nodes)"
        )
    return spec.state, spec.job_id, spec.task_id


def run(
    spec: RunSpec,
    *,
    environ: Mapping[str, str] | None = None,
    launch: Launcher | None = None,
    say: Callable[[str, str], None] = _say,
    grace: float = 10.0,
) -> int:
    """Carry out one attempt of the task ``spec`` describes (or none, if its goal is met or
    its failure permanent); the exit code for Batch. ``launch`` runs the command (default
    :func:`~taskkit.runner.command.run_logged`). A goal met costs no import of the attempt's
    machinery (staging, upload, logs)."""
    state, job_id, task_id = required(spec)
    policy = spec.policy()
    env = dict(os.environ if environ is None else environ)
    # The journal's requests keep the retry settings the transfers keep.
    with Stores(spec.retry()) as stores:
        journal = Journal.open(stores, state, job_id, task_id)
        work, unavailable = describe_work(spec, stores)
        where = f"job {job_id}, task {task_id}"
        for _ in range(CLAIM_TRIES):
            status = goal(journal, work, stores)
            if status.state != "publishing":
                break
            say("note", f"{where}: {status.why}; waiting for it")
            wait_for(journal, status)
        if status.state == "met":
            say("note", f"{where}: {status.why}; the command is not run again")
            return 0
        if status.state == "permanent" and status.outcome is not None:
            say(
                "error",
                f"{where}: permanent failure in attempt {status.outcome.attempt}: "
                f"{status.why}; not run again",
            )
            return status.outcome.exit_code
        gone = None
        if status.state == "gone" and status.outcome is not None:
            gone = gone_outputs(spec, stores, journal, status.outcome, status.why)
            say("note", f"{where}: {gone.line}")
        elif status.outcome is not None and status.why.startswith("starting afresh"):
            say("note", f"{where}: {status.why}")
        from taskkit.runner.attempt import AttemptRun
        from taskkit.runner.command import run_logged

        attempt = AttemptRun(
            spec,
            stores,
            journal,
            work,
            policy,
            env,
            launch or run_logged,
            say,
            grace,
            seen=status.version,
            gone=gone,
        )
        return attempt.run(unavailable)


def gone_outputs(
    spec: RunSpec,
    stores: Stores,
    journal: Journal,
    outcome: Outcome,
    why: str,
    *,
    dry_run: bool = False,
) -> Gone:
    """Published outputs gone: whether the working directory still holds them as published."""
    from taskkit.runner.published import Gone, unmatched
    from taskkit.transfer.stage_plan import default_workdir

    workdir = spec.workdir or default_workdir()
    detail = unmatched(stores, journal, spec.outputs, outcome, workdir, dry_run=dry_run)
    return Gone(why, outcome.attempt, detail is None, detail or "")
