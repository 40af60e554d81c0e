"""``taskkit run``, ``taskkit step`` and ``taskkit status``: the goal-seeking runner's commands.

Inside ``run`` and ``step`` every failure of taskkit's own exits in the 200-206 band (the
exception's ``run_code``, :mod:`taskkit.exceptions`; a mistyped option too), so it can never
be mistaken for the command's own exit code.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click

from taskkit.cli._app import (
    CONTEXT,
    cli,
    internal_error,
    journal_options,
    stoppable,
    transfer_options,
)
from taskkit.cli.report import say as _say
from taskkit.envnames import DEFAULT_LOCAL_DIR, LOCAL_VARIABLE
from taskkit.exceptions import EX_OK, EX_RUN_CONFIG, EX_RUN_SOFTWARE, TaskkitError

if TYPE_CHECKING:
    from taskkit.runner.local import LocalNode

__all__ = ["RunCommand", "local_option", "run_options", "spec_from_options"]

_COMMAND_CONTEXT = {**CONTEXT, "allow_interspersed_args": False}


class RunCommand(click.Command):
    """A command whose own usage errors exit in the run band (200), not 64."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except click.UsageError as exc:
            if ctx.resilient_parsing:
                raise
            _say("error", f"{exc.format_message()} (see 'taskkit {self.name} --help')")
            raise click.exceptions.Exit(EX_RUN_CONFIG) from None


def _banded(action: Callable[[], int]) -> int:
    """``action``'s exit code; taskkit's own failures as one line and a code of the 200-206
    band (an internal error too: 206), never one a command could mean."""
    try:
        return action()
    except TaskkitError as exc:
        _say("error", str(exc))
        return exc.run_code
    except (KeyboardInterrupt, BrokenPipeError):
        raise
    except Exception as exc:
        internal_error(exc)
        return EX_RUN_SOFTWARE


def run_options(command: Callable[..., object]) -> Callable[..., object]:
    """The options of ``taskkit run``, shared with ``taskkit batch task-json``."""
    options = [
        click.option(
            "-i",
            "--input",
            "inputs",
            multiple=True,
            metavar="SRC=DEST",
            help="Stage this input first (as taskkit stage, through the node cache). Repeatable.",
        ),
        click.option(
            "-o",
            "--output",
            "outputs",
            multiple=True,
            metavar="GLOB=DEST",
            help="Upload and publish these outputs on success (as taskkit upload). Repeatable.",
        ),
        click.option(
            "--state",
            metavar="URL",
            help="Where the task's journal lives (any fsspec URL) [env: TASKKIT_STATE].",
        ),
        click.option("--job-id", metavar="ID", help="[default: $AZ_BATCH_JOB_ID]"),
        click.option("--task-id", metavar="ID", help="[default: $AZ_BATCH_TASK_ID]"),
        click.option(
            "--workdir",
            metavar="DIR",
            help="Where inputs go, outputs are found and the command runs [default: "
            "$AZ_BATCH_TASK_WORKING_DIR, else the current directory].",
        ),
        click.option(
            "--spec",
            "spec_file",
            envvar="TASKKIT_SPEC",
            metavar="FILE",
            help="A TOML, YAML or JSON file of these settings (keys as the long "
            "options: max-retries = 3); options and TASKKIT_* variables win over it.",
        ),
        click.option(
            "--max-retries",
            metavar="N",
            help="The task's maxTaskRetryCount (-1: unlimited), so the last attempt is "
            "known [default: 0].",
        ),
        click.option(
            "--success-codes",
            metavar="CODES",
            help="Exit codes that mean success, e.g. 0,3 [default: 0].",
        ),
        click.option(
            "--permanent-codes",
            metavar="CODES",
            help="Exit codes not worth retrying, e.g. 2,5-9: recorded, and later "
            "attempts exit with them at once.",
        ),
        click.option(
            "--retryable-codes",
            metavar="CODES",
            help="Exit codes worth retrying; when given, other codes are permanent "
            "(deaths by signal stay retryable).",
        ),
        click.option(
            "--deadline",
            metavar="DURATION",
            help="Stop the command after this long (e.g. 3h30m; at most 180d, Batch's task "
            "lifetime), flush, exit 205 (retryable): set it below Batch's maxWallClockTime.",
        ),
        click.option(
            "--log-interval",
            metavar="DURATION",
            help="How often logs and the heartbeat reach the store (at most 60d) [default: 30s].",
        ),
        click.option(
            "--checkpoint-dir",
            metavar="DIR",
            help="The command's TASKKIT_CHECKPOINT_DIR, restored at the start and "
            "synced to the store [default: a directory of the attempt's own].",
        ),
        click.option(
            "--checkpoint-interval",
            metavar="DURATION",
            help="How often the checkpoint directory is synced (at most 180d) [default: 5m].",
        ),
        click.option(
            "--allow-empty",
            is_flag=True,
            default=None,
            help="An output GLOB that matches nothing is not an error.",
        ),
    ]
    command = transfer_options(node_cache=True, from_env=False)(command)
    for option in reversed(options):
        command = option(command)
    return command


def spec_from_options(options: dict[str, Any], command: tuple[str, ...]) -> Any:
    """The :class:`~taskkit.runner.spec.RunSpec` of a command line's options."""
    from taskkit.runner.spec import resolve

    spec_file = options.pop("spec_file", None)
    return resolve({**options, "command": command}, spec_file=spec_file)


#: ``--local [DIR]`` of ``taskkit run`` and ``taskkit call``: a bare ``--local`` names the
#: default folder.
local_option = click.option(
    "--local",
    is_flag=False,
    flag_value=DEFAULT_LOCAL_DIR,
    default=None,
    metavar="[DIR]",
    help=f"Run on a Batch-like node in DIR [default: {DEFAULT_LOCAL_DIR}; env: "
    f"{LOCAL_VARIABLE}]: its AZ_BATCH_* variables, task directory and file:// state.",
)


@cli.command("run", cls=RunCommand, context_settings=_COMMAND_CONTEXT)
@run_options
@click.option("--dry-run", is_flag=True, help="Print the plan: goal, inputs, outputs, exit codes.")
@local_option
@click.argument("command", nargs=-1, type=click.UNPROCESSED, metavar="-- COMMAND [ARGS]...")
def run_command(command: tuple[str, ...], dry_run: bool, local: str | None, **options: Any) -> int:
    """Run COMMAND as one idempotent attempt of a Batch task.

    \b
    Reads the task's journal (STATE/JOB/TASK/) first:
      goal met for this work        exit 0 at once; the command is not run
      permanent failure recorded    exit with its code at once
      otherwise                     stage inputs, run the command with its logs
                                    streamed, upload outputs, record, exit
    The work's fingerprint (command, inputs and their contents, outputs) decides what "this
    work" is: when it changes the task starts afresh and says why.

    \b
    Exit codes: 0 success; the command's own code (128+N after signal N) otherwise;
    taskkit's own failures 200 configuration, 201 input missing, 202 bad data (permanent),
    203 local I/O, 204 storage unreachable, 205 deadline, 206 internal (retryable).

    \b
    Examples:
      taskkit run --state az://state/runs -i az://data/in/=in/ -o 'out/**=az://results/r1/' \\
          --max-retries 3 --deadline 2h -- python train.py
      taskkit run --spec task.toml -- ./step.sh
      taskkit run --dry-run --spec task.toml -- ./step.sh
      taskkit run --local -i az://data/in/=in/ -o 'out/**=file:///tmp/results/' -- python train.py
    """

    def attempt() -> int:
        if local or os.environ.get(LOCAL_VARIABLE):  # local mode is imported when asked for
            from taskkit.runner.local import LocalNode

            node = LocalNode.find(local, os.environ)
            if node is not None:
                return _run_local(node, command, dry_run, options)
        spec = spec_from_options(options, command)
        if dry_run:
            from taskkit.cli.dryrun import show_plan

            return show_plan(spec)
        from taskkit.cli.report import RunReport
        from taskkit.runner.run import run

        return run(spec, observer=RunReport(verbose=spec.verbose, interval=spec.progress_interval))

    with stoppable():  # until the attempt sets its own: SIGTERM as it plans is 143, in order
        return _banded(attempt)


def _run_local(
    node: LocalNode, command: tuple[str, ...], dry_run: bool, options: dict[str, Any]
) -> int:
    """``taskkit run --local``: the same run, on the task's place on the local ``node``."""
    from taskkit.runner.local import LocalRun

    spec_file = options.pop("spec_file", None)
    local = LocalRun.resolve(node, options, command, spec_file=spec_file, environ=os.environ)
    if dry_run:
        from taskkit.cli.dryrun import show_plan

        local.task.check()  # as a run would find it, making nothing
        made = "" if local.task.task_dir.is_dir() else " (would be created)"
        click.echo(f"local       task directory {local.task.task_dir}{made}")
        return show_plan(local.spec, environ=local.environ)
    from taskkit.cli.report import RunReport
    from taskkit.runner.run import run

    local.task.make()
    told = RunReport(verbose=local.spec.verbose, interval=local.spec.progress_interval)
    return run(local.spec, environ=local.environ, launch=local.task.launcher(), observer=told)


@cli.command("step", cls=RunCommand, context_settings=CONTEXT)
@click.argument("name")
@click.option(
    "-o",
    "--output",
    "outputs",
    multiple=True,
    metavar="GLOB=DEST",
    help="Publish these files before the step is recorded done. Repeatable.",
)
@click.argument("command", nargs=-1, type=click.UNPROCESSED, metavar="-- COMMAND [ARGS]...")
@click.option("--allow-empty", is_flag=True, help="An output GLOB that matches nothing is fine.")
def step_command(
    name: str, outputs: tuple[str, ...], allow_empty: bool, command: tuple[str, ...]
) -> int:
    """Run COMMAND as step NAME of the task, unless a previous attempt finished it.

    Called inside a command that 'taskkit run' wraps. A finished step is skipped and the
    files it published are restored where the working directory lost them. It exits with
    COMMAND's code, or 200-206 for taskkit's own failures.

    \b
    Examples:
      # lines of a shell script that taskkit run runs
      taskkit step fetch -- ./download_refs.sh
      taskkit step align -o 'bam/*.bam=az://results/run-7/bam/' -- ./align.sh
    """
    from taskkit.cli.report import RunReport
    from taskkit.runner.steps import run_step

    told = RunReport(verbose=False, interval=10.0)
    return _banded(
        lambda: run_step(name, command, outputs=outputs, allow_empty=allow_empty, observer=told)
    )


@cli.command("status", context_settings=CONTEXT)
@journal_options
@click.option("--task-id", metavar="ID", help="One task; without it, a table of the job's tasks.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object.")
def status_command(state: str, job_id: str, task_id: str | None, as_json: bool) -> int:
    """Show a task's attempts, steps, outcome and logs, or a table of a job's tasks.

    An attempt is "interrupted" when it never wrote its end and its process is gone (or, seen
    from another node, its heartbeat is three log intervals old). Reads only.

    \b
    Examples:
      taskkit status --state az://state/runs --job-id align-2026-11
      taskkit status --state az://state/runs --job-id align-2026-11 --task-id s7 --json
    """
    from taskkit.runner.status import job_status, task_status
    from taskkit.storage.stores import Stores

    with Stores() as stores:
        if task_id is None:
            rows = job_status(stores, state, job_id)
            if as_json:
                click.echo(json.dumps({"job": job_id, "tasks": rows}))
            else:
                _table(rows)
            return EX_OK
        status = task_status(stores, state, job_id, task_id)
    if as_json:
        click.echo(json.dumps(status))
    else:
        _task(status)
    return EX_OK


def _table(rows: list[dict[str, Any]]) -> None:
    click.echo(f"{'TASK':<24} {'OUTCOME':<11} {'ATTEMPTS':>8} {'EXIT':>5}  REASON")
    for row in rows:
        code = "" if row["exit_code"] is None else str(row["exit_code"])
        attempts = "" if row["attempts"] is None else str(row["attempts"])
        click.echo(
            f"{row['task']:<24} {row['outcome']:<11} {attempts:>8} {code:>5}  {row['reason']}"
        )


_HOW = {"ended": "has ended", "interrupted": "was interrupted"}


def _outcome_lines(outcome: dict[str, Any]) -> None:
    click.echo(
        f"outcome: {outcome['state']} in attempt {outcome['attempt']} at {outcome['at']}, "
        f"exit {outcome['exit_code']}" + (f": {outcome['reason']}" if outcome["reason"] else "")
    )
    for manifest in outcome["manifests"]:
        click.echo(f"  published {manifest}")


def _task(status: dict[str, Any]) -> None:
    outcome = status["outcome"]
    click.echo(f"task {status['task']} of job {status['job']} ({status['journal']})")
    claim = outcome if outcome is not None and outcome["state"] == "publishing" else None
    if claim is not None and claim.get("stale"):
        # No attempt is publishing: show what the journal holds besides the claim.
        outcome = claim["replaced"]
    if outcome is None:
        click.echo("outcome: none yet")
    else:
        _outcome_lines(outcome)
    if claim is not None and claim.get("stale"):
        what, then = (
            ("republishing the outputs above", "the next run checks them again")
            if claim["replaced"]
            else ("publishing", "the next attempt takes it over")
        )
        click.echo(
            f"  stale publishing claim of attempt {claim['attempt']} at {claim['at']}, "
            f"{what}: that attempt {_HOW.get(claim['stale'], claim['stale'])}; {then}"
        )
    elif claim is not None and claim.get("replaced"):
        replaced = claim["replaced"]
        click.echo(
            f"  republishing the outputs of the success of attempt {replaced['attempt']} "
            f"at {replaced['at']}"
        )
    for a in status["attempts"]:
        code = "" if a["exit_code"] is None else f"exit {a['exit_code']}, "
        parts = [a["state"], f"{code}{a['verdict']}" if a["verdict"] else code.rstrip(", ")]
        shown = ", ".join(p for p in parts if p)
        click.echo(
            f"attempt {a['number']}: {shown}, started {a['started']}"
            + (f" on {a['node']}" if a["node"] else "")
        )
        if a["reason"]:
            click.echo(f"  {a['reason']}")
        if a["logs"]:
            click.echo(f"  logs {a['logs']}")
    for s in status["steps"]:
        click.echo(f"step {s['name']}: done in attempt {s['attempt']} ({s['files']} files)")
