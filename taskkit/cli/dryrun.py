"""``taskkit run --dry-run``: the plan of the next attempt, printed, with nothing changed.

The plan is :func:`~taskkit.runner.plan.plan_attempt`'s, the very plan a run carries out:
this module only prints it. Invariant: no write, local or remote; not even the stat-cache is
created. Nothing it prints holds a credential.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping

import click

from taskkit.cli.report import Report, say
from taskkit.redaction import redact, shown_url
from taskkit.runner.plan import AttemptPlan, Preview, plan_attempt
from taskkit.runner.spec import RunSpec
from taskkit.storage.stores import Stores
from taskkit.transfer.telling import Telling

__all__ = ["show_plan"]


def show_plan(spec: RunSpec, *, environ: Mapping[str, str] | None = None) -> int:
    """Print the plan of the next attempt of ``spec``; 0, or the first planning error's code.
    ``environ``: the environment the attempt would read (default: this process's)."""
    env = dict(os.environ if environ is None else environ)
    # The journal's requests keep the retry settings the transfers keep.
    with Stores(spec.retry()) as stores:
        plan = plan_attempt(spec, stores, environ=env, dry_run=True)
    assert plan.preview is not None  # a dry run's plan has its preview
    return render(plan, plan.preview)


def render(plan: AttemptPlan, preview: Preview) -> int:
    """Print ``plan`` in the order it was found; raise the error planning stopped at, after
    what was found before it."""
    spec = plan.spec
    click.echo(f"task        job {plan.job_id}, task {plan.task_id}, journal {plan.journal}")
    click.echo(f"work        {plan.work.fingerprint}")
    _show_goal(plan)
    for kill in preview.kills:
        count = kill.processes
        click.echo(
            f"leftover    would first kill what attempt {kill.attempt} left of its command "
            f"({count} process{'es' if count > 1 else ''} still running)"
        )
    click.echo(f"command     {redact(' '.join(spec.command))}")
    if preview.create_workdir is None:
        return _stopped(preview)
    if preview.create_workdir:  # with inputs, the staging plan says it
        click.echo(f"workdir     would create the working directory {plan.workdir}")
    code = 0
    if plan.unavailable is not None:
        click.echo(f"inputs      cannot be listed: {plan.unavailable}")
        code = plan.unavailable.run_code
    elif spec.inputs:
        click.echo("inputs")
        if preview.staging is None:
            return _stopped(preview)
        with contextlib.ExitStack() as stack:
            report = Report(stack, doing="staging", dry_run=True, verbose=False, interval=10)
            telling = Telling(report, "staging", dry_run=True)  # as the staging tells it
            for staged in preview.staging:
                telling.staging_planned(staged)
    if preview.leftover_notes is None or preview.removals is None:
        return _stopped(preview)
    for line in preview.leftover_notes:
        click.echo(f"leftovers   {line}")
    for removal in preview.removals:
        click.echo(f"remove      {removal.path}  (an output of earlier work {removal.work})")
    if preview.published is None:
        return _stopped(preview)
    for output, published in zip(plan.outputs, preview.published, strict=True):
        click.echo(
            f"output      {output.pattern} -> {shown_url(output.dest)}  "
            f"({'published now; ' if published else ''}written on success, manifest last)"
        )
    _show_codes(plan)
    if plan.unavailable is not None:  # the whole plan is shown; its exit code has its line
        say("error", str(plan.unavailable))
    return code


def _stopped(preview: Preview) -> int:
    assert preview.error is not None  # a part is missing only where planning stopped
    raise preview.error


def _show_goal(plan: AttemptPlan) -> None:
    """The goal line: done, permanent, outputs gone (republish or run again), or open."""
    status = plan.goal
    if status.state == "met":
        click.echo(f"goal        done ({status.why}): the command would not run")
    elif status.state == "permanent" and status.outcome is not None:
        click.echo(
            f"goal        permanent failure in attempt {status.outcome.attempt} "
            f"({status.why}): would exit {status.outcome.exit_code} at once"
        )
    elif plan.gone is not None:
        gone = plan.gone
        click.echo(
            f"goal        {status.why}; would republish them from the working directory: "
            "the command would not run"
            if gone.republish
            else f"goal        {status.why}; {gone.detail}: would run the command again "
            f"({plan.label})"
        )
    else:
        interrupted = len(plan.interrupted)
        extra = f", {interrupted} interrupted before" if interrupted else ""
        click.echo(f"goal        open: {plan.label}{extra}; {status.why}")


def _show_codes(plan: AttemptPlan) -> None:
    """The exit-code table of the run's policy."""
    click.echo("exit codes")
    rows = plan.policy.table()
    width = max((len(codes) for codes, _, _ in rows), default=0)
    for codes, verdict, result in rows:
        click.echo(f"  {codes:<{width}}  {verdict:<10} {result}")
