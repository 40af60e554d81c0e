"""Fan-out: one Batch task, the template, made into many (``taskkit batch tasks``). A plan:
pure, printable, nothing is sent to Batch.

The template is one task as ``taskkit batch task-json`` prints it: its command line is
``/bin/sh -c 'exec taskkit run|call ARGS...'`` (:func:`~taskkit.batch.taskjson.command_line`).
It is read as ``taskkit local run`` reads a task (:func:`~taskkit.batch.tasks.read_tasks`), so a
template the service would refuse is refused here. Its command line is split back into the
``taskkit`` arguments as Batch and ``sh`` split it; a line that leans on anything of ``sh``
but its quotes (``$``, a backtick, a glob, ``;``...) is refused, since its meaning could not be
carried into the new lines.

**Placeholders.** Inside each argument, ``{name}`` is replaced by the shard's value of
``name``, and ``{{``/``}}`` stand for literal braces (Python's ``str.format`` syntax, without
format specs). The names are ``{shard}`` (the shard's number, from 0), ``{shards}`` (how many
there are), ``{id}`` (the shard's id) and, with a parameter file, each column. A placeholder
no shard has a value for is an error, and so is a template that uses none (every task would
do the same work); a column the template never uses is a warning. Each argument is rebuilt
with :func:`~taskkit.batch.taskjson.command_line`: a value never touches the line's quoting,
and reaches the program byte for byte. ``displayName`` takes placeholders too;
``environmentSettings`` do not (a grouped task has one environment for all its shards).

**Calls.** A ``taskkit call`` template that uses no placeholder, given a parameter file, gets
one ``NAME=VALUE`` word a column (in the file's column order, the id column too) after its
own words: a file's columns are the function's parameters. A column also named by one of the
template's own words is an error.

**Ids.** Each shard has an id, which is the Batch task's id when a task holds one shard:
``<prefix>-<n>``, ``n`` zero-padded to the width of the largest so that the ids sort (the
prefix defaults to the template's id), or the value of the id column (``<prefix>-<value>``
when a prefix is given). An id that is no Batch id, or that equals another ignoring case, is
an error naming its row. The same inputs always give the same tasks, byte for byte.

**Groups.** With ``group`` K > 1 each task runs K shards one after another, ``taskkit run
--task-id <shard id> ...`` (or ``taskkit call ...``) each, joined by ``&&`` under the same
``/bin/sh -c``: every shard keeps its own journal (a call its own key), so a retry of the
task skips the shards already done and the task ends at the first shard that fails, with
that shard's exit code, which the template's exit conditions read as they would for one shard.
The task's id is ``<prefix>-g<n>``, and its ``maxWallClockTime`` is the template's times the
shards it holds (the limit is per shard in the template), left out past the task lifetime.
A shard's own attempts are counted by its journal: one that a failing shard before it kept
from running has used fewer attempts than the task. Only the last shard is ``exec``-ed: while
an earlier one runs, ``sh`` is its parent (as in Nextflow's own Batch command line, ``sh -c
'bash .command.run | tee ...'``), so a termination that reaches only ``sh`` and not its
process group would leave that shard to finish; ``taskkit local run`` signals the group.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from taskkit.batch.params import Params
from taskkit.batch.taskjson import command_line, iso_duration
from taskkit.batch.tasks import parse_duration, read_tasks
from taskkit.exceptions import ConfigError, DataError, UsageError
from taskkit.redaction import redact
from taskkit.runner.spec import BATCH_ID, TASK_LIFETIME

__all__ = ["BUILTINS", "FanOut", "Template", "plan_fanout", "read_template"]

#: The placeholders every shard has, and what each holds.
BUILTINS: Mapping[str, str] = {
    "shard": "the shard's number, from 0",
    "shards": "how many shards there are",
    "id": "the shard's id",
}
Verb = Literal["run", "call"]
_SHELL = "/bin/sh"
#: Characters that mean something to ``sh`` outside quotes, and inside double quotes.
_SH_SPECIAL = frozenset("$`\\;|&<>()*?[#~\n\r")
_SH_DOUBLE = frozenset("$`\\")
#: The most bytes Linux takes in one argument (``MAX_ARG_STRLEN``, 32 pages, less its NUL):
#: the line ``sh -c`` runs is one argument.
_MAX_ARGUMENT = 128 * 1024 - 1
#: Shards whose filled-in words are looked at for a credential in one go.
_CHECKED_TOGETHER = 256


@dataclass(frozen=True)
class Template:
    """The template task: its JSON object and the ``taskkit`` invocation in its command line."""

    source: str
    task: Mapping[str, Any] = field(repr=False)
    program: str
    verb: Verb
    args: tuple[str, ...]

    @property
    def id(self) -> str:
        return str(self.task["id"])


def read_template(text: str, source: str) -> Template:
    """The template in ``text`` (read from ``source``): one task whose command line runs
    ``taskkit run`` or ``taskkit call`` as ``task-json`` writes it; a :class:`DataError`
    otherwise."""
    found = read_tasks(text, source)
    if len(found.tasks) != 1:
        raise DataError(f"{source}: {len(found.tasks)} tasks; a template is one task")
    task = found.tasks[0]
    obj = dict(task.raw)
    where = f"{source}: task {task.id!r}: commandLine"
    shape = f"{_SHELL} -c 'exec taskkit run|call ...', as taskkit batch task-json writes it"
    if len(task.argv) != 3 or task.argv[:2] != (_SHELL, "-c"):
        raise DataError(f"{where}: not {shape}")
    words = _sh_words(task.argv[2], where)
    if len(words) < 3 or words[0] != "exec" or words[2] not in ("run", "call"):
        raise DataError(f"{where}: not {shape}")
    if any("\0" in word for word in words):
        raise DataError(f"{where}: holds a NUL character, which no argv can")
    verb: Verb = "run" if words[2] == "run" else "call"
    return Template(source, obj, words[1], verb, tuple(words[3:]))


def _sh_words(line: str, where: str) -> list[str]:
    """The words ``sh`` makes of ``line`` when all it uses is quoting; a :class:`DataError`
    for anything else (an expansion, an operator, a glob), whose meaning a rebuilt line
    would not keep."""
    words: list[str] = []
    current: list[str] = []
    in_word, quote = False, ""
    for char in line:
        if quote == "'":
            if char == "'":
                quote = ""
            else:
                current.append(char)
        elif quote == '"':
            if char == '"':
                quote = ""
            elif char in _SH_DOUBLE:
                raise DataError(f"{where}: {char!r} inside double quotes {_SH_ADVICE}")
            else:
                current.append(char)
        elif char in " \t":
            if in_word:
                words.append("".join(current))
                current, in_word = [], False
        elif char in _SH_SPECIAL:
            raise DataError(f"{where}: {char!r} outside quotes {_SH_ADVICE}")
        else:
            in_word = True
            if char in "'\"":
                quote = char
            else:
                current.append(char)
    if quote:
        raise DataError(f"{where}: a quote {quote} is never closed")
    if in_word:
        words.append("".join(current))
    return words


_SH_ADVICE = (
    "means something to sh, which a rebuilt line could not keep: make the template with "
    "taskkit batch task-json"
)


@dataclass(frozen=True)
class _Pattern:
    """A text with placeholders: literal, name, literal, name, ..., literal."""

    parts: tuple[str, ...]

    @property
    def names(self) -> tuple[str, ...]:
        return self.parts[1::2]

    def fill(self, values: Mapping[str, str]) -> str:
        if len(self.parts) == 1:
            return self.parts[0]
        return "".join(values[p] if n % 2 else p for n, p in enumerate(self.parts))


def _pattern(text: str, where: str) -> _Pattern:
    """``text`` read for ``{name}`` placeholders and ``{{``/``}}`` escapes."""
    parts: list[str] = []
    literal: list[str] = []
    at = 0
    escape = "(write {{ or }} for a literal brace)"
    while at < len(text):
        char = text[at]
        if char in "{}" and text.startswith(char * 2, at):
            literal.append(char)
            at += 2
        elif char == "{":
            end = text.find("}", at + 1)
            opened = text.find("{", at + 1)
            if end == -1 or (opened != -1 and opened < end):
                raise DataError(f"{where}: a '{{' without its '}}' {escape}")
            name = text[at + 1 : end]
            if not name:
                raise DataError(f"{where}: an empty placeholder {{}} {escape}")
            parts += ["".join(literal), name]
            literal = []
            at = end + 1
        elif char == "}":
            raise DataError(f"{where}: a '}}' without its '{{' {escape}")
        else:
            literal.append(char)
            at += 1
    parts.append("".join(literal))
    return _Pattern(tuple(parts))


@dataclass(frozen=True)
class _Shard:
    number: int
    line: int  # in the parameter file; 0 without one
    id: str
    values: Mapping[str, str]


@dataclass(frozen=True)
class FanOut:
    """The plan of a fan-out: what :meth:`tasks` yields, and the :attr:`warnings` to show.
    Made by :func:`plan_fanout`, which checks everything that can be checked before a row is
    read."""

    template: Template
    params: Params | None
    shards: int
    group: int
    prefix: str
    id_column: str | None
    retention_time: float | None
    warnings: tuple[str, ...]
    _args: tuple[_Pattern, ...] = field(repr=False)
    _display: _Pattern | None = field(repr=False)
    _explicit_prefix: bool = field(repr=False)

    @property
    def task_count(self) -> int:
        return -(-self.shards // self.group)

    def tasks(self) -> Iterator[dict[str, Any]]:
        """The Batch task objects (REST JSON), in order; a :class:`DataError` naming the row
        of a bad id, a :class:`ConfigError` naming the row of a credential."""
        batch: list[tuple[_Shard, list[str]]] = []
        width = len(str(self.task_count - 1))
        for shard, argv in self._checked(self._shards()):
            batch.append((shard, argv))
            if len(batch) == self.group:
                yield self._task(batch, f"{self.prefix}-g{shard.number // self.group:0{width}d}")
                batch = []
        if batch:
            first = batch[0][0].number
            yield self._task(batch, f"{self.prefix}-g{first // self.group:0{width}d}")

    def _checked(self, shards: Iterator[_Shard]) -> Iterator[tuple[_Shard, list[str]]]:
        """Each shard with its arguments filled in, none carrying a credential. Checked
        :data:`_CHECKED_TOGETHER` shards at a time: one look for a credential costs a scan of
        the environment, far more than the words themselves."""
        constant = [p.parts[0] for p in self._args]
        variable = [(n, p) for n, p in enumerate(self._args) if len(p.parts) > 1]
        chunk: list[tuple[_Shard, list[str]]] = []
        for shard in shards:
            argv = constant.copy()
            for n, pattern in variable:
                argv[n] = pattern.fill(shard.values)
            chunk.append((shard, argv))
            if len(chunk) == _CHECKED_TOGETHER:
                yield from self._no_credential(chunk, [n for n, _ in variable])
                chunk = []
        yield from self._no_credential(chunk, [n for n, _ in variable])

    def _no_credential(
        self, chunk: list[tuple[_Shard, list[str]]], variable: list[int]
    ) -> list[tuple[_Shard, list[str]]]:
        """``chunk``, or a :class:`ConfigError` naming the first shard whose filled-in words
        hold a credential. Words are joined by newlines, which end every credential pattern,
        so no match can span two words."""
        together = "\n".join(argv[n] for _, argv in chunk for n in variable)
        if redact(together) == together:
            return chunk
        for shard, argv in chunk:
            words = "\n".join(argv[n] for n in variable)
            if redact(words) != words:
                where = f"line {shard.line} of {self.params.path}" if self.params else "the shard"
                raise ConfigError(
                    f"{where} ({shard.id}) would put a credential in the task JSON; give it to "
                    "the pool or node instead (managed identity, start task)"
                )
        return chunk

    def _shards(self) -> Iterator[_Shard]:
        width = len(str(self.shards - 1))
        total = str(self.shards)
        if self.params is None:
            for n in range(self.shards):
                shard_id = f"{self.prefix}-{n:0{width}d}"
                yield _Shard(n, 0, shard_id, {"shard": str(n), "shards": total, "id": shard_id})
            return
        columns = self.params.columns
        key = None if self.id_column is None else columns.index(self.id_column)
        seen: dict[str, int] = {}
        for n, (line, row) in enumerate(self.params.rows()):
            where = f"{self.params.path}: line {line}"
            if key is None:
                shard_id = f"{self.prefix}-{n:0{width}d}"
            else:
                shard_id = f"{self.prefix}-{row[key]}" if self._explicit_prefix else row[key]
                if BATCH_ID.fullmatch(shard_id) is None:
                    raise DataError(
                        f"{where}: id {shard_id!r} (column {self.id_column!r}) is not a Batch "
                        "task id: 1 to 64 letters, digits, - and _"
                    )
                folded = shard_id.lower()
                if folded in seen:
                    raise DataError(
                        f"{where}: id {shard_id!r} is the id of line {seen[folded]} too (Batch "
                        "ids are unique ignoring case)"
                    )
                seen[folded] = line
            values = dict(zip(columns, row, strict=True))
            values.update(shard=str(n), shards=total, id=shard_id)
            yield _Shard(n, line, shard_id, values)

    def _task(self, batch: Sequence[tuple[_Shard, list[str]]], group_id: str) -> dict[str, Any]:
        template = self.template
        shards = [shard for shard, _ in batch]
        argvs = [argv for _, argv in batch]
        if self.group > 1 and template.verb == "run":
            argvs = [["--task-id", shard.id, *argv] for shard, argv in batch]
        task_id = shards[0].id if self.group == 1 else group_id
        if self.group == 1:
            line = command_line(argvs[0], program=template.program, verb=template.verb)
            if len(line.encode()) > _MAX_ARGUMENT:  # the inner line is shorter: measure it
                inner = "exec " + shlex.join([template.program, template.verb, *argvs[0]])
                _check_length(inner, task_id, shards[0])
        else:
            lines = [shlex.join([template.program, template.verb, *argv]) for argv in argvs]
            lines[-1] = "exec " + lines[-1]  # the last shard is the task's process
            inner = " && ".join(lines)
            _check_length(inner, task_id, shards[0])
            line = f"{_SHELL} -c {shlex.quote(inner)}"
        task = dict(template.task)
        task["id"] = task_id
        task["commandLine"] = line
        if self._display is not None:
            task["displayName"] = self._display.fill(shards[0].values)
        constraints = dict(task.get("constraints") or {})
        wall = constraints.get("maxWallClockTime")
        if wall is not None and self.group > 1:
            total = parse_duration(wall) * len(shards)
            if total < TASK_LIFETIME:
                constraints["maxWallClockTime"] = iso_duration(total)
            else:  # Batch's lifetime ends the task first
                del constraints["maxWallClockTime"]
        if self.retention_time is not None:
            constraints["retentionTime"] = iso_duration(self.retention_time)
        if constraints or "constraints" in task:
            task["constraints"] = constraints
        return task


def _check_length(inner: str, task_id: str, first: _Shard) -> None:
    """A :class:`DataError` when ``sh -c`` could not be started with ``inner``: Linux takes
    at most 128 KiB in one argument (``MAX_ARG_STRLEN``), and the task would fail to start
    on every node."""
    size = len(inner.encode())
    if size > _MAX_ARGUMENT:
        where = f"line {first.line}" if first.line else f"shard {first.number}"
        raise DataError(
            f"task {task_id} (from {where}): the line sh runs would be {size} bytes; Linux "
            f"takes at most {_MAX_ARGUMENT} in one argument (a smaller --group, or shorter "
            "values)"
        )


def plan_fanout(
    template: Template,
    source: Params | int,
    *,
    group: int = 1,
    id_column: str | None = None,
    prefix: str | None = None,
    retention_time: float | None = None,
) -> FanOut:
    """The plan of fanning ``template`` out over ``source``: a parameter file, or a number of
    shards. Raises :class:`UsageError` for settings that do not fit together and
    :class:`DataError` for a template whose placeholders do not fit the source (see the
    module docstring); what only a row can tell is raised by :meth:`FanOut.tasks`."""
    params = source if isinstance(source, Params) else None
    shards = source.count if isinstance(source, Params) else source
    if isinstance(shards, bool) or not isinstance(shards, int) or shards < 1:
        raise UsageError(f"shards: a count of 1 or more is needed, not {shards!r}")
    if isinstance(group, bool) or not isinstance(group, int) or group < 1:
        raise UsageError(f"--group: a count of 1 or more is needed, not {group!r}")
    columns = params.columns if params else ()
    if id_column is not None and id_column not in columns:
        shown = ", ".join(columns) if columns else "none: it needs --params"
        raise UsageError(f"--id-column {id_column!r} is not a column (columns: {shown})")
    for name in columns:
        if name in BUILTINS and not (name == "id" and id_column == "id"):
            assert params is not None
            raise DataError(
                f"{params.path}: column {name!r} has the name of the placeholder {{{name}}} "
                f"({BUILTINS[name]}); rename the column"
            )
    _check_prefix(prefix, template.id, shards, group, id_column, explicit=prefix is not None)
    where = f"{template.source}: argument {{}} of taskkit {template.verb}"
    args = [_pattern(arg, where.format(n)) for n, arg in enumerate(template.args, 1)]
    display_text = template.task.get("displayName")
    display = None
    if display_text is not None:
        display = _pattern(display_text, f"{template.source}: displayName")
    known = {*BUILTINS, *columns}
    used = {name for p in [*args, *([display] if display else [])] for name in p.names}
    for name in sorted(used - known):
        shown = ", ".join("{" + k + "}" for k in [*BUILTINS, *(c for c in columns if c != "id")])
        raise DataError(
            f"{template.source}: unknown placeholder {{{name}}} (known: {shown}; write {{{{ or "
            "}} for a literal brace)"
        )
    if template.verb == "run":
        _check_no_task_id(template)
    literal = "\n".join(template.args)
    if redact(literal) != literal:
        raise ConfigError(
            f"{template.source}: the template's arguments carry a credential; give it to the "
            "pool or node instead (managed identity, start task)"
        )
    warnings: list[str] = []
    if not used and template.verb == "call" and params is not None:
        args += _call_words(template, params)
        used = set(columns)
    elif not used:
        what = "a column, {shard} or {id}" if params else "{shard} or {id}"
        raise DataError(
            f"{template.source}: the template uses no placeholder, so every task would do "
            f"the same work: use {what} in its arguments"
        )
    if display is not None and display.names and group > 1:
        raise UsageError(
            "--group: the template's displayName has placeholders, and a grouped task shows "
            "several shards"
        )
    unused = [c for c in columns if c not in used and c != id_column]
    if params is not None and unused:
        several = len(unused) > 1
        warnings.append(
            f"{params.path}: column{'s' if several else ''} {', '.join(map(repr, unused))} "
            f"{'are' if several else 'is'} used by no placeholder of the template"
        )
    for setting in template.task.get("environmentSettings") or []:
        value = str(setting.get("value", ""))
        if any("{" + name + "}" in value for name in known):
            warnings.append(
                f"environment setting {setting['name']!r} holds a placeholder, which is not "
                "replaced there (one environment serves a grouped task's shards): pass the "
                "value as an argument"
            )
    return FanOut(
        template=template,
        params=params,
        shards=shards,
        group=group,
        prefix=prefix if prefix is not None else template.id,
        id_column=id_column,
        retention_time=retention_time,
        warnings=tuple(warnings),
        _args=tuple(args),
        _display=display,
        _explicit_prefix=prefix is not None,
    )


def _check_prefix(
    prefix: str | None,
    template_id: str,
    shards: int,
    group: int,
    id_column: str | None,
    *,
    explicit: bool,
) -> None:
    """A :class:`UsageError` when the ids made from the prefix would not be Batch ids."""
    chosen = prefix if prefix is not None else template_id
    named = f"--prefix {chosen!r}" if explicit else f"the template's id {chosen!r} (the prefix)"
    if BATCH_ID.fullmatch(chosen) is None:
        raise UsageError(f"{named}: use 1-64 letters, digits, '-' and '_'")
    longest = []
    if id_column is None:
        longest.append(f"{chosen}-{shards - 1}")
    if group > 1:
        longest.append(f"{chosen}-g{-(-shards // group) - 1}")
    for made in longest:
        if len(made) > 64:
            raise UsageError(
                f"{named}: ids such as {made!r} would be {len(made)} characters; Batch takes "
                "at most 64 (give a shorter --prefix)"
            )


def _check_no_task_id(template: Template) -> None:
    """A :class:`DataError` for a ``taskkit run`` template that names its own task id: every
    shard would share one journal."""
    options = template.args[: template.args.index("--")] if "--" in template.args else ()
    for arg in options:
        if arg == "--task-id" or arg.startswith("--task-id="):
            raise DataError(
                f"{template.source}: the template gives --task-id; drop it, each shard gets "
                "its own (the task's id, or --task-id <shard id> in a group)"
            )


def _call_words(template: Template, params: Params) -> list[_Pattern]:
    """``NAME={NAME}`` for each column, to follow a ``taskkit call`` template's own words."""
    given = {arg.partition("=")[0].replace("-", "_") for arg in template.args[1:] if "=" in arg}
    words: list[_Pattern] = []
    for name in params.columns:
        parameter = name.replace("-", "_")
        if name.startswith("-") or not parameter.isidentifier():  # '--help=...': an option
            raise DataError(
                f"{params.path}: column {name!r} cannot be a NAME=VALUE word of taskkit call "
                "(NAME must be a Python name): rename it, or write the words in the template"
            )
        if parameter in given:
            raise DataError(
                f"{params.path}: column {name!r} is also a word of the template "
                f"({parameter}=...): drop one of them"
            )
        words.append(_Pattern((f"{name}=", name, "")))
    return words
