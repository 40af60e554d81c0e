"""A job's journal as a timeline: every attempt and every run that started none, on a time
axis per node, with what the job moved and what it did not have to (``taskkit report``).

Read only, and from the journal alone (so a job on Batch and one in the emulator read alike):
one listing of the job's folder, then the records it names, read ``jobs`` at a time. A record
that cannot be read is named in ``problems`` rather than ending the whole report.

What each bar is (its :data:`Kind`): an attempt that ended is ``success``, ``retryable`` or
``permanent`` by its verdict, or ``killed`` when taskkit was stopped by a signal (Batch
terminating it, a wall clock); an attempt without an end is ``interrupted`` once its process
is gone or its heartbeat stale (``kill -9``, a lost or preempted node: the journal cannot tell
these apart), else ``running``. A run that started no attempt is ``met`` (the goal was met) or
``refused`` (a permanent failure of its work was recorded). Times are seconds since the epoch.
"""

from __future__ import annotations

import datetime
import functools
import heapq
from collections import defaultdict
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Literal, TypeVar

from pydantic import BaseModel, ValidationError

from taskkit.exceptions import DataError, InputNotFound, TaskFailure
from taskkit.redaction import redact
from taskkit.runner.journal import Attempt, Outcome, Skip, StepRecord, host_identity
from taskkit.runner.status import check_job
from taskkit.storage.base import Store
from taskkit.storage.stores import Stores

__all__ = ["KINDS", "Bar", "Kind", "Saved", "TaskRow", "Timeline", "read_timeline"]

Kind = Literal[
    "success", "retryable", "permanent", "killed", "interrupted", "running", "met", "refused"
]
#: Every kind of bar, in the order a legend lists them.
KINDS: tuple[Kind, ...] = (
    "success",
    "retryable",
    "permanent",
    "killed",
    "interrupted",
    "running",
    "met",
    "refused",
)
#: How :mod:`taskkit.runner.attempt` begins the reason of an attempt a signal stopped.
_STOPPED = "taskkit was stopped by "
#: Records read at once: the journal's files are small, so reads wait on the network.
DEFAULT_JOBS = 32
_BATCH = 32
_M = TypeVar("_M", bound=BaseModel)


@dataclass(frozen=True)
class Bar:
    """One attempt (or one run that started none) of a task, on one node's lane. ``row``
    places it among the node's bars that overlap it (a node runs tasks side by side)."""

    task: str
    attempt: int
    node: str
    start: float
    end: float
    kind: Kind
    exit_code: int | None = None
    reason: str = ""
    row: int = 0


@dataclass(frozen=True)
class TaskRow:
    """Where one task stands: ``success``, ``permanent``, ``failed`` (retries exhausted),
    ``publishing``, ``running`` or ``open`` (no outcome yet)."""

    task: str
    outcome: str
    attempts: int
    exit_code: int | None
    reason: str
    logs: str | None


@dataclass(frozen=True)
class Saved:
    """What the job moved and what it did not have to. Files and bytes come from the
    attempts' records (older records have none: ``unrecorded`` counts attempts that ended
    without them, some of which may simply have had nothing to move)."""

    files_moved: int = 0
    bytes_moved: int = 0
    files_not_moved: int = 0
    bytes_not_moved: int = 0
    steps_done: int = 0
    steps_not_recomputed: int = 0
    runs_met: int = 0
    runs_refused: int = 0
    #: What the attempts the met runs relied on moved or found in place: the transfers a
    #: run without a journal would have repeated.
    files_not_moved_by_met: int = 0
    bytes_not_moved_by_met: int = 0
    unrecorded: int = 0


@dataclass(frozen=True)
class Timeline:
    """A job as its journal tells it, ready to be drawn."""

    job: str
    state: str  # as shown: never a credential
    read_at: float
    bars: tuple[Bar, ...]
    tasks: tuple[TaskRow, ...]
    nodes: tuple[str, ...]  # one lane each, in order of their first bar
    saved: Saved
    problems: tuple[str, ...] = ()

    @classmethod
    def empty(cls, job: str, state: str, why: str) -> Timeline:
        """The timeline of a job whose journal holds nothing, ``why`` said as its problem."""
        return cls(job, redact(state), _now(), (), (), (), Saved(), (why,))

    @property
    def start(self) -> float:
        return min((b.start for b in self.bars), default=self.read_at)

    @property
    def end(self) -> float:
        return max((b.end for b in self.bars), default=self.read_at)

    def count(self, kind: Kind) -> int:
        return sum(1 for b in self.bars if b.kind == kind)


@dataclass
class _Task:
    """The record names of one task, as the listing found them, then its records."""

    files: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    attempts: list[Attempt] = field(default_factory=list)
    outcome: Outcome | None = None
    steps: list[StepRecord] = field(default_factory=list)
    skips: list[Skip] = field(default_factory=list)


def read_timeline(
    stores: Stores,
    state: str,
    job_id: str,
    *,
    jobs: int = DEFAULT_JOBS,
    host: str | None = None,
    clock: Callable[[], float] | None = None,
) -> Timeline:
    """The timeline of ``job_id`` under ``state``, read through ``stores``; ``host`` tells an
    attempt of this machine apart (default: this one), ``clock`` is when it is read."""
    check_job(state, job_id)
    read_at = (clock or _now)()
    store, key = stores.open(f"{state.rstrip('/')}/{job_id}/")
    prefix = key.rstrip("/") + "/"
    tasks: dict[str, _Task] = defaultdict(_Task)
    for found in store.list(prefix):
        if not found.key.startswith(prefix) or not found.key.endswith(".json"):
            continue
        parts = found.key[len(prefix) :].split("/")
        if len(parts) == 2 and parts[1] == "outcome.json":
            tasks[parts[0]].files["outcome"].append(found.key)
        elif len(parts) == 3 and parts[1] in ("attempts", "steps", "skips"):
            tasks[parts[0]].files[parts[1]].append(found.key)
    tasks = {t: found for t, found in tasks.items() if found.files.get("attempts")}
    if not tasks:
        raise InputNotFound(f"no task of job {job_id} has a journal under {redact(state)}")
    problems = _read_all(store, tasks, jobs)
    here = host or host_identity()
    bars: list[Bar] = []
    rows: list[TaskRow] = []
    for task_id in sorted(tasks):
        task = tasks[task_id]
        bars.extend(_bars(task_id, task, here))
        rows.append(_row(task_id, task, here))
    placed = _placed(bars)
    nodes = tuple(dict.fromkeys(b.node for b in placed))
    return Timeline(
        job=job_id,
        state=redact(state),
        read_at=read_at,
        bars=tuple(placed),
        tasks=tuple(rows),
        nodes=nodes,
        saved=_saved(tasks.values()),
        problems=tuple(problems),
    )


def _read_all(store: Store, tasks: dict[str, _Task], jobs: int) -> list[str]:
    """Read every record listed, ``jobs`` at a time; what could not be read, one line each."""
    models: dict[str, type[BaseModel]] = {
        "outcome": Outcome,
        "attempts": Attempt,
        "steps": StepRecord,
        "skips": Skip,
    }
    work = [
        (task, kind, key)
        for task in tasks.values()
        for kind, keys in task.files.items()
        for key in sorted(keys)
    ]
    # In batches: a thread hand-over per record would cost more than reading a local one.
    batches = [work[i : i + _BATCH] for i in range(0, len(work), _BATCH)]
    with ThreadPoolExecutor(max_workers=max(1, min(jobs, len(batches)))) as pool:
        done = pool.map(lambda batch: [_load(store, w[2], models[w[1]]) for w in batch], batches)
        results = [result for batch in done for result in batch]
    problems = []
    for (task, kind, _), (record, problem) in zip(work, results, strict=True):
        if problem is not None:
            problems.append(problem)
        if record is None:
            continue
        if kind == "outcome":
            assert isinstance(record, Outcome)
            task.outcome = record
        elif kind == "attempts":
            assert isinstance(record, Attempt)
            task.attempts.append(record)
        elif kind == "steps":
            assert isinstance(record, StepRecord)
            task.steps.append(record)
        else:
            assert isinstance(record, Skip)
            task.skips.append(record)
    return problems


def _load(store: Store, key: str, model: type[_M]) -> tuple[_M | None, str | None]:
    try:
        found = store.load(key)
        if found is None:  # gone since the listing (a claim released): nothing to draw
            return None, None
        return model.model_validate_json(found[0]), None
    except ValidationError as exc:
        return None, str(DataError(f"{store.url(key)} is damaged: {exc.errors()[0]['msg']}"))
    except TaskFailure as exc:
        return None, f"{store.url(key)}: {exc}"


@functools.lru_cache(maxsize=4096)
def _shown(text: str) -> str:
    """``text`` without credentials: reasons repeat across thousands of attempts."""
    return redact(text)


def _seconds(stamp: str) -> float:
    return datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def _now() -> float:
    return datetime.datetime.now(datetime.timezone.utc).timestamp()


def _lane(node: str, host: str) -> str:
    """The lane of a bar: its Batch node, else the machine it ran on (outside Batch)."""
    return node or host.split("/", 1)[0] or "(unknown node)"


def _kind(attempt: Attempt, host: str) -> Kind:
    state = attempt.state(host)
    if state != "ended":
        return state
    if attempt.reason and attempt.reason.startswith(_STOPPED):
        return "killed"
    return attempt.verdict or "retryable"


def _bars(task_id: str, task: _Task, host: str) -> Iterable[Bar]:
    for a in task.attempts:
        kind = _kind(a, host)
        start = _seconds(a.started)
        # An attempt without an end is drawn to its last sign of life, running or not.
        end = _seconds(a.ended if a.ended is not None else a.heartbeat)
        yield Bar(
            task=task_id,
            attempt=a.number,
            node=_lane(a.node, a.host),
            start=start,
            end=max(end, start),
            kind=kind,
            exit_code=a.exit_code,
            reason=_shown(a.reason or ""),
        )
    for s in task.skips:
        start = _seconds(s.started)
        yield Bar(
            task=task_id,
            attempt=s.attempt,
            node=_lane(s.node, ""),
            start=start,
            end=max(_seconds(s.at), start),
            kind="met" if s.goal == "met" else "refused",
            exit_code=s.exit_code,
            reason=(
                f"goal met by attempt {s.attempt}: not run"
                if s.goal == "met"
                else f"permanent failure of attempt {s.attempt} recorded: not run"
            ),
        )


def _row(task_id: str, task: _Task, host: str) -> TaskRow:
    outcome = task.outcome
    latest = task.attempts[-1] if task.attempts else None
    if outcome is not None and outcome.state == "publishing":
        holder = next((a for a in task.attempts if a.number == outcome.attempt), None)
        if holder is None or holder.state(host) != "running":
            outcome = outcome.replaced  # a stale claim: what the journal holds besides
    shown: str
    if outcome is not None:
        shown = outcome.state
    elif latest is not None and latest.state(host) == "running":
        shown = "running"
    else:
        shown = "open"
    return TaskRow(
        task=task_id,
        outcome=shown,
        attempts=len(task.attempts),
        exit_code=None if outcome is None else outcome.exit_code,
        reason=_shown(
            outcome.reason if outcome is not None else (latest.reason or "") if latest else ""
        ),
        logs=None if latest is None else latest.logs,
    )


def _placed(bars: list[Bar]) -> list[Bar]:
    """Each node's bars in rows, so that bars of one row never overlap: a bar takes the
    lowest row free at its start (the fewest rows the node's overlaps allow)."""
    by_node: dict[str, list[Bar]] = defaultdict(list)
    for bar in sorted(bars, key=lambda b: (b.start, b.end, b.task, b.attempt)):
        by_node[bar.node].append(bar)
    placed: list[Bar] = []
    for node_bars in by_node.values():
        busy: list[tuple[float, int]] = []  # (end, row) of the rows in use
        free: list[int] = []
        rows = 0
        for bar in node_bars:
            while busy and busy[0][0] <= bar.start:
                heapq.heappush(free, heapq.heappop(busy)[1])
            if free:
                row = heapq.heappop(free)
            else:
                row, rows = rows, rows + 1
            heapq.heappush(busy, (bar.end, row))
            placed.append(Bar(**{**bar.__dict__, "row": row}))
    return placed


def _saved(tasks: Iterable[_Task]) -> Saved:
    totals: dict[str, int] = defaultdict(int)
    for task in tasks:
        moved = {a.number: a for a in task.attempts}
        for a in task.attempts:
            if a.ended is not None and a.staged is None and a.uploaded is None:
                totals["unrecorded"] += 1
            for m in (a.staged, a.uploaded):
                if m is None:
                    continue
                totals["files_moved"] += m.transferred
                totals["bytes_moved"] += m.bytes_transferred
                totals["files_not_moved"] += m.skipped + m.linked
                totals["bytes_not_moved"] += m.bytes_kept + m.bytes_reused
        totals["steps_done"] += len(task.steps)
        outcome = task.outcome
        if outcome is not None and outcome.state == "success":
            totals["steps_not_recomputed"] += sum(
                1 for s in task.steps if s.attempt < outcome.attempt
            )
        for skip in task.skips:
            totals["runs_met" if skip.goal == "met" else "runs_refused"] += 1
            relied = moved.get(skip.attempt)
            if skip.goal != "met" or relied is None:
                continue
            for m in (relied.staged, relied.uploaded):
                if m is not None:
                    totals["files_not_moved_by_met"] += m.files
                    totals["bytes_not_moved_by_met"] += (
                        m.bytes_transferred + m.bytes_kept + m.bytes_reused
                    )
    return Saved(**totals)
