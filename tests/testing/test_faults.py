"""Tests for taskkit.testing.faults: FaultyStore and its rules, requests that fail on purpose."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from taskkit.exceptions import (
    Conflict,
    InputNotFound,
    MisuseError,
    SourceChanged,
    TaskkitError,
    TransientError,
)
from taskkit.storage.base import Store
from taskkit.storage.memory import MemoryStore
from taskkit.storage.retry import RetryBudget
from taskkit.storage.stores import Stores
from taskkit.testing import (
    Fault,
    FaultKind,
    FaultyStore,
    Injected,
)


class Naps:
    """A retry budget's sleep that records instead of waiting; ``during`` runs in each pause."""

    def __init__(self) -> None:
        self.sleeps: list[float] = []
        self.during: Callable[[], None] = lambda: None

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.during()

    def budget(self, attempts: int = 3) -> RetryBudget:
        return RetryBudget(attempts=attempts, sleep=self.sleep, uniform=lambda _, high: high)


@pytest.fixture(params=["blob", "memory", "file", pytest.param("azure", marks=pytest.mark.azurite)])
def inner(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Store, str]]:
    """A store to wrap and a key in it: a MemoryStore, fsspec's memory://, a local folder,
    a container on Azurite."""
    if request.param == "blob":
        yield MemoryStore("fake"), "c/rec.json"
        return
    options: dict[str, str] = {}
    if request.param == "memory":
        where = f"memory://faulty-{os.getpid()}-{time.monotonic_ns()}"
    elif request.param == "file":
        where = f"file://{tmp_path}/store"
    else:
        options = request.getfixturevalue("azurite").storage_options()
        where = f"az://{request.getfixturevalue('azurite_container')}"
    with Stores(RetryBudget(attempts=1), options) as stores:
        yield stores.open(f"{where}/rec.json")


@pytest.mark.parametrize(
    ("kind", "op", "cls", "said"),
    [
        ("transient", "load", TransientError, "the service answered HTTP 500 InternalError"),
        ("throttled", "list", TransientError, "the service answered HTTP 503 ServerBusy"),
        ("timeout", "stat", TransientError, "the connection timed out"),
        ("precondition", "put", Conflict, "another writer changed it first (HTTP 412"),
        ("precondition", "read", SourceChanged, "it changed while being read"),
    ],
)
def test_each_kind_fails_as_a_store_fails(
    kind: FaultKind, op: str, cls: type[TaskkitError], said: str
) -> None:
    """A fault is the taskkit error the storage boundary makes of the SDK's: its class, its
    exit code (75, retryable) and a line naming the URL; the request never reached the store."""
    memory = MemoryStore("fake")
    memory.put("c/f", b"data", {})
    file = memory.stat("c/f")
    store = FaultyStore(memory, [Fault.on(op, kind=kind)], retry=RetryBudget(attempts=1))
    requests: dict[str, Callable[[], object]] = {
        "load": lambda: store.load("c/f"),
        "list": lambda: store.list("c/"),
        "stat": lambda: store.stat("c/f"),
        "put": lambda: store.put("c/f", b"new", {}, if_match=file.version),
        "read": lambda: store.read(file, 0, 4),
    }
    with pytest.raises(cls) as caught:
        requests[op]()
    assert type(caught.value) is cls
    assert caught.value.exit_code == 75
    verb = {"put": "write", "list": "list"}.get(op, "read")
    assert str(caught.value).startswith(f"cannot {verb} fake://c/")
    assert said in str(caught.value)
    assert store.injected == [Injected(op, "c/f" if op != "list" else "c/", kind, 1)]
    assert memory.load("c/f") == (b"data", file.version)


def test_injected_faults_are_retried_with_the_budget_and_recorded() -> None:
    """The first two loads fail (a 500, then throttling); the third answers: two waits, every
    request and every fault recorded in order."""
    naps = Naps()
    memory = MemoryStore("fake")
    version = memory.put("c/f", b"x", {})
    rules = [Fault.on("load", nth=1), Fault.on("load", nth=2, kind="throttled")]
    store = FaultyStore(memory, rules, retry=naps.budget())
    assert store.load("c/f") == (b"x", version)
    assert naps.sleeps == [0.5, 1.0]
    assert store.calls == [("load", "c/f")] * 3
    assert store.injected == [
        Injected("load", "c/f", "transient", 1),
        Injected("load", "c/f", "throttled", 2),
    ]


def test_a_lost_reply_lands_then_fails(inner: tuple[Store, str]) -> None:
    """Without retries, a put whose reply is lost is a TransientError to the caller, yet the
    store holds what it wrote."""
    store, key = inner
    faulty = FaultyStore(store, [Fault.on("put", kind="lost_reply")], retry=RetryBudget(attempts=1))
    with pytest.raises(TransientError):
        faulty.put(key, b"landed", {})
    found = store.load(key)
    assert found is not None
    assert found[0] == b"landed"


@pytest.mark.parametrize("condition", ["if_absent", "if_match"])
def test_a_retried_put_whose_reply_was_lost_is_a_success(
    inner: tuple[Store, str], condition: str
) -> None:
    """The first try of a conditional put lands and its reply is lost; the retry meets that
    write, a conflict with itself: put() returns the version of its own bytes (any store)."""
    store, key = inner
    before = store.put(key, b"old", {}) if condition == "if_match" else None
    naps = Naps()
    faulty = FaultyStore(store, [Fault.on("put", kind="lost_reply")], retry=naps.budget())
    version = faulty.put(key, b"mine", {}, if_match=before, if_absent=before is None)
    assert store.load(key) == (b"mine", version)
    assert faulty.calls == [("put", key)] * 2
    assert len(naps.sleeps) == 1


def test_a_retried_put_that_meets_another_writer_is_a_conflict(inner: tuple[Store, str]) -> None:
    """The first try times out before it arrives; while it waits, another writer creates the
    file: the retry's conflict is real, and is raised."""
    store, key = inner
    naps = Naps()
    naps.during = lambda: store.put(key, b"theirs", {})
    faulty = FaultyStore(store, [Fault.on("put", kind="timeout")], retry=naps.budget())
    with pytest.raises(Conflict):
        faulty.put(key, b"mine", {}, if_absent=True)
    found = store.load(key)
    assert found is not None
    assert found[0] == b"theirs"


def test_a_retried_delete_and_append_whose_replies_were_lost_are_done_once(
    inner: tuple[Store, str],
) -> None:
    """A conditional delete that landed is a success when the retry finds the file gone; an
    append that landed is not made twice."""
    store, key = inner
    naps = Naps()
    rules = [Fault.on("delete", kind="lost_reply"), Fault.on("append", nth=2, kind="lost_reply")]
    faulty = FaultyStore(store, rules, retry=naps.budget())
    faulty.delete(key, if_match=store.put(key, b"one", {}))
    assert store.load(key) is None
    faulty.append(key, 0, b"ab")
    faulty.append(key, 2, b"cd")
    found = store.load(key)
    assert found is not None
    assert found[0] == b"abcd"
    assert len(naps.sleeps) == 2


def test_errors_of_the_inner_store_pass_unchanged_and_are_not_retried_again() -> None:
    """The wrapped store's own errors (a missing file; a failure it already retried) reach the
    caller after one request: only injected faults are retried by the wrapper."""
    naps = Naps()
    below = FaultyStore(MemoryStore("fake"), [Fault.on("load")], retry=RetryBudget(attempts=1))
    faulty = FaultyStore(below, retry=naps.budget())
    with pytest.raises(InputNotFound):
        faulty.stat("c/none")
    with pytest.raises(TransientError):
        faulty.load("c/none")
    assert faulty.calls == [("stat", "c/none"), ("load", "c/none")]
    assert naps.sleeps == []


def test_rules_count_the_requests_of_their_operation_and_keys() -> None:
    """nth counts only the requests of the rule's op on keys under its prefix; "*" counts
    every request."""
    memory = MemoryStore("fake")
    rules = [Fault.on("put", nth=2, key="c/b"), Fault.on("*", nth=5)]
    faulty = FaultyStore(memory, rules, retry=RetryBudget(attempts=1))
    outcomes = []
    for key in ("c/a1", "c/b1", "c/a2", "c/b2", "c/a3"):
        try:
            faulty.put(key, b"x", {})
        except TransientError:
            outcomes.append(key)
    assert outcomes == ["c/b2", "c/a3"]
    assert [(i.key, i.call) for i in faulty.injected] == [("c/b2", 4), ("c/a3", 5)]


def test_a_seed_draws_the_same_faults_for_the_same_requests() -> None:
    """Probabilistic rules draw from the seeded source: the same seed fails the same
    requests, another seed others; about the chance given fail."""

    def failures(seed: int) -> list[int]:
        faulty = FaultyStore(
            MemoryStore("fake"), [Fault.sometimes("load", 0.3)], seed=seed,
            retry=RetryBudget(attempts=1),
        )  # fmt: skip
        for n in range(200):
            with contextlib.suppress(TransientError):
                faulty.load(f"c/{n}")
        return [int(i.key[2:]) for i in faulty.injected]

    first = failures(1)
    assert failures(1) == first
    assert failures(2) != first
    assert 30 <= len(first) <= 90


def test_a_writer_fails_its_blocks_and_commit_without_retrying() -> None:
    """A block that fails is not stored and not retried; a commit whose reply is lost
    publishes the file, and the caller hears of a failure."""
    memory = MemoryStore("fake")
    rules = [Fault.on("write", kind="throttled"), Fault.on("commit", kind="lost_reply")]
    faulty = FaultyStore(memory, rules, retry=Naps().budget())
    writer = faulty.writer("c/big")
    assert writer.parallel
    with pytest.raises(TransientError):
        writer.write("b1", b"one")
    assert writer.known() == frozenset()
    writer.write("b1", b"one")
    with pytest.raises(TransientError):
        writer.commit(["b1"], {})
    assert memory.data("c/big") == b"one"
    assert faulty.calls == [("write", "c/big"), ("write", "c/big"), ("commit", "c/big")]


@pytest.mark.parametrize(
    "rule",
    [
        {"op": "rename", "nth": 1},
        {"op": "put", "kind": "gone", "nth": 1},
        {"op": "put", "nth": 0},
        {"op": "put", "probability": 1.5},
        {"op": "put", "nth": 1, "probability": 0.5},
        {"op": "put"},
    ],
)
def test_a_rule_that_cannot_be_is_misuse(rule: dict[str, Any]) -> None:
    """An unknown op or kind, nth below 1, a probability outside [0, 1], or both or neither
    of nth and probability: MisuseError (70) when the rule is made."""
    with pytest.raises(MisuseError) as caught:
        Fault(**rule)
    assert caught.value.exit_code == 70


def test_it_serves_a_run_when_mounted() -> None:
    """Mounted in Stores, the wrapped MemoryStore answers URLs; the docstring's example."""
    memory = MemoryStore("fake")
    naps = Naps()
    faulty = FaultyStore(memory, [Fault.on("put", nth=1, kind="lost_reply")], retry=naps.budget())
    with Stores(mounts={"fake://": faulty}) as stores:
        store, key = stores.open("fake://c/outcome.json")
        version = store.put(key, b"{}", {}, if_absent=True)
    assert faulty.injected == [Injected("put", "c/outcome.json", "lost_reply", 1)]
    assert memory.load("c/outcome.json") == (b"{}", version)
