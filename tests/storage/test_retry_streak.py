"""taskkit.storage.retry.Outages: a streak of failing storage requests is told of once, whatever the
number of requests, threads and stores that meet it.

Clocks are injected and sleeps are barriers or no-ops: nothing waits for real time, and the
threads of the concurrent tests meet at barriers, so the counts asserted are exact.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from taskkit.exceptions import InputNotFound, TaskkitError, TransientError
from taskkit.storage.retry import Outages, RetryBudget
from taskkit.storage.stores import Stores

THREADS = 20


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def no_wait(seconds: float) -> None:
    """A sleep that returns at once."""


def first_tries_fail(times: int) -> Callable[[], Callable[[], str]]:
    """A factory of actions (one per request) that fail ``times`` tries, then succeed."""

    def make() -> Callable[[], str]:
        tries = [0]

        def action() -> str:
            tries[0] += 1
            if tries[0] <= times:
                raise TransientError("cannot read az://c/x: connection refused")
            return "ok"

        return action

    return make


def in_threads(count: int, work: Callable[[int], object]) -> list[object]:
    """``work(i)`` on ``count`` threads at once; what each returned or raised."""
    results: list[object] = [None] * count

    def run(i: int) -> None:
        try:
            results[i] = work(i)
        except BaseException as exc:  # the test inspects it
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not any(thread.is_alive() for thread in threads)
    return results


def test_twenty_threads_through_one_outage_make_one_line_and_one_summary() -> None:
    """20 requests fail together, then recover: one start line naming the reason, one
    summary with the streak's length (from the injected clock) and all 20 requests."""
    lines: list[str] = []
    clock = Clock()

    def recovered() -> None:  # runs once, when every thread has failed and is waiting
        clock.now += 5.2

    waiting = threading.Barrier(THREADS, action=recovered)
    budget = RetryBudget(sleep=lambda s: waiting.wait(), outages=Outages(lines.append, clock))
    make = first_tries_fail(1)
    results = in_threads(THREADS, lambda i: budget.call(make(), "cannot read az://c/x"))
    assert results == ["ok"] * THREADS
    assert lines == [
        "storage unreachable: cannot read az://c/x: connection refused; retrying",
        "storage reachable again after 5.2 s, 20 requests retried",
    ]


def test_many_tries_of_one_request_count_once() -> None:
    """A request failing five times in one streak counts as one request retried."""
    lines: list[str] = []
    budget = RetryBudget(attempts=6, sleep=no_wait, outages=Outages(lines.append, Clock()))
    assert budget.call(first_tries_fail(5)(), "cannot read az://c/x") == "ok"
    assert lines[-1] == "storage reachable again after 0.0 s, 1 request retried"
    assert len(lines) == 2


def test_the_stores_of_one_run_share_one_streak(tmp_path: Path) -> None:
    """Requests to two stores (file:// and memory://) of one Stores, from 20 threads, make
    one streak: the tracker is the run's, not a store's or a request's."""
    lines: list[str] = []
    clock = Clock()
    waiting = threading.Barrier(THREADS)
    outages = Outages(lines.append, clock)
    stores = Stores(RetryBudget(sleep=lambda s: waiting.wait()), outages=outages)
    with stores:
        local, _ = stores.open(f"file://{tmp_path}/x")
        memory, _ = stores.open("memory://bucket/x")
        assert local is not memory
        make = first_tries_fail(1)

        def request(i: int) -> str:
            store = local if i % 2 else memory
            return store.call(make(), f"cannot read {store.protocol}://x")

        results = in_threads(THREADS, request)
    assert results == ["ok"] * THREADS
    assert len(lines) == 2
    assert lines[0].startswith("storage unreachable: cannot read ")
    assert lines[1] == "storage reachable again after 0.0 s, 20 requests retried"


def test_giving_up_is_one_summary_however_many_requests_give_up() -> None:
    """20 requests that never get through: one start line, one give-up summary (the
    streak's length and its requests), every request raising its own last error."""
    lines: list[str] = []
    clock = Clock()

    def waited() -> None:  # once per round of waits, when every thread is waiting
        clock.now += 10.0

    waiting = threading.Barrier(THREADS, action=waited)
    budget = RetryBudget(
        attempts=3, sleep=lambda s: waiting.wait(), outages=Outages(lines.append, clock)
    )
    make = first_tries_fail(99)
    results = in_threads(THREADS, lambda i: budget.call(make(), "cannot read az://c/x"))
    assert all(isinstance(r, TransientError) for r in results)
    assert lines == [
        "storage unreachable: cannot read az://c/x: connection refused; retrying",
        "storage unreachable for 20.0 s, 20 requests retried; giving up",
    ]


def test_an_answer_that_is_an_error_still_ends_the_streak() -> None:
    """A request that was failing and then gets "not found" reached the storage: the streak
    ends as recovered."""
    lines: list[str] = []
    tries = [0]

    def action() -> str:
        tries[0] += 1
        if tries[0] == 1:
            raise TransientError("cannot read az://c/x: timed out")
        raise InputNotFound("cannot read az://c/x: not found")

    budget = RetryBudget(sleep=no_wait, outages=Outages(lines.append, Clock()))
    with pytest.raises(InputNotFound):
        budget.call(action, "cannot read az://c/x")
    assert lines[-1] == "storage reachable again after 0.0 s, 1 request retried"


def test_a_failure_begun_before_the_recovery_starts_no_new_streak() -> None:
    """A try that began before the streak was over and fails after it is a straggler of that
    streak: silent. Its next try failing is a new outage, told of again."""
    lines: list[str] = []
    outages = Outages(lines.append, Clock())
    first, late = object(), object()
    began_first, began_late = outages.trying(), outages.trying()
    outages.failed(first, began_first, "cannot read az://c/a: refused")
    outages.answered(first, outages.trying())
    assert len(lines) == 2
    assert not outages.open
    outages.failed(late, began_late, "cannot read az://c/b: refused")
    assert len(lines) == 2
    assert not outages.open
    outages.failed(late, outages.trying(), "cannot read az://c/b: refused")
    assert outages.open
    assert lines[2] == "storage unreachable: cannot read az://c/b: refused; retrying"


def test_a_streak_is_over_only_when_every_failing_request_is_answered() -> None:
    """Throttling lets some requests through while others wait: the streak lasts until the
    last failing one is answered, and a success of a request that never failed ends nothing."""
    lines: list[str] = []
    clock = Clock()
    outages = Outages(lines.append, clock)
    one, two, bystander = object(), object(), object()
    outages.failed(one, outages.trying(), "busy")
    outages.failed(two, outages.trying(), "busy")
    outages.answered(bystander, outages.trying())
    outages.answered(one, outages.trying())
    assert outages.open
    assert len(lines) == 1
    clock.now += 3.0
    outages.answered(two, outages.trying())
    assert lines[1] == "storage reachable again after 3.0 s, 2 requests retried"


def test_a_recovery_after_giving_up_is_told_and_a_stale_success_is_not() -> None:
    """A request gave up; the streak goes on quietly (another request failing joins it, a
    second give-up says nothing) until an answer: a success of a try begun before the outage
    does not end it, one begun since does, told as recovered."""
    lines: list[str] = []
    clock = Clock()
    outages = Outages(lines.append, clock)
    long_download = outages.trying()  # began before anything failed
    first, second, third = object(), object(), object()
    outages.failed(first, outages.trying(), "refused")
    outages.gave_up(first)
    outages.failed(second, outages.trying(), "refused")
    outages.gave_up(second)
    assert len(lines) == 2
    assert lines[1] == "storage unreachable for 0.0 s, 1 request retried; giving up"
    outages.answered(object(), long_download)
    assert outages.open
    clock.now += 7.5
    outages.answered(third, outages.trying())
    assert lines[2:] == ["storage reachable again after 7.5 s, 2 requests retried"]
    assert not outages.open


def test_closing_the_stores_sums_up_an_outage_still_under_way() -> None:
    """A run that ends (a signal) while requests are still failing says so when its Stores
    close; an interrupted request leaves the streak without a word."""
    lines: list[str] = []
    clock = Clock()
    stores = Stores(outages=None, retry=RetryBudget(outages=Outages(lines.append, clock)))
    owned = Stores()
    assert owned.outages is not stores.outages  # each run has its own tracker
    outages = stores.outages

    def interrupted(seconds: float) -> None:
        clock.now += 2.0
        raise KeyboardInterrupt

    budget = RetryBudget(sleep=interrupted, outages=outages)
    with pytest.raises(KeyboardInterrupt):
        budget.call(first_tries_fail(9)(), "cannot list az://c/")
    assert outages.open  # nothing was answered: the outage is not over
    other = object()
    outages.failed(other, outages.trying(), "busy")
    stores.close()  # a tracker given by the caller is the caller's to close
    assert len(lines) == 1
    outages.close()
    assert lines[1] == "storage still unreachable after 2.0 s, 2 requests retried"
    assert not outages.open


def test_a_stores_own_tracker_is_closed_with_it() -> None:
    """Stores() makes its own tracker and closes it with itself: an outage under way is
    summed up then."""
    lines: list[str] = []
    with Stores() as stores:
        stores.outages._warn = lines.append  # the default tracker, its lines captured
        stores.outages.failed(object(), stores.outages.trying(), "busy")
    assert len(lines) == 2
    assert lines[1].startswith("storage still unreachable after ")


def test_a_credential_in_the_reason_is_not_told() -> None:
    """The start line passes through redaction: a SAS signature in an error is hidden."""
    lines: list[str] = []
    outages = Outages(lines.append, Clock())
    secret = "c2lnbmF0dXJlLXRoYXQtbXVzdC1ub3Qtc2hvdw"
    outages.failed(
        object(), 0, f"cannot read https://a.blob.core.windows.net/c/x?sv=1&sig={secret}"
    )
    assert secret not in lines[0]


def test_a_broken_callback_does_not_fail_the_request() -> None:
    """A warn callback that raises is ignored: the request still succeeds."""

    def broken(line: str) -> None:
        raise RuntimeError("console gone")

    budget = RetryBudget(sleep=no_wait, outages=Outages(broken, Clock()))
    assert budget.call(first_tries_fail(2)(), "cannot read az://c/x") == "ok"


def test_errors_not_worth_retrying_say_nothing() -> None:
    """A request that fails at once with an error not worth retrying starts no streak."""
    lines: list[str] = []
    budget = RetryBudget(sleep=no_wait, outages=Outages(lines.append, Clock()))

    def missing() -> str:
        raise InputNotFound("cannot read az://c/x: not found")

    with pytest.raises(TaskkitError):
        budget.call(missing, "cannot read az://c/x")
    assert lines == []


def test_a_refused_endpoint_prints_two_lines_not_one_per_try(tmp_path: Path) -> None:
    """`taskkit stage` against a port nothing listens on, four tries: exit 75 with one
    "unreachable" line, one "giving up" summary and the error, never a line per try."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    key = "a2V5LWZvci10aGUtc3RyZWFrLXRlc3Q="
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AZ_BATCH_", "TASKKIT_", "AZURE_STORAGE_"))
    }
    env["TASKKIT_CACHE_DIR"] = str(tmp_path / "cache")
    env["AZURE_STORAGE_CONNECTION_STRING"] = (
        "DefaultEndpointsProtocol=http;AccountName=acct;"
        f"AccountKey={key};BlobEndpoint=http://127.0.0.1:{port}/acct;"
    )
    argv = [sys.executable, "-m", "taskkit", "stage", "-i", "az://data/f.bin=f.bin"]
    argv += ["--workdir", str(tmp_path), "--retries", "4", "--retry-budget", "3"]
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=60, check=False)
    assert proc.returncode == 75, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 3, lines
    assert lines[0].startswith("taskkit: warning: storage unreachable: ")
    assert lines[0].endswith("; retrying")
    assert lines[1].startswith("taskkit: warning: storage unreachable for ")
    assert lines[1].endswith(", 1 request retried; giving up")
    assert lines[2].startswith("taskkit: error: ")
    assert key not in proc.stderr
