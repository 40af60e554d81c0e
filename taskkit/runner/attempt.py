"""One attempt of a task, from its claimed number to its recorded end: the execution of an
:class:`~taskkit.runner.plan.AttemptPlan`, with the collaborators of an :class:`AttemptContext`.

Stage the inputs, restore the checkpoint directory, run the command with its logs teed and
streamed and a heartbeat written, decide with the exit-code policy, publish the outputs under
the ``publishing`` claim on success, record a permanent failure (or the last attempt's), and
write the attempt's end. Invariants: outputs are uploaded only by the holder of the claim, and
success is recorded by replacing that very claim (If-Match), so of two attempts running at once
one publishes; an attempt whose work lost to other work published since it began never exits 0
(204, "lost race"); whatever fails inside, the attempt's end is written when the store allows it.
When a success's published outputs are gone and the working directory still holds them, the
attempt republishes them without running the command. Before anything is staged, what an
interrupted attempt on this host left of its command is ended (:mod:`taskkit.runner.lifetime`), so
two
copies of the command never run at once; the attempt's own directories that cannot be made, a
``taskkit.txt`` that cannot be written (the attempt then ends before its command), and any
``OSError`` met inside are local I/O (203), not an internal error. After staging and before
the command, the outputs that earlier work of this task left in the working directory are
removed (:mod:`taskkit.runner.leftovers`), so what is published is a function of the current work.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import tempfile
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from taskkit.exceptions import (
    Conflict,
    DataError,
    IOFailure,
    MisuseError,
    TaskFailure,
    TaskkitError,
    TransientError,
    from_os_error,
)
from taskkit.observer import Observer
from taskkit.redaction import shown_url
from taskkit.runner.checkpoint import Checkpoint, confined
from taskkit.runner.command import Finished, SignalsDeferred, Stopped, signals_held
from taskkit.runner.goal import (
    CLAIM_TRIES,
    goal,
    holder_alive,
    lost_race,
    wait_for,
)
from taskkit.runner.journal import (
    Attempt,
    Heartbeat,
    Journal,
    Moved,
    Outcome,
    PublishedManifest,
    Settle,
    Version,
    host_identity,
    now,
)
from taskkit.runner.leftovers import Leftovers, commands_gone
from taskkit.runner.lifetime import (
    RUNNER_MARK,
    end_groups_left_by,
    gone_for_sure,
    interrupted_on,
    runner_mark,
)
from taskkit.runner.logs import LogSink, Phase, settle_lost
from taskkit.runner.policy import Decision, Ending, Verdict
from taskkit.runner.published import destinations, recorded
from taskkit.runner.transfers import stage_inputs, upload_outputs
from taskkit.storage.stores import Stores
from taskkit.transfer.patterns import Output
from taskkit.transfer.stage_plan import Plan
from taskkit.transfer.summary import Summary
from taskkit.transfer.upload_plan import MANIFEST_NAME

if TYPE_CHECKING:
    from taskkit.runner.plan import AttemptPlan

__all__ = ["AttemptContext", "AttemptRun", "Launcher"]

Launcher = Callable[..., Finished]


@dataclass(frozen=True)
class AttemptContext:
    """What an attempt works with beside its plan: the run's stores, the environment it reads
    and gives its command, how the command is launched, who hears what it says, and how
    long a stopped command is given to end."""

    stores: Stores
    environ: Mapping[str, str]
    launch: Launcher
    observer: Observer
    grace: float = 10.0


class AttemptRun:
    """One attempt, carrying out an :class:`~taskkit.runner.plan.AttemptPlan`: the state it
    carries from start to end."""

    sink: LogSink | None = None  # the attempt's logs, once they are set up
    signals: SignalsDeferred  # what came while the attempt ran, once it runs

    def __init__(self, *, plan: AttemptPlan, context: AttemptContext) -> None:
        spec = self.spec = plan.spec
        self.plan = plan
        # The outcome's version when the plan was made, and, when the published outputs of
        # this work are gone, what to do about it.
        self.seen, self.gone = plan.goal.version, plan.gone
        self.stores, self.work, self.policy = context.stores, plan.work, plan.policy
        self.journal = Journal.open(context.stores, spec.state or "", plan.job_id, plan.task_id)
        self.env = dict(context.environ)
        self.launch, self.observer = context.launch, context.observer
        self.grace = context.grace
        self.workdir = plan.workdir
        self.started = time.monotonic()
        #: What its staging and upload did, written with the attempt's end (for reports).
        self.moved: dict[str, Moved] = {}

    def run(self) -> int:
        """The attempt from its record's start to its end's; its exit code. SIGTERM and SIGINT
        stop it in order up to its decision (143, 130); after that its end is recorded and
        stands, the signal noted (a second one ends the process at once)."""
        with SignalsDeferred() as signals:
            self.signals = signals
            number, decision = self._run()
        if signals.caught:
            self.observer.warning(
                f"received {signal.Signals(signals.caught[0]).name} as attempt "
                f"{number} ended: its end ({decision.verdict.value}, exit "
                f"{decision.exit_code}) is recorded and stands"
            )
        return decision.exit_code

    def _run(self) -> tuple[int, Decision]:
        plan, journal = self.plan, self.journal
        previous = list(plan.attempts)
        after = max((a.number for a in previous), default=0)
        record, version = journal.begin(
            fingerprint=self.work.fingerprint,
            interval=self.spec.log_interval,
            after=after,
            node=self.env.get("AZ_BATCH_NODE_ID", ""),
            logs=journal.logs_url,
        )
        number = record.number
        last, label = plan.last, plan.label
        if plan.ordinal != number:
            label += f", attempt {number} in the journal"
        beat = self.beat = Heartbeat(journal, record, version)
        try:
            private = _private_dir(self.env, number)
            try:
                decision = self._logged(
                    beat, private.name, previous, number, label, last, plan.unavailable
                )
            finally:
                private.cleanup()
        except (TaskFailure, OSError) as exc:  # the logs could not be set up, or the journal
            failure = exc if isinstance(exc, TaskFailure) else from_os_error(exc, "cannot proceed")
            self.observer.problem(failure)
            decision = self.policy.decide(Ending(error=failure))
        try:
            beat.finish(
                ended=now(),
                exit_code=decision.exit_code,
                verdict=decision.verdict.value,
                reason=decision.reason,
                last=last,
                **self.moved,
            )
        except TaskFailure as exc:  # the end stays unwritten: the attempt reads as interrupted
            self.observer.warning(f"cannot record the end of attempt {number}: {exc}")
        return number, decision

    def _logged(
        self,
        beat: Heartbeat,
        private: str,
        previous: list[Attempt],
        number: int,
        label: str,
        last: bool,
        unavailable: TaskFailure | None,
    ) -> Decision:
        """The attempt with its heartbeat beating and its logs streamed; its decision."""
        spec = self.spec
        with (
            beat,
            LogSink(
                os.path.join(private, "logs"),
                self.journal.logs_url(number),
                stores=self.stores,
                interval=spec.log_interval,
                observer=self.observer,
                keep_local=False,
            ) as sink,
            sink.keeping(logging.getLogger("taskkit")),
        ):
            self.sink = sink
            interrupted = [a.number for a in previous if a.state() == "interrupted"]
            self._tell(
                sink,
                f"{label} ({self.work.fingerprint})"
                + (f"; interrupted before: {interrupted}" if interrupted else ""),
                Phase.STARTED,
            )
            self._settle_lost_logs(sink, previous, number)
            unwritable = _unwritable(sink)
            try:
                if unwritable is not None:  # nothing it does would be kept: not worth running
                    raise unwritable
                with self.signals.acting():
                    blocked = self._end_old_commands(sink, previous)
                    decision = self._attempt(sink, number, private, blocked or unavailable)
            except Stopped as stop:
                decision = self.policy.decide(Ending(128 + stop.signum, stop.signum))
                decision = decision._replace(
                    reason=f"taskkit was stopped by {stop.name} ({decision.verdict.value})"
                )
            except TaskFailure as exc:  # its own log cannot be written
                decision = self.policy.decide(Ending(error=exc))
            except Exception as exc:  # still end the attempt in order
                decision = self.policy.decide(Ending(error=_unexpected(exc, self.observer)))
            decision = self._record(decision, number, last)
            self._tell(
                sink,
                f"attempt {number}: {decision.verdict.value}: {decision.reason}"
                f" (exit {decision.exit_code})",
                Phase.ENDED,
            )
            if last and decision.verdict is not Verdict.SUCCESS:
                from taskkit.runner.diagnostics import write_diagnostics

                write_diagnostics(sink, self.workdir, self.env, decision, self.observer)
        return decision

    def _settle_lost_logs(self, sink: LogSink, previous: list[Attempt], number: int) -> None:
        """Interrupted attempts since the last one that got going may have died before their
        first upload: store what they left here, or one line saying so, so that no attempt
        points at logs that do not exist. Best effort: a failure is not this attempt's."""
        newest = max((a.number for a in previous if a.state() != "interrupted"), default=0)
        task_dir = self.env.get("AZ_BATCH_TASK_DIR")
        for old in previous:
            if old.number <= newest or old.state() != "interrupted":
                continue
            local = None
            if task_dir and old.host == host_identity():
                local = os.path.join(task_dir, "taskkit", f"attempt-{old.number:05d}", "logs")
            why = (
                f"attempt {old.number} was interrupted before its logs reached the store "
                f"(noted by attempt {number})"
            )
            prefix = f"{self.journal.root}logs/{old.number:05d}/"
            with contextlib.suppress(TaskFailure):
                if settle_lost(self.journal.store, prefix, local, why):
                    self._tell(sink, f"stored what attempt {old.number} left of its logs")
                    if local is not None:
                        shutil.rmtree(local, ignore_errors=True)

    def _end_old_commands(self, sink: LogSink, previous: list[Attempt]) -> TaskFailure | None:
        """Kill what interrupted attempts on this host and boot left of their commands (their
        watchdogs killed too) and wait until it is gone: never two copies at once. Why this
        attempt cannot run, if what is left cannot be ended."""
        host = host_identity()
        left = interrupted_on(previous, host)
        for old, ended in end_groups_left_by(left, host):
            pgid = f" (pgid {old.command_pgid})" if old.command_pgid else ""
            what = f"attempt {old.number}'s command{pgid}"
            if not ended:
                return TransientError(f"what is left of {what} is still running; cannot end it")
            self._tell(sink, f"killed what was left of {what}")
        # Nothing of them runs now: a bound on what they wrote (their watchdogs may be dead).
        commands_gone(self.spec, self.workdir, gone_for_sure(left))
        return None

    def _tell(self, sink: LogSink, line: str, phase: Phase | None = None) -> None:
        if phase is None:
            sink.note(line)
        else:
            sink.phase(phase, line)
        self.observer.note(line)

    def _note(self, line: str) -> None:
        if self.sink is not None:
            self.sink.note(line)

    def _phase(self, phase: Phase, line: str = "") -> None:
        if self.sink is not None:
            self.sink.phase(phase, line)

    def _attempt(
        self, sink: LogSink, number: int, private: str, unavailable: TaskFailure | None
    ) -> Decision:
        if self.gone is not None:
            sink.note(self.gone.line)
            if self.gone.republish:
                return self._republish(number, self.gone.attempt)
        if unavailable is not None:
            return self.policy.decide(Ending(error=unavailable))
        spec = self.spec
        try:
            _make_dir(self.workdir, "cannot make the working directory")
            staged: list[Plan] = []
            if spec.inputs:
                self._phase(Phase.STAGING, f"into {self.workdir}")
                error = self._staged(on_plan=staged.append).exit_error()
                if error is not None:
                    return self.policy.decide(Ending(error=error))
                self._phase(Phase.STAGED)
            # Before the command (and the checkpoint it restores): outputs of other work go.
            leftovers = Leftovers.begin(
                spec, self.workdir, self.work, number, staged, lambda m: self._tell(sink, m)
            )
            checkpoint = Checkpoint(
                confined(self.workdir, spec.checkpoint_dir)
                if spec.checkpoint_dir
                else os.path.join(private, "checkpoint"),
                self.journal.checkpoint_url,
                self.work.fingerprint,
                stores=self.stores,
                task=self._task(number),
                interval=spec.checkpoint_interval,
                warn=self.observer.warning,
                environ=self.env,
                retired=self._retired(number),
            )
            _make_dir(checkpoint.directory, "cannot make the checkpoint directory")
            restored = checkpoint.restore(self.stores)
            if restored:
                self._tell(sink, f"restored {restored} checkpoint files")
            left = None if spec.deadline is None else spec.deadline - self._elapsed()
            if left is not None and left <= 0:
                return self.policy.decide(Ending(timed_out=True))
            with checkpoint:
                self._phase(Phase.COMMAND_STARTED)
                finished = self.launch(
                    list(spec.command),
                    sink=sink,
                    deadline=left,
                    grace=self.grace,
                    env=self._command_env(number, checkpoint.directory),
                    cwd=self.workdir,
                    on_start=self._command_started,
                    tombstone=leftovers.tombstone,
                )
                leftovers.end()  # at once: the checkpoint's last sync may fail or be stopped
                self._phase(Phase.COMMAND_ENDED, finished.describe())
        except TaskFailure as exc:
            return self.policy.decide(Ending(error=exc))
        decision = self.policy.decide(Ending.of(finished))
        if decision.verdict is Verdict.SUCCESS:
            return self._publish(number, decision, leftovers)
        return decision

    def _command_started(self, pgid: int, start: str) -> None:
        # Best effort: the watchdog ends the command if taskkit dies; the record is for when
        # the watchdog dies too.
        with contextlib.suppress(TaskFailure):
            self.beat.update(command_pgid=pgid, command_start=start)

    # Both transfers go as taskkit stage/upload would, with the spec's transfer settings (and
    # node cache), and say what they did on the console and in the attempt's taskkit.txt.
    def _staged(self, on_plan: Callable[[Plan], None]) -> Summary:
        summary = stage_inputs(
            self.spec,
            self.workdir,
            stores=self.stores,
            environ=self.env,
            note=self._note,
            observer=self.observer,
            on_plan=on_plan,
        )
        self.moved["staged"] = _moved(summary)
        return summary

    def _uploaded(self, number: int, version: Version) -> Summary:
        summary = upload_outputs(
            self.spec,
            self.workdir,
            stores=self.stores,
            task=self._task(number),
            environ=self.env,
            note=self._note,
            observer=self.observer,
            fence=lambda: _still_held(self.journal, version),
        )
        self.moved["uploaded"] = _moved(summary)
        return summary

    def _elapsed(self) -> float:
        return time.monotonic() - self.started

    def _retired(self, number: int) -> list[int]:
        """The earlier attempts that will not sync again: ended, or interrupted and gone
        (their checkpoint folders are removed once this attempt has a sync of its own). Best
        effort: a journal that cannot be read now retires none."""
        try:
            earlier = self.journal.attempts()
        except TaskFailure:
            return []
        return [a.number for a in earlier if a.number != number and a.state() != "running"]

    def _task(self, number: int) -> dict[str, str | int]:
        task: dict[str, str | int] = {
            "job": self.spec.job_id or "",
            "task": self.spec.task_id or "",
            "attempt": number,
        }
        if self.env.get("AZ_BATCH_NODE_ID"):
            task["node"] = self.env["AZ_BATCH_NODE_ID"]
        return task

    def _command_env(self, number: int, checkpoint: str) -> dict[str, str]:
        spec = self.spec
        return {
            **self.env,
            "TASKKIT_STATE": spec.state or "",
            "TASKKIT_JOB_ID": spec.job_id or "",
            "TASKKIT_TASK_ID": spec.task_id or "",
            "TASKKIT_ATTEMPT": str(number),
            "TASKKIT_LAST_ATTEMPT": "1" if self.plan.last else "0",
            "TASKKIT_FINGERPRINT": self.work.fingerprint,
            "TASKKIT_WORKDIR": self.workdir,
            "TASKKIT_CHECKPOINT_DIR": os.path.abspath(checkpoint),
            # What this attempt starts can be told apart by a later one from the record alone.
            RUNNER_MARK: runner_mark(self.beat.record.pid, self.beat.record.pid_start),
        }

    def _outcome(self, state: str, number: int, decision: Decision, **more: object) -> Outcome:
        return Outcome.model_validate(
            {
                "state": state,
                "fingerprint": self.work.fingerprint,
                "attempt": number,
                "at": now(),
                "exit_code": decision.exit_code,
                "reason": decision.reason,
                "work": self.work.as_json(),  # credential-free, as the fingerprint is made
                **more,
            }
        )

    def _republish(self, number: int, done: int) -> Decision:
        """Publish again the outputs attempt ``done`` published for this work, which the store
        lost and the working directory still holds as they were; the command is not run."""
        return self._publish(
            number,
            Decision(
                Verdict.SUCCESS,
                0,
                f"republished the outputs of attempt {done} from the working directory "
                "(the command was not run)",
            ),
        )

    def _publish(
        self, number: int, decision: Decision, leftovers: Leftovers | None = None
    ) -> Decision:
        """Take the publishing claim, upload the outputs, keep a copy of each manifest, record
        success (with each manifest's version) in the claim's place. Exit 0 without publishing
        when another attempt published this same work meanwhile; 204 when it published other
        work since this attempt began (a lost race: the next attempt decides afresh). A claim
        that replaces a success of this work (a republish) carries it, and whatever ends this
        attempt before its success is recorded (a failure, a signal, a bug) gives the claim
        back, putting that success back in its place. 204 too, before anything, when files of
        other work may be among those the patterns match (``leftovers`` knows: an attempt of
        other work runs in the working directory, or ran beside this one): no mixed set is
        published."""
        journal = self.journal
        mixed = None
        if leftovers is not None and self.spec.outputs:
            mixed = leftovers.mixed(self._running)
        if mixed is not None:
            error = TransientError(f"{mixed}; not publishing a mixed set")
            return self.policy.decide(Ending(error=error))
        held: list[tuple[Outcome, Version]] = []  # the claim written, with its version
        settled: list[Decision] = []  # the attempt's end, when it must not claim

        def decide() -> tuple[Outcome, Version | None] | Settle:
            status = goal(journal, self.work, self.stores)
            if status.state == "met" and status.outcome is not None:
                settled.append(
                    Decision(
                        Verdict.SUCCESS,
                        0,
                        f"attempt {status.outcome.attempt} published the same work meanwhile",
                    )
                )
                return Settle.STOP
            lost = lost_race(status, self.work, self.seen)
            if lost is not None:  # a normal, retryable end: said as it is
                settled.append(
                    self.policy.decide(Ending(error=Conflict(lost)))._replace(reason=lost)
                )
                return Settle.STOP
            if status.state == "publishing":
                wait_for(journal, status)
                return Settle.AGAIN
            replaced = status.outcome if status.state == "gone" else None
            return self._outcome("publishing", number, decision, replaced=replaced), status.version

        try:
            try:
                journal.settle_outcome(
                    decide,
                    tries=CLAIM_TRIES,
                    kept=lambda claim, version: held.append((claim, version)),
                    hold=signals_held,  # no claim is written without its version kept
                )
            except Conflict:
                return self.policy.decide(
                    Ending(
                        error=Conflict(
                            "cannot claim the outputs: other attempts keep changing the outcome"
                        )
                    )
                )
            if settled:
                return settled[0]
            claim, version = held[0]
            decision = self._claimed(number, decision, version)
            if decision.verdict is not Verdict.SUCCESS:
                self._give_back(claim, version)
            return decision
        except BaseException:  # a signal, or a bug: the claim must not outlive this attempt
            for claim, version in held:
                self._give_back(claim, version)
            raise

    def _running(self, number: int) -> bool:
        """Whether attempt ``number`` of this task may still be running, as its record says
        (for one of another node or boot; one that cannot be read is taken for running)."""
        try:
            return holder_alive(self.journal, number)
        except TaskFailure:
            return True

    def _give_back(self, claim: Outcome, version: Version) -> None:
        """Release the claim, if still ours, restoring the success it replaced. Best effort: a
        claim left behind is a dead holder's, which the next attempt takes over."""
        with contextlib.suppress(TaskFailure), signals_held():
            self.journal.release(version, claim.replaced)

    def _claimed(self, number: int, decision: Decision, version: Version) -> Decision:
        """Holding the claim at ``version``: upload, keep the manifests' copies, record
        success in the claim's place."""
        journal = self.journal
        manifests: tuple[str, ...] = ()
        published: tuple[PublishedManifest, ...] = ()
        if self.spec.outputs:
            self._phase(Phase.UPLOADING, f"from {self.workdir}")
            try:
                summary = self._uploaded(number, version)
                error = summary.exit_error()
                if error is None:
                    places = destinations(self.stores, self.spec.outputs)
                    published = recorded(journal, number, places, summary.published)
            except TaskFailure as exc:
                error = exc
            if error is not None:
                return self.policy.decide(Ending(error=error))
            manifests = tuple(_manifest_url(o) for o in self.spec.outputs)
        success = self._outcome(
            "success", number, decision, manifests=manifests, published=published
        )
        # From here a signal changes nothing: were it to stop the attempt, the success written
        # and the end taskkit exits with could disagree.
        self.signals.settle()
        try:  # in the claim's place, once: a claim taken over is not this attempt's any more
            journal.write_outcome(success, replacing=version)
        except Conflict:
            return self.policy.decide(
                Ending(
                    error=TransientError(
                        "another attempt took over the publishing claim; the next attempt "
                        "will settle it"
                    )
                )
            )
        self._phase(Phase.PUBLISHED, ", ".join(manifests) or "no outputs")
        return decision

    def _record(self, decision: Decision, number: int, last: bool) -> Decision:
        """Record a permanent failure, or a retryable one on the last attempt; never in place
        of another attempt's success, claim, or work published since this attempt began."""
        if decision.verdict is Verdict.SUCCESS:
            return decision
        if decision.verdict is Verdict.RETRYABLE and not last:
            return decision
        state = "permanent" if decision.verdict is Verdict.PERMANENT else "failed"
        outcome = self._outcome(state, number, decision)

        def decide() -> tuple[Outcome, Version | None] | Settle:
            status = goal(self.journal, self.work, self.stores)
            theirs = status.outcome is not None and status.outcome.attempt != number
            if theirs and status.state in ("met", "publishing"):
                return Settle.STOP  # another attempt finished this work, or is publishing
            if status.state == "gone" and self.gone is not None and self.gone.republish:
                return Settle.STOP  # a failed republish: the success stays, to republish again
            if lost_race(status, self.work, self.seen) is not None:
                return Settle.STOP  # other work was published since: not this attempt's to undo
            return outcome, status.version

        with contextlib.suppress(Conflict):  # others kept changing it: theirs stands
            self.journal.settle_outcome(decide, tries=CLAIM_TRIES)
        return decision


def _moved(summary: Summary) -> Moved:
    return Moved(
        files=summary.files,
        transferred=summary.transferred,
        skipped=summary.skipped,
        linked=summary.linked,
        bytes_transferred=summary.bytes_transferred,
        bytes_kept=summary.bytes_kept,
        bytes_reused=summary.bytes_reused,
    )


def _still_held(journal: Journal, version: Version) -> None:
    """The fence of an upload under the claim written at ``version``: a holder frozen or cut
    off long enough for its heartbeat to go stale may have lost the claim to another attempt,
    whose published manifests it must then not replace or delete. One small read."""
    try:
        found = journal.outcome()
    except DataError:
        found = None  # not the claim this attempt wrote, whatever it is
    if found is not None and found[1] == version:
        return
    holder = "another attempt" if found is None else f"attempt {found[0].attempt}"
    raise TransientError(f"lost the publishing claim to {holder}")


def _manifest_url(output: Output) -> str:
    dest = output.dest
    return shown_url(dest if dest.endswith("/") else dest + "/") + MANIFEST_NAME


class _Private:
    """Where an attempt keeps its log files and default checkpoint directory."""

    def __init__(self, name: str, temporary: bool) -> None:
        self.name, self.temporary = name, temporary

    def cleanup(self) -> None:
        # Logs the store does not hold are kept (a warning said where); anything else left
        # under the task directory is Batch's to clean with the task.
        if self.temporary and not os.path.isdir(os.path.join(self.name, "logs")):
            shutil.rmtree(self.name, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):  # empty unless a checkpoint or logs are kept
                os.rmdir(self.name)


def _unwritable(sink: LogSink) -> IOFailure | None:
    """Local I/O (203, worth a retry elsewhere) when the attempt's first note could not be
    written to its ``taskkit.txt``: a full, read-only or failing disk under the task
    directory would leave the store empty logs of an attempt that ran."""
    log = sink.file("taskkit")
    if log.error is None:
        return None
    reason = (log.error.strerror or str(log.error)).lower()
    return IOFailure(
        f"cannot write the attempt's log {log.path!r}: {reason}",
        path=log.path,
        errno=log.error.errno,
    )


def _unexpected(exc: Exception, observer: Observer) -> TaskkitError:
    """What an exception nobody translated inside the attempt stands for: an ``OSError`` is
    about a local path (a disk full, a name the filesystem refuses), translated as everywhere
    else; anything else is a bug of taskkit's (206). ``TASKKIT_DEBUG`` shows its traceback,
    and changes nothing else: the attempt still ends in order with the run band's code."""
    # A switch of this taskkit process (as for the CLI), not of the task's environment.
    if os.environ.get("TASKKIT_DEBUG"):
        for line in "".join(traceback.format_exception(exc)).splitlines():
            observer.debug(line)
    if isinstance(exc, OSError):
        return from_os_error(exc, "cannot proceed")
    return MisuseError(f"internal error: {type(exc).__name__}: {exc}")


def _make_dir(path: str, what: str) -> None:
    """Make a directory of the attempt's own: whatever stops it (a file in the way, a disk
    full or read-only, no permission) is local I/O on this node, 203, worth a retry."""
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as exc:
        raise IOFailure(str(from_os_error(exc, what)), path=path, errno=exc.errno) from exc


def _private_dir(env: Mapping[str, str], number: int) -> _Private:
    """Under the Batch task directory (kept with the task, beside its stdout.txt), else a
    temporary directory: never inside the working directory, where output patterns look."""
    task_dir = env.get("AZ_BATCH_TASK_DIR")
    if task_dir:
        path = os.path.join(task_dir, "taskkit", f"attempt-{number:05d}")
        _make_dir(path, "cannot make the attempt's directory")
        return _Private(path, temporary=False)
    try:
        return _Private(tempfile.mkdtemp(prefix=f"taskkit-attempt-{number}-"), temporary=True)
    except OSError as exc:
        raise IOFailure(str(from_os_error(exc, "cannot make the attempt's directory"))) from exc
