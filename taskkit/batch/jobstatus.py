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

import os
import shlex
from collections.abc import Mapping, Sequence
from typing import Any

from taskkit.batch.service import TaskFacts

__all__ = ["joined", "shards"]


def joined(
    journal: Sequence[Mapping[str, Any]], batch: Sequence[TaskFacts] | None
) -> list[dict[str, Any]]:
    """One row per task: ``task``; Batch's ``state``, ``exit_code``, ``retries``,
    ``requeues``, ``node`` (None without Batch); the journal's ``outcome``, ``attempts``,
    ``interrupted``, ``reason``, ``logs`` (None when the task has no journal)."""
    by_id = {str(row["task"]).lower(): row for row in journal}
    rows: list[dict[str, Any]] = []
    for facts in batch or ():
        grouped = shards(facts.command_line)
        for task in grouped or (facts.id,):
            group = facts.id if grouped else None
            rows.append(_row(task, facts, by_id.pop(task.lower(), None), group))
    for row in journal:
        if str(row["task"]).lower() in by_id:
            rows.append(_row(str(row["task"]), None, row, None))
    return rows


def shards(command_line: str) -> tuple[str, ...]:
    """The ``--task-id`` options of each ``taskkit run`` in a command line (inside its
    ``sh -c`` line too), never an argument of the command it runs: the journals a task
    (a grouped one: several) keeps its work in."""
    try:
        words = shlex.split(command_line)
    except ValueError:
        return ()
    found: list[str] = []
    options = False  # between `taskkit run` and its `--`
    for i, word in enumerate(words):
        if word == "-c" and i + 1 < len(words) and not options:
            found += shards(words[i + 1])
        elif word == "run" and i and os.path.basename(words[i - 1]) == "taskkit":
            options = True
        elif word in ("--", "&&", "||", ";"):
            options = False
        elif options and word == "--task-id" and i + 1 < len(words):
            found.append(words[i + 1])
        elif options and word.startswith("--task-id="):
            found.append(word.split("=", 1)[1])
    return tuple(dict.fromkeys(found))


def _row(
    task: str, facts: TaskFacts | None, journal: Mapping[str, Any] | None, group: str | None
) -> dict[str, Any]:
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
        "group": group,
    }
