"""taskkit/runner/plan.py: the plan of the next attempt is read without a write, says where the
task stands, and is the very plan a run then carries out, in the environment it was given.

The states are made by real ``python -m taskkit run`` processes (as ``tests/cli/test_dryrun.py``
makes them); the plans are made in this process, with a snapshot (path, size, mtime_ns, bytes)
of the state, the working directory, the input, the output and the stat-cache before and after.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from runner_helpers import Task, opened_task, sh, snapshot

from taskkit.observer import NullObserver
from taskkit.runner import run as run_module
from taskkit.runner.plan import AttemptPlan, Output, plan_attempt
from taskkit.runner.run import run
from taskkit.runner.spec import RunSpec, resolve
from taskkit.storage.retry import RetryBudget
from taskkit.storage.stores import Stores
from taskkit.transfer.upload_plan import MANIFEST_NAME


class World:
    """A task with an input folder, an output destination and a command that counts its runs
    and exits with ``box/code`` (0 when absent)."""

    def __init__(self, task: Task, root: Path) -> None:
        self.task = task
        self.inputs = root / "inputs"
        self.dest = root / "dest"
        self.inputs.mkdir()
        (self.inputs / "a.txt").write_text("alpha\n")
        self.dest.mkdir()
        code = task.box / "code"
        self.command = sh(
            f"{task.counted('cmd')}\nmkdir -p out\necho result > out/r.txt\n"
            f"exit $(cat {code} 2>/dev/null || echo 0)"
        )
        self.code = code

    def options(self, **more: Any) -> dict[str, Any]:
        return {
            "command": tuple(self.command),
            "inputs": (f"file://{self.inputs}/=in/",),
            "outputs": (f"out/*.txt=file://{self.dest}/",),
            "state": self.task.state,
            "job_id": self.task.job,
            "task_id": self.task.task,
            "workdir": str(self.task.workdir),
            **more,
        }

    def spec(self, **more: Any) -> RunSpec:
        return RunSpec(**self.options(**more))

    def run(self, *options: str) -> int:
        """A real ``taskkit run`` of this work; its exit code."""
        task = self.task
        proc = task.run(
            self.command,
            "-i",
            f"file://{self.inputs}/=in/",
            "-o",
            f"out/*.txt=file://{self.dest}/",
            *options,
        )
        return proc.returncode

    def watched(self) -> dict[str, tuple[int, int, str]]:
        task = self.task
        return snapshot(task.state_dir, task.workdir, self.inputs, self.dest, task.root / "cache")

    def plan(self, spec: RunSpec) -> AttemptPlan:
        """A dry run's plan, checked to have written nothing and run nothing."""
        before, runs = self.watched(), self.task.count("cmd")
        with Stores(RetryBudget(attempts=1)) as stores:
            plan = plan_attempt(spec, stores, environ=self.task.env, dry_run=True)
        assert self.watched() == before
        assert self.task.count("cmd") == runs
        return plan


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    with opened_task(tmp_path) as task:
        yield World(task, tmp_path)


def test_a_fresh_task_plans_its_first_attempt(world: World) -> None:
    """No journal: goal open, attempt 1 of 4 (not the last), the outputs with their DEST (not
    published), the staging plan downloading the input, the spec's policy; nothing written."""
    spec = world.spec(max_retries=3)
    plan = world.plan(spec)
    assert (plan.goal.state, plan.ordinal, plan.last) == ("open", 1, False)
    assert plan.label == "attempt 1 of 4"
    assert plan.attempts == ()
    assert plan.gone is None
    assert plan.unavailable is None
    assert plan.outputs == (Output("out/*.txt", f"file://{world.dest}/"),)
    assert plan.policy == spec.policy()
    assert plan.workdir == str(world.task.workdir)
    assert plan.preview is not None
    assert plan.preview.error is None
    assert plan.preview.published == (False,)
    assert plan.preview.staging is not None
    assert [e.action for s in plan.preview.staging for e in s.entries] == ["download"]
    assert not world.task.state_dir.exists()


def test_a_goal_met_plans_no_attempt(world: World) -> None:
    """After a success: goal met, no attempt (none of them read), its DEST published now."""
    assert world.run() == 0
    plan = world.plan(world.spec())
    assert plan.goal.state == "met"
    assert not plan.runs
    assert plan.attempts == ()
    assert plan.preview is not None
    assert plan.preview.published == (True,)
    assert plan.preview.kills == ()


def test_published_outputs_gone_plan_a_republish_or_a_run(world: World) -> None:
    """The manifest deleted: gone, republished from the working directory while it holds the
    files as published; once a file there changed, the command runs again."""
    assert world.run() == 0
    (world.dest / MANIFEST_NAME).unlink()
    plan = world.plan(world.spec())
    assert plan.goal.state == "gone"
    assert plan.runs
    assert plan.gone is not None
    assert plan.gone.republish
    assert plan.gone.attempt == 1
    (world.task.workdir / "out" / "r.txt").write_text("changed\n")
    plan = world.plan(world.spec())
    assert plan.gone is not None
    assert not plan.gone.republish
    assert "not the file published" in plan.gone.detail


def test_a_permanent_failure_plans_its_exit(world: World) -> None:
    """After a permanent failure: goal permanent with the recorded code, no attempt."""
    world.code.write_text("3\n")
    assert world.run("--permanent-codes", "3") == 3
    plan = world.plan(world.spec(permanent_codes="3"))
    assert plan.goal.state == "permanent"
    assert not plan.runs
    assert plan.goal.outcome is not None
    assert plan.goal.outcome.exit_code == 3


def test_the_last_attempt_is_planned_as_the_last(world: World) -> None:
    """After a retryable failure with one retry allowed: attempt 2 of 2, the last, with the
    first attempt among those read."""
    world.code.write_text("4\n")
    assert world.run("--max-retries", "1") == 4
    plan = world.plan(world.spec(max_retries=1))
    assert (plan.goal.state, plan.ordinal, plan.last) == ("open", 2, True)
    assert plan.label == "attempt 2 of 2 (the last)"
    assert [a.number for a in plan.attempts] == [1]


@pytest.mark.parametrize("state", ["fresh", "retried", "gone"])
def test_the_run_carries_out_the_plan_the_dry_run_shows(
    world: World, state: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The plan a dry run shows equals, but for its preview, the plan the run then executes
    (the same reads, the same decisions), whatever the task's state."""
    if state == "retried":
        world.code.write_text("4\n")
        assert world.run("--max-retries", "2") == 4
        world.code.unlink()
    elif state == "gone":
        assert world.run() == 0
        (world.dest / MANIFEST_NAME).unlink()
    spec = world.spec(max_retries=2)
    dry = world.plan(spec)
    executed: list[AttemptPlan] = []

    def planned(*args: Any, **kwargs: Any) -> AttemptPlan:
        found = plan_attempt(*args, **kwargs)
        executed.append(found)
        return found

    monkeypatch.setattr(run_module, "plan_attempt", planned)
    assert run(spec, environ=world.task.env, observer=NullObserver()) == 0
    assert executed == [dataclasses.replace(dry, preview=None)]
    assert executed[0].preview is None  # a real attempt plans its staging itself


def test_a_run_reads_the_environment_it_is_given(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The state, ids, node, working directory, stat-cache and node cache come from the
    mapping given to ``run`` and the spec, never from this process's environment (which names
    others), and the command gets that mapping's variables."""
    task = world.task
    elsewhere = tmp_path / "elsewhere"
    for name, value in {
        "TASKKIT_STATE": f"file://{elsewhere}/state",
        "AZ_BATCH_JOB_ID": "other-job",
        "AZ_BATCH_TASK_ID": "other-task",
        "AZ_BATCH_NODE_ID": "other-node",
        "AZ_BATCH_TASK_WORKING_DIR": str(elsewhere / "work"),
        "AZ_BATCH_NODE_SHARED_DIR": str(elsewhere / "shared"),
        "TASKKIT_CACHE_DIR": str(elsewhere / "cache"),
        "MARK": "from this process",
    }.items():
        monkeypatch.setenv(name, value)
    given = {
        **task.env,
        "TASKKIT_STATE": task.state,
        "AZ_BATCH_JOB_ID": task.job,
        "AZ_BATCH_TASK_ID": task.task,
        "AZ_BATCH_NODE_ID": "node-7",
        "AZ_BATCH_TASK_WORKING_DIR": str(task.workdir),
        "AZ_BATCH_NODE_SHARED_DIR": str(tmp_path / "shared"),
        "MARK": "from the mapping",
    }
    command = sh('echo "$MARK $AZ_BATCH_NODE_ID $TASKKIT_ATTEMPT" > seen.txt')
    options = {
        "command": tuple(command),
        "inputs": (f"file://{world.inputs}/=in/",),
        "outputs": (f"seen.txt=file://{world.dest}/",),
    }
    spec = resolve(options, environ=given)
    assert (spec.state, spec.job_id, spec.task_id) == (task.state, task.job, task.task)
    with Stores(RetryBudget(attempts=1)) as stores:
        plan = plan_attempt(spec, stores, environ=given, dry_run=True)
    assert plan.workdir == str(task.workdir)
    assert run(spec, environ=given, observer=NullObserver()) == 0
    assert (task.workdir / "seen.txt").read_text() == "from the mapping node-7 1\n"
    assert task.attempt(1)["node"] == "node-7"
    assert (task.workdir / "in" / "a.txt").read_text() == "alpha\n"
    assert (task.root / "cache").is_dir()  # the stat-cache of the mapping (task.env)
    assert (tmp_path / "shared" / "taskkit" / "cache").is_dir()  # its node cache
    assert not elsewhere.exists()
    assert os.environ["MARK"] == "from this process"
