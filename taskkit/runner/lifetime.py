"""The command's lifetime is tied to the runner's: what it leaves when taskkit is killed.

``taskkit run`` starts the command in a process group of its own (so a signal reaches all it
started), which means nothing ends the command when the runner dies: ``kill -9`` of the
runner, the OOM killer choosing Python. Two things close that gap:

* A :class:`Watchdog`, started before the command: a shell in a session of its own reading a
  pipe whose only write end the runner holds. The kernel closes that end when the runner dies,
  however it dies; at end of file the watchdog becomes Python (this file run as a script) and
  kills the command's group, unless the runner released it first (the command ended, its
  group was killed). Told no group yet (the command runs before ``Popen`` returns, and the
  runner may die in between), it kills the processes whose environment carries its mark,
  ``TASKKIT_WATCHDOG=<its pid>``, which the command is given. It holds no console, so it never
  keeps a reader of the runner's output waiting, and costs about a millisecond per command.
  Given a *tombstone* path, it makes (or touches) that file once nothing of the command is
  left: the group gone and no process carrying its mark alive. The file's change time, set by
  the filesystem's clock, is then a moment after the command's last write
  (:mod:`taskkit.runner.leftovers` bounds what it charges to a killed attempt by it).
* :func:`end_groups_left_by`: before a new attempt starts on the same host and boot, what is left of
  the recorded group of an interrupted earlier attempt (its watchdog killed too) is killed,
  and the new attempt waits until it is gone. The command also carries its runner's mark,
  ``TASKKIT_RUNNER=<pid>:<start time>`` (:data:`RUNNER_MARK`), which the attempt record names
  from the start: so what an attempt left is found even when its group never reached the
  record (runner and watchdog killed at once, before the first write), and so are processes
  that left the group (``setsid``) but kept their environment. Once :func:`end_groups_left_by`
  has run through without blocking, nothing of the attempts :func:`gone_for_sure` names is
  running any more.

Invariants:

* A process is killed only when it verifiably belongs to the recorded group: the group's
  leader is alive with the recorded start time (``/proc/PID/stat`` field 22), or the leader is
  gone and the process is a member of that group started no earlier than the leader. A pid
  reused by another process never passes (:func:`group_members`).
* A tombstone is made only once the command's group and every process carrying the
  watchdog's mark are verifiably gone; never while one may still write.
* Linux only (``/proc``); elsewhere nothing is watched and nothing is killed.

This module imports little of the standard library and nothing of taskkit at run time: the
watchdog runs it as a script with ``python -I -S``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import subprocess
    from collections.abc import Callable, Iterable, Iterator

    from taskkit.runner.journal import Attempt

__all__ = [
    "MARK",
    "RUNNER_MARK",
    "Watchdog",
    "end_group",
    "end_groups_left_by",
    "gone_for_sure",
    "group_members",
    "interrupted_on",
    "left_by",
    "process_start",
    "runner_mark",
    "touch",
]

#: The variable whose value, the watchdog's pid, marks the command and what it starts.
MARK = "TASKKIT_WATCHDOG"
#: The variable whose value, ``<pid>:<start time>`` of the runner, marks the command and what it
#: starts: the attempt record holds both, so a later attempt can tell what this one left.
RUNNER_MARK = "TASKKIT_RUNNER"
_PROC = "/proc"
#: How long a killed group may take to disappear before a new attempt gives up on it.
GONE_SECONDS = 10.0


def _stat_fields(pid: int) -> list[str] | None:
    """The fields of ``/proc/PID/stat`` after the command name: [0] is the state (field 3),
    [2] the process group (field 5), [19] the start time (field 22). None if there is none."""
    try:
        with open(f"{_PROC}/{pid}/stat", "rb") as stat:
            text = stat.read().decode("ascii", "replace")
    except OSError:
        return None
    fields = text.rsplit(")", 1)[-1].split()
    return fields if len(fields) > 19 else None


def process_start(pid: int) -> str | None:
    """When process ``pid`` started (clock ticks since boot); None if there is none."""
    fields = _stat_fields(pid)
    return None if fields is None else fields[19]


def _processes() -> Iterator[tuple[int, list[str]]]:
    """Every live process (zombies are dead: only their parent's reaping is left)."""
    try:
        names = os.listdir(_PROC)
    except OSError:
        return
    for name in names:
        if name.isdigit():
            fields = _stat_fields(int(name))
            if fields is not None and fields[0] not in ("Z", "X"):
                yield int(name), fields


def group_members(pgid: int, start: str) -> list[int]:
    """The live processes of the group ``pgid`` whose leader started at ``start``: all of its
    members while that leader lives; once it is gone, the members started no earlier than it.
    Empty when the group is gone, or when ``pgid`` now names someone else's process."""
    if pgid <= 1 or not start.isdigit():
        return []
    leader = _stat_fields(pgid)
    if leader is not None and leader[0] not in ("Z", "X") and leader[19] != start:
        return []  # the pid was reused: whatever its group is, it is not ours
    ours = leader is not None and leader[19] == start
    return [
        pid
        for pid, fields in _processes()
        if fields[2] == str(pgid) and (ours or int(fields[19]) >= int(start))
    ]


def end_group(
    pgid: int,
    start: str,
    *,
    timeout: float = GONE_SECONDS,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    kill: Callable[[int, int], None] = os.killpg,
) -> bool | None:
    """Kill what is left of the group ``pgid`` (as :func:`group_members` finds it) and wait
    until it is gone: None when there was nothing to kill, True once it is gone, False when it
    is still there after ``timeout`` seconds (or may not be signalled)."""
    if not group_members(pgid, start):
        return None
    try:
        kill(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass  # gone meanwhile
    except PermissionError:
        return False
    end = clock() + timeout
    while group_members(pgid, start):
        if clock() > end:
            return False
        sleep(0.01)
    return True


def runner_mark(pid: int, start: str | None) -> str:
    """The value of :data:`RUNNER_MARK` for the runner ``pid`` that started at ``start``."""
    return f"{pid}:{start}"


def interrupted_on(attempts: Iterable[Attempt], host: str) -> list[Attempt]:
    """The attempts of ``attempts`` interrupted on ``host`` (this machine since its boot):
    those whose leftovers :func:`end_groups_left_by` ends (another machine's, or one whose
    runner lives, is not ours to end)."""
    return [old for old in attempts if old.host == host and old.state(host) == "interrupted"]


def end_groups_left_by(attempts: Iterable[Attempt], host: str) -> Iterator[tuple[Attempt, bool]]:
    """End what each interrupted attempt of ``attempts`` that ran on ``host`` (this machine
    since its boot) left of its command: its recorded group, and every process carrying its
    runner's mark. The attempts that left something, each with whether it is gone now (see
    :func:`end_group`)."""
    for old in interrupted_on(attempts, host):
        ended = None
        if old.command_pgid and old.command_start:
            ended = end_group(old.command_pgid, old.command_start)
        if old.pid and old.pid_start:
            mark = f"{RUNNER_MARK}={runner_mark(old.pid, old.pid_start)}".encode()
            swept = end_marked(mark)
            if swept is not None:
                ended = swept if ended is None else ended and swept
        if ended is not None:
            yield old, ended


def left_by(attempts: Iterable[Attempt], host: str) -> Iterator[tuple[Attempt, int]]:
    """What :func:`end_groups_left_by` would end, read only (for a dry run): each interrupted
    attempt on ``host`` that left processes running, with how many."""
    for old in interrupted_on(attempts, host):
        found: set[int] = set()
        if old.command_pgid and old.command_start:
            found.update(group_members(old.command_pgid, old.command_start))
        if old.pid and old.pid_start:
            mark = f"{RUNNER_MARK}={runner_mark(old.pid, old.pid_start)}".encode()
            found.update(pid for pid, _ in _marked(mark))
        if found:
            yield old, len(found)


def gone_for_sure(attempts: Iterable[Attempt]) -> list[int]:
    """Of interrupted attempts that :func:`end_groups_left_by` has just run through without
    one still running, those of which nothing runs now: the ones whose runner's mark it could
    sweep (its pid and start time are recorded, which needs ``/proc``). A command's processes
    that left the group carry that mark, so its group alone would not do."""
    return [old.number for old in attempts if old.pid and old.pid_start]


def touch(path: str, *, keep: bool = False) -> bool:
    """Make the file ``path`` (never through a link), or set its times to now if it is there;
    with ``keep``, leave one that is there as it is. Whether the file is there now."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | (os.O_EXCL if keep else 0)
    try:
        fd = os.open(path, flags, 0o666)
    except FileExistsError:
        return True
    except OSError:  # the directory is gone, or not writable: no bound is known then
        return False
    try:
        os.utime(fd)  # a file that was there: its change time is this moment too
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def end_marked(mark: bytes, *, settle: float = 0.0) -> bool | None:
    """Kill the live processes whose environment holds ``mark`` (with the groups they lead)
    and wait until none is left, looking again for ``settle`` seconds at least (a process
    caught between ``fork`` and ``exec`` shows the mark only then): None when there was none
    and nothing to wait for, True once they are gone, False when some are still there after
    :data:`GONE_SECONDS`."""
    started = time.monotonic()
    found = _marked(mark)
    if not found and not settle:
        return None
    while found or time.monotonic() < started + settle:
        _kill(found)
        if time.monotonic() > started + GONE_SECONDS:
            return False
        time.sleep(0.01)
        found = _marked(mark)
    return True


def _marked(mark: bytes) -> list[tuple[int, int]]:
    """The live processes whose environment holds ``mark``: (pid, process group)."""
    found = []
    for pid, fields in _processes():
        try:
            with open(f"{_PROC}/{pid}/environ", "rb") as environ:
                variables = environ.read().split(b"\0")
        except OSError:  # gone, or not ours to read (and so not ours to kill)
            continue
        if mark in variables:
            found.append((pid, int(fields[2])))
    return found


#: How long the watchdog keeps looking for its mark: a command caught between ``fork`` and
#: ``exec`` shows it only once it has its own environment.
_EXEC_SECONDS = 0.5


def _kill(found: list[tuple[int, int]]) -> None:
    """SIGKILL each ``(pid, process group)``: a group leader with its whole group."""
    for pid, pgid in found:
        with contextlib.suppress(OSError):
            if pgid == pid:
                os.killpg(pgid, signal.SIGKILL)
            else:
                os.kill(pid, signal.SIGKILL)


#: The watchdog while it waits: a shell (it starts in a millisecond and leaves the CPU to the
#: command) reading the pipe on its stdin. At end of file it becomes Python (same pid, so its
#: mark stays true) to find and kill what it was told of, or what carries its mark, and then
#: to make its tombstone ($3, empty for none).
_WAITING = """trap '' INT HUP
watched=
while read -r word pgid start; do
  case $word in
    release) exit 0 ;;
    watch) watched="$pgid $start" ;;
  esac
done
exec "$1" -I -S "$2" "$3" $watched
"""


class Watchdog:
    """The watchdog of one command: :meth:`start` it before the command, :meth:`watch` the
    command's group once it runs, :meth:`release` it once the group is gone."""

    def __init__(self, process: subprocess.Popen[bytes], write: int) -> None:
        self.pid, self._process, self._write = process.pid, process, write

    @classmethod
    def start(cls, tombstone: str | os.PathLike[str] | None = None) -> Watchdog | None:
        """A running watchdog, or None where there is none to have (no ``/proc``, no shell,
        no interpreter, this file not on disk). ``tombstone``: the file to make once it has
        seen the command gone after the runner died."""
        import subprocess  # here: the watchdog process itself has no use for it

        here = os.path.abspath(__file__)
        if not (os.path.exists(f"{_PROC}/self/stat") and sys.executable and os.path.isfile(here)):
            return None
        read, write = os.pipe()  # both close-on-exec: only the watchdog is given the read end
        try:
            process = subprocess.Popen(
                [
                    "/bin/sh",
                    "-c",
                    _WAITING,
                    "taskkit-watchdog",
                    sys.executable,
                    here,
                    "" if tombstone is None else os.fspath(tombstone),
                ],
                stdin=read,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
                cwd="/",
            )
        except OSError:
            os.close(write)
            return None
        finally:
            os.close(read)
        return cls(process, write)

    @property
    def mark(self) -> dict[str, str]:
        """What the command's environment must hold for this watchdog to find it before it
        is told its group."""
        return {MARK: str(self.pid)}

    def watch(self, pgid: int, start: str) -> None:
        """From now on the runner's death kills the group ``pgid`` led by a process started
        at ``start``."""
        self._send(f"watch {pgid} {start}\n")

    def release(self) -> None:
        """The group is gone: the watchdog ends without killing anything. Not waited for (it
        may still be starting); a thread reaps it."""
        self._send("release\n")
        os.close(self._write)
        threading.Thread(target=self._process.wait, name="taskkit-watchdog", daemon=True).start()

    def _send(self, line: str) -> None:
        with contextlib.suppress(OSError):  # a dead watchdog: the next attempt cleans up
            os.write(self._write, line.encode())


def _kill_at_end(argv: list[str]) -> None:
    """The watchdog once its runner died (``TOMBSTONE [PGID START]``): kill the group it was
    told of, or, told none (the runner died as the command started), whatever carries its
    mark; then, if nothing of the command is left, make the tombstone (if one is named)."""
    tombstone, watched = (argv[0], argv[1:]) if argv else ("", [])
    mark = f"{MARK}={os.getpid()}".encode()
    if len(watched) == 2 and watched[0].isdigit():
        # A process that left the group (setsid) keeps the mark: the next attempt ends it,
        # and until then no moment is known after which the command wrote nothing.
        gone = end_group(int(watched[0]), watched[1]) is not False and not _marked(mark)
    else:
        gone = end_marked(mark, settle=_EXEC_SECONDS) is not False
    if gone and tombstone:
        touch(tombstone)


if __name__ == "__main__":
    _kill_at_end(sys.argv[1:])
