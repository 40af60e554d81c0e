"""taskkit.runner.logs phases and the local log copy: the stored ``taskkit.txt`` always says how far
an attempt got, and the copy on the node goes once the store holds it.

The unit tests drive a :class:`~taskkit.runner.logs.LogSink` on ``file://`` stores; the process
tests
run ``taskkit run`` for real (``tests/runner_helpers.py``) and kill it with real signals. The
log interval is left at its default (30 s) in every process test, so what is in the store came
from a phase, not from a periodic upload. Nothing sleeps for luck.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from http_fakes import Gate, http_server
from observing import Warnings
from runner_helpers import Task, kill_9_once, opened_task, q, sh

from taskkit.runner.logs import NAMES, LogSink, Phase
from taskkit.storage.stores import Stores
from taskkit.testing import Fault, FaultyStore

FILES = tuple(f"{name}.txt" for name in NAMES)
#: A stored phase line: "<stamp> taskkit: <phase>[: <more>]".
PHASE_LINE = re.compile(r"^\S+ taskkit: (" + "|".join(p.value for p in Phase) + r")(?::|$)")


@pytest.fixture
def task(tmp_path: Path) -> Iterator[Task]:
    with opened_task(tmp_path) as made:
        yield made


def phases(text: str) -> list[str]:
    """The phases a stored ``taskkit.txt`` names, in its order."""
    found = (PHASE_LINE.match(line) for line in text.splitlines())
    return [m.group(1) for m in found if m is not None]


def stored_dir(task: Task, number: int) -> Path:
    return task.journal / "logs" / f"{number:05d}"


# -- LogSink.phase ------------------------------------------------------------------------------


def test_a_phase_is_in_the_store_when_phase_returns(tmp_path: Path) -> None:
    """Each phase line reaches the store before phase() returns, with no periodic upload
    (a day's interval) and no close: the store says how far the attempt got at every step."""
    store = tmp_path / "store"
    with LogSink(tmp_path / "logs", f"file://{store}/", interval=86400) as sink:
        for phase in Phase:
            assert sink.phase(phase, f"after {phase.name}")
            assert sink.reached is phase
            text = (store / "taskkit.txt").read_text()
            assert text.splitlines()[-1].endswith(f"taskkit: {phase.value}: after {phase.name}")
        assert phases((store / "taskkit.txt").read_text()) == [p.value for p in Phase]
        assert {p.name for p in store.iterdir()} == set(FILES)


def test_a_phase_does_not_wait_for_a_store_that_is_failing(tmp_path: Path) -> None:
    """Once an upload failed, a phase is only noted (phase() returns False without trying
    the store); the next successful upload carries it."""
    warnings = Warnings()
    blocker = tmp_path / "blocked"
    blocker.write_text("a file where the store needs a folder")
    with LogSink(
        tmp_path / "logs", f"file://{blocker}/logs/", interval=86400, observer=warnings
    ) as sink:
        assert not sink.phase(Phase.STARTED, "first")
        assert len(warnings) == 1
        blocker.unlink()
        blocker.mkdir()
        assert not sink.phase(Phase.STAGING)  # the store works again, but is not tried
        assert not (blocker / "logs").exists()
        assert sink.flush()
        assert phases((blocker / "logs" / "taskkit.txt").read_text()) == ["started", "staging"]
        assert sink.phase(Phase.STAGED)  # uploads work again: phases upload again
        assert phases((blocker / "logs" / "taskkit.txt").read_text())[-1] == "staged"


def test_a_phase_after_close_is_refused_quietly(tmp_path: Path) -> None:
    """phase() after close() neither raises nor writes."""
    sink = LogSink(tmp_path / "logs", f"file://{tmp_path}/store/")
    with sink:
        sink.phase(Phase.STARTED)
    before = (tmp_path / "store" / "taskkit.txt").read_bytes()
    assert sink.phase(Phase.ENDED) is False
    assert (tmp_path / "store" / "taskkit.txt").read_bytes() == before


def test_an_append_cut_short_after_it_landed_is_not_sent_twice(tmp_path: Path) -> None:
    """A signal between an append reaching the store and its bookkeeping (a phase uploads on
    the main thread): the next upload goes on from the stored size, so the store ends up
    holding exactly the local file, no byte twice and none lost."""
    store = tmp_path / "store"
    dest = f"file://{store}/"
    with Stores() as plain:
        inner, _ = plain.open(dest)
        # The second append of taskkit.txt (the first after the STARTED line: a non-zero
        # offset) lands, then its caller hears a signal, as Stopped would come.
        cut = Fault.on(
            "append",
            nth=2,
            kind="lost_reply",
            key=f"{store}/taskkit.txt",
            error=KeyboardInterrupt(),
        )
        faulty = FaultyStore(inner, [cut])
        with (
            Stores(mounts={dest: faulty}) as stores,
            LogSink(tmp_path / "logs", dest, stores=stores, interval=86400) as sink,
        ):
            sink.phase(Phase.STARTED)
            assert (store / "taskkit.txt").stat().st_size > 0
            assert faulty.injected == []
            with pytest.raises(KeyboardInterrupt):
                sink.phase(Phase.STAGING)
            assert [(i.op, i.kind) for i in faulty.injected] == [("append", "lost_reply")]
            # The interrupted append did land: the next upload must not send it again.
            assert phases((store / "taskkit.txt").read_text()) == ["started", "staging"]
            assert sink.phase(Phase.STAGED)
    local = (tmp_path / "logs" / "taskkit.txt").read_bytes()
    assert (store / "taskkit.txt").read_bytes() == local
    assert phases(local.decode()) == ["started", "staging", "staged"]


# -- the local copy -----------------------------------------------------------------------------


def test_the_local_copy_is_removed_once_stored(tmp_path: Path) -> None:
    """keep_local=False: after close the store holds every byte and the local files and their
    folder are gone; a file of someone else's in that folder stays, and so does the folder."""
    local = tmp_path / "logs"
    with LogSink(local, f"file://{tmp_path}/store/", keep_local=False) as sink:
        sink.file("stdout").write(b"out\npartial")
        sink.phase(Phase.STARTED)
    assert sink.stored is True
    assert not local.exists()
    assert (tmp_path / "store" / "stdout.txt").read_bytes() == b"out\npartial"

    other = tmp_path / "shared"
    with LogSink(other, f"file://{tmp_path}/store2/", keep_local=False):
        (other / "mine.txt").write_text("not taskkit's")
    assert sorted(p.name for p in other.iterdir()) == ["mine.txt"]


def test_the_local_copy_is_kept_and_named_when_the_store_lacks_it(tmp_path: Path) -> None:
    """The last upload fails: the local files stay whole, and a warning (on the console and
    in the kept taskkit.txt) names the folder they are in."""
    warnings = Warnings()
    blocker = tmp_path / "blocked"
    blocker.write_text("")
    local = tmp_path / "logs"
    with LogSink(local, f"file://{blocker}/logs/", keep_local=False, observer=warnings) as sink:
        sink.file("stdout").write(b"kept\n")
    assert sink.stored is False
    assert warnings[-1] == f"the store does not hold all the logs; they are kept in {local}"
    assert (local / "stdout.txt").read_bytes() == b"kept\n"
    assert f"they are kept in {local}" in (local / "taskkit.txt").read_text()


@pytest.mark.parametrize("keep_local", [True, False])
def test_logs_without_a_store_always_stay(tmp_path: Path, keep_local: bool) -> None:
    """dest=None: the local files are the only copy, kept whatever keep_local says."""
    with LogSink(tmp_path / "logs", None, keep_local=keep_local) as sink:
        assert sink.phase(Phase.STARTED)
    assert sorted(p.name for p in (tmp_path / "logs").iterdir()) == sorted(FILES)


# -- taskkit run, as a real process -------------------------------------------------------------


def test_a_run_stores_its_phases_in_order_as_it_reaches_them(task: Task, tmp_path: Path) -> None:
    """A run with an input and an output stores every phase in order; the command, reading
    the store while it runs, already finds "command started" there (and "staged" before it)."""
    source = tmp_path / "source.txt"
    source.write_text("input\n")
    seen = task.box / "seen.txt"
    stored = stored_dir(task, 1) / "taskkit.txt"
    command = sh(f"cp {q(stored)} {q(seen)}\ncp input.txt output.txt\n")
    ended = task.run(
        command, "-i", f"file://{source}=input.txt", "-o", f"output.txt=file://{tmp_path}/dest/"
    )
    assert ended.returncode == 0, ended.stderr
    assert phases(seen.read_text()) == ["started", "staging", "staged", "command started"]
    assert phases(stored.read_text()) == [p.value for p in Phase]
    assert (tmp_path / "dest" / "output.txt").read_text() == "input\n"


def test_kill_9_while_staging_leaves_logs_saying_so(task: Task) -> None:
    """taskkit run killed (SIGKILL) while its input is being read: the stored taskkit.txt says
    the attempt started and was staging, and status points at logs that exist."""
    gate = Gate()
    with http_server(gate=gate) as (base, _):
        argv = task.argv(["true"], "-i", f"{base}/gate/input.bin=input.bin")
        kill_9_once(argv, task.env, [(gate.reading.is_set, "the input to be read")])
    text = task.log(1, "taskkit")
    assert phases(text) == ["started", "staging"]
    assert "attempt 1 of" in text.splitlines()[0]
    [attempt] = task.status()["attempts"]
    assert attempt["state"] == "interrupted"
    logs = attempt["logs"].removeprefix("file://")
    assert sorted(p.name for p in Path(logs).iterdir()) == sorted(FILES)


def test_kill_9_while_the_command_runs_leaves_logs_saying_so(task: Task) -> None:
    """taskkit run killed (SIGKILL) while the command runs: the stored taskkit.txt says the
    command started, and nothing after."""
    proc = task.start(sh(task.block("cmd")))
    task.wait_started("cmd", proc)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    task.release("cmd")
    assert phases(task.log(1, "taskkit")) == ["started", "command started"]


def test_a_batch_attempt_leaves_no_local_log_copy(task: Task, tmp_path: Path) -> None:
    """Under AZ_BATCH_TASK_DIR the attempt's local logs are gone once stored (the store has
    them whole); Batch's own stdout.txt and stderr.txt beside them are left alone."""
    task_dir = tmp_path / "batch"
    task_dir.mkdir()
    for name in ("stdout.txt", "stderr.txt"):
        (task_dir / name).write_text(f"Batch's own {name}\n")
    ended = task.run(sh("echo hello"), env={"AZ_BATCH_TASK_DIR": str(task_dir)})
    assert ended.returncode == 0, ended.stderr
    assert not (task_dir / "taskkit" / "attempt-00001" / "logs").exists()
    assert task.log(1, "stdout") == "hello\n"
    assert phases(task.log(1, "taskkit"))[-1] == "ended"
    for name in ("stdout.txt", "stderr.txt"):
        assert (task_dir / name).read_text() == f"Batch's own {name}\n"


@pytest.mark.parametrize("batch", [True, False], ids=["task-dir", "no-task-dir"])
def test_logs_the_store_lacks_are_kept_where_a_warning_says(
    task: Task, tmp_path: Path, batch: bool
) -> None:
    """The command makes the attempt's log folder in the store unwritable: the run still
    succeeds, its local logs are kept whole (under AZ_BATCH_TASK_DIR, or in a temporary
    folder outside it) and a warning names where."""
    logs = stored_dir(task, 1)
    command = sh(
        f"echo before\nmv {q(logs)} {q(task.box / 'moved')}\necho blocked > {q(logs)}\necho after\n"
    )
    env = {"AZ_BATCH_TASK_DIR": str(tmp_path / "batch")} if batch else {}
    ended = task.run(command, env=env)
    assert ended.returncode == 0, ended.stderr
    found = re.findall(r"they are kept in (\S+)$", ended.stderr, re.MULTILINE)
    assert len(found) == 1, ended.stderr
    kept = Path(found[0])
    try:
        if batch:
            assert kept == tmp_path / "batch" / "taskkit" / "attempt-00001" / "logs"
        else:
            assert not kept.is_relative_to(task.workdir)
        assert (kept / "stdout.txt").read_text() == "before\nafter\n"
        assert phases((kept / "taskkit.txt").read_text())[-1] == "ended"
        assert task.attempt(1)["verdict"] == "success"
    finally:
        if not batch:
            shutil.rmtree(kept.parent)  # a temporary folder this run made outside tmp_path


# -- an attempt killed before its first upload --------------------------------------------------


def _forge_interrupted(task: Task, number: int) -> None:
    """The record of an attempt on this host whose runner is gone (a pid that has exited),
    as one killed between recording itself and its first log upload leaves it."""
    import json

    from taskkit.runner.journal import host_identity

    gone = subprocess.Popen(["true"])
    gone.wait()
    attempts = task.journal / "attempts"
    attempts.mkdir(parents=True, exist_ok=True)
    stamp = "2026-01-01T00:00:00.000Z"
    record = {
        "number": number,
        "host": host_identity(),
        "pid": gone.pid,
        "pid_start": "1",
        "fingerprint": "xxh3-128:00000000000000000000000000000000",
        "started": stamp,
        "heartbeat": stamp,
        "interval": 30.0,
        "logs": f"{task.state}/{task.job}/{task.task}/logs/{number:05d}/",
    }
    (attempts / f"{number:05d}.json").write_text(json.dumps(record))


@pytest.mark.parametrize("left", [True, False], ids=["local logs left", "nothing left"])
def test_the_next_attempt_stores_what_an_attempt_killed_before_its_first_upload_left(
    task: Task, tmp_path: Path, left: bool
) -> None:
    """An interrupted attempt whose logs never reached the store: the next attempt stores
    what it left on this node (or, when nothing is left, one line saying so), so its logs
    folder exists and says it was interrupted; the local copy goes once stored."""
    batch = tmp_path / "batch"
    _forge_interrupted(task, 1)
    local = batch / "taskkit" / "attempt-00001" / "logs"
    if left:
        local.mkdir(parents=True)
        (local / "taskkit.txt").write_text("2026-01-01T00:00:00Z taskkit: started: attempt 1\n")
        (local / "stdout.txt").write_text("half a line of output\n")
    done = task.run(["true"], "--max-retries", "3", env={"AZ_BATCH_TASK_DIR": str(batch)})
    assert done.returncode == 0, done.stderr
    assert "stored what attempt 1 left of its logs" in done.stderr
    stored = task.log(1, "taskkit")
    assert "attempt 1 was interrupted before its logs reached the store" in stored
    assert ("started: attempt 1" in stored) is left
    if left:
        assert task.log(1, "stdout") == "half a line of output\n"
        assert not local.exists()
    again = task.run(["true", "again"], "--max-retries", "3")  # new work, a new attempt
    assert again.returncode == 0, again.stderr
    assert "attempt 1 of 4" in again.stderr
    assert "stored what attempt 1 left" not in again.stderr  # settled once, by attempt 2


def test_an_interrupted_attempt_that_stored_its_logs_is_left_alone(task: Task) -> None:
    """An interrupted attempt whose taskkit.txt is in the store keeps it as it is."""
    _forge_interrupted(task, 1)
    folder = stored_dir(task, 1)
    folder.mkdir(parents=True)
    (folder / "taskkit.txt").write_text("its own words\n")
    done = task.run(["true"], "--max-retries", "3")
    assert done.returncode == 0, done.stderr
    assert "stored what attempt 1 left" not in done.stderr
    assert task.log(1, "taskkit") == "its own words\n"
