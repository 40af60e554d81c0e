"""Where the things of a call are: the state of its records, the stores it talks through, its
local folder; and the pool of stores the calls of one process share.

A call's state is its task's ``state=``, else the calling task's, else ``TASKKIT_STATE``,
else the state folder of local mode (``TASKKIT_LOCAL``, default ``.taskkit``, then ``state/``),
named in one log line the first time it is used. Its stores and observer are the ones given,
else the calling task's, else the process's pool and the ``"taskkit"`` logger. Its staged inputs
and checkpoint directories live under ``$AZ_BATCH_TASK_DIR/taskkit/calls/`` on a Batch node,
else under the local folder's ``calls/``.

Invariants: the environment is read, never copied (a copy of ``os.environ`` per call costs more
than a hit); a forked child never uses its parent's pool; nothing here writes.
"""

from __future__ import annotations

import atexit
import os
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from taskkit.envnames import DEFAULT_LOCAL_DIR, LOCAL_VARIABLE
from taskkit.function.context import CallContext, current
from taskkit.function.plan import Calls
from taskkit.observer import Observer, observer_or_default
from taskkit.redaction import shown_url
from taskkit.runner.local import LocalNode
from taskkit.storage.stores import Stores

if TYPE_CHECKING:
    from taskkit.function.spec import TaskSpec

__all__ = ["POOL", "Pool", "default_state", "local_node", "resolve_state", "resources", "scratch"]

_said_state: set[str] = set()
_said_lock = threading.Lock()


class Pool:
    """The stores calls share when none are given, one set per process (a forked child makes
    its own), as an HTTP client shares its connections; closed when the process exits. And
    where each state's records are, in those stores: opening a URL costs more than a hit."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pid = 0
        self._stores: Stores | None = None
        self._calls: dict[str, Calls] = {}

    def stores(self) -> Stores:
        with self._lock:
            if self._stores is None or self._pid != os.getpid():
                if self._stores is None:
                    atexit.register(self.close)
                self._stores, self._pid, self._calls = Stores(), os.getpid(), {}
            return self._stores

    def calls(self, stores: Stores, state: str) -> Calls:
        if stores is not self._stores:
            return Calls.open(stores, state)
        with self._lock:
            found = self._calls.get(state)
        if found is None:
            found = Calls.open(stores, state)
            with self._lock:
                self._calls[state] = found
        return found

    def close(self) -> None:
        with self._lock:
            stores, self._stores = self._stores, None
        if stores is not None and self._pid == os.getpid():
            stores.close()


POOL = Pool()


_anchored: dict[str, str] = {}


def local_node(environ: Mapping[str, str]) -> LocalNode:
    """The local-mode node of this machine: ``$TASKKIT_LOCAL``, else ``.taskkit``; a relative
    one is taken from the current directory the first time this process asks, so a program
    that changes directory between calls keeps one node (and one state)."""
    named = environ.get(LOCAL_VARIABLE) or DEFAULT_LOCAL_DIR
    with _said_lock:
        anchored = _anchored.setdefault(named, os.path.abspath(os.path.expanduser(named)))
    return LocalNode.at(anchored)


def default_state(environ: Mapping[str, str]) -> str:
    """``TASKKIT_STATE``, else the state of the local-mode node (``.taskkit/state``)."""
    return environ.get("TASKKIT_STATE", "").strip() or local_node(environ).state_url


def scratch(environ: Mapping[str, str]) -> Path:
    """Where calls keep their staged inputs and checkpoint directories on this machine."""
    task_dir = environ.get("AZ_BATCH_TASK_DIR")
    if task_dir:
        return Path(task_dir) / "taskkit" / "calls"
    return local_node(environ).root / "calls"


def resolve_state(
    task: TaskSpec,
    environ: Mapping[str, str],
    parent: CallContext | None,
    told: Observer,
    given: str | None = None,
    *,
    say: bool = True,
) -> str:
    """``given`` (a caller's choice: ``taskkit call --state``), else the task's ``state=``,
    else the calling task's state (a nested call keeps its records beside its caller's), else
    ``TASKKIT_STATE``, else the local node's (said once, unless not ``say``: a plan's)."""
    if given:
        return given
    if task.options.state:
        return task.options.state
    if parent is not None:
        return parent.state
    state = default_state(environ)
    if say and not environ.get("TASKKIT_STATE", "").strip():
        # Named when it is made, once a process: where results went should be no surprise.
        # Asked once per state (the folder's stat is no cost for every call to pay).
        with _said_lock:
            known = state in _said_state
            _said_state.add(state)
        if not known and not local_node(environ).state_dir.exists():
            told.note(
                f"results of task functions are kept in {shown_url(state)} (set "
                "TASKKIT_STATE or state= to choose)"
            )
    return state


def resources(
    stores: Stores | None, observer: Observer | None, environ: Mapping[str, str] | None
) -> tuple[Stores, Observer, Mapping[str, str], CallContext | None]:
    """The stores, observer and environment of a call: given, else the calling task's, else
    the process's (:data:`POOL`)."""
    parent = current()
    # Read, never copied: a copy of os.environ per call would cost more than a hit.
    env = environ if environ is not None else parent.environ if parent else os.environ
    told = observer_or_default(observer or (parent.observer if parent else None))
    if stores is None:
        stores = parent.stores if parent else POOL.stores()
    return stores, told, env, parent
