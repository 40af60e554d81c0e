"""taskkit.exceptions LinkOut: a path led out of the working directory by a link that is there
on one node is that node's state, not a verdict on the work: ``stage`` refuses it (64) and
``taskkit run`` ends the attempt as local I/O (203, retryable), never recording it permanent."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from runner_helpers import Task, opened_task

from taskkit.exceptions import EX_RUN_IOERR, LinkOut, UsageError
from taskkit.runner.policy import error_verdict


@pytest.fixture
def task(tmp_path: Path) -> Iterator[Task]:
    with opened_task(tmp_path) as made:
        yield made


def test_a_link_out_is_a_usage_error_for_stage_and_local_io_for_run() -> None:
    """LinkOut is a UsageError (64) that ``run`` maps to 203, retryable."""
    error = LinkOut("x leads out")
    assert isinstance(error, UsageError)
    assert error.exit_code == 64
    assert error.run_code == EX_RUN_IOERR
    assert error_verdict(error).value == "retryable"


def test_an_input_dest_through_a_link_out_is_retryable_in_run(task: Task, tmp_path: Path) -> None:
    """``-i SRC=lnk/`` where lnk leads outside on this node: the attempt ends 203 with its end
    recorded and nothing permanent; with the link gone, the same work stages and runs; ``stage``
    says 64 for the same DEST."""
    source = tmp_path / "a.txt"
    source.write_text("a\n")
    outside = tmp_path / "outside"
    outside.mkdir()
    (task.workdir / "lnk").symlink_to(outside)
    given = ("-i", f"file://{source}=lnk/", "--max-retries", "2")
    first = task.run(["true"], *given)
    assert first.returncode == 203, first.stderr
    record = task.attempt(1)
    assert (record["exit_code"], record["verdict"]) == (203, "retryable")
    assert list(outside.iterdir()) == []
    stage = [sys.executable, "-m", "taskkit", "stage", "--workdir", str(task.workdir)]
    staged = task.taskkit([*stage, "-i", f"file://{source}=lnk/"])
    assert staged.returncode == 64, staged.stderr
    (task.workdir / "lnk").unlink()
    again = task.run(["true"], *given)
    assert again.returncode == 0, again.stderr
    assert (task.workdir / "lnk" / "a.txt").read_text() == "a\n"
