"""taskkit.storage.retry: how long a failing storage request is tried again, with recorded waits."""

from __future__ import annotations

import logging
import random
from collections.abc import Callable

import pytest

from taskkit.exceptions import (
    ConfigError,
    InputNotFound,
    MisuseError,
    TaskkitError,
    TransientError,
)
from taskkit.storage.retry import RetryBudget


class FakeTime:
    """A clock that only moves when something sleeps (or the test advances it)."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def highest(low: float, high: float) -> float:
    return high


def lowest(low: float, high: float) -> float:
    return low


def failing(
    error: Callable[[int], TaskkitError],
    calls: list[int],
    took: float = 0.0,
    time: FakeTime | None = None,
) -> Callable[[], str]:
    """An action that raises ``error(n)`` on its n-th call (advancing ``time`` by ``took``)."""

    def action() -> str:
        calls.append(len(calls) + 1)
        if time is not None:
            time.now += took
        raise error(len(calls))

    return action


def test_delays_double_from_first_delay_up_to_max_delay() -> None:
    """With the top of every jitter range drawn, waits are 1, 2, 4, 8, then capped at 10."""
    budget = RetryBudget(attempts=8, first_delay=1.0, max_delay=10.0, budget=1000, uniform=highest)
    assert list(budget.delays()) == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0, 10.0]


def test_jitter_is_drawn_between_half_the_step_and_the_step() -> None:
    """uniform() is asked for [step/2, step]; the waits are what it returns."""
    asked: list[tuple[float, float]] = []

    def recording(low: float, high: float) -> float:
        asked.append((low, high))
        return low

    budget = RetryBudget(attempts=5, first_delay=0.5, max_delay=3.0, budget=1000, uniform=recording)
    assert list(budget.delays()) == [0.25, 0.5, 1.0, 1.5]
    assert asked == [(0.25, 0.5), (0.5, 1.0), (1.0, 2.0), (1.5, 3.0)]


def test_random_jitter_stays_inside_its_range() -> None:
    """With a real (seeded) random source every wait lies in [step/2, step]."""
    rng = random.Random(1234)
    budget = RetryBudget(
        attempts=12, first_delay=0.5, max_delay=20.0, budget=1e6, uniform=rng.uniform
    )
    waits = list(budget.delays())
    assert len(waits) == 11
    for n, wait in enumerate(waits, start=1):
        step = min(20.0, 0.5 * 2 ** (n - 1))
        assert step / 2 <= wait <= step


def test_delays_stop_when_their_sum_would_exceed_the_budget() -> None:
    """1 + 2 fit in 5 seconds; the next wait (4) would not, so there are only two."""
    budget = RetryBudget(attempts=10, first_delay=1.0, max_delay=60.0, budget=5.0, uniform=highest)
    assert list(budget.delays()) == [1.0, 2.0]


def test_success_after_transient_failures_returns_the_value() -> None:
    """Two transient failures, then a result: the result comes back after two waits."""
    time = FakeTime()
    calls: list[int] = []

    def action() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise TransientError("throttled")
        return "done"

    budget = RetryBudget(first_delay=1.0, uniform=highest, sleep=time.sleep, clock=time.clock)
    assert budget.call(action, "cannot read az://c/x") == "done"
    assert len(calls) == 3
    assert time.sleeps == [1.0, 2.0]


def test_stops_after_attempts_and_raises_the_last_error() -> None:
    """attempts=4: four calls, three waits, and the error of the fourth call is raised."""
    time = FakeTime()
    calls: list[int] = []
    raised: list[TransientError] = []

    def error(n: int) -> TransientError:
        raised.append(TransientError(f"failure {n}"))
        return raised[-1]

    budget = RetryBudget(
        attempts=4,
        first_delay=1.0,
        budget=1000,
        uniform=highest,
        sleep=time.sleep,
        clock=time.clock,
    )
    with pytest.raises(TransientError) as info:
        budget.call(failing(error, calls), "cannot list az://c/")
    assert calls == [1, 2, 3, 4]
    assert time.sleeps == [1.0, 2.0, 4.0]
    assert info.value is raised[-1]
    assert str(info.value) == "failure 4"


def test_stops_when_the_time_spent_would_exceed_the_budget() -> None:
    """Each try takes 3 s of clock time and waits are 1 s: with a 10 s budget the third try
    (ending at 11 s) is the last, though attempts allow ten."""
    time = FakeTime()
    calls: list[int] = []
    budget = RetryBudget(
        attempts=10,
        first_delay=1.0,
        max_delay=1.0,
        budget=10.0,
        uniform=highest,
        sleep=time.sleep,
        clock=time.clock,
    )
    with pytest.raises(TransientError, match="slow 3"):
        budget.call(failing(lambda n: TransientError(f"slow {n}"), calls, 3.0, time), "read")
    assert calls == [1, 2, 3]
    assert time.sleeps == [1.0, 1.0]
    assert time.now == 11.0


@pytest.mark.parametrize(
    "error",
    [
        ConfigError("cannot read az://c/x: access denied"),
        InputNotFound("cannot read az://c/x: not found"),
    ],
    ids=["ConfigError", "InputNotFound"],
)
def test_permanent_errors_are_raised_at_once(error: TaskkitError) -> None:
    """A non-retryable TaskkitError: one call, no wait, the very same error."""
    time = FakeTime()
    calls: list[int] = []
    budget = RetryBudget(sleep=time.sleep, clock=time.clock)
    with pytest.raises(type(error)) as info:
        budget.call(failing(lambda n: error, calls), "read")
    assert info.value is error
    assert calls == [1]
    assert time.sleeps == []


def test_retry_if_narrows_which_retryable_errors_are_retried() -> None:
    """A retryable error that retry_if refuses is raised at once; others are still retried."""

    class Special(TransientError):
        pass

    time = FakeTime()
    calls: list[int] = []
    budget = RetryBudget(first_delay=1.0, uniform=highest, sleep=time.sleep, clock=time.clock)

    def not_special(exc: TaskkitError) -> bool:
        return not isinstance(exc, Special)

    with pytest.raises(Special):
        budget.call(failing(lambda n: Special("x"), calls), "read", not_special)
    assert calls == [1]
    assert time.sleeps == []

    def ordinary_then_special(n: int) -> TaskkitError:
        return TransientError("busy") if n < 3 else Special("changed")

    more_calls: list[int] = []
    with pytest.raises(Special):
        budget.call(failing(ordinary_then_special, more_calls), "read", not_special)
    assert more_calls == [1, 2, 3]
    assert time.sleeps == [1.0, 2.0]


def test_retry_if_cannot_make_a_permanent_error_retryable() -> None:
    """retry_if only narrows: a ConfigError is raised at once even if retry_if says yes."""
    time = FakeTime()
    calls: list[int] = []
    budget = RetryBudget(sleep=time.sleep, clock=time.clock)
    with pytest.raises(ConfigError):
        budget.call(failing(lambda n: ConfigError("no"), calls), "read", lambda exc: True)
    assert calls == [1]
    assert time.sleeps == []


def test_errors_that_are_not_taskkit_errors_pass_through_untouched() -> None:
    """A bug (KeyError) is neither retried nor wrapped."""
    time = FakeTime()
    calls: list[int] = []

    def action() -> None:
        calls.append(1)
        raise KeyError("bug")

    with pytest.raises(KeyError):
        RetryBudget(sleep=time.sleep, clock=time.clock).call(action, "read")
    assert calls == [1]
    assert time.sleeps == []


def test_a_single_attempt_never_waits() -> None:
    """attempts=1: the first transient error is raised without sleeping."""
    time = FakeTime()
    calls: list[int] = []
    budget = RetryBudget(attempts=1, sleep=time.sleep, clock=time.clock)
    with pytest.raises(TransientError):
        budget.call(failing(lambda n: TransientError("x"), calls), "read")
    assert calls == [1]
    assert time.sleeps == []


def test_a_lone_call_tells_of_its_streak_once(caplog: pytest.LogCaptureFixture) -> None:
    """Without a shared tracker a call tells of its own failures: one line naming the request
    and the error when they start, one summary when it gives up, none per try."""
    time = FakeTime()
    budget = RetryBudget(
        attempts=4, first_delay=2.0, uniform=highest, sleep=time.sleep, clock=time.clock
    )
    with caplog.at_level(logging.WARNING, logger="taskkit"), pytest.raises(TransientError):
        budget.call(failing(lambda n: TransientError("busy"), []), "cannot list az://c/p/")
    messages = [r.getMessage() for r in caplog.records]
    assert messages == [
        "storage unreachable: cannot list az://c/p/: busy; retrying",
        "storage unreachable for 14.0 s, 1 request retried; giving up",
    ]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"attempts": 0},
        {"attempts": -1},
        {"attempts": 1.5},
        {"attempts": True},
        {"first_delay": -0.1},
        {"max_delay": -1.0},
        {"budget": -1.0},
    ],
    ids=str,
)
def test_misuse_is_refused(kwargs: dict[str, object]) -> None:
    """No attempts, a fractional or boolean count, or a negative time is a MisuseError."""
    with pytest.raises(MisuseError):
        RetryBudget(**kwargs)  # type: ignore[arg-type]


def test_zero_delays_and_budget_are_allowed() -> None:
    """Zero is not negative: a budget of no waiting at all is valid (retries do not wait)."""
    budget = RetryBudget(first_delay=0.0, max_delay=0.0, budget=0.0, uniform=lowest)
    assert list(budget.delays()) == [0.0] * (budget.attempts - 1)
