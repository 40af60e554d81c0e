"""``taskkit local run``: a job of Batch task objects on an emulated pool, with chaos.

What is drawn: on a terminal, one status line redrawn as the job goes (running, succeeded,
failed, retries, requeues), and a line for each task that fails or is blocked; elsewhere (a
pipe, a CI log) one plain line per event. Either way the last lines are the summary, naming
every task that did not succeed, and the exit code is 0 only when every task succeeded.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from pathlib import Path

import click

from taskkit.batch.chaos import Chaos
from taskkit.batch.emulator import DEFAULT_JOB_ID, Emulator
from taskkit.batch.report import EmulatorReport, Event
from taskkit.batch.tasks import read_tasks
from taskkit.cli._app import CONTEXT, cli
from taskkit.cli.report import RunReport, echo, say
from taskkit.cli.taskfile import read_task_file
from taskkit.exceptions import EX_INTERRUPTED, from_os_error
from taskkit.signals import raising

__all__ = ["local_group"]

#: The job's folder when ``--dir`` is not given.
DEFAULT_DIR = ".taskkit-local"
#: Seconds between redraws of the status line.
REDRAW = 0.2


@cli.group("local", context_settings=CONTEXT)
def local_group() -> None:
    """Run Batch jobs on this machine: an emulated pool, with fault injection.

    \b
    Examples:
      taskkit local run tasks.json --nodes 2 --slots 4
      taskkit local run tasks.json --chaos kill=0.2,preempt=0.05 --seed 7
    """


@local_group.command("run", context_settings=CONTEXT)
@click.argument("tasks", metavar="TASKS")
@click.option(
    "--nodes",
    type=click.IntRange(min=1, max=256),
    default=2,
    show_default=True,
    help="Emulated nodes.",
)
@click.option(
    "--slots",
    type=click.IntRange(min=1, max=256),
    default=1,
    show_default=True,
    help="Task slots per node.",
)
@click.option(
    "--job-id",
    default=DEFAULT_JOB_ID,
    callback=lambda ctx, param, value: _batch_id(value),
    show_default=True,
    metavar="J",
    help="The job's id (AZ_BATCH_JOB_ID).",
)
@click.option(
    "--on-task-failure",
    type=click.Choice(["noaction", "performExitOptionsJobAction"]),
    default="noaction",
    show_default=True,
    help="The job's onTaskFailure: performExitOptionsJobAction honours exitOptions.jobAction.",
)
@click.option(
    "--chaos",
    metavar="SPEC",
    default=None,
    help="kill=P,preempt=P,storage=P,within=SECONDS,limit=N (see README).",
)
@click.option("--seed", type=int, default=None, help="Seed of the chaos decisions.")
@click.option(
    "--report",
    "report_files",
    metavar="FILE",
    multiple=True,
    help="Also write the JSON report here; a FILE ending in .html or .htm gets the job's "
    "HTML page instead (as taskkit report draws it). Repeatable.",
)
@click.option(
    "--dir",
    "directory",
    metavar="DIR",
    default=DEFAULT_DIR,
    show_default=True,
    help="Where the nodes, the state and the reports live.",
)
@click.option("-v", "--verbose", is_flag=True, help="A line for every start, retry and requeue.")
def local_run_command(
    tasks: str,
    nodes: int,
    slots: int,
    job_id: str,
    on_task_failure: str,
    chaos: str | None,
    seed: int | None,
    report_files: tuple[str, ...],
    directory: str,
    verbose: bool,
) -> None:
    """Run the Batch task objects in TASKS as Azure Batch runs them (retries, wall clocks,
    exit conditions, dependencies) on NODES emulated nodes of SLOTS slots. TASKS holds a JSON
    array, JSON lines, or the objects `taskkit batch task-json` prints, one after another (-:
    stdin).

    Exit code: 0 when every task succeeded, 1 when any failed, was blocked or did not run.

    \b
    Examples:
      taskkit batch task-json --id s1 -- python align.py 1 > tasks.json
      taskkit local run tasks.json --nodes 2 --slots 4 --report report.json
      taskkit local run tasks.json --report report.html     # the job's timeline page
      taskkit local run tasks.json --chaos kill=0.2,preempt=0.05,within=5 --seed 7
    """
    # From the start, so that a signal as the job is read is one line and its code too; the
    # first one stops the job, the others wait for its report (see _stopped_by_signals).
    with _stopped_by_signals():
        spec = Chaos.parse(chaos)
        text, source = read_task_file(tasks, "local run")
        found = read_tasks(text, source)
        status = _Status(sys.stderr.isatty(), verbose, len(found.tasks))
        console = RunReport(verbose=verbose, interval=60.0)
        for name, ids in sorted(found.not_emulated.items()):
            shown = ", ".join(ids[:3]) + (f" and {len(ids) - 3} more" if len(ids) > 3 else "")
            say("warning", f"{name} is not emulated: ignored in {shown}")
        emulator = Emulator(
            found.tasks,
            root=Path(directory).expanduser(),
            job_id=job_id,
            nodes=nodes,
            slots=slots,
            on_task_failure=on_task_failure,  # type: ignore[arg-type]
            chaos=spec,
            seed=seed,
            watch=status.event,
            observer=console,
        )
        emulator.check()
        _make_folders(*(("--report", f) for f in report_files), ("--dir", directory))
        report = emulator.report
        try:
            emulator.run()
        except KeyboardInterrupt:
            report.stopped_code = EX_INTERRUPTED
            raise
        except SystemExit as exc:
            report.stopped_code = exc.code if isinstance(exc.code, int) else 1
            raise
        finally:
            status.clear()
            kept = emulator.root / f"report-{emulator.job_id}.json"
            report.write(kept)
            pages = [f for f in report_files if _is_page(f)]
            for report_file in report_files:
                if report_file not in pages:
                    report.write(Path(report_file).expanduser())
            _summary(report, kept)
            for page in pages:
                _page(emulator, page)
        sys.exit(report.exit_code)


def _is_page(name: str) -> bool:
    """Whether a --report FILE is the HTML page (by its suffix) rather than the JSON report."""
    return Path(name).suffix.lower() in (".html", ".htm")


def _page(emulator: Emulator, target: str) -> None:
    """The job's page, from the journal its tasks kept (the state they ran with). A page
    that cannot be made is said, and the run's exit code stays the job's."""
    from taskkit.cli.htmlreport import write_page
    from taskkit.exceptions import TaskkitError

    try:
        write_page(emulator.task_state, emulator.job_id, str(Path(target).expanduser()),
                   allow_empty=True)  # fmt: skip
    except TaskkitError as exc:
        say("error", f"--report {target!r}: {exc}")


def _stopped_by_signals() -> contextlib.AbstractContextManager[None]:
    """SIGINT as Ctrl-C (exit 130), SIGTERM and SIGHUP (a closed terminal) as exit 128+N, even
    when the shell that started taskkit ignores them (a background job): the emulator then
    kills every task it started and writes its report before taskkit exits. Only the first
    counts: later ones are ignored until the block ends."""

    signums = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

    def stop(signum: int) -> BaseException:
        # The first one stops the job; from then on the others are let be, so that the tasks
        # are ended and the report written, and the exit code is the one it gives.
        for other in signums:
            signal.signal(other, signal.SIG_IGN)
        return KeyboardInterrupt() if signum == signal.SIGINT else SystemExit(128 + signum)

    return raising(signums, stop)


def _make_folders(*options: tuple[str, str | None]) -> None:
    """Make the folders of ``--dir`` and of the ``--report`` file before any task runs: one
    that cannot be made (a file in the way) is local I/O (74), said naming the option, not a
    job run for nothing and its report lost."""
    for option, given in options:
        if given is None:
            continue
        path = Path(given).expanduser()
        folder = path if option == "--dir" else path.parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise from_os_error(exc, f"{option} {given!r}: cannot make the folder") from None


def _batch_id(value: str) -> str:
    """A --job-id Batch would take; a bad option (64) otherwise, before TASKS is read."""
    from taskkit.runner.spec import check_setting

    try:
        return str(check_setting("job_id", value))
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


class _Status:
    """The live view: a redrawn line on a terminal, plain lines elsewhere."""

    def __init__(self, tty: bool, verbose: bool, total: int) -> None:
        self.tty, self.verbose, self.total = tty, verbose, total
        self.running = self.succeeded = self.failed = self.blocked = 0
        self.retries = self.requeues = 0
        self._drawn = 0.0
        self._width = 0

    def event(self, event: Event) -> None:
        kind = event.kind
        self.running = event.running
        self.retries += kind == "retry"
        self.requeues += kind == "requeue"
        self.succeeded += kind == "succeeded"
        self.failed += kind == "failed"
        self.blocked += kind == "blocked"
        loud = kind in ("failed", "blocked", "preempt", "job")
        if self.tty:
            if loud or self.verbose:
                self.clear()
                say("local", event.text)
            now = time.monotonic()
            if now - self._drawn >= REDRAW or kind in ("succeeded", "failed"):
                self._draw()
                self._drawn = now
        elif loud or self.verbose:
            say("local", event.text)

    def line(self) -> str:
        return (
            f"{self.succeeded + self.failed + self.blocked}/{self.total} done: "
            f"{max(self.running, 0)} running, {self.succeeded} succeeded, {self.failed} failed, "
            f"{self.blocked} blocked, {self.retries} retries, {self.requeues} requeues"
        )

    def _draw(self) -> None:
        text = self.line()
        pad = " " * max(self._width - len(text), 0)
        sys.stderr.write(f"\r{text}{pad}")
        sys.stderr.flush()
        self._width = len(text)

    def clear(self) -> None:
        if self.tty and self._width:
            sys.stderr.write("\r" + " " * self._width + "\r")
            sys.stderr.flush()
            self._width = 0


def _summary(report: EmulatorReport, kept: Path) -> None:
    summary = report.summary()
    echo(
        f"job {report.job_id}: {summary['succeeded']} succeeded, {summary['failed']} failed, "
        f"{summary['blocked']} blocked, {summary['notRun']} not run"
        + (f", {summary['interrupted']} interrupted" if summary["interrupted"] else "")
        + f"; {summary['retries']} retries, {summary['requeues']} requeues "
        f"({summary['kills']} kills, {summary['preemptions']} preemptions"
        + (f", {summary['storageFaults']} storage faults" if report.chaos.storage else "")
        + f") in {summary['seconds']} s"
    )
    for task in report.unsuccessful():
        why = task.note or (f"exit {task.exit_code}" if task.exit_code is not None else "")
        echo(f"  {task.state}: {task.id}" + (f" ({why})" if why else ""))
    if report.terminated:
        echo(f"  the job ended early: {report.terminated}")
    if report.chaos:
        echo(f"chaos {report.chaos.text()} with --seed {report.seed} (the same seed strikes alike)")
    echo(f"report: {os.path.relpath(kept)}")
