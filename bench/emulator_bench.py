"""The emulator's own overhead: a job of ``taskkit run -- true`` tasks on 2 nodes x 4 slots
(``taskkit local run``), against the same command lines run by ``xargs -P 8``.

1. TASKKIT RUN tasks (``--tasks``, default 1,000): each is what ``taskkit batch task-json --id
   ID --state file://TMP/state -- true`` prints (``/bin/sh -c 'exec taskkit run --state ... --
   true'``: the id is not in the command line, ``taskkit run`` takes it from
   ``AZ_BATCH_TASK_ID``). Each run of either side has a job id of its own, so every task runs its
   command and records its journal (no goal is met).

   a. the emulator: ``taskkit local run TASKS --nodes 2 --slots 4 --job-id J --dir D``;
   b. the anchor: ``xargs -P 8 -L 1 /bin/sh -c WRAPPER``, one input line per task. The wrapper
      does for its task what the emulator does: enters the task's working directory (laid out as
      the emulator lays it out, tasks dealt to two nodes in turn), exports the ``AZ_BATCH_*``
      variables ``taskkit run`` reads (job, task, task dir, working dir, node id, node root and
      shared dir), and ``exec``s the very argv the emulator runs (``shlex.split`` of the
      command line, given to ``eval`` quoted by ``shlex.join``) in a session of its own
      (``setsid``, as the emulator starts each task), with stdout and stderr to the task's
      ``stdout.txt`` and ``stderr.txt``. The session matters on a busy machine: with the
      kernel's autogroup scheduling (``/proc/sys/kernel/sched_autogroup_enabled``), each
      session is one group sharing the CPUs fairly with the others, so eight tasks in xargs's
      one session would get one group's share against the emulator's eight. Its folders are
      made before the clock starts, which the emulator does on the clock: the anchor is the
      stricter for it.

   Target: a <= 1.2 x b (medians). The per-task scheduling cost is (a - b) / tasks.

2. TRIVIAL tasks, whose command line is ``true`` (no taskkit): the emulator against the same
   ``xargs`` wrapper, and against the bare ``xargs -P 8 -n 1 true``: what the emulator costs per
   task when the task costs nothing.

Each side of a section takes turns run by run (a, b, a, b, ...), so a noisy neighbour hurts both
alike; each figure is the median (and the minimum) of ``--runs`` runs (default 3). Checked after
every run: the emulator exited 0 and its report says every task succeeded; xargs exited 0; in
section 1, each side left one ``outcome.json`` per task in the state. Beside each wall-time
figure, the same of the CPU time of each side's process tree (GNU time): the steadier measure on
a busy machine, and the emulator's own work once the tasks' (equal on both sides) is taken off.
``--profile`` (or a missed target) runs the emulator once more under cProfile, every thread of
it, on trivial tasks (its own work per task, not hidden by waiting for ``taskkit run``), and
prints the functions with the most cumulative and own time.

Run: ``.venv/bin/python bench/emulator_bench.py [--tasks N] [--runs N] [--profile]``
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import pstats
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from benchlib import (
    Proc,
    Spread,
    Timing,
    cpu_model,
    load,
    print_load,
    print_ratio,
    print_ratio_header,
    print_table,
    report_anomalies,
    run_main,
    short_path,
    spawn,
)

import taskkit

REPO = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
TASKKIT = (PYTHON, "-m", "taskkit")
TARGET = "<= 1.2"
NODES, SLOTS = 2, 4
WIDTH = 66
#: Tasks of the profiled run, at most.
PROFILED = 1000

#: What the emulator does for a task before it runs its argv, for xargs to do the same:
#: $1 task dir, $2 task id, $3 node's shared dir, $4 node id, $5 node root.
WRAPPER = """\
cd "$1/wd" || exit 70
export AZ_BATCH_JOB_ID="$BENCH_JOB" AZ_BATCH_TASK_ID="$2" AZ_BATCH_TASK_DIR="$1" \
AZ_BATCH_TASK_WORKING_DIR="$1/wd" AZ_BATCH_NODE_SHARED_DIR="$3" AZ_BATCH_NODE_ID="$4" \
AZ_BATCH_NODE_ROOT_DIR="$5"
eval "exec setsid $BENCH_ARGV" >"$1/stdout.txt" 2>"$1/stderr.txt"
"""

#: One ``taskkit`` command line under cProfile, every thread profiled (argv: OUT ARGS...).
PROFILER = """\
import cProfile, pstats, sys, threading

out, argv = sys.argv[1], sys.argv[2:]
profiles = []


def _start(frame, event, arg):  # the first event of a new thread: profile it from here on
    sys.setprofile(None)
    profile = cProfile.Profile()
    profiles.append(profile)
    profile.enable()


threading.setprofile(_start)
main_profile = cProfile.Profile()
main_profile.enable()
from taskkit.cli import main

try:
    main(argv)  # with argv given, main ends with sys.exit, not os._exit
except SystemExit:
    pass
main_profile.disable()
threading.setprofile(None)
stats = pstats.Stats(main_profile)
for profile in profiles:
    stats.add(profile)
stats.dump_stats(out)
"""


@dataclass
class CpuTimes(Spread):
    """The CPU times (user + system) of a side's runs, its whole process tree: steadier than
    wall times on a busy machine."""

    seconds: list[float]

    @classmethod
    def of(cls, timing: Timing) -> CpuTimes:
        return cls([p.cpu if p.cpu is not None else math.nan for p in timing.procs])


class Bench:
    def __init__(self, args: argparse.Namespace, scratch: Path) -> None:
        self.args = args
        self.scratch = scratch
        self.problems: list[str] = []
        self.runs = 0
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("TASKKIT_", "AZ_BATCH_", "AZURE_"))}  # fmt: skip
        # Task command lines call taskkit by name: this Python's comes first.
        env["PATH"] = os.pathsep.join([os.path.dirname(PYTHON), env.get("PATH", "")])
        self.env = env
        self.state = scratch / "state"

    def anomaly(self, text: str) -> None:
        self.problems.append(text)
        print(f"  ANOMALY: {text}", flush=True)

    def failed(self, proc: Proc, what: str) -> None:
        tail = "\n".join(proc.stderr.strip().splitlines()[-5:])
        self.anomaly(f"{what} exited with {proc.code}\n{tail}")

    # -- the tasks

    def tasks(
        self, name: str, command_line: str | None, count: int | None = None
    ) -> tuple[Path, str]:
        """A TASKS file of ``count`` (``--tasks``) tasks with ``command_line`` (None: the line
        ``taskkit batch task-json`` writes for ``taskkit run -- true``); and that line."""
        if command_line is None:
            argv = [*TASKKIT, "batch", "task-json", "--id", "t-1", "--state",
                    f"file://{self.state}", "--", "true"]  # fmt: skip
            done = subprocess.run(argv, env=self.env, capture_output=True, text=True, check=True)
            template = json.loads(done.stdout)
        else:
            template = {"id": "t-1", "commandLine": command_line}
        path = self.scratch / f"{name}.jsonl"
        with path.open("w") as f:
            for n in range(1, (count or self.args.tasks) + 1):
                f.write(json.dumps({**template, "id": f"t-{n:05d}"}) + "\n")
        return path, str(template["commandLine"])

    def job(self, side: str) -> tuple[str, Path]:
        """A fresh job id and folder for one run of one side."""
        self.runs += 1
        job = f"{side}-{self.runs}"
        return job, self.scratch / job

    # -- the two sides

    def emulator(self, tasks: Path, journals: bool) -> Proc:
        job, folder = self.job("emu")
        argv = [*TASKKIT, "local", "run", str(tasks), "--nodes", str(NODES), "--slots",
                str(SLOTS), "--job-id", job, "--dir", str(folder)]  # fmt: skip
        proc = spawn(argv, self.env, self.scratch, cwd=self.scratch)
        if proc.code != 0:
            self.failed(proc, f"taskkit local run ({job})")
        if journals:
            self.recorded(job)
        report = folder / f"report-{job}.json"
        try:
            summary = json.loads(report.read_text())["summary"]
            if summary.get("succeeded") != self.args.tasks:
                self.anomaly(f"{job}: the report says {summary.get('succeeded')} succeeded")
        except (OSError, ValueError, KeyError) as exc:
            self.anomaly(f"{job}: no readable report ({exc})")
        return proc

    def xargs(self, command_line: str, journals: bool) -> Proc:
        job, folder = self.job("xargs")
        lines = []
        for n in range(1, self.args.tasks + 1):
            root = folder / "nodes" / f"node-{(n - 1) % NODES + 1}" / "node"
            task = root / "workitems" / job / "job-1" / f"t-{n:05d}"
            (task / "wd").mkdir(parents=True)
            (root / "shared").mkdir(exist_ok=True)
            node = f"local-{root.parent.name}"
            lines.append(f"{task} t-{n:05d} {root / 'shared'} {node} {root}\n")
        feed = self.scratch / f"{job}.lines"
        feed.write_text("".join(lines))
        env = {**self.env, "BENCH_JOB": job,
               "BENCH_ARGV": shlex.join(shlex.split(command_line))}  # fmt: skip
        script = f"exec xargs -P {NODES * SLOTS} -L 1 /bin/sh -c {shlex.quote(WRAPPER)} sh < {feed}"
        proc = spawn(["/bin/sh", "-c", script], env, self.scratch, cwd=self.scratch)
        if proc.code != 0:
            self.failed(proc, f"xargs ({job})")
        if journals:
            self.recorded(job)
        return proc

    def bare_xargs(self) -> Proc:
        feed = self.scratch / "bare.lines"
        feed.write_text("".join(f"t-{n}\n" for n in range(self.args.tasks)))
        script = f"exec xargs -P {NODES * SLOTS} -n 1 true < {feed}"
        proc = spawn(["/bin/sh", "-c", script], self.env, self.scratch, cwd=self.scratch)
        if proc.code != 0:
            self.failed(proc, "bare xargs")
        return proc

    def recorded(self, job: str) -> None:
        """Each task of a ``taskkit run`` job left its outcome in the state."""
        found = len(list((self.state / job).glob("*/outcome.json")))
        if found != self.args.tasks:
            self.anomaly(f"{job}: {found} outcome.json in the state, not {self.args.tasks}")

    # -- the sections

    def section_taskkit(self) -> tuple[Timing, Timing]:
        n, runs = self.args.tasks, self.args.runs
        print(f"1. TASKKIT RUN tasks: {n:,} x `taskkit run -- true`, {NODES} nodes x {SLOTS} "
              f"slots against xargs -P {NODES * SLOTS}; {runs} runs each")  # fmt: skip
        print_load()
        tasks, line = self.tasks("taskkit-run", None)
        print(f"  command line: {line}")
        emu = Timing(f"emulator: local run, {n:,} tasks")
        anchor = Timing(f"anchor: xargs -P {NODES * SLOTS}, the same argv")
        for i in range(runs):
            emu.procs.append(self.emulator(tasks, journals=True))
            anchor.procs.append(self.xargs(line, journals=True))
            e, a = emu.procs[-1], anchor.procs[-1]
            print(f"  run {i + 1}: emulator {e.seconds:.1f} s (CPU {e.cpu or 0:.1f} s), "
                  f"xargs {a.seconds:.1f} s (CPU {a.cpu or 0:.1f} s)", flush=True)  # fmt: skip
        print_table([emu, anchor], rate=False)
        print_ratio_header(f"Ratio ({n:,} tasks; wall times)", WIDTH)
        print_ratio("emulator / xargs", emu, anchor, TARGET, WIDTH)
        print_ratio("  the same, CPU time of the process trees", CpuTimes.of(emu),
                    CpuTimes.of(anchor), width=WIDTH)  # fmt: skip
        self.per_task("scheduling cost per task (emulator - xargs) / tasks", emu, anchor)
        self.per_task("  the same, CPU time", CpuTimes.of(emu), CpuTimes.of(anchor))
        print()
        return emu, anchor

    def section_trivial(self) -> None:
        n, runs = self.args.tasks, self.args.runs
        print(f"2. TRIVIAL tasks: {n:,} x `true` (no taskkit), the same sides; {runs} runs each")
        print_load()
        tasks, line = self.tasks("trivial", "true")
        emu = Timing(f"emulator: local run, {n:,} x true")
        anchor = Timing(f"anchor: xargs -P {NODES * SLOTS}, the same wrapper, true")
        bare = Timing(f"xargs -P {NODES * SLOTS} -n 1 true")
        for _ in range(runs):
            emu.procs.append(self.emulator(tasks, journals=False))
            anchor.procs.append(self.xargs(line, journals=False))
            bare.procs.append(self.bare_xargs())
        print_table([emu, anchor, bare], rate=False)
        print_ratio_header(f"Ratios ({n:,} trivial tasks; wall times)", WIDTH)
        print_ratio("emulator / xargs with the wrapper", emu, anchor, width=WIDTH)
        print_ratio("emulator / bare xargs", emu, bare, width=WIDTH)
        self.per_task("scheduling cost per task, against the wrapper", emu, anchor)
        self.per_task("  the same, CPU time", CpuTimes.of(emu), CpuTimes.of(anchor))
        self.per_task("scheduling cost per task, against bare xargs", emu, bare)
        print()

    def per_task(self, name: str, num: Spread, den: Spread) -> None:
        n = self.args.tasks
        median = (num.median - den.median) / n * 1e3
        best = (num.best - den.best) / n * 1e3
        print(f"  {name:<{WIDTH}} {median:6.2f}ms {best:6.2f}ms  (medians, minima)")

    # -- the profile

    def profile(self) -> None:
        n = min(self.args.tasks, PROFILED)
        print(f"Profile: the emulator under cProfile (every thread), {n:,} trivial tasks: its "
              "own work per task, which waiting for taskkit run would only hide")  # fmt: skip
        tasks, _ = self.tasks("profiled", "true", n)
        job, folder = self.job("profile")
        out = self.scratch / "emulator.prof"
        script = self.scratch / "profiler.py"
        script.write_text(PROFILER)
        argv = [PYTHON, str(script), str(out), "local", "run", str(tasks), "--nodes", str(NODES),
                "--slots", str(SLOTS), "--job-id", job, "--dir", str(folder)]  # fmt: skip
        proc = spawn(argv, self.env, self.scratch, cwd=self.scratch)
        if proc.code != 0 or not out.exists():
            self.failed(proc, "the emulator under cProfile")
            return
        print(f"  wall {proc.seconds:.1f} s under the profiler; the emulator's process tree used "
              f"{proc.cpu or 0:.1f} s of CPU")  # fmt: skip
        stats = pstats.Stats(str(out))
        entries = stats.stats  # type: ignore[attr-defined]
        for title, column in (("cumulative", 3), ("own", 2)):
            print(f"  the functions with the most {title} time (summed over threads):")
            ranked = sorted(entries.items(), key=lambda item: item[1][column], reverse=True)
            shown = 0
            for (path, line, func), values in ranked:
                where = short_path(path, REPO)
                if path == "~" and func.startswith("<built-in method builtins.exec"):
                    continue
                if where.startswith("<frozen") or where.endswith("profiler.py"):
                    continue
                calls, seconds = values[1], values[column]
                print(f"    {seconds:8.3f}s {calls:>8}x  {where}:{line} {func}")
                shown += 1
                if shown >= 20:
                    break
        print()


def print_header(args: argparse.Namespace) -> None:
    print("taskkit local run benchmark: the emulator's overhead against xargs.")
    print(f"  cpu           {cpu_model()}, {os.cpu_count()} CPUs")
    print(f"  kernel        {platform.system()} {platform.release()}")
    print(f"  load average  {load()} at start")
    print(f"  python        {platform.python_version()} ({PYTHON})")
    print(f"  taskkit       {taskkit.__version__} ({Path(taskkit.__file__).parent})")
    print(f"Settings: {args.tasks:,} tasks, {args.runs} runs per side")
    print()


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--tasks", type=int, default=1000, help="tasks per job [1000]")
    parser.add_argument("--runs", type=int, default=3, help="timed runs per side [3]")
    parser.add_argument("--profile", action="store_true", help="profile even if the target is met")
    parser.add_argument("--only", choices=("taskkit", "trivial"), help="one section only")
    args = parser.parse_args(argv)
    if args.tasks < 1 or args.runs < 1:
        parser.error("--tasks and --runs must be >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    began = time.perf_counter()
    print_header(args)
    with tempfile.TemporaryDirectory(prefix="emulator-bench-") as tmp:
        bench = Bench(args, Path(tmp))
        missed = False
        if args.only in (None, "taskkit"):
            emu, anchor = bench.section_taskkit()
            missed = emu.median / anchor.median > float(TARGET.split()[1])
        if args.only in (None, "trivial"):
            bench.section_trivial()
        if args.profile or missed:
            bench.profile()
    print(f"load average {load()} at the end")
    code = report_anomalies(
        bench.problems,
        "No anomaly: every run exited 0, every task succeeded and recorded its outcome.",
    )
    print(f"total {time.perf_counter() - began:.0f} s")
    return code


if __name__ == "__main__":
    run_main(main)
