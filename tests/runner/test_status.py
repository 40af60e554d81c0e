"""taskkit.runner.status: the read-only view of a task's journal and of a job's tasks, as plain
data."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from taskkit.exceptions import InputNotFound
from taskkit.runner.journal import (
    Journal,
    Outcome,
    PublishedManifest,
    StepFile,
    StepRecord,
    host_identity,
    now,
)
from taskkit.runner.status import job_status, task_status
from taskkit.storage.stores import Stores

FP = "xxh3-128:11111111111111111111111111111111"


@pytest.fixture(params=["file", "memory"])
def state(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh state URL, on a local directory and in memory."""
    if request.param == "file":
        return f"file://{tmp_path}/state"
    return f"memory://status-{uuid.uuid4().hex}/state"


def _ended(journal: Journal, after: int, code: int, verdict: str, reason: str) -> None:
    record, version = journal.begin(
        fingerprint=FP, interval=30.0, after=after, node="node-1", logs=journal.logs_url
    )
    journal.update(record, version, ended=now(), exit_code=code, verdict=verdict, reason=reason)


def _interrupted(journal: Journal, after: int) -> None:
    """An attempt of this host whose process is not the one recorded: died without a word."""
    record, version = journal.begin(fingerprint=FP, interval=30.0, after=after)
    journal.update(record, version, pid_start="not-this-process")


def _all_files(state: str, stores: Stores) -> list[tuple[str, str]]:
    store, key = stores.open(state + "/")
    return sorted((f.key, f.version) for f in store.list(key))


def test_status_of_a_task_without_a_journal(stores: Stores, state: str) -> None:
    """A task nothing recorded (a typo in the id) is InputNotFound naming where it looked."""
    with pytest.raises(InputNotFound, match=r"no journal of task task of job job at .*/job/task/"):
        task_status(stores, state, "job", "task")


def test_task_status_reports_attempts_outcome_and_steps(stores: Stores, state: str) -> None:
    """Each attempt with its state, code, verdict, reason and logs; the outcome; the steps."""
    journal = Journal.open(stores, state, "job", "task")
    _ended(journal, 0, 75, "retryable", "exit code 75 is a retryable code")
    running, _ = journal.begin(fingerprint=FP, interval=30.0, after=1)
    files = (
        StepFile(path="a", url="memory://o/a", digest="xxh3-128:1", size=1),
        StepFile(path="b", url="memory://o/b", digest="xxh3-128:2", size=2),
    )
    step = StepRecord(name="prepare", fingerprint=FP, attempt=2, at=now(), files=files)
    journal.record_step(step)
    outcome = Outcome(
        state="success",
        fingerprint=FP,
        attempt=2,
        at=now(),
        manifests=("memory://o/_taskkit_manifest.json",),
        published=(
            PublishedManifest(
                url="memory://o/_taskkit_manifest.json", version="v1", kept="published/00002/1.json"
            ),
        ),
    )
    journal.write_outcome(outcome, replacing=None)

    status = task_status(stores, state, "job", "task")

    assert status["journal"] == journal.url("")
    assert status["outcome"] == {
        "state": "success",
        "attempt": 2,
        "at": outcome.at,
        "exit_code": 0,
        "reason": "",
        "fingerprint": FP,
        "manifests": ["memory://o/_taskkit_manifest.json"],
        "published": [{"url": "memory://o/_taskkit_manifest.json", "version": "v1"}],
    }
    first, second = status["attempts"]
    assert first["number"] == 1
    assert first["state"] == "ended"
    assert first["node"] == "node-1"
    assert first["exit_code"] == 75
    assert first["verdict"] == "retryable"
    assert first["reason"] == "exit code 75 is a retryable code"
    assert first["logs"] == journal.logs_url(1)
    assert first["ended"] is not None
    assert first["fingerprint"] == FP
    assert second["number"] == 2
    assert second["state"] == "running"
    assert second["started"] == running.started
    assert second["ended"] is None
    assert second["exit_code"] is None
    assert status["steps"] == [{"name": "prepare", "attempt": 2, "at": step.at, "files": 2}]


def test_task_status_shows_an_interrupted_attempt(stores: Stores, state: str) -> None:
    """An unended attempt whose process is gone is reported as interrupted."""
    journal = Journal.open(stores, state, "job", "task")
    _interrupted(journal, 0)
    assert [a["state"] for a in task_status(stores, state, "job", "task")["attempts"]] == [
        "interrupted"
    ]


def test_task_status_is_json_serialisable(stores: Stores, state: str) -> None:
    """The whole status round-trips through json (the --json output)."""
    journal = Journal.open(stores, state, "job", "task")
    _ended(journal, 0, 3, "permanent", "exit code 3 is a permanent code")
    journal.record_step(StepRecord(name="s", fingerprint=FP, attempt=1, at=now()))
    journal.write_outcome(
        Outcome(state="permanent", fingerprint=FP, attempt=1, at=now(), exit_code=3, reason="r"),
        replacing=None,
    )
    status = task_status(stores, state, "job", "task")
    assert json.loads(json.dumps(status)) == status


def test_task_status_writes_nothing(stores: Stores, state: str) -> None:
    """Reading a status changes no file of the journal."""
    journal = Journal.open(stores, state, "job", "task")
    _ended(journal, 0, 1, "retryable", "r")
    journal.begin(fingerprint=FP, interval=30.0, after=1)
    before = _all_files(state, stores)
    task_status(stores, state, "job", "task")
    job_status(stores, state, "job")
    assert _all_files(state, stores) == before


def test_job_status_one_row_per_task(stores: Stores, state: str) -> None:
    """Each task with a journal is a row: its outcome (or running/open), attempt count,
    exit code, reason and latest logs; rows in task order."""
    done = Journal.open(stores, state, "job", "a-done")
    _ended(done, 0, 0, "success", "")
    done.write_outcome(
        Outcome(state="success", fingerprint=FP, attempt=1, at=now()), replacing=None
    )
    failed = Journal.open(stores, state, "job", "b-failed")
    _ended(failed, 0, 3, "permanent", "exit code 3 is a permanent code")
    failed.write_outcome(
        Outcome(
            state="permanent",
            fingerprint=FP,
            attempt=1,
            at=now(),
            exit_code=3,
            reason="exit code 3 is a permanent code",
        ),
        replacing=None,
    )
    running = Journal.open(stores, state, "job", "c-running")
    _ended(running, 0, 75, "retryable", "again")
    running.begin(fingerprint=FP, interval=30.0, after=1, logs=running.logs_url)
    died = Journal.open(stores, state, "job", "d-open")
    _interrupted(died, 0)
    Journal.open(stores, state, "other-job", "x").begin(fingerprint=FP, interval=30.0, after=0)

    rows = job_status(stores, state, "job")

    assert [r["task"] for r in rows] == ["a-done", "b-failed", "c-running", "d-open"]
    by_task = {r["task"]: r for r in rows}
    assert by_task["a-done"] == {
        "task": "a-done",
        "outcome": "success",
        "attempts": 1,
        "interrupted": 0,
        "exit_code": 0,
        "reason": "",
        "logs": done.logs_url(1),
    }
    assert by_task["b-failed"]["outcome"] == "permanent"
    assert by_task["b-failed"]["exit_code"] == 3
    assert by_task["b-failed"]["reason"] == "exit code 3 is a permanent code"
    assert by_task["c-running"]["outcome"] == "running"
    assert by_task["c-running"]["attempts"] == 2
    assert by_task["c-running"]["exit_code"] is None
    assert by_task["c-running"]["logs"] == running.logs_url(2)
    assert by_task["d-open"]["outcome"] == "open"
    assert by_task["d-open"]["logs"] is None
    assert json.loads(json.dumps(rows)) == rows


def test_job_status_running_attempt_of_another_host(stores: Stores, state: str) -> None:
    """An unended attempt on another node with a fresh heartbeat counts as running."""
    journal = Journal.open(stores, state, "job", "remote")
    record, version = journal.begin(fingerprint=FP, interval=30.0, after=0)
    journal.update(record, version, host="other-node/boot", pid=4242, pid_start="1")
    assert host_identity() != "other-node/boot"
    assert [r["outcome"] for r in job_status(stores, state, "job")] == ["running"]


def test_job_status_of_an_unknown_job_is_empty(stores: Stores, state: str) -> None:
    """A job with no journals is InputNotFound (exit 66), not an empty table."""
    with pytest.raises(InputNotFound, match="no task of job nothing"):
        job_status(stores, state, "nothing")


@pytest.mark.parametrize("holder", ["running", "ended", "interrupted"])
def test_a_publishing_claim_says_whether_its_holder_still_runs(
    stores: Stores, state: str, holder: str
) -> None:
    """A claim is stale exactly when its holder ended or was interrupted; the success a
    republish's claim replaced is shown with it; the job's row shows that success (or no
    outcome) and the stale claim, never the claim as current."""
    journal = Journal.open(stores, state, "job", "task")
    success = Outcome(state="success", fingerprint=FP, attempt=1, at=now(), reason="ok")
    journal.write_outcome(success, replacing=None)
    if holder == "running":
        journal.begin(fingerprint=FP, interval=30.0, after=1)  # this very process
    elif holder == "ended":
        _ended(journal, 1, 143, "retryable", "stopped")
    else:
        _interrupted(journal, 1)
    found = journal.outcome()
    assert found is not None
    claim = Outcome(state="publishing", fingerprint=FP, attempt=2, at=now(), replaced=success)
    journal.write_outcome(claim, replacing=found[1])
    shown = task_status(stores, state, "job", "task")["outcome"]
    stale = None if holder == "running" else holder
    assert (shown["state"], shown["stale"]) == ("publishing", stale)
    assert (shown["replaced"]["state"], shown["replaced"]["attempt"]) == ("success", 1)
    [row] = job_status(stores, state, "job")
    if holder == "running":
        assert (row["outcome"], row["reason"]) == ("publishing", "")
    else:
        assert row["outcome"] == "success"
        assert row["reason"] == f"ok; stale publishing claim of attempt 2 ({holder})"


def test_an_outcome_other_than_a_claim_has_no_stale_field(stores: Stores, state: str) -> None:
    """Only a claim can be stale: a success reads as before."""
    journal = Journal.open(stores, state, "job", "task")
    _ended(journal, 0, 0, "success", "done")
    success = Outcome(state="success", fingerprint=FP, attempt=1, at=now())
    journal.write_outcome(success, replacing=None)
    shown = task_status(stores, state, "job", "task")["outcome"]
    assert "stale" not in shown
    assert "replaced" not in shown


@pytest.mark.parametrize("holder", ["running", "interrupted"])
def test_the_cli_shows_a_republish_claim_by_the_success_it_keeps(
    stores: Stores, tmp_path: Path, holder: str
) -> None:
    """``taskkit status``: a live republish shows its claim and the success it republishes;
    a stale one shows that success as the outcome and the claim as stale."""
    from runner_helpers import invoke

    state = f"file://{tmp_path}/state"
    journal = Journal.open(stores, state, "job", "task")
    success = Outcome(state="success", fingerprint=FP, attempt=1, at="T1", reason="ok")
    first = journal.write_outcome(success, replacing=None)
    if holder == "running":
        journal.begin(fingerprint=FP, interval=30.0, after=1)  # this very process
    else:
        _interrupted(journal, 1)
    claim = Outcome(state="publishing", fingerprint=FP, attempt=2, at="T2", replaced=success)
    journal.write_outcome(claim, replacing=first)
    code, out, _ = invoke(["status", "--state", state, "--job-id", "job", "--task-id", "task"])
    assert code == 0
    lines = out.splitlines()
    if holder == "running":
        assert lines[1] == "outcome: publishing in attempt 2 at T2, exit 0"
        assert lines[2] == "  republishing the outputs of the success of attempt 1 at T1"
    else:
        assert lines[1] == "outcome: success in attempt 1 at T1, exit 0: ok"
        assert lines[2] == (
            "  stale publishing claim of attempt 2 at T2, republishing the outputs above: "
            "that attempt was interrupted; the next run checks them again"
        )
