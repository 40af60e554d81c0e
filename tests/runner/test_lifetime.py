"""The command's lifetime tied to the runner's (``taskkit.runner.lifetime``), with real processes.

A ``kill -9`` of ``taskkit run`` ends the command's whole group through the watchdog; when the
watchdog is killed too, the next attempt on this host ends what is left and says so; a group
id whose leader is now someone else's process is never killed. Linux only: it reads ``/proc``.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from runner_helpers import Task, opened_task, q, sh, wait_for

from taskkit.runner import lifetime
from taskkit.runner.command import run_logged
from taskkit.runner.journal import host_identity
from taskkit.runner.lifetime import MARK, end_group, group_members, process_start, touch

pytestmark = pytest.mark.skipif(
    not os.path.exists("/proc/self/stat"), reason="the command's lifetime is watched on Linux"
)

WATCHDOG = os.path.abspath(lifetime.__file__)


@pytest.fixture
def task(tmp_path: Path) -> Iterator[Task]:
    with opened_task(tmp_path) as opened:
        yield opened


def alive(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie is dead, only not yet reaped)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return text.rsplit(")", 1)[-1].split()[0] not in ("Z", "X")


def watchdogs(parent: int) -> list[int]:
    """The watchdog processes that ``parent`` started."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[-1].split()[1])
        if ppid == parent and os.fsencode(WATCHDOG) in cmdline:
            found.append(int(entry.name))
    return found


def group_with_child(task: Task, name: str = "cmd") -> list[str]:
    """A shell command that notes its pid and its child ``sleep``'s, then waits for it: the
    child is what a parent-death signal on the leader alone would leave running."""
    return sh(
        f"echo $$ > {q(task.box / (name + '.pid'))}\n"
        "sleep 1000 &\n"
        f"echo $! > {q(task.box / (name + '.child'))}\n"
        "wait\n"
    )


def pids(task: Task, name: str = "cmd") -> tuple[int, int]:
    leader, child = (task.box / f"{name}.pid"), (task.box / f"{name}.child")
    return int(leader.read_text()), int(child.read_text())


def kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)


Stray = list[subprocess.Popen[bytes]]


@pytest.fixture
def stray() -> Iterator[Stray]:
    """The leaders of process groups a test starts on its own: each group is killed at the
    end, whatever happened, and its leader reaped."""
    leaders: Stray = []
    yield leaders
    for leader in leaders:
        kill_group(leader.pid)
        leader.wait()


def new_group(stray: Stray, *argv: str, env: dict[str, str] | None = None) -> tuple[int, int]:
    """``argv`` (a shell line printing a child's pid) in a new session: the group, the child."""
    leader = subprocess.Popen(list(argv), start_new_session=True, stdout=subprocess.PIPE, env=env)
    stray.append(leader)
    assert leader.stdout is not None
    with leader.stdout:
        child = int(leader.stdout.readline())
    return leader.pid, child


def leader_gone_member_left(stray: Stray) -> tuple[int, int]:
    """A group whose leader has ended (and been reaped) while its child ``sleep`` lives on:
    the group id and the child's pid."""
    pgid, child = new_group(stray, "sh", "-c", "sleep 1000 & echo $!")
    stray[-1].wait()
    return pgid, child


def group_leading_child(stray: Stray, env: dict[str, str] | None = None) -> tuple[int, int]:
    """A shell leading its group and waiting for its child ``sleep``: group, child."""
    return new_group(stray, "sh", "-c", "sleep 1000 & echo $!; wait", env=env)


# -- through taskkit run -------------------------------------------------------------------------


@pytest.mark.parametrize("moment", ["as it starts", "once recorded"])
def test_kill_9_of_the_runner_ends_the_whole_command_group(task: Task, moment: str) -> None:
    """kill -9 of taskkit run, as soon as the command has started or once its group is in the
    attempt record: the leader and its child sleep are both gone within a bounded wait, and
    the next attempt finds nothing left to kill."""
    runner = task.start(group_with_child(task))
    wait_for((task.box / "cmd.child").exists, "the command to start its child")
    leader, child = pids(task)
    if moment == "once recorded":
        wait_for(lambda: task.attempt(1).get("command_pgid") == leader, "the recorded group")
        assert task.attempt(1)["command_start"] == process_start(leader)
    runner.kill()
    runner.communicate()
    wait_for(lambda: not alive(leader) and not alive(child), "the command group to end")
    again = task.run(["true"], "--max-retries", "3")
    assert again.returncode == 0, again.stderr
    assert "interrupted before: [1]" in again.stderr
    assert "killed what was left" not in again.stderr  # the watchdog left nothing


def test_a_run_that_ends_leaves_no_watchdog_and_no_group(tmp_path: Path) -> None:
    """After run_logged returns, the group is gone and the watchdog ends by itself: no
    process of either is left (nothing waits for a reaper to come by)."""
    box = tmp_path / "box"
    box.mkdir()
    script = f"echo $$ > {q(box / 'cmd.pid')}\nsleep 1000 &\necho $! > {q(box / 'cmd.child')}\n"
    finished = run_logged(sh(script))
    assert finished.returncode == 0
    child = int((box / "cmd.child").read_text())
    # SIGKILL was sent to the group as run_logged wound up; the kernel ends it a moment later.
    wait_for(lambda: not alive(child), "the command's child to be gone")
    wait_for(lambda: not watchdogs(os.getpid()), "the watchdog to end")


def test_the_watchdog_is_in_a_session_of_its_own_and_holds_no_console(task: Task) -> None:
    """The watchdog survives a signal to the runner's group and keeps none of its output
    open: its session is its own, its stdout and stderr are /dev/null."""
    runner = task.start(group_with_child(task))
    wait_for((task.box / "cmd.child").exists, "the command to start its child")
    wait_for(lambda: len(watchdogs(runner.pid)) == 1, "the watchdog")
    (watchdog,) = watchdogs(runner.pid)
    assert os.getsid(watchdog) == watchdog != os.getsid(runner.pid)
    for fd in (1, 2):
        assert os.readlink(f"/proc/{watchdog}/fd/{fd}") == os.devnull
    runner.kill()
    runner.communicate()
    wait_for(lambda: not alive(watchdog), "the watchdog to end after killing the group")


def test_next_attempt_ends_what_a_killed_runner_and_watchdog_left(task: Task) -> None:
    """kill -9 of the runner and its watchdog leaves the group running; a dry run says the
    next attempt would kill it (and kills nothing); the next attempt on this host kills it,
    says so in one line (console and stored log), and its command starts only once the old
    group is gone."""
    runner = task.start(group_with_child(task), "--max-retries", "3")
    wait_for((task.box / "cmd.child").exists, "the command to start its child")
    leader, child = pids(task)
    wait_for(lambda: task.attempt(1).get("command_pgid") == leader, "the recorded group")
    wait_for(lambda: len(watchdogs(runner.pid)) == 1, "the watchdog")
    os.kill(watchdogs(runner.pid)[0], signal.SIGKILL)
    runner.kill()
    runner.communicate()
    assert alive(leader)
    assert alive(child)
    dry = task.run(group_with_child(task), "--max-retries", "3", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "leftover    would first kill what attempt 1 left of its command" in dry.stdout
    assert alive(leader)  # a dry run kills nothing
    assert alive(child)
    seen = task.box / "seen.txt"
    check = "".join(
        f"if [ -e /proc/{pid} ] && [ \"$(cut -d')' -f2 /proc/{pid}/stat | cut -d' ' -f2)\" != Z ];"
        f" then echo 'alive {pid}' >> {q(seen)}; fi\n"
        for pid in (leader, child)
    )
    again = task.run(sh(check + f"echo checked >> {q(seen)}\n"), "--max-retries", "3")
    assert again.returncode == 0, again.stderr
    line = f"killed what was left of attempt 1's command (pgid {leader})"
    assert f"taskkit: note: {line}\n" in again.stderr
    assert again.stderr.count("killed what was left") == 1
    assert line in task.log(2, "taskkit")
    assert seen.read_text() == "checked\n"
    assert not alive(leader)
    assert not alive(child)


@pytest.mark.parametrize("escaped", [False, True], ids=["unrecorded group", "left the group"])
def test_next_attempt_finds_what_an_attempt_left_by_its_runner_mark(
    task: Task, escaped: bool
) -> None:
    """The runner and its watchdog killed before the command's group reached the record (the
    record is made to say so), or a process of the command that left the group with setsid:
    the next attempt still finds them through the runner's mark in their environment, kills
    them, and says so once."""
    name = "cmd"
    script = group_with_child(task, name)
    if escaped:  # the child starts a session of its own: no group signal reaches it
        script = sh(
            f"echo $$ > {q(task.box / (name + '.pid'))}\n"
            "setsid sleep 1000 &\n"
            f"echo $! > {q(task.box / (name + '.child'))}\n"
            "wait\n"
        )
    runner = task.start(script, "--max-retries", "3")
    wait_for((task.box / f"{name}.child").exists, "the command to start its child")
    leader, child = pids(task, name)
    wait_for(lambda: len(watchdogs(runner.pid)) == 1, "the watchdog")
    os.kill(watchdogs(runner.pid)[0], signal.SIGKILL)
    runner.kill()
    runner.communicate()
    if not escaped:
        record = task.journal / "attempts" / "00001.json"
        data = json.loads(record.read_text())
        data.pop("command_pgid", None)
        data.pop("command_start", None)
        record.write_text(json.dumps(data))
    wait_for(lambda: alive(child), "the child to run on")
    again = task.run(["true"], "--max-retries", "3")
    assert again.returncode == 0, again.stderr
    assert again.stderr.count("killed what was left of attempt 1's command") == 1, again.stderr
    wait_for(lambda: not alive(child), "the marked child to be gone")
    if not escaped:
        assert not alive(leader)


def test_a_reused_pid_in_the_record_is_not_killed(task: Task, stray: Stray, tmp_path: Path) -> None:
    """An interrupted attempt on this host whose recorded group leader is now an unrelated
    process (same pid, another start time) is left alone, and nothing is said of it."""
    unrelated, _ = group_leading_child(stray)
    start = process_start(unrelated)
    assert start is not None
    gone = subprocess.Popen(["true"])
    gone.wait()
    attempts = task.journal / "attempts"
    attempts.mkdir(parents=True)
    stamp = "2026-01-01T00:00:00.000Z"
    record = {
        "number": 1,
        "host": host_identity(),
        "pid": gone.pid,
        "pid_start": "1",
        "command_pgid": unrelated,
        "command_start": str(int(start) - 1),
        "fingerprint": "xxh3-128:00000000000000000000000000000000",
        "started": stamp,
        "heartbeat": stamp,
        "interval": 30.0,
    }
    (attempts / "00001.json").write_text(json.dumps(record))
    proc = task.run(["true"], "--max-retries", "3")
    assert proc.returncode == 0, proc.stderr
    assert "interrupted before: [1]" in proc.stderr
    assert "killed" not in proc.stderr
    assert alive(unrelated)


# -- what is verified before a kill --------------------------------------------------------------


def test_group_members_is_the_whole_group_while_its_leader_lives(stray: Stray) -> None:
    """A live leader with the recorded start time: the leader and its child are the group;
    the same pid with any other start time is someone else's, and nothing is returned."""
    pgid, child = group_leading_child(stray)
    start = process_start(pgid)
    assert start is not None
    assert sorted(group_members(pgid, start)) == sorted([pgid, child])
    for wrong in (str(int(start) - 1), str(int(start) + 1)):
        assert group_members(pgid, wrong) == []


def test_group_members_after_the_leader_counts_members_started_no_earlier(stray: Stray) -> None:
    """Leader gone: a member started at or after the recorded start is ours, one started
    before it cannot be (the group id was reused) and is not returned."""
    pgid, child = leader_gone_member_left(stray)
    child_start = process_start(child)
    assert child_start is not None
    assert process_start(pgid) is None
    assert group_members(pgid, child_start) == [child]
    assert group_members(pgid, str(int(child_start) - 5)) == [child]
    assert group_members(pgid, str(int(child_start) + 1)) == []


@pytest.mark.parametrize(("pgid", "start"), [(0, "1"), (1, "1"), (-5, "1"), (12345, "x")])
def test_group_members_refuses_what_names_no_group_of_ours(pgid: int, start: str) -> None:
    """Group 0 or 1 (killpg would hit the caller's group or init's), a negative id or a start
    time that is not a number: nothing, whatever runs."""
    assert group_members(pgid, start) == []


def test_end_group_kills_a_verified_group_and_waits_until_it_is_gone(
    stray: Stray,
) -> None:
    """A verified group (leader gone, member ours) is killed and gone on return: True; asked
    again, there is nothing: None."""
    pgid, child = leader_gone_member_left(stray)
    start = process_start(child)
    assert start is not None
    assert end_group(pgid, start) is True
    assert not alive(child)
    assert end_group(pgid, start) is None


def test_end_group_leaves_a_group_that_is_not_ours(stray: Stray) -> None:
    """A member started before the recorded start: not killed, None."""
    pgid, child = leader_gone_member_left(stray)
    start = process_start(child)
    assert start is not None
    assert end_group(pgid, str(int(start) + 1)) is None
    assert alive(child)


def test_end_group_gives_up_on_a_group_that_does_not_go(stray: Stray) -> None:
    """A group still there at the timeout (its SIGKILL withheld, the clock past the end):
    False, not a hang."""
    pgid, child = leader_gone_member_left(stray)
    start = process_start(child)
    assert start is not None
    ticks = iter([0.0, 100.0])
    sent: list[tuple[int, int]] = []
    ended = end_group(
        pgid, start, timeout=1.0, clock=lambda: next(ticks), kill=lambda *a: sent.append(a)
    )
    assert ended is False
    assert sent == [(pgid, signal.SIGKILL)]
    assert alive(child)


#: A runner in miniature: starts a Watchdog (with the tombstone given, if any), prints its pid,
#: watches the group given (if any), releases it if asked, then waits for a line and dies by
#: SIGKILL, as an OOM-killed runner.
MINI_RUNNER = """
import os, signal, sys
from taskkit.runner.lifetime import Watchdog
watchdog = Watchdog.start(sys.argv[4] if len(sys.argv) > 4 else None)
print(watchdog.pid, flush=True)
if sys.argv[1] != "-":
    watchdog.watch(int(sys.argv[1]), sys.argv[2])
if sys.argv[3] == "release":
    watchdog.release()
sys.stdin.readline()
os.kill(os.getpid(), signal.SIGKILL)
"""


@contextlib.contextmanager
def mini_runner(*argv: str) -> Iterator[int]:
    """The miniature runner with ``argv``; yields its watchdog's pid, kills the runner with
    SIGKILL when the block ends."""
    runner = subprocess.Popen(
        [sys.executable, "-c", MINI_RUNNER, *argv],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert runner.stdin is not None
    assert runner.stdout is not None
    with runner.stdin, runner.stdout:
        yield int(runner.stdout.readline())
        runner.stdin.write("die\n")
    assert runner.wait(timeout=20) == -signal.SIGKILL


@pytest.mark.parametrize("released", [False, True])
def test_the_watchdog_kills_the_watched_group_when_its_runner_dies(
    stray: Stray, released: bool
) -> None:
    """Told a group, the watchdog kills it (leader and child) once its runner is killed;
    released first, it ends at once and kills nothing."""
    pgid, child = group_leading_child(stray)
    start = process_start(pgid)
    assert start is not None
    with mini_runner(str(pgid), start, "release" if released else "keep") as watchdog:
        if released:
            wait_for(lambda: not alive(watchdog), "the released watchdog to end")
        assert alive(child)
    if not released:
        wait_for(lambda: not alive(child) and not alive(pgid), "the watched group to end")
        wait_for(lambda: not alive(watchdog), "the watchdog to end")
    assert alive(child) is released
    assert alive(pgid) is released


def test_an_unnamed_group_is_found_by_the_watchdog_mark(stray: Stray) -> None:
    """The runner died before naming the group: the watchdog kills the processes whose
    environment carries its mark, and leaves one marked for another watchdog."""
    with mini_runner("-", "-", "keep") as watchdog:
        mine = group_leading_child(stray, {**os.environ, MARK: str(watchdog)})
        theirs = group_leading_child(stray, {**os.environ, MARK: str(watchdog + 100000)})
    assert stray[0].wait(timeout=20) == -signal.SIGKILL
    wait_for(lambda: not alive(mine[1]), "the marked child to end")
    wait_for(lambda: not alive(watchdog), "the watchdog to end")
    assert alive(theirs[0])
    assert alive(theirs[1])


def test_on_start_learns_the_group_while_its_leader_runs(tmp_path: Path) -> None:
    """on_start is called once, with the leader's pid (its group) and its start time, while
    the leader still runs (it waits for on_start to let it go)."""
    calls: list[tuple[int, str | None, str]] = []
    pid, go = tmp_path / "pid", tmp_path / "go"

    def on_start(pgid: int, start: str) -> None:
        calls.append((pgid, process_start(pgid), start))
        go.touch()

    script = f"echo $$ > {q(pid)}\nwhile [ ! -e {q(go)} ]; do sleep 0.01; done\n"
    finished = run_logged(sh(script), on_start=on_start)
    assert finished.returncode == 0
    ((pgid, live, start),) = calls
    assert pgid == int(pid.read_text())
    assert live == start


# -- the tombstone: when the command of a killed runner was over ---------------------------------


@pytest.mark.parametrize("told", [True, False], ids=["told the group", "by its mark"])
def test_the_watchdog_makes_its_tombstone_once_the_command_is_gone(
    stray: Stray, tmp_path: Path, told: bool
) -> None:
    """Its runner killed, the watchdog kills the command (the group it was told of, or what
    carries its mark) and only then makes the tombstone: when it appears, nothing of the
    command is alive."""
    tombstone = tmp_path / ".taskkit-outputs-x-00001.ended"
    if told:
        pgid, child = group_leading_child(stray)
        start = process_start(pgid)
        assert start is not None
        argv = (str(pgid), start, "keep", str(tombstone))
    else:
        argv = ("-", "-", "keep", str(tombstone))
    with mini_runner(*argv) as watchdog:
        if not told:
            pgid, child = group_leading_child(stray, {**os.environ, MARK: str(watchdog)})
        assert not tombstone.exists()
    wait_for(tombstone.exists, "the tombstone")
    assert not alive(child)
    assert not alive(pgid)
    wait_for(lambda: not alive(watchdog), "the watchdog to end")


def test_a_released_watchdog_makes_no_tombstone(stray: Stray, tmp_path: Path) -> None:
    """The command ended in order (the watchdog released): no tombstone, whatever happens to
    the runner then."""
    tombstone = tmp_path / "tomb"
    pgid, child = group_leading_child(stray)
    start = process_start(pgid)
    assert start is not None
    with mini_runner(str(pgid), start, "release", str(tombstone)) as watchdog:
        wait_for(lambda: not alive(watchdog), "the released watchdog to end")
    assert alive(child)
    assert not tombstone.exists()


def test_no_tombstone_while_a_process_that_left_the_group_lives(
    stray: Stray, tmp_path: Path
) -> None:
    """A process of the command that left its group (a session of its own, still carrying the
    watchdog's mark) may still write: the watchdog kills the group but makes no tombstone, and
    leaves that process to the next attempt."""
    tombstone = tmp_path / "tomb"
    pgid, child = group_leading_child(stray)
    start = process_start(pgid)
    assert start is not None
    with mini_runner(str(pgid), start, "keep", str(tombstone)) as watchdog:
        _, escaped_child = group_leading_child(stray, {**os.environ, MARK: str(watchdog)})
    wait_for(lambda: not alive(watchdog), "the watchdog to end")
    assert not alive(child)
    assert alive(escaped_child)
    assert not tombstone.exists()


def test_touch_makes_or_touches_a_file_and_never_follows_a_link(tmp_path: Path) -> None:
    """touch makes the file, moves an existing one's change time to now (kept as it is with
    keep), and neither touches the target of a link at its path nor counts the link."""
    made = tmp_path / "made"
    assert touch(str(made)) is True
    assert made.read_bytes() == b""
    os.utime(made, ns=(0, 0))
    assert touch(str(made), keep=True) is True
    assert made.stat().st_mtime_ns == 0
    assert touch(str(made)) is True
    assert made.stat().st_mtime_ns > 0
    target = tmp_path / "target"
    target.write_text("not a tombstone\n")
    os.utime(target, ns=(0, 0))
    link = tmp_path / "link"
    link.symlink_to(target)
    assert touch(str(link)) is False
    assert target.stat().st_mtime_ns == 0
    assert touch(str(tmp_path / "no" / "such")) is False
