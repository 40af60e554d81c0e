"""Journals written record by record, with the times, nodes and ends a test chooses: what a
job on Batch or in the emulator leaves, without running one (the report's tests).

Every record is the journal's own model, written where :class:`~taskkit.runner.journal.Journal`
reads it, so what a test writes here is what ``taskkit run`` would have written.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass

from taskkit.runner.journal import (
    Attempt,
    Journal,
    Moved,
    Outcome,
    Skip,
    StepRecord,
)
from taskkit.storage.stores import Stores

FP = "xxh3-128:22222222222222222222222222222222"
#: When every fake job begins: all times are seconds after it.
T0 = datetime.datetime(2026, 3, 1, 12, 0, 0, tzinfo=datetime.timezone.utc)
#: A host that is never this one: its attempts are judged by their heartbeats.
ELSEWHERE = "batch-node/0000"


def at(seconds: float) -> str:
    """The journal's stamp of ``T0 + seconds``."""
    stamp = T0 + datetime.timedelta(seconds=seconds)
    return stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class FakeJob:
    """One job's journal under ``state``, written through ``stores``."""

    stores: Stores
    state: str
    job: str = "job-1"

    def journal(self, task: str) -> Journal:
        return Journal.open(self.stores, self.state, self.job, task)

    def attempt(
        self,
        task: str,
        number: int,
        *,
        node: str = "node-1",
        start: float,
        end: float | None,
        verdict: str | None = "success",
        exit_code: int | None = 0,
        reason: str = "",
        heartbeat: float | None = None,
        host: str = ELSEWHERE,
        staged: Moved | None = None,
        uploaded: Moved | None = None,
        logs: bool = True,
    ) -> Attempt:
        """An attempt record; ``end`` None leaves it without an end (its heartbeat at
        ``heartbeat``, else its start)."""
        journal = self.journal(task)
        record = Attempt.model_validate(
            {
                "number": number,
                "node": node,
                "host": host,
                "fingerprint": FP,
                "started": at(start),
                "heartbeat": at(heartbeat if heartbeat is not None else end or start),
                "interval": 30.0,
                "logs": journal.logs_url(number) if logs else None,
                "ended": None if end is None else at(end),
                "exit_code": None if end is None else exit_code,
                "verdict": None if end is None else verdict,
                "reason": reason or None,
                "staged": staged,
                "uploaded": uploaded,
            }
        )
        journal.store.put(f"{journal.root}attempts/{number:05d}.json", record.to_bytes(), {})
        return record

    def outcome(
        self,
        task: str,
        state: str,
        attempt: int,
        *,
        exit_code: int = 0,
        reason: str = "",
        replaced: Outcome | None = None,
    ) -> Outcome:
        outcome = Outcome.model_validate(
            {
                "state": state,
                "fingerprint": FP,
                "attempt": attempt,
                "at": at(0),
                "exit_code": exit_code,
                "reason": reason,
                "replaced": replaced,
            }
        )
        journal = self.journal(task)
        journal.store.put(journal.root + "outcome.json", outcome.to_bytes(), {})
        return outcome

    def skip(
        self, task: str, goal: str, attempt: int, *, start: float, node: str = "node-1"
    ) -> None:
        self.journal(task).record_skip(
            Skip.model_validate(
                {
                    "goal": goal,
                    "attempt": attempt,
                    "node": node,
                    "started": at(start),
                    "at": at(start + 0.2),
                    "exit_code": 0 if goal == "met" else 3,
                }
            )
        )

    def step(self, task: str, name: str, attempt: int) -> None:
        self.journal(task).record_step(
            StepRecord(name=name, fingerprint=FP, attempt=attempt, at=at(0))
        )
