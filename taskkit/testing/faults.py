"""A store that fails on purpose: :class:`FaultyStore` and its rules, :class:`Fault`.

:class:`FaultyStore` wraps any store (a :class:`~taskkit.storage.memory.MemoryStore`, a local
folder, Azurite) and makes chosen requests fail as the network and the service make them fail:
5xx answers, timeouts, throttling, a reply lost after the write landed, a failed precondition.

Invariants:

- A fault is an upstream error translated by the storage boundary's own
  :func:`~taskkit.storage.errors.translate`, so callers meet exactly the error a real store
  raises; every fault injected is recorded.
- Only injected faults are retried here (with the store's budget); the inner store's own errors
  pass unchanged, already retried by it. Closing a :class:`FaultyStore` leaves its inner store open.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, NamedTuple, TypeVar, get_args

from taskkit.exceptions import Conflict, MisuseError, SourceChanged, TaskkitError
from taskkit.storage.base import RemoteFile, Store, Writer, is_conditional
from taskkit.storage.errors import translate

if TYPE_CHECKING:
    from taskkit.storage.retry import RetryBudget

__all__ = [
    "OPERATIONS",
    "Fault",
    "FaultKind",
    "FaultyStore",
    "Injected",
    "Operation",
]

_T = TypeVar("_T")

#: How a request fails: a 500 answer; a timeout before the request reached the service;
#: throttling (Azure Storage's 503 ServerBusy: taskkit's retry waits its own backoff, it does
#: not read Retry-After); a reply lost after the request took effect; a failed precondition
#: (412: :class:`~taskkit.exceptions.Conflict` for a put or delete, a changed source for a read).
FaultKind = Literal["transient", "timeout", "throttled", "lost_reply", "precondition"]
#: The requests a rule can name (``"*"``: any). ``write`` and ``commit`` are a writer's;
#: ``has_files`` is a ``list``, ``confirm`` a ``stat``.
Operation = Literal[
    "list", "stat", "read", "load", "put", "delete", "append", "write", "commit", "*"
]
OPERATIONS: tuple[str, ...] = get_args(Operation)


@dataclass(frozen=True)
class Fault:
    """One rule of a :class:`FaultyStore`: which requests of ``op`` fail, and how.

    ``nth``: the nth request of ``op`` (every try counts, retries too) fails, once;
    ``probability``: each request fails with that chance, drawn from the store's seeded
    random source. ``key``: only requests for keys starting with it count. ``error``: an
    upstream exception to raise instead of the kind's own (translated as a store would).
    """

    op: Operation
    kind: FaultKind = "transient"
    nth: int | None = None
    probability: float = 0.0
    key: str = ""
    error: BaseException | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if self.op not in OPERATIONS:
            raise MisuseError(f"a fault's op is one of {', '.join(OPERATIONS)}, not {self.op!r}")
        if self.kind not in get_args(FaultKind):
            raise MisuseError(f"a fault's kind is one of {get_args(FaultKind)}, not {self.kind!r}")
        if self.nth is not None and (isinstance(self.nth, bool) or self.nth < 1):
            raise MisuseError(f"nth counts from 1, not {self.nth!r}")
        if not 0.0 <= self.probability <= 1.0:
            raise MisuseError(f"a probability is from 0 to 1, not {self.probability!r}")
        if (self.nth is None) == (self.probability == 0.0):
            raise MisuseError("a fault has either nth or a probability")

    @classmethod
    def on(
        cls,
        op: Operation,
        *,
        nth: int = 1,
        kind: FaultKind = "transient",
        key: str = "",
        error: BaseException | None = None,
    ) -> Fault:
        """The ``nth`` request of ``op`` fails as ``kind``."""
        return cls(op, kind, nth=nth, key=key, error=error)

    @classmethod
    def sometimes(
        cls,
        op: Operation,
        probability: float,
        *,
        kind: FaultKind = "transient",
        key: str = "",
        error: BaseException | None = None,
    ) -> Fault:
        """Each request of ``op`` fails as ``kind`` with ``probability``."""
        return cls(op, kind, probability=probability, key=key, error=error)

    def covers(self, op: str, key: str) -> bool:
        return self.op in ("*", op) and key.startswith(self.key)


class Injected(NamedTuple):
    """A fault a :class:`FaultyStore` injected: into the ``call``-th request of ``op``."""

    op: str
    key: str
    kind: FaultKind
    call: int


def _upstream(kind: FaultKind) -> BaseException:
    """The exception the Azure SDK raises for ``kind``."""
    from azure.core.exceptions import (
        HttpResponseError,
        ServiceRequestTimeoutError,
        ServiceResponseTimeoutError,
    )

    if kind == "timeout":
        return ServiceRequestTimeoutError("the connection timed out (injected)")
    if kind == "lost_reply":
        return ServiceResponseTimeoutError("the read timed out (injected)")
    status, code = {"transient": (500, "InternalError"), "throttled": (503, "ServerBusy")}.get(
        kind, (412, "ConditionNotMet")
    )
    exc = HttpResponseError(message=f"{code} (injected)")
    exc.status_code = status
    exc.error_code = code  # type: ignore[attr-defined]
    return exc


class FaultyStore(Store):
    """``inner`` with requests failing by ``rules``, for testing what a caller does then.

    Each request (a try: a retry is a request too) is counted per rule; the first rule that
    fires makes it fail, by raising what the storage boundary makes of the upstream error
    (:func:`~taskkit.storage.errors.translate`). A ``lost_reply`` lets the request reach
    ``inner`` first, so the write has landed when the caller hears of a failure. Injected
    faults are retried with ``retry`` (by default ``inner``'s budget), as a store retries
    what it meets, so a put whose reply was lost is retried and succeeds on meeting its own
    write (:meth:`Store.put`); errors of ``inner`` itself pass unchanged, already retried.
    A writer's ``write`` and ``commit`` are not retried: the caller sees the fault.

    Every request is recorded in :attr:`calls` as ``(op, key)``, every fault in
    :attr:`injected`. Safe from any thread; ``seed`` makes the probabilistic rules draw the
    same faults for the same order of requests. Closing it leaves ``inner`` open.

    Example::

        from taskkit.storage.memory import MemoryStore
        from taskkit.storage.retry import RetryBudget
        from taskkit.storage.stores import Stores
        from taskkit.testing import Fault, FaultyStore, Injected

        memory = MemoryStore("fake")
        faulty = FaultyStore(memory, [Fault.on("put", nth=1, kind="lost_reply")],
                             retry=RetryBudget(sleep=lambda s: None))
        with Stores(mounts={"fake://": faulty}) as stores:
            store, key = stores.open("fake://c/outcome.json")
            version = store.put(key, b"{}", {}, if_absent=True)  # landed, lost, retried
        assert faulty.injected == [Injected("put", "c/outcome.json", "lost_reply", 1)]
        assert memory.load("c/outcome.json") == (b"{}", version)
    """

    def __init__(
        self,
        inner: Store,
        rules: Sequence[Fault] = (),
        *,
        seed: int = 0,
        retry: RetryBudget | None = None,
    ) -> None:
        super().__init__(retry or inner.retry)
        self.inner = inner
        self.protocol = inner.protocol
        self.rules = tuple(rules)
        self.calls: list[tuple[str, str]] = []
        self.injected: list[Injected] = []
        self._random = random.Random(seed)
        self._counts = [0] * len(self.rules)
        self._ops: dict[str, int] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"FaultyStore({self.inner!r}, {len(self.rules)} rules)"

    def _draw(self, op: str, key: str) -> Fault | None:
        """Count a request of ``op`` on ``key``; the rule that makes it fail, if one does."""
        with self._lock:
            self.calls.append((op, key))
            self._ops[op] = call = self._ops.get(op, 0) + 1
            chosen = None
            for n, rule in enumerate(self.rules):
                if not rule.covers(op, key):
                    continue
                self._counts[n] += 1
                fires = (
                    self._counts[n] == rule.nth
                    if rule.nth is not None
                    else self._random.random() < rule.probability
                )
                if fires and chosen is None:
                    chosen = rule
            if chosen is not None:
                self.injected.append(Injected(op, key, chosen.kind, call))
            return chosen

    def _once(
        self, op: str, key: str, action: Callable[[], _T], what: str, raised: list[object]
    ) -> _T:
        """One request: ``action`` unless a rule makes it fail (after it, for a lost reply)."""
        fault = self._draw(op, key)
        if fault is not None and fault.kind != "lost_reply":
            self._fail(fault, op, what, raised)
        result = action()
        if fault is not None:
            self._fail(fault, op, what, raised)
        return result

    def _fail(self, fault: Fault, op: str, what: str, raised: list[object]) -> None:
        upstream = fault.error if fault.error is not None else _upstream(fault.kind)
        failure: BaseException | None = translate(
            upstream, what, conditional=op in ("put", "delete")
        )
        if failure is None:
            failure = upstream
        raised.append(failure)
        raise failure from (None if failure is upstream else upstream)

    def _run(self, op: str, key: str, action: Callable[[], _T], what: str) -> _T:
        """``action`` as one request with its retries; only injected faults are retried."""
        raised: list[object] = []

        def injected(exc: TaskkitError) -> bool:
            # As Store.call: a Conflict or a changed source would be met again.
            seen = any(exc is failure for failure in raised)
            return seen and not isinstance(exc, (Conflict, SourceChanged))

        return self.retry.call(lambda: self._once(op, key, action, what, raised), what, injected)

    def url(self, key: str) -> str:
        return self.inner.url(key)

    def identity(self, key: str) -> str:
        return self.inner.identity(key)

    def list(self, key: str) -> list[RemoteFile]:
        return self._run("list", key, lambda: self.inner.list(key), f"cannot list {self.url(key)}")

    def has_files(self, key: str) -> bool:
        what = f"cannot list {self.url(key)}"
        return self._run("list", key, lambda: self.inner.has_files(key), what)

    def stat(self, key: str) -> RemoteFile:
        return self._run("stat", key, lambda: self.inner.stat(key), f"cannot read {self.url(key)}")

    def read(self, file: RemoteFile, offset: int, length: int) -> bytes:
        what = f"cannot read {file.url}"
        return self._run("read", file.key, lambda: self.inner.read(file, offset, length), what)

    def confirm(self, file: RemoteFile) -> None:
        self._run("stat", file.key, lambda: self.inner.confirm(file), f"cannot read {file.url}")

    def load(self, key: str) -> tuple[bytes, str] | None:
        return self._run("load", key, lambda: self.inner.load(key), f"cannot read {self.url(key)}")

    def put(
        self,
        key: str,
        data: bytes,
        metadata: Mapping[str, str],
        *,
        if_match: str | None = None,
        if_absent: bool = False,
    ) -> str:
        what = f"cannot write {self.url(key)}"
        conditional = is_conditional(if_match, if_absent)

        def attempt() -> str:
            return self.inner.put(key, data, metadata, if_match=if_match, if_absent=if_absent)

        if not conditional:
            return self._run("put", key, attempt, what)
        return self._settle(
            lambda a: self._run("put", key, a, what),
            attempt,
            lambda: self.inner._holding(key, data),
        )

    def delete(self, key: str, *, if_match: str | None = None) -> None:
        what = f"cannot delete {self.url(key)}"
        if not is_conditional(if_match, False):
            return self._run("delete", key, lambda: self.inner.delete(key), what)

        def attempt() -> bool:
            self.inner.delete(key, if_match=if_match)
            return True

        self._settle(
            lambda a: self._run("delete", key, a, what), attempt, lambda: self.inner._gone(key)
        )
        return None

    def append(self, key: str, offset: int, data: bytes) -> None:
        what = f"cannot write {self.url(key)}"
        self._run("append", key, lambda: self.inner.append(key, offset, data), what)

    def writer(self, key: str) -> Writer:
        return _FaultyWriter(self, key, self.inner.writer(key))


class _FaultyWriter(Writer):
    """A writer of a :class:`FaultyStore`: its blocks and its commit are requests too."""

    def __init__(self, store: FaultyStore, key: str, inner: Writer) -> None:
        self.store = store
        self.key = key
        self.inner = inner
        self.parallel = inner.parallel
        self.what = f"cannot write {store.url(key)}"

    def known(self) -> frozenset[str]:
        return self.inner.known()

    def write(self, block_id: str, data: bytes) -> None:
        self.store._once("write", self.key, lambda: self.inner.write(block_id, data), self.what, [])

    def commit(self, block_ids: Sequence[str], metadata: Mapping[str, str]) -> str:
        action = lambda: self.inner.commit(block_ids, metadata)  # noqa: E731
        return self.store._once("commit", self.key, action, self.what, [])

    def abort(self) -> None:
        self.inner.abort()
