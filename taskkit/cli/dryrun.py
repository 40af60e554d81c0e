"""``taskkit run --dry-run``: the plan of the next attempt, printed, with nothing changed.

It reads what the real run reads first (the journal, the inputs' listings, the published
outputs) and decides with the same functions (:func:`~taskkit.runner.goal`, the staging plan,
the exit-code policy), so what it prints is what a run would do. Invariant: no write, local or
remote; not even the stat-cache is created. Nothing it prints holds a credential.
"""

from __future__ import annotations

import contextlib
import os
from errno import ENOTDIR

import click

from taskkit.cli.report import Report
from taskkit.exceptions import IOFailure
from taskkit.redaction import redact, shown_url
from taskkit.runner.fingerprint import Work
from taskkit.runner.goal import Goal, attempt_label, attempt_ordinal, goal
from taskkit.runner.journal import Attempt, Journal, host_identity
from taskkit.runner.leftovers import preview
from taskkit.runner.lifetime import left_by
from taskkit.runner.run import describe_work, gone_outputs, required
from taskkit.runner.spec import RunSpec
from taskkit.runner.transfers import stage_settings
from taskkit.storage.stores import Stores
from taskkit.transfer.stage import stage
from taskkit.transfer.stage_plan import Plan, default_workdir
from taskkit.transfer.upload_plan import MANIFEST_NAME

__all__ = ["show_plan"]


def show_plan(spec: RunSpec) -> int:
    """Print the plan of the next attempt of ``spec``; 0, or the first planning error's code."""
    state, job_id, task_id = required(spec)
    # The journal's requests keep the retry settings the transfers keep.
    with Stores(spec.retry()) as stores:
        journal = Journal.open(stores, state, job_id, task_id)
        work, unavailable = describe_work(spec, stores)
        status = goal(journal, work, stores)
        attempts = journal.attempts()
        ordinal = attempt_ordinal(attempts, work.fingerprint)
        click.echo(f"task        job {job_id}, task {task_id}, journal {journal.url('')}")
        click.echo(f"work        {work.fingerprint}")
        _show_goal(spec, stores, journal, status, attempts, ordinal)
        if status.state not in ("met", "permanent"):
            for old, count in left_by(attempts, host_identity()):
                click.echo(
                    f"leftover    would first kill what attempt {old.number} left of its command "
                    f"({count} process{'es' if count > 1 else ''} still running)"
                )
        click.echo(f"command     {redact(' '.join(spec.command))}")
        workdir = os.path.abspath(spec.workdir or default_workdir())
        if not spec.inputs and os.path.lexists(workdir) and not os.path.isdir(workdir):
            # as the staging plan says it, and the run would: local I/O (203)
            raise IOFailure(
                f"working directory {workdir!r} is not a directory", path=workdir, errno=ENOTDIR
            )
        if not spec.inputs and not os.path.isdir(workdir):  # else the staging plan says it
            click.echo(f"workdir     would create the working directory {workdir}")
        code = 0
        staged: list[Plan] = []
        if unavailable is not None:
            click.echo(f"inputs      cannot be listed: {unavailable}")
            code = unavailable.run_code
        elif spec.inputs:
            click.echo("inputs")
            with contextlib.ExitStack() as stack:
                report = Report(stack, doing="staging", dry_run=True, verbose=False, interval=10)

                def planned(plan: Plan) -> None:
                    report.staging_planned(plan)
                    staged.append(plan)

                stage(
                    spec.inputs,
                    workdir=spec.workdir,
                    **stage_settings(spec),  # the node cache a run would link from
                    dry_run=True,
                    on_plan=planned,
                )
        if unavailable is None and status.state not in ("met", "permanent"):
            _show_leftovers(spec, work, staged)
        _show_outputs(spec, stores)
        _show_codes(spec)
    return code


def _show_goal(
    spec: RunSpec,
    stores: Stores,
    journal: Journal,
    status: Goal,
    attempts: list[Attempt],
    ordinal: int,
) -> None:
    """The goal line: done, permanent, outputs gone (republish or run again), or open."""
    if status.state == "met":
        click.echo(f"goal        done ({status.why}): the command would not run")
    elif status.state == "permanent" and status.outcome is not None:
        click.echo(
            f"goal        permanent failure in attempt {status.outcome.attempt} "
            f"({status.why}): would exit {status.outcome.exit_code} at once"
        )
    elif status.state == "gone" and status.outcome is not None:
        gone = gone_outputs(spec, stores, journal, status.outcome, status.why, dry_run=True)
        click.echo(
            f"goal        {status.why}; would republish them from the working directory: "
            "the command would not run"
            if gone.republish
            else f"goal        {status.why}; {gone.detail}: would run the command again "
            f"({attempt_label(ordinal, spec.max_retries)})"
        )
    else:
        interrupted = sum(1 for a in attempts if a.state() == "interrupted")
        extra = f", {interrupted} interrupted before" if interrupted else ""
        click.echo(
            f"goal        open: {attempt_label(ordinal, spec.max_retries)}{extra}; {status.why}"
        )


def _show_outputs(spec: RunSpec, stores: Stores) -> None:
    """One line per output: where it goes, and whether its DEST is published now."""
    for parsed in spec.outputs:
        dest = parsed.dest if parsed.dest.endswith("/") else parsed.dest + "/"
        store, key = stores.open(dest + MANIFEST_NAME)
        published = store.load(key) is not None
        click.echo(
            f"output      {parsed.pattern} -> {shown_url(dest)}  "
            f"({'published now; ' if published else ''}written on success, manifest last)"
        )


def _show_codes(spec: RunSpec) -> None:
    """The exit-code table of the run's policy."""
    policy = spec.policy()
    click.echo("exit codes")
    rows = policy.table()
    width = max((len(codes) for codes, _, _ in rows), default=0)
    for codes, verdict, result in rows:
        click.echo(f"  {codes:<{width}}  {verdict:<10} {result}")


def _show_leftovers(spec: RunSpec, work: Work, staged: list[Plan]) -> None:
    """The outputs of earlier work the attempt would remove before its command runs."""
    tidy, notes = preview(spec, spec.workdir or default_workdir(), work, staged)
    for line in notes:
        click.echo(f"leftovers   {line}")
    for removal in tidy.removals:
        click.echo(f"remove      {removal.path}  (an output of earlier work {removal.work})")
