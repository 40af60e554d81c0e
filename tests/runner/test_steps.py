"""``taskkit step``: parts of a shell task done once across attempts, as real processes.

Each task runs a script kept outside the working directory (``box/script.sh``), so a test can
change a step in it without changing the task's command line, hence its fingerprint. Steps
count their runs in ``box`` too.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from runner_helpers import (
    SH_TASKKIT,
    TASKKIT,
    Task,
    clean_environment,
    invoke,
    one_error,
    opened_task,
    q,
    snapshot,
)
from store_counts import counting_stores

from taskkit.content.digest import hash_bytes
from taskkit.observer import NullObserver
from taskkit.runner.steps import StepContext, run_step
from taskkit.storage.stores import Stores
from taskkit.transfer.upload_plan import MANIFEST_NAME

EX_CONFIG = 200


@pytest.fixture
def task(tmp_path: Path) -> Iterator[Task]:
    with opened_task(tmp_path) as opened:
        yield opened


def script(task: Task, body: str) -> list[str]:
    """``sh -e box/script.sh``, the script holding ``body``: the command of the task."""
    path = task.box / "script.sh"
    path.write_text("set -e\n" + body)
    return ["sh", str(path)]


def step(name: str, command: str, *outputs: str) -> str:
    """A shell line running ``taskkit step NAME [-o ...] -- sh -c COMMAND``."""
    given = "".join(f" -o {q(o)}" for o in outputs)
    return f"{SH_TASKKIT} step {name}{given} -- sh -c {q(command)}\n"


def fail_before(attempt: int) -> str:
    """A shell line failing (exit 1) every attempt before ``attempt``."""
    return f'[ "$TASKKIT_ATTEMPT" -ge {attempt} ] || exit 1\n'


def step_record(task: Task, name: str) -> dict[str, Any]:
    found: dict[str, Any] = json.loads((task.journal / "steps" / f"{name}.json").read_text())
    return found


def test_a_finished_step_is_skipped_on_the_retry(task: Task) -> None:
    """A step that finished in attempt 1 is not run in attempt 2, which says so and leaves its
    files in place untouched; the step after the failure point runs once, in attempt 2."""
    command = script(
        task,
        step(
            "one",
            task.counted("one") + "\nmkdir -p res\necho one > res/one.txt",
            f"res/*=file://{task.root}/published/",
        )
        + fail_before(2)
        + step("two", task.counted("two")),
    )
    first = task.run(command, "--max-retries", "2")
    assert first.returncode == 1, first.stderr
    assert "step one: done (1 files published)" in first.stderr
    assert step_record(task, "one")["attempt"] == 1
    assert not (task.journal / "steps" / "two.json").exists()

    before = snapshot(task.workdir / "res")
    second = task.run(command, "--max-retries", "2")
    assert second.returncode == 0, second.stderr
    assert "step one: done in attempt 1, skipped\n" in second.stderr  # nothing to restore
    assert snapshot(task.workdir / "res") == before
    assert (task.count("one"), task.count("two")) == (1, 1)
    assert step_record(task, "two")["attempt"] == 2


def test_a_skipped_step_restores_its_outputs_where_the_workdir_lost_them(
    task: Task, tmp_path: Path
) -> None:
    """On an emptied working directory, or one holding other bytes at a step's output, a
    skipped step puts the published bytes back (same digest); the step never runs again."""
    dest = tmp_path / "published"
    seen = task.box / "seen.txt"
    command = script(
        task,
        step(
            "make",
            task.counted("make")
            + "\nmkdir -p res/sub\nhead -c 100000 /dev/urandom > res/sub/r.bin",
            f"res/**=file://{dest}/",
        )
        + f"cksum < res/sub/r.bin >> {q(seen)}\n"
        + fail_before(3),
    )
    options = ("--max-retries", "3")
    made_at = task.workdir / "res" / "sub" / "r.bin"
    assert task.run(command, *options).returncode == 1
    made = made_at.read_bytes()
    record = step_record(task, "make")
    assert record["files"] == [
        {
            "path": "res/sub/r.bin",
            "url": f"file://{dest}/sub/r.bin",
            "digest": str(hash_bytes(made)),
            "size": len(made),
        }
    ]
    assert json.loads((dest / MANIFEST_NAME).read_text())["files"][0]["name"] == "sub/r.bin"

    for path in sorted(task.workdir.rglob("*"), reverse=True):
        if path.is_dir():
            path.rmdir()
        else:
            path.unlink()
    fresh = task.run(command, *options)
    assert fresh.returncode == 1, fresh.stderr
    assert "step make: done in attempt 1, skipped; 1 of its files restored" in fresh.stderr
    assert made_at.read_bytes() == made

    made_at.write_bytes(bytes(len(made)))
    other = task.run(command, *options)
    assert other.returncode == 0, other.stderr
    assert "step make: done in attempt 1, skipped; 1 of its files restored" in other.stderr
    assert made_at.read_bytes() == made
    assert task.count("make") == 1
    sums = seen.read_text().splitlines()
    assert len(sums) == 3
    assert len(set(sums)) == 1  # the command after the step saw the same bytes each time


def test_a_step_whose_command_changes_runs_again(task: Task) -> None:
    """Editing one step's command (the task's command line unchanged) runs that step again on
    the retry; the unchanged step beside it stays skipped."""
    same = step("same", task.counted("same"))
    command = script(task, same + step("edited", task.counted("edited")) + fail_before(2))
    assert task.run(command, "--max-retries", "2").returncode == 1

    script(task, same + step("edited", task.counted("edited") + "; true") + fail_before(2))
    again = task.run(command, "--max-retries", "2")
    assert again.returncode == 0, again.stderr
    assert "step same: done in attempt 1, skipped" in again.stderr
    assert "step edited: done (0 files published)" in again.stderr
    assert (task.count("same"), task.count("edited")) == (1, 2)
    assert step_record(task, "edited")["attempt"] == 2


def test_a_failing_step_passes_its_code_through_and_is_not_recorded(task: Task) -> None:
    """A step whose command exits 7: the step exits 7, so does the task; nothing is recorded
    and the next attempt runs the step again."""
    command = script(task, step("flaky", task.counted("flaky") + "\nexit 7") + "echo unreachable\n")
    first = task.run(command, "--max-retries", "2")
    assert first.returncode == 7
    assert "step flaky: exited 7; not recorded" in first.stderr
    assert "unreachable" not in first.stdout
    assert not (task.journal / "steps").exists()
    assert task.attempt(1)["exit_code"] == 7

    second = task.run(command, "--max-retries", "2")
    assert second.returncode == 7
    assert task.count("flaky") == 2
    assert not (task.journal / "steps").exists()


def test_a_step_outside_taskkit_run_is_200(tmp_path: Path) -> None:
    """``taskkit step`` in a shell that no ``taskkit run`` started: exit 200, one line saying
    it belongs inside one, the command not run."""
    marker = tmp_path / "ran"
    proc = Task(tmp_path).taskkit([*TASKKIT, "step", "alone", "--", "touch", str(marker)])
    assert proc.returncode == EX_CONFIG
    one_error(proc.stderr, "taskkit run", "TASKKIT_STATE")
    assert not marker.exists()


@pytest.mark.parametrize("name", ["../x", "", "a" * 101, "x/y", ".hidden"])
def test_a_bad_step_name_is_200(tmp_path: Path, name: str) -> None:
    """A step name that is empty, too long or not a plain file name: exit 200, one line."""
    env = {
        **clean_environment(tmp_path),
        "TASKKIT_STATE": f"file://{tmp_path}/state",
        "TASKKIT_JOB_ID": "j",
        "TASKKIT_TASK_ID": "t",
    }
    marker = tmp_path / "ran"
    code, _, err = invoke(["step", name, "--", "touch", str(marker)], env=env)
    assert code == EX_CONFIG
    one_error(err, "step name", repr(name))
    assert not marker.exists()
    assert not (tmp_path / "state").exists()


def test_a_step_without_a_command_is_200(tmp_path: Path) -> None:
    """``taskkit step NAME`` with nothing to run: exit 200, one line."""
    env = {**clean_environment(tmp_path), "TASKKIT_STATE": f"file://{tmp_path}/s"}
    code, _, err = invoke(["step", "fine"], env={**env, "TASKKIT_JOB_ID": "j"})
    assert code == EX_CONFIG
    one_error(err, "no command")


def test_given_stores_are_used_and_left_open(
    tmp_path: Path, stores: Stores, monkeypatch: pytest.MonkeyPatch
) -> None:
    """run_step(stores=...) reads and records the journal, publishes and restores through the
    given Stores and leaves it open; without it, the step opens one and closes it once."""
    monkeypatch.setenv("TASKKIT_CACHE_DIR", str(tmp_path / "cache"))
    work = tmp_path / "work"
    work.mkdir()
    results = tmp_path / "results"
    context = StepContext(f"file://{tmp_path}/state", "job", "task", "fp", 1, str(work))
    given: dict[str, Any] = {
        "outputs": [f"o.txt=file://{results}/"],
        "context": context,
        "observer": NullObserver(),
    }
    command = ["sh", "-c", "echo x > o.txt"]
    counts = counting_stores(monkeypatch)
    assert run_step("s1", command, **given, stores=stores) == 0
    assert (results / "o.txt").read_text() == "x\n"
    (work / "o.txt").unlink()
    assert run_step("s1", command, **given, stores=stores) == 0  # done: restored, not run
    assert (work / "o.txt").read_text() == "x\n"
    assert counts.opened == []
    assert counts.users() == {id(stores)}
    assert counts.closes[id(stores)] == 0
    counts.reset()
    (work / "o.txt").unlink()
    assert run_step("s1", command, **given) == 0
    assert (work / "o.txt").read_text() == "x\n"
    assert len(counts.opened) == 1
    assert counts.closed_once_each()
    assert counts.users() == {id(counts.opened[0])}
