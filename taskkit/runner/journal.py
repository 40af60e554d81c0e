"""The durable journal of a task: attempts, steps and outcome, under ``<state>/<job>/<task>/``.

Layout (every record a small JSON file)::

    attempts/00001.json   one per attempt: node, start, heartbeat, end, exit code, verdict, logs
    outcome.json          the goal: "success" (with the manifests published, each with its
                          version), "permanent" (code and reason), "failed" (retries
                          exhausted), or "publishing" (an attempt holds the right to publish;
                          a republish's claim keeps the success it replaces, in ``replaced``)
    published/00002/1.json  the journal's copy of each manifest attempt 2 published, written
                          before its success record (so published outputs can be checked and
                          republished when the store lost them)
    steps/<name>.json     a finished ``taskkit step`` and the files it published
    skips/<at>-<id>.json  a run that started no attempt: its goal was met, or its work's
                          permanent failure was recorded (what a report counts as saved)
    checkpoint/           the synced TASKKIT_CHECKPOINT_DIR, with its manifest
    logs/00001/           each attempt's stdout.txt, stderr.txt, taskkit.txt

Invariants:

* Batch tells a task nothing about its retries, so the attempt records are the counter. A
  number is claimed by creating its record only if absent: two attempts never share one. An
  attempt killed with ``kill -9`` keeps its record without an end, and counts as interrupted
  once it is no longer alive (its node says its process is gone, or its heartbeat is stale).
* ``outcome.json`` only changes by conditional writes (if absent, or if still the version
  read), so of two attempts running at once exactly one publishes and records the outcome;
  :meth:`Journal.settle_outcome` is the one read-decide-write loop around them.
* A success is never forgotten by a republish that does not finish: its claim carries the
  success, a released claim puts it back, and a dead holder's claim reads as that success.
"""

from __future__ import annotations

import contextlib
import datetime
import enum
import functools
import json
import os
import secrets
import socket
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from taskkit.exceptions import Conflict, DataError, TaskFailure
from taskkit.periodic import Periodic
from taskkit.runner.lifetime import process_start as _process_start  # tells a reused pid apart
from taskkit.storage.base import Store
from taskkit.storage.stores import Stores

__all__ = [
    "Attempt",
    "AttemptState",
    "AttemptVerdict",
    "Heartbeat",
    "Journal",
    "Moved",
    "Outcome",
    "OutcomeState",
    "PublishedManifest",
    "Settle",
    "Skip",
    "StepFile",
    "StepRecord",
    "Version",
    "host_identity",
    "now",
]

#: A heartbeat older than this many intervals means its attempt is gone.
STALE_INTERVALS = 3
_NUMBER_WIDTH = 5

Version = str
#: An attempt's verdict as its record holds it: a :class:`~taskkit.runner.policy.Verdict`'s value.
AttemptVerdict = Literal["success", "retryable", "permanent"]
#: Whether an attempt ended, may still be running, or died without a word.
AttemptState = Literal["ended", "running", "interrupted"]
#: Where the task stands, as ``outcome.json`` says it (see :class:`Outcome`).
OutcomeState = Literal["publishing", "success", "permanent", "failed"]
_R = TypeVar("_R", bound="_Record")


def now() -> str:
    """The time as the journal writes it: UTC, ISO 8601, to the millisecond."""
    stamp = datetime.datetime.now(datetime.timezone.utc)
    return stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _seconds_since(stamp: str) -> float:
    then = datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    return (datetime.datetime.now(datetime.timezone.utc) - then).total_seconds()


@functools.cache
def host_identity() -> str:
    """This machine since its last boot: a process id means something only here. Read once
    per process (every attempt's state asks for it)."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        boot = ""
    return f"{socket.gethostname()}/{boot}"


class _Record(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")
    #: Fields added later, left out while None: a record without them writes back unchanged.
    _optional: ClassVar[tuple[str, ...]] = ()

    def to_bytes(self) -> bytes:
        left_out = {name for name in self._optional if getattr(self, name) is None}
        data = self.model_dump(mode="json", exclude=left_out)
        return json.dumps(data, indent=1, sort_keys=True).encode() + b"\n"


class Moved(_Record):
    """What one transfer of an attempt did, in the figures of its summary line: files in
    all, moved, found in place already (``skipped``), linked from the node cache; the bytes
    moved, the bytes of the files not moved (``kept``: in place, or linked), and the bytes a
    resumed file did not move again (``reused``)."""

    files: int = 0
    transferred: int = 0
    skipped: int = 0
    linked: int = 0
    bytes_transferred: int = 0
    bytes_kept: int = 0
    bytes_reused: int = 0


class Attempt(_Record):
    """One attempt of the task, as its record says."""

    number: int
    node: str = ""
    host: str = ""
    pid: int = 0
    pid_start: str | None = None
    #: The command's process group (its leader's pid) and that leader's start time, so that
    #: a later attempt on this host can end what an interrupted one left, and only that.
    command_pgid: int = 0
    command_start: str | None = None
    fingerprint: str
    started: str
    heartbeat: str
    interval: float
    logs: str | None = None
    ended: str | None = None
    exit_code: int | None = None
    verdict: AttemptVerdict | None = None
    reason: str | None = None
    last: bool = False
    #: What its staging and its upload did (absent when it did none, and from older records).
    staged: Moved | None = None
    uploaded: Moved | None = None
    _optional = ("staged", "uploaded")

    def state(self, host: str | None = None) -> AttemptState:
        """Whether it ended, may still be running, or died without a word."""
        if self.ended is not None:
            return "ended"
        if host is None:
            host = host_identity()
        if self.host == host and self.pid:
            alive = self.pid_start is not None and _process_start(self.pid) == self.pid_start
            return "running" if alive else "interrupted"
        stale = _seconds_since(self.heartbeat) > STALE_INTERVALS * max(self.interval, 10.0)
        return "interrupted" if stale else "running"


class PublishedManifest(_Record):
    """One DEST's manifest as a success published it: its URL (never a credential), its
    version in the store then, and the journal's copy of it (a name under the task's root)."""

    url: str
    version: str
    kept: str


class Outcome(_Record):
    """Where the task stands: ``publishing``, ``success``, ``permanent`` or ``failed``.
    ``published`` (one per DEST, in the order of the work's outputs) is absent from records
    written before it existed; ``manifests`` keeps their URLs for older readers.
    ``replaced``: in a ``publishing`` claim, the success it replaced (a republish of that
    success's outputs), put back if the claim is released; absent from older records."""

    state: OutcomeState
    fingerprint: str
    attempt: int
    at: str
    exit_code: int = 0
    reason: str = ""
    manifests: tuple[str, ...] = ()
    published: tuple[PublishedManifest, ...] = ()
    work: dict[str, Any] = {}
    replaced: Outcome | None = None


class StepFile(_Record):
    """One file a step published: where it is in the working directory and in the store."""

    path: str
    url: str
    digest: str
    size: int


class StepRecord(_Record):
    """A ``taskkit step`` that finished, and what it published."""

    name: str
    fingerprint: str
    attempt: int
    at: str
    files: tuple[StepFile, ...] = ()


class Skip(_Record):
    """A run of the task that started no attempt: the goal of its work was met by
    ``attempt`` (``met``, exit 0) or that attempt's permanent failure was recorded
    (``permanent``, exit with its code). ``started``: when the run began reading the journal."""

    goal: Literal["met", "permanent"]
    attempt: int
    node: str = ""
    started: str
    at: str
    exit_code: int = 0


class Settle(enum.Enum):
    """What a decision of :meth:`Journal.settle_outcome` may answer instead of a write."""

    STOP = "stop"  # nothing to write: the outcome stays as it is
    AGAIN = "again"  # nothing to write yet: read and decide again


class Journal:
    """The records of one task in one store. Reads are plain; writes that decide who
    publishes are conditional and raise :class:`~taskkit.exceptions.Conflict` when another
    attempt got there first."""

    def __init__(self, store: Store, root: str) -> None:
        self.store = store
        self.root = root.rstrip("/") + "/"

    @classmethod
    def open(cls, stores: Stores, state: str, job_id: str, task_id: str) -> Journal:
        store, key = stores.open(f"{state.rstrip('/')}/{job_id}/{task_id}/")
        return cls(store, key)

    def __repr__(self) -> str:
        return f"Journal({self.url('')!r})"

    def url(self, name: str) -> str:
        return self.store.url(self.root + name)

    def logs_url(self, number: int) -> str:
        return self.url(f"logs/{number:0{_NUMBER_WIDTH}d}/")

    @property
    def checkpoint_url(self) -> str:
        return self.url("checkpoint/")

    # -- reading -------------------------------------------------------------------------------

    def _load(self, name: str, model: type[_R]) -> tuple[_R, Version] | None:
        found = self.store.load(self.root + name)
        if found is None:
            return None
        data, version = found
        try:
            return model.model_validate_json(data), version
        except ValidationError as exc:
            detail = exc.errors()[0]["msg"]
            raise DataError(f"the journal record {self.url(name)} is damaged: {detail}") from None

    def outcome(self) -> tuple[Outcome, Version] | None:
        """The recorded outcome and its version, if there is one."""
        return self._load("outcome.json", Outcome)

    def attempts(self) -> list[Attempt]:
        """Every attempt recorded, in order."""
        return self._records("attempts", Attempt)

    def steps(self) -> list[StepRecord]:
        """Every step recorded, by name."""
        return self._records("steps", StepRecord)

    def _records(self, folder: str, model: type[_R]) -> list[_R]:
        """The records of one folder, by name (one listing, then one read each)."""
        names = sorted(
            f.key.rsplit("/", 1)[-1]
            for f in self.store.list(f"{self.root}{folder}/")
            if f.key.endswith(".json")
        )
        found = [self._load(f"{folder}/{name}", model) for name in names]
        return [record for record, _ in filter(None, found)]

    @staticmethod
    def tasks(stores: Stores, state: str, job_id: str) -> list[str]:
        """The ids of the tasks of ``job_id`` that have a journal, in one listing."""
        store, key = stores.open(f"{state.rstrip('/')}/{job_id}/")
        prefix = key.rstrip("/") + "/"
        found = {
            f.key[len(prefix) :].split("/", 1)[0]
            for f in store.list(prefix)
            if f.key.startswith(prefix) and "/attempts/" in f.key[len(prefix) :]
        }
        return sorted(found)

    def skips(self) -> list[Skip]:
        """Every run that started no attempt, oldest first."""
        return self._records("skips", Skip)

    def step(self, name: str) -> StepRecord | None:
        found = self._load(f"steps/{name}.json", StepRecord)
        return None if found is None else found[0]

    # -- writing -------------------------------------------------------------------------------

    def begin(
        self,
        *,
        fingerprint: str,
        interval: float,
        after: int,
        node: str = "",
        logs: Callable[[int], str] | None = None,
    ) -> tuple[Attempt, Version]:
        """Claim the first free attempt number above ``after`` and record its start."""
        number = after + 1
        while True:
            stamp = now()
            record = Attempt(
                number=number,
                node=node,
                host=host_identity(),
                pid=os.getpid(),
                pid_start=_process_start(os.getpid()),
                fingerprint=fingerprint,
                started=stamp,
                heartbeat=stamp,
                interval=interval,
                logs=None if logs is None else logs(number),
            )
            try:
                version = self.store.put(
                    self._attempt_key(number), record.to_bytes(), {}, if_absent=True
                )
            except Conflict:
                number += 1  # another attempt of this task took the number meanwhile
                continue
            return record, version

    def _attempt_key(self, number: int) -> str:
        return f"{self.root}attempts/{number:0{_NUMBER_WIDTH}d}.json"

    def update(self, record: Attempt, version: Version, **changes: Any) -> tuple[Attempt, Version]:
        """Rewrite this attempt's own record (a heartbeat, its end)."""
        updated = record.model_copy(update=changes)
        key = self._attempt_key(record.number)
        return updated, self.store.put(key, updated.to_bytes(), {}, if_match=version)

    def write_outcome(self, outcome: Outcome, *, replacing: Version | None) -> Version:
        """Record ``outcome`` if the outcome is still the version read (``None``: there was
        none); :class:`Conflict` if another attempt changed it first."""
        key = self.root + "outcome.json"
        if replacing is None:
            return self.store.put(key, outcome.to_bytes(), {}, if_absent=True)
        return self.store.put(key, outcome.to_bytes(), {}, if_match=replacing)

    def settle_outcome(
        self,
        decide: Callable[[], tuple[Outcome, Version | None] | Settle],
        *,
        tries: int,
        kept: Callable[[Outcome, Version], None] | None = None,
        hold: Callable[[], AbstractContextManager[object]] = contextlib.nullcontext,
    ) -> None:
        """The compare-and-swap loop on ``outcome.json``: ``decide`` reads what it needs and
        answers the outcome to write in place of the version it read (``None``: there was
        none), or :attr:`Settle.STOP` (nothing to write) or :attr:`Settle.AGAIN` (nothing to
        write yet; one try spent). A write another attempt beat (:class:`Conflict`) is
        decided again, ``tries`` times in all; then the last :class:`Conflict` is raised.
        ``kept`` sees what was written and its version inside ``hold`` (a block no signal
        cuts in half: a claim is never written without its version kept)."""
        conflict = Conflict("other attempts keep changing the outcome")
        for _ in range(tries):
            wanted = decide()
            if wanted is Settle.STOP:
                return
            if wanted is Settle.AGAIN:
                continue
            outcome, replacing = wanted
            try:
                with hold():
                    version = self.write_outcome(outcome, replacing=replacing)
                    if kept is not None:
                        kept(outcome, version)
                return
            except Conflict as exc:
                conflict = exc
        raise conflict

    def release(self, version: Version, restore: Outcome | None = None) -> None:
        """Give up a ``publishing`` claim that could not be completed, if it is still the
        version held: ``restore`` (the success the claim replaced) is written back in its
        place, else the claim is deleted."""
        if restore is not None:
            self.write_outcome(restore, replacing=version)
        else:
            self.store.delete(self.root + "outcome.json", if_match=version)

    def record_skip(self, record: Skip) -> None:
        """Note a run that started no attempt: a file of its own (never a shared counter,
        which two runs at once would have to race for), named to sort by time."""
        stamp = record.at.replace("-", "").replace(":", "").replace(".", "")
        key = f"{self.root}skips/{stamp}-{os.getpid()}-{secrets.token_hex(4)}.json"
        self.store.put(key, record.to_bytes(), {})

    def record_step(self, record: StepRecord) -> None:
        self.store.put(f"{self.root}steps/{record.name}.json", record.to_bytes(), {})


class Heartbeat:
    """Rewrites the attempt's record every interval, so other nodes can tell it is alive;
    ``finish`` writes its end."""

    def __init__(self, journal: Journal, record: Attempt, version: Version) -> None:
        self.journal, self.record, self.version = journal, record, version
        self._lock = threading.Lock()
        self._every = Periodic(record.interval, self._beat, "taskkit-heartbeat")

    def __enter__(self) -> Heartbeat:
        self._every.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._every.stop()

    def _beat(self) -> None:
        with contextlib.suppress(TaskFailure):
            self._write(heartbeat=now())

    def _write(self, **changes: object) -> None:
        with self._lock:
            self.record, self.version = self.journal.update(self.record, self.version, **changes)

    def update(self, **changes: object) -> None:
        """Record ``changes`` now (with a heartbeat), as the next beat would."""
        self._write(heartbeat=now(), **changes)

    #: The attempt's end is written as any other change of its record.
    finish = update
