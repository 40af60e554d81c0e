"""``taskkit batch tasks``: one task JSON made into many (:mod:`taskkit.batch.fanout`).

Invariant: stdout gets the tasks only once all of them were made; a bad row anywhere leaves
it empty, with one line on stderr.
"""

from __future__ import annotations

import json
import sys
import tempfile

import click

from taskkit.cli._app import CONTEXT
from taskkit.cli.batch import batch_group, retention_option, retention_seconds
from taskkit.cli.report import say
from taskkit.cli.taskfile import read_task_file
from taskkit.exceptions import EX_OK, UsageError

__all__ = ["MAX_SHARDS", "MAX_TEMPLATE_BYTES", "tasks_command"]

#: A template is one task: anything larger is not one.
MAX_TEMPLATE_BYTES = 1 << 20
#: Far beyond what one job holds well; a typo (an extra zero or three) rather than a plan.
MAX_SHARDS = 10_000_000
#: Output kept in memory before it spills to a temporary file.
_SPOOL_BYTES = 8 << 20


@batch_group.command("tasks", context_settings=CONTEXT)
@click.option(
    "--template",
    "template_path",
    required=True,
    metavar="TASK.json",
    help="One task as 'taskkit batch task-json' prints it, with {placeholders} in its arguments.",
)
@click.option(
    "--shards",
    type=click.IntRange(min=1, max=MAX_SHARDS),
    default=None,
    metavar="N",
    help="N tasks, {shard} 0 to N-1 and {shards} N in each.",
)
@click.option(
    "--params",
    "params_path",
    metavar="FILE",
    default=None,
    help="A task per row of FILE.csv (with a header) or FILE.jsonl; {COLUMN} is its value.",
)
@click.option(
    "--group",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    metavar="K",
    help="K shards (rows) in each task, run one after another: for shards shorter than "
    "about 10 s, which scheduling would dominate.",
)
@click.option(
    "--id-column",
    metavar="COL",
    default=None,
    help="Take each shard's id from column COL (a Batch id, unique ignoring case).",
)
@click.option(
    "--prefix",
    metavar="P",
    default=None,
    help="Ids are P-<n> (P-<value> with --id-column) [default: the template's id; none "
    "with --id-column].",
)
@retention_option
@click.option("--jsonl", is_flag=True, help="JSON lines (a task a line) instead of an array.")
def tasks_command(
    template_path: str,
    shards: int | None,
    params_path: str | None,
    group: int,
    id_column: str | None,
    prefix: str | None,
    retention_time: str | None,
    jsonl: bool,
) -> int:
    """Print a Batch task for each shard (or row of --params) of the template TASK.json, its
    placeholders filled in: what 'taskkit local run' and 'taskkit batch submit' take.

    \b
    Placeholders, inside any argument of the template's taskkit run or call:
      {shard}    the shard's number, 0 to N-1 (with --params: the row's, from 0)
      {shards}   N, how many shards there are
      {id}       the shard's id: TEMPLATE-ID-<n>, zero-padded to sort, or --id-column's
      {COLUMN}   with --params, the row's value of COLUMN, byte for byte
      {{ }}      literal braces
    An unknown placeholder, or a template using none, is an error; a column no placeholder
    uses is a warning. Values are quoted anew for every task: spaces, quotes, $, newlines and
    any Unicode reach the program exactly. environmentSettings are copied, not filled in.

    A 'taskkit call' template that uses no placeholder gets each column as a NAME=VALUE word
    (the id column too): the columns are the function's parameters.

    With --group K each task (id TEMPLATE-ID-g<n>) runs its K shards one after another, each
    with its own journal ('taskkit run --task-id <shard id>'; a call keys itself by its
    values), so a retry skips the shards already done; it stops at the first shard that
    fails, with that shard's exit code. maxWallClockTime is multiplied by the shards a task
    holds.

    The output is the same, byte for byte, for the same inputs; nothing is sent to Batch.

    \b
    Examples:
      taskkit batch task-json --id align --state az://state/runs --max-retries 3 \\
          -o 'out/**=az://results/{id}/' -- python align.py --shard {shard} --of {shards} \\
          > align.json
      taskkit batch tasks --template align.json --shards 1000 > tasks.json
      taskkit batch tasks --template align.json --shards 100000 --group 20 > tasks.json
      taskkit batch task-json --id clean --state az://state/calls --call pipeline:clean \\
          > clean.json
      taskkit batch tasks --template clean.json --params samples.csv --id-column sample \\
          --retention-time 1d > tasks.json
      taskkit local run tasks.json
    """
    from taskkit.batch.fanout import plan_fanout, read_template
    from taskkit.batch.params import read_params

    if (shards is None) == (params_path is None):
        raise UsageError("give one of --shards N and --params FILE")
    if id_column is not None and params_path is None:
        raise UsageError("--id-column goes with --params (it names one of its columns)")
    retention = retention_seconds(retention_time)
    text, named = read_task_file(
        template_path,
        "batch tasks",
        what="template file",
        limit=MAX_TEMPLATE_BYTES,
        of="template (a template is one task)",
    )
    template = read_template(text, named)
    source = read_params(params_path) if params_path is not None else shards
    assert source is not None
    plan = plan_fanout(
        template,
        source,
        group=group,
        id_column=id_column,
        prefix=prefix,
        retention_time=retention,
    )
    for warning in plan.warnings:
        say("warning", warning)
    with tempfile.SpooledTemporaryFile(max_size=_SPOOL_BYTES) as spool:
        first = True
        for task in plan.tasks():
            line = json.dumps(task)
            if jsonl:
                spool.write(f"{line}\n".encode())
            else:
                spool.write(f"{'[' if first else ','}\n{line}".encode())
            first = False
        if not jsonl:
            spool.write(b"\n]\n")
        spool.seek(0)
        out = sys.stdout.buffer
        while chunk := spool.read(1 << 20):
            out.write(chunk)
    return EX_OK
