"""A task function's ``deadline``: the function is stopped where it is when its time is up.

Python cannot stop a thread from outside, so the deadline is a ``SIGALRM`` timer whose handler
raises :class:`DeadlineReached` in the function: only in the main thread, and only when nothing
else uses ``SIGALRM`` (pytest-timeout's signal method works the same way). Elsewhere the
deadline is not enforced, and one note says so.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

from taskkit.exceptions import TransientError
from taskkit.observer import Observer

__all__ = ["DeadlineReached", "deadline"]


class DeadlineReached(TransientError):
    """A task function ran past its ``deadline`` (retryable, as ``taskkit run``'s 205)."""

    run_code = 205


@contextlib.contextmanager
def deadline(seconds: float | None, observer: Observer, name: str = "") -> Iterator[None]:
    """Raise :class:`DeadlineReached` in the function when it runs past ``seconds``: by
    SIGALRM, so only in the main thread and when nothing else uses SIGALRM (else one note)."""
    if seconds is None:
        yield
        return
    usable = threading.current_thread() is threading.main_thread() and signal.getsignal(
        signal.SIGALRM
    ) in (signal.SIG_DFL, signal.SIG_IGN, None)
    if not usable:
        observer.note(
            f"{name}: deadline not enforced: it needs the main thread and SIGALRM to itself"
            if name
            else "deadline not enforced: it needs the main thread and SIGALRM to itself"
        )
        yield
        return

    def reached(signum: int, frame: object) -> None:
        raise DeadlineReached(f"the deadline of {seconds:g} s was reached")

    previous = signal.signal(signal.SIGALRM, reached)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
