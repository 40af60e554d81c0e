"""``taskkit call MODULE:FUNCTION [NAME=VALUE ...]``: a task function run as a Batch command line.

The command imports MODULE (the current directory first on ``sys.path``, as ``uvicorn`` and
``gunicorn`` make it, then each ``--path DIR``), finds FUNCTION in it (a dotted path:
``Class.method`` too), reads the values by the function's annotations
(:mod:`taskkit.cli.values`) and calls the task once, as :meth:`Task.invoke` does in a program:
a call whose goal is met returns at once.

Exit codes, the policy of ``taskkit run``: 0 success (or goal met); 1 the function failed
permanently, now or in a call recorded before; 75 it failed with a retryable error (its
in-process retries spent); taskkit's own failures the run band, 200-206 (a bad module,
function or value is 200). Every refusal is one line on stderr, never a traceback.

On a local node (``--local [DIR]``, ``TASKKIT_LOCAL``) the node's task is made before the
module is imported, and the process then runs as a Batch task does: in the task's working
directory, with its ``AZ_BATCH_*`` variables, its output also kept in the task's
``stdout.txt`` and ``stderr.txt``.

Invariants: with ``--json`` stdout holds the result as JSON and nothing else: whatever the
user's module or function writes to stdout (a ``print``, a child process) goes to stderr
instead. ``--dry-run`` prints the plan and changes nothing, not even the local node's folders.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import re
import sys
import threading
import traceback
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import click

from taskkit.cli._app import CONTEXT, cli
from taskkit.cli.report import echo, say
from taskkit.cli.tasks import RunCommand, _banded, local_option
from taskkit.cli.values import parse_values, split_word
from taskkit.content.digest import hash_bytes
from taskkit.envnames import DEFAULT_LOCAL_DIR, LOCAL_VARIABLE
from taskkit.exceptions import EX_OK, ConfigError, TaskkitError, UsageError

if TYPE_CHECKING:
    from taskkit.function.task import Task
    from taskkit.runner.local import LocalNode

__all__ = ["call_command", "local_task_id", "parse_target"]

_STATE_VARIABLE = "TASKKIT_STATE"
#: The job of every call on a local node (``taskkit run --local``'s default job too).
_LOCAL_JOB = "local"
_BATCH_ID = re.compile(r"[^A-Za-z0-9_-]")
#: Seconds between progress lines of a transfer a call makes: ``taskkit run``'s default.
_PROGRESS_INTERVAL = 10.0


@cli.command("call", cls=RunCommand, context_settings=CONTEXT)
@click.argument("target", metavar="MODULE:FUNCTION", required=False)
@click.argument("words", nargs=-1, metavar="[NAME=VALUE]...")
@click.option(
    "--state",
    metavar="URL",
    help="Where the calls' journal lives (any fsspec URL) [env: TASKKIT_STATE].",
)
@click.option(
    "--path",
    "paths",
    multiple=True,
    metavar="DIR",
    help="Import from DIR too, after the current directory. Repeatable.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON, and only that.")
@click.option("--dry-run", is_flag=True, help="Print the plan of the call; change nothing.")
@click.option("--rerun", is_flag=True, help="Forget this call's record and run it again.")
@local_option
@click.option("-v", "--verbose", is_flag=True, help="One line per file moved; tracebacks.")
def call_command(
    target: str | None,
    words: tuple[str, ...],
    state: str | None,
    paths: tuple[str, ...],
    as_json: bool,
    dry_run: bool,
    rerun: bool,
    local: str | None,
    verbose: bool,
) -> int:
    """Call the task function FUNCTION of MODULE with these values, once.

    \b
    Each NAME=VALUE is read by the parameter's annotation: int, float, bool (true/false,
    yes/no, 1/0), str, Path, Enum (name or value), Literal, date/datetime, Decimal, UUID,
    pydantic models (JSON), X | None (the word none is None); a list parameter takes one
    NAME=VALUE per item. A goal met returns at once, without running the function.

    \b
    Exit codes: 0 success or goal met; 1 the function failed permanently (now or before);
    75 it failed with a retryable error; taskkit's own failures 200-206 as 'taskkit run'
    (200: unknown module or function, import error, missing or bad value).

    \b
    Examples:
      taskkit call pipeline.clean:clean_rows threshold=0.5 source=data/rows.csv
      taskkit call --state az://state/calls pipeline:shard n=3 tags=a tags=b --json
      taskkit call pipeline:shard n=3 --dry-run
      taskkit call pipeline:shard n=3 --local
    """
    if local is not None and local != DEFAULT_LOCAL_DIR and _swallowed(local):
        # `--local mod:f x=1`: click gave --local the word that follows it; it was no DIR.
        before = () if target is None else (target,)
        target, words, local = local, (*before, *words), DEFAULT_LOCAL_DIR
    return _banded(
        lambda: _call(
            target,
            words,
            state=state,
            paths=paths,
            as_json=as_json,
            dry_run=dry_run,
            rerun=rerun,
            local=local,
            verbose=verbose,
        )
    )


def _swallowed(word: str) -> bool:
    """Whether the value click gave ``--local`` is a word of the call (MODULE:FUNCTION or
    NAME=VALUE) rather than a folder: it reads as one and names no existing folder."""
    if Path(word).is_dir():
        return False
    if parse_target(word) is not None:
        return True
    try:
        split_word(word)
    except UsageError:
        return False
    return True


def _call(
    target: str | None,
    words: Sequence[str],
    *,
    state: str | None,
    paths: Sequence[str],
    as_json: bool,
    dry_run: bool,
    rerun: bool,
    local: str | None,
    verbose: bool,
) -> int:
    if target is None:
        raise UsageError("no function to call (taskkit call MODULE:FUNCTION [NAME=VALUE]...)")
    if as_json and dry_run:
        raise UsageError("--json and --dry-run: give one (the plan is lines of text)")
    if parse_target(target) is None:
        raise UsageError(
            f"expected MODULE:FUNCTION (e.g. pipeline.clean:clean_rows), not {target!r}"
        )
    environ = dict(os.environ)
    if state:  # the command line ranks above the environment
        environ[_STATE_VARIABLE] = state
    _importable(paths)  # first: a local node moves the process into its task's folder
    with contextlib.ExitStack() as node:
        environ = _on_local_node(target, environ, local, dry_run=dry_run, stack=node)
        try:
            with _quiet_stdout() if as_json else contextlib.nullcontext():
                task = _import_target(target, paths)
                args, kwargs = parse_values(
                    task.fn, words, signature=task.signature, supplied=task.options.inputs
                )
                if dry_run:
                    return _show_plan(task, args, kwargs, environ, state, rerun)
                found, result = _invoke(
                    task, args, kwargs, environ, rerun=rerun, verbose=verbose, state=state
                )
            if found == EX_OK and as_json:
                echo(_as_json(result))
        except TaskkitError as exc:  # said here, so that a local node's stderr.txt keeps it
            say("error", str(exc))
            return exc.run_code
    return found


def _show_plan(
    task: Task[..., Any],
    args: tuple[object, ...],
    kwargs: dict[str, object],
    environ: dict[str, str],
    state: str | None,
    rerun: bool,
) -> int:
    from taskkit.storage.stores import Stores

    with Stores() as stores:
        plan = task.plan_call(
            args, kwargs, stores=stores, environ=environ, state=state, rerun=rerun
        )
    for line in plan.lines():
        echo(line)
    return EX_OK


def _on_local_node(
    target: str,
    environ: dict[str, str],
    local: str | None,
    *,
    dry_run: bool,
    stack: contextlib.ExitStack,
) -> dict[str, str]:
    """``environ`` as the local node's task sees it (``environ`` itself without local mode).
    A dry run only plans the task's place (and checks it can be made). A call makes it and,
    as Batch starts a task, moves the process into the task's working directory and keeps
    what it writes in the task's ``stdout.txt`` and ``stderr.txt`` too (until ``stack``
    closes)."""
    node = _local_node(local, environ)
    if node is None:
        return environ
    if dry_run:
        where = node.plan(_LOCAL_JOB, local_task_id(target))
        where.check()
        return where.environ(environ)
    where = node.task(_LOCAL_JOB, local_task_id(target))
    environ = where.environ(environ)
    os.environ.clear()  # the function reads os.environ as it would on a node: no stale
    os.environ.update(environ)  # AZ_BATCH_* of the caller's
    os.chdir(where.workdir)
    stack.enter_context(_copied(sys.stdout, where.stdout))
    stack.enter_context(_copied(sys.stderr, where.stderr))
    return environ


def _local_node(local: str | None, environ: Mapping[str, str]) -> LocalNode | None:
    """The local node ``--local`` or ``TASKKIT_LOCAL`` names, if any."""
    if local is None and not environ.get(LOCAL_VARIABLE):
        return None
    from taskkit.runner.local import LocalNode

    return LocalNode.find(local, environ)


def _invoke(
    task: Task[..., Any],
    args: tuple[object, ...],
    kwargs: dict[str, object],
    environ: Mapping[str, str],
    *,
    rerun: bool,
    verbose: bool,
    state: str | None,
) -> tuple[int, object]:
    """``(0, result)``, or the exit code of the function's failure (said in one line) and
    None; taskkit's own failures are raised."""
    from taskkit.cli.report import RunReport
    from taskkit.function.failures import (
        EX_CALL_PERMANENT,
        EX_CALL_RETRYABLE,
        PermanentFailure,
    )
    from taskkit.runner.policy import Verdict
    from taskkit.storage.stores import Stores

    told = RunReport(verbose=verbose, interval=_PROGRESS_INTERVAL)
    try:
        with Stores() as stores:
            result = task.invoke(
                args,
                kwargs,
                stores=stores,
                observer=told,
                environ=environ,
                rerun=rerun,
                state=state,
            )
    except PermanentFailure as exc:
        if verbose and exc.traceback_text:
            click.echo(exc.traceback_text.rstrip("\n"), err=True)
        say("error", str(exc))  # names the task, the original error, and how to run it again
        return EX_CALL_PERMANENT, None
    except (TaskkitError, KeyboardInterrupt):
        raise
    except SystemExit as exc:
        # The core records it as an interruption (retryable): so is the exit code, never
        # the function's own number, which could mean anything to Batch.
        say(
            "error",
            f"{task.name} called sys.exit({exc.code!r}) and was stopped: a task function "
            "returns or raises; retryable",
        )
        return EX_CALL_RETRYABLE, None
    except Exception as exc:
        if verbose:
            click.echo("".join(traceback.format_exception(exc)).rstrip("\n"), err=True)
        permanent = task.verdict(exc) is Verdict.PERMANENT
        how = "permanently" if permanent else "with a retryable error"
        say("error", f"{task.name} failed {how}: {_one_line(exc)}")
        return (EX_CALL_PERMANENT if permanent else EX_CALL_RETRYABLE), None
    return EX_OK, result


def _as_json(result: object) -> str:
    try:
        return json.dumps(result, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ConfigError(
            f"--json: the result, a {type(result).__name__}, is not JSON ({exc}); "
            "the call itself is done and recorded"
        ) from None


@contextlib.contextmanager
def _copied(stream: TextIO, path: Path) -> Iterator[None]:
    """What reaches ``stream``'s file descriptor (the process's writes and its children's)
    also appended to ``path``, as Batch keeps a task's output. A stream without a file
    descriptor (in-process tests) is left alone; a copy that cannot be written is dropped,
    never an error of the call's."""
    stream.flush()
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):
        yield
        return
    try:
        copy = open(path, "ab", buffering=0)  # noqa: SIM115 - closed below, after the pump
    except OSError:
        yield
        return
    console = os.dup(fd)
    read, write = os.pipe()

    def pump() -> None:
        while chunk := os.read(read, 1 << 16):
            for sink in (console, copy.fileno()):
                with contextlib.suppress(OSError):
                    view = memoryview(chunk)
                    while view:
                        view = view[os.write(sink, view) :]
        os.close(read)

    pumping = threading.Thread(target=pump, name=f"taskkit-copy-{fd}", daemon=True)
    pumping.start()
    os.dup2(write, fd)
    os.close(write)
    try:
        yield
    finally:
        stream.flush()
        os.dup2(console, fd)  # the pipe's last write end here closes: the pump drains it
        # A child the function left running may hold the pipe open: it is not waited for.
        pumping.join(timeout=5.0)
        if not pumping.is_alive():
            os.close(console)
            copy.close()


@contextlib.contextmanager
def _quiet_stdout() -> Iterator[None]:
    """Whatever the user's code writes to stdout goes to stderr instead, its child processes'
    output too (the file descriptor is moved), so stdout is left to the result."""
    sys.stdout.flush()
    try:
        fileno = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # not a real file (in-process tests)
        fileno = None
    saved = os.dup(fileno) if fileno is not None else None
    if fileno is not None:
        sys.stderr.flush()
        os.dup2(sys.stderr.fileno(), fileno)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        sys.stdout.flush()
        if saved is not None and fileno is not None:
            os.dup2(saved, fileno)
            os.close(saved)


# -- finding the function ----------------------------------------------------------------------


def parse_target(target: str) -> tuple[str, str] | None:
    """``("pkg.mod", "Class.method")`` of ``"pkg.mod:Class.method"``; None if not that shape."""
    module, sep, attribute = target.partition(":")
    names = [*module.split("."), *attribute.split(".")]
    if not sep or not all(name.isidentifier() for name in names):
        return None
    return module, attribute


def _import_target(target: str, paths: Sequence[str]) -> Task[..., Any]:
    """The task that ``target`` (``MODULE:FUNCTION``, checked) names, importing MODULE (the
    caller has put ``paths`` on ``sys.path``). Raises :class:`UsageError` for an unknown
    module or function and a function that is not a task, and :class:`ConfigError` for an
    error raised while importing the module (its first line and where it was raised)."""
    parsed = parse_target(target)
    assert parsed is not None  # checked by the caller
    module_name, attribute = parsed
    found: object = _import(module_name, paths)
    walked = module_name
    for part in attribute.split("."):
        try:
            found = getattr(found, part)
        except AttributeError:
            raise UsageError(f"{walked} has no {part!r} (looking for {target})") from None
        walked = f"{walked}{'.' if walked != module_name else ':'}{part}"
    from taskkit.function.task import is_task  # here: a bad target needs no function wing

    if not is_task(found):
        what = "a function" if callable(found) else f"a {type(found).__name__}"
        raise UsageError(f"{target} is {what}, not a taskkit task: decorate it with @taskkit.task")
    return found  # type: ignore[return-value]


def _importable(paths: Sequence[str]) -> None:
    """The current directory, then ``paths``, first on ``sys.path``."""
    for entry in reversed([os.getcwd(), *(os.path.abspath(path) for path in paths)]):
        if entry in sys.path:
            sys.path.remove(entry)
        sys.path.insert(0, entry)


def _import(name: str, paths: Sequence[str]) -> object:
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if missing and (name == missing or name.startswith(missing + ".")):
            where = ", ".join(["the current directory", *paths])
            raise UsageError(
                f"no module named {missing!r} (looked in {where} and the installed packages)"
            ) from None
        raise _import_failed(name, exc) from None
    except (Exception, SystemExit) as exc:
        raise _import_failed(name, exc) from None


def _import_failed(name: str, exc: BaseException) -> ConfigError:
    """One line for an error raised while importing ``name``: its type, first line, and the
    file and line it came from."""
    if isinstance(exc, SyntaxError) and exc.filename:
        place = f"{_shown_file(exc.filename)}:{exc.lineno}"
        message = f"SyntaxError: {exc.msg}"
    else:
        frames = [
            frame
            for frame in traceback.extract_tb(exc.__traceback__)
            if not frame.filename.startswith("<frozen")
        ]
        place = f"{_shown_file(frames[-1].filename)}:{frames[-1].lineno}" if frames else "?"
        message = _one_line(exc)
    return ConfigError(f"cannot import {name}: {message} ({place})")


def _shown_file(filename: str) -> str:
    """``filename`` relative to the current directory when it is inside it."""
    try:
        return str(Path(filename).resolve().relative_to(Path.cwd()))
    except (ValueError, OSError):
        return filename


def _one_line(exc: BaseException) -> str:
    """``ValueError: the first line of its message``."""
    from taskkit.function.failures import said

    lines = said(exc).strip().splitlines()
    first = lines[0][:300] + ("..." if len(lines[0]) > 300 else "") if lines else ""
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def local_task_id(name: str) -> str:
    """The local node's task id of the task named ``name`` (``pkg.mod:fn``): a Batch id of
    its letters (``pkg-mod-fn``), cut to fit 64 characters with a digest of the whole name."""
    word = _BATCH_ID.sub("-", name)
    if len(word) <= 64 and word == name.replace(".", "-").replace(":", "-"):
        return word  # only the separators changed: as readable as the name, and as unique
    return f"{word[:51]}-{hash_bytes(name.encode()).hex[:12]}"
