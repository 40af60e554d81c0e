"""How files are moved: the transfer settings ``taskkit stage``, ``taskkit upload`` and a
:class:`~taskkit.runner.spec.RunSpec` share, in a module of their own, so that the commands
take them without the RunSpec's model (and pydantic's tenth of a second of imports)."""

from __future__ import annotations

from typing import NamedTuple

from taskkit.storage.retry import RetryBudget

__all__ = ["TransferSettings"]


class TransferSettings(NamedTuple):
    """How files are moved: the transfer settings of a :class:`~taskkit.runner.spec.RunSpec`
    (whose defaults are these), which ``taskkit stage`` and ``taskkit upload`` take as options
    alone. Built from checked values: no validation (nor pydantic) on the way."""

    jobs: int | None = None
    cache_dir: str | None = None
    no_node_cache: bool = False
    cache_max_bytes: int | None = None
    retries: int = RetryBudget.attempts
    retry_budget: float = RetryBudget.budget
    progress_interval: float = 10.0
    verbose: bool = False

    def retry(self) -> RetryBudget:
        """How long each storage request is tried."""
        return RetryBudget(attempts=self.retries, budget=self.retry_budget)
