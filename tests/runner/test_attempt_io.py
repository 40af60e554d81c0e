"""An attempt whose own local directories cannot be made: local I/O, 203, and an ended record.

The task directory, the attempt's directory under it, its log files, the working directory and
the checkpoint directory are the attempt's own: whatever keeps one from being made (here a file
where a directory should be, since chmod does not stop root) is local I/O on this node, a
retryable 203 with one line saying which path and why, and an attempt record with an end, a
verdict and a reason, never an internal error (206) or an attempt left as interrupted.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from runner_helpers import Task, opened_task

EX_RUN_IOERR = 203


@pytest.fixture
def task(tmp_path: Path) -> Iterator[Task]:
    with opened_task(tmp_path) as opened:
        yield opened


def a_file(path: Path) -> Path:
    """A file at ``path`` (its folders made), where the attempt wants a directory."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("not a directory\n")
    return path


def assert_ended_as_local_io(task: Task, stderr: str, *fragments: str) -> None:
    """Attempt 1 ended with 203, retryable, a reason naming ``fragments``; one line of stderr
    says so, and nothing calls it an internal error."""
    record = task.attempt(1)
    assert record["ended"] is not None
    assert (record["exit_code"], record["verdict"]) == (EX_RUN_IOERR, "retryable")
    for fragment in fragments:
        assert fragment in record["reason"], (fragment, record["reason"])
    told = [line for line in stderr.splitlines() if all(f in line for f in fragments)]
    assert len(told) == 1, stderr
    assert "internal error" not in stderr
    assert "Traceback" not in stderr
    (shown,) = task.status()["attempts"]
    assert shown["state"] == "ended"


@pytest.mark.parametrize(
    ("where", "fragments"),
    [
        ("task dir is a file", ("cannot make the attempt's directory", "not a directory")),
        ("taskkit dir is a file", ("cannot make the attempt's directory", "not a directory")),
        ("attempt dir is a file", ("cannot make the attempt's directory", "file exists")),
        ("logs dir is a file", ("cannot create the log files in", "file exists")),
        ("a log is a directory", ("cannot create the log files in", "is a directory")),
        ("checkpoint dir is a file", ("cannot make the checkpoint directory", "file exists")),
    ],
)
def test_an_unusable_task_directory_is_local_io(
    task: Task, tmp_path: Path, where: str, fragments: tuple[str, ...]
) -> None:
    """$AZ_BATCH_TASK_DIR, or a folder taskkit makes under it for the attempt, its logs or its
    default checkpoint directory, blocked by a file (or a log file by a folder): 203, the
    record ended, the command not run."""
    task_dir = tmp_path / "batch-task"
    attempt = task_dir / "taskkit" / "attempt-00001"
    if where == "task dir is a file":
        a_file(task_dir)
    elif where == "taskkit dir is a file":
        a_file(task_dir / "taskkit")
    elif where == "attempt dir is a file":
        a_file(attempt)
    elif where == "logs dir is a file":
        a_file(attempt / "logs")
    elif where == "checkpoint dir is a file":
        a_file(attempt / "checkpoint")
    else:
        (attempt / "logs" / "stdout.txt").mkdir(parents=True)
    proc = task.run(["sh", "-c", task.counted("cmd")], env={"AZ_BATCH_TASK_DIR": str(task_dir)})
    assert proc.returncode == EX_RUN_IOERR, proc.stderr
    assert task.count("cmd") == 0
    assert_ended_as_local_io(task, proc.stderr, *fragments)


@pytest.mark.parametrize("blocked", ["itself", "a parent"])
def test_an_unusable_working_directory_is_local_io(
    task: Task, tmp_path: Path, blocked: str
) -> None:
    """A working directory that is a file, or under one: 203 with an ended record."""
    workdir = a_file(tmp_path / "blocked")
    if blocked == "a parent":
        workdir = workdir / "work"
    proc = task.run(["sh", "-c", task.counted("cmd")], workdir=workdir)
    assert proc.returncode == EX_RUN_IOERR, proc.stderr
    assert task.count("cmd") == 0
    reason = "file exists" if blocked == "itself" else "not a directory"
    assert_ended_as_local_io(task, proc.stderr, "cannot make the working directory", reason)


def test_an_unusable_checkpoint_directory_is_local_io(task: Task) -> None:
    """--checkpoint-dir where the working directory holds a file of that name: 203, ended."""
    a_file(task.workdir / "ckpt")
    proc = task.run(["sh", "-c", task.counted("cmd")], "--checkpoint-dir", "ckpt")
    assert proc.returncode == EX_RUN_IOERR, proc.stderr
    assert task.count("cmd") == 0
    assert_ended_as_local_io(task, proc.stderr, "cannot make the checkpoint directory")


def test_a_retry_after_the_directory_is_fixed_runs(task: Task, tmp_path: Path) -> None:
    """The 203 is retryable in fact: with the file gone, the next attempt runs and succeeds."""
    task_dir = a_file(tmp_path / "batch-task")
    env = {"AZ_BATCH_TASK_DIR": str(task_dir)}
    options = ("--max-retries", "2")
    first = task.run(["sh", "-c", task.counted("cmd")], *options, env=env)
    assert first.returncode == EX_RUN_IOERR, first.stderr
    task_dir.unlink()
    second = task.run(["sh", "-c", task.counted("cmd")], *options, env=env)
    assert second.returncode == 0, second.stderr
    assert task.count("cmd") == 1
    assert [task.attempt(n)["verdict"] for n in (1, 2)] == ["retryable", "success"]
