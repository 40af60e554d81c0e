"""``taskkit batch status``: Batch's task states (from a local endpoint that answers as the
service documents; the service itself cannot run here) joined with taskkit's journal, or
either half alone."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from taskkit.batch.jobstatus import joined
from taskkit.batch.service import TaskFacts
from taskkit.testing.batch_endpoint import BatchEndpoint

ACCOUNT = "devbatch"


def taskkit(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AZURE_BATCH", "TASKKIT_", "AZ_BATCH"))
    }
    base.update(AZURE_BATCH_ACCOUNT=ACCOUNT, AZURE_BATCH_ACCESS_KEY="a2V5")
    base.update(env or {})
    done = subprocess.run(
        [sys.executable, "-m", "taskkit", *args],
        capture_output=True,
        text=True,
        env=base,
        timeout=120,
        check=False,
        cwd=cwd,
    )
    assert "Traceback" not in done.stdout + done.stderr, done.stderr
    return done


def table_tasks(stdout: str) -> list[str]:
    """The TASK column of the table (the lines before the first empty one)."""
    return [ln.split()[0] for ln in stdout.split("\n\n", maxsplit=1)[0].splitlines()[1:]]


@pytest.fixture
def journals(tmp_path: Path) -> str:
    """Job J's journals: task a succeeded, task b failed permanently (exit 2), task d ran too."""
    state = f"file://{tmp_path}/state"
    work = tmp_path / "work"
    for task, code in (("a", 0), ("b", 2), ("d", 0)):
        (work / task).mkdir(parents=True)
        done = taskkit(
            "run",
            "--state",
            state,
            "--job-id",
            "J",
            "--task-id",
            task,
            "--permanent-codes",
            "2",
            "--workdir",
            str(work / task),
            "--",
            sys.executable,
            "-c",
            f"raise SystemExit({code})",
        )
        assert done.returncode == code, done.stderr
    return state


@pytest.fixture
def endpoint() -> Iterator[BatchEndpoint]:
    with BatchEndpoint(ACCOUNT) as ep:
        ep.add_job("J", tasks=("a", "B", "c"))
        tasks = ep.jobs["j"].tasks
        tasks["a"].update(
            state="completed",
            executionInfo={"exitCode": 0, "retryCount": 0, "requeueCount": 0},
            nodeInfo={"nodeId": "tvm-1"},
        )
        tasks["b"].update(
            state="completed",
            executionInfo={"exitCode": 2, "retryCount": 1, "requeueCount": 1},
            nodeInfo={"nodeId": "tvm-2"},
        )
        yield ep


def test_joined_keeps_both_halves_in_batch_order_then_the_journal() -> None:
    """Rows match ignoring case; a Batch-only task and a journal-only task both stay."""
    journal = [
        {
            "task": "b",
            "outcome": "permanent",
            "attempts": 2,
            "interrupted": 1,
            "exit_code": 2,
            "reason": "r",
            "logs": "L",
        },
        {
            "task": "z",
            "outcome": "success",
            "attempts": 1,
            "interrupted": 0,
            "exit_code": 0,
            "reason": "",
            "logs": None,
        },
    ]
    batch = [TaskFacts("a", "active", None, 0, 0, None), TaskFacts("B", "completed", 2, 1, 0, "n")]
    rows = joined(journal, batch)
    assert [r["task"] for r in rows] == ["a", "B", "z"]
    assert (rows[0]["state"], rows[0]["outcome"]) == ("active", None)
    assert (rows[1]["node"], rows[1]["outcome"], rows[1]["interrupted"]) == ("n", "permanent", 1)
    assert (rows[2]["state"], rows[2]["outcome"]) == (None, "success")


def test_journal_and_batch_in_one_table(journals: str, endpoint: BatchEndpoint) -> None:
    """Each of Batch's tasks with its state, exit code, retries and node beside the journal's
    outcome; the journal's task that Batch does not have comes last."""
    done = taskkit(
        "batch",
        "status",
        "--job-id",
        "J",
        "--state",
        journals,
        "--endpoint",
        endpoint.url,
        "--json",
    )
    assert done.returncode == 0, done.stderr
    rows = {r["task"]: r for r in json.loads(done.stdout)["tasks"]}
    assert list(rows) == ["a", "B", "c", "d"]
    assert (rows["a"]["state"], rows["a"]["node"], rows["a"]["outcome"]) == (
        "completed",
        "tvm-1",
        "success",
    )
    assert (rows["B"]["exit_code"], rows["B"]["retries"], rows["B"]["outcome"]) == (
        2,
        1,
        "permanent",
    )
    assert (rows["c"]["state"], rows["c"]["outcome"]) == ("active", None)
    assert (rows["d"]["state"], rows["d"]["outcome"]) == (None, "success")
    table = taskkit(
        "batch", "status", "--job-id", "J", "--state", journals, "--endpoint", endpoint.url
    )
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split()[:3] == ["TASK", "BATCH", "EXIT"]
    assert lines[2].split()[:6] == ["B", "completed", "2", "1", "tvm-2", "permanent"]


def test_without_an_endpoint_the_journal_alone(journals: str) -> None:
    """No endpoint: the journal's tasks, Batch's columns empty, and one note saying so."""
    done = taskkit("batch", "status", "--job-id", "J", "--state", journals)
    assert done.returncode == 0, done.stderr
    assert table_tasks(done.stdout) == ["a", "b", "d"]
    logs = done.stdout.split("\n\n")[1]
    assert done.stderr.startswith("taskkit: note: no Batch endpoint")
    # where to look next: the logs of the one task that did not succeed, and only its
    b_logs = json.loads(taskkit("status", "--state", journals, "--job-id", "J", "--json").stdout)
    (b_row,) = [r for r in b_logs["tasks"] if r["task"] == "b"]
    assert logs.splitlines()[1:] == [f"  b  {b_row['logs']}"]
    assert b_row["logs"].endswith("/J/b/logs/00001/")


def test_nothing_to_read_is_64_and_an_unknown_job_66(
    endpoint: BatchEndpoint, tmp_path: Path
) -> None:
    """Neither --state nor an endpoint: a usage error; a job Batch does not have: 66."""
    assert taskkit("batch", "status", "--job-id", "J").returncode == 64
    missing = taskkit("batch", "status", "--job-id", "nope", "--endpoint", endpoint.url)
    assert missing.returncode == 66
    assert "nope" in missing.stderr


def test_a_grouped_task_stands_for_itsshards() -> None:
    """A group's Batch state is shown on a row per shard it runs, each joined with the shard's
    own journal; the group's id is kept in 'group'."""
    from taskkit.batch.jobstatus import shards

    line = (
        "/bin/sh -c 'taskkit run --task-id w-0 -- echo 0 && exec taskkit run --task-id w-1 -- "
        "echo 1'"
    )
    assert shards(line) == ("w-0", "w-1")
    assert shards("/bin/sh -c 'exec taskkit run -- true'") == ()
    journal = [
        {
            "task": "w-0",
            "outcome": "success",
            "attempts": 1,
            "interrupted": 0,
            "exit_code": 0,
            "reason": "",
            "logs": None,
        },
    ]
    group = TaskFacts("w-g0", "running", None, 1, 0, "n1", command_line=line)
    rows = joined(journal, [group])
    assert [(r["task"], r["group"], r["state"], r["outcome"]) for r in rows] == [
        ("w-0", "w-g0", "running", "success"),
        ("w-1", "w-g0", "running", None),
    ]


def test_a_task_id_the_command_takes_is_no_shard() -> None:
    """Only the --task-id options of taskkit run name journals; the same option in the
    command it runs (after --) is the command's own."""
    from taskkit.batch.jobstatus import shards

    line = "/bin/sh -c 'exec taskkit run --state x -- python3 argv.py --task-id alpha'"
    assert shards(line) == ()
    assert shards("/bin/sh -c 'exec /opt/tk/bin/taskkit run --task-id=q -- x'") == ("q",)


def test_batch_unreachable_shows_the_journal_alone_and_exits_75(journals: str) -> None:
    """Batch cannot be reached within --patience: a warning, the journal's rows, exit 75."""
    done = taskkit(
        "batch", "status", "--job-id", "J", "--state", journals,
        "--endpoint", "http://127.0.0.1:9", "--patience", "1s",
    )  # fmt: skip
    assert done.returncode == 75, done.stderr
    assert table_tasks(done.stdout) == ["a", "b", "d"]
    (line,) = done.stderr.splitlines()
    assert line.startswith("taskkit: warning: ")
    assert "the journal alone" in line


def test_a_job_batch_no_longer_has_shows_its_journal(
    journals: str, endpoint: BatchEndpoint
) -> None:
    """Batch has no such job (deleted), the journal has: its rows and a warning, exit 0."""
    done = taskkit(
        "batch", "status", "--job-id", "J", "--state", journals, "--endpoint", endpoint.url
    )
    assert done.returncode == 0
    endpoint.jobs.clear()
    gone = taskkit(
        "batch", "status", "--job-id", "J", "--state", journals, "--endpoint", endpoint.url
    )
    assert gone.returncode == 0, gone.stderr
    assert "Batch has no job 'J'" in gone.stderr
    assert table_tasks(gone.stdout) == ["a", "b", "d"]


def test_a_damaged_record_is_one_row_not_the_whole_table(journals: str) -> None:
    """One task's attempt record cut short: that task's row says so (unreadable), every other
    row is there, exit 0."""
    root = Path(journals.removeprefix("file://")) / "J" / "b" / "attempts"
    record = sorted(root.iterdir())[0]
    record.write_text(record.read_text()[:20])
    done = taskkit("batch", "status", "--job-id", "J", "--state", journals, "--endpoint", "")
    assert done.returncode == 0, done.stderr
    rows = {ln.split()[0]: ln for ln in done.stdout.splitlines()[1:]}
    assert list(rows) == ["a", "b", "d"]
    assert "unreadable" in rows["b"]
    assert "damaged" in rows["b"]
