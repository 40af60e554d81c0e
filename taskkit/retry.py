"""How long taskkit keeps trying a storage request that failed for a passing reason.

A :class:`RetryBudget` is a small frozen value: how many attempts, how long the waits between
them may grow, and how much waiting in all one request may spend. Waits grow exponentially from
``first_delay`` up to ``max_delay`` with "full jitter" (a uniform draw between half the step and
the step), so that the tasks of a pool that hit the same throttled account do not retry in
lock step. When the budget is spent the last error is raised, and since it is a
:class:`~taskkit.exceptions.TransientError` the process exits 75: Batch's own retry takes over.

Only errors whose ``retryable`` flag is set are retried; everything else is raised at once.
The clock, the sleep and the random source come in as parameters so tests record instead of
waiting.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TypeVar

from taskkit.exceptions import MisuseError, TaskkitError

__all__ = ["RetryBudget"]

log = logging.getLogger("taskkit")
_T = TypeVar("_T")


@dataclass(frozen=True)
class RetryBudget:
    """At most ``attempts`` tries of one request, waiting at most ``budget`` seconds in all.

    The wait before try ``n + 1`` is drawn from ``[step / 2, step]`` with
    ``step = min(max_delay, first_delay * 2 ** (n - 1))``. The defaults (6 attempts, 0.5 s
    doubling to 20 s, 60 s in all) ride out a throttling burst or a storage failover of a
    minute, and give up well before a Batch task's wall clock matters.
    """

    attempts: int = 6
    first_delay: float = 0.5
    max_delay: float = 20.0
    budget: float = 60.0
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False, compare=False)
    clock: Callable[[], float] = field(default=time.monotonic, repr=False, compare=False)
    uniform: Callable[[float, float], float] = field(
        default=random.uniform, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        if isinstance(self.attempts, bool) or not isinstance(self.attempts, int):
            raise MisuseError(f"attempts must be a whole number, not {self.attempts!r}")
        if self.attempts < 1:
            raise MisuseError(f"attempts must be at least 1, not {self.attempts}")
        for name in ("first_delay", "max_delay", "budget"):
            if getattr(self, name) < 0:
                raise MisuseError(f"{name} must not be negative, not {getattr(self, name)}")

    def delays(self) -> Iterator[float]:
        """The waits between tries, as they would be drawn; fewer when the budget runs out."""
        spent = 0.0
        for n in range(1, self.attempts):
            step = min(self.max_delay, self.first_delay * 2 ** (n - 1))
            wait = self.uniform(step / 2, step)
            if spent + wait > self.budget:
                return
            spent += wait
            yield wait

    def call(
        self,
        action: Callable[[], _T],
        what: str,
        retry_if: Callable[[TaskkitError], bool] | None = None,
    ) -> _T:
        """``action()``, tried again after each retryable :class:`TaskkitError` while the
        budget lasts (``retry_if`` narrows which ones). ``what`` names the request in the
        warning logged before each retry."""
        started = self.clock()
        delays = self.delays()
        while True:
            try:
                return action()
            except TaskkitError as exc:
                if not exc.retryable or (retry_if is not None and not retry_if(exc)):
                    raise
                wait = next(delays, None)
                if wait is None or self.clock() - started + wait > self.budget:
                    raise
                said = str(exc)
                log.warning(
                    "%s; trying again in %.1f s",
                    said if said.startswith(what) else f"{what}: {said}",
                    wait,
                )
                self.sleep(wait)
