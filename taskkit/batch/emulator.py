"""A local Azure Batch: a job of task objects run on N emulated nodes of S slots, as the
service runs them, with the chaos a pool meets (``taskkit local run``).

The emulator takes :class:`~taskkit.batch.tasks.BatchTask` values (read from what ``taskkit
batch task-json`` prints) and carries out what the service does with them:

* Each node is a :class:`~taskkit.runner.local.LocalNode` in ``DIR/nodes/node-N`` with the
  ``AZ_BATCH_*`` variables and folders of a real node; a task runs in its task folder's ``wd``,
  its output appended to ``stdout.txt``/``stderr.txt`` there. ``DIR/state`` is the tasks'
  ``TASKKIT_STATE`` (shared by all nodes, as a storage account is) unless the environment or
  the task's ``environmentSettings`` name one.
* A command line runs without a shell, split as Batch splits it, in a process group of its own.
* A non-zero exit is retried up to ``maxTaskRetryCount`` (-1: unlimited) on whichever node has
  a free slot, the same or another; a retry on the same node finds its old working folder. A
  command that cannot be started is a pre-processing error: completed as failed, no retry.
* ``maxWallClockTime`` runs from the task's first start across its retries (the reading
  :mod:`taskkit.batch.taskjson` budgets for), and restarts when a lost node requeues the task,
  since the service then starts it afresh. On expiry the attempt's group gets SIGTERM, then
  SIGKILL after :data:`GRACE` seconds, and the task completes as failed, with no retry.
* On completion the task's ``exitConditions`` decide the ``dependencyAction`` its dependents
  meet (satisfy or block: a blocked task never runs) and the ``jobAction`` (disable or
  terminate), which is carried out only when the job's ``onTaskFailure`` is
  ``performExitOptionsJobAction``. Terminating the job ends its running tasks as failed;
  disabling it requeues them; in both cases nothing more starts.
* Chaos (:class:`~taskkit.batch.chaos.Chaos`): a killed attempt (and every attempt of a
  preempted node) is requeued without counting as a retry; a preempted node's folders are
  wiped before it takes tasks again, under a new node id, as a new Spot VM would come up.

Invariants: every attempt that was started is in the report with its node, start, end, exit
code and the chaos applied; when :meth:`Emulator.run` returns or raises (Ctrl-C included), no
process group it started is left running. Two emulators never share a ``DIR`` (a lock file).
The emulator never prints: it says what happens through :class:`Event` values to ``watch``
and notes to its observer.
"""

from __future__ import annotations

import contextlib
import hashlib
import heapq
import os
import random
import shutil
import signal
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from taskkit.batch.chaos import Chaos
from taskkit.batch.report import Attempt, EmulatorReport, Event, TaskReport
from taskkit.batch.tasks import BatchTask, ExitOptions
from taskkit.envnames import LOCAL_VARIABLE
from taskkit.exceptions import ConfigError, DataError, TransientError, UsageError
from taskkit.observer import Observer, observer_or_default
from taskkit.runner.lifetime import end_marked
from taskkit.runner.local import LocalNode

__all__ = [
    "DEFAULT_JOB_ID",
    "GRACE",
    "MARK",
    "POOL_MARK",
    "Emulator",
]

#: The job of ``taskkit local run`` when no ``--job-id`` is given.
DEFAULT_JOB_ID = "local"
#: Seconds between SIGTERM and SIGKILL when the wall clock runs out or the job is terminated.
GRACE = 5.0
_CONNECTION = "AZURE_STORAGE_CONNECTION_STRING"
#: The variable that marks every process of one attempt (``<emulator pid>-<serial>``): what a
#: lost node takes down is found by it, also the processes that left the attempt's group
#: (``taskkit run`` starts its command in a session of its own).
MARK = "TASKKIT_EMULATED_ATTEMPT"
#: The variable that marks every process of a pool (a digest of its folder): what a run of the
#: pool left running (the emulator killed with SIGKILL, a daemon a task started) is found by it.
POOL_MARK = "TASKKIT_EMULATED_POOL"
#: What ``taskkit run`` sets for its command, naming that one task: never a task of the pool's.
_NOT_INHERITED = frozenset(
    {
        LOCAL_VARIABLE,
        "TASKKIT_JOB_ID",
        "TASKKIT_TASK_ID",
        "TASKKIT_ATTEMPT",
        "TASKKIT_LAST_ATTEMPT",
        "TASKKIT_FINGERPRINT",
        "TASKKIT_WORKDIR",
        "TASKKIT_CHECKPOINT_DIR",
    }
)
#: Seconds the alarm thread sleeps at most between looks (a far alarm is looked at again).
_NAP = 3600.0

OnTaskFailure = Literal["noaction", "performExitOptionsJobAction"]


@dataclass
class _Node:
    index: int
    local: LocalNode
    slots: int
    generation: int = 0
    down: bool = False
    running: dict[str, _Running] = field(default_factory=dict)
    made: set[str] = field(default_factory=set)  # tasks whose folders this VM has made

    @property
    def name(self) -> str:
        """``AZ_BATCH_NODE_ID``: a preempted node comes back as a new VM, with a new id."""
        base = f"node-{self.index}"
        return base if not self.generation else f"{base}-r{self.generation}"

    @property
    def free(self) -> int:
        return 0 if self.down else self.slots - len(self.running)


@dataclass
class _Running:
    report: TaskReport
    attempt: Attempt
    node: _Node
    process: subprocess.Popen[bytes]
    started: float  # monotonic
    mark: bytes  # MARK=value, as it is in the environment of the attempt's processes
    ended_by: Literal["kill", "preempt", "wall-clock", "terminate", "disable", "abort"] | None = (
        None
    )
    waiter: threading.Thread | None = None  # the thread that reaps it, once made
    settled: bool = False  # its end is in the report (by its waiter, or by the run's end)


class _Alarms:
    """One thread that calls functions at given monotonic times (strikes, wall clocks)."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._cond = threading.Condition()
        self._count = 0
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name="taskkit-alarms", daemon=True)
        self._thread.start()

    def at(self, when: float, action: Callable[[], None]) -> None:
        with self._cond:
            self._count += 1
            heapq.heappush(self._heap, (when, self._count, action))
            self._cond.notify()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join(timeout=5)

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._closed and (not self._heap or self._heap[0][0] > time.monotonic()):
                    wait = self._heap[0][0] - time.monotonic() if self._heap else _NAP
                    self._cond.wait(min(max(wait, 0.0), _NAP))
                if self._closed:
                    return
                _, _, action = heapq.heappop(self._heap)
            action()


class Emulator:
    """Runs ``tasks`` as a Batch job on emulated nodes under ``root``; see the module
    docstring. ``environ`` is the environment the tasks start from (default: this process's),
    ``watch`` hears each :class:`Event` (called with the emulator's lock held: be quick)."""

    def __init__(
        self,
        tasks: Sequence[BatchTask],
        *,
        root: str | os.PathLike[str],
        job_id: str = DEFAULT_JOB_ID,
        nodes: int = 2,
        slots: int = 1,
        on_task_failure: OnTaskFailure = "noaction",
        chaos: Chaos | None = None,
        seed: int | None = None,
        environ: Mapping[str, str] | None = None,
        watch: Callable[[Event], None] | None = None,
        observer: Observer | None = None,
    ) -> None:
        if nodes < 1 or slots < 1:
            raise UsageError("local run: a pool has at least 1 node of at least 1 slot")
        if on_task_failure not in ("noaction", "performExitOptionsJobAction"):
            raise UsageError(
                "local run: --on-task-failure is noaction or performExitOptionsJobAction"
            )
        self.root = Path(os.path.abspath(os.fspath(root)))
        probe = LocalNode(self.root / "nodes" / "node-1")
        probe.plan(job_id, tasks[0].id if tasks else "t")  # the job id checked as Batch's
        self.job_id = job_id
        self.on_task_failure = on_task_failure
        self.chaos = chaos or Chaos()
        # Chaos without a seed gets one, in the report, so that the run can be replayed.
        self.seed = seed if seed is not None or not self.chaos else random.randrange(1 << 31)
        self.environ = dict(os.environ if environ is None else environ)
        self.watch = watch
        self.observer = observer_or_default(observer)
        self._nodes = [
            _Node(i, LocalNode(self.root / "nodes" / f"node-{i}", keeps_state=False), slots)
            for i in range(1, nodes + 1)
        ]
        self.report = EmulatorReport(
            job_id=job_id,
            nodes=nodes,
            slots=slots,
            seed=self.seed,
            chaos=self.chaos,
            tasks=[TaskReport(t) for t in tasks],
            started=time.time(),
        )
        self._by_id = {t.id: t for t in self.report.tasks}
        self._cond = threading.Condition()
        self._ready: deque[TaskReport] = deque()
        self._waiting: dict[str, int] = {}
        self._dependents: dict[str, list[str]] = {}
        self._place = random.Random(self.seed)
        self._ran: list[float] = []
        self._stopped: str | None = None
        self._alarms: _Alarms | None = None
        self._proxies: dict[str, Any] = {}
        self._threads: list[threading.Thread] = []
        self._serial = 0
        self._pool = hashlib.sha256(os.fsencode(self.root)).hexdigest()[:16]
        # What every task inherits (each launch copies it): the caller's environment without
        # what names one taskkit task, the pool's state unless the caller names one.
        self._inherited = {k: v for k, v in self.environ.items() if k not in _NOT_INHERITED}
        if not self._inherited.get("TASKKIT_STATE"):
            self._inherited["TASKKIT_STATE"] = self.state_url

    @property
    def task_state(self) -> str:
        """The ``TASKKIT_STATE`` the tasks get unless their own settings name another: the
        caller's, else :attr:`state_url`."""
        return self._inherited["TASKKIT_STATE"]

    @property
    def state_url(self) -> str:
        return "file://" + (self.root / "state").as_posix()

    # -- the run ---------------------------------------------------------------------------

    def run(self) -> EmulatorReport:
        """Run the job to its end; the report is also kept in :attr:`report`. Ctrl-C (any
        exception) kills every process group started and re-raises."""
        self.check()
        self._make_root()
        with self._locked():
            self._sweep("an earlier run of this pool left running")
            self._start_proxies()
            self._alarms = _Alarms()
            try:
                with self._cond:
                    self._queue_all()
                    self._schedule()
                    while not self._finished():
                        self._cond.wait(timeout=1.0)
            except BaseException:
                self._abort()
                raise
            finally:
                self._alarms.close()
                self._stop_proxies()
                for thread in self._threads:
                    # One whose start a signal cut short never ran: there is nothing to join.
                    if thread.is_alive():
                        thread.join(timeout=10)
                self._sweep("the job's tasks left running")
                self._settle_unreaped()
                self.report.ended = time.time()
                for task in self.report.tasks:
                    if task.state in ("waiting", "ready"):
                        task.state = "not-run"
        return self.report

    def _settle_unreaped(self) -> None:
        """Attempts a signal cut short as they were launched, whose waiter never ran (or was
        never registered): ended here, as interrupted, so that the report has no attempt
        left running."""
        with self._cond:
            for node in self._nodes:
                for running in list(node.running.values()):
                    if running.settled or (running.waiter and running.waiter.is_alive()):
                        continue
                    running.settled = True
                    running.ended_by = running.ended_by or "abort"
                    self._signal(running, signal.SIGKILL)
                    self._ended(running, running.process.wait())
            for task in self.report.tasks:
                if task.state == "running" and not any(
                    task.id in node.running for node in self._nodes
                ):  # its process started, the signal came before it was registered
                    task.state = "interrupted"
                    task.note = "interrupted: taskkit local run was stopped"
                    attempt = task.attempts[-1]
                    attempt.end = attempt.end or time.time()
                    attempt.note = task.note

    def check(self) -> None:
        """Refuse, before anything is made, what the run could not start with: a ``jobAction``
        on a job that does not act on them (the service refuses such a task), storage chaos
        with a task whose storage is not a local ``http://`` endpoint."""
        if self.on_task_failure == "noaction":
            for task in self.report.tasks:
                if task.task.exit_conditions.sets_job_action():
                    raise DataError(
                        f"task {task.id!r}: exitConditions set a jobAction, which Batch refuses "
                        "on a job whose onTaskFailure is noaction (give --on-task-failure "
                        "performExitOptionsJobAction)"
                    )
        if not self.chaos.storage:
            return
        proxy = _proxy_module()
        for task in self.report.tasks:
            if proxy.blob_endpoint(self._connection(task.task)) is None:
                raise UsageError(
                    f"--chaos storage=: task {task.id!r} has no {_CONNECTION} with an "
                    "http:// BlobEndpoint (storage chaos runs in front of a local endpoint "
                    "such as Azurite)"
                )

    def _sweep(self, what: str) -> None:
        """Kill every process carrying this pool's mark: none may outlive a run, or meet the
        next one's tasks in their folders."""
        if end_marked(f"{POOL_MARK}={self._pool}".encode()):
            self.observer.note(f"local run: ended the processes {what}")

    def _make_root(self) -> None:
        try:
            fresh = not self.root.exists()
            (self.root / "state").mkdir(parents=True, exist_ok=True)
            if fresh:
                (self.root / ".gitignore").write_text("# a taskkit local run\n*\n")
        except OSError as exc:
            raise ConfigError(
                f"local run: cannot make {str(self.root)!r}: {(exc.strerror or exc)}"
            ) from None

    @contextlib.contextmanager
    def _locked(self) -> Any:
        import fcntl

        with open(self.root / ".lock", "a+") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise TransientError(
                    f"local run: another taskkit local run is using {str(self.root)!r}"
                ) from None
            yield

    def _queue_all(self) -> None:
        for task in self.report.tasks:
            deps = task.task.depends_on
            for dep in deps:
                self._dependents.setdefault(dep, []).append(task.id)
            if deps:
                self._waiting[task.id] = len(deps)
            else:
                task.state = "ready"
                self._ready.append(task)

    def _finished(self) -> bool:
        running = any(node.running for node in self._nodes)
        if running:
            return False
        return self._stopped is not None or not self._ready

    def _say(self, kind: Any, task: TaskReport, node: _Node | None, text: str) -> None:
        if self.watch is not None:
            running = sum(len(n.running) for n in self._nodes)
            self.watch(Event(kind, task.id, None if node is None else node.name, text, running))

    # -- scheduling (all with the lock held) -----------------------------------------------

    def _schedule(self) -> None:
        while self._ready and self._stopped is None:
            free = [node for node in self._nodes if node.free > 0]
            if not free:
                return
            node = free[0] if len(free) == 1 else self._place.choice(free)
            self._launch(self._ready.popleft(), node)

    def _launch(self, task: TaskReport, node: _Node) -> None:
        local = node.local.plan(self.job_id, task.id)
        now = time.monotonic()
        if task.clock is None:
            task.clock = now
        attempt = Attempt(node=node.name, start=time.time(), retry=task.retries)
        task.attempts.append(attempt)
        task.state = "running"
        self._serial += 1
        mark = f"{os.getpid()}-{self._serial}"
        try:
            if task.id not in node.made:  # made once per VM: a retry finds them there
                local.make()
                node.made.add(task.id)
            env = self._environment(task.task, node, local.environ(self._inherited))
            env[MARK] = mark
            env[POOL_MARK] = self._pool
            with open(local.stdout, "ab") as out, open(local.stderr, "ab") as err:
                process = subprocess.Popen(
                    task.task.argv,
                    cwd=local.workdir,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=err,
                    start_new_session=True,
                )
        except (OSError, ValueError) as exc:
            # The command could not be started: Batch's pre-processing error, not retried.
            attempt.end = time.time()
            attempt.note = f"cannot start: {_reason(exc)}"
            with contextlib.suppress(OSError), open(local.stderr, "ab") as err:
                err.write(f"taskkit local run: {attempt.note}\n".encode())
            self._complete(task, node, False, None, attempt.note)
            return
        running = _Running(task, attempt, node, process, now, f"{MARK}={mark}".encode())
        node.running[task.id] = running
        self._say("start", task, node, f"{task.id}: attempt {len(task.attempts)} on {node.name}")
        thread = running.waiter = threading.Thread(target=self._wait, args=(running,), daemon=True)
        self._threads.append(thread)
        thread.start()
        assert self._alarms is not None
        strike = self.chaos.strike(self.seed, task.id, len(task.attempts), task.struck, self._ran)
        if strike is not None:
            self._alarms.at(now + strike.after, lambda: self._strike(running, strike.kind))
        wall = task.task.max_wall_clock
        if wall is not None:
            self._alarms.at(task.clock + wall, lambda: self._expire(running))

    def _environment(self, task: BatchTask, node: _Node, env: dict[str, str]) -> dict[str, str]:
        env["AZ_BATCH_NODE_ID"] = node.name
        env["AZ_BATCH_POOL_ID"] = "local"
        env["AZ_BATCH_NODE_IS_DEDICATED"] = "false" if self.chaos.preempt else "true"
        env.update(task.environment)
        if self.chaos.storage and env.get(_CONNECTION):
            env[_CONNECTION] = self._proxied(env[_CONNECTION])
        return env

    # -- an attempt ends -------------------------------------------------------------------

    def _wait(self, running: _Running) -> None:
        code = running.process.wait()
        if running.ended_by is not None:
            # A lost node takes every process of the attempt with it, also those that left
            # its group (the task is requeued only once they are gone); a task the service
            # ends (its wall clock, its job) ends with all it started, those that shrugged
            # off SIGTERM included.
            end_marked(running.mark)
        with self._cond:
            if running.settled:  # the run's end settled it: its waiter started too late
                return
            running.settled = True
            try:
                self._ended(running, code)
                self._schedule()
            except Exception as exc:  # never leave the job waiting on a thread that died
                self.observer.problem(f"local run: {running.report.id}: {exc}")
                self._stopped = self._stopped or "failed"
                self.report.terminated = self.report.terminated or f"emulator error: {exc}"
            finally:
                self._cond.notify_all()

    def _ended(self, running: _Running, code: int) -> None:
        task, attempt, node = running.report, running.attempt, running.node
        attempt.end = time.time()
        attempt.exit_code = 128 - code if code < 0 else code  # a signal N, as a shell says it
        node.running.pop(task.id, None)
        ended_by = running.ended_by
        if ended_by in ("kill", "preempt"):
            attempt.chaos = ended_by
            task.requeues += 1
            task.clock = None  # a new node starts the task afresh
            self._requeue(task)
            self._say("requeue", task, node, f"{task.id}: {ended_by} on {node.name}, requeued")
        elif ended_by == "disable":
            task.state = "not-run"
            task.note = attempt.note = "the job was disabled: requeued, not run again"
        elif ended_by == "terminate":
            task.note = attempt.note = "the job was terminated"
            task.state, task.exit_code = "failed", attempt.exit_code
        elif ended_by == "abort":
            task.note = attempt.note = "interrupted: taskkit local run was stopped"
            task.state = "interrupted"
        elif ended_by == "wall-clock":
            attempt.wall_clock = True
            attempt.note = "maxWallClockTime expired"
            self._complete(task, node, False, attempt.exit_code, attempt.note, wall_clock=True)
        else:
            self._ran.append(attempt.end - attempt.start)
            if code == 0:
                self._complete(task, node, True, 0, None)
            elif task.task.retries_unlimited or task.retries < task.task.max_retries:
                task.retries += 1
                self._requeue(task)
                self._say("retry", task, node, f"{task.id}: exit {attempt.exit_code}, retrying")
            else:
                self._complete(task, node, False, attempt.exit_code, None)
        if node.down and not node.running:
            self._replace(node)

    def _requeue(self, task: TaskReport) -> None:
        task.state = "ready"
        self._ready.appendleft(task)

    def _complete(
        self,
        task: TaskReport,
        node: _Node,
        success: bool,
        code: int | None,
        note: str | None,
        *,
        wall_clock: bool = False,
    ) -> None:
        task.state = "succeeded" if success else "failed"
        task.exit_code, task.note = code, note
        conditions = task.task.exit_conditions
        options = (conditions.default or ExitOptions()) if wall_clock else conditions.for_exit(code)
        job_action, task.dependency = options.resolved(success)
        shown = "succeeded" if success else f"failed ({note or f'exit {code}'})"
        self._say("succeeded" if success else "failed", task, node, f"{task.id}: {shown}")
        self._release(task)
        if self.on_task_failure == "performExitOptionsJobAction" and job_action != "none":
            self._job_action(job_action, task)

    def _release(self, task: TaskReport) -> None:
        """The tasks waiting on ``task`` (now complete): ready when all they wait on is
        satisfied, blocked (with what waits on them) when it says block."""
        for name in self._dependents.get(task.id, ()):
            waiting = self._by_id[name]
            if waiting.state != "waiting":
                continue
            if task.dependency == "block":
                self._block(waiting, f"blocked: {task.id} {task.state}")
                continue
            self._waiting[name] -= 1
            if not self._waiting[name]:
                waiting.state = "ready"
                self._ready.append(waiting)

    def _block(self, task: TaskReport, why: str) -> None:
        task.state, task.note = "blocked", why
        self._say("blocked", task, None, f"{task.id}: {why}")
        for name in self._dependents.get(task.id, ()):
            if self._by_id[name].state == "waiting":
                self._block(self._by_id[name], f"blocked: {task.id} blocked")

    def _job_action(self, action: str, task: TaskReport) -> None:
        if self._stopped is not None:
            return
        self._stopped = "TaskFailed" if action == "terminate" else "disabled"
        self.report.terminated = self._stopped
        self._say("job", task, None, f"job {action}d by task {task.id}")
        for node in self._nodes:
            for running in list(node.running.values()):
                running.ended_by = "terminate" if action == "terminate" else "disable"
                self._signal(running, signal.SIGTERM if action == "terminate" else signal.SIGKILL)
                if action == "terminate":
                    self._later(GRACE, running, signal.SIGKILL)
        for waiting in self.report.tasks:
            if waiting.state in ("waiting", "ready"):
                waiting.state, waiting.note = "not-run", f"the job was {action}d"
        self._ready.clear()

    # -- chaos and clocks (from the alarm thread) ------------------------------------------

    def _strike(self, running: _Running, kind: Literal["kill", "preempt"]) -> None:
        with self._cond:
            if running.ended_by is not None or running.process.returncode is not None:
                return
            if running.report.task.id not in running.node.running:
                return
            task, node = running.report, running.node
            task.struck += 1
            if kind == "kill":
                self.report.kills += 1
                running.ended_by = "kill"
                self._signal(running, signal.SIGKILL)
                return
            self.report.preemptions += 1
            node.down = True
            self._say("preempt", task, node, f"{node.name} preempted")
            for other in node.running.values():
                if other.ended_by is None:
                    other.ended_by = "preempt"
                    self._signal(other, signal.SIGKILL)

    def _replace(self, node: _Node) -> None:
        """A preempted node's folders wiped, and the node back under a new id."""
        for _ in range(3):  # a process of the node caught writing as it died: look again
            shutil.rmtree(node.local.node_dir, ignore_errors=True)
            if not os.path.lexists(node.local.node_dir):
                break
        else:
            self.observer.warning(f"local run: {node.name}: its folders could not all be wiped")
        node.generation += 1
        node.made.clear()
        node.down = False

    def _expire(self, running: _Running) -> None:
        with self._cond:
            if running.ended_by is not None or running.process.returncode is not None:
                return
            running.ended_by = "wall-clock"
            self._signal(running, signal.SIGTERM)
            self._later(GRACE, running, signal.SIGKILL)

    def _later(self, seconds: float, running: _Running, sig: int) -> None:
        assert self._alarms is not None

        def send() -> None:
            with self._cond:
                if running.report.task.id in running.node.running:
                    self._signal(running, sig)

        self._alarms.at(time.monotonic() + seconds, send)

    @staticmethod
    def _signal(running: _Running, sig: int) -> None:
        if running.process.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(running.process.pid, sig)

    def _abort(self) -> None:
        with self._cond:
            self._stopped = self._stopped or "interrupted"
            self.report.terminated = self.report.terminated or "interrupted"
            for node in self._nodes:
                for running in node.running.values():
                    running.ended_by = running.ended_by or "abort"
                    self._signal(running, signal.SIGKILL)

    # -- storage chaos ---------------------------------------------------------------------

    def _start_proxies(self) -> None:
        if not self.chaos.storage:
            return
        module = _proxy_module()
        endpoints = {module.blob_endpoint(self._connection(t.task)) for t in self.report.tasks}
        for endpoint in sorted(e for e in endpoints if e):
            # A proxy stands in front of the endpoint's host and port; requests keep its path.
            proxy = module.FaultProxy(endpoint, probability=self.chaos.storage, seed=self.seed)
            proxy.start()
            self._proxies[endpoint] = proxy

    def _connection(self, task: BatchTask) -> str:
        """The storage connection string ``task`` runs with."""
        return task.environment.get(_CONNECTION, self._inherited.get(_CONNECTION, ""))

    def _proxied(self, conn: str) -> str:
        proxy = self._proxies.get(_proxy_module().blob_endpoint(conn) or "")
        return conn if proxy is None else proxy.connection_string(conn)

    def _stop_proxies(self) -> None:
        for proxy in self._proxies.values():
            self.report.storage_faults += len(proxy.injected)
            proxy.stop()


def _proxy_module() -> Any:
    """:mod:`taskkit.testing.proxy`, imported only for storage chaos (the testing package
    needs pytest); a :class:`ConfigError` saying how to get it when it cannot be."""
    try:
        from taskkit.testing import proxy
    except ImportError as exc:  # pragma: no cover - pytest missing
        raise ConfigError(
            f"--chaos storage= needs taskkit's test tools (pip install 'taskkit[test]'): {exc}"
        ) from None
    return proxy


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError):
        name = f" {exc.filename!r}" if exc.filename else ""
        return f"{(exc.strerror or str(exc)).lower()}{name}"
    return str(exc)
