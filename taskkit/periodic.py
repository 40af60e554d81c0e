"""Something done every few seconds on a thread of its own: log uploads, heartbeats, checkpoint
syncs, progress lines.

Invariant: :meth:`Periodic.stop` returns only once the thread is gone, so a final, explicit
call of the action afterwards (the last upload, the attempt's end) never races a periodic one.
The thread waits on an event, not a sleep, so stopping is immediate.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

__all__ = ["Periodic"]


class Periodic:
    """Call ``action`` every ``interval`` seconds between :meth:`start` and :meth:`stop`.

    ``action`` is the caller's to guard: an exception it raises ends the thread.
    """

    def __init__(self, interval: float, action: Callable[[], object], name: str) -> None:
        self.interval = interval
        self.action = action
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def __repr__(self) -> str:
        return f"Periodic({self.interval!r}, {self._thread.name!r})"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop, and wait for a call under way to end. Safe before :meth:`start`, and twice."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.action()
