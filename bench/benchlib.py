"""What the benchmarks in bench/ share: reading the machine (and how busy it is), and printing
ratios to anchors."""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import time
from collections.abc import Sequence
from typing import Protocol


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
