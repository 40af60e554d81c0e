"""What the benchmarks in bench/ share: reading the machine, and printing ratios to anchors."""

from __future__ import annotations

import platform
import statistics
import subprocess
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
