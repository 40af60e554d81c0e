"""What a transfer run did, or for a dry run would do: the one summary ``stage`` and
``upload`` both report, and ``--json`` prints; the one line that says it (:func:`stage_line`,
:func:`upload_line`, printed by the commands and said by ``taskkit run``); :func:`format_size`,
the one way sizes are shown; and :func:`run_plan`, the one way both runs go. How a transfer
tells what it does as it goes is :mod:`taskkit.transfer.telling`'s.
"""

from __future__ import annotations

import contextlib
import gc
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

from taskkit.exceptions import TaskFailure

if TYPE_CHECKING:
    from taskkit.content.statcache import StatCache
    from taskkit.storage.retry import RetryBudget
    from taskkit.storage.stores import Stores
    from taskkit.transfer.upload_plan import UploadPlan

__all__ = [
    "Problem",
    "Published",
    "Summary",
    "collecting_less",
    "format_size",
    "run_plan",
    "stage_line",
    "upload_line",
    "warn_passed",
]

_P = TypeVar("_P")


class Problem(NamedTuple):
    """A file, or a request for files, that cannot be transferred."""

    what: str
    error: TaskFailure


class Published(NamedTuple):
    """A manifest an upload left published: where (shown, never a credential), its version
    in the store, and its bytes (the journal keeps a copy)."""

    url: str
    version: str
    data: bytes


@dataclass
class Summary:
    """What a staging or upload run did (or, for a dry run, would do). :meth:`as_json` is
    the summary object ``--json`` prints."""

    files: int = 0
    transferred: int = 0
    resumed: int = 0
    skipped: int = 0
    linked: int = 0
    #: Staging only: stale files removed (staged from blobs that no longer exist).
    removed: int | None = None
    failed: int = 0
    bytes_transferred: int = 0
    bytes_reused: int = 0
    #: The bytes of the files not moved at all: found in place already, or (staging) linked
    #: from the node cache. Journal records keep it; ``--json`` does not print it.
    bytes_kept: int = 0
    seconds: float = 0.0
    dry_run: bool = False
    problems: list[Problem] = field(default_factory=list)
    #: An upload's manifests, in the order of its DESTs (written, or found saying the same).
    published: list[Published] = field(default_factory=list)

    def as_json(self) -> dict[str, object]:
        removed = {} if self.removed is None else {"removed": self.removed}
        return {
            "files": self.files,
            "transferred": self.transferred,
            "resumed": self.resumed,
            "skipped": self.skipped,
            "linked": self.linked,
            **removed,
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


def format_size(n: float) -> str:
    """``n`` bytes in binary units: ``512 B``, ``1.5 MiB``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{int(n)} B" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def _rate(summary: Summary) -> str:
    if not summary.dry_run and summary.seconds > 0 and summary.bytes_transferred:
        return f", {format_size(summary.bytes_transferred / summary.seconds)}/s"
    return ""


def stage_line(summary: Summary) -> str:
    """``staged 204 files in 9.10 s: 200 downloaded (...), 3 linked from the node cache, ...``"""
    verb = "would stage" if summary.dry_run else "staged"
    return (
        f"{verb} {summary.files} files in {summary.seconds:.2f} s: "
        f"{summary.transferred} downloaded ({format_size(summary.bytes_transferred)}"
        f"{_rate(summary)}, {summary.resumed} resumed), "
        f"{summary.linked} linked from the node cache, {summary.skipped} already present, "
        f"{summary.failed} failed"
        + (f", {summary.removed} stale removed" if summary.removed else "")
    )


def upload_line(summary: Summary, published: Sequence[str] = ()) -> str:
    """``uploaded 20 files in 1.20 s: 3 sent (...), 17 already there, 0 failed; published``,
    naming where when ``published`` lists the DESTs (their credentials hidden)."""
    from taskkit.redaction import redact

    verb = "would upload" if summary.dry_run else "uploaded"
    if summary.dry_run:
        outcome = ""
    elif summary.problems:
        outcome = "; not published"
    else:
        outcome = "; published" + "".join(
            f"{' ' if i == 0 else ', '}{redact(dest)}" for i, dest in enumerate(published)
        )
    return (
        f"{verb} {summary.files} files in {summary.seconds:.2f} s: "
        f"{summary.transferred} sent ({format_size(summary.bytes_transferred)}"
        f"{_rate(summary)}, {summary.resumed} resumed), "
        f"{summary.skipped} already there, {summary.failed} failed{outcome}"
    )


def warn_passed(plan: UploadPlan, warn: Callable[[str], None]) -> None:
    """Say which files the output patterns met but do not upload (links out, FIFOs)."""
    for passed in plan.passed:
        warn(f"not uploading {passed.path!r}: {passed.reason}")


@contextlib.contextmanager
def collecting_less() -> Iterator[Callable[[], None]]:
    """No cyclic garbage collection until the function yielded is called (then as it was),
    and the objects made so far left out of every collection until the block ends. A plan of
    many files makes several objects a file, none in a cycle: each collection walked them all
    again (a quarter of the time of planning 100,000 files, then a tenth of a second for the
    first collection after it, and more for each while the files are staged). Objects another
    part of the program set aside the same way (``gc.freeze``) are left as they are."""
    was = gc.isenabled()
    aside = gc.get_freeze_count() == 0
    gc.disable()
    resumed = False

    def resume() -> None:
        nonlocal resumed
        if not resumed:
            resumed = True
            if aside:
                gc.freeze()
            if was:
                gc.enable()

    try:
        yield resume
    finally:
        resume()
        if aside:
            gc.unfreeze()


def run_plan(
    make_plan: Callable[[Stores, StatCache | None], _P],
    *,
    planned: Callable[[_P], Summary],
    execute: Callable[[_P, StatCache | None], Summary],
    cache: StatCache | None,
    retry: RetryBudget | None,
    storage_options: Mapping[str, Any] | None,
    stores: Stores | None = None,
    dry_run: bool,
    on_plan: Callable[[_P], None] | None,
    environ: Mapping[str, str] | None = None,
    warn: Callable[[str], None] | None = None,
) -> Summary:
    """Open the run's stores (unless the caller's ``stores`` are given: then they are used,
    and ``retry`` and ``storage_options`` apply to nothing) and stat-cache (the default one
    of ``environ``, read-only for a dry run), make the plan, show it to ``on_plan``, then
    report it (``dry_run``) or carry it out. Only stores opened here are closed here; their
    outage lines go to ``warn`` (default: the ``"taskkit"`` logger)."""
    from taskkit.content.statcache import StatCache
    from taskkit.storage.stores import Stores

    started = time.perf_counter()
    with contextlib.ExitStack() as stack:
        if stores is None:  # its outage lines go where the call's other warnings go
            stores = stack.enter_context(Stores(retry, storage_options, warn=warn))
        if cache is None:
            cache = StatCache.for_run(dry_run=dry_run, environ=environ)
            if cache is not None:
                stack.enter_context(cache)
        resume = stack.enter_context(collecting_less())
        the_plan = make_plan(stores, cache)
        resume()
        if on_plan is not None:
            on_plan(the_plan)
        summary = planned(the_plan) if dry_run else execute(the_plan, cache)
    summary.seconds = time.perf_counter() - started
    return summary
