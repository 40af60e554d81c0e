"""Where a task function stands while it runs: its attempt, whether it is the last, its
checkpoint directory; the same questions answered under ``taskkit run`` from the environment.

Inside a call of a task the answers come from the call (a context variable, so threads and
nested calls each see their own); in a command ``taskkit run`` started they come from the
variables the runner sets (``TASKKIT_ATTEMPT``, ``TASKKIT_LAST_ATTEMPT``,
``TASKKIT_CHECKPOINT_DIR``). Anywhere else asking is a :class:`~taskkit.exceptions.MisuseError`.

A call's checkpoint directory is made, and its last sync restored, only when the function asks
for it, and synced from then on: a call that never asks costs no request.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from taskkit.exceptions import MisuseError
from taskkit.observer import Observer
from taskkit.storage.stores import Stores

if TYPE_CHECKING:
    from taskkit.runner.checkpoint import Checkpoint

__all__ = [
    "CallContext",
    "attempt",
    "checkpoint_dir",
    "current",
    "entered",
    "is_last_attempt",
]

_WHERE = "inside a call of a @taskkit.task function or a command of 'taskkit run'"


@dataclass
class CallContext:
    """One call of a task while its function runs."""

    task: str
    attempt: int
    last: bool
    stores: Stores
    state: str
    observer: Observer
    environ: Mapping[str, str]
    #: Makes the call's checkpoint (restored) when the function first asks for it.
    make_checkpoint: Callable[[], Checkpoint]
    #: The keys of this call and the calls it runs inside (a call of one of them would wait
    #: for itself).
    chain: frozenset[str] = frozenset()
    #: The state a caller chose for the whole call (``taskkit call --state``), passed down.
    given_state: str | None = None
    checkpoint: Checkpoint | None = field(default=None)

    def checkpoint_dir(self) -> Path:
        if self.checkpoint is None:
            self.checkpoint = self.make_checkpoint()
        return Path(self.checkpoint.directory)


_current: contextvars.ContextVar[CallContext | None] = contextvars.ContextVar(
    "taskkit_call", default=None
)


#: The outermost calls running in this process, whatever their thread.
_roots: list[CallContext] = []
_roots_lock = threading.Lock()


def current() -> CallContext | None:
    """The call running in this thread or task, if any; else, in a thread that a call started
    (a ``ThreadPoolExecutor`` fanning out inner calls knows nothing of contexts), the one
    outermost call running in the process, when there is exactly one."""
    found = _current.get()
    if found is not None:
        return found
    with _roots_lock:
        return _roots[0] if len(_roots) == 1 else None


@contextlib.contextmanager
def entered(context: CallContext) -> Iterator[CallContext]:
    """``context`` is the current call inside the block."""
    root = _current.get() is None
    token = _current.set(context)
    if root:
        with _roots_lock:
            _roots.append(context)
    try:
        yield context
    finally:
        _current.reset(token)
        if root:
            with _roots_lock:
                _roots.remove(context)


def checkpoint_dir() -> Path:
    """The directory whose files outlive this attempt: restored on a retry of the same call
    (on any node), synced while the function runs and when it ends."""
    found = current()
    if found is not None:
        return found.checkpoint_dir()
    named = os.environ.get("TASKKIT_CHECKPOINT_DIR")
    if named:
        return Path(named)
    raise MisuseError(f"checkpoint_dir() works {_WHERE}")


def attempt() -> int:
    """Which attempt of this work is running (1 for the first)."""
    found = current()
    if found is not None:
        return found.attempt
    number = os.environ.get("TASKKIT_ATTEMPT", "")
    if number.isdigit():
        return int(number)
    raise MisuseError(f"attempt() works {_WHERE}")


def is_last_attempt() -> bool:
    """Whether no retry follows this attempt if it fails (spend the last try on a fallback)."""
    found = current()
    if found is not None:
        return found.last
    last = os.environ.get("TASKKIT_LAST_ATTEMPT")
    if last in ("0", "1"):
        return last == "1"
    raise MisuseError(f"is_last_attempt() works {_WHERE}")
