"""``taskkit stage`` and ``taskkit upload``, and the options the two share."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable
from typing import TYPE_CHECKING

import click

from taskkit.cli._app import CONTEXT, cli, jobs_option
from taskkit.exceptions import EX_OK
from taskkit.retry import RetryBudget

if TYPE_CHECKING:
    from taskkit.summary import Summary

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
        jobs_option("Requests in flight at once [default: 8]."),
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
