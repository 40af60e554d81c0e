"""The ``taskkit`` command line: a thin layer of click over the library.

:func:`main` is the one place in taskkit that ends the process: it turns every
:class:`~taskkit.exceptions.TaskkitError` into one line on stderr and its documented exit code,
usage mistakes into exit 64, Ctrl-C into 130, and nothing a user does into a traceback.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from typing import IO, TYPE_CHECKING, NoReturn

import click

from taskkit import __version__
from taskkit.exceptions import (
    EX_INTERRUPTED,
    EX_OK,
    EX_SOFTWARE,
    EX_USAGE,
    IOFailure,
    TaskkitError,
    from_os_error,
)
from taskkit.report import say as _say
from taskkit.retry import RetryBudget

if TYPE_CHECKING:
    from taskkit.hashing import HashResult
    from taskkit.statcache import StatCache
    from taskkit.summary import Summary

__all__ = ["cli", "main"]

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


class _WarningHandler(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        _say("warning" if record.levelno < logging.ERROR else "error", record.getMessage())


class _Interrupted(Exception):
    """Ctrl-C inside a command, kept from click, which would print a blank line first."""


class _PipeClosed(Exception):
    """The reader of stdout went away, kept from click, which would exit 1 by itself."""


class _Group(click.Group):
    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt as exc:
            raise _Interrupted from exc
        except BrokenPipeError as exc:
            raise _PipeClosed from exc


def _jobs_option(text: str) -> Callable[[Callable[..., object]], Callable[..., object]]:
    """``-j/--jobs N``, with a help text of its command's own."""
    return click.option(
        "-j", "--jobs", type=click.IntRange(min=1), default=None, metavar="N", help=text
    )


@click.group(cls=_Group, context_settings=CONTEXT)
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


def _escape(path: str) -> tuple[bytes, bool]:
    """The path as bytes for a checksum line, escaped the way coreutils and xxhsum do it."""
    raw = os.fsencode(path)
    if b"\\" in raw or b"\n" in raw or b"\r" in raw:
        return raw.replace(b"\\", b"\\\\").replace(b"\n", b"\\n").replace(b"\r", b"\\r"), True
    return raw, False


@cli.command("hash", context_settings=CONTEXT)
@click.argument("paths", nargs=-1, required=True, metavar="PATH...")
@_jobs_option("Threads for hashing large files [default: the CPUs this process may use].")
@click.option(
    "--no-cache", is_flag=True, help="Read every file; neither consult nor update the stat-cache."
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="One JSON object per file: path, digest, size, cached (or error / skipped).",
)
@click.option(
    "--summary",
    is_flag=True,
    help="End with one line on stderr: files, bytes, seconds, cache hits.",
)
def hash_command(
    paths: tuple[str, ...], jobs: int | None, no_cache: bool, as_json: bool, summary: bool
) -> int:
    """Print the taskkit digest of each file; directories are walked in sorted order.

    Each line is ``DIGEST  PATH`` as xxhsum and sha256sum write it (a line starting with a
    backslash has its path's backslashes and newlines escaped). A digest is
    ``xxh3-128:<hex>``: for files up to 8 MiB the same value as ``xxhsum -H2``, for larger
    files the hash of their 8 MiB chunk hashes, computed on every core.

    Files unchanged since they were last hashed come from the stat-cache without being read
    (its folder: $TASKKIT_CACHE_DIR, else $AZ_BATCH_NODE_SHARED_DIR/taskkit, else the user
    cache). FIFOs, sockets and devices are skipped with a warning. A path that cannot be
    read gets one line on stderr, the other paths are still hashed, and the exit code is
    that of the first failure (66: not found, 77: permission denied, 74: I/O error).
    ``-`` hashes standard input.

    \b
    Examples:
      taskkit hash data/ model.bin
      taskkit hash --no-cache -j 4 /mnt/batch/tasks/shared/inputs
      taskkit hash --json data/ | jq -r 'select(.cached == false) | .path'
      tar c data | taskkit hash -
    """
    from taskkit.hashing import FileDigest
    from taskkit.statcache import StatCache
    from taskkit.walk import Failed, Skipped

    out = _stream(sys.stdout, "output")
    started = time.perf_counter()
    exit_code = EX_OK
    counts = {"files": 0, "bytes": 0, "cached": 0, "failed": 0, "skipped": 0}
    cache = None if no_cache else StatCache.open()
    try:
        for result in _results(paths, jobs, cache):
            if isinstance(result, FileDigest):
                counts["files"] += 1
                counts["bytes"] += result.size
                counts["cached"] += result.cached
                if as_json:
                    _json_line(
                        out,
                        {
                            "path": result.path,
                            "digest": str(result.digest),
                            "size": result.size,
                            "cached": result.cached,
                        },
                    )
                else:
                    shown, escaped = _escape(result.path)
                    out.write(
                        b"%s%s  %s\n"
                        % (b"\\" if escaped else b"", str(result.digest).encode(), shown)
                    )
            elif isinstance(result, Skipped):
                counts["skipped"] += 1
                _say("warning", f"skipped {result.path!r}: {result.reason}")
                if as_json:
                    _json_line(out, {"path": result.path, "skipped": result.reason})
            elif isinstance(result, Failed):
                counts["failed"] += 1
                _say("error", str(result.error))
                if as_json:
                    _json_line(
                        out,
                        {
                            "path": result.path,
                            "error": str(result.error),
                            "exit_code": result.error.exit_code,
                        },
                    )
                if exit_code == EX_OK:
                    exit_code = result.error.exit_code
    finally:
        if cache is not None:
            cache.close()
    out.flush()
    if summary:
        seconds = time.perf_counter() - started
        click.echo(
            f"taskkit: hashed {counts['files']} files, {_size(counts['bytes'])} in "
            f"{seconds:.2f} s ({counts['cached']} from the stat-cache, "
            f"{counts['skipped']} skipped, {counts['failed']} failed)",
            err=True,
        )
    return exit_code


_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def _byte_size(ctx: click.Context, param: click.Parameter, value: str | None) -> int | None:
    """A size such as ``500M``, ``20G`` or ``1T`` (binary units), or plain bytes."""
    if value is None:
        return None
    text = value.strip().upper().removesuffix("B").removesuffix("I")
    number = text.rstrip("KMGT")
    try:
        size = float(number) * _UNITS[text[len(number) :]]
    except (KeyError, ValueError):
        raise click.BadParameter(f"{value!r} is not a size (e.g. 500M, 20G)") from None
    if size < 0:
        raise click.BadParameter(f"{value!r} is negative")
    return int(size)


def _default_node_cache() -> str | None:
    shared = os.environ.get("AZ_BATCH_NODE_SHARED_DIR")
    return os.path.join(shared, "taskkit", "cache") if shared else None


def _transfer_options(
    *, workdir: str, empty: str
) -> Callable[[Callable[..., object]], Callable[..., object]]:
    """The options ``stage`` and ``upload`` share, with the help texts that differ."""
    options: list[Callable[[Callable[..., object]], Callable[..., object]]] = [
        click.option(
            "--workdir",
            type=click.Path(file_okay=False),
            default=None,
            help=f"{workdir} [default: $AZ_BATCH_TASK_WORKING_DIR, else the current one].",
        ),
        _jobs_option("Requests in flight at once [default: 8]."),
        click.option("--dry-run", is_flag=True, help="Print the plan; change nothing."),
        click.option(
            "--json",
            "as_json",
            is_flag=True,
            help="End with one JSON object: files, bytes, seconds.",
        ),
        click.option("--allow-empty", is_flag=True, help=empty),
        click.option(
            "--retries",
            envvar="TASKKIT_RETRIES",
            type=click.IntRange(min=1),
            default=RetryBudget.attempts,
            show_default=True,
            help="Attempts at a request that failed for a passing reason (throttling, timeouts).",
        ),
        click.option(
            "--retry-budget",
            envvar="TASKKIT_RETRY_BUDGET",
            type=click.FloatRange(min=0),
            default=RetryBudget.budget,
            show_default=True,
            metavar="SECONDS",
            help="Most time one request may spend waiting between attempts.",
        ),
        click.option(
            "--progress-interval",
            type=click.FloatRange(min=0.1),
            default=10.0,
            show_default=True,
            metavar="SECONDS",
            help="How often a progress line is written when stderr is not a terminal.",
        ),
        click.option("-v", "--verbose", is_flag=True, help="One line per file as it is done."),
    ]

    def apply(command: Callable[..., object]) -> Callable[..., object]:
        for option in reversed(options):
            command = option(command)
        return command

    return apply


@cli.command("stage", context_settings=CONTEXT)
@click.option(
    "-i",
    "--input",
    "inputs",
    multiple=True,
    required=True,
    metavar="SRC=DEST",
    help="A blob URL (or a prefix ending in /) and where it goes, relative to the working "
    "directory. Repeatable.",
)
@click.option(
    "--cache-dir",
    envvar="TASKKIT_NODE_CACHE",
    type=click.Path(file_okay=False),
    default=None,
    help="The node cache, shared by the tasks of a node [default: "
    "$AZ_BATCH_NODE_SHARED_DIR/taskkit/cache when that is set, else none].",
)
@click.option("--no-node-cache", is_flag=True, help="Download straight into place.")
@click.option(
    "--cache-max-bytes",
    callback=_byte_size,
    default=None,
    metavar="SIZE",
    help="Bound the node cache, evicting least recently used files (e.g. 50G).",
)
@_transfer_options(
    workdir="Where DEST paths start",
    empty="A prefix that lists nothing is not an error.",
)
def stage_command(
    inputs: tuple[str, ...],
    workdir: str | None,
    cache_dir: str | None,
    no_node_cache: bool,
    cache_max_bytes: int | None,
    jobs: int | None,
    dry_run: bool,
    as_json: bool,
    allow_empty: bool,
    retries: int,
    retry_budget: float,
    progress_interval: float,
    verbose: bool,
) -> int:
    """Download inputs, skipping every file already present with the same content.

    SRC is any fsspec URL (az://CONTAINER/PATH, abfs://, file://, a local path); one ending
    in / is a prefix, whose files keep their layout under DEST. DEST defaults to the last
    part of SRC. Files unchanged since they were staged are not read again; files of the
    node cache are hard-linked (read-only); large files download in parallel ranges and
    resume after an interruption. Nothing is ever left half-written at a final path.

    Azure credentials as adlfs reads them: AZURE_STORAGE_CONNECTION_STRING, or
    AZURE_STORAGE_ACCOUNT_NAME with AZURE_STORAGE_ACCOUNT_KEY / AZURE_STORAGE_SAS_TOKEN, else
    the managed identity. Exit codes: 66 missing input, 65 bad remote name or digest, 78
    credentials or settings, 75 storage unreachable (retry later), 74 local I/O.

    \b
    Examples:
      taskkit stage -i az://data/refs/genome.fa=refs/genome.fa
      taskkit stage -i az://data/samples/=samples/ --dry-run
      taskkit stage -i az://data/shards/ -j 16 --json
    """
    from taskkit.nodecache import NodeCache
    from taskkit.report import Report, stage_line
    from taskkit.stager import stage

    node_root = None if no_node_cache else (cache_dir or _default_node_cache())
    with contextlib.ExitStack() as stack:
        report = Report(
            stack, doing="staging", dry_run=dry_run, verbose=verbose, interval=progress_interval
        )
        summary = stage(
            inputs,
            workdir=workdir,
            jobs=jobs,
            node_cache=NodeCache(node_root, cache_max_bytes) if node_root else None,
            retry=RetryBudget(attempts=retries, budget=retry_budget),
            allow_empty=allow_empty,
            dry_run=dry_run,
            on_plan=report.staging_planned,
            on_bytes=report.moved,
            on_file=report.staged,
        )
    return _finish(summary, stage_line(summary), as_json=as_json)


@cli.command("upload", context_settings=CONTEXT)
@click.option(
    "-o",
    "--output",
    "outputs",
    multiple=True,
    required=True,
    metavar="GLOB=DEST",
    help="Files relative to the working directory (*, ?, [abc], **) and the URL prefix they "
    "go under. Repeatable.",
)
@_transfer_options(
    workdir="Where GLOB patterns start",
    empty="A GLOB that matches nothing is not an error.",
)
def upload_command(
    outputs: tuple[str, ...],
    workdir: str | None,
    jobs: int | None,
    dry_run: bool,
    as_json: bool,
    allow_empty: bool,
    retries: int,
    retry_budget: float,
    progress_interval: float,
    verbose: bool,
) -> int:
    """Upload outputs, skipping every file whose content is already at its name, and publish
    each DEST with a manifest written last.

    A blob's name is the file's path relative to the GLOB's fixed leading directory, under
    DEST: out/** to az://c/run/ sends out/a/b.txt to run/a/b.txt. * and ? match within a
    path segment (dotfiles too), ** any number of directories; a directory means every file
    below it. Links are followed only inside the working directory. Each blob carries its
    taskkit digest in its metadata; files larger than 8 MiB go in parallel blocks, and a file
    that changes while it is read is read again or reported. After every file has arrived,
    DEST/_taskkit_manifest.json names them all: a DEST without it is not published.

    Exit codes: 66 a GLOB matches nothing or a file vanished, 65 a name blob storage or
    staging cannot take, 78 credentials, a missing container or no write permission, 75
    storage unreachable or a file that keeps changing (retry later), 74 local I/O.

    \b
    Examples:
      taskkit upload -o 'out/**=az://results/run-42/'
      taskkit upload -o 'logs/*.txt=az://results/run-42/logs/' -o model.bin=az://models/v3/
      taskkit upload -o 'out/**=az://results/run-42/' --dry-run
    """
    from taskkit.report import Report, upload_line
    from taskkit.upload import upload

    with contextlib.ExitStack() as stack:
        report = Report(
            stack, doing="uploading", dry_run=dry_run, verbose=verbose, interval=progress_interval
        )
        summary = upload(
            outputs,
            workdir=workdir,
            jobs=jobs,
            retry=RetryBudget(attempts=retries, budget=retry_budget),
            allow_empty=allow_empty,
            dry_run=dry_run,
            on_plan=report.upload_planned,
            on_bytes=report.moved,
            on_file=report.uploaded,
            on_problem=report.problem,
        )
    return _finish(summary, upload_line(summary), as_json=as_json)


def _finish(summary: Summary, line: str, *, as_json: bool) -> int:
    """End a transfer command: its summary (one JSON object, or a line) and its exit code."""
    click.echo(json.dumps(summary.as_json()) if as_json else line)
    error = summary.exit_error()
    return EX_OK if error is None else error.exit_code


def _results(
    paths: tuple[str, ...],
    jobs: int | None,
    cache: StatCache | None,
) -> Iterator[HashResult]:
    """:func:`~taskkit.hashing.hash_paths` over ``paths``, with ``-`` standing for stdin."""
    from taskkit.digest import StreamHasher
    from taskkit.hashing import FileDigest, hash_paths

    start = 0
    for i, path in enumerate(paths):
        if path != "-":
            continue
        yield from hash_paths(paths[start:i], jobs=jobs, cache=cache)
        hasher = StreamHasher()
        stream = _stream(sys.stdin, "input")
        while block := stream.read(1 << 20):
            hasher.update(block)
        yield FileDigest("-", hasher.digest(), hasher.size, False, hasher.all_chunks())
        start = i + 1
    yield from hash_paths(paths[start:], jobs=jobs, cache=cache)


def _stream(stream: IO[str] | None, name: str) -> IO[bytes]:
    """The binary side of a standard stream; a closed one is an I/O failure, not a bug."""
    if stream is None or stream.closed:
        raise IOFailure(f"standard {name} is closed")
    return stream.buffer  # type: ignore[attr-defined,no-any-return]


def _size(n: float) -> str:
    from taskkit.progress import format_size

    return format_size(n)


def _json_line(out: IO[bytes], obj: dict[str, object]) -> None:
    out.write(json.dumps(obj).encode() + b"\n")


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
        if os.environ.get("TASKKIT_DEBUG"):
            raise
        _say(
            "error",
            f"internal error: {type(exc).__name__}: {exc} "
            "(set TASKKIT_DEBUG=1 for a traceback, and please report it)",
        )
        code = EX_SOFTWARE
    return code if isinstance(code, int) else EX_OK
