"""``taskkit run --dry-run``: the plan of the next attempt, printed, and nothing changed.

Each test snapshots (path, size, mtime_ns, bytes) the state, the working directory and a
``file://`` input and output before and after a real ``python -m taskkit run --dry-run``
process, and checks the command never ran; one test watches the stat-cache folder too.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from runner_helpers import Task, opened_task, sh, snapshot

ROW = re.compile(r"^  (.+?) +(success|permanent|retryable) +(exits .+)$")
#: The exit-code table of ``--permanent-codes 3,5-9``, rule by rule.
TABLE = [
    ("0", "success", "exits 0"),
    ("3,5-9", "permanent", "exits the same code"),
    ("126 (cannot execute)", "permanent", "exits the same code"),
    ("127 (not found)", "permanent", "exits the same code"),
    ("200-202 (taskkit)", "permanent", "exits the same code"),
    ("203-206 (taskkit)", "retryable", "exits the same code"),
    ("129-192 (killed by a signal)", "retryable", "exits the same code"),
    ("other non-zero", "retryable", "exits the same code"),
    ("taskkit failed: options, spec, input, data", "permanent", "exits 200-202"),
    ("taskkit failed: local I/O, storage, internal", "retryable", "exits 203,204,206"),
    ("deadline reached", "retryable", "exits 205"),
]


class World:
    """A task with an input folder, an output destination and a command that counts its runs."""

    def __init__(self, task: Task, root: Path) -> None:
        self.task = task
        self.inputs = root / "inputs"
        self.dest = root / "dest"
        (self.inputs / "sub").mkdir(parents=True)
        (self.inputs / "a.txt").write_text("alpha\n")
        (self.inputs / "sub" / "b.txt").write_text("beta\n")
        self.dest.mkdir()
        (self.dest / "old.txt").write_text("an earlier publication's file\n")
        (task.workdir / "in").mkdir()
        (task.workdir / "in" / "a.txt").write_text("alpha\n")  # already staged
        (task.workdir / "notes.txt").write_text("the user's own file\n")
        self.command = sh(f"{task.counted('cmd')}\nmkdir -p out\necho result > out/r.txt\nexit 0")
        self.io = ("-i", f"file://{self.inputs}/=in/", "-o", f"out/*.txt=file://{self.dest}/")

    def watched(self) -> dict[str, tuple[int, int, str]]:
        task = self.task
        return snapshot(task.state_dir, task.workdir, self.inputs, self.dest)

    def run(self, *options: str) -> subprocess.CompletedProcess[str]:
        return self.task.run(self.command, *self.io, *options)

    def plan(self, *options: str) -> list[str]:
        """The lines of a dry run, checked to have changed nothing and run nothing."""
        before, runs = self.watched(), self.task.count("cmd")
        proc = self.run("--dry-run", *options)
        assert proc.returncode == 0, proc.stderr
        assert proc.stderr == ""
        assert self.watched() == before
        assert self.task.count("cmd") == runs
        return proc.stdout.splitlines()


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    with opened_task(tmp_path) as task:
        yield World(task, tmp_path)


def line(lines: list[str], head: str) -> str:
    found = [text for text in lines if text.startswith(head)]
    assert len(found) == 1, (head, lines)
    return found[0]


def table(lines: list[str]) -> list[tuple[str, ...]]:
    rows = lines[lines.index("exit codes") + 1 :]
    matched = [ROW.match(row) for row in rows]
    assert all(matched), rows
    return [m.groups() for m in matched if m is not None]


def test_the_plan_of_a_first_attempt(world: World) -> None:
    """Open goal "attempt 1 of 4", each input's staging decision, the outputs and the exit-code
    table; nothing written (no state, no stat-cache), the command not run; the work printed is
    the work a real run then records."""
    task = world.task
    lines = world.plan("--max-retries", "3", "--permanent-codes", "3,5-9")
    assert line(lines, "task ") == (
        f"task        job {task.job}, task {task.task}, journal {task.journal}/"
    )
    assert line(lines, "goal ") == "goal        open: attempt 1 of 4; no attempt has finished it"
    inputs = lines[lines.index("inputs") + 1 : lines.index("inputs") + 3]
    assert inputs == [  # a file:// source carries no digest: an unknown local file is fetched
        f"download {world.inputs}/a.txt -> in/a.txt  (6 B; the local file is not known)",
        f"download {world.inputs}/sub/b.txt -> in/sub/b.txt  (5 B; not present)",
    ]
    assert line(lines, "output ") == (
        f"output      out/*.txt -> file://{world.dest}/  (written on success, manifest last)"
    )
    assert table(lines) == TABLE
    assert not task.state_dir.exists()
    assert not (task.root / "cache").exists()
    assert not (task.workdir / "in" / "sub").exists()

    work = line(lines, "work ").split()[1]
    assert world.run("--max-retries", "3", "--permanent-codes", "3,5-9").returncode == 0
    assert task.attempt(1)["fingerprint"] == work


def test_the_plan_after_a_success_is_done(world: World) -> None:
    """After a success: "done", the command would not run, the outputs shown as published;
    and still nothing changes."""
    first = world.run("--max-retries", "3")
    assert first.returncode == 0, first.stderr
    lines = world.plan("--max-retries", "3")
    assert line(lines, "goal ") == (
        "goal        done (goal met by attempt 1): the command would not run"
    )
    outcome = world.task.outcome()
    assert outcome is not None
    assert line(lines, "work ") == f"work        {outcome['fingerprint']}"
    assert line(lines, "output ") == (
        f"output      out/*.txt -> file://{world.dest}/  "
        "(published now; written on success, manifest last)"
    )
    staged = lines[lines.index("inputs") + 1 : lines.index("inputs") + 3]
    assert all(text.startswith("skip ") for text in staged), staged


def test_the_plan_after_a_permanent_failure(world: World) -> None:
    """After a permanent failure: the plan says the next run exits with its code at once."""
    world.command = sh(f"{world.task.counted('cmd')}\nexit 3")
    assert world.run("--permanent-codes", "3").returncode == 3
    lines = world.plan("--permanent-codes", "3")
    assert line(lines, "goal ") == (
        "goal        permanent failure in attempt 1 (exit code 3 is a permanent code): "
        "would exit 3 at once"
    )


def test_the_plan_of_the_last_attempt_says_so(world: World) -> None:
    """After a retryable failure with --max-retries 1, the next attempt is "2 of 2 (the last)"."""
    world.command = sh(f"{world.task.counted('cmd')}\nexit 4")
    assert world.run("--max-retries", "1").returncode == 4
    lines = world.plan("--max-retries", "1")
    assert line(lines, "goal ").startswith("goal        open: attempt 2 of 2 (the last); ")


def test_a_plan_whose_input_is_missing_exits_201(world: World, tmp_path: Path) -> None:
    """An input that cannot be listed: the plan says so and exits 201 with its one error line
    on stderr, writing nothing."""
    task = world.task
    before = world.watched()
    proc = task.run(world.command, "--dry-run", "-i", f"file://{tmp_path}/nowhere/x.txt=x.txt")
    assert proc.returncode == 201, proc.stderr
    assert line(proc.stdout.splitlines(), "inputs ").startswith("inputs      cannot be listed: ")
    (error,) = proc.stderr.splitlines()
    assert error.startswith("taskkit: error: ")
    assert "nowhere/x.txt" in error
    assert world.watched() == before
    assert task.count("cmd") == 0


def test_a_plan_leaves_the_stat_cache_as_it_was(world: World) -> None:
    """A dry run after a real run (which made the stat-cache) neither changes the cache file
    nor creates or removes anything beside it."""
    assert world.run().returncode == 0
    cache = world.task.root / "cache"
    assert cache.is_dir()
    before = snapshot(cache)
    world.plan()
    assert snapshot(cache) == before
