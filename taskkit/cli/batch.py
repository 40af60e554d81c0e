"""``taskkit batch``: what Azure Batch needs to run tasks through ``taskkit run``."""

from __future__ import annotations

import json
import re
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import click

from taskkit.cli._app import CONTEXT, cli
from taskkit.cli.report import say as _say
from taskkit.cli.tasks import run_options, spec_from_options
from taskkit.exceptions import EX_OK, ConfigError, UsageError

if TYPE_CHECKING:
    from taskkit.runner.spec import RunSpec

__all__ = ["batch_group", "run_args"]

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@cli.group("batch", context_settings=CONTEXT)
def batch_group() -> None:
    """Azure Batch definitions for tasks run through taskkit.

    \b
    Examples:
      taskkit batch task-json --id s7 --state az://state/runs -- python run.py
    """


def run_args(spec: RunSpec) -> list[str]:
    """The ``taskkit run`` arguments that carry ``spec`` to a node: every setting that differs
    from its default, a spec file inlined (it is not on the node). Job and task ids are left
    to Batch's own ``AZ_BATCH_JOB_ID``/``AZ_BATCH_TASK_ID``."""
    from taskkit.runner.spec import RunSpec

    defaults = RunSpec.model_validate({})
    args: list[str] = []
    for output in spec.output_texts:
        args += ["-o", output]
    for given in spec.input_texts:
        args += ["-i", given]
    for name in RunSpec.model_fields:
        if name in ("command", "inputs", "outputs", "job_id", "task_id"):
            continue
        value = getattr(spec, name)
        if value == getattr(defaults, name) or value is None:
            continue
        option = f"--{name.replace('_', '-')}"
        if isinstance(value, bool):  # a flag: its default is off
            args.append(option)
            continue
        args += [option, _duration(value) if isinstance(value, float) else str(value)]
    return [*args, "--", *spec.command]


def _duration(seconds: float) -> str:
    """``15552000s``, ``0.00001s``: every digit, never an exponent, which no duration takes."""
    return f"{Decimal(repr(seconds)):f}".removesuffix(".0") + "s"


@batch_group.command("task-json", context_settings={**CONTEXT, "allow_interspersed_args": False})
@run_options
@click.option("--id", "task_id_json", metavar="ID", help="The task id [default: --task-id].")
@click.option(
    "--env",
    "environment",
    multiple=True,
    metavar="NAME=VALUE",
    help="An environment setting of the task. Repeatable; never a credential.",
)
@click.argument("command", nargs=-1, type=click.UNPROCESSED, metavar="-- COMMAND [ARGS]...")
def task_json_command(
    command: tuple[str, ...],
    task_id_json: str | None,
    environment: tuple[str, ...],
    **options: Any,
) -> int:
    """Print the Batch task JSON that runs COMMAND through 'taskkit run' with these options.

    The command line runs under /bin/sh with every argument quoted; maxTaskRetryCount is
    --max-retries; maxWallClockTime leaves room after --deadline for the final flush; the
    policy's permanent exit codes block dependent tasks. Nothing is sent to Batch.

    \b
    Examples:
      taskkit batch task-json --id sample-7 --state az://state/runs --max-retries 3 \\
          --permanent-codes 2 -o 'out/**=az://results/s7/' -- python run.py --sample 7
    """
    from taskkit.batch.taskjson import task_json
    from taskkit.runner.spec import check_setting

    if task_id_json is not None:  # checked here, to name the option the user typed
        try:
            check_setting("task_id", task_id_json)
        except ValueError as exc:
            raise ConfigError(f"command line: --id: {exc}") from None
    task_id = task_id_json or options.get("task_id")
    spec = spec_from_options({**options, "task_id": task_id}, command)
    if not spec.command:
        raise UsageError("no command (taskkit batch task-json [OPTIONS] -- COMMAND [ARGS]...)")
    if not spec.task_id:
        raise UsageError("no task id: give --id")
    env: dict[str, str] = {}
    for setting in environment:
        name, sep, value = setting.partition("=")
        if not sep or not _ENV_NAME.fullmatch(name):
            raise UsageError(f"--env {setting!r}: expected NAME=VALUE, NAME of letters, digits, _")
        if name.startswith("AZ_BATCH_"):
            raise UsageError(f"--env {name}: Batch sets AZ_BATCH_* variables itself")
        if name in env:
            raise UsageError(f"--env {name} is given twice")
        env[name] = value
    if not spec.state and "TASKKIT_STATE" not in env:
        _say(
            "warning",
            "no state (neither --state nor TASKKIT_STATE in --env): the task cannot run as is",
        )
    document = task_json(
        run_args(spec),
        task_id=spec.task_id,
        max_retries=spec.max_retries,
        deadline=spec.deadline,
        policy=spec.policy(),
        environment=env,
    )
    click.echo(json.dumps(document, indent=2))
    return EX_OK
