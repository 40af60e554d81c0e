"""The plan of the next attempt of a task: what ``taskkit run`` would do, before it does it.

:func:`plan_attempt` reads what a run reads first (the journal, the inputs' listings, the
published manifests) and decides with the functions the run decides with (:func:`~taskkit.
runner.goal.goal`, :func:`~taskkit.runner.goal.attempt_ordinal`, the exit-code policy): the
goal state, which attempt of its work the next one is and whether it is the last, the working
directory, the outputs and the policy. :func:`~taskkit.runner.run.run` carries that very plan
out (:class:`~taskkit.runner.attempt.AttemptRun`); ``taskkit run --dry-run`` prints it.

A dry run (``dry_run=True``) adds a :class:`Preview`: what the attempt would first kill, the
staging plan, the outputs of earlier work it would remove, and which DESTs are published now.
A real attempt decides these itself, after it has ended what an interrupted attempt left
running (which may still be writing into the working directory), so they are never planned
ahead for it.

Invariants: planning writes nothing to the store or the working directory (a dry run does
not even create the stat-cache; a run's planning may note there the digests it computed); the
plan is a frozen value holding no open handle (the staging plan's entries name the store they
were read from, closed by the time the plan is returned); the environment is read only from
the mapping given.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from errno import ENOTDIR
from typing import TYPE_CHECKING

from taskkit.exceptions import ConfigError, IOFailure, TaskFailure, TaskkitError, UsageError
from taskkit.observer import NullObserver, Shown
from taskkit.runner.fingerprint import Work, describe
from taskkit.runner.goal import CLAIM_TRIES, Goal, attempt_label, attempt_ordinal, goal
from taskkit.runner.journal import Attempt, Journal, host_identity
from taskkit.runner.policy import ExitPolicy
from taskkit.runner.spec import RunSpec
from taskkit.storage.stores import Stores
from taskkit.transfer.patterns import Output
from taskkit.transfer.stage_plan import Plan, default_workdir

if TYPE_CHECKING:
    from taskkit.runner.leftovers_plan import Removal
    from taskkit.runner.published import Gone

__all__ = [
    "AttemptPlan",
    "Kill",
    "Preview",
    "describe_work",
    "gone_outputs",
    "plan_attempt",
    "required",
]


@dataclass(frozen=True)
class Kill:
    """What an interrupted attempt on this host left running of its command."""

    attempt: int
    processes: int


@dataclass(frozen=True)
class Preview:
    """What a dry run shows beyond the plan, in the order it is found. A part left ``None``
    was not reached: planning stopped at ``error`` (the run would stop there too)."""

    kills: tuple[Kill, ...]
    create_workdir: bool | None = None
    staging: tuple[Plan, ...] | None = None
    leftover_notes: tuple[str, ...] | None = None
    removals: tuple[Removal, ...] | None = None
    published: tuple[bool, ...] | None = None  # one per output: is its DEST published now
    error: TaskkitError | None = None


@dataclass(frozen=True)
class AttemptPlan:
    """The next attempt of the task ``spec`` describes, as the journal and the store say now."""

    spec: RunSpec
    job_id: str
    task_id: str
    journal: str  # the journal's URL (never a credential: the state URL as shown)
    work: Work
    #: Why an input cannot be listed (the attempt then ends with it), else None.
    unavailable: TaskFailure | None
    goal: Goal
    #: When the goal is ``gone``: whether the working directory holds the outputs as published.
    gone: Gone | None
    #: The attempts recorded before this one, as read when it was planned.
    attempts: tuple[Attempt, ...]
    #: Which attempt of its work, for Batch (1 for the first): Batch's count starts again
    #: for new work (a re-added task, a changed input).
    ordinal: int
    workdir: str  # absolute
    outputs: tuple[Output, ...]
    policy: ExitPolicy
    preview: Preview | None = None

    @property
    def where(self) -> str:
        return f"job {self.job_id}, task {self.task_id}"

    @property
    def last(self) -> bool:
        """Whether Batch allows no retry after this attempt."""
        return self.spec.max_retries >= 0 and self.ordinal > self.spec.max_retries

    @property
    def label(self) -> str:
        """``attempt 2 of 4``, as the attempt says it."""
        return attempt_label(self.ordinal, self.spec.max_retries)

    @property
    def interrupted(self) -> tuple[int, ...]:
        """The recorded attempts that died without a word."""
        return tuple(a.number for a in self.attempts if a.state() == "interrupted")

    @property
    def runs(self) -> bool:
        """Whether an attempt begins (its goal is neither met nor permanent)."""
        return self.goal.state not in ("met", "permanent")


def plan_attempt(
    spec: RunSpec,
    stores: Stores,
    *,
    environ: Mapping[str, str],
    dry_run: bool = False,
    wait: Callable[[Journal, Goal], None] | None = None,
) -> AttemptPlan:
    """The plan of the next attempt of ``spec``, read from the journal and the store through
    ``stores``. ``wait`` is called while another live attempt holds the publishing claim (a
    bounded number of times; the goal is read again after each); ``dry_run`` adds the
    :class:`Preview` and keeps the stat-cache as it is."""
    state, job_id, task_id = required(spec)
    policy = spec.policy()  # a policy that cannot be is refused before anything is read
    journal = Journal.open(stores, state, job_id, task_id)
    work, unavailable = describe_work(spec, stores)
    for _ in range(CLAIM_TRIES):
        status = goal(journal, work, stores)
        if status.state != "publishing" or wait is None:
            break
        wait(journal, status)
    runs = status.state not in ("met", "permanent")
    # A goal met or a permanent failure costs no read of the attempts: none begins.
    attempts = tuple(journal.attempts()) if runs else ()
    workdir = os.path.abspath(spec.workdir or default_workdir(environ))
    gone = None
    if status.state == "gone" and status.outcome is not None:
        gone = gone_outputs(spec, stores, journal, status, workdir, environ, dry_run=dry_run)
    plan = AttemptPlan(
        spec=spec,
        job_id=job_id,
        task_id=task_id,
        journal=journal.url(""),
        work=work,
        unavailable=unavailable,
        goal=status,
        gone=gone,
        attempts=attempts,
        ordinal=attempt_ordinal(attempts, work.fingerprint),
        workdir=workdir,
        outputs=tuple(_output(output) for output in spec.outputs),
        policy=policy,
    )
    if not dry_run:
        return plan
    return replace(plan, preview=_preview(plan, stores, environ))


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


def describe_work(spec: RunSpec, stores: Stores) -> tuple[Work, TaskFailure | None]:
    """The work, or, when an input cannot be listed, the work as given and why not."""
    try:
        return describe(spec.command, spec.inputs, spec.output_texts, stores), None
    except TaskFailure as exc:
        missing = tuple((given, (("", "unavailable"),)) for given in spec.input_texts)
        return Work(spec.command, missing, spec.output_texts), exc


def gone_outputs(
    spec: RunSpec,
    stores: Stores,
    journal: Journal,
    status: Goal,
    workdir: str,
    environ: Mapping[str, str],
    *,
    dry_run: bool,
) -> Gone:
    """Published outputs gone (``status``): whether the working directory still holds them
    as published."""
    from taskkit.runner.published import Gone, unmatched

    outcome = status.outcome
    assert outcome is not None  # a goal gone names the success that was published
    detail = unmatched(
        stores, journal, spec.outputs, outcome, workdir, dry_run=dry_run, environ=environ
    )
    return Gone(status.why, outcome.attempt, detail is None, detail or "")


def _output(output: Output) -> Output:
    """``output`` with its DEST ending in one slash, as it is published."""
    dest = output.dest
    return Output(output.pattern, dest if dest.endswith("/") else dest + "/")


def _preview(plan: AttemptPlan, stores: Stores, environ: Mapping[str, str]) -> Preview:
    """What a dry run shows beyond the plan, found in the order it is shown, up to the first
    error (kept, not raised: what was found before it is still shown)."""
    from taskkit.runner.lifetime import left_by

    spec = plan.spec
    kills: tuple[Kill, ...] = ()
    if plan.runs:
        kills = tuple(Kill(old.number, n) for old, n in left_by(plan.attempts, host_identity()))
    found = Preview(kills)
    try:
        workdir = plan.workdir
        if not spec.inputs and os.path.lexists(workdir) and not os.path.isdir(workdir):
            # as the staging plan says it, and the run would: local I/O (203)
            raise IOFailure(
                f"working directory {workdir!r} is not a directory", path=workdir, errno=ENOTDIR
            )
        # With inputs, the staging plan says whether it creates the working directory.
        found = replace(found, create_workdir=not spec.inputs and not os.path.isdir(workdir))
        staging: list[Plan] = []
        if plan.unavailable is None and spec.inputs:
            from taskkit.runner.transfers import stage_settings
            from taskkit.transfer.stage import stage

            stage(
                spec.inputs,
                workdir=spec.workdir or default_workdir(environ),
                **stage_settings(spec.transfer(), environ),  # the node cache a run would link from
                stores=stores,
                dry_run=True,
                observer=_Kept(staging),
                environ=environ,
            )
        found = replace(found, staging=tuple(staging))
        notes: tuple[str, ...] = ()
        removals: tuple[Removal, ...] = ()
        if plan.unavailable is None and plan.runs:
            from taskkit.runner.leftovers import preview

            tidy, lines = preview(spec, plan.workdir, plan.work, staging)
            notes, removals = tuple(lines), tidy.removals
        found = replace(found, leftover_notes=notes, removals=removals)
        return replace(found, published=tuple(_published(stores, o) for o in plan.outputs))
    except TaskkitError as exc:
        return replace(found, error=exc)


def _published(stores: Stores, output: Output) -> bool:
    from taskkit.transfer.upload_plan import MANIFEST_NAME

    store, key = stores.open(output.dest + MANIFEST_NAME)
    return store.load(key) is not None


class _Kept(NullObserver):
    """The observer of the dry run's staging plan: keeps the plan, says nothing (the dry run
    shows the plan itself, with its problems)."""

    def __init__(self, kept: list[Plan]) -> None:
        self.kept = kept

    def plan(self, plan: Shown) -> None:
        if isinstance(plan, Plan):
            self.kept.append(plan)
