"""Adding a file of tasks to a Batch job: the plan (:func:`plan_submission`, pure and
printable: what ``taskkit batch submit --dry-run`` shows) and its execution (:func:`submit`).

Invariants:

* **Everything is checked before the first request.** The file is read as the service reads it
  (:func:`~taskkit.batch.tasks.read_tasks` with ``service=True``: ids, case-insensitive
  uniqueness, ``dependsOn`` within the file and within 64,000 characters, no cycle); a task too
  large for one request is refused; the job's settings are checked against what the tasks need
  (``usesTaskDependencies`` for ``dependsOn``, ``onTaskFailure`` =
  ``performExitOptionsJobAction`` for a ``jobAction``) before any task is sent.
* **A re-run adds only the rest.** The ids already in the job are listed first and not sent
  again; a task that Batch reports as existing (``TaskExists``) counts as already there, never
  as a failure. Batch keeps the definition it has for such a task: a changed definition under
  an old id is not applied (say so; a new id is the way).
* **Requests stay within Batch's limits**: at most 100 tasks, and a body under
  :data:`BODY_LIMIT` bytes (Batch refuses 1 MB), with margin for the SDK's own serialisation.
* **A partial failure loses nothing.** Each task ends in exactly one of added, already there,
  failed (Batch refused it as written: fix and re-run), or not sent (the run stopped on a
  transient failure: re-run). :class:`Submitted` holds the ids of each.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from taskkit.batch.patience import PATIENT, Patience
from taskkit.batch.taskjson import ACTING_JOB
from taskkit.batch.tasks import read_tasks
from taskkit.exceptions import (
    ConfigError,
    DataError,
    InputNotFound,
    TaskFailure,
    TransientError,
    UsageError,
)
from taskkit.runner.spec import BATCH_ID

if TYPE_CHECKING:
    from taskkit.batch.service import AddResult, BatchService, JobFacts

__all__ = [
    "BODY_LIMIT",
    "COLLECTION_LIMIT",
    "DEFAULT_JOBS",
    "Collection",
    "Submission",
    "Submitted",
    "plan_submission",
    "submit",
]

#: Tasks in one Add Task Collection request (Batch's limit).
COLLECTION_LIMIT = 100
#: Bytes of one request's body at most: Batch refuses 1 MB (RequestBodyTooLarge); the margin
#: covers the SDK's serialisation of the same objects and the request's envelope.
BODY_LIMIT = 900_000
_ENVELOPE = len('{"value": []}')
#: Add Task Collection requests in flight at once.
DEFAULT_JOBS = 4


@dataclass(frozen=True)
class Collection:
    """One Add Task Collection request: the indexes of its tasks and its body's size."""

    tasks: tuple[int, ...]
    size: int


@dataclass(frozen=True)
class Submission:
    """The plan of one submission: the tasks as read, in collections, and the job's needs."""

    source: str
    job_id: str
    pool_id: str | None
    create_job: bool
    tasks: tuple[Mapping[str, Any], ...]
    sizes: tuple[int, ...]
    collections: tuple[Collection, ...]
    needs_dependencies: bool
    needs_job_action: bool
    limit: int = BODY_LIMIT  # the bytes of one request's body at most

    @property
    def on_task_failure(self) -> str:
        return ACTING_JOB if self.needs_job_action else "noaction"

    def lines(self, endpoint: str | None) -> list[str]:
        """The requests the submission sends, one line each (``--dry-run``)."""
        where = (endpoint or "$AZURE_BATCH_ENDPOINT").rstrip("/")
        total = sum(c.size for c in self.collections)
        out = [
            f"{len(self.tasks):,} tasks from {self.source} for job {self.job_id} at {where}, "
            f"in {len(self.collections):,} request(s) ({total:,} bytes)"
        ]
        out.append(f"GET /jobs/{self.job_id}: the job's pool, dependencies and onTaskFailure")
        if self.create_job:
            out.append(
                f"POST /jobs (when the job is not there): job {self.job_id} on pool "
                f"{self.pool_id}, usesTaskDependencies {str(self.needs_dependencies).lower()}, "
                f"onTaskFailure {self.on_task_failure}"
            )
        out.append(f"GET /jobs/{self.job_id}/tasks?$select=id: the tasks already there")
        for n, collection in enumerate(self.collections, 1):
            first = self.tasks[collection.tasks[0]]["id"]
            last = self.tasks[collection.tasks[-1]]["id"]
            out.append(
                f"POST /jobs/{self.job_id}/addtaskcollection [{n}/{len(self.collections)}]: "
                f"{len(collection.tasks)} tasks ({first} .. {last}), {collection.size:,} bytes"
            )
        return out


@dataclass
class Submitted:
    """What became of each task: ids by outcome, and why each failed one failed."""

    added: list[str] = field(default_factory=list)
    existing: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    unsent: list[str] = field(default_factory=list)
    job_created: bool = False
    stopped: TaskFailure | None = None

    @property
    def done(self) -> int:
        return len(self.added) + len(self.existing)


def plan_submission(
    text: str,
    source: str,
    *,
    job_id: str,
    pool_id: str | None = None,
    create_job: bool = False,
    limit: int = BODY_LIMIT,
) -> Submission:
    """The plan of adding the tasks in ``text`` (read from ``source``) to job ``job_id``;
    raises :class:`DataError` for a task file Batch would refuse, :class:`ConfigError` or
    :class:`UsageError` for bad settings."""
    if not isinstance(job_id, str) or not BATCH_ID.fullmatch(job_id):
        raise ConfigError(
            f"--job-id {job_id!r}: a Batch job id is 1 to 64 letters, digits, - and _"
        )
    if create_job and not pool_id:
        raise UsageError("--create-job needs --pool-id: the pool the new job runs on")
    if pool_id is not None and not BATCH_ID.fullmatch(pool_id):
        raise ConfigError(
            f"--pool-id {pool_id!r}: a Batch pool id is 1 to 64 letters, digits, - and _"
        )
    if pool_id is not None and not create_job:
        raise UsageError("--pool-id goes with --create-job (an existing job has its pool)")
    read = read_tasks(text, source, service=True)
    tasks = tuple(task.raw for task in read.tasks)
    sizes = tuple(len(json.dumps(task)) + 2 for task in tasks)  # ", " between tasks
    for task, size in zip(tasks, sizes, strict=True):
        if size + _ENVELOPE > limit:
            raise DataError(
                f"{source}: task {task['id']!r} is {size:,} bytes as JSON; one request to "
                f"Batch holds at most {limit:,} (move large values to files)"
            )
    return Submission(
        source=source,
        job_id=job_id,
        pool_id=pool_id,
        create_job=create_job,
        tasks=tasks,
        sizes=sizes,
        collections=tuple(_collections(range(len(tasks)), sizes, limit)),
        needs_dependencies=any(task.depends_on for task in read.tasks),
        needs_job_action=any(task.exit_conditions.sets_job_action() for task in read.tasks),
        limit=limit,
    )


def _collections(indexes: Sequence[int], sizes: Sequence[int], limit: int) -> list[Collection]:
    """``indexes`` in order, cut into requests of at most :data:`COLLECTION_LIMIT` tasks and
    ``limit`` bytes."""
    out: list[Collection] = []
    current: list[int] = []
    size = _ENVELOPE
    for i in indexes:
        if current and (len(current) >= COLLECTION_LIMIT or size + sizes[i] > limit):
            out.append(Collection(tuple(current), size))
            current, size = [], _ENVELOPE
        current.append(i)
        size += sizes[i]
    if current:
        out.append(Collection(tuple(current), size))
    return out


def submit(
    plan: Submission,
    service: BatchService,
    *,
    progress: Callable[[Submitted, int], None] = lambda done, total: None,
    patience: Patience = PATIENT,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    outcome: Submitted | None = None,
    jobs: int = DEFAULT_JOBS,
) -> Submitted:
    """Carry out ``plan`` against ``service``; ``progress(outcome, total)`` after each request.

    Raises before any task is sent when the job is missing or cannot take the tasks; after
    that, a failure stops the run and is kept in :attr:`Submitted.stopped` with every task not
    yet sent in :attr:`Submitted.unsent`. Tasks Batch answers with a server error are sent
    again, waiting as ``patience`` says, until it runs out. ``jobs`` requests are in flight at
    once (as the SDK's ``create_tasks(max_concurrency=...)`` does). ``outcome`` (a fresh one by
    default) is filled in as answers come, so a caller interrupted meanwhile knows what was
    added."""
    outcome = Submitted() if outcome is None else outcome
    job = service.job(plan.job_id)
    if job is None:
        if not plan.create_job:
            raise InputNotFound(
                f"Batch has no job {plan.job_id!r}: give an active job's id, or --create-job "
                "--pool-id POOL to create it"
            )
        assert plan.pool_id is not None
        outcome.job_created = service.create_job(
            plan.job_id,
            plan.pool_id,
            uses_task_dependencies=plan.needs_dependencies,
            on_task_failure=plan.on_task_failure,
        )
        job = service.job(plan.job_id)
        if job is None:
            raise InputNotFound(f"job {plan.job_id!r} was created but Batch cannot find it")
    _check_job(plan, job)
    there = service.task_ids(plan.job_id)
    pending: list[int] = []
    for i, task in enumerate(plan.tasks):
        if str(task["id"]).lower() in there:
            outcome.existing.append(str(task["id"]))
        else:
            pending.append(i)
    if not pending:
        progress(outcome, len(plan.tasks))
        return outcome
    started = clock()
    pool = ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="taskkit-submit")
    try:
        for round_ in itertools.count(1):
            again, stopped, unsent = _send_round(
                plan, service, pool, jobs, pending, outcome, progress
            )
            if stopped is not None:
                outcome.stopped = stopped
                outcome.unsent = [str(plan.tasks[i]["id"]) for i in sorted([*again, *unsent])]
                return outcome
            if not again:
                return outcome
            pending = again
            left = patience.seconds - (clock() - started)
            if left <= 0:
                break
            sleep(min(patience.wait(round_ + 1), left))
    finally:
        # A round waits for its requests, so none is in flight here unless an exception (an
        # interruption) cut the round short: then none is waited for.
        pool.shutdown(wait=False, cancel_futures=True)
    outcome.unsent = [str(plan.tasks[i]["id"]) for i in pending]
    outcome.stopped = _server_errors(len(pending), patience)
    return outcome


def _send_round(
    plan: Submission,
    service: BatchService,
    pool: ThreadPoolExecutor,
    jobs: int,
    pending: Sequence[int],
    outcome: Submitted,
    progress: Callable[[Submitted, int], None],
) -> tuple[list[int], TaskFailure | None, list[int]]:
    """Send ``pending`` in collections, ``jobs`` requests in flight; record each answer in
    ``outcome`` as it comes. The tasks to send again (a server error for them), the failure
    that stopped the round (no new request after it; those in flight are awaited), and the
    tasks it left unsent."""
    batches = iter(_collections(pending, plan.sizes, plan.limit))
    flying: dict[Future[list[AddResult]], Collection] = {}
    again: list[int] = []
    unsent: list[int] = []
    stopped: TaskFailure | None = None

    def launch() -> None:
        collection = next(batches, None)
        if collection is not None:
            tasks = [plan.tasks[i] for i in collection.tasks]
            flying[pool.submit(service.add, plan.job_id, tasks)] = collection

    for _ in range(jobs):
        launch()
    while flying:
        done, _ = wait(flying, return_when=FIRST_COMPLETED)
        for future in done:
            collection = flying.pop(future)
            try:
                results = future.result()
            except TaskFailure as exc:
                stopped = stopped or exc
                unsent += collection.tasks
                continue
            for i, result in zip(collection.tasks, results, strict=True):
                if result.status == "added":
                    outcome.added.append(result.task_id)
                elif result.status == "exists":
                    outcome.existing.append(result.task_id)
                elif result.status == "failed":
                    outcome.failed[result.task_id] = result.reason
                else:
                    again.append(i)
            progress(outcome, len(plan.tasks))
            if stopped is None:
                launch()
    if stopped is not None:
        unsent += [i for collection in batches for i in collection.tasks]
    return again, stopped, unsent


def _server_errors(count: int, patience: Patience) -> TaskFailure:
    return TransientError(
        f"Batch answered {count} task(s) with a server error for {patience.seconds:g} s "
        "(--patience)"
    )


def _check_job(plan: Submission, job: JobFacts) -> None:
    """Refuse, before any task is sent, a job that cannot take the tasks."""
    if job.state.lower() in ("terminating", "completed", "deleting"):
        raise ConfigError(
            f"job {job.id!r} is {job.state.lower()}: Batch adds tasks only to a job that is "
            "not ending (give another --job-id)"
        )
    if plan.create_job and plan.pool_id and job.pool_id and job.pool_id != plan.pool_id:
        raise ConfigError(
            f"job {job.id!r} is already there on pool {job.pool_id!r}, not {plan.pool_id!r}"
        )
    # A job that is there keeps its settings: name a new job, which --create-job sets up.
    fresh = "give a new --job-id with --create-job, which sets"
    if plan.needs_dependencies and not job.uses_task_dependencies:
        raise ConfigError(
            f"job {job.id!r} does not use task dependencies and tasks of {plan.source} have "
            f"dependsOn: Batch would refuse them ({fresh} usesTaskDependencies)"
        )
    if plan.needs_job_action and job.on_task_failure != ACTING_JOB.lower():
        raise ConfigError(
            f"job {job.id!r} has onTaskFailure {job.on_task_failure}, and tasks of "
            f"{plan.source} set a jobAction, which Batch refuses there ({fresh} {ACTING_JOB})"
        )
