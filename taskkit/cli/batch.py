"""``taskkit batch``: what Azure Batch needs to run tasks through ``taskkit run`` (or task
functions through ``taskkit call``)."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import click

from taskkit.cli._app import CONTEXT, LazyGroup, cli
from taskkit.cli.report import say as _say
from taskkit.cli.tasks import run_options, spec_from_options
from taskkit.exceptions import EX_OK, ConfigError, UsageError

if TYPE_CHECKING:
    from taskkit.runner.spec import RunSpec

__all__ = [
    "BATCH_COMMANDS",
    "batch_group",
    "call_args",
    "retention_option",
    "retention_seconds",
    "run_args",
]

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


#: The commands of ``taskkit batch`` defined in modules of their own.
BATCH_COMMANDS = {
    "status": "taskkit.cli.batchstatus",
    "submit": "taskkit.cli.submit",
    "tasks": "taskkit.cli.fanout",
}


@cli.group("batch", cls=LazyGroup, context_settings=CONTEXT, modules=BATCH_COMMANDS)
def batch_group() -> None:
    """Azure Batch definitions for tasks run through taskkit.

    \b
    Examples:
      taskkit batch task-json --id s7 --state az://state/runs -- python run.py
      taskkit batch tasks --template s.json --shards 100 > tasks.json
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


#: ``--retention-time`` of ``task-json`` and ``batch tasks``: Batch's ``retentionTime``.
retention_option = click.option(
    "--retention-time",
    metavar="DURATION",
    default=None,
    help="How long the node keeps a completed task's folder (e.g. 12h, 2d: Batch's "
    "retentionTime), so finished tasks free the node's disk [default: Batch's, 7 days].",
)


def retention_seconds(text: str | None) -> float | None:
    """``--retention-time`` in seconds, read as ``--deadline`` is read (``90s``, ``12h``,
    ``7d``, ``1h30m``); a :class:`ConfigError` naming the option otherwise."""
    from taskkit.runner.spec import parse_duration

    if text is None:
        return None
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise ConfigError(f"command line: --retention-time: {exc}") from None


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
@click.option(
    "--call",
    "call_target",
    metavar="MODULE:FUNCTION",
    help="Call this task function through 'taskkit call' instead of a COMMAND; the "
    "arguments are its NAME=VALUE words.",
)
@click.option(
    "--path",
    "call_paths",
    multiple=True,
    metavar="DIR",
    help="With --call: import from DIR on the node too. Repeatable.",
)
@click.option(
    "--on-permanent",
    type=click.Choice(["block", "terminate-job", "disable-job"]),
    default="block",
    show_default=True,
    help="What a permanent exit code does beyond blocking dependent tasks: end the job, or "
    "stop it scheduling more tasks (the job needs onTaskFailure "
    "performExitOptionsJobAction).",
)
@retention_option
@click.argument("command", nargs=-1, type=click.UNPROCESSED, metavar="-- COMMAND [ARGS]...")
def task_json_command(
    command: tuple[str, ...],
    task_id_json: str | None,
    environment: tuple[str, ...],
    call_target: str | None,
    call_paths: tuple[str, ...],
    on_permanent: str,
    retention_time: str | None,
    **options: Any,
) -> int:
    """Print the Batch task JSON that runs COMMAND through 'taskkit run' with these options.

    The command line runs under /bin/sh with every argument quoted; maxTaskRetryCount is
    --max-retries; maxWallClockTime leaves room after --deadline for the final flush; the
    policy's permanent exit codes block dependent tasks (dependencyAction: block) and, with
    --on-permanent terminate-job or disable-job, end or disable the job: Batch accepts that
    only on a job whose onTaskFailure is performExitOptionsJobAction ('taskkit batch submit
    --create-job' creates it so). Retryable codes keep Batch's defaults: it retries them.
    retentionTime is --retention-time.
    Nothing is sent to Batch.

    With --call MODULE:FUNCTION the task runs 'taskkit call MODULE:FUNCTION NAME=VALUE...'
    instead (options before the NAME=VALUE words); the function's options come from its
    @taskkit.task, so only --id, --state, --max-retries, --env, --path and -v apply.

    \b
    Examples:
      taskkit batch task-json --id sample-7 --state az://state/runs --max-retries 3 \\
          --permanent-codes 2 -o 'out/**=az://results/s7/' -- python run.py --sample 7
      taskkit batch task-json --id shard-3 --state az://state/calls --max-retries 2 \\
          --call pipeline:shard n=3 tags=a tags=b
      taskkit batch task-json --id s7 --state az://state/runs --retention-time 12h \\
          -- python run.py --sample 7
    """
    from taskkit.batch.taskjson import task_json
    from taskkit.runner.spec import check_setting

    if task_id_json is not None:  # checked here, to name the option the user typed
        try:
            check_setting("task_id", task_id_json)
        except ValueError as exc:
            raise ConfigError(f"command line: --id: {exc}") from None
    task_id = task_id_json or options.get("task_id")
    retention = retention_seconds(retention_time)
    if call_target is not None:
        return _call_task_json(
            call_target,
            command,
            call_paths,
            task_id,
            environment,
            on_permanent,
            retention,
            options,
        )
    if call_paths:
        raise UsageError("--path goes with --call (a COMMAND finds its own modules)")
    spec = spec_from_options({**options, "task_id": task_id}, command)
    if not spec.command:
        raise UsageError("no command (taskkit batch task-json [OPTIONS] -- COMMAND [ARGS]...)")
    if not spec.task_id:
        raise UsageError("no task id: give --id")
    env = _environment(environment, spec)
    document = task_json(
        run_args(spec),
        task_id=spec.task_id,
        max_retries=spec.max_retries,
        deadline=spec.deadline,
        policy=spec.policy(),
        environment=env,
        on_permanent=on_permanent,
        retention_time=retention,
    )
    _say_job_action(on_permanent)
    click.echo(json.dumps(document, indent=2))
    return EX_OK


def _say_job_action(on_permanent: str) -> None:
    """The one thing the JSON cannot say itself: the job it needs."""
    from taskkit.batch.taskjson import ACTING_JOB, ON_PERMANENT

    if ON_PERMANENT[on_permanent] is not None:
        _say(
            "note",
            f"--on-permanent {on_permanent}: the job needs onTaskFailure {ACTING_JOB} "
            "(Batch refuses this task on any other job; 'taskkit batch submit --create-job' "
            "creates it so)",
        )


def _environment(environment: tuple[str, ...], spec: RunSpec) -> dict[str, str]:
    """The ``--env`` settings, checked; a warning when no state reaches the node."""
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
    return env


#: The options of task-json that carry to a ``taskkit call`` task; the others are settings of
#: ``taskkit run``, which a task function takes from its ``@taskkit.task(...)``.
_CALL_OPTIONS = frozenset({"task_id", "job_id", "state", "max_retries", "verbose"})
_OPTION_NAMES = {"inputs": "-i", "outputs": "-o", "spec_file": "--spec"}


def call_args(
    target: str, words: Sequence[str], *, state: str | None, paths: Sequence[str], verbose: bool
) -> list[str]:
    """The ``taskkit call`` arguments of a Batch task: ``target``, its options, then the
    ``NAME=VALUE`` ``words``. Raises :class:`UsageError` for a target that is not
    MODULE:FUNCTION or a word that is not NAME=VALUE (the module itself is not imported here:
    it is on the node)."""
    from taskkit.cli.call import parse_target
    from taskkit.cli.values import split_word

    if parse_target(target) is None:
        raise UsageError(f"--call: expected MODULE:FUNCTION, not {target!r}")
    for word in words:
        split_word(word)
    args = [target]
    args += ["--state", state] if state else []
    for path in paths:
        args += ["--path", path]
    args += ["-v"] if verbose else []
    return [*args, *words]


def _call_task_json(
    target: str,
    words: tuple[str, ...],
    paths: tuple[str, ...],
    task_id: str | None,
    environment: tuple[str, ...],
    on_permanent: str,
    retention: float | None,
    options: dict[str, Any],
) -> int:
    """``task-json --call``: the Batch task whose command line is ``taskkit call ...``; its
    exit conditions list the call's permanent failure (1) with taskkit's own (200-202)."""
    from taskkit.batch.taskjson import task_json
    from taskkit.runner.policy import ExitPolicy

    for name, value in options.items():
        if name not in _CALL_OPTIONS and value not in (None, (), False):
            option = _OPTION_NAMES.get(name, "--" + name.replace("_", "-"))
            raise UsageError(
                f"--call: {option} is a setting of 'taskkit run'; a task function takes it "
                "from @taskkit.task(...)"
            )
    spec = spec_from_options({**options, "task_id": task_id}, ())
    if not spec.task_id:
        raise UsageError("no task id: give --id")
    args = call_args(target, words, state=spec.state, paths=paths, verbose=bool(spec.verbose))
    env = _environment(environment, spec)
    from taskkit.function.failures import EX_CALL_PERMANENT

    document = task_json(
        args,
        task_id=spec.task_id,
        max_retries=spec.max_retries,
        deadline=None,  # the function's own deadline is its decorator's, unknown here
        policy=ExitPolicy.from_codes(permanent=EX_CALL_PERMANENT),
        environment=env,
        verb="call",
        on_permanent=on_permanent,
        retention_time=retention,
    )
    _say_job_action(on_permanent)
    click.echo(json.dumps(document, indent=2))
    return EX_OK
