"""taskkit/periodic.py: an action repeated on its own thread, stopped at once and for good."""

from __future__ import annotations

import threading

from taskkit.periodic import Periodic


def test_the_action_repeats_until_stopped_and_not_after() -> None:
    """Three calls arrive; after stop() returns, the thread is gone and no call follows."""
    calls: list[int] = []
    third = threading.Event()

    def action() -> None:
        calls.append(1)
        if len(calls) == 3:
            third.set()

    every = Periodic(0.01, action, "test-periodic")
    every.start()
    assert third.wait(10)
    every.stop()
    seen = len(calls)
    assert seen >= 3
    assert not every._thread.is_alive()
    assert len(calls) == seen


def test_stop_is_immediate_for_a_long_interval() -> None:
    """A one-hour interval does not hold stop() up: the wait is on an event, not a sleep."""
    every = Periodic(3600, lambda: None, "test-periodic")
    every.start()
    every.stop()
    assert not every._thread.is_alive()


def test_stop_before_start_and_twice_is_harmless() -> None:
    """stop() with no thread started, and a second stop(), do nothing."""
    every = Periodic(1, lambda: None, "test-periodic")
    every.stop()
    every.stop()
    assert not every._thread.is_alive()
