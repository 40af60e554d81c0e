"""``taskkit status``: what the journal says about a task, or about every task of a job.

Read only: a status never writes, so it may run anywhere, any time, as often as wanted.
Job and task ids are Batch ids, checked as ``taskkit run`` checks them, so that an id never
names a place outside the job's or the state root's folder (``..``, ``../x``).
A ``publishing`` claim whose holder ended or was interrupted is shown as ``stale``, never as
an outcome: no attempt is publishing, and a claim that carries the success it was
republishing shows that success, which the next run republishes.
"""

from __future__ import annotations

from typing import Any

from taskkit.exceptions import DataError, InputNotFound, UsageError
from taskkit.redaction import redact
from taskkit.runner.journal import Attempt, AttemptState, Journal, Outcome
from taskkit.storage.stores import Stores
from taskkit.storage.urls import bad_url

__all__ = ["check_job", "job_status", "task_status"]


#: Azure Batch's rule for job and task ids, the one :class:`~taskkit.runner.spec.RunSpec` applies.
def _check_id(option: str, value: str) -> None:
    """A Batch id, checked as ``taskkit run`` checks it: it names no place outside the job."""
    from taskkit.runner.spec import check_setting

    try:
        check_setting("task_id", value)
    except ValueError as exc:
        raise UsageError(f"{option}: {exc}") from None


def task_status(stores: Stores, state: str, job_id: str, task_id: str) -> dict[str, Any]:
    """Attempts, steps and outcome of one task, as plain data (the ``--json`` output)."""
    _check_state(state)
    _check_id("--job-id", job_id)
    _check_id("--task-id", task_id)
    journal = Journal.open(stores, state, job_id, task_id)
    found = journal.outcome()
    attempts = journal.attempts()
    if found is None and not attempts:
        raise InputNotFound(f"no journal of task {task_id} of job {job_id} at {journal.url('')}")
    outcome = found[0] if found is not None else None
    return {
        "job": job_id,
        "task": task_id,
        "journal": journal.url(""),
        "outcome": None if outcome is None else _outcome(outcome, attempts),
        "attempts": [
            {
                "number": a.number,
                "state": a.state(),
                "node": a.node,
                "started": a.started,
                "ended": a.ended,
                "exit_code": a.exit_code,
                "verdict": a.verdict,
                "reason": a.reason,
                "fingerprint": a.fingerprint,
                "logs": a.logs,
            }
            for a in attempts
        ],
        "steps": [
            {"name": s.name, "attempt": s.attempt, "at": s.at, "files": len(s.files)}
            for s in journal.steps()
        ],
    }


def _outcome(outcome: Outcome, attempts: list[Attempt]) -> dict[str, Any]:
    shown: dict[str, Any] = {
        "state": outcome.state,
        "attempt": outcome.attempt,
        "at": outcome.at,
        "exit_code": outcome.exit_code,
        "reason": outcome.reason,
        "fingerprint": outcome.fingerprint,
        "manifests": list(outcome.manifests),
        "published": [{"url": p.url, "version": p.version} for p in outcome.published],
    }
    if outcome.state == "publishing":
        shown["stale"] = _stale(outcome, attempts)
        shown["replaced"] = None if outcome.replaced is None else _outcome(outcome.replaced, [])
    return shown


def _stale(claim: Outcome, attempts: list[Attempt]) -> AttemptState | None:
    """How the holder of ``claim`` stopped ("ended", "interrupted"), or None while it runs."""
    holder = next((a for a in attempts if a.number == claim.attempt), None)
    if holder is None:
        return "interrupted"  # a claim's holder always has a record: this one is gone
    state = holder.state()
    return None if state == "running" else state


def job_status(stores: Stores, state: str, job_id: str) -> list[dict[str, Any]]:
    """One row per task of the job that has a journal."""
    check_job(state, job_id)
    rows: list[dict[str, Any]] = []
    tasks = Journal.tasks(stores, state, job_id)
    if not tasks:
        raise InputNotFound(f"no task of job {job_id} has a journal under {redact(state)}")
    for task_id in tasks:
        journal = Journal.open(stores, state, job_id, task_id)
        try:
            found = journal.outcome()
            attempts = journal.attempts()
        except DataError as exc:  # one damaged record: that task's row says so, not the table
            rows.append(
                {
                    "task": task_id,
                    "outcome": "unreadable",
                    "attempts": None,
                    "interrupted": None,
                    "exit_code": None,
                    "reason": str(exc),
                    "logs": None,
                }
            )
            continue
        latest = attempts[-1] if attempts else None
        outcome = found[0] if found is not None else None
        reason = ""
        if outcome is not None and outcome.state == "publishing":
            stale = _stale(outcome, attempts)
            if stale is not None:  # no attempt is publishing: what the journal holds besides
                reason = f"stale publishing claim of attempt {outcome.attempt} ({stale})"
                outcome = outcome.replaced
        rows.append(
            {
                "task": task_id,
                "outcome": "running"
                if outcome is None and latest is not None and latest.state() == "running"
                else (outcome.state if outcome is not None else "open"),
                "attempts": len(attempts),
                "interrupted": sum(1 for a in attempts if a.state() == "interrupted"),
                "exit_code": outcome.exit_code if outcome is not None else None,
                "reason": "; ".join(filter(None, [outcome.reason if outcome else "", reason])),
                "logs": latest.logs if latest is not None else None,
            }
        )
    return rows


def check_job(state: str, job_id: str) -> None:
    """Refuse (:class:`UsageError`) a state URL that cannot be parsed or a job id that is no
    Batch id, before any journal is read."""
    _check_state(state)
    _check_id("--job-id", job_id)


def _check_state(state: str) -> None:
    """Refuse a state URL that cannot be parsed, naming it as given (not a journal below it)."""
    problem = bad_url(state)
    if problem is not None:
        raise UsageError(f"state {problem}")
