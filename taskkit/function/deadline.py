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
import time
from collections.abc import Iterator

from taskkit.exceptions import TransientError
from taskkit.observer import Observer

__all__ = ["DeadlineReached", "deadline"]


class DeadlineReached(TransientError):
    """A task function ran past its ``deadline`` (retryable, as ``taskkit run``'s 205)."""

    run_code = 205


class _Reached:
    """The SIGALRM handler of one deadline (told apart from anyone else's handler, so a task
    inside a task can arm the nearer of the two deadlines and give the outer one back)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def __call__(self, signum: int, frame: object) -> None:
        raise DeadlineReached(f"the deadline of {self.seconds:g} s was reached")


@contextlib.contextmanager
def deadline(seconds: float | None, observer: Observer, name: str = "") -> Iterator[None]:
    """Raise :class:`DeadlineReached` in the function when it runs past ``seconds``: by
    SIGALRM, so only in the main thread and when nothing else uses SIGALRM (else one note).
    Inside another task's deadline the nearer one is armed, and the outer one, less the time
    spent, is put back after."""
    if seconds is None:
        yield
        return
    previous = signal.getsignal(signal.SIGALRM)
    outer = previous if isinstance(previous, _Reached) else None
    usable = threading.current_thread() is threading.main_thread() and (
        outer is not None or previous in (signal.SIG_DFL, signal.SIG_IGN, None)
    )
    if not usable:
        observer.note(
            f"{name}: deadline not enforced: it needs the main thread and SIGALRM to itself"
            if name
            else "deadline not enforced: it needs the main thread and SIGALRM to itself"
        )
        yield
        return
    left = signal.getitimer(signal.ITIMER_REAL)[0] if outer is not None else 0.0
    began = time.monotonic()
    handler = outer if outer is not None and 0 < left < seconds else _Reached(seconds)
    signal.signal(signal.SIGALRM, handler)
    signal.setitimer(signal.ITIMER_REAL, min(seconds, left) if left > 0 else seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        if outer is not None and left > 0:  # the outer deadline goes on, less this call
            signal.setitimer(signal.ITIMER_REAL, max(left - (time.monotonic() - began), 1e-3))
