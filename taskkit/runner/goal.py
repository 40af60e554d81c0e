"""Where a task stands for some work, from its journal and its published outputs: met,
gone, permanent, being published, open.

Read only; the runner and the dry run decide with the same functions, so a dry run says what
a run would do. An attempt that holds the publishing claim and is alive is waited for (bounded
by :data:`PUBLISH_WAIT`); a dead holder's claim is taken over. A dead holder's claim that
carries the success it was republishing (:attr:`~taskkit.runner.journal.Outcome.replaced`) reads as
that success, checked against the store like any other: an interrupted republish is tried
again, and never turns into a run of the command.

Invariants: the goal is met only while every manifest the success recorded is still at its
recorded version (:mod:`taskkit.runner.published`: one request per DEST); an attempt whose work lost
the race to another work published meanwhile never counts as a success (:func:`lost_race`);
an attempt is counted aloud among the attempts of its work that had ended or been interrupted
when it began, never among those running beside it (:func:`attempt_ordinal`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Literal, NamedTuple

from taskkit.runner.fingerprint import Work, changes
from taskkit.runner.journal import Attempt, Journal, Outcome, Version
from taskkit.storage.stores import Stores

__all__ = [
    "CLAIM_TRIES",
    "PUBLISH_WAIT",
    "Goal",
    "GoalState",
    "attempt_label",
    "attempt_ordinal",
    "goal",
    "holder_alive",
    "lost_race",
    "wait_for",
]

#: How long an attempt waits for another one that holds the publishing claim and is alive.
PUBLISH_WAIT = 900.0
#: Tries at the outcome record when other attempts keep changing it.
CLAIM_TRIES = 5


#: Where a task stands for some work (see :class:`Goal`).
GoalState = Literal["met", "gone", "permanent", "publishing", "open"]


class Goal(NamedTuple):
    """Where a task stands for some work, before an attempt: ``met``, ``gone`` (met once, but
    its published outputs are no longer there as published), ``permanent``, ``publishing``
    (another live attempt is publishing, whatever work) or ``open``."""

    state: GoalState
    outcome: Outcome | None
    version: Version | None
    why: str


def goal(journal: Journal, work: Work, stores: Stores) -> Goal:
    """What the journal says about ``work``, its recorded success checked against the store
    (``stores`` opens the work's outputs)."""
    found = journal.outcome()
    if found is None:
        return Goal("open", None, None, "no attempt has finished it")
    outcome, version = found
    if outcome.state == "publishing" and holder_alive(journal, outcome.attempt):
        # Whatever work it publishes: two attempts never upload at once, even to other work.
        return Goal("publishing", outcome, version, f"attempt {outcome.attempt} is publishing")
    if outcome.state == "publishing" and outcome.replaced is not None:
        outcome = outcome.replaced  # at the claim's version: taking it over replaces the claim
    if outcome.fingerprint != work.fingerprint:
        why = changes(Work.from_json(outcome.work), work) if outcome.work else "the work changed"
        return Goal("open", outcome, version, f"starting afresh: {why}")
    if outcome.state == "success":
        from taskkit.runner.published import gone

        missing = gone(stores, work.outputs, outcome)
        if missing is not None:
            return Goal("gone", outcome, version, missing)
        return Goal("met", outcome, version, f"goal met by attempt {outcome.attempt}")
    if outcome.state == "permanent":
        return Goal("permanent", outcome, version, outcome.reason)
    return Goal("open", outcome, version, outcome.reason or "not finished")


def holder_alive(journal: Journal, number: int) -> bool:
    """Whether attempt ``number`` of the task may still be running, as the journal says."""
    return any(a.number == number and a.state() == "running" for a in journal.attempts())


def lost_race(status: Goal, work: Work, seen: Version | None) -> str | None:
    """Why an attempt of ``work`` that read the outcome at version ``seen`` when it began has
    lost the race, or None: another attempt published other work since."""
    outcome = status.outcome
    if outcome is None or outcome.state != "success" or outcome.fingerprint == work.fingerprint:
        return None
    if status.version == seen:
        return None  # the success this attempt started afresh from: its work may replace it
    return f"lost race: attempt {outcome.attempt} published other work"


def attempt_ordinal(attempts: Sequence[Attempt], fingerprint: str) -> int:
    """Which attempt of its work one beginning now is, for Batch: one more than those of this
    work that have ended or been interrupted. Attempts running beside it (concurrent copies of
    one task) are not among them: they are not retries Batch counted before this one."""
    return 1 + sum(1 for a in attempts if a.fingerprint == fingerprint and a.state() != "running")


def attempt_label(number: int, max_retries: int) -> str:
    """``attempt 3 of 4``, with what it means when Batch allows no more or has no limit."""
    if max_retries < 0:
        return f"attempt {number} (retries unlimited)"
    total = max_retries + 1
    if number > total:
        return (
            f"attempt {number} of {total} (a re-run Batch did not count: after a preemption "
            "or a node failure)"
        )
    return f"attempt {number} of {total}" + (" (the last)" if number == total else "")


def wait_for(
    journal: Journal,
    status: Goal,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Until the outcome changes from ``status`` or its holder dies (bounded)."""
    end = clock() + PUBLISH_WAIT
    pause = 0.5
    while clock() < end:
        sleep(pause)
        pause = min(pause * 2, 5.0)
        found = journal.outcome()
        if found is None or found[1] != status.version:
            return
        if not holder_alive(journal, found[0].attempt):
            return
