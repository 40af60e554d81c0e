"""What a call of a ``@taskkit.task`` function costs, next to ``joblib.Memory`` on the same
functions and arguments, and next to the bare call.

The functions live in a small user module this script writes into a temporary directory
(``benchfns.py``: plain functions, plus one decorated for section D); the taskkit variant wraps
them with ``taskkit.Task(fn)``, the joblib variant with ``joblib.Memory(DIR).cache(fn)``. Every
round has a fresh ``file://`` state (``TASKKIT_STATE``), a fresh ``TASKKIT_CACHE_DIR`` and a
fresh joblib location, all under the temporary directory, which is also ``HOME`` and the
current directory while the bench runs (nothing lands in ``~`` or in ``./.taskkit``).
The variants of a round take turns, in an order that rotates from round to round, so that a noisy
neighbour hurts them all alike; each figure is the median (and the minimum) of ``--runs`` rounds
(default 5), beside the CPU time of this process (steadier on a busy machine).

A. HIT, small arguments (an int and a short str), in process: the call made once (the miss),
   then timed over many calls (200): taskkit's hit, joblib's hit, the bare call.
   Target: taskkit hit <= 1.0 x joblib hit.
B. HIT, one 100 MB ``bytes`` argument, in process (3 calls a round): taskkit's hit, joblib's
   hit, and the floor of any hit keyed by content, one xxh3-128 of the argument.
   Target: taskkit hit <= 0.5 x joblib hit.
C. FIRST CALL (a miss) on ``file://`` state, of a function that returns at once: each call with
   a fresh state and a fresh Task / Memory object (so the function's code is read too, as at
   the first call of a process); and, in a warm process, a miss by a new argument.
D. ``taskkit call benchfns:goal x=1`` whose goal is met, as a whole process (its first run
   untimed), next to the floor ``python -c "import click, pydantic, fsspec, xxhash; import
   benchfns"`` (the user's module imports taskkit and decorates its function: the floor pays
   that too). Skipped when ``taskkit call`` is not there. Target: goal met <= 1.5 x the floor.

Each section checks what it measures: the misses ran the function, the hits did not (a counter
in the user module; a file the decorated function appends to in D), and every variant returned
the right value. ``--profile`` adds a cProfile of taskkit's small-argument hit (the top entries
by cumulative and by own time, of the quickest round). ``--quick`` is a smoke run: 3 rounds,
fewer calls.

Run: ``.venv/bin/python bench/function_bench.py [--runs N] [--quick] [--profile]``
(joblib comes with ``pip install -e '.[bench]'``).
"""

from __future__ import annotations

import argparse
import compileall
import cProfile
import functools
import importlib
import os
import platform
import pstats
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from types import ModuleType
from typing import Any

import xxhash
from benchlib import (
    NOISY,
    Spread,
    Timing,
    cpu_model,
    load,
    output,
    print_difference,
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

try:
    import joblib  # type: ignore[import-untyped]
except ImportError:  # the anchor of every section
    sys.exit("function_bench.py needs joblib: pip install -e '.[bench]'")

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
PYTHON = str(BIN / "python")
TASKKIT = str(BIN / "taskkit")
RATIO_WIDTH = 54
DEPENDENCIES = "import click, pydantic, fsspec, xxhash"
USER = "benchfns"
BIG = 100 * 1000 * 1000
#: The file ``goal()`` adds a line to each time it really runs (D).
MARKS = "FUNCTION_BENCH_MARKS"
#: The modules of the function wing that other parts of the work may still replace.
PARTS = ("code", "arguments", "results")

#: The user's module: what the variants call (written into the temporary directory).
USER_MODULE = '''\
"""The functions function_bench.py measures."""

import collections
import os

import taskkit

#: How many times each function really ran in this process (a hit must not add to it).
RUNS: collections.Counter[str] = collections.Counter()


def small(n: int, tag: str) -> int:
    RUNS["small"] += 1
    return n + len(tag)


def big(data: bytes) -> int:
    RUNS["big"] += 1
    return len(data)


def quick(n: int) -> int:
    RUNS["quick"] += 1
    return n


@taskkit.task
def goal(x: int) -> int:
    # Every real run leaves a line: a call whose goal is met leaves none.
    with open(os.environ["FUNCTION_BENCH_MARKS"], "a", encoding="utf-8") as f:
        f.write(f"{x}\\n")
    return x + 1
'''


@dataclass
class Laps(Spread):
    """One in-process variant: seconds per call, one figure a round (wall, and CPU time)."""

    label: str
    seconds: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)

    def add(self, wall: float, cpu: float) -> None:
        self.seconds.append(wall)
        self.cpu.append(cpu)

    def cpu_times(self) -> Laps | None:
        """The CPU times as a variant of their own (None when too small to measure)."""
        return Laps(self.label, list(self.cpu)) if self.cpu and min(self.cpu) > 0 else None


def timed(fn: Callable[[], object], calls: int) -> tuple[float, float]:
    """Seconds per call of ``fn`` over ``calls`` calls: (wall, CPU time of this process)."""
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - wall) / calls, (time.process_time() - cpu) / calls


def call_next(fn: Callable[[int], object], numbers: Iterator[int]) -> object:
    """``fn`` called with the next of ``numbers``: a new argument each call."""
    return fn(next(numbers))


def rotated(items: Sequence[Laps], by: int) -> list[Laps]:
    """``items`` in the order of round ``by``: each variant in turn goes first."""
    k = by % len(items)
    return [*items[k:], *items[:k]]


def print_laps(laps: Sequence[Laps], unit: str, scale: float) -> None:
    """The rounds of each variant, per call in ``unit`` (seconds times ``scale``)."""
    width = max(len(v.label) for v in laps)
    print(f"  {'variant':<{width}} {'rounds':>6} {'median':>10} {'min':>10} {'spread':>7} "
          f"{'CPU':>10}  each round ({unit})")  # fmt: skip
    for v in laps:
        cpu = f"{statistics.median(v.cpu) * scale:7.1f} {unit:<2}" if v.cpu else " " * 10
        flag = "  noisy" if v.spread > NOISY else ""
        each = " ".join(f"{x * scale:.1f}" for x in v.seconds)
        print(f"  {v.label:<{width}} {len(v.seconds):>6} {v.median * scale:7.1f} {unit:<2} "
              f"{v.best * scale:7.1f} {unit:<2} {v.spread:7.0%} {cpu}  {each}{flag}")  # fmt: skip
    print(f"  (per call; spread = (max - min) / median, 'noisy' above {NOISY:.0%}; CPU = this "
          "process's CPU time, median)")  # fmt: skip


class Bench:
    def __init__(self, args: argparse.Namespace, scratch: Path) -> None:
        self.args = args
        self.scratch = scratch
        self.problems: list[str] = []
        self.skipped: list[str] = []
        self.user_dir = scratch / "user"
        self.user_dir.mkdir()
        (self.user_dir / f"{USER}.py").write_text(USER_MODULE, encoding="utf-8")
        sys.path.insert(0, str(self.user_dir))
        self.user: ModuleType = importlib.import_module(USER)
        self.rounds = 0

    def anomaly(self, text: str) -> None:
        self.problems.append(text)
        print(f"  ANOMALY: {text}", flush=True)

    def skip(self, text: str) -> None:
        self.skipped.append(text)
        print(text, flush=True)

    def fresh(self) -> Path:
        """A fresh state, stat-cache and joblib location for the next round (set in this
        process's environment, which taskkit reads at each call); the last round's removed."""
        self.rounds += 1
        where = self.scratch / f"round{self.rounds}"
        shutil.rmtree(self.scratch / f"round{self.rounds - 1}", ignore_errors=True)
        where.mkdir()
        os.environ["TASKKIT_STATE"] = f"file://{where}/state"
        os.environ["TASKKIT_CACHE_DIR"] = str(where / "cache")
        return where

    def memory(self, where: Path) -> joblib.Memory:
        return joblib.Memory(str(where / "joblib"), verbose=0)

    def ran(self, name: str) -> int:
        return int(self.user.RUNS[name])

    def expect_runs(self, name: str, want: int, what: str) -> None:
        if self.ran(name) != want:
            self.anomaly(f"{what}: {name}() ran {self.ran(name)} times in all, not {want}")

    def ratios(
        self, title: str, pairs: Sequence[tuple[str, Laps | Timing, Laps | Timing, str | None]]
    ) -> None:
        """Each ``num / den`` (with ``target``), and for a target the same of CPU times."""
        print_ratio_header(f"Ratios ({title}; < 1: faster than the anchor)", RATIO_WIDTH)
        for name, num, den, target in pairs:
            print_ratio(name, num, den, target, RATIO_WIDTH)
            if target is None:
                continue
            nums, dens = cpu_of(num), cpu_of(den)
            if nums is not None and dens is not None:
                print_ratio("  the same, CPU time", nums, dens, width=RATIO_WIDTH)

    # -- A: a hit, small arguments

    def hit_small(self) -> None:
        runs, calls = self.args.runs, self.args.calls
        print(f"A. HIT, small arguments small(7, 'abc'): {calls} calls a round, {runs} rounds")
        print_load()
        fn = self.user.small
        tk, jl, bare = Laps("taskkit hit"), Laps("joblib hit"), Laps("bare call")
        for r in range(runs):
            where = self.fresh()
            task, cached = taskkit.Task(fn), self.memory(where).cache(fn)
            before = self.ran("small")
            if task(7, "abc") != 10 or cached(7, "abc") != 10:
                self.anomaly("small(7, 'abc'): a first call returned the wrong value")
            self.expect_runs("small", before + 2, "the first calls")
            calls_of: dict[str, Callable[[], object]] = {
                tk.label: functools.partial(task, 7, "abc"),
                jl.label: functools.partial(cached, 7, "abc"),
                bare.label: functools.partial(fn, 7, "abc"),
            }
            for v in rotated([tk, jl, bare], r):
                v.add(*timed(calls_of[v.label], calls))
            self.expect_runs("small", before + 2 + calls, "the hits (only the bare calls run)")
            if task(7, "abc") != 10 or cached(7, "abc") != 10:
                self.anomaly("small(7, 'abc'): a hit returned the wrong value")
        print_laps([tk, jl, bare], "us", 1e6)
        self.ratios("A", [("hit / joblib hit (small args)", tk, jl, "<= 1.0")])
        print_difference("hit - bare call (us)", tk, bare, "us", 1e6, RATIO_WIDTH)
        print_difference("joblib hit - bare call (us)", jl, bare, "us", 1e6, RATIO_WIDTH)
        print()

    # -- B: a hit, one 100 MB bytes argument

    def hit_big(self) -> None:
        runs, calls = self.args.runs, self.args.big_calls
        print(f"B. HIT, one {BIG / 1e6:.0f} MB bytes argument big(data): {calls} calls a round, "
              f"{runs} rounds")  # fmt: skip
        print_load()
        fn = self.user.big
        data = os.urandom(BIG)
        # joblib warns on stderr of every call that hashes its argument for long: it is the
        # point of this section.
        warnings.filterwarnings("ignore", "Persisting input arguments took", UserWarning)
        tk, jl = Laps("taskkit hit"), Laps("joblib hit")
        floor = Laps("xxh3-128 of the argument")
        for r in range(runs):
            where = self.fresh()
            task, cached = taskkit.Task(fn), self.memory(where).cache(fn)
            before = self.ran("big")
            try:
                first = task(data)
            except taskkit.TaskkitError as exc:
                self.skip(f"B skipped: taskkit refused the bytes argument "
                          f"({type(exc).__name__}: {exc})")  # fmt: skip
                return
            if first != BIG or cached(data) != BIG:
                self.anomaly("big(data): a first call returned the wrong value")
            self.expect_runs("big", before + 2, "the first calls")
            calls_of: dict[str, Callable[[], object]] = {
                tk.label: functools.partial(task, data),
                jl.label: functools.partial(cached, data),
                floor.label: functools.partial(xxhash.xxh3_128_hexdigest, data),
            }
            for v in rotated([tk, jl, floor], r):
                v.add(*timed(calls_of[v.label], calls))
            self.expect_runs("big", before + 2, "the hits")
        del data
        print_laps([tk, jl, floor], "ms", 1e3)
        self.ratios(
            "B",
            [
                ("hit / joblib hit (100 MB bytes)", tk, jl, "<= 0.5"),
                ("joblib hit / hit (100 MB bytes), the other way up", jl, tk, None),
                ("hit / xxh3-128 of the argument", tk, floor, None),
            ],
        )
        print()

    # -- C: the first call, a miss

    def first_call(self) -> None:
        runs, calls = self.args.runs, self.args.first_calls
        print(f"C. FIRST CALL (a miss) of quick(n) on file:// state: {calls} calls a round, "
              f"{runs} rounds")  # fmt: skip
        print_load()
        fn = self.user.quick
        tk, jl = Laps("taskkit first call"), Laps("joblib first call")
        bare = Laps("bare call")
        tk_new, jl_new = Laps("taskkit miss, new argument"), Laps("joblib miss, new argument")
        for r in range(runs):
            before = self.ran("quick")
            for v in rotated([tk, jl, bare], r):
                wall = cpu = 0.0
                for _ in range(calls):
                    w, c = timed(self.first(v, fn), 1)
                    wall, cpu = wall + w, cpu + c
                v.add(wall / calls, cpu / calls)
            self.expect_runs("quick", before + 3 * calls, "the first calls")
            # A warm process: the same objects and state, a new argument each call.
            where = self.fresh()
            task, cached = taskkit.Task(fn), self.memory(where).cache(fn)
            task(0)
            cached(0)
            before = self.ran("quick")
            counter = iter(range(1, 10**9))
            news: dict[str, Callable[[], object]] = {
                tk_new.label: functools.partial(call_next, task, counter),
                jl_new.label: functools.partial(call_next, cached, counter),
            }
            for v in rotated([tk_new, jl_new], r):
                v.add(*timed(news[v.label], calls))
            self.expect_runs("quick", before + 2 * calls, "the misses by a new argument")
        print_laps([tk, jl, bare, tk_new, jl_new], "ms", 1e3)
        self.ratios(
            "C",
            [
                ("first call / joblib first call", tk, jl, None),
                ("miss, new argument / joblib's", tk_new, jl_new, None),
            ],
        )
        print_difference("first call - bare (ms)", tk, bare, "ms", 1e3, RATIO_WIDTH)
        print()

    def first(self, variant: Laps, fn: Callable[[int], int]) -> Callable[[], object]:
        """The first call of ``variant``, ready to time: a fresh state and a fresh Task /
        Memory object, made before the clock starts."""
        if variant.label.startswith("taskkit"):
            self.fresh()
            task = taskkit.Task(fn)
            return lambda: task(1)
        if variant.label.startswith("joblib"):
            cached = self.memory(self.fresh()).cache(fn)
            return lambda: cached(1)
        return lambda: fn(1)

    # -- D: taskkit call, goal met, a whole process

    def call_met(self) -> None:
        runs = self.args.runs
        print(f"D. taskkit call {USER}:goal x=1, goal met, as a whole process: {runs} runs each")
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("TASKKIT_", "AZ_"))},
            "TASKKIT_STATE": f"file://{self.scratch}/d/state",
            "TASKKIT_CACHE_DIR": str(self.scratch / "d" / "cache"),
            MARKS: str(self.scratch / "d" / "goal-runs.txt"),
        }
        helped = subprocess.run(
            [PYTHON, "-m", "taskkit", "call", "--help"],
            env=env,
            capture_output=True,
            check=False,
        )
        if helped.returncode != 0:
            self.skip("D skipped: taskkit call not available")
            return
        print_load()
        cwd, marks = self.user_dir, Path(env[MARKS])
        marks.parent.mkdir(exist_ok=True)
        argv = [TASKKIT, "call", f"{USER}:goal", "x=1"]
        print(f"  $ taskkit call {USER}:goal x=1  (in the user module's directory)")
        first = spawn(argv, env, self.scratch, cwd=cwd)
        if first.code != 0 or self.goal_runs(marks) != 1:
            tail = " ".join(first.stderr.strip().splitlines()[-3:])
            self.anomaly(f"the first taskkit call exited {first.code}, ran the function "
                         f"{self.goal_runs(marks)} times: {tail}")  # fmt: skip
        print(f"  first call (untimed): {first.seconds:.3f} s")
        met = Timing("taskkit call, goal met", argv)
        floor = Timing(f"floor: {DEPENDENCIES}; import {USER}",
                       [PYTHON, "-c", f"{DEPENDENCIES}; import {USER}"])  # fmt: skip
        deps = Timing(DEPENDENCIES, [PYTHON, "-c", DEPENDENCIES])
        bare = Timing("python -c pass", [PYTHON, "-c", "pass"])
        variants = [met, floor, deps, bare]
        for i in range(runs):
            for v in variants[i % len(variants) :] + variants[: i % len(variants)]:
                proc = spawn(v.argv, env, self.scratch, cwd=cwd)
                if proc.code != 0:
                    tail = " ".join(proc.stderr.strip().splitlines()[-3:])
                    self.anomaly(f"{v.label}: exited {proc.code}: {tail}")
                v.procs.append(proc)
        if self.goal_runs(marks) != 1:
            self.anomaly(f"goal() ran {self.goal_runs(marks)} times, not once")
        print_table(variants, rate=False, places=3)
        if first.code != 0 or any(p.code != 0 for p in met.procs):
            print("  no ratio: taskkit call failed (see the anomalies)\n")
            return
        self.ratios(
            "D",
            [
                ("taskkit call goal met / floor", met, floor, "<= 1.5"),
                (f"goal met / {DEPENDENCIES}", met, deps, None),
            ],
        )
        print()

    @staticmethod
    def goal_runs(marks: Path) -> int:
        return len(marks.read_text().splitlines()) if marks.exists() else 0

    # -- the profile of the small-argument hit

    def profile(self) -> None:
        calls, runs = self.args.calls, self.args.runs
        print(f"Profile: cProfile of {calls} taskkit hits small(7, 'abc'), in process; the "
              f"quickest of {runs} rounds (a busy neighbour inflates what it stops)")  # fmt: skip
        self.fresh()
        task = taskkit.Task(self.user.small)
        task(7, "abc")
        kept: pstats.Stats | None = None
        for _ in range(runs):
            profiler = cProfile.Profile()
            profiler.enable()
            for _ in range(calls):
                task(7, "abc")
            profiler.disable()
            stats = pstats.Stats(profiler)
            if kept is None or stats.total_tt < kept.total_tt:  # type: ignore[attr-defined]
                kept = stats
        assert kept is not None
        entries: dict[tuple[str, int, str], tuple[Any, ...]] = kept.stats  # type: ignore[attr-defined]
        whole: float = kept.total_tt  # type: ignore[attr-defined]
        print(f"  {whole:.3f} s under the profiler, {whole / calls * 1e6:.0f} us a call")
        for title, column, count in (("cumulative", 3, 15), ("own time", 2, 10)):
            print(f"  top {count} by {title}: {'cumulative':>10} {'own':>8} {'calls':>7}  where")
            ranked = sorted(entries.items(), key=lambda item: item[1][column], reverse=True)
            shown = 0
            for (path, line, func), (_, ncalls, own, cum, _) in ranked:
                if path == "~" and func.startswith("<method 'disable'"):
                    continue
                where_ = "" if path == "~" else f"{short_path(path, REPO)}:{line} "
                per = (cum / calls * 1e6, own / calls * 1e6, ncalls / calls)
                print(f"  {'':>{len(title) + 12}} {per[0]:8.1f}us {per[1]:6.1f}us {per[2]:7.1f}  "
                      f"{where_}{func}")  # fmt: skip
                shown += 1
                if shown >= count:
                    break
        print("  (per hit: microseconds, and calls per hit)")
        print()


def cpu_of(timing: Laps | Timing) -> Spread | None:
    """The CPU times of a variant's runs, as a variant of their own."""
    if isinstance(timing, Laps):
        return timing.cpu_times()
    known = [p.cpu for p in timing.procs if p.cpu is not None]
    return Laps(timing.label, known) if known and min(known) > 0 else None


def print_header(args: argparse.Namespace) -> None:
    print("taskkit task functions benchmark: a call's cost next to joblib.Memory and the bare "
          "call.")  # fmt: skip
    print("Machine")
    print(f"  cpu           {cpu_model()}")
    print(f"  cpus          {os.cpu_count()}")
    print(f"  kernel        {platform.system()} {platform.release()}")
    print(f"  load average  {load()} (1, 5, 15 min) at start")
    print("Software")
    print(f"  python        {platform.python_version()} ({sys.executable})")
    head = output(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"])
    dirty = output(["git", "-C", str(REPO), "status", "--porcelain", "--", "taskkit"])
    changed = len(dirty.splitlines()) if dirty and not dirty.startswith("unavailable") else 0
    note = f" + {changed} changed/new files under taskkit/" if changed else ""
    print(f"  taskkit       {taskkit.__version__}, git {head}{note}")
    for name in ("joblib", "click", "pydantic", "fsspec", "xxhash"):
        print(f"  {name:<13} {metadata.version(name)}")
    function = Path(taskkit.__file__).parent / "function"
    standins = [p for p in PARTS if "STAND-IN" in (function / f"{p}.py").read_text()[:200]]
    if standins:
        named = ", ".join(f"taskkit/function/{p}.py" for p in standins)
        print(f"  note          stand-ins: {named}; "
              "the figures that count come with the real ones")  # fmt: skip
    print(f"Settings: {'QUICK' if args.quick else 'full'}; rounds {args.runs}; calls a round: "
          f"A {args.calls}, B {args.big_calls}, C {args.first_calls}")  # fmt: skip
    print()


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=None, help="rounds of each section [5]")
    parser.add_argument("--quick", action="store_true", help="3 rounds, fewer calls: a smoke run")
    parser.add_argument("--profile", action="store_true", help="cProfile of the small-argument hit")
    args = parser.parse_args(argv)
    if args.runs is None:
        args.runs = 3 if args.quick else 5
    if args.runs < 1:
        parser.error("--runs must be >= 1")
    args.calls = 50 if args.quick else 200
    args.big_calls = 1 if args.quick else 3
    args.first_calls = 5 if args.quick else 20
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    began = time.perf_counter()
    compileall.compile_dir(str(Path(taskkit.__file__).parent), quiet=1)
    print_header(args)
    saved, here = dict(os.environ), os.getcwd()
    with tempfile.TemporaryDirectory(prefix="function-bench-") as tmp:
        scratch = Path(tmp)
        for name in [k for k in os.environ if k.startswith(("TASKKIT_", "AZ_BATCH_"))]:
            del os.environ[name]
        os.environ["HOME"] = str(scratch / "home")  # nothing may land in the user's ~
        (scratch / "wd").mkdir()
        os.chdir(scratch / "wd")  # nor in the current directory (.taskkit/)
        try:
            bench = Bench(args, scratch)
            bench.hit_small()
            bench.hit_big()
            bench.first_call()
            bench.call_met()
            if args.profile:
                bench.profile()
        finally:
            os.chdir(here)
            os.environ.clear()
            os.environ.update(saved)
    print(f"Load average {load()} at the end (1, 5, 15 min)")
    for text in bench.skipped:
        print(text)
    code = report_anomalies(
        bench.problems,
        "No anomaly: every miss ran its function once, no hit ran it, every call returned the "
        "right value.",
    )
    print(f"total {time.perf_counter() - began:.0f} s")
    return code


if __name__ == "__main__":
    run_main(main)
