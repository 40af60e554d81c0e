"""What a run of the emulated pool did: each attempt, each task, the job (``taskkit local run``'s
report and its events).

Invariants: the report is JSON (REST-style camelCase keys), times in UTC ISO 8601 with
milliseconds; a report file is written whole or not at all; nothing in it comes from a task's
environment, so no credential can reach it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from taskkit.batch.chaos import Chaos
from taskkit.batch.tasks import BatchTask

__all__ = ["Attempt", "EmulatorReport", "Event", "TaskReport", "TaskState"]

TaskState = Literal[
    "waiting", "ready", "running", "succeeded", "failed", "blocked", "not-run", "interrupted"
]


@dataclass
class Attempt:
    """One start of a task's command line on a node."""

    node: str
    start: float
    retry: int
    end: float | None = None
    exit_code: int | None = None
    chaos: Literal["kill", "preempt"] | None = None
    wall_clock: bool = False
    note: str | None = None

    def as_json(self) -> dict[str, object]:
        return {
            "node": self.node,
            "start": _iso(self.start),
            "end": None if self.end is None else _iso(self.end),
            "seconds": None if self.end is None else round(self.end - self.start, 3),
            "retry": self.retry,
            "exitCode": self.exit_code,
            "chaos": self.chaos,
            "wallClock": self.wall_clock,
            "note": self.note,
        }


@dataclass
class TaskReport:
    """A task's run: its state now and every attempt."""

    task: BatchTask
    state: TaskState = "waiting"
    exit_code: int | None = None
    retries: int = 0
    requeues: int = 0
    attempts: list[Attempt] = field(default_factory=list)
    dependency: Literal["satisfy", "block"] | None = None
    note: str | None = None
    struck: int = 0
    clock: float | None = None  # monotonic start of the wall clock

    @property
    def id(self) -> str:
        return self.task.id

    def as_json(self) -> dict[str, object]:
        return {
            "id": self.id,
            "state": self.state,
            "exitCode": self.exit_code,
            "retries": self.retries,
            "requeues": self.requeues,
            "note": self.note,
            "attempts": [a.as_json() for a in self.attempts],
        }


@dataclass(frozen=True)
class Event:
    """Something that happened to a task (what the command line shows)."""

    kind: Literal["start", "retry", "requeue", "succeeded", "failed", "blocked", "preempt", "job"]
    task: str
    node: str | None
    text: str
    running: int = 0  # attempts running in the whole pool after this event


@dataclass
class EmulatorReport:
    """The job's outcome: every task's report, and what the chaos did."""

    job_id: str
    nodes: int
    slots: int
    seed: int | None
    chaos: Chaos
    tasks: list[TaskReport]
    started: float
    ended: float | None = None
    terminated: str | None = None
    kills: int = 0
    preemptions: int = 0
    storage_faults: int = 0

    def count(self, state: TaskState) -> int:
        return sum(1 for t in self.tasks if t.state == state)

    @property
    def ok(self) -> bool:
        return all(t.state == "succeeded" for t in self.tasks)

    #: The exit code of a run stopped by a signal (130 for SIGINT), set by whoever stopped it.
    stopped_code: int | None = None

    @property
    def exit_code(self) -> int:
        """0 when every task succeeded, the signal's code when the run was stopped, else 1."""
        if self.stopped_code is not None:
            return self.stopped_code
        return 0 if self.ok else 1

    def unsuccessful(self) -> list[TaskReport]:
        return [t for t in self.tasks if t.state != "succeeded"]

    def summary(self) -> dict[str, object]:
        return {
            "succeeded": self.count("succeeded"),
            "failed": self.count("failed"),
            "blocked": self.count("blocked"),
            "notRun": sum(1 for t in self.tasks if t.state in ("not-run", "waiting", "ready")),
            "interrupted": self.count("interrupted"),
            "retries": sum(t.retries for t in self.tasks),
            "requeues": sum(t.requeues for t in self.tasks),
            "kills": self.kills,
            "preemptions": self.preemptions,
            "storageFaults": self.storage_faults,
            "seconds": None if self.ended is None else round(self.ended - self.started, 3),
        }

    def as_json(self) -> dict[str, object]:
        return {
            "jobId": self.job_id,
            "nodes": self.nodes,
            "slots": self.slots,
            "seed": self.seed,
            "chaos": self.chaos.text() if self.chaos else None,
            "exitCode": self.exit_code,
            "terminated": self.terminated,
            "started": _iso(self.started),
            "ended": None if self.ended is None else _iso(self.ended),
            "summary": self.summary(),
            "tasks": [t.as_json() for t in self.tasks],
        }

    def write(self, path: Path) -> None:
        """The report as JSON at ``path``, whole or not at all (written aside, then renamed)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        aside = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            aside.write_text(json.dumps(self.as_json(), indent=1) + "\n", encoding="utf-8")
            os.replace(aside, path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                aside.unlink()


def _iso(seconds: float) -> str:
    stamp = dt.datetime.fromtimestamp(seconds, dt.timezone.utc)
    return stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z")
