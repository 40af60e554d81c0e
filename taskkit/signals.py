"""Signals turned into exceptions for the length of a block, so that what the block was doing
unwinds in order (its ``finally`` clauses and cleanup run) instead of the process dying on
the spot. Used by ``taskkit run`` (the attempt ends in order), by ``taskkit stage`` and
``upload`` (SIGTERM/SIGHUP as Ctrl-C), and by ``taskkit local run`` (every task killed, the
report written)."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterable, Iterator

__all__ = ["raising"]


@contextlib.contextmanager
def raising(signums: Iterable[int], make: Callable[[int], BaseException]) -> Iterator[None]:
    """While the block runs, each of ``signums`` raises ``make(signum)`` in the main thread;
    the handlers are as they were afterwards. Off the main thread (where Python cannot set a
    handler) nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: object) -> None:
        raise make(signum)

    previous = {signum: signal.signal(signum, handler) for signum in signums}
    try:
        yield
    finally:
        for signum, before in previous.items():
            signal.signal(signum, before)
