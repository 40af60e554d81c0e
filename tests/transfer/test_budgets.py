"""The memory budgets bound the bytes in flight whatever ``jobs`` is: staging's response
budget (taskkit.transfer.download, 48 MiB of ranges being read) and upload's block budget
(taskkit.transfer.upload, 64 MiB of blocks read and not yet sent), counted at the store with ``-j
32``
and many large files.

Counting only shows a bound if requests pile up, so the store holds every request at a
:class:`Gate` and lets the held ones go only once no other request can arrive: every thread
of the transfer (and the one that started it) is held at the gate, waiting on a lock or a
condition (the budget, a slot, a future), or idle in its pool. That is read from the threads'
own stacks, not guessed from time, so the peak is exactly what the code allows: the budget
when it holds, more when it is raised or bypassed.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import FrameType

import pytest
from upload_fakes import FakeStores, Passthrough, PassthroughWriter

from taskkit.content.digest import CHUNK_SIZE
from taskkit.storage.base import RemoteFile, Store, Writer
from taskkit.transfer.patterns import parse_output
from taskkit.transfer.stage import execute as execute_staging
from taskkit.transfer.stage_plan import parse_input
from taskkit.transfer.stage_plan import plan as plan_staging
from taskkit.transfer.upload import execute as execute_upload
from taskkit.transfer.upload_plan import plan as plan_upload

MiB = 1024 * 1024
#: The documented bounds, written out here (not imported) so that raising one is a decision
#: this test must be told of.
STAGING_BUDGET = 48 * MiB
UPLOAD_BUDGET = 64 * MiB
JOBS = 32
#: Four files of three ranges (or blocks) and four of one: more requests than either budget
#: lets through at once, every one of them 8 MiB, so a full budget is exactly full.
SIZES = {f"big{i}.bin": 3 * CHUNK_SIZE for i in range(4)} | {
    f"one{i}.bin": CHUNK_SIZE for i in range(4)
}
#: A gate that cannot settle within this long is a failure of the test's premise.
SETTLE_TIMEOUT = 60.0


def _parked(frame: FrameType | None) -> bool:
    """Whether a thread whose innermost Python frame is ``frame`` is blocked: in a lock or
    condition wait (threading's ``wait``: semaphores, conditions, events, futures), or a
    pool worker waiting for work."""
    if frame is None:
        return True
    code = frame.f_code
    if code.co_name == "wait" and code.co_filename.endswith("threading.py"):
        return True
    return code.co_name == "_worker" and code.co_filename.endswith(
        ("concurrent/futures/thread.py", "concurrent\\futures\\thread.py")
    )


class Gate:
    """Counts the bytes of requests in flight at the store and holds each request until no
    other can arrive (see the module docstring); ``peak`` is the most bytes ever in flight."""

    def __init__(self, starter: int) -> None:
        self.starter = starter  # the thread that runs the transfer
        self.in_flight = 0
        self.peak = 0
        self.peak_requests = 0
        self.released = 0
        self.timed_out = False
        self._requests = 0
        self._held: set[int] = set()
        self._generation = 0
        self._changed = threading.Condition()
        self._stop = threading.Event()
        self._controller = threading.Thread(target=self._control, name="gate", daemon=True)

    def __enter__(self) -> Gate:
        self._controller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._controller.join()

    @contextlib.contextmanager
    def request(self, size: int) -> Iterator[None]:
        me = threading.get_ident()
        with self._changed:
            self.in_flight += size
            self._requests += 1
            self.peak = max(self.peak, self.in_flight)
            self.peak_requests = max(self.peak_requests, self._requests)
            generation = self._generation
            self._held.add(me)
            self._changed.wait_for(lambda: self._generation != generation)
            self._held.discard(me)
        try:
            yield
        finally:
            with self._changed:
                self.in_flight -= size
                self._requests -= 1

    def _settled(self) -> bool:
        """Some request is held and no thread of the transfer can make another one now."""
        with self._changed:
            held = set(self._held)
        if not held:
            return False
        frames = sys._current_frames()
        for thread in threading.enumerate():
            ident = thread.ident
            if ident is None or ident in held:
                continue
            if ident != self.starter and not thread.name.startswith("taskkit-"):
                continue
            if not _parked(frames.get(ident)):
                return False
        return True

    def _control(self) -> None:
        deadline = time.monotonic() + SETTLE_TIMEOUT
        while not self._stop.is_set():
            # Twice in a row: a thread between two waits is not mistaken for a parked one.
            if self._settled() and (self._stop.wait(0.005) or self._settled()):
                self._release()
                deadline = time.monotonic() + SETTLE_TIMEOUT
            elif time.monotonic() > deadline:
                self.timed_out = True
                self._release()
            self._stop.wait(0.002)
        self._release()

    def _release(self) -> None:
        with self._changed:
            if self._held:
                self.released += 1
            self._generation += 1
            self._changed.notify_all()


class Metered(Passthrough):
    """``inner`` with every read, put and block write passed through ``gate``."""

    def __init__(self, inner: Store, gate: Gate) -> None:
        super().__init__(inner)
        self.gate = gate

    def read(self, file: RemoteFile, offset: int, length: int) -> bytes:
        with self.gate.request(length):
            return self.inner.read(file, offset, length)

    def confirm(self, file: RemoteFile) -> None:
        self.inner.confirm(file)

    def put(
        self,
        key: str,
        data: bytes,
        metadata: Mapping[str, str],
        *,
        if_match: str | None = None,
        if_absent: bool = False,
    ) -> str:
        with self.gate.request(len(data)):
            if if_match is None and not if_absent:
                return self.inner.put(key, data, metadata)
            return self.inner.put(key, data, metadata, if_match=if_match, if_absent=if_absent)

    def delete(self, key: str, *, if_match: str | None = None) -> None:
        if if_match is None:
            self.inner.delete(key)
        else:
            self.inner.delete(key, if_match=if_match)

    def writer(self, key: str) -> Writer:
        return _MeteredWriter(self.inner.writer(key), self.gate)


class _MeteredWriter(PassthroughWriter):
    def __init__(self, inner: Writer, gate: Gate) -> None:
        super().__init__(inner)
        self.gate = gate

    def write(self, block_id: str, data: bytes) -> None:
        with self.gate.request(len(data)):
            self.inner.write(block_id, data)


def contents() -> dict[str, bytes]:
    return {name: bytes([i]) * size for i, (name, size) in enumerate(SIZES.items())}


def write(root: Path, files: dict[str, bytes]) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (root / name).write_bytes(data)


def assert_bounded(gate: Gate, budget: int) -> None:
    assert not gate.timed_out, "the transfer stopped without every thread parked"
    assert gate.peak <= budget, f"{gate.peak / MiB:g} MiB in flight, over {budget / MiB:g}"
    # Not vacuous: requests did pile up, until the budget (and nothing else) held them back.
    assert gate.peak == budget, f"only {gate.peak / MiB:g} MiB ever in flight"
    assert gate.released >= 2


def test_staging_never_has_more_than_its_budget_of_ranges_in_flight(
    tmp_path: Path, workdir: Path
) -> None:
    """Sixteen 8 MiB ranges over eight files with ``-j 32``: at most 48 MiB of ranges are
    ever being read at once, and that much is (the budget is what holds the rest); every
    file arrives whole."""
    src = tmp_path / "src"
    files = contents()
    write(src, files)
    with Gate(threading.get_ident()) as gate:
        stores = FakeStores(wrap=lambda store: Metered(store, gate))
        the_plan = plan_staging([parse_input(f"{src}/=in/")], workdir=workdir, stores=stores)
        summary = execute_staging(the_plan, jobs=JOBS)
    assert summary.problems == []
    assert_bounded(gate, STAGING_BUDGET)
    for name, data in files.items():
        assert (workdir / "in" / name).read_bytes() == data


def test_upload_never_has_more_than_its_budget_of_blocks_in_flight(workdir: Path) -> None:
    """Sixteen 8 MiB blocks and files with ``-j 32``: at most 64 MiB of them are ever being
    sent at once, and that much is (the budget is what holds the rest); every blob arrives
    whole."""
    files = contents()
    write(workdir / "out", files)
    with Gate(threading.get_ident()) as gate:
        stores = FakeStores(wrap=lambda store: Metered(store, gate))
        the_plan = plan_upload(
            [parse_output("out/*=fake://c/run/")], workdir=workdir, stores=stores
        )
        summary = execute_upload(the_plan, jobs=JOBS, task={})
    assert summary.problems == []
    assert_bounded(gate, UPLOAD_BUDGET)
    for name, data in files.items():
        assert stores.fake.data(f"c/run/{name}") == data


@pytest.mark.parametrize("jobs", [1, 4])
def test_the_gate_sees_no_more_than_jobs_allow(tmp_path: Path, workdir: Path, jobs: int) -> None:
    """The gate itself: with fewer jobs than the budget admits, the peak is ``jobs`` requests
    (so a peak at the budget above is the budget's doing, not the gate's)."""
    src = tmp_path / "src"
    write(src, contents())
    with Gate(threading.get_ident()) as gate:
        stores = FakeStores(wrap=lambda store: Metered(store, gate))
        the_plan = plan_staging([parse_input(f"{src}/=in/")], workdir=workdir, stores=stores)
        summary = execute_staging(the_plan, jobs=jobs)
    assert summary.problems == []
    assert not gate.timed_out
    assert gate.peak_requests == jobs
