"""What a transfer run did, or for a dry run would do: the one summary ``stage`` and
``upload`` both report, and ``--json`` prints."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

from taskkit.exceptions import TaskFailure

__all__ = ["Problem", "Summary"]


class Problem(NamedTuple):
    """A file, or a request for files, that cannot be transferred."""

    what: str
    error: TaskFailure


@dataclass
class Summary:
    """What a staging or upload run did (or, for a dry run, would do). :meth:`as_json` is
    the summary object ``--json`` prints."""

    files: int = 0
    transferred: int = 0
    resumed: int = 0
    skipped: int = 0
    linked: int = 0
    failed: int = 0
    bytes_transferred: int = 0
    bytes_reused: int = 0
    seconds: float = 0.0
    dry_run: bool = False
    problems: list[Problem] = field(default_factory=list)

    def as_json(self) -> dict[str, object]:
        return {
            "files": self.files,
            "transferred": self.transferred,
            "resumed": self.resumed,
            "skipped": self.skipped,
            "linked": self.linked,
            "failed": self.failed,
            "bytes_transferred": self.bytes_transferred,
            "bytes_reused": self.bytes_reused,
            "seconds": round(self.seconds, 3),
            "dry_run": self.dry_run,
        }

    def exit_error(self) -> TaskFailure | None:
        """The failure the run ends with: the first permanent one, else the first one."""
        errors = [p.error for p in self.problems]
        return next((e for e in errors if not e.retryable), errors[0] if errors else None)
