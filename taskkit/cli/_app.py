"""The ``taskkit`` command line: a thin layer of click over the library.

:func:`main` is the one place in taskkit that ends the process: it turns every
:class:`~taskkit.exceptions.TaskkitError` into one line on stderr and its documented exit code,
usage mistakes into exit 64, Ctrl-C into 130, and nothing a user does into a traceback.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, NoReturn

import click

from taskkit._version import __version__
from taskkit.cli.report import say as _say
from taskkit.exceptions import (
    EX_INTERRUPTED,
    EX_OK,
    EX_SOFTWARE,
    EX_USAGE,
    TaskkitError,
    from_os_error,
)

if TYPE_CHECKING:
    pass

__all__ = ["LazyGroup", "cli", "main"]

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


class _WarningHandler(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        _say("warning" if record.levelno < logging.ERROR else "error", record.getMessage())


class _Interrupted(Exception):
    """Ctrl-C inside a command, kept from click, which would print a blank line first."""


class _PipeClosed(Exception):
    """The reader of stdout went away, kept from click, which would exit 1 by itself."""


class _Terminated(BaseException):
    """SIGTERM or SIGHUP inside a command that stops on them as on Ctrl-C (:func:`stoppable`):
    past every ``except Exception``, so the command's cleanup runs as it unwinds."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def stoppable() -> contextlib.AbstractContextManager[None]:
    """SIGTERM (a Batch task terminated, a wall-clock limit) and SIGHUP (a closed terminal)
    end the block as Ctrl-C does: what it was writing is cleaned up, then one line and exit
    128 + N."""
    import signal

    from taskkit.signals import raising

    return raising((signal.SIGTERM, signal.SIGHUP), _Terminated)


#: Each top-level command and the module that defines it, imported only when the command is
#: named (or listed, for help): ``taskkit hash`` then starts without the transfer, runner and
#: batch wings, a third of its start-up.
COMMAND_MODULES = {
    "batch": "taskkit.cli.batch",
    "call": "taskkit.cli.call",
    "hash": "taskkit.cli.hashing",
    "local": "taskkit.cli.local",
    "report": "taskkit.cli.htmlreport",
    "run": "taskkit.cli.tasks",
    "stage": "taskkit.cli.transfer",
    "status": "taskkit.cli.tasks",
    "step": "taskkit.cli.tasks",
    "upload": "taskkit.cli.transfer",
}


class LazyGroup(click.Group):
    """A group whose commands are defined in modules of their own, each imported only when
    its command is named (or listed, for help): ``modules`` maps a command to its module."""

    def __init__(self, *args: Any, modules: Mapping[str, str] = {}, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.modules = dict(modules)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        module = self.modules.get(cmd_name)
        if module is not None and cmd_name not in self.commands:
            importlib.import_module(module)  # its decorators add the command to this group
        return super().get_command(ctx, cmd_name)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(self.modules))


class _Group(LazyGroup):
    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt as exc:
            raise _Interrupted from exc
        except BrokenPipeError as exc:
            raise _PipeClosed from exc


if TYPE_CHECKING:  # generic from click 8.2 on; 8.1's is not subscriptable
    _FloatParam = click.ParamType[float]
else:
    _FloatParam = click.ParamType


class Duration(_FloatParam):
    """A duration option (``90s``, ``5m``, ``2h30m``, ``1d``) as seconds; a value that is none
    is a usage error (64) naming the option."""

    name = "duration"

    def convert(
        self, value: object, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        from taskkit.runner.spec import parse_duration

        try:
            return parse_duration(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


#: The one :class:`Duration` the options share.
DURATION = Duration()


def jobs_option(text: str) -> Callable[[Callable[..., object]], Callable[..., object]]:
    """``-j/--jobs N``, with a help text of its command's own."""
    return click.option(
        "-j", "--jobs", type=click.IntRange(min=1, max=1024), default=None, metavar="N", help=text
    )


#: The transfer settings of stage, upload and run, as (option names, setting, help). The
#: values are checked where a RunSpec checks them, so the commands refuse the same values.
_TRANSFER_OPTIONS: tuple[tuple[tuple[str, ...], str, str], ...] = (
    (
        ("-j", "--jobs"),
        "jobs",
        "Requests in flight at once [default: 32 for downloads, 8 for uploads].",
    ),
    (
        ("--cache-dir",),
        "cache_dir",
        "The node cache, shared by the tasks of a node [default: "
        "$AZ_BATCH_NODE_SHARED_DIR/taskkit/cache when that is set, else none].",
    ),
    (("--no-node-cache",), "no_node_cache", "Download straight into place."),
    (
        ("--cache-max-bytes",),
        "cache_max_bytes",
        "Bound the node cache, evicting least recently used files (e.g. 50G).",
    ),
    (
        ("--retries",),
        "retries",
        "Attempts at a request that failed for a passing reason (throttling, timeouts) "
        "[default: 6].",
    ),
    (
        ("--retry-budget",),
        "retry_budget",
        "Most time one request may spend waiting between attempts [default: 60s].",
    ),
    (
        ("--progress-interval",),
        "progress_interval",
        "How often a progress line is written when stderr is not a terminal [default: 10s].",
    ),
    (("-v", "--verbose"), "verbose", "One line per file as it is done."),
)
_METAVARS = {
    "jobs": "N",
    "cache_dir": "DIR",
    "cache_max_bytes": "SIZE",
    "retries": "N",
    "retry_budget": "DURATION",
    "progress_interval": "DURATION",
}
_FLAGS = ("no_node_cache", "verbose")


def transfer_options(
    *, node_cache: bool, from_env: bool
) -> Callable[[Callable[..., object]], Callable[..., object]]:
    """The transfer options of stage, upload, run and batch task-json, defined once: ``-j``,
    ``--retries``, ``--retry-budget``, ``--progress-interval``, ``-v``, and with
    ``node_cache`` ``--cache-dir``, ``--no-node-cache``, ``--cache-max-bytes``. Each reads
    its TASKKIT_* variable when ``from_env`` (stage, upload); ``run`` leaves that to its
    RunSpec, where the variable ranks between the command line and the spec file. A value
    not given is None: the RunSpec's default applies."""
    from taskkit.envnames import env_variable

    def checked(ctx: click.Context, param: click.Parameter, value: object) -> object:
        if value is None or param.name is None:
            return value
        from taskkit.runner.spec import check_setting  # pydantic: 0.1 s, paid only when used

        try:
            return check_setting(param.name, value)
        except ValueError as exc:
            raise click.BadParameter(str(exc)) from None

    options = []
    for names, setting, text in _TRANSFER_OPTIONS:
        if not node_cache and setting in ("cache_dir", "no_node_cache", "cache_max_bytes"):
            continue
        variable = env_variable(setting)
        options.append(
            click.option(
                *names,
                setting,
                is_flag=setting in _FLAGS,
                default=None,
                envvar=variable if from_env else None,
                metavar=_METAVARS.get(setting),
                callback=None if setting in _FLAGS else checked,
                help=f"{text[:-1]} [env: {variable}].",
            )
        )

    def apply(command: Callable[..., object]) -> Callable[..., object]:
        for option in reversed(options):
            command = option(command)
        return command

    return apply


def journal_options(command: Callable[..., object]) -> Callable[..., object]:
    """``--state`` and ``--job-id`` of the commands that read a job's journal (``status``,
    ``report``), each required and read from its variable when not given."""
    command = click.option(
        "--job-id",
        envvar=["TASKKIT_JOB_ID", "AZ_BATCH_JOB_ID"],
        required=True,
        metavar="ID",
        help="[env: TASKKIT_JOB_ID, AZ_BATCH_JOB_ID]",
    )(command)
    return click.option(
        "--state",
        envvar="TASKKIT_STATE",
        required=True,
        metavar="URL",
        help="The state root the tasks ran with [env: TASKKIT_STATE].",
    )(command)


@click.group(cls=_Group, context_settings=CONTEXT, modules=COMMAND_MODULES)
@click.version_option(
    __version__, "-V", "--version", prog_name="taskkit", message="%(prog)s %(version)s"
)
def cli() -> None:
    """Goal-seeking, idempotent tasks for Azure Batch.

    \b
    Examples:
      taskkit hash data/                  digest every file under data/
      taskkit hash --json big.bin         one JSON object per file
    """


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """Run the command line and exit with its code. The only caller of ``sys.exit``.

    Run as the program (``argv`` None), the process ends at once when the command is done,
    skipping the interpreter's teardown of the modules it loaded: with the Azure SDK and adlfs
    loaded that teardown alone takes 0.15 s, a tenth of a small task's staging. Everything
    taskkit opened is closed by then and the standard streams are flushed first.
    """
    handler = _WarningHandler()
    logger = logging.getLogger("taskkit")
    logger.addHandler(handler)
    logger.propagate = False
    # The Azure SDK logs its own warnings (a retry, an odd response); taskkit reports what
    # matters itself, as one line, so theirs would only be noise on stderr.
    quiet = logging.getLogger("azure")
    quiet.addHandler(logging.NullHandler())
    quiet.propagate = False
    try:
        code = _run(argv)
    finally:
        logger.removeHandler(handler)
    if argv is None:
        for stream in (sys.stdout, sys.stderr):
            try:
                if stream is not None:
                    stream.flush()
            except (OSError, ValueError):  # a closed pipe or stream: nothing more can be said
                pass
        os._exit(code)
    sys.exit(code)


def _run(argv: Sequence[str] | None) -> int:
    """The command's exit code; every exception becomes one line on stderr and its code."""
    try:
        code = cli.main(
            args=list(argv) if argv is not None else None,
            prog_name="taskkit",
            standalone_mode=False,
        )
    except click.exceptions.Exit as exc:
        code = exc.exit_code
    except click.exceptions.NoArgsIsHelpError as exc:
        if exc.ctx is not None:
            click.echo(exc.ctx.get_help())
        _say("error", "no command given (see 'taskkit --help')")
        code = EX_USAGE
    except click.UsageError as exc:
        hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
        _say("error", f"{exc.format_message()}{hint}")
        code = EX_USAGE
    except click.ClickException as exc:
        _say("error", exc.format_message())
        code = EX_USAGE
    except (click.Abort, KeyboardInterrupt, _Interrupted):
        _say("error", "interrupted")
        code = EX_INTERRUPTED
    except _Terminated as exc:
        import signal

        _say("error", f"terminated ({signal.Signals(exc.signum).name})")
        code = 128 + exc.signum
    except TaskkitError as exc:
        _say("error", str(exc))
        code = exc.exit_code
    except (BrokenPipeError, _PipeClosed):
        # The reader went away (``taskkit hash | head``): not an error of ours. Point stdout at
        # devnull so the interpreter's final flush does not complain again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        code = 141
    except OSError as exc:
        failure = from_os_error(exc, "cannot proceed")
        _say("error", str(failure))
        code = failure.exit_code
    except Exception as exc:
        internal_error(exc)
        code = EX_SOFTWARE
    return code if isinstance(code, int) else EX_OK


def internal_error(exc: Exception) -> None:
    """One line for a bug of taskkit's, after its traceback when ``TASKKIT_DEBUG`` is set (the
    exit code and the line are the same either way)."""
    if os.environ.get("TASKKIT_DEBUG"):
        import traceback

        traceback.print_exception(exc, file=sys.stderr)
    _say(
        "error",
        f"internal error: {type(exc).__name__}: {exc} "
        "(set TASKKIT_DEBUG=1 for a traceback, and please report it)",
    )
