"""One call of a task function, run once per key whatever the processes, nodes and retries.

The flow, as ``taskkit run``'s (plan -> execute -> record)::

    key the call -> read its journal -> goal met (outputs still published)? the stored result
                 -> permanent failure recorded? raise PermanentFailure with its text
                 -> another live call runs it? wait for it, then read again
                 -> else record an attempt, take the claim (``outcome.json``: publishing)
    say why it runs when earlier calls exist -> stage the inputs -> call the function
    -> failed? classify: permanent -> record it; retryable -> the next in-process try (a new
       attempt, the claim moved to it), or, the tries spent, record "failed" and raise
    -> succeeded: encode the result (refused if it would not come back the same), publish the
       outputs under the claim, keep the result, record success in the claim's place

Invariants (those of :mod:`taskkit.runner.run`): the function runs only after its attempt and
the claim are recorded, so two processes calling one key at once run it once (the other waits
and returns the stored result) and a ``kill -9`` leaves a claim whose holder is dead, taken
over by the next call; success is recorded by replacing the very claim (If-Match); a result is
written before the success that names it, under a name no later attempt rewrites. A call inside
another task's call shares its stores, state and observer: on a retry of the outer task its
finished inner calls return their stored results without running.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from taskkit.exceptions import (
    BadTask,
    Conflict,
    DataError,
    MisuseError,
    TaskFailure,
    TaskkitError,
    TransientError,
)
from taskkit.function.context import CallContext, entered
from taskkit.function.deadline import deadline
from taskkit.function.failures import (
    EX_CALL_PERMANENT,
    EX_CALL_RETRYABLE,
    PermanentFailure,
    classify,
    failure_text,
    said,
)
from taskkit.function.kept import keep_result, stored_result
from taskkit.function.key import CallKey, changes
from taskkit.function.moves import publish_outputs, stage_inputs
from taskkit.function.places import POOL, resolve_state, resources, scratch
from taskkit.function.plan import (
    CallPlan,
    Calls,
    call_key,
    call_status,
    latest,
    open_journal,
    plan_call,
    safe_name,
)
from taskkit.function.results import decode_result, encode_result
from taskkit.observer import NullObserver, Observer
from taskkit.runner.goal import CLAIM_TRIES, Goal, wait_for
from taskkit.runner.journal import Heartbeat, Journal, Outcome, Version, now
from taskkit.runner.policy import Verdict
from taskkit.storage.stores import Stores

if TYPE_CHECKING:
    from taskkit.function.spec import TaskSpec
    from taskkit.runner.checkpoint import Checkpoint

__all__ = ["call", "forget", "planned"]

#: How often a running call's attempt record is rewritten (other nodes read it as alive).
HEARTBEAT = 30.0


def planned(
    task: TaskSpec,
    args: Sequence[object],
    kwargs: Mapping[str, object],
    *,
    stores: Stores | None,
    environ: Mapping[str, str] | None,
    state: str | None = None,
    rerun: bool = False,
) -> CallPlan:
    opened, _, env, parent = resources(stores, NullObserver(), environ)
    state = resolve_state(task, env, parent, NullObserver(), state, say=False)
    return plan_call(task, args, kwargs, stores=opened, state=state, environ=env, rerun=rerun)


def forget(task: TaskSpec, args: Sequence[object], kwargs: Mapping[str, object]) -> bool:
    stores, told, env, parent = resources(None, None, None)
    state = resolve_state(task, env, parent, told)
    key = call_key(task, args, kwargs, stores=stores, environ=env, dry_run=True)
    journal = open_journal(POOL.calls(stores, state), task.name, key)
    return _forget(journal, told, _short(task.name))


def _forget(journal: Journal, told: Observer, name: str) -> bool:
    found = journal.outcome()
    if found is None or found[0].state == "publishing":
        return False  # nothing kept, or a live call's claim (not ours to clear)
    with contextlib.suppress(Conflict):  # changed meanwhile: what is there now stays
        journal.store.delete(journal.root + "outcome.json", if_match=found[1])
        what = {"permanent": "permanent failure", "failed": "failure"}.get(
            found[0].state, found[0].state
        )
        told.note(f"{name}: forgot the {what} of attempt {found[0].attempt}")
        return True
    return False


def call(
    task: TaskSpec,
    args: Sequence[object],
    kwargs: dict[str, object],
    *,
    stores: Stores | None = None,
    observer: Observer | None = None,
    environ: Mapping[str, str] | None = None,
    rerun: bool = False,
    state: str | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> object:
    """``task(*args, **kwargs)`` as the module docstring says; the (stored) result.
    ``state``: the state to use whatever the task says (``taskkit call --state``)."""
    opened, told, env, parent = resources(stores, observer, environ)
    given = state or (parent.given_state if parent is not None else None)
    state = resolve_state(task, env, parent, told, given)
    # Shown only if it runs: a hit never says its arguments.
    key = call_key(task, args, kwargs, stores=opened, environ=env, dry_run=False, shown=False)
    if key.code.notes and not task.noted:
        task.noted = True  # once per task and process: the code does not change meanwhile
        for note in key.code.notes:
            told.note(f"{_short(task.name)}: {note}")
    if parent is not None and key.digest in parent.chain:
        raise BadTask(
            f"{_short(task.name)} calls itself with the same arguments: it would wait for "
            "itself forever"
        )
    calls = POOL.calls(opened, state)
    journal = open_journal(calls, task.name, key)
    run = _Call(task, key, journal, opened, calls, state, told, env, args, kwargs, sleep)
    # The keys this call runs inside, a worker thread's adopted caller's included: a call
    # of one of them would wait for a claim its own caller holds, for ever.
    run.chain = parent.chain if parent is not None else frozenset()
    run.given_state = given
    return run.settle(rerun)


class _Lost(Exception):
    """Another call took the claim first: read the journal again."""


class _Call:
    """One call of one key, from the first read of its journal to its result."""

    def __init__(
        self,
        task: TaskSpec,
        key: CallKey,
        journal: Journal,
        stores: Stores,
        calls: Calls,
        state: str,
        observer: Observer,
        environ: Mapping[str, str],
        args: Sequence[object],
        kwargs: dict[str, object],
        sleep: Callable[[float], None],
    ) -> None:
        self.task, self.key, self.journal = task, key, journal
        self.stores, self.calls, self.state = stores, calls, state
        self.observer, self.env = observer, environ
        self.args, self.kwargs, self.sleep = args, kwargs, sleep
        self.name = _short(task.name)
        self.given_state: str | None = None  # the caller's choice, passed down (see call())
        self.chain: frozenset[str] = frozenset()  # the keys of the calls it runs inside
        self.warned = False  # why it runs was said already (as a warning)

    def settle(self, rerun: bool) -> object:
        journal = self.journal
        for _ in range(CLAIM_TRIES):
            status = call_status(journal, self.key, self.stores)
            if rerun and status.outcome is not None and status.state != "publishing":
                _forget(journal, self.observer, self.name)
                rerun = False
                continue
            if status.state == "met":
                assert status.outcome is not None
                try:
                    found = self._stored(status.outcome)
                except DataError as exc:  # lost or tampered with: the work is done again
                    self.observer.warning(f"{exc}; running it again")  # the one line said
                    why = str(exc).removeprefix(f"{self.name}: ")
                    status = Goal("open", status.outcome, status.version, why)
                    self.warned = True
                else:
                    self.observer.note(f"{self.name}: {status.why}; not run again")
                    return found
            if status.state == "permanent":
                assert status.outcome is not None
                raise self._permanent(status.outcome)
            if status.state == "publishing":
                self.observer.note(f"{self.name}: {status.why}; waiting for it")
                wait_for(journal, status)
                continue
            try:
                return self._run(status)
            except _Lost:
                continue
        raise Conflict(f"{self.name}: other calls keep changing the record of this key")

    # -- a hit -------------------------------------------------------------------------------

    def _stored(self, outcome: Outcome) -> object:
        kept = outcome.work.get("result") or {}
        return stored_result(self.journal, kept, self.name, self.task.options.result)

    def _permanent(self, outcome: Outcome) -> PermanentFailure:
        error = outcome.work.get("error") or {}
        return PermanentFailure(
            self.task.name,
            error.get("type", "Exception"),
            error.get("message", outcome.reason),
            error.get("traceback", ""),
            outcome.attempt,
        )

    # -- a run -------------------------------------------------------------------------------

    def _say_why(self, status: Goal) -> None:
        """One line, when earlier results of the function exist: why this call runs."""
        if self.warned:
            return
        try:
            before = latest(self.calls, self.task.name)
        except TaskFailure:
            before = None
        if before is None and status.outcome is None:
            return
        reasons = [] if status.outcome is None else [status.why]
        if before is not None:
            reasons += changes(before, self.key.as_json())
        if not reasons:
            return
        line = f"{self.name}: running: {'; '.join(reasons)}"
        if status.outcome is None and all(r.startswith("argument ") for r in reasons):
            # Only other arguments than the last call's: a new call (a fan-out's next
            # shard), not a result thrown away. Said in full only when debugging.
            self.observer.debug(line)
        else:
            self.observer.note(line)

    def _run(self, status: Goal) -> object:
        journal, options = self.journal, self.task.options
        self._say_why(status)
        after = max((a.number for a in journal.attempts()), default=0)
        held: Version | None = status.version
        tries = options.retries + 1
        for number_of_try in range(1, tries + 1):
            last = number_of_try == tries
            record, version = journal.begin(
                fingerprint=self.key.digest,
                interval=HEARTBEAT,
                after=after,
                node=self.env.get("AZ_BATCH_NODE_ID", ""),
            )
            after = record.number
            beat = Heartbeat(journal, record, version)
            claim = self._outcome("publishing", record.number)
            try:
                held = journal.write_outcome(claim, replacing=held)
            except Conflict:
                with contextlib.suppress(TaskFailure):
                    beat.finish(ended=now(), reason="another call took the claim first")
                raise _Lost() from None
            if number_of_try == 1:
                self._keep_latest()
            try:
                with beat:
                    value = self._attempt(record.number, last, held)
            except _Failed as failed:
                self._end(beat, failed.verdict, failed.reason)
                exc = failed.error
                if failed.verdict is Verdict.PERMANENT:
                    self._settle(held, "permanent", record.number, failed.reason, exc)
                    raise exc from None
                if last:
                    self._settle(held, "failed", record.number, failed.reason, exc)
                    raise exc from None
                pause = _backoff(number_of_try)
                self.observer.warning(
                    f"{self.name}: attempt {record.number} failed ({failed.reason}); "
                    f"trying again in {pause:.1f} s"
                )
                self.sleep(pause)
                continue
            except BaseException as exc:  # KeyboardInterrupt, SystemExit, a signal
                self._end(beat, Verdict.RETRYABLE, f"interrupted: {type(exc).__name__}")
                with contextlib.suppress(TaskFailure):
                    journal.store.delete(journal.root + "outcome.json", if_match=held)
                raise
            self._end(beat, Verdict.SUCCESS, "returned")
            shutil.rmtree(self._local("inputs"), ignore_errors=True)  # kept only for a retry
            return value
        raise MisuseError("unreachable: every try returns or raises")  # pragma: no cover

    def _attempt(self, number: int, last: bool, held: Version) -> object:
        """The function called once under the claim at ``held``; its result as stored."""
        args, kwargs = self.task.arranged(self.args, self.kwargs, self._staged(number))
        context = CallContext(
            task=self.task.name,
            attempt=number,
            last=last,
            stores=self.stores,
            state=self.state,
            observer=self.observer,
            environ=self.env,
            make_checkpoint=lambda: self._checkpoint(number),
            chain=self.chain | {self.key.digest},
            given_state=self.given_state,
        )
        try:
            with entered(context), deadline(self.task.options.deadline, self.observer, self.name):
                value = self.task.fn(*args, **kwargs)
        except Exception as exc:
            self._close_checkpoint(context.checkpoint)
            classified = classify(
                exc,
                retry_on=self.task.options.retry_on,
                permanent_on=self.task.options.permanent_on,
            )
            raise _Failed(exc, classified.verdict, f"{type(exc).__name__}: {said(exc)}") from None
        self._close_checkpoint(context.checkpoint)
        try:
            data = encode_result(value, self.task.options.result, name=self.name[:-2])
        except TaskkitError as exc:  # the same code would return the same value: permanent
            raise _Failed(exc, Verdict.PERMANENT, str(exc)) from None
        try:
            published = publish_outputs(
                self.task.output_texts,
                name=self.name,
                task={"task": self.task.name, "key": self.key.digest, "attempt": number},
                journal=self.journal,
                number=number,
                held=held,
                stores=self.stores,
                observer=self.observer,
                environ=self.env,
                allow_empty=self.task.options.allow_empty,
            )
            kept = keep_result(self.journal, number, data, self.task.options.result)
            success = self._outcome("success", number, result=kept, published=published)
            try:
                self.journal.write_outcome(success, replacing=held)
            except Conflict:
                raise TransientError(
                    f"{self.name}: another call took over the claim; the next call settles it"
                ) from None
        except TaskFailure as exc:
            classified = classify(exc)
            raise _Failed(exc, classified.verdict, str(exc)) from None
        return decode_result(data, self.task.options.result)

    def _staged(self, number: int) -> dict[str, Path]:
        inputs = self.task.options.inputs
        if not inputs:
            return {}
        paths, summary = stage_inputs(
            inputs,
            self._local("inputs"),
            name=self.name,
            stores=self.stores,
            observer=self.observer,
            environ=self.env,
        )
        error = summary.exit_error()
        if error is not None:
            raise _Failed(error, classify(error).verdict, str(error))
        return paths

    def _local(self, part: str) -> Path:
        return scratch(self.env) / safe_name(self.task.name) / self.key.hex[:16] / part

    def _checkpoint(self, number: int) -> Checkpoint:
        from taskkit.runner.checkpoint import Checkpoint

        checkpoint = Checkpoint(
            str(self._local("checkpoint")),
            self.journal.checkpoint_url,
            self.key.digest,
            task={"task": self.task.name, "attempt": number},
            interval=HEARTBEAT,
            warn=self.observer.warning,
            environ=self.env,
            stores=self.stores,
        )
        checkpoint.restore()
        checkpoint.__enter__()
        return checkpoint

    @staticmethod
    def _close_checkpoint(checkpoint: Checkpoint | None) -> None:
        if checkpoint is not None:
            checkpoint.__exit__(None, None, None)

    def _keep_latest(self) -> None:
        """The key of this call, as the most recent of its function (for explanations)."""
        record = json.dumps({"key": self.key.as_json(), "at": now()}, sort_keys=True)
        store, key = self.calls.store, self.calls.folder(self.task.name) + "latest.json"
        with contextlib.suppress(TaskFailure):  # explanations only: never worth a failure
            store.put(key, record.encode() + b"\n", {})

    def _outcome(self, state: str, number: int, **more: Any) -> Outcome:
        work: dict[str, Any] = {"key": self.key.as_json()}
        published = more.pop("published", ())
        work.update(more)
        return Outcome.model_validate(
            {
                "state": state,
                "fingerprint": self.key.digest,
                "attempt": number,
                "at": now(),
                "published": published,
                "work": work,
            }
        )

    def _settle(
        self, held: Version, state: str, number: int, reason: str, exc: BaseException
    ) -> None:
        """Record a permanent failure, or the tries spent, in the claim's place."""
        type_name, message, text = failure_text(exc)
        outcome = self._outcome(
            state,
            number,
            error={"type": type_name, "message": message, "traceback": text},
        ).model_copy(
            update={
                "reason": reason,
                "exit_code": EX_CALL_PERMANENT if state == "permanent" else EX_CALL_RETRYABLE,
            }
        )
        try:
            self.journal.write_outcome(outcome, replacing=held)
        except TaskFailure as failure:  # the claim is left to a dead holder: taken over later
            self.observer.warning(f"{self.name}: cannot record the failure: {failure}")

    def _end(self, beat: Heartbeat, verdict: Verdict, reason: str) -> None:
        try:
            beat.finish(ended=now(), verdict=verdict.value, reason=reason[:500])
        except TaskFailure as exc:
            self.observer.warning(f"{self.name}: cannot record the end of the attempt: {exc}")


class _Failed(Exception):
    """A try that failed: the error, its verdict and one line saying why."""

    def __init__(self, error: BaseException, verdict: Verdict, reason: str) -> None:
        super().__init__(reason)
        self.error, self.verdict, self.reason = error, verdict, reason


def _short(name: str) -> str:
    """How lines name a task: ``clean_rows()``."""
    return name.rpartition(":")[2].split("<locals>.")[-1] + "()"


def _backoff(number: int) -> float:
    """The pause before in-process try ``number + 1``: 1 s doubling, at most 60 s."""
    return float(min(60.0, 2.0 ** (number - 1)))
