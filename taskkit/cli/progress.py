"""Progress of a transfer: a bar on a terminal, plain periodic lines anywhere else.

On a terminal the bar is redrawn in place a few times a second. Elsewhere (Batch's stderr.txt,
a CI log) one plain line is written every ``interval`` seconds, so a log shows how far a task
got without drowning in carriage returns. Counts are updated from worker threads; drawing
happens on one reporter thread.

The bar is drawn here, not by rich or tqdm: importing either, even only on a terminal, adds
25-45 ms of CPU to a start-up of about 130 ms (measured for issue 12), for a one-line bar.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import IO

from taskkit.periodic import Periodic
from taskkit.transfer.summary import format_size

__all__ = ["Progress"]

_BAR = 24


class Progress:
    """Bytes and files done out of a known total. Use as a context manager around the work."""

    def __init__(
        self,
        total_bytes: int,
        total_files: int,
        stream: IO[str],
        *,
        tty: bool,
        interval: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        doing: str = "staging",
    ) -> None:
        self.total_bytes = total_bytes
        self.total_files = total_files
        self.stream = stream
        self.tty = tty
        self.interval = 0.2 if tty else interval
        self.clock = clock
        self.doing = doing
        self.bytes = 0
        self.files = 0
        self._lock = threading.Lock()
        self._every = Periodic(self.interval, self._draw, "taskkit-progress")
        self._started = clock()
        self._drawn = False

    def add_bytes(self, n: int, reused: bool = False) -> None:
        with self._lock:
            self.bytes += n

    def file_done(self, *_: object) -> None:
        with self._lock:
            self.files += 1

    def line(self) -> str:
        with self._lock:
            done, files = self.bytes, self.files
        elapsed = max(self.clock() - self._started, 1e-9)
        share = done / self.total_bytes if self.total_bytes else 1.0
        text = (
            f"{format_size(done)} of {format_size(self.total_bytes)}, "
            f"{files}/{self.total_files} files, {format_size(done / elapsed)}/s"
        )
        if self.tty:
            filled = int(share * _BAR)
            return f"[{'#' * filled}{'.' * (_BAR - filled)}] {share:4.0%} {text}"
        return f"taskkit: {self.doing}: {text}"

    def _draw(self) -> None:
        if self.tty:
            self.stream.write(f"\r\x1b[K{self.line()}")
        else:
            self.stream.write(f"{self.line()}\n")
        self.stream.flush()
        self._drawn = True

    def __enter__(self) -> Progress:
        self._every.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._every.stop()
        if self.tty and self._drawn:
            self._draw()
            self.stream.write("\n")
            self.stream.flush()
