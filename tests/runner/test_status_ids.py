"""``taskkit status`` takes only Batch ids for the job and the task, as ``taskkit run`` does.

An id such as ``..`` or ``../x`` would name a folder beside the state root or outside the job:
it is refused with one line naming the option, 64, and nothing is read.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from runner_helpers import invoke

from taskkit.runner.journal import Journal, now
from taskkit.storage.stores import Stores

BAD_IDS = ["..", "../x", "a/b", ".", "a b", "x" * 65, "", "é"]


@pytest.fixture
def state(tmp_path: Path) -> Path:
    """A state root holding one job with one task's journal (one ended attempt), and the
    same beside the state root, where a '..' would look."""
    root = tmp_path / "state"
    with Stores() as stores:
        for where, job in ((root, "job-1"), (tmp_path, "beside")):
            journal = Journal.open(stores, f"file://{where}", job, "task-1")
            record, version = journal.begin(fingerprint="xxh3-128:0", interval=30.0, after=0)
            journal.update(record, version, ended=now(), exit_code=0, verdict="success")
    return root


def assert_refused(code: int, stdout: str, stderr: str, option: str) -> None:
    assert code == 64, stderr
    assert stdout == ""
    lines = stderr.splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("taskkit: error: "), lines
    assert option in lines[0], lines[0]
    assert "is not a Batch id" in lines[0], lines[0]


@pytest.mark.parametrize("bad", BAD_IDS)
def test_a_job_id_that_is_no_batch_id_is_refused(state: Path, bad: str) -> None:
    """--job-id '..' (or any non-Batch id), with or without --task-id: 64, one line."""
    for task in ([], ["--task-id", "task-1"]):
        code, out, err = invoke(["status", "--state", f"file://{state}", "--job-id", bad, *task])
        assert_refused(code, out, err, "--job-id")


@pytest.mark.parametrize("bad", BAD_IDS)
def test_a_task_id_that_is_no_batch_id_is_refused(state: Path, bad: str) -> None:
    """--task-id '../x' (or any non-Batch id): 64, one line, nothing read outside the job."""
    code, out, err = invoke(
        ["status", "--state", f"file://{state}", "--job-id", "job-1", "--task-id", bad]
    )
    assert_refused(code, out, err, "--task-id")


def test_an_id_from_the_environment_is_checked_too(state: Path) -> None:
    """TASKKIT_JOB_ID is held to the same rule as --job-id."""
    code, out, err = invoke(["status", "--state", f"file://{state}"], env={"TASKKIT_JOB_ID": ".."})
    assert_refused(code, out, err, "--job-id")


def test_good_ids_still_read_the_journal(state: Path) -> None:
    """Batch ids of letters, digits, '-' and '_' (64 at most) pass: the job's table lists its
    task, and a task without a journal is 66 as before."""
    code, out, err = invoke(["status", "--state", f"file://{state}", "--job-id", "job-1"])
    assert code == 0, err
    assert "task-1" in out
    code, _, err = invoke(
        ["status", "--state", f"file://{state}", "--job-id", "job-1", "--task-id", "T_" + "9" * 62]
    )
    assert code == 66, err
