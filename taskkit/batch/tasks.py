"""Batch task objects read from a file: what ``taskkit local run`` emulates, checked as the
service checks them.

:func:`read_tasks` takes task objects in the REST shape (camelCase, what ``taskkit batch
task-json`` prints and ``Add Task`` takes): a JSON array, JSON lines, or objects one after
another (the output of several ``task-json`` runs in one file) and returns
:class:`BatchTask` values, or raises :class:`~taskkit.exceptions.DataError` with one line
naming the task and the field.

Invariants:

* A task the service would refuse is refused here: an id that is not a Batch id, ids equal
  ignoring case, a missing ``commandLine``, a retry count below -1, a ``maxWallClockTime`` that
  is not an ISO 8601 duration, a dependency on a task that is not in the file, on itself, or in
  a cycle.
* No field is silently ignored. A field Batch does not know is refused (a typo would otherwise
  change what runs); a field Batch knows and the emulator does not carry out
  (:data:`NOT_EMULATED`: resource files, output files, a user identity...) is returned in
  :attr:`TaskFile.not_emulated`, for the caller to name; one without which the task would
  run as something else (:data:`REFUSED`: a container, a multi-instance task) is refused.
* The command line is split into words here, as Batch splits a Linux command line: POSIX
  words, quotes group, nothing is expanded (see :mod:`taskkit.batch.taskjson`). A line that
  cannot be split (an open quote) is refused before anything runs.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from taskkit.exceptions import DataError

__all__ = [
    "DEPENDS_ON_CHARACTERS",
    "MAX_ARGUMENT",
    "NOT_EMULATED",
    "REFUSED",
    "BatchTask",
    "ExitConditions",
    "ExitOptions",
    "TaskFile",
    "parse_duration",
    "read_tasks",
]

JobAction = Literal["none", "disable", "terminate"]
DependencyAction = Literal["satisfy", "block"]

#: Fields of a Batch task the emulator knows and does not carry out (named, not ignored).
NOT_EMULATED = frozenset(
    {
        "resourceFiles",
        "outputFiles",
        "userIdentity",
        "affinityInfo",
        "applicationPackageReferences",
        "authenticationTokenSettings",
    }
)
#: The longest argument Linux passes to a program (MAX_ARG_STRLEN, 32 pages, less its NUL).
MAX_ARGUMENT = 131_071
#: The most characters the ids of one task's ``dependsOn.taskIds`` may hold together.
DEPENDS_ON_CHARACTERS = 64_000
#: Fields that change what a task is so much that running it as a plain process would mislead.
REFUSED = frozenset({"containerSettings", "multiInstanceSettings"})
_KNOWN = frozenset(
    {
        "id",
        "displayName",
        "commandLine",
        "environmentSettings",
        "constraints",
        "exitConditions",
        "dependsOn",
        "requiredSlots",
    }
)
_CONSTRAINTS = frozenset({"maxTaskRetryCount", "maxWallClockTime", "retentionTime"})
_EXIT_FIELDS = frozenset(
    {"exitCodes", "exitCodeRanges", "preProcessingError", "fileUploadError", "default"}
)
_DURATION = re.compile(
    r"P(?:(?P<d>\d+(?:\.\d+)?)D)?"
    r"(?:T(?:(?P<h>\d+(?:\.\d+)?)H)?(?:(?P<m>\d+(?:\.\d+)?)M)?(?:(?P<s>\d+(?:\.\d+)?)S)?)?"
)


@dataclass(frozen=True)
class ExitOptions:
    """What the service does when a task completes with a given outcome; ``None`` keeps the
    service's default (satisfy and none after success, block and terminate after a failure)."""

    job_action: JobAction | None = None
    dependency_action: DependencyAction | None = None

    def resolved(self, success: bool) -> tuple[JobAction, DependencyAction]:
        """The job action and the dependency action, defaults applied."""
        return (
            self.job_action or ("none" if success else "terminate"),
            self.dependency_action or ("satisfy" if success else "block"),
        )


@dataclass(frozen=True)
class ExitConditions:
    """A task's ``exitConditions``: exit codes and ranges first, then ``default``."""

    codes: Mapping[int, ExitOptions] = field(default_factory=dict)
    ranges: tuple[tuple[int, int, ExitOptions], ...] = ()
    pre_processing_error: ExitOptions | None = None
    default: ExitOptions | None = None
    file_upload_error: ExitOptions | None = None

    def sets_job_action(self) -> bool:
        """Whether any entry names a ``jobAction`` (the service refuses that on a job whose
        ``onTaskFailure`` is ``noaction``)."""
        entries = [*self.codes.values(), *(r[2] for r in self.ranges)]
        entries += [
            e for e in (self.pre_processing_error, self.file_upload_error, self.default) if e
        ]
        return any(e.job_action is not None for e in entries)

    def for_exit(self, code: int | None) -> ExitOptions:
        """The options for a completion with exit code ``code``; ``None``: the command could
        not be started (``preProcessingError``)."""
        if code is None:
            return self.pre_processing_error or self.default or ExitOptions()
        if code in self.codes:
            return self.codes[code]
        for start, end, options in self.ranges:
            if start <= code <= end:
                return options
        # Batch's default for exit code 0 is "satisfy, none" whatever ``default`` says: the
        # default entry is for "all other exit conditions", and 0 is not a failure.
        return ExitOptions() if code == 0 else (self.default or ExitOptions())


@dataclass(frozen=True)
class BatchTask:
    """One task of the file, checked; :attr:`argv` is its command line split as Batch splits it."""

    id: str
    command_line: str
    argv: tuple[str, ...]
    environment: Mapping[str, str] = field(default_factory=dict)
    max_retries: int = 0
    max_wall_clock: float | None = None
    exit_conditions: ExitConditions = field(default_factory=ExitConditions)
    depends_on: tuple[str, ...] = ()
    display_name: str | None = None
    #: The task object as read, for sending it to Batch unchanged.
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def retries_unlimited(self) -> bool:
        return self.max_retries == -1


@dataclass(frozen=True)
class TaskFile:
    """The tasks of a file in its order, and the fields it uses that are not emulated (field
    name to the ids of the tasks using it)."""

    tasks: tuple[BatchTask, ...]
    not_emulated: Mapping[str, tuple[str, ...]]


def parse_duration(text: str) -> float:
    """Seconds in an ISO 8601 duration as Batch takes them (``PT1H30M``, ``P2D``, ``PT0.5S``);
    a :class:`ValueError` otherwise."""
    match = _DURATION.fullmatch(text) if isinstance(text, str) else None
    if match is None or text in ("P", "PT") or text.endswith("T"):
        raise ValueError(f"{text!r} is not an ISO 8601 duration such as PT1H30M")
    d, h, m, s = (float(match.group(k) or 0) for k in "dhms")
    return d * 86400 + h * 3600 + m * 60 + s


def read_tasks(text: str, source: str, *, service: bool = False) -> TaskFile:
    """The tasks in ``text`` (JSON task objects, see the module docstring), read from
    ``source`` (named in errors); see the module docstring. ``service=True`` reads them for
    the Batch service rather than the emulator: the fields the emulator refuses
    (:data:`REFUSED`) and more than one required slot are accepted."""
    objects = list(_objects(text, source))
    if not objects:
        raise DataError(f"{source}: no tasks (an empty array or file)")
    tasks: list[BatchTask] = []
    not_emulated: dict[str, list[str]] = {}
    seen: dict[str, str] = {}
    for n, obj in enumerate(objects, 1):
        task = _task(obj, f"{source}: task {n}", service)
        where = f"{source}: task {task.id!r}"
        folded = task.id.lower()
        if folded in seen:
            raise DataError(
                f"{where}: the id is already used by task {seen[folded]!r} (Batch ids are "
                "unique ignoring case)"
            )
        seen[folded] = task.id
        for name in sorted(NOT_EMULATED & obj.keys()):
            if obj[name] not in (None, [], {}):
                not_emulated.setdefault(name, []).append(task.id)
        constraints = obj.get("constraints") or {}
        if constraints.get("retentionTime") is not None:
            # The emulator keeps task folders for ever: a retention time is never reached.
            not_emulated.setdefault("constraints.retentionTime", []).append(task.id)
        tasks.append(task)
    tasks = _with_dependencies(tasks, objects, source)
    return TaskFile(tuple(tasks), {k: tuple(v) for k, v in not_emulated.items()})


def _objects(text: str, source: str) -> Iterator[Mapping[str, Any]]:
    """The task objects of ``text``: JSON values one after another (a JSON array, JSON lines,
    or the pretty objects of several ``taskkit batch task-json`` runs written to one file),
    each an object or an array of objects."""
    from taskkit.runner.spec import unique_keys  # pydantic's module: not at start-up

    decoder = json.JSONDecoder(object_pairs_hook=unique_keys)
    at, n = 0, 0
    # Lines are counted as the reading goes: counting from the start for each object would
    # be quadratic in the tasks of a JSON-lines file (100,000 tasks: minutes).
    line, counted = 1, 0
    while True:
        while at < len(text) and text[at].isspace():
            at += 1
        if at >= len(text):
            return
        line += text.count("\n", counted, at)
        counted = at
        try:
            value, at = decoder.raw_decode(text, at)
        except json.JSONDecodeError as exc:
            where = f"at line {exc.lineno} column {exc.colno}"
            raise DataError(f"{source}: not JSON: {exc.msg} {where}") from None
        except RecursionError:
            raise DataError(f"{source}: line {line}: JSON nested too deeply") from None
        except ValueError as exc:  # a key given twice
            raise DataError(f"{source}: line {line}: {exc}") from None
        if (
            isinstance(value, dict)
            and value.keys() == {"value"}
            and isinstance(value["value"], list)
        ):
            value = value["value"]  # the REST API's task collection: {"value": [...]}
        for item in value if isinstance(value, list) else [value]:
            n += 1
            if not isinstance(item, dict):
                raise DataError(
                    f"{source}: line {line}: task {n} is not a JSON object (give task objects: "
                    "a JSON array, or one object after another)"
                )
            yield item


def _task(obj: Mapping[str, Any], where: str, service: bool) -> BatchTask:
    from taskkit.runner.spec import BATCH_ID

    task_id = obj.get("id")
    if not isinstance(task_id, str) or not BATCH_ID.fullmatch(task_id):
        raise DataError(
            f"{where}: id: {task_id!r} is not a Batch task id (1 to 64 letters, digits, - and _)"
            if task_id is not None
            else f"{where}: no id"
        )
    where = f"{where.rsplit(': task ', 1)[0]}: task {task_id!r}"
    unknown = sorted(obj.keys() - _KNOWN - NOT_EMULATED - REFUSED)
    if unknown:
        raise DataError(f"{where}: unknown field {unknown[0]!r} (not a Batch task field)")
    refused = sorted(REFUSED & {k for k, v in obj.items() if v not in (None, [], {})})
    if refused and not service:
        raise DataError(
            f"{where}: {refused[0]} is not emulated, and without it the task would not run "
            "as it runs on Batch"
        )
    line = obj.get("commandLine")
    if not isinstance(line, str) or not line.strip():
        raise DataError(f"{where}: commandLine: a non-empty string is needed")
    longest, unsplittable = _words_shape(line)
    if longest > MAX_ARGUMENT:
        raise DataError(
            f"{where}: commandLine: a word of {longest:,} characters; Linux passes at most "
            f"{MAX_ARGUMENT:,} in one argument"
        )
    if unsplittable is not None:
        raise DataError(f"{where}: commandLine: cannot be split into words: {unsplittable}")
    # The words themselves only the emulator needs (it starts them); the service splits alike.
    argv = () if service else tuple(shlex.split(line))
    slots = obj.get("requiredSlots", 1)
    if isinstance(slots, bool) or not isinstance(slots, int) or slots < 1:
        raise DataError(f"{where}: requiredSlots: a whole number of at least 1, not {slots!r}")
    if slots != 1 and not service:
        raise DataError(f"{where}: requiredSlots: only 1 is emulated, not {slots!r}")
    name = obj.get("displayName")
    if name is not None and not isinstance(name, str):
        raise DataError(f"{where}: displayName: a string is needed")
    retries, wall = _constraints(obj.get("constraints"), where)
    return BatchTask(
        id=task_id,
        command_line=line,
        argv=argv,
        environment=_environment(obj.get("environmentSettings"), where),
        max_retries=retries,
        max_wall_clock=wall,
        exit_conditions=_exit_conditions(obj.get("exitConditions"), where),
        display_name=name,
        raw=obj,
    )


def _words_shape(line: str) -> tuple[int, str | None]:
    """How ``shlex.split`` (POSIX) would take ``line``, in one pass: about the length of its
    longest word, and why it cannot split it (an open quote, a last backslash) or None. A
    bound checked before splitting, whose cost grows with the square of a word's length."""
    longest = current = 0
    quote = ""
    chars = iter(line)
    for char in chars:
        if quote == "'":
            if char == "'":
                quote = ""
            else:
                current += 1
        elif quote == '"':
            if char == '"':
                quote = ""
            elif char == "\\":
                following = next(chars, None)
                if following is None:
                    return max(longest, current), "No escaped character"
                current += 1 if following in ('"', "\\") else 2
            else:
                current += 1
        elif char in "'\"":
            quote = char
        elif char == "\\":
            if next(chars, None) is None:
                return max(longest, current), "No escaped character"
            current += 1
        elif char.isspace():
            longest, current = max(longest, current), 0
        else:
            current += 1
    return max(longest, current), ("No closing quotation" if quote else None)


def _environment(value: object, where: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, list):
        raise DataError(f"{where}: environmentSettings: a list of {{name, value}} is needed")
    env: dict[str, str] = {}
    for item in value:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise DataError(f"{where}: environmentSettings: each entry needs a string name")
        name, text = item["name"], item.get("value", "")
        if set(item) - {"name", "value"}:
            raise DataError(f"{where}: environmentSettings: {name!r} has fields other than value")
        if not name or "=" in name or "\0" in name:
            raise DataError(f"{where}: environmentSettings: {name!r} is not a variable name")
        if name.upper().startswith("AZ_BATCH_"):
            raise DataError(
                f"{where}: environmentSettings: {name} is the service's to set (AZ_BATCH_ "
                "variables describe the node and the task)"
            )
        if not isinstance(text, str) or "\0" in text:
            raise DataError(f"{where}: environmentSettings: {name!r}: the value is no string")
        env[name] = text
    return env


def _constraints(value: object, where: str) -> tuple[int, float | None]:
    from taskkit.runner.spec import TASK_LIFETIME

    if value is None:
        return 0, None
    if not isinstance(value, dict):
        raise DataError(f"{where}: constraints: an object is needed")
    unknown = sorted(value.keys() - _CONSTRAINTS)
    if unknown:
        raise DataError(f"{where}: constraints: unknown field {unknown[0]!r}")
    retries = value.get("maxTaskRetryCount", 0)
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < -1:
        raise DataError(
            f"{where}: constraints.maxTaskRetryCount: {json.dumps(retries)} is not a count (-1: "
            "unlimited)"
        )
    wall = value.get("maxWallClockTime")
    seconds: float | None = None
    if wall is not None:
        try:
            seconds = parse_duration(wall)
        except ValueError as exc:
            raise DataError(f"{where}: constraints.maxWallClockTime: {exc}") from None
        if seconds <= 0:
            raise DataError(f"{where}: constraints.maxWallClockTime: must be above zero")
        if seconds >= TASK_LIFETIME:
            # What the service reports for "no limit" (TimeSpan.MaxValue, P10675199DT2H48M5...)
            # and anything past a task's lifetime: the lifetime ends the task first.
            seconds = None
    if value.get("retentionTime") is not None:
        try:
            parse_duration(value["retentionTime"])
        except ValueError as exc:
            raise DataError(f"{where}: constraints.retentionTime: {exc}") from None
    return retries, seconds


def _options(value: object, where: str) -> ExitOptions:
    if not isinstance(value, dict):
        raise DataError(f"{where}: an object is needed")
    unknown = sorted(set(value) - {"exitOptions"})
    if unknown:
        raise DataError(f"{where}: unknown field {unknown[0]!r} (exitOptions is known)")
    options = value.get("exitOptions") or {}
    if not isinstance(options, dict):
        raise DataError(f"{where}.exitOptions: an object is needed")
    unknown = sorted(set(options) - {"jobAction", "dependencyAction"})
    if unknown:
        raise DataError(
            f"{where}.exitOptions: unknown field {unknown[0]!r} (jobAction and dependencyAction "
            "are known)"
        )
    job, dep = options.get("jobAction"), options.get("dependencyAction")
    if job is not None and job not in ("none", "disable", "terminate"):
        raise DataError(f"{where}.exitOptions.jobAction: {job!r} is not none, disable or terminate")
    if dep is not None and dep not in ("satisfy", "block"):
        raise DataError(f"{where}.exitOptions.dependencyAction: {dep!r} is not satisfy or block")
    return ExitOptions(job_action=job, dependency_action=dep)


def _bounds(entry: object, where: str) -> tuple[int, int]:
    """The ``start`` and ``end`` of a range entry, both integers."""
    bounds = (entry.get("start"), entry.get("end")) if isinstance(entry, dict) else (None, None)
    start, end = bounds
    if not all(isinstance(b, int) and not isinstance(b, bool) for b in bounds):
        raise DataError(f"{where}: start and end: integers are needed")
    return int(start), int(end)  # type: ignore[arg-type]


def _exit_conditions(value: object, where: str) -> ExitConditions:
    if value is None:
        return ExitConditions()
    where = f"{where}: exitConditions"
    if not isinstance(value, dict):
        raise DataError(f"{where}: an object is needed")
    unknown = sorted(value.keys() - _EXIT_FIELDS)
    if unknown:
        raise DataError(f"{where}: unknown field {unknown[0]!r}")
    codes: dict[int, ExitOptions] = {}
    for n, entry in enumerate(value.get("exitCodes") or [], 1):
        code = entry.get("code") if isinstance(entry, dict) else None
        if isinstance(code, bool) or not isinstance(code, int):
            raise DataError(f"{where}.exitCodes[{n}]: code: an integer is needed")
        rest = {k: v for k, v in entry.items() if k != "code"}
        codes[code] = _options(rest, f"{where}.exitCodes[{n}]")
    ranges: list[tuple[int, int, ExitOptions]] = []
    for n, entry in enumerate(value.get("exitCodeRanges") or [], 1):
        start, end = _bounds(entry, f"{where}.exitCodeRanges[{n}]")
        if start > end:
            raise DataError(f"{where}.exitCodeRanges[{n}]: start {start} is above end {end}")
        rest = {k: v for k, v in entry.items() if k not in ("start", "end")}
        ranges.append((start, end, _options(rest, f"{where}.exitCodeRanges[{n}]")))
    named: dict[str, ExitOptions | None] = {}
    for name in ("preProcessingError", "fileUploadError", "default"):
        entry = value.get(name)
        named[name] = None if entry is None else _options({"exitOptions": entry}, f"{where}.{name}")
    return ExitConditions(
        codes=codes,
        ranges=tuple(ranges),
        pre_processing_error=named["preProcessingError"],
        default=named["default"],
        file_upload_error=named["fileUploadError"],
    )


def _with_dependencies(
    tasks: list[BatchTask], objects: list[Mapping[str, Any]], source: str
) -> list[BatchTask]:
    """``tasks`` with their ``dependsOn`` read and checked against the whole file."""
    by_id = {t.id.lower(): t.id for t in tasks}  # Batch ids match ignoring case
    numeric = {int(t.id): t.id for t in tasks if t.id.isdigit()}
    out: list[BatchTask] = []
    for task, obj in zip(tasks, objects, strict=True):
        value = obj.get("dependsOn")
        where = f"{source}: task {task.id!r}: dependsOn"
        if value is None:
            out.append(task)
            continue
        if not isinstance(value, dict) or set(value) - {"taskIds", "taskIdRanges"}:
            raise DataError(f"{where}: an object with taskIds and taskIdRanges is needed")
        ids: list[str] = []
        for field_name in ("taskIds", "taskIdRanges"):
            if not isinstance(value.get(field_name) or [], list):
                raise DataError(f"{where}: {field_name}: a list is needed")
        named = value.get("taskIds") or []
        for name in named:
            if not isinstance(name, str) or name.lower() not in by_id:
                raise DataError(f"{where}: {name!r} is no task of this file")
            ids.append(by_id[name.lower()])
        length = sum(len(name) for name in named)
        if length > DEPENDS_ON_CHARACTERS:
            raise DataError(
                f"{where}: taskIds hold {length:,} characters, over Batch's "
                f"{DEPENDS_ON_CHARACTERS:,} (give numeric ids as taskIdRanges instead)"
            )
        for n, entry in enumerate(value.get("taskIdRanges") or [], 1):
            start, end = _bounds(entry, f"{where}.taskIdRanges[{n}]")
            inside = [numeric[k] for k in sorted(numeric) if start <= k <= end]
            if start > end or not inside:
                raise DataError(
                    f"{where}.taskIdRanges[{n}]: no task has an id from {start} to {end}"
                )
            ids.extend(inside)
        if task.id in ids:
            raise DataError(f"{where}: a task cannot depend on itself")
        out.append(replace(task, depends_on=tuple(dict.fromkeys(ids))))
    _refuse_cycles(out, source)
    return out


def _refuse_cycles(tasks: Sequence[BatchTask], source: str) -> None:
    """A :class:`DataError` naming a task of a dependency cycle, if there is one (those tasks
    would wait for ever)."""
    after = {t.id: t.depends_on for t in tasks}
    state: dict[str, int] = {}  # 1: on the path being walked, 2: done
    for root, first in after.items():
        if state.get(root):
            continue
        stack: list[tuple[str, Iterator[str]]] = [(root, iter(first))]
        state[root] = 1
        while stack:
            node, children = stack[-1]
            child = next(children, None)
            if child is None:
                state[node] = 2
                stack.pop()
            elif state.get(child) == 1:
                raise DataError(
                    f"{source}: task {child!r}: dependsOn: a cycle ({child} waits on itself "
                    "through other tasks)"
                )
            elif not state.get(child):
                state[child] = 1
                stack.append((child, iter(after[child])))
