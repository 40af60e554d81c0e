"""The Azure Batch task JSON (REST shape, camelCase) that runs one ``taskkit run`` command line
(or one ``taskkit call`` line: ``verb="call"``; everything below holds for it alike).

``taskkit batch task-json`` prints what :func:`task_json` builds. It is a plan: pure, printable,
nothing is sent to Batch. Three invariants hold for every JSON it returns:

* **The argv survives.** Batch does not run a command line under a shell; it splits the line
  into words itself and starts the first word. :func:`command_line` builds
  ``/bin/sh -c '<inner line>'`` where the inner line is ``exec taskkit run ...`` with every
  argument ``shlex``-quoted, and the inner line is quoted once more as the single argument of
  ``sh -c``. Split as Batch splits it and run by ``sh``, it hands taskkit exactly ``run_args``,
  whatever they hold (spaces, quotes, ``$``, backticks, newlines, glob characters, non-ASCII).
  ``sh`` is there for ``PATH`` lookup, which a shell-less command line lacks; ``exec`` makes
  taskkit the task's process, so Batch's termination signal reaches it and not a shell.
* **No credential lands in the JSON.** Anything :func:`taskkit.redaction.redact` would hide, in
  an argument or an environment value, raises :class:`~taskkit.exceptions.ConfigError` naming
  the place but never the value. Credentials belong to the pool or node (a managed identity, a
  start task), not to a task definition that anyone who can read the job can read.
* **Batch never kills an attempt before taskkit's own deadline and the flush after it.**

How Batch splits a Linux command line. The docs say only that the command line "does not run
under a shell" and show ``/bin/sh -c "MyTaskApplication $MY_ENV_VAR"`` as the way to get shell
features (https://learn.microsoft.com/azure/batch/batch-compute-node-environment-variables,
"Command-line expansion of environment variables"). What the splitter does follows from use:
Nextflow's Azure Batch executor submits ``sh -c 'bash .command.run 2>&1 | tee .command.log'``
(one single-quoted word); a start task ``bash -c "..." && bash -c '...'`` ran only its first
half (nextflow-io/nextflow#6863, #6300), so quotes group words and ``&&`` is a plain word; and
``echo $AZ_BATCH_POOL_ID`` printed the literal name (Azure/azure-sdk-for-net#17107), so no
expansion happens. That is POSIX word splitting without a shell, which the tests emulate with
``shlex.split``. The command line built here does not lean on the undocumented corners: outside
single quotes it holds only spaces and ``"'"`` (a double-quoted single quote) and never a
backslash, so it splits the same way whether or not the splitter honours backslash escapes.

``maxWallClockTime``. Batch documents it as "the maximum elapsed time that the Task may run,
measured from the time the Task starts" (BatchTaskConstraints in the REST reference,
https://learn.microsoft.com/rest/api/batchservice/tasks/create-task, and in azure-batch 15.x's
``models.BatchTaskConstraints``) and says nothing about retries: whether a retry restarts the
clock is not documented, while the task statistics' ``wallClockTime`` explicitly "includes the
wall clock time of all the Task retries". Expiry completes the task with no further retry.
taskkit therefore budgets for the worse reading, a clock that runs across retries: attempts x
(deadline + margin), with attempts = ``max_retries + 1``, and no limit at all when retries are
unlimited. If the clock does restart per attempt, the limit is looser than needed but still
never cuts an attempt short; taskkit's own deadline is what stops a hung attempt. (Under the
across-retries reading, time a retry spends queued for a node could count too; no value can
bound that, which is one more reason the limit is only a backstop.) A task lives at most 180
days from when it is added to its job ("Batch task lifetime", Azure Batch's quotas and limits):
a deadline beyond that is refused, and a limit that would reach it is left out, since the
lifetime ends the task first.

``exitConditions``. The policy's permanent codes are listed, single codes in ``exitCodes`` and
runs in ``exitCodeRanges``, each with ``exitOptions: {"dependencyAction": "block"}``: dependent
tasks wait for a fix rather than run on missing results. That is Batch's default for a failure
too ("The default is 'satisfy' for exit code 0, and 'block' for all other exit conditions",
ExitOptions.dependencyAction), and it is written out so that the JSON says what it means and a
reader does not have to know the default; a job accepts it whether or not it uses task
dependencies. Retryable codes are not listed: Batch retries them up to ``maxTaskRetryCount``
with its defaults, and no ``default`` entry is emitted, so exit 0 keeps satisfying dependents.

``on_permanent`` adds a ``jobAction`` to those entries: ``terminate-job`` (``terminate``) ends
the job at the first permanent failure, ``disable-job`` (``disable``) stops it from scheduling
more tasks. Batch carries out a ``jobAction`` only on a job whose ``onTaskFailure`` is
``performExitOptionsJobAction``, and refuses a task that sets one on a job whose
``onTaskFailure`` is ``noaction`` (the default): such a job must be created with
:data:`ACTING_JOB` (``taskkit batch submit --create-job`` does it).
"""

from __future__ import annotations

import math
import shlex
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from taskkit.exceptions import ConfigError, MisuseError
from taskkit.redaction import SECRET_ENV_VARS, redact
from taskkit.runner.spec import BATCH_ID, TASK_LIFETIME

if TYPE_CHECKING:
    from taskkit.runner.policy import ExitPolicy

__all__ = [
    "ACTING_JOB",
    "FLUSH_MARGIN_FRACTION",
    "FLUSH_MARGIN_MIN",
    "ON_PERMANENT",
    "command_line",
    "iso_duration",
    "task_json",
    "wall_clock_margin",
]

#: After its own deadline taskkit still stops the command, uploads logs and outputs and writes
#: the journal record of the attempt; Batch must not kill it during that flush. Five minutes
#: covers a log upload over a slow link; a tenth of the deadline scales with long tasks, whose
#: logs and outputs are larger.
FLUSH_MARGIN_MIN = 300.0
FLUSH_MARGIN_FRACTION = 0.10

#: Batch task ids: 1-64 ASCII letters, digits, hyphens and underscores.

#: What ``on_permanent`` may be, and the ``jobAction`` each adds to the permanent codes' exit
#: options (see the module docstring): ``block`` blocks dependents only.
ON_PERMANENT: Mapping[str, str | None] = {
    "block": None,
    "terminate-job": "terminate",
    "disable-job": "disable",
}
#: The job setting without which Batch neither honours nor accepts a task's ``jobAction``.
ACTING_JOB = "performExitOptionsJobAction"

_SHELL = "/bin/sh"


def wall_clock_margin(deadline: float) -> float:
    """Seconds Batch's limit adds to taskkit's own ``deadline`` for one attempt's flush."""
    return max(FLUSH_MARGIN_MIN, FLUSH_MARGIN_FRACTION * deadline)


def command_line(run_args: Sequence[str], *, program: str = "taskkit", verb: str = "run") -> str:
    """A Batch command line that runs ``program run *run_args`` with exactly that argv
    (``program call *run_args`` with ``verb="call"``).

    ``command_line(["--", "echo", "a b"])`` is
    ``/bin/sh -c 'exec taskkit run -- echo '"'"'a b'"'"''``.
    """
    if isinstance(run_args, str):
        raise MisuseError("run_args must be a sequence of arguments, not one string")
    words = [program, verb, *run_args]
    for position, word in enumerate(words):
        if not isinstance(word, str):
            raise MisuseError(f"command line words must be strings, not {type(word).__name__}")
        if "\0" in word:
            where = "the program" if position == 0 else f"argument {position - 2}"
            raise ConfigError(f"{where} of `taskkit {verb}` holds a NUL character; no argv can")
    inner = "exec " + shlex.join(words)
    return f"{_SHELL} -c {shlex.quote(inner)}"


def task_json(
    run_args: Sequence[str],
    *,
    task_id: str,
    max_retries: int,
    deadline: float | None,
    policy: ExitPolicy,
    environment: Mapping[str, str] = {},
    program: str = "taskkit",
    verb: str = "run",
    on_permanent: str = "block",
    retention_time: float | None = None,
) -> dict[str, object]:
    """The Batch task (REST JSON, camelCase) that runs ``taskkit run *run_args`` (``taskkit
    call *run_args`` with ``verb="call"``).

    ``max_retries`` is Batch's ``maxTaskRetryCount`` (-1 = unlimited); ``deadline`` is the
    runner's own per-attempt limit in seconds, from which ``maxWallClockTime`` is derived;
    ``policy`` supplies the exit codes that mean a permanent failure, which block dependent
    tasks and, with ``on_permanent`` (a key of :data:`ON_PERMANENT`), end or disable the job;
    ``retention_time`` (seconds) is Batch's ``retentionTime``, how long the node keeps the
    task's folder after the task completes (Batch's default: 7 days). Raises
    :class:`~taskkit.exceptions.ConfigError` for an invalid task id, retry count, deadline or
    retention time, and when an argument or environment value carries a credential.
    """
    _check_task_id(task_id)
    if on_permanent not in ON_PERMANENT:
        choices = ", ".join(ON_PERMANENT)
        raise ConfigError(f"on permanent failure: expected one of {choices}, not {on_permanent!r}")
    line = command_line(run_args, program=program, verb=verb)  # first: it checks the types
    _check_no_credentials(run_args, environment, verb)
    task: dict[str, object] = {"id": task_id, "commandLine": line}
    if environment:
        task["environmentSettings"] = [
            {"name": name, "value": environment[name]} for name in sorted(environment)
        ]
    task["constraints"] = _constraints(max_retries, deadline, retention_time)
    exit_conditions = _exit_conditions(policy, ON_PERMANENT[on_permanent])
    if exit_conditions:
        task["exitConditions"] = exit_conditions
    return task


def _check_task_id(task_id: str) -> None:
    if not isinstance(task_id, str) or BATCH_ID.fullmatch(task_id) is None:
        raise ConfigError(
            f"invalid Batch task id {task_id!r}: use 1-64 letters, digits, '-' and '_'"
        )


def _check_no_credentials(
    run_args: Sequence[str], environment: Mapping[str, str], verb: str
) -> None:
    advice = "give it to the pool/node instead (managed identity, start task)"
    for position, arg in enumerate(run_args):
        if redact(arg) != arg:
            previous = run_args[position - 1] if position else ""
            option = f" (the value of {previous})" if previous.startswith("-") else ""
            raise ConfigError(
                f"the JSON would carry a credential in argument {position}{option} "
                f"of `taskkit {verb}`; {advice}"
            )
    for name, value in environment.items():
        if not name:
            raise ConfigError("an environment setting needs a name")
        if name.upper() in SECRET_ENV_VARS or redact(value) != value:
            raise ConfigError(
                f"the JSON would carry a credential in environment setting {name!r}; {advice}"
            )


def _constraints(
    max_retries: int, deadline: float | None, retention_time: float | None = None
) -> dict[str, object]:
    if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < -1:
        raise ConfigError(f"max retries must be -1 (unlimited) or >= 0, not {max_retries!r}")
    constraints: dict[str, object] = {"maxTaskRetryCount": max_retries}
    if deadline is not None:
        number = isinstance(deadline, (int, float)) and not isinstance(deadline, bool)
        if not number or not math.isfinite(deadline) or deadline <= 0:
            raise ConfigError(f"deadline must be a positive number of seconds, not {deadline!r}")
        if deadline > TASK_LIFETIME:
            raise ConfigError(
                f"deadline {deadline:g} s is beyond Batch's 180-day task lifetime; at most 180 days"
            )
        # With unlimited retries the clock may run across retries (module docstring): no
        # finite value is safe.
        if max_retries != -1:
            per_attempt = deadline + wall_clock_margin(deadline)
            total = (max_retries + 1) * per_attempt
            if total < TASK_LIFETIME:  # else Batch's lifetime ends the task first: no limit
                constraints["maxWallClockTime"] = iso_duration(total)
    if retention_time is not None:
        number = isinstance(retention_time, (int, float)) and not isinstance(retention_time, bool)
        if not number or not math.isfinite(retention_time) or retention_time <= 0:
            raise ConfigError(
                f"retention time must be a positive number of seconds, not {retention_time!r}"
            )
        # Whole seconds, rounded up: the folder is kept at least as long as asked.
        constraints["retentionTime"] = iso_duration(retention_time)
    return constraints


def iso_duration(seconds: float) -> str:
    """``seconds`` rounded up to a whole second, as an ISO 8601 duration: ``PT1H5M``.

    Hours are not folded into days: ``PT39H36M`` has one meaning, ``P1D...`` leans on a day
    being 24 hours.
    """
    total = math.ceil(round(seconds, 3))  # up, but not for float noise such as 0.1 * 3600
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{n}{unit}" for n, unit in ((hours, "H"), (minutes, "M"), (secs, "S")) if n]
    return "PT" + ("".join(parts) or "0S")


def _exit_conditions(policy: ExitPolicy, job_action: str | None) -> dict[str, object]:
    def options() -> dict[str, object]:  # a fresh mapping per entry: callers may edit one
        chosen: dict[str, object] = {"dependencyAction": "block"}
        if job_action is not None:
            chosen["jobAction"] = job_action
        return chosen

    codes: list[dict[str, object]] = []
    ranges: list[dict[str, object]] = []
    for start, end in policy.permanent_codes().ranges():
        if start == end:
            codes.append({"code": start, "exitOptions": options()})
        else:
            ranges.append({"start": start, "end": end, "exitOptions": options()})
    conditions: dict[str, object] = {}
    if codes:
        conditions["exitCodes"] = codes
    if ranges:
        conditions["exitCodeRanges"] = ranges
    return conditions
