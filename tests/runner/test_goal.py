"""taskkit/goal.py: where a task stands for some work (its published manifests checked), who
lost a race, and how attempts are counted aloud."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from taskkit.runner.fingerprint import Work
from taskkit.runner.goal import attempt_label, attempt_ordinal, goal, lost_race, wait_for
from taskkit.runner.journal import Journal, Outcome, now
from taskkit.runner.lifetime import process_start
from taskkit.storage.stores import Stores
from taskkit.transfer.upload_plan import MANIFEST_NAME


@pytest.fixture
def journal(tmp_path: Path, stores: Stores) -> Journal:
    return Journal.open(stores, f"file://{tmp_path}/state", "job", "task")


def work(command: str = "true") -> Work:
    return Work((command,), (), ())


def outcome(state: str, w: Work, attempt: int = 1, **more: object) -> Outcome:
    return Outcome.model_validate(
        {
            "state": state,
            "fingerprint": w.fingerprint,
            "attempt": attempt,
            "at": now(),
            "work": w.as_json(),
            **more,
        }
    )


@pytest.mark.parametrize(
    ("number", "max_retries", "label"),
    [
        (1, 3, "attempt 1 of 4"),
        (4, 3, "attempt 4 of 4 (the last)"),
        (1, 0, "attempt 1 of 1 (the last)"),
        (2, -1, "attempt 2 (retries unlimited)"),
    ],
)
def test_attempt_labels(number: int, max_retries: int, label: str) -> None:
    """Attempts are counted against maxTaskRetryCount + 1, the last one named."""
    assert attempt_label(number, max_retries) == label


def test_an_attempt_past_the_count_is_called_a_rerun_batch_did_not_count() -> None:
    """Preemptions re-run a task without counting: such an attempt is not called 5 of 4."""
    assert "did not count" in attempt_label(5, 3)


def test_no_outcome_is_open(journal: Journal, stores: Stores) -> None:
    """A task with no outcome is open."""
    assert goal(journal, work(), stores).state == "open"


@pytest.mark.parametrize(
    ("state", "expected"), [("success", "met"), ("permanent", "permanent"), ("failed", "open")]
)
def test_the_outcome_of_the_same_work_decides(
    journal: Journal, state: str, expected: str, stores: Stores
) -> None:
    """Success is met, permanent short-circuits, failed (retries exhausted) stays open."""
    journal.write_outcome(outcome(state, work(), reason="r"), replacing=None)
    assert goal(journal, work(), stores).state == expected


def test_an_outcome_of_other_work_is_open_and_says_why(journal: Journal, stores: Stores) -> None:
    """Another command's success does not count, and the reason names the change."""
    journal.write_outcome(outcome("success", work("old")), replacing=None)
    status = goal(journal, work("new"), stores)
    assert status.state == "open"
    assert status.why == "starting afresh: the command changed"


def test_a_claim_of_a_live_attempt_is_publishing_and_of_a_dead_one_open(
    journal: Journal, stores: Stores
) -> None:
    """A publishing claim counts while its holder's process lives (same host), not after."""
    w = work()
    record, _ = journal.begin(fingerprint=w.fingerprint, interval=30, after=0)
    journal.write_outcome(outcome("publishing", w, attempt=record.number), replacing=None)
    assert record.pid == os.getpid()
    assert goal(journal, w, stores).state == "publishing"

    child = subprocess.Popen(["sleep", "30"])
    try:
        found = journal.outcome()
        assert found is not None
        dead = record.model_copy(
            update={"number": 2, "pid": child.pid, "pid_start": process_start(child.pid)}
        )
        journal.store.put(journal._attempt_key(2), dead.to_bytes(), {})
        journal.write_outcome(outcome("publishing", w, attempt=2), replacing=found[1])
        assert goal(journal, w, stores).state == "publishing"
    finally:
        child.kill()
        child.wait()
    assert goal(journal, w, stores).state == "open"


def test_waiting_ends_when_the_outcome_changes(journal: Journal, stores: Stores) -> None:
    """wait_for returns once the claim is replaced, without sleeping for real."""
    w = work()
    record, _ = journal.begin(fingerprint=w.fingerprint, interval=30, after=0)
    version = journal.write_outcome(outcome("publishing", w, attempt=record.number), replacing=None)
    status = goal(journal, w, stores)
    naps: list[float] = []

    def nap(seconds: float) -> None:
        naps.append(seconds)
        if len(naps) == 3:
            journal.write_outcome(outcome("success", w, attempt=1), replacing=version)

    wait_for(journal, status, sleep=nap)
    assert len(naps) == 3
    assert naps == sorted(naps)  # backing off
    assert goal(journal, w, stores).state == "met"


def test_a_live_claim_of_other_work_is_waited_for(journal: Journal, stores: Stores) -> None:
    """Two attempts never upload at once, even when one publishes other work (a re-added task
    with a changed command): the live claim is 'publishing', not 'starting afresh'."""
    old = work("old")
    record, _ = journal.begin(fingerprint=old.fingerprint, interval=30, after=0)
    journal.write_outcome(outcome("publishing", old, attempt=record.number), replacing=None)
    assert goal(journal, work("new"), stores).state == "publishing"


def published_work(tmp_path: Path) -> tuple[Work, Path]:
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / MANIFEST_NAME).write_text("{}")
    return Work(("true",), (), (f"out/*=file://{dest}/",)), dest / MANIFEST_NAME


def test_a_success_is_met_only_while_its_manifest_is_at_its_version(
    journal: Journal, stores: Stores, tmp_path: Path
) -> None:
    """Met with the manifest at the recorded version; gone, saying which, once it changed or
    went; a record without versions (written before them) is checked for presence only."""
    w, manifest = published_work(tmp_path)
    store, key = stores.open(str(manifest))
    record = {"url": "shown", "version": store.stat(key).version, "kept": "published/00001/1.json"}
    journal.write_outcome(outcome("success", w, published=[record]), replacing=None)
    assert goal(journal, w, stores).state == "met"
    manifest.write_text("{} ")
    status = goal(journal, w, stores)
    assert (status.state, status.why) == (
        "gone",
        f"published outputs are gone: {manifest} changed since attempt 1 published it",
    )
    manifest.unlink()
    assert goal(journal, w, stores).why == f"published outputs are gone: {manifest} is missing"

    found = journal.outcome()
    assert found is not None
    journal.write_outcome(outcome("success", w), replacing=found[1])  # no versions recorded
    assert goal(journal, w, stores).state == "gone"
    manifest.write_text("anything")
    assert goal(journal, w, stores).state == "met"


def test_a_race_is_lost_only_to_other_work_published_since_the_attempt_began(
    journal: Journal, stores: Stores
) -> None:
    """lost_race: other work's success written after the version the attempt saw; not the
    success it started afresh from, not a claim, not its own work's success."""
    mine, other = work("mine"), work("other")
    assert lost_race(goal(journal, mine, stores), mine, None) is None  # nothing recorded
    seen = journal.write_outcome(outcome("success", other, attempt=4), replacing=None)
    status = goal(journal, mine, stores)
    assert lost_race(status, mine, seen) is None  # the success it started afresh from
    assert lost_race(status, mine, None) == "lost race: attempt 4 published other work"
    later = journal.write_outcome(outcome("publishing", other, attempt=5), replacing=seen)
    assert lost_race(goal(journal, mine, stores), mine, seen) is None  # a claim may fail
    journal.write_outcome(outcome("success", mine, attempt=5), replacing=later)
    assert lost_race(goal(journal, mine, stores), mine, seen) is None  # the same work


def test_an_attempt_is_counted_among_ended_and_interrupted_ones_not_running_ones(
    journal: Journal,
) -> None:
    """attempt_ordinal: running attempts of the work (concurrent copies) and attempts of
    other work do not count; ended and interrupted ones do."""
    w = work()
    running, _ = journal.begin(fingerprint=w.fingerprint, interval=30, after=0)
    ended, version = journal.begin(fingerprint=w.fingerprint, interval=30, after=1)
    journal.update(ended, version, ended=now(), exit_code=1)
    gone_pid = running.model_copy(update={"number": 3, "pid_start": "0"})
    journal.store.put(journal._attempt_key(3), gone_pid.to_bytes(), {})
    journal.begin(fingerprint=work("other").fingerprint, interval=30, after=3)
    states = [a.state() for a in journal.attempts()]
    assert states == ["running", "ended", "interrupted", "running"]
    assert attempt_ordinal(journal.attempts(), w.fingerprint) == 3


def test_an_outcome_written_before_versions_were_kept_still_reads(journal: Journal) -> None:
    """An outcome.json without ``published`` (an older taskkit's) reads, with none."""
    old = {"state": "success", "fingerprint": "f", "attempt": 1, "at": now(), "manifests": ["m"]}
    journal.store.put(journal.root + "outcome.json", json.dumps(old).encode(), {})
    found = journal.outcome()
    assert found is not None
    assert (found[0].manifests, found[0].published) == (("m",), ())
