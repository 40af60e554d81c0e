"""What ``taskkit local run --chaos SPEC`` does to a job, and the seeded decisions.

``SPEC`` is ``name=value`` pairs separated by commas::

    kill=0.2,preempt=0.05,storage=0.01,within=3,limit=10

* ``kill=P``: each attempt is SIGKILLed (its whole process group) with chance P, and requeued
  as the service requeues a task whose node was lost: not counted against its retries.
* ``preempt=P``: each attempt, with chance P, brings down its node as Spot preemption does:
  every attempt on the node is killed and requeued, and the node's folders (the shared folder
  and its node cache too) are wiped before it takes tasks again.
* ``storage=P``: each storage request of the tasks fails with chance P, through
  :class:`taskkit.testing.proxy.FaultProxy` in front of the storage endpoint.
* ``within=S``: a strike lands at a moment drawn evenly from ``[0, S)`` seconds after the
  attempt starts; by default S is the median run time of the attempts finished so far (one
  second before any has). An attempt that ends first is not struck.
* ``limit=N``: at most N strikes per task (default 10), so that every job ends.

Invariant: the decisions are drawn from a random source seeded by (``--seed``, task id,
launch number of that task), so the same seed strikes the same launches of the same tasks at
the same offsets whatever order the scheduler happened to start them in. (With the default
``within`` the offsets scale with the run times measured, which vary from run to run.)
"""

from __future__ import annotations

import math
import random
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from taskkit.exceptions import UsageError

__all__ = ["Chaos", "Strike"]

#: The seconds a strike may wait before any attempt has finished (``within`` not given).
FIRST_WINDOW = 1.0


@dataclass(frozen=True)
class Strike:
    """Chaos decided for one launch: what, and how many seconds after it starts."""

    kind: Literal["kill", "preempt"]
    after: float


@dataclass(frozen=True)
class Chaos:
    """The chaos of a job; all zero: none."""

    kill: float = 0.0
    preempt: float = 0.0
    storage: float = 0.0
    within: float | None = None
    limit: int = 10

    @classmethod
    def parse(cls, text: str | None) -> Chaos:
        """The chaos ``text`` names (see the module docstring); a :class:`UsageError`
        naming the part that is wrong otherwise. ``None`` or ``""``: no chaos."""
        if not text or not text.strip():
            return cls()
        values: dict[str, float] = {}
        for part in text.split(","):
            name, sep, value = part.strip().partition("=")
            if not sep or name not in ("kill", "preempt", "storage", "within", "limit"):
                raise UsageError(
                    f"--chaos: {part.strip()!r} is not one of kill=P, preempt=P, storage=P, "
                    "within=SECONDS, limit=N"
                )
            if name in values:
                raise UsageError(f"--chaos: {name} is given twice")
            try:
                number = float(value)
            except ValueError:
                raise UsageError(f"--chaos: {name}={value!r} is not a number") from None
            if not math.isfinite(number):
                raise UsageError(f"--chaos: {name}={value!r} is not a number")
            values[name] = number
        for name in ("kill", "preempt", "storage"):
            if not 0.0 <= values.get(name, 0.0) <= 1.0:
                raise UsageError(f"--chaos: {name} is a chance from 0 to 1, not {values[name]:g}")
        if values.get("kill", 0.0) + values.get("preempt", 0.0) > 1.0:
            raise UsageError("--chaos: kill and preempt together are a chance of at most 1")
        within = values.get("within")
        if within is not None and within <= 0:
            raise UsageError(f"--chaos: within is a number of seconds above 0, not {within:g}")
        limit = values.get("limit", 10.0)
        if limit != int(limit) or limit < 0:
            raise UsageError(f"--chaos: limit is a whole number of strikes, not {limit:g}")
        return cls(
            kill=values.get("kill", 0.0),
            preempt=values.get("preempt", 0.0),
            storage=values.get("storage", 0.0),
            within=within,
            limit=int(limit),
        )

    def __bool__(self) -> bool:
        return bool(self.kill or self.preempt or self.storage)

    def text(self) -> str:
        """The spec back, as ``--chaos`` takes it (what the report records)."""
        parts = [f"{n}={getattr(self, n):g}" for n in ("kill", "preempt", "storage")]
        if self.within is not None:
            parts.append(f"within={self.within:g}")
        return ",".join([*parts, f"limit={self.limit}"])

    def strike(
        self, seed: int | None, task_id: str, launch: int, struck: int, ran: Sequence[float]
    ) -> Strike | None:
        """The strike on the ``launch``-th start (from 1) of ``task_id``, already struck
        ``struck`` times; ``ran``: run times of the job's finished attempts (the default
        window). ``None``: this launch is left alone."""
        if struck >= self.limit or not (self.kill or self.preempt):
            return None
        draw = random.Random(f"{seed}:{task_id}:{launch}")
        roll, offset = draw.random(), draw.random()
        if roll < self.kill:
            kind: Literal["kill", "preempt"] = "kill"
        elif roll < self.kill + self.preempt:
            kind = "preempt"
        else:
            return None
        window = self.within or (statistics.median(ran) if ran else FIRST_WINDOW)
        return Strike(kind, offset * window)
