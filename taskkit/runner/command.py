"""Running the user's command: output teed to the console and the logs, signals, a deadline.

:func:`run_logged` runs one command in a process group of its own. Its stdout and stderr reach
the console unchanged (so Batch's ``stdout.txt``/``stderr.txt`` still work) and the
:class:`~taskkit.runner.logs.LogSink` of the attempt, which makes them durable; run it inside the
sink's ``with`` so that every exit path uploads (see :mod:`taskkit.runner.logs`).

Invariants:

* A SIGTERM or SIGINT taskkit receives is forwarded to the command's group, which has
  ``grace`` seconds before SIGKILL; a second signal kills at once. The deadline does the same
  with SIGTERM. Signal handlers are installed only in the main thread and always restored.
* What is left of the group when the command ends is killed, so nothing it started outlives
  it or holds its pipes open.
* The group does not outlive taskkit either: a :class:`~taskkit.runner.lifetime.Watchdog` started
  before the command kills it when taskkit dies (``kill -9``) and is released once the group
  is gone; ``on_start`` learns the group and its leader's start time, to be recorded. Given
  a ``tombstone``, the watchdog makes that file once the command is gone after taskkit died.
* A command that cannot start is not an exception: it ends like a shell's, 127 (not found) or
  126 (not executable), with one line on stderr and in the logs.
"""

from __future__ import annotations

import contextlib
import os
import select
import shlex
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from types import FrameType
from typing import IO, Any, NamedTuple

from taskkit.exceptions import MisuseError, UsageError
from taskkit.redaction import redact
from taskkit.runner.lifetime import Watchdog, process_start
from taskkit.runner.logs import LogFile, LogSink, write_all

__all__ = [
    "DRAIN_SECONDS",
    "Finished",
    "SignalsDeferred",
    "Stopped",
    "run_logged",
    "signals_held",
]

#: How long output may keep flowing once the command and its group are gone: only a process
#: that left the group (``setsid``) can hold the pipes then, and taskkit does not wait for it.
DRAIN_SECONDS = 5.0
_READ_SIZE = 65536


class Finished(NamedTuple):
    """How a command run by :func:`run_logged` ended: its ``returncode`` (``-N`` for death by
    signal N), the SIGTERM or SIGINT taskkit received meanwhile, whether the deadline stopped
    it, and how many seconds it ran."""

    returncode: int
    signal_received: int | None
    timed_out: bool
    seconds: float

    @property
    def exit_code(self) -> int:
        """What a shell would exit with: 128 + N for signal N. A command taskkit stopped (a
        signal it received, the deadline) did not finish its work whatever it returned, so
        those give 128 + that signal (130, 143)."""
        if self.signal_received is not None:
            return 128 + self.signal_received
        if self.timed_out:
            return 128 + signal.SIGTERM
        return self.returncode if self.returncode >= 0 else 128 - self.returncode

    def describe(self) -> str:
        """One line for a report: ``exited 3``, ``killed by SIGKILL``, ``stopped by SIGTERM``."""
        if self.signal_received is not None:
            return f"stopped by {_signal_name(self.signal_received)}"
        if self.timed_out:
            return "stopped after the deadline"
        if self.returncode < 0:
            return f"killed by {_signal_name(-self.returncode)}"
        return f"exited {self.returncode}"


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _signal_group(process: subprocess.Popen[bytes], signum: int) -> None:
    # start_new_session made the command the leader of its own group: pgid == pid.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signum)


#: The signals taskkit takes as "stop": a Batch task terminated, a wall clock, Ctrl-C.
_STOPS = (signal.SIGTERM, signal.SIGINT)


def _handled_by(handler: Callable[[int, FrameType | None], None]) -> dict[int, Any]:
    """Set ``handler`` for SIGTERM and SIGINT; the handlers it replaced. Only the main thread
    may set handlers: called elsewhere, none is set (and none is returned)."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    return {signum: signal.signal(signum, handler) for signum in _STOPS}


def _restored(previous: Mapping[int, Any]) -> None:
    """Put back the handlers :func:`_handled_by` replaced."""
    for signum, handler in previous.items():
        signal.signal(signum, signal.SIG_DFL if handler is None else handler)


class _Wakeup:
    """A self-pipe the run sleeps on, written by the signal handlers and by the thread that
    reaps the command: the run wakes for each event and never polls."""

    def __init__(self) -> None:
        self._read, self._write = os.pipe()
        os.set_blocking(self._read, False)
        os.set_blocking(self._write, False)
        self.received: list[int] = []
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _Wakeup:
        self._previous = _handled_by(self._handle)  # off the main thread the caller owns them
        return self

    def __exit__(self, *exc: object) -> None:
        _restored(self._previous)
        os.close(self._read)
        os.close(self._write)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        # Runs in the main thread between any two bytecodes: no locks (the interrupted code
        # may hold them), only a list append and a pipe write.
        self.received.append(signum)
        self.wake()

    def wake(self) -> None:
        with contextlib.suppress(BlockingIOError):  # a full pipe wakes the loop anyway
            os.write(self._write, b"!")

    def wait(self, timeout: float | None) -> None:
        select.select([self._read], [], [], None if timeout is None else max(0.0, timeout))
        with contextlib.suppress(BlockingIOError):
            os.read(self._read, 4096)


class _Stopper:
    """When and how the command is stopped: a signal taskkit receives is forwarded (at the
    deadline, SIGTERM is sent), then SIGKILL once ``grace`` has passed or at a second signal."""

    def __init__(
        self, process: subprocess.Popen[bytes], note: Callable[[str], None], grace: float
    ) -> None:
        self.process, self.note, self.grace = process, note, grace
        self.received: int | None = None
        self.timed_out = self.killed = False
        self.grace_end: float | None = None

    def on_signal(self, signum: int, now: float) -> None:
        name = _signal_name(signum)
        if self.grace_end is None:
            self.received, self.grace_end = signum, now + self.grace
            _signal_group(self.process, signum)
            self.note(f"received {name}; forwarded it, the command has {self.grace:g} s to end")
            return
        self.received = self.received or signum
        if not self.killed:
            self.kill(f"received {name} again")

    def on_time(self, now: float, end: float | None) -> None:
        if end is not None and self.grace_end is None and now >= end:
            self.timed_out, self.grace_end = True, now + self.grace
            _signal_group(self.process, signal.SIGTERM)
            self.note(f"the deadline passed; sent SIGTERM, the command has {self.grace:g} s to end")
        if self.grace_end is not None and not self.killed and now >= self.grace_end:
            self.kill(f"the command did not end within {self.grace:g} s")

    def kill(self, why: str) -> None:
        _signal_group(self.process, signal.SIGKILL)
        self.killed = True
        self.note(f"{why}; killed the command (SIGKILL)")

    def timeout(self, now: float, end: float | None) -> float | None:
        """How long the run may sleep before it has something to do but wait."""
        if self.killed:
            return None  # only the command's end can come next
        if self.grace_end is not None:
            return self.grace_end - now
        return None if end is None else end - now


def _pump(pipe: IO[bytes], console: int, log: LogFile | None) -> None:
    """Copy a pipe to the console and its log until the writers close it. The pump owns the
    pipe: it may outlive the run when a process that escaped the group holds it."""
    to_console = True
    with pipe:
        while True:
            try:
                data = os.read(pipe.fileno(), _READ_SIZE)
            except OSError:  # not expected of a pipe: its output ends here
                return
            if not data:
                return
            if to_console:
                try:
                    write_all(console, data)
                except OSError:  # the console went away (EPIPE, EBADF): keep logging
                    to_console = False
            if log is not None:
                log.write(data)


def _not_started(argv0: str, exc: OSError, sink: LogSink | None, seconds: float) -> Finished:
    """What a shell does when a command cannot run: one line, 127 or 126."""
    reason = (exc.strerror or str(exc)).lower()
    if exc.filename is not None and os.fsdecode(exc.filename) != argv0:
        reason += f": {os.fsdecode(exc.filename)!r}"  # e.g. a cwd that does not exist
    line = redact(f"taskkit: error: cannot run {argv0}: {reason}").replace("\n", "\\n") + "\n"
    with contextlib.suppress(OSError):
        write_all(2, line.encode(errors="surrogateescape"))
    if sink is not None:
        sink.file("stderr").write(line.encode(errors="surrogateescape"))
        sink.note(line.removeprefix("taskkit: ").rstrip("\n"))
    return Finished(127 if isinstance(exc, FileNotFoundError) else 126, None, False, seconds)


def _wind_up(
    process: subprocess.Popen[bytes],
    exited: threading.Event,
    threads: list[threading.Thread],
    note: Callable[[str], None],
) -> None:
    """Make sure the command and its group are gone and its output is in, whatever happened."""
    if not exited.is_set():  # an error in taskkit: the command must not outlive it
        _signal_group(process, signal.SIGKILL)
        process.wait()
    waiter, *pumps = threads
    if waiter.ident is not None:
        waiter.join()  # before the wakeup pipe it writes to is closed
    # Whatever the command left running in its group would hold the pipes open.
    _signal_group(process, signal.SIGKILL)
    for pump in pumps:
        if pump.ident is not None:
            pump.join(DRAIN_SECONDS)
    if any(pump.is_alive() for pump in pumps):
        note(f"output still open {DRAIN_SECONDS:g} s after the end; not waiting for it")


def run_logged(
    argv: Sequence[str],
    *,
    sink: LogSink | None = None,
    deadline: float | None = None,
    grace: float = 10.0,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    clock: Callable[[], float] = time.monotonic,
    on_start: Callable[[int, str], None] | None = None,
    tombstone: str | os.PathLike[str] | None = None,
) -> Finished:
    """Run ``argv`` to its end, its output teed to the console and to ``sink``.

    ``deadline`` is seconds from the start; past it the command gets SIGTERM, ``grace``
    seconds, then SIGKILL. SIGTERM and SIGINT sent to taskkit (when called from the main
    thread) are forwarded the same way; a second one kills at once. A command that cannot
    start gives 127 (not found) or 126 (not executable), as in a shell. ``on_start`` is
    called with the command's process group and its leader's start time once it runs.
    ``tombstone``: the file the watchdog makes (or touches) once nothing of the command is
    left, should taskkit die while it runs (see :mod:`taskkit.runner.lifetime`).
    """
    if not argv:
        raise UsageError("no command to run")
    if deadline is not None and deadline < 0:
        raise MisuseError(f"deadline must not be negative, not {deadline!r}")
    if grace < 0:
        raise MisuseError(f"grace must not be negative, not {grace!r}")

    def note(line: str) -> None:
        if sink is not None:
            sink.note(line)

    started = clock()
    end = None if deadline is None else started + deadline
    # The handlers are set before the command starts: a SIGTERM in between must not end
    # taskkit and leave the command running in a session of its own.
    with _Wakeup() as wakeup, _watched(note, tombstone) as watchdog:
        try:
            process = subprocess.Popen(
                list(argv),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,  # stdin is inherited
                start_new_session=True,
                env=_marked(env, watchdog),
                cwd=cwd,
            )
        except OSError as exc:
            return _not_started(str(argv[0]), exc, sink, clock() - started)
        note(f"started {redact(shlex.join(map(str, argv)))} (pid {process.pid})")
        pipes = ((process.stdout, 1, "stdout"), (process.stderr, 2, "stderr"))
        pumps = [
            threading.Thread(
                target=_pump,
                args=(pipe, console, None if sink is None else sink.file(name)),
                name=f"taskkit-{name}",
                daemon=True,
            )
            for pipe, console, name in pipes
            if pipe is not None
        ]
        exited = threading.Event()

        def reap() -> None:
            process.wait()
            exited.set()
            wakeup.wake()

        waiter = threading.Thread(target=reap, name="taskkit-wait", daemon=True)
        stop = _Stopper(process, note, grace)
        try:
            # Read before anything else: the leader may end (and its pid be reused) soon.
            leader_start = process_start(process.pid)
            if watchdog is not None and leader_start is not None:
                watchdog.watch(process.pid, leader_start)
            for thread in (*pumps, waiter):
                thread.start()
            if on_start is not None and leader_start is not None:
                on_start(process.pid, leader_start)
            while not exited.is_set():
                while wakeup.received:
                    stop.on_signal(wakeup.received.pop(0), clock())
                now = clock()
                stop.on_time(now, end)
                wakeup.wait(stop.timeout(now, end))
        finally:
            _wind_up(process, exited, [waiter, *pumps], note)
    # Read only now that the handlers are the caller's again: a signal before this moment is
    # in ``received``, one after it is the caller's to handle; none falls in between. One that
    # came as the command ended was not forwarded, but it was asked for: the caller must learn
    # of it.
    if stop.received is None and wakeup.received:
        stop.received = wakeup.received[0]
        note(f"received {_signal_name(stop.received)} as the command ended")
    finished = Finished(process.returncode, stop.received, stop.timed_out, clock() - started)
    note(f"the command {finished.describe()} after {finished.seconds:.1f} s")
    return finished


def _marked(env: Mapping[str, str] | None, watchdog: Watchdog | None) -> dict[str, str] | None:
    if watchdog is None:
        return None if env is None else dict(env)
    return {**(os.environ if env is None else env), **watchdog.mark}


@contextlib.contextmanager
def _watched(
    note: Callable[[str], None], tombstone: str | os.PathLike[str] | None
) -> Iterator[Watchdog | None]:
    """A watchdog for the command to come, released once its group is gone (whatever
    happened in between); None where there can be none."""
    watchdog = Watchdog.start(tombstone)
    if watchdog is None and os.path.exists("/proc/self/stat"):
        note("cannot start a watchdog: the command may outlive a killed taskkit")
    try:
        yield watchdog
    finally:
        if watchdog is not None:
            watchdog.release()


class Stopped(BaseException):
    """SIGTERM or SIGINT arrived while taskkit itself was at work (staging, uploading): a
    BaseException, so that no ``except Exception`` on the way swallows it."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name


class SignalsDeferred:
    """SIGTERM and SIGINT for the whole life of an attempt, from its record's start to its
    end's: the first one is acted on while the attempt can still stop (:meth:`acting`: it
    raises :class:`Stopped` and the attempt ends in order), and noted (``caught``) where it
    cannot any more (before it begins to act, and once its end is being recorded: the end
    stands). Any later one ends the process at once, as the default would, wherever it comes.
    Blocks within (:meth:`acting`, :func:`run_logged`, :func:`signals_held`) set their own
    handlers and put the earlier ones back, so no moment of the attempt is left with the
    default. Off the main thread nothing changes."""

    def __init__(self) -> None:
        self.caught: list[int] = []
        self.acted = False  # a signal stopped the attempt: the next one is a second
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> SignalsDeferred:
        self._previous = _handled_by(self._note)
        return self

    def __exit__(self, *exc: object) -> None:
        _restored(self._previous)

    def _second(self, signum: int) -> None:
        if self.caught or self.acted:
            signal.signal(signum, signal.SIG_DFL)
            signal.raise_signal(signum)

    def _note(self, signum: int, frame: FrameType | None) -> None:
        self._second(signum)
        self.caught.append(signum)

    def _act(self, signum: int, frame: FrameType | None) -> None:
        self._second(signum)
        self.acted = True
        raise Stopped(signum)

    @contextlib.contextmanager
    def acting(self) -> Iterator[None]:
        """While the block runs the first signal raises :class:`Stopped` (one noted before it
        began, at once): taskkit is at work and stops in order (a claim given back, the
        end recorded, the logs flushed)."""
        if not self._previous:  # off the main thread
            yield
            return
        previous = _handled_by(self._act)
        try:
            if self.caught:
                self.acted = True
                raise Stopped(self.caught.pop(0))
            yield
        finally:
            _restored(previous)

    def settle(self) -> None:
        """The attempt's end is being written (its success in the claim's place): from here on
        within :meth:`acting` a signal is noted, not acted on, so that the end written is the
        end taskkit exits with."""
        if self._previous:
            _handled_by(self._note)


@contextlib.contextmanager
def signals_held() -> Iterator[None]:
    """SIGTERM and SIGINT wait until the block ends, then arrive as they would have (within
    :meth:`SignalsDeferred.acting`: :class:`Stopped`, raised where the block ends); a second
    one in the block ends the process at once. For a step that must not be cut in half: a
    claim written and its version kept, a claim given back."""
    pending: list[int] = []

    def hold(signum: int, frame: object) -> None:
        if pending:  # a second one: at once, as everywhere else
            signal.signal(signum, signal.SIG_DFL)
            signal.raise_signal(signum)
        pending.append(signum)

    previous = _handled_by(hold)
    try:
        yield
    finally:
        _restored(previous)
        for signum in pending:
            signal.raise_signal(signum)  # its handler runs before this returns
