"""``taskkit stage`` and ``taskkit upload``, and the options the two share."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable
from typing import TYPE_CHECKING

import click

from taskkit.cli._app import CONTEXT, cli, stoppable, transfer_options
from taskkit.exceptions import EX_OK

if TYPE_CHECKING:
    from taskkit.runner.settings import TransferSettings
    from taskkit.transfer.summary import Summary


def _transfer_options(
    *, workdir: str, empty: str, node_cache: bool
) -> Callable[[Callable[..., object]], Callable[..., object]]:
    """The options ``stage`` and ``upload`` share, with the help texts that differ, and the
    transfer options they share with ``run``."""
    options: list[Callable[[Callable[..., object]], Callable[..., object]]] = [
        click.option(
            "--workdir",
            type=click.Path(),  # a file in the way is local I/O (74), said by the plan
            default=None,
            help=f"{workdir} [default: $AZ_BATCH_TASK_WORKING_DIR, else the current one].",
        ),
        click.option("--dry-run", is_flag=True, help="Print the plan; change nothing."),
        click.option(
            "--json",
            "as_json",
            is_flag=True,
            help="End with one JSON object: files, bytes, seconds.",
        ),
        click.option("--allow-empty", is_flag=True, help=empty),
    ]

    def apply(command: Callable[..., object]) -> Callable[..., object]:
        command = transfer_options(node_cache=node_cache, from_env=True)(command)
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
@_transfer_options(
    workdir="Where DEST paths start",
    empty="A prefix that lists nothing is not an error.",
    node_cache=True,
)
def stage_command(
    inputs: tuple[str, ...],
    workdir: str | None,
    dry_run: bool,
    as_json: bool,
    allow_empty: bool,
    **given: object,
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
    from taskkit.cli.report import Report, stage_line
    from taskkit.runner.transfers import stage_settings
    from taskkit.transfer.stage import stage

    settings = _settings(given)
    with contextlib.ExitStack() as stack:
        stack.enter_context(stoppable())
        report = Report(
            stack,
            doing="staging",
            dry_run=dry_run,
            verbose=settings.verbose,
            interval=settings.progress_interval,
        )
        summary = stage(
            inputs,
            workdir=workdir,
            **stage_settings(settings, os.environ),  # the CLI's own environment
            allow_empty=allow_empty,
            dry_run=dry_run,
            observer=report,
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
    node_cache=False,
)
def upload_command(
    outputs: tuple[str, ...],
    workdir: str | None,
    dry_run: bool,
    as_json: bool,
    allow_empty: bool,
    **given: object,
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
    from taskkit.cli.report import Report, upload_line
    from taskkit.runner.transfers import upload_settings
    from taskkit.transfer.upload import upload

    settings = _settings(given)
    with contextlib.ExitStack() as stack:
        stack.enter_context(stoppable())
        report = Report(
            stack,
            doing="uploading",
            dry_run=dry_run,
            verbose=settings.verbose,
            interval=settings.progress_interval,
        )
        summary = upload(
            outputs,
            workdir=workdir,
            **upload_settings(settings),
            allow_empty=allow_empty,
            dry_run=dry_run,
            observer=report,
        )
    return _finish(summary, upload_line(summary), as_json=as_json)


def _settings(given: dict[str, object]) -> TransferSettings:
    """The transfer settings given (checked already by their options), over the defaults."""
    from taskkit.runner.settings import TransferSettings

    return TransferSettings(**{k: v for k, v in given.items() if v is not None})  # type: ignore[arg-type]


def _finish(summary: Summary, line: str, *, as_json: bool) -> int:
    """End a transfer command: its summary (one JSON object, or a line) and its exit code."""
    click.echo(json.dumps(summary.as_json()) if as_json else line)
    error = summary.exit_error()
    return EX_OK if error is None else error.exit_code
