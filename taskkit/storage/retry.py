"""How long taskkit keeps trying a storage request that failed for a passing reason, and how it
tells of an outage.

A :class:`RetryBudget` is a small frozen value: how many attempts, how long the waits between
them may grow, and how much waiting in all one request may spend. Waits grow exponentially from
``first_delay`` up to ``max_delay`` with "full jitter" (a uniform draw between half the step and
the step), so that the tasks of a pool that hit the same throttled account do not retry in
lock step. When the budget is spent the last error is raised, and since it is a
:class:`~taskkit.exceptions.TransientError` the process exits 75: Batch's own retry takes over.

Only errors whose ``retryable`` flag is set are retried; everything else is raised at once.
The clock, the sleep and the random source come in as parameters so tests record instead of
waiting.

:class:`Outages` tells the user of failing storage once per streak, not once per try: one line
when the first request starts failing, one summary when the last failing request is answered
(or one gives up). All the requests of one run share one tracker
(:class:`~taskkit.storage.stores.Stores` makes it), so 26 requests of 8 threads retrying through one
outage make two lines::

    taskkit: warning: storage unreachable: cannot read az://c/x: connection refused; retrying
    taskkit: warning: storage reachable again after 5.2 s, 26 requests retried

Invariants of a streak: it is told of by one line when it starts, at most one when a request
gives up in it, and one when it ends (recovered, or still under way when the run ends). A try
speaks only of the streak it began in: a late failure of a try begun before a recovery starts
no new streak, and a late success of a try begun before an outage does not end it, so the
lines never flap while threads catch up.
"""

from __future__ import annotations

import contextlib
import logging
import random
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TypeVar

from taskkit.exceptions import MisuseError, TaskkitError
from taskkit.redaction import redact

__all__ = ["Outages", "RetryBudget"]

log = logging.getLogger("taskkit")
_T = TypeVar("_T")


def _log_warning(line: str) -> None:
    log.warning("%s", line)


class Outages:
    """The streaks of failing storage requests of one run, told of as they start and end.

    A streak starts when a request fails with a retryable error and no streak is under way.
    It ends when the last request failing in it is answered (a result, or an error not worth
    retrying: either way the storage answered): ``storage reachable again after 5.2 s, 26
    requests retried``. The first request of a streak to spend its retry budget says so once
    (``...; giving up``); the streak goes on, quietly, until an answer or :meth:`close`.
    ``warn`` gets each line; it is called with the tracker's lock held, so it must not make
    storage requests. ``clock`` measures how long a streak lasted. Safe from any thread.
    """

    def __init__(
        self,
        warn: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._warn = warn or _log_warning
        self._clock = clock
        self._lock = threading.Lock()
        # Bumped when a streak starts and when it ends: a try remembers the epoch it began in.
        self._epoch = 0
        self._failing: set[object] = set()  # requests whose last try failed, in this streak
        self._open = False
        self._started = 0.0
        self._retried = 0  # distinct requests that failed during this streak
        self._given_up = False

    def __repr__(self) -> str:
        state = f"{len(self._failing)} failing" if self._open else "no outage"
        return f"Outages({state})"

    @property
    def open(self) -> bool:
        """Whether a streak is under way."""
        return self._open

    def trying(self) -> int:
        """A try is about to be made; the epoch it begins in, for :meth:`failed` and
        :meth:`answered`."""
        return self._epoch  # an int read is atomic: no lock needed

    def failed(self, request: object, began: int, reason: str) -> None:
        """``request``'s try, begun in epoch ``began``, failed and will be tried again."""
        with self._lock:
            if not self._open:
                if began != self._epoch:
                    return  # a straggler of a streak already told of as over
                self._epoch += 1
                self._open, self._given_up = True, False
                self._started, self._retried = self._clock(), 0
                self._say(f"storage unreachable: {redact(reason)}; retrying")
            if request not in self._failing:
                self._failing.add(request)
                self._retried += 1

    def answered(self, request: object, began: int) -> None:
        """``request``'s try, begun in epoch ``began``, got an answer from the storage. Only
        a try begun since the streak started tells that it is over."""
        with self._lock:
            self._failing.discard(request)
            if self._open and not self._failing and began == self._epoch:
                self._say(f"storage reachable again after {self._summary()}")
                self._end()

    def gave_up(self, request: object) -> None:
        """``request`` spent its retry budget; the error it raises says why."""
        with self._lock:
            self._failing.discard(request)
            if self._open and not self._given_up:
                self._given_up = True
                self._say(f"storage unreachable for {self._summary()}; giving up")

    def abandoned(self, request: object) -> None:
        """``request`` ended without an answer (a signal, a bug): it says nothing of storage."""
        with self._lock:
            self._failing.discard(request)

    def close(self) -> None:
        """The run is over: a streak still under way is summed up now, unless a request
        already gave up in it."""
        with self._lock:
            if self._open and not self._given_up:
                self._say(f"storage still unreachable after {self._summary()}")
            self._failing.clear()
            self._end()

    def _end(self) -> None:
        if self._open:
            self._open = False
            self._epoch += 1

    def _summary(self) -> str:
        took = max(0.0, self._clock() - self._started)
        count = self._retried
        return f"{took:.1f} s, {count} request{'' if count == 1 else 's'} retried"

    def _say(self, line: str) -> None:
        with contextlib.suppress(Exception):  # a broken callback must not fail a request
            self._warn(line)


@dataclass(frozen=True)
class RetryBudget:
    """At most ``attempts`` tries of one request, waiting at most ``budget`` seconds in all.

    The wait before try ``n + 1`` is drawn from ``[step / 2, step]`` with
    ``step = min(max_delay, first_delay * 2 ** (n - 1))``. The defaults (6 attempts, 0.5 s
    doubling to 20 s, 60 s in all) ride out a throttling burst or a storage failover of a
    minute, and give up well before a Batch task's wall clock matters.

    ``outages`` tells of failing requests; without one, each :meth:`call` tells of its own.
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
    outages: Outages | None = field(default=None, repr=False, compare=False)

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
        line that tells of a failing streak."""
        outages = self.outages or Outages(clock=self.clock)
        request = object()  # this call, as the tracker tells one request from another
        started = self.clock()
        delays = self.delays()
        done = False
        try:
            while True:
                began = outages.trying()
                try:
                    result = action()
                except TaskkitError as exc:
                    if not exc.retryable or (retry_if is not None and not retry_if(exc)):
                        done = True
                        outages.answered(request, began)
                        raise
                    wait = next(delays, None)
                    if wait is None or self.clock() - started + wait > self.budget:
                        done = True
                        outages.gave_up(request)
                        raise
                    said = str(exc)
                    outages.failed(
                        request, began, said if said.startswith(what) else f"{what}: {said}"
                    )
                    self.sleep(wait)
                else:
                    done = True
                    outages.answered(request, began)
                    return result
        finally:
            if not done:
                outages.abandoned(request)
