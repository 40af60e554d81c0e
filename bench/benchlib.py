"""What the benchmarks in bench/ share: reading the machine (and how busy it is), running and
timing whole processes, and printing their times and ratios to anchors."""

from __future__ import annotations

import collections
import contextlib
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn, Protocol

#: GNU time, for the peak RSS and the CPU time of one process (see ``spawn``).
TIME = "/usr/bin/time"
#: Runs whose spread ((max - min) / median) is above this are flagged noisy.
NOISY = 0.20


class Measured(Protocol):
    """Times of one variant: the median and the best of its runs, in seconds."""

    @property
    def median(self) -> float: ...

    @property
    def best(self) -> float: ...


class Spread:
    """Median, best and spread of a variant's run times (``seconds``, from the subclass)."""

    seconds: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    @property
    def best(self) -> float:
        return min(self.seconds)

    @property
    def spread(self) -> float:
        """(max - min) / median: how much the runs disagree."""
        return (max(self.seconds) - min(self.seconds)) / self.median


# -- processes ------------------------------------------------------------------------------------


@dataclass
class Proc:
    """One whole-process run: wall time, its own peak RSS and CPU time (None when not
    measured), exit code and output."""

    argv: list[str]
    seconds: float
    rss_kib: int | None
    cpu: float | None
    code: int
    stdout: str
    stderr: str

    @property
    def rss_mib(self) -> float:
        """The peak RSS in MiB (ru_maxrss is in KiB on Linux); NaN when not measured."""
        return math.nan if self.rss_kib is None else self.rss_kib / 1024

    def summary(self) -> dict[str, object]:
        """taskkit's ``--json`` summary: the last line of stdout."""
        lines = self.stdout.strip().splitlines()
        try:
            found = json.loads(lines[-1]) if lines else {}
        except json.JSONDecodeError:
            return {}
        return found if isinstance(found, dict) else {}


@dataclass
class Timing(Spread):
    """The runs of one variant (``argv``: its command line, for the scripts that keep it here)."""

    label: str
    argv: list[str] = field(default_factory=list)
    procs: list[Proc] = field(default_factory=list)

    @property
    def seconds(self) -> list[float]:  # type: ignore[override]
        return [p.seconds for p in self.procs]

    @property
    def rss_mib(self) -> float:
        """The largest peak RSS of the runs, in MiB; NaN when none was measured."""
        return max((p.rss_mib for p in self.procs if p.rss_kib is not None), default=math.nan)

    @property
    def rss(self) -> str:
        """The largest peak RSS of the runs, as a column of the table."""
        return "       n/a" if math.isnan(self.rss_mib) else f"{self.rss_mib:6.0f} MiB"

    @property
    def cpu(self) -> str:
        """The median CPU time (user + system) of the runs, as a column of the table."""
        known = [p.cpu for p in self.procs if p.cpu is not None]
        return f"{statistics.median(known):6.2f}s" if known else "    n/a"


def spawn(argv: Sequence[str], env: dict[str, str], scratch: Path, cwd: Path | None = None) -> Proc:
    """Run ``argv`` (in ``cwd``, else here) to its end; the wall time is from before the spawn
    to after the reap. ``scratch`` is a directory for GNU time's report.

    ``/usr/bin/time`` forks the command from itself, a small process, so its peak RSS is the
    command's own (a child spawned straight from this script would inherit this script's
    high-water mark on Linux). Without it, the RSS and CPU time are None."""
    usage = scratch / "usage"
    timed = os.access(TIME, os.X_OK)
    command = [TIME, "-f", "%M %U %S", "-o", str(usage), *argv] if timed else list(argv)
    start = time.perf_counter()
    done = subprocess.run(
        command,
        env=env,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=False,
    )
    seconds = time.perf_counter() - start
    rss, cpu = None, None
    if timed:  # a failed command's exit status comes first, the format's line last
        lines = usage.read_text().splitlines()
        with contextlib.suppress(IndexError, ValueError):
            kib, user, system = lines[-1].split()
            rss, cpu = int(kib), float(user) + float(system)
    return Proc(list(argv), seconds, rss, cpu, done.returncode, done.stdout, done.stderr)


def op_counts(ops: Sequence[str], form: str = "{op} x{n}") -> str:
    """Azurite's operations counted, each in ``form`` (``{op}``: its name, ``{n}``: how many),
    sorted by name; "none" without any."""
    counted = collections.Counter(ops)
    return ", ".join(form.format(op=op, n=n) for op, n in sorted(counted.items())) or "none"


def print_table(
    timings: Sequence[Timing],
    size: int | None = None,
    *,
    rate: bool = True,
    cpu: bool = True,
    places: int = 2,
    rate_note: str = "MB/s from the median",
) -> None:
    """The runs of each variant: median, minimum, spread, MB/s of ``size`` bytes (a column
    with ``rate``, blank without ``size``), peak RSS, CPU time (with ``cpu``) and each run's
    seconds (to ``places`` decimals); under it, what the columns mean (``rate_note``: the MB/s
    column's)."""
    width = max(len(t.label) for t in timings)
    head = f"{'MB/s' if size is not None else '':>6} " if rate else ""
    cpu_head = f" {'CPU':>7}" if cpu else ""
    print(f"  {'variant':<{width}} {'runs':>4} {'median':>9} {'min':>9} {'spread':>7} {head}"
          f"{'peak RSS':>10}{cpu_head}  each run (s)")  # fmt: skip
    for t in timings:
        speed = ""
        if rate:
            speed = f"{size / t.median / 1e6:6.0f} " if size is not None else " " * 7
        cpu_time = f" {t.cpu}" if cpu else ""
        flag = "  noisy" if t.spread > NOISY else ""
        each = " ".join(f"{x:.{places}f}" for x in t.seconds)
        print(f"  {t.label:<{width}} {len(t.seconds):>4} {t.median:8.3f}s {t.best:8.3f}s "
              f"{t.spread:7.0%} {speed}{t.rss}{cpu_time}  {each}{flag}")  # fmt: skip
    notes = [f"spread = (max - min) / median, 'noisy' above {NOISY:.0%}"]
    if rate:
        notes.append(rate_note)
    notes.append("peak RSS the largest of the runs")
    if cpu:
        notes.append("CPU = user + system, median")
    print(f"  ({'; '.join(notes)})")


def output(argv: Sequence[str]) -> str:
    """What a command prints (stdout, else stderr), or why it could not run."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
    except OSError as exc:
        return f"unavailable ({exc.strerror})"
    return (done.stdout or done.stderr).strip()


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def cpu_times() -> tuple[int, int]:
    """(all, idle) CPU time so far, from /proc/stat."""
    with open("/proc/stat", encoding="ascii") as f:
        ticks = [int(x) for x in f.readline().split()[1:9]]
    return sum(ticks), ticks[3] + ticks[4]  # idle + iowait


def process_ticks() -> dict[int, tuple[str, int]]:
    """CPU ticks (user + system) used so far by every process, with its name."""
    ticks: dict[int, tuple[str, int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", encoding="utf-8", errors="replace") as f:
                text = f.read()
        except OSError:
            continue
        name = text[text.find("(") + 1 : text.rfind(")")]
        fields = text[text.rfind(")") + 2 :].split()
        ticks[int(entry.name)] = (name, int(fields[11]) + int(fields[12]))
    return ticks


def print_load() -> None:
    """Other work on the machine skews every number: measure how busy it is while this bench
    (and its Azurite) do nothing for a second, and name the busiest processes."""
    total0, idle0 = cpu_times()
    before = process_ticks()
    time.sleep(1.0)
    total1, idle1 = cpu_times()
    after = process_ticks()
    busy = 1 - (idle1 - idle0) / max(total1 - total0, 1)
    note = ""
    if busy > 0.15:
        hz = os.sysconf("SC_CLK_TCK")
        used = sorted(
            ((t - before.get(pid, (n, t))[1], n, pid) for pid, (n, t) in after.items()),
            reverse=True,
        )
        top = ", ".join(f"{n} (pid {pid}) {d / hz:.0%}" for d, n, pid in used[:3] if d > 0)
        note = f"  BUSY, expect noise; busiest: {top or 'kernel threads'}"
    print(
        f"  CPUs {busy:.0%} busy while this bench idled 1 s; load average {load()}{note}",
        flush=True,
    )


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def short_path(path: str, repo: Path) -> str:
    """A source file's path as a profile shows it: from ``repo``, from site-packages, or from
    the standard library (``<frozen ...>`` and unknown places as they are)."""
    if path.startswith("<frozen"):
        return path
    for marker in ("/site-packages/", "/lib/python3", str(repo) + "/"):
        if marker in path:
            tail = path.split(marker, 1)[1]
            return tail.split("/", 1)[1] if marker == "/lib/python3" else tail
    return path


def print_ratio_header(title: str, width: int = 66) -> None:
    print(f"{title:<{width + 2}} {'medians':>8} {'minima':>8}")


def print_ratio(
    name: str, num: Measured, den: Measured, target: str | None = None, width: int = 66
) -> None:
    """``num / den`` of the medians (judged against ``target``) and, for the noise, of the minima.

    A throughput ratio is a ratio of times upside down: pass the times the other way round.
    """
    value, best = num.median / den.median, num.best / den.best
    verdict = ""
    if target is not None:
        op, bound = target.split()
        ok = value >= float(bound) if op == ">=" else value <= float(bound)
        verdict = f"target {op} {bound}x: {'met' if ok else 'MISSED'}"
    print(f"  {name:<{width}} {value:7.2f}x {best:7.2f}x  {verdict}".rstrip())


def print_difference(
    name: str, num: Measured, den: Measured, unit: str = "ms", scale: float = 1e3, width: int = 66
) -> None:
    """``num - den`` of the medians and of the minima, in ``unit`` (seconds times ``scale``),
    in the columns of :func:`print_ratio`."""
    value, best = (num.median - den.median) * scale, (num.best - den.best) * scale
    places = (
        2 if max(abs(value), abs(best)) < 100 else 1 if max(abs(value), abs(best)) < 1000 else 0
    )
    print(f"  {name:<{width}} {value:6.{places}f}{unit:<2} {best:6.{places}f}{unit:<2}")


def report_anomalies(problems: Sequence[str], clean: str) -> int:
    """Print the anomalies a bench met, else ``clean`` (what held, to say so); the exit code."""
    if problems:
        print(f"{len(problems)} ANOMALIES:")
        for text in problems:
            print(f"  - {text}")
        return 1
    print(clean)
    return 0


def run_main(main: Callable[[], int]) -> NoReturn:
    """Exit with ``main()``; Ctrl-C ends it with one line and 130."""
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        sys.exit(130)
