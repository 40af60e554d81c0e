"""The goal-seeking runner behind ``taskkit run``: one attempt of a task, safe to repeat.

Every call is plan -> execute -> record: :func:`~taskkit.runner.plan.plan_attempt` reads and
decides (the very plan ``taskkit run --dry-run`` prints), :class:`~taskkit.runner.attempt.
AttemptRun` carries it out and records it. The flow::

    plan: read the journal -> goal met for this work (its manifests still published)? exit 0
                     -> permanent failure recorded for this work? exit with its code
                        (either noted in the journal's skips/, for reports)
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
meanwhile exits retryable (204). Nothing is written in a dry run. The environment is read
once, here (or given): everything below reads the mapping handed down.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING

from taskkit.exceptions import TaskFailure
from taskkit.observer import Observer, observer_or_default
from taskkit.runner.goal import Goal, wait_for
from taskkit.runner.journal import Journal, Skip, now
from taskkit.runner.plan import AttemptPlan, plan_attempt
from taskkit.runner.spec import RunSpec
from taskkit.storage.stores import Stores

if TYPE_CHECKING:
    from taskkit.runner.attempt import Launcher

__all__ = ["run"]


def run(
    spec: RunSpec,
    *,
    environ: Mapping[str, str] | None = None,
    launch: Launcher | None = None,
    observer: Observer | None = None,
    grace: float = 10.0,
    stores: Stores | None = None,
) -> int:
    """Carry out one attempt of the task ``spec`` describes (or none, if its goal is met or
    its failure permanent); the exit code for Batch. ``environ`` is the environment the
    attempt reads and its command gets (default: this process's, read once here);
    ``launch`` runs the command (default :func:`~taskkit.runner.command.run_logged`). A goal
    met costs no import of the attempt's machinery (staging, upload, logs). Every request of
    the attempt (journal, transfers, checkpoint, logs) goes through one set of stores:
    ``stores`` when given (left open; the spec's retry settings then apply to nothing), else
    one opened with the spec's retry settings and closed at the end. ``observer`` (default:
    the ``"taskkit"`` logger) hears what it does."""
    told = observer_or_default(observer)
    started = now()
    env = dict(os.environ if environ is None else environ)
    where = f"job {spec.job_id}, task {spec.task_id}"

    def waiting(journal: Journal, status: Goal) -> None:
        told.note(f"{where}: {status.why}; waiting for it")
        wait_for(journal, status)

    with contextlib.ExitStack() as stack:
        if stores is None:
            # The journal's requests keep the retry settings the transfers keep.
            stores = stack.enter_context(Stores(spec.retry()))
        plan = plan_attempt(spec, stores, environ=env, wait=waiting)
        status = plan.goal
        if status.state == "met":
            told.note(f"{where}: {status.why}; the command is not run again")
            _skipped(stores, plan, env, started)
            return 0
        if status.state == "permanent" and status.outcome is not None:
            told.problem(
                f"{where}: permanent failure in attempt {status.outcome.attempt}: "
                f"{status.why}; not run again",
            )
            _skipped(stores, plan, env, started)
            return status.outcome.exit_code
        if plan.gone is not None:
            told.note(f"{where}: {plan.gone.line}")
        elif status.outcome is not None and status.why.startswith("starting afresh"):
            told.note(f"{where}: {status.why}")
        from taskkit.runner.attempt import AttemptContext, AttemptRun
        from taskkit.runner.command import run_logged

        context = AttemptContext(
            stores=stores, environ=env, launch=launch or run_logged, observer=told, grace=grace
        )
        return AttemptRun(plan=plan, context=context).run()


def _skipped(stores: Stores, plan: AttemptPlan, env: Mapping[str, str], started: str) -> None:
    """Note in the journal a run that started no attempt (what reports count as saved).
    Best effort: the goal stands whether or not the note is written."""
    status = plan.goal
    if status.outcome is None or status.state not in ("met", "permanent"):
        return
    skip = Skip(
        goal="met" if status.state == "met" else "permanent",
        attempt=status.outcome.attempt,
        node=env.get("AZ_BATCH_NODE_ID", ""),
        started=started,
        at=now(),
        exit_code=0 if status.state == "met" else status.outcome.exit_code,
    )
    with contextlib.suppress(TaskFailure):
        Journal.open(stores, plan.spec.state or "", plan.job_id, plan.task_id).record_skip(skip)
