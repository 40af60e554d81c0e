"""taskkit.runner.journal: attempt numbers, conditional outcome writes, steps, and liveness of
attempts."""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import taskkit
from taskkit.exceptions import Conflict, DataError
from taskkit.runner.journal import (
    STALE_INTERVALS,
    Attempt,
    Journal,
    Outcome,
    Settle,
    StepFile,
    StepRecord,
    host_identity,
    now,
)
from taskkit.runner.lifetime import process_start
from taskkit.storage.stores import Stores

FP = "xxh3-128:00000000000000000000000000000000"


@pytest.fixture(params=["file", "memory"])
def state(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh state URL, on a local directory and in memory."""
    if request.param == "file":
        return f"file://{tmp_path}/state"
    return f"memory://journal-{uuid.uuid4().hex}/state"


@pytest.fixture
def journal(stores: Stores, state: str) -> Journal:
    return Journal.open(stores, state, "job", "task")


def _begin(journal: Journal, after: int = 0) -> tuple[Attempt, str]:
    return journal.begin(fingerprint=FP, interval=30.0, after=after)


def _outcome(state: str = "publishing", attempt: int = 1) -> Outcome:
    return Outcome(state=state, fingerprint=FP, attempt=attempt, at=now())  # type: ignore[arg-type]


def _ago(seconds: float) -> str:
    stamp = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(seconds=seconds)
    return stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z")


# -- opening and naming -------------------------------------------------------------------------


def test_open_roots_the_journal_at_state_job_task(stores: Stores, tmp_path: Path) -> None:
    """A journal lives under <state>/<job>/<task>/, with logs and checkpoint beneath."""
    journal = Journal.open(stores, f"file://{tmp_path}/state/", "job", "task")
    root = f"{tmp_path}/state/job/task/"
    assert journal.url("") == root
    assert journal.url("outcome.json") == root + "outcome.json"
    assert journal.logs_url(7) == root + "logs/00007/"
    assert journal.checkpoint_url == root + "checkpoint/"
    assert repr(journal) == f"Journal({root!r})"


def test_open_memory_urls_keep_their_protocol(stores: Stores) -> None:
    """A memory:// journal shows memory:// URLs."""
    journal = Journal.open(stores, "memory://bucket/state", "j", "t")
    assert journal.url("outcome.json") == "memory://bucket/state/j/t/outcome.json"


def test_a_new_journal_is_empty(journal: Journal) -> None:
    """Nothing recorded: no attempts, no steps, no outcome."""
    assert journal.attempts() == []
    assert journal.steps() == []
    assert journal.outcome() is None
    assert journal.step("anything") is None


# -- attempts -----------------------------------------------------------------------------------


def test_begin_claims_1_2_3(journal: Journal) -> None:
    """Each begin claims the next free number and records who and when."""
    numbers = [_begin(journal)[0].number for _ in range(3)]
    assert numbers == [1, 2, 3]
    first = journal.attempts()[0]
    assert first.number == 1
    assert first.fingerprint == FP
    assert first.pid == os.getpid()
    assert first.host == host_identity()
    assert first.pid_start == process_start(os.getpid())
    assert first.started == first.heartbeat
    assert first.ended is None


def test_begin_after_skips_numbers(journal: Journal) -> None:
    """begin(after=n) claims n+1, or the first free number above it."""
    assert _begin(journal, after=4)[0].number == 5
    assert _begin(journal, after=0)[0].number == 1
    assert _begin(journal, after=4)[0].number == 6
    assert [a.number for a in journal.attempts()] == [1, 5, 6]


def test_begin_records_node_and_logs(journal: Journal) -> None:
    """The node id and the logs URL of the claimed number are in the record."""
    record, _ = journal.begin(
        fingerprint=FP, interval=5.0, after=2, node="n1", logs=journal.logs_url
    )
    assert record.node == "n1"
    assert record.logs == journal.logs_url(3)
    assert record.interval == 5.0
    assert journal.attempts() == [record]


_CLAIMER = """
import sys
from taskkit.runner.journal import Journal
from taskkit.storage.retry import RetryBudget
from taskkit.storage.stores import Stores

state, count = sys.argv[1], int(sys.argv[2])
with Stores(RetryBudget(attempts=1)) as stores:
    journal = Journal.open(stores, state, "job", "task")
    print("ready", flush=True)
    sys.stdin.readline()  # the start barrier: every racer is ready before any claims
    got = []
    for _ in range(count):
        after = got[-1] if got else 0
        got.append(journal.begin(fingerprint="f", interval=30.0, after=after)[0].number)
print(" ".join(map(str, got)))
"""


def test_processes_racing_begin_on_file_get_distinct_numbers(tmp_path: Path) -> None:
    """Attempts started at once in separate processes each claim their own numbers, without
    errors, and together claim 1..N with no gaps."""
    processes, count = 2, 60
    state = f"file://{tmp_path}/state"
    # The racers import the very taskkit under test, wherever the current directory is.
    env = {**os.environ, "PYTHONPATH": str(Path(taskkit.__file__).parent.parent)}
    racers = [
        subprocess.Popen(
            [sys.executable, "-c", _CLAIMER, state, str(count)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=tmp_path,
            env=env,
        )
        for _ in range(processes)
    ]
    try:
        for racer in racers:  # wait until each has imported and opened its journal
            assert racer.stdout is not None
            assert racer.stdout.readline() == "ready\n"
        for racer in racers:
            assert racer.stdin is not None
            racer.stdin.write("go\n")
            racer.stdin.flush()
        outputs = [racer.communicate(timeout=120) for racer in racers]
    finally:
        for racer in racers:
            if racer.poll() is None:
                racer.kill()
                racer.communicate()
    errors = [err.strip().splitlines()[-1] for _, err in outputs if err.strip()]
    assert errors == []
    assert [racer.returncode for racer in racers] == [0] * processes
    numbers = [int(n) for out, _ in outputs for n in out.split()]
    assert sorted(numbers) == list(range(1, processes * count + 1))


def test_update_rewrites_the_record(journal: Journal) -> None:
    """update() changes fields of the attempt's own record and returns its new version."""
    record, version = _begin(journal)
    ended, new_version = journal.update(
        record, version, ended=now(), exit_code=3, verdict="retryable"
    )
    assert new_version != version
    assert journal.attempts() == [ended]
    assert ended.exit_code == 3
    assert ended.number == record.number


def test_update_with_a_stale_version_is_a_conflict(journal: Journal) -> None:
    """A second writer using the version the first replaced gets Conflict, and the record
    keeps the first writer's change."""
    record, version = _begin(journal)
    beat, _ = journal.update(record, version, heartbeat=now())
    with pytest.raises(Conflict):
        journal.update(record, version, ended=now())
    assert journal.attempts() == [beat]


def test_attempts_are_in_number_order(journal: Journal) -> None:
    """attempts() lists by number, also past 9 (zero-padded names)."""
    for after in (11, 2, 0, 9):
        _begin(journal, after=after)
    assert [a.number for a in journal.attempts()] == [1, 3, 10, 12]


@pytest.mark.parametrize("garbage", [b"{garbage", b"[]", b'{"number": "x"}', b"\xff\xfe"])
def test_a_damaged_attempt_record_is_a_data_error(
    stores: Stores, tmp_path: Path, garbage: bytes
) -> None:
    """A record that is not a valid attempt raises DataError naming its URL."""
    journal = Journal.open(stores, f"file://{tmp_path}/state", "job", "task")
    _begin(journal)
    path = tmp_path / "state" / "job" / "task" / "attempts" / "00001.json"
    path.write_bytes(garbage)
    with pytest.raises(DataError, match="damaged") as caught:
        journal.attempts()
    assert journal.url("attempts/00001.json") in str(caught.value)
    assert str(path) in str(caught.value)


def test_a_damaged_outcome_is_a_data_error(journal: Journal) -> None:
    """A garbled outcome.json raises DataError naming it."""
    journal.store.put(journal.root + "outcome.json", b"not json", {})
    with pytest.raises(DataError) as caught:
        journal.outcome()
    assert journal.url("outcome.json") in str(caught.value)


# -- the outcome --------------------------------------------------------------------------------


def test_write_outcome_when_absent(journal: Journal) -> None:
    """write_outcome(replacing=None) records the outcome; outcome() reads it with its version."""
    outcome = _outcome()
    version = journal.write_outcome(outcome, replacing=None)
    assert journal.outcome() == (outcome, version)


def test_write_outcome_twice_when_absent_conflicts(journal: Journal) -> None:
    """Of two writers that both saw no outcome, the second gets Conflict; the first stands."""
    first = _outcome(attempt=1)
    version = journal.write_outcome(first, replacing=None)
    with pytest.raises(Conflict):
        journal.write_outcome(_outcome(attempt=2), replacing=None)
    assert journal.outcome() == (first, version)


def test_write_outcome_replacing_the_current_version(journal: Journal) -> None:
    """Replacing the version read succeeds and returns a new version."""
    version = journal.write_outcome(_outcome(), replacing=None)
    success = _outcome("success")
    new_version = journal.write_outcome(success, replacing=version)
    assert new_version != version
    assert journal.outcome() == (success, new_version)


def test_write_outcome_replacing_a_stale_version_conflicts(journal: Journal) -> None:
    """Replacing a version another writer already replaced is a Conflict."""
    stale = journal.write_outcome(_outcome(), replacing=None)
    current = journal.write_outcome(_outcome("failed"), replacing=stale)
    with pytest.raises(Conflict):
        journal.write_outcome(_outcome("success"), replacing=stale)
    found = journal.outcome()
    assert found is not None
    assert found[0].state == "failed"
    assert found[1] == current


def test_write_outcome_replacing_when_there_is_none_conflicts(journal: Journal) -> None:
    """Replacing a version when the outcome is gone is a Conflict."""
    version = journal.write_outcome(_outcome(), replacing=None)
    journal.release(version)
    with pytest.raises(Conflict):
        journal.write_outcome(_outcome("success"), replacing=version)


def test_settle_outcome_decides_again_after_a_conflict(journal: Journal) -> None:
    """A write another attempt beat is decided again from a fresh read, and what was written
    is kept with its version; the other attempt's outcome is replaced only as read."""
    reads: list[str | None] = []

    def decide() -> tuple[Outcome, str | None]:
        found = journal.outcome()
        version = None if found is None else found[1]
        reads.append(version)
        if len(reads) == 1:  # another attempt writes between this read and this write
            journal.write_outcome(_outcome("failed", attempt=9), replacing=None)
        return _outcome("success"), version

    kept: list[tuple[Outcome, str]] = []
    journal.settle_outcome(decide, tries=3, kept=lambda o, v: kept.append((o, v)))
    assert len(reads) == 2
    assert reads[0] is None
    assert reads[1] is not None
    assert journal.outcome() == kept[0]
    assert kept[0][0].state == "success"


def test_settle_outcome_stops_and_waits_without_writing(journal: Journal) -> None:
    """STOP writes nothing and ends the loop; AGAIN spends a try without writing."""
    answers = iter([Settle.AGAIN, Settle.AGAIN, Settle.STOP])
    journal.settle_outcome(lambda: next(answers), tries=5)
    assert next(answers, None) is None
    assert journal.outcome() is None


def test_settle_outcome_gives_up_after_its_tries(journal: Journal) -> None:
    """Conflicts on every try: Conflict after exactly ``tries`` decisions, and the outcome
    another attempt wrote stands; tries spent waiting count too."""
    theirs = journal.write_outcome(_outcome("failed", attempt=9), replacing=None)
    decisions: list[int] = []

    def stale() -> tuple[Outcome, str | None]:
        decisions.append(1)
        return _outcome("success"), None  # as if nothing were there: always beaten

    with pytest.raises(Conflict):
        journal.settle_outcome(stale, tries=3)
    assert len(decisions) == 3
    found = journal.outcome()
    assert found is not None
    assert found[1] == theirs
    with pytest.raises(Conflict):
        journal.settle_outcome(lambda: Settle.AGAIN, tries=2)


def test_settle_outcome_keeps_the_version_inside_the_hold(journal: Journal) -> None:
    """``kept`` runs inside ``hold``, so a signal held there cannot fall between the write
    and the version being kept."""
    events: list[str] = []

    @contextlib.contextmanager
    def hold() -> Iterator[None]:
        events.append("held")
        yield
        events.append("released")

    journal.settle_outcome(
        lambda: (_outcome(), None),
        tries=1,
        kept=lambda o, v: events.append("kept"),
        hold=hold,
    )
    assert events == ["held", "kept", "released"]


def test_release_removes_the_claim(journal: Journal) -> None:
    """release(version) deletes the outcome, so another attempt can claim it."""
    version = journal.write_outcome(_outcome(), replacing=None)
    journal.release(version)
    assert journal.outcome() is None
    journal.write_outcome(_outcome(attempt=2), replacing=None)


def test_release_restoring_puts_the_replaced_success_back(journal: Journal) -> None:
    """release(version, restore) writes the success a republish's claim replaced back in its
    place (conditionally: a claim replaced meanwhile is a Conflict and changes nothing)."""
    success = journal.write_outcome(_outcome("success"), replacing=None)
    found = journal.outcome()
    assert found is not None
    claim = _outcome(attempt=2).model_copy(update={"replaced": found[0]})
    version = journal.write_outcome(claim, replacing=success)
    loaded = journal.outcome()
    assert loaded is not None
    assert loaded[0].replaced == found[0]
    journal.release(version, loaded[0].replaced)
    back = journal.outcome()
    assert back is not None
    assert back[0] == found[0]
    with pytest.raises(Conflict):
        journal.release(version, found[0])
    assert journal.outcome() == back


def test_an_outcome_written_before_replaced_existed_reads(journal: Journal) -> None:
    """A record without the ``replaced`` field reads, replacing nothing."""
    data = json.loads(_outcome().to_bytes())
    del data["replaced"]
    journal.store.put(journal.root + "outcome.json", json.dumps(data).encode(), {})
    found = journal.outcome()
    assert found is not None
    assert found[0].replaced is None


def test_release_of_a_stale_version_conflicts(journal: Journal) -> None:
    """Releasing a claim that was replaced meanwhile is a Conflict and removes nothing."""
    stale = journal.write_outcome(_outcome(), replacing=None)
    journal.write_outcome(_outcome("success"), replacing=stale)
    with pytest.raises(Conflict):
        journal.release(stale)
    assert journal.outcome() is not None


def test_outcome_keeps_every_field(journal: Journal) -> None:
    """An outcome round-trips its code, reason, manifests and work."""
    outcome = Outcome(
        state="permanent",
        fingerprint=FP,
        attempt=2,
        at=now(),
        exit_code=3,
        reason="exit code 3 is a permanent code",
        manifests=("memory://o/_taskkit_manifest.json",),
        work={"command": ["x"], "inputs": {}, "outputs": []},
    )
    journal.write_outcome(outcome, replacing=None)
    found = journal.outcome()
    assert found is not None
    assert found[0] == outcome


# -- steps and tasks ----------------------------------------------------------------------------


def test_record_step_and_read_it_back(journal: Journal) -> None:
    """A recorded step is found by name and listed in name order."""
    files = (StepFile(path="out/a", url="memory://x/a", digest="xxh3-128:1", size=1),)
    later = StepRecord(name="train", fingerprint=FP, attempt=1, at=now(), files=files)
    earlier = StepRecord(name="prepare", fingerprint=FP, attempt=1, at=now())
    journal.record_step(later)
    journal.record_step(earlier)
    assert journal.step("train") == later
    assert journal.step("prepare") == earlier
    assert journal.step("missing") is None
    assert journal.steps() == [earlier, later]


def test_record_step_again_replaces_it(journal: Journal) -> None:
    """Recording a step of the same name again keeps the latest record."""
    journal.record_step(StepRecord(name="s", fingerprint=FP, attempt=1, at=now()))
    newer = StepRecord(name="s", fingerprint=FP, attempt=2, at=now())
    journal.record_step(newer)
    assert journal.steps() == [newer]


def test_tasks_lists_the_tasks_of_a_job(stores: Stores, state: str) -> None:
    """Journal.tasks names each task of the job with attempts, sorted; other jobs are apart."""
    for task in ("t2", "t1", "t10"):
        _begin(Journal.open(stores, state, "job", task))
    _begin(Journal.open(stores, state, "other", "t9"))
    assert Journal.tasks(stores, state, "job") == ["t1", "t10", "t2"]
    assert Journal.tasks(stores, state, "other") == ["t9"]
    assert Journal.tasks(stores, state, "none") == []


# -- liveness -----------------------------------------------------------------------------------


def _attempt(**fields: Any) -> Attempt:
    stamp = now()
    values: dict[str, Any] = {
        "number": 1,
        "fingerprint": FP,
        "started": stamp,
        "heartbeat": stamp,
        "interval": 30.0,
    }
    values.update(fields)
    return Attempt(**values)


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    """A real process that stays alive until the test kills it."""
    process = subprocess.Popen(["sleep", "60"])
    try:
        yield process
    finally:
        process.kill()
        process.wait()


def test_an_ended_attempt_is_ended() -> None:
    """An end time means ended, however old the heartbeat and whatever the host."""
    assert _attempt(ended=now(), heartbeat=_ago(3600)).state() == "ended"
    assert _attempt(ended=now(), host="elsewhere", pid=1).state() == "ended"


def test_same_host_live_process_is_running(sleeper: subprocess.Popen[bytes]) -> None:
    """On this host, an attempt whose process is alive (same start time) is running, even with
    a stale heartbeat."""
    record = _attempt(
        host=host_identity(),
        pid=sleeper.pid,
        pid_start=process_start(sleeper.pid),
        heartbeat=_ago(3600),
    )
    assert record.pid_start is not None
    assert record.state() == "running"


def test_same_host_dead_process_is_interrupted(sleeper: subprocess.Popen[bytes]) -> None:
    """Once its process is gone, an attempt on this host is interrupted at once, even with a
    fresh heartbeat."""
    record = _attempt(host=host_identity(), pid=sleeper.pid, pid_start=process_start(sleeper.pid))
    sleeper.kill()
    sleeper.wait()
    assert record.state() == "interrupted"


def test_same_host_reused_pid_is_interrupted(sleeper: subprocess.Popen[bytes]) -> None:
    """A live pid that started at another time belongs to another process: interrupted."""
    start = process_start(sleeper.pid)
    assert start is not None
    record = _attempt(host=host_identity(), pid=sleeper.pid, pid_start=str(int(start) + 1))
    assert record.state() == "interrupted"


def test_same_host_without_a_start_time_is_interrupted(sleeper: subprocess.Popen[bytes]) -> None:
    """A record with a pid but no start time cannot prove its process alive."""
    assert _attempt(host=host_identity(), pid=sleeper.pid, pid_start=None).state() == (
        "interrupted"
    )


def test_this_process_begun_attempt_is_running(journal: Journal) -> None:
    """An attempt begun by this very process is running."""
    record, _ = _begin(journal)
    assert record.state() == "running"


def test_other_host_fresh_heartbeat_is_running() -> None:
    """On another host, a heartbeat within 3 intervals means running."""
    record = _attempt(host="other-node/boot", pid=12345, heartbeat=_ago(2 * 30.0))
    assert record.state() == "running"
    assert record.state(host="this-node/boot") == "running"


def test_other_host_stale_heartbeat_is_interrupted() -> None:
    """On another host, a heartbeat older than 3 intervals means interrupted."""
    record = _attempt(
        host="other-node/boot", pid=12345, heartbeat=_ago(STALE_INTERVALS * 30.0 + 30)
    )
    assert STALE_INTERVALS == 3
    assert record.state() == "interrupted"


def test_the_host_argument_decides_whose_pid_it_is(sleeper: subprocess.Popen[bytes]) -> None:
    """Seen from another host, a live local pid says nothing: the heartbeat decides."""
    record = _attempt(
        host=host_identity(),
        pid=sleeper.pid,
        pid_start=process_start(sleeper.pid),
        heartbeat=_ago(3600),
    )
    assert record.state(host="another-host/boot") == "interrupted"


def test_process_start_of_a_missing_pid_is_none() -> None:
    """A pid no process can have (above the kernel's pid_max) has no start time."""
    pid_max = int(Path("/proc/sys/kernel/pid_max").read_text())
    assert process_start(pid_max + 1) is None
    assert process_start(os.getpid()) is not None


def test_records_are_frozen_and_serialise_as_json(journal: Journal) -> None:
    """Records are frozen and their bytes are sorted, indented JSON ending in a newline."""
    record, _ = _begin(journal)
    with pytest.raises(Exception, match="frozen"):
        record.number = 2
    data = record.to_bytes()
    assert data.endswith(b"}\n")
    assert Attempt.model_validate_json(data) == record


def test_now_is_utc_milliseconds() -> None:
    """Journal times are ISO 8601 UTC to the millisecond, ending in Z."""
    stamp = now()
    assert stamp.endswith("Z")
    assert len(stamp) == len("2026-01-01T00:00:00.000Z")
    parsed = datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    assert abs((datetime.datetime.now(datetime.timezone.utc) - parsed).total_seconds()) < 60


# -- the values records hold --------------------------------------------------------------------

#: An attempt record and an outcome as the version before typed states wrote them.
_OLD_ATTEMPT = (
    b'{\n "command_pgid": 0,\n "command_start": null,\n "ended": "2026-01-01T00:01:00.000Z",\n'
    b' "exit_code": 201,\n "fingerprint": "xxh3-128:00000000000000000000000000000000",\n'
    b' "heartbeat": "2026-01-01T00:00:30.000Z",\n "host": "h/b",\n "interval": 30.0,\n'
    b' "last": true,\n "logs": null,\n "node": "n",\n "number": 1,\n "pid": 7,\n'
    b' "pid_start": "9",\n "reason": "taskkit failed: InputNotFound: x",\n'
    b' "started": "2026-01-01T00:00:00.000Z",\n "verdict": "permanent"\n}\n'
)


def test_verdicts_recorded_are_the_policys() -> None:
    """The verdicts a record may hold are exactly the values of the policy's Verdict."""
    import typing

    from taskkit.runner.journal import AttemptVerdict
    from taskkit.runner.policy import Verdict

    assert set(typing.get_args(AttemptVerdict)) == {v.value for v in Verdict}


def test_records_written_before_typed_states_load_unchanged() -> None:
    """An attempt record and each outcome state the previous version wrote load, and write
    back byte for byte: typing the states changed no JSON value."""
    attempt = Attempt.model_validate_json(_OLD_ATTEMPT)
    assert (attempt.verdict, attempt.state()) == ("permanent", "ended")
    assert attempt.to_bytes() == _OLD_ATTEMPT
    for state in ("publishing", "success", "permanent", "failed"):
        outcome = _outcome(state)
        assert Outcome.model_validate_json(outcome.to_bytes()).to_bytes() == outcome.to_bytes()
        assert json.loads(outcome.to_bytes())["state"] == state


@pytest.mark.parametrize(("model", "field"), [(Attempt, "verdict"), (Outcome, "state")])
def test_a_record_with_an_unknown_state_is_refused(model: type[Attempt], field: str) -> None:
    """A verdict or outcome state no version writes is not read as if it meant something."""
    data = json.loads(_OLD_ATTEMPT if model is Attempt else _outcome().to_bytes())
    data[field] = "maybe"
    with pytest.raises(ValueError, match=field):
        model.model_validate(data)


def test_skips_are_notes_of_their_own_read_oldest_first(tmp_path: Path) -> None:
    """Each run that started no attempt leaves its own note under skips/; they read back in
    the order of their times, whoever wrote them."""
    from taskkit.runner.journal import Skip

    with Stores() as stores:
        journal = Journal.open(stores, f"file://{tmp_path}", "job", "t1")
        for at in ("2026-01-01T00:00:02.000Z", "2026-01-01T00:00:01.000Z"):
            journal.record_skip(Skip(goal="met", attempt=1, started=at, at=at, node="n1"))
        journal.record_skip(Skip(goal="met", attempt=1, started="s", at="2026-01-01T00:00:01.000Z"))
        found = journal.skips()
    assert [s.at for s in found] == [
        "2026-01-01T00:00:01.000Z",
        "2026-01-01T00:00:01.000Z",
        "2026-01-01T00:00:02.000Z",
    ]
    assert len(list((tmp_path / "job" / "t1" / "skips").iterdir())) == 3


def test_an_attempts_transfers_are_kept_and_left_out_when_absent() -> None:
    """What an attempt's staging and upload moved round-trips; a record without them writes
    no null for them."""
    from taskkit.runner.journal import Moved

    attempt = Attempt.model_validate_json(_OLD_ATTEMPT)
    assert b"staged" not in attempt.to_bytes()
    moved = Moved(files=3, transferred=1, skipped=2, bytes_transferred=10, bytes_reused=20)
    with_moved = attempt.model_copy(update={"staged": moved})
    again = Attempt.model_validate_json(with_moved.to_bytes())
    assert again.staged == moved
    assert again.uploaded is None
    assert b"uploaded" not in again.to_bytes()
