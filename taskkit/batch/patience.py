"""How long taskkit keeps trying a request to the Batch service: :class:`Patience`, and the
azure-core retry policy that keeps it (:func:`patient_policy`).

Invariant: time ends the retries, never a count. Every try of one request ends by
``Patience.seconds`` after the first began, a ``Retry-After`` from the service included (which
is honoured, but never past the end, and never as a busy loop: at least
:data:`LEAST_WAIT` between two tries). Batch asks every client to retry for at least five
minutes; :data:`PATIENT` gives seven.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["LEAST_WAIT", "PATIENT", "Patience", "patient_policy"]

#: The shortest wait between two tries of a request, whatever Retry-After says.
LEAST_WAIT = 0.1


@dataclass(frozen=True)
class Patience:
    """How long one request's transient failures are retried: for ``seconds`` in all, waiting
    ``first`` seconds, then twice as long each time up to ``longest``, or what the service's
    ``Retry-After`` asks, never past the end; a try that has not answered in ``read_timeout``
    seconds (nor past the end) is a transient failure too."""

    seconds: float = 420.0
    first: float = 1.0
    longest: float = 60.0
    read_timeout: float = 120.0

    @classmethod
    def lasting(cls, seconds: float) -> Patience:
        """The patience of ``seconds`` in all, its waits scaled down for short ones."""
        first = min(1.0, seconds / 8)
        longest = max(first, min(60.0, seconds / 4))
        return cls(seconds, first, longest, read_timeout=min(120.0, seconds))

    def wait(self, failures: int) -> float:
        """The wait after the ``failures``-th failure in a row (none after the first)."""
        return 0.0 if failures <= 1 else min(self.longest, self.first * 2.0 ** (failures - 1))


#: The default: 7 minutes, above Batch's "at least 5 minutes".
PATIENT = Patience()


def patient_policy(patience: Patience) -> Any:
    """azure-core's retry policy, bounded by time rather than by a count: every try of one
    request ends by ``patience.seconds`` after the first began, a ``Retry-After`` included."""
    import time

    from azure.core.pipeline.policies import RetryPolicy

    class Patient(RetryPolicy):  # type: ignore[type-arg]
        def configure_retries(self, options: dict[str, Any]) -> dict[str, Any]:
            settings: dict[str, Any] = super().configure_retries(options)
            settings["taskkit_deadline"] = time.monotonic() + patience.seconds
            return settings

        def increment(self, settings: dict[str, Any], *args: Any, **kwargs: Any) -> bool:
            going: bool = super().increment(settings, *args, **kwargs)
            return going and time.monotonic() < settings["taskkit_deadline"]

        def sleep(self, settings: dict[str, Any], transport: Any, response: Any = None) -> None:
            asked = self.get_retry_after(response) if response is not None else None
            if asked is None:
                wait = patience.wait(len(settings["history"]))
            else:  # as asked, but never a busy loop on "Retry-After: 0"
                wait = max(asked, LEAST_WAIT)
            left = settings["taskkit_deadline"] - time.monotonic()
            transport.sleep(max(0.0, min(wait, left)))

    many = 1_000_000  # the deadline ends the retries, not a count
    return Patient(
        retry_total=many,
        retry_connect=many,
        retry_read=many,
        retry_status=many,
        retry_backoff_factor=patience.first,
        retry_backoff_max=patience.longest,
        timeout=patience.seconds,
    )
