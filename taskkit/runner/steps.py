"""``taskkit step``: a part of a shell task that is done once, whatever the retries.

Called inside a command ``taskkit run`` wraps, a step finds the task's journal through the
environment the runner sets (``TASKKIT_STATE``, ``TASKKIT_JOB_ID``, ``TASKKIT_TASK_ID``,
``TASKKIT_FINGERPRINT``, ``TASKKIT_ATTEMPT``). It runs in the directory it is called from, and
its output patterns and restored files are relative to it.

Invariants: a step is recorded done only after its outputs are published, and only for the
fingerprint of the step (the task's work, the step's name, command and outputs), so a change
of any of them runs it again. A step recorded done is not run; the files it published are
staged back where the working directory lost them or holds other content.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import xxhash

from taskkit.exceptions import ConfigError, UsageError
from taskkit.observer import NullObserver, Observer, Shown, observer_or_default
from taskkit.runner.checkpoint import restore
from taskkit.runner.command import run_logged
from taskkit.runner.journal import Journal, StepFile, StepRecord, now
from taskkit.storage.stores import Stores
from taskkit.transfer.manifest import Manifest
from taskkit.transfer.patterns import parse_output
from taskkit.transfer.upload import upload
from taskkit.transfer.upload_plan import MANIFEST_NAME, UploadPlan

__all__ = ["StepContext", "run_step"]

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


class StepContext(NamedTuple):
    """The task a step belongs to, as the runner tells it through the environment."""

    state: str
    job_id: str
    task_id: str
    fingerprint: str
    attempt: int
    workdir: str  # where the step runs: the directory it is called from

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> StepContext:
        env = os.environ if environ is None else environ
        missing = [
            name
            for name in ("TASKKIT_STATE", "TASKKIT_JOB_ID", "TASKKIT_TASK_ID")
            if not env.get(name)
        ]
        if missing:
            raise ConfigError(
                f"taskkit step runs inside a command of 'taskkit run' ({', '.join(missing)} "
                "not set)"
            )
        attempt = env.get("TASKKIT_ATTEMPT", "0")
        return cls(
            env["TASKKIT_STATE"],
            env["TASKKIT_JOB_ID"],
            env["TASKKIT_TASK_ID"],
            env.get("TASKKIT_FINGERPRINT", ""),
            int(attempt) if attempt.isdigit() else 0,
            os.getcwd(),
        )


def step_fingerprint(
    context: StepContext, name: str, command: Sequence[str], outputs: Sequence[str]
) -> str:
    text = "\0".join([context.fingerprint, name, *command, "\0", *outputs])
    return "xxh3-128:" + xxhash.xxh3_128_hexdigest(text.encode("utf-8", "surrogateescape"))


def run_step(
    name: str,
    command: Sequence[str],
    *,
    outputs: Sequence[str] = (),
    allow_empty: bool = False,
    stores: Stores | None = None,
    context: StepContext | None = None,
    environ: Mapping[str, str] | None = None,
    observer: Observer | None = None,
) -> int:
    """Run step ``name`` unless it is recorded done for this work; its exit code.
    ``environ``: the environment the step reads (the task it belongs to, the stat-cache) and
    its command gets (default: this process's, read once here). Every request goes through
    ``stores`` when given (left open), else through stores of its own, closed when it
    returns. ``observer`` (default: the ``"taskkit"`` logger) hears what it does."""
    if not _NAME.fullmatch(name):
        raise UsageError(
            f"step name {name!r}: use 1-100 letters, digits, '.', '_' or '-', starting with a "
            "letter or digit"
        )
    if not command:
        raise UsageError(f"step {name!r}: no command (taskkit step NAME -- COMMAND)")
    for output in outputs:
        parse_output(output)
    env = dict(os.environ if environ is None else environ)
    ctx = context or StepContext.from_environment(env)
    told = observer_or_default(observer)
    kept = _Kept(told)

    fingerprint = step_fingerprint(ctx, name, command, outputs)
    with contextlib.ExitStack() as stack:
        if stores is None:
            stores = stack.enter_context(Stores())
        journal = Journal.open(stores, ctx.state, ctx.job_id, ctx.task_id)
        record = journal.step(name)
        if record is not None and record.fingerprint == fingerprint:
            summary = restore(
                [(f.url, f.path) for f in record.files], ctx.workdir, environ=env, stores=stores
            )
            error = summary.exit_error()
            if error is not None:
                raise error
            fetched = summary.transferred + summary.linked
            again = f"; {fetched} of its files restored" if fetched else ""
            told.note(f"step {name}: done in attempt {record.attempt}, skipped{again}")
            return 0
        finished = run_logged(list(command), cwd=ctx.workdir, env=env)
        if finished.exit_code != 0:
            told.note(f"step {name}: {finished.describe()}; not recorded")
            return finished.exit_code
        if outputs:
            summary = upload(
                outputs,
                workdir=ctx.workdir,
                stores=stores,
                task={"job": ctx.job_id, "task": ctx.task_id, "attempt": ctx.attempt},
                allow_empty=allow_empty,
                observer=kept,
                environ=env,
            )
            error = summary.exit_error()
            if error is not None:
                raise error
        published = _published(kept.plans, stores)
        journal.record_step(
            StepRecord(
                name=name,
                fingerprint=fingerprint,
                attempt=ctx.attempt,
                at=now(),
                files=tuple(published),
            )
        )
        told.note(f"step {name}: done ({len(published)} files published)")
        return 0


class _Kept(NullObserver):
    """The observer of a step's upload: keeps its plans and passes on its warnings (the
    files its patterns pass over); its first failure is what the step raises, so the
    upload's problems are not said twice."""

    def __init__(self, observer: Observer) -> None:
        self.observer = observer
        self.plans: list[UploadPlan] = []

    def warning(self, text: str) -> None:
        self.observer.warning(text)

    def plan(self, plan: Shown) -> None:
        if isinstance(plan, UploadPlan):
            self.plans.append(plan)


def _published(plans: Sequence[UploadPlan], stores: Stores) -> list[StepFile]:
    """What each DEST's manifest says was published, with the local path of each file (read
    through ``stores``, the step's)."""
    files = []
    for plan in plans:
        for publication in plan.publications:
            store, key = stores.open(publication.dest)
            found = store.load(key.rstrip("/") + "/" + MANIFEST_NAME)
            if found is None:
                continue
            manifest = Manifest.parse(found[0], publication.manifest_url)
            digests = {f.name: f for f in manifest.files}
            for entry in publication.entries:
                published = digests.get(entry.name)
                if published is None:
                    continue
                files.append(
                    StepFile(
                        path=entry.local,
                        url=publication.dest.rstrip("/") + "/" + entry.name,
                        digest=str(published.digest),
                        size=published.size,
                    )
                )
    return files
