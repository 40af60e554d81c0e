"""One view of a job: Batch's task states joined with taskkit's journal
(``taskkit batch status``).

Pure: rows in, rows out. A task is matched by id ignoring case (as Batch matches ids); a
grouped task (``taskkit batch tasks --group``) stands for its shards, each with a journal of its
own: a row per shard, with the group's Batch state and the group's id in ``group``. A task Batch
knows and the journal does not (it has not started, or it runs without taskkit), and a journal
with no task in Batch (another job's, or a deleted task), are both kept, each with the half it
has. Rows follow Batch's order, then the journal's own.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from taskkit.batch.service import TaskFacts

__all__ = ["joined"]


def joined(
    journal: Sequence[Mapping[str, Any]], batch: Sequence[TaskFacts] | None
) -> list[dict[str, Any]]:
    """One row per task: ``task``; Batch's ``state``, ``exit_code``, ``retries``,
    ``requeues``, ``node`` (None without Batch); the journal's ``outcome``, ``attempts``,
    ``interrupted``, ``reason``, ``logs`` (None when the task has no journal)."""
    by_id = {str(row["task"]).lower(): row for row in journal}
    rows: list[dict[str, Any]] = []
    for facts in batch or ():
        for task in facts.shards or (facts.id,):
            joined_row = _row(task, facts, by_id.pop(task.lower(), None))
            joined_row["group"] = facts.id if facts.shards else None
            rows.append(joined_row)
    for row in journal:
        if str(row["task"]).lower() in by_id:
            rows.append(_row(str(row["task"]), None, row))
    return rows


def _row(task: str, facts: TaskFacts | None, journal: Mapping[str, Any] | None) -> dict[str, Any]:
    return {
        "task": task,
        "state": facts.state if facts else None,
        "exit_code": facts.exit_code if facts else None,
        "retries": facts.retries if facts else None,
        "requeues": facts.requeues if facts else None,
        "node": facts.node if facts else None,
        "outcome": journal["outcome"] if journal else None,
        "attempts": journal["attempts"] if journal else None,
        "interrupted": journal.get("interrupted", 0) if journal else None,
        "journal_exit_code": journal["exit_code"] if journal else None,
        "reason": journal["reason"] if journal else None,
        "logs": journal["logs"] if journal else None,
        "group": None,
    }
