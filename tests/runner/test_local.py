"""Local mode's node: its layout, the environment of its tasks, ids, and the teed output."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from taskkit.envnames import DEFAULT_LOCAL_DIR, LOCAL_VARIABLE
from taskkit.exceptions import ConfigError, IOFailure, TaskkitError
from taskkit.runner.command import Finished, run_logged
from taskkit.runner.local import (
    DEFAULT_JOB_ID,
    LocalNode,
    LocalRun,
    LocalTask,
    task_id_of,
)
from taskkit.runner.logs import LogSink
from taskkit.runner.plan import plan_attempt
from taskkit.storage.stores import Stores

HOSTILE_IDS = ["..", ".", "../escape", "a/b", "/abs", "", "x" * 65, "a b", "é", "a\nb", "a\\b"]


def tree(root: Path) -> list[str]:
    """Every path under ``root``, relative, sorted (empty when ``root`` is absent)."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")) if root.exists() else []


def test_find_prefers_the_option_then_the_variable_and_is_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--local wins over TASKKIT_LOCAL; an empty value is "not asked"; a relative DIR is
    made absolute against the current directory."""
    monkeypatch.chdir(tmp_path)
    env = {LOCAL_VARIABLE: "from-env"}
    assert LocalNode.find("given", env) == LocalNode(tmp_path / "given")
    assert LocalNode.find(None, env) == LocalNode(tmp_path / "from-env")
    assert LocalNode.find("", env) == LocalNode(tmp_path / "from-env")
    assert LocalNode.find(None, {LOCAL_VARIABLE: ""}) is None
    assert LocalNode.find(None, {}) is None
    assert LocalNode.find(DEFAULT_LOCAL_DIR, {}) == LocalNode(tmp_path / ".taskkit")
    assert LocalNode.find(str(tmp_path / "abs"), {}) == LocalNode(tmp_path / "abs")
    with pytest.raises(ConfigError):
        LocalNode.find("  ", {})


def test_the_layout_is_a_batch_nodes(tmp_path: Path) -> None:
    """Task directories sit where Batch puts them, below the node root, with wd and the
    output files inside; the state is a file:// URL of the node's state folder."""
    node = LocalNode(tmp_path / "n")
    task = node.plan("job-7", "task_3")
    assert task.task_dir == tmp_path / "n/node/workitems/job-7/job-1/task_3"
    assert task.workdir == task.task_dir / "wd"
    assert task.stdout == task.task_dir / "stdout.txt"
    assert task.stderr == task.task_dir / "stderr.txt"
    assert node.state_url == f"file://{tmp_path}/n/state"
    assert tree(tmp_path) == []  # plan computes, makes nothing


def test_task_makes_the_node_and_is_idempotent(tmp_path: Path) -> None:
    """task() makes the node's folders and the task's, and asking again keeps what is there."""
    node = LocalNode(tmp_path / "n")
    task = node.task("j", "t")
    made = tree(node.root)
    for part in ("node/shared", "node/startup/wd", "state", "node/workitems/j/job-1/t/wd"):
        assert part in made
    assert task.stdout.read_bytes() == b""
    assert task.stderr.read_bytes() == b""
    task.stdout.write_bytes(b"kept\n")
    (task.workdir / "file").write_text("mine")
    assert node.task("j", "t") == task
    assert tree(node.root) == sorted([*made, "node/workitems/j/job-1/t/wd/file"])
    assert task.stdout.read_bytes() == b"kept\n"


def test_a_node_made_afresh_is_ignored_by_git_and_a_users_folder_is_not_touched(
    tmp_path: Path,
) -> None:
    """A node folder taskkit creates gets a .gitignore of everything; an existing folder
    given as the node (it may hold the user's files) gets none."""
    fresh = LocalNode(tmp_path / "fresh")
    fresh.task("j", "t")
    assert (fresh.root / ".gitignore").read_text().splitlines()[-1] == "*"
    mine = tmp_path / "mine"
    mine.mkdir()
    LocalNode(mine).task("j", "t")
    assert not (mine / ".gitignore").exists()


@pytest.mark.parametrize("bad", HOSTILE_IDS)
@pytest.mark.parametrize("which", ["job", "task"])
def test_a_hostile_id_is_refused_before_any_path_is_made(
    tmp_path: Path, bad: str, which: str
) -> None:
    """A job or task id that is not a Batch id is a ConfigError (200 in run), and nothing is
    made, inside the node or outside it."""
    node = LocalNode(tmp_path / "a" / "n")
    ids = {"job": "j", "task": "t", which: bad}
    with pytest.raises(ConfigError, match=f"{which} id") as info:
        node.task(ids["job"], ids["task"])
    assert info.value.run_code == 200
    assert tree(tmp_path) == []


def test_environ_sets_the_batch_variables_and_drops_stale_ones(tmp_path: Path) -> None:
    """Every AZ_BATCH_* variable is the local node's (a stale one from the caller is gone);
    the rest of the base passes through; the paths are the task's."""
    task = LocalNode(tmp_path).plan("j", "t")
    base = {"PATH": "/bin", "AZ_BATCH_ACCOUNT_URL": "https://x", "AZ_BATCH_JOB_ID": "other"}
    env = task.environ(base)
    assert env["PATH"] == "/bin"
    assert "AZ_BATCH_ACCOUNT_URL" not in env
    assert env["AZ_BATCH_JOB_ID"] == "j"
    assert env["AZ_BATCH_TASK_ID"] == "t"
    assert env["AZ_BATCH_TASK_DIR"] == str(task.task_dir)
    assert env["AZ_BATCH_TASK_WORKING_DIR"] == str(task.workdir)
    assert env["AZ_BATCH_NODE_ROOT_DIR"] == str(tmp_path / "node")
    assert env["AZ_BATCH_NODE_SHARED_DIR"] == str(tmp_path / "node/shared")
    assert env["AZ_BATCH_NODE_STARTUP_DIR"] == str(tmp_path / "node/startup")
    for name in ("AZ_BATCH_NODE_ID", "AZ_BATCH_POOL_ID", "AZ_BATCH_ACCOUNT_NAME"):
        assert env[name]
    assert env["AZ_BATCH_NODE_IS_DEDICATED"] == "true"
    assert {k for k in env if k.startswith("AZ_BATCH_")} == set(task.variables())
    for value in task.variables().values():
        if value.startswith("/"):
            assert Path(value).is_relative_to(tmp_path)
    assert tree(tmp_path) == []


def test_environ_defaults_the_state_to_the_nodes_only_when_none_is_named(tmp_path: Path) -> None:
    """TASKKIT_STATE becomes the node's state when missing or empty, never over a given one."""
    task = LocalNode(tmp_path).plan("j", "t")
    assert task.environ({})["TASKKIT_STATE"] == task.node.state_url
    assert task.environ({"TASKKIT_STATE": ""})["TASKKIT_STATE"] == task.node.state_url
    assert task.environ({"TASKKIT_STATE": "az://s/p"})["TASKKIT_STATE"] == "az://s/p"


def test_the_default_task_id_is_stable_short_and_tells_commands_apart() -> None:
    """The digest is the same in another process, is a Batch id, and differs when the
    command line differs, also only in how it is split into arguments."""
    command = ["python", "train.py", "--lr", "0.1"]
    code = f"from taskkit.runner.local import task_id_of; print(task_id_of({command!r}))"
    other = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert task_id_of(command) == other
    assert re.fullmatch(r"t-[0-9a-f]{12}", other)
    ids = {task_id_of(c) for c in (["a b"], ["a", "b"], ["a", "b", ""], ["b", "a"], [])}
    assert len(ids) == 5


@pytest.mark.parametrize("in_the_way", ["root", "parent", "state", "stdout"])
def test_a_file_in_the_way_is_local_io_found_before_anything_is_made(
    tmp_path: Path, in_the_way: str
) -> None:
    """A file where the node needs a folder (or a folder where stdout.txt goes) is local I/O
    (203) naming the node, found by check() without making anything and by task() alike."""
    root = tmp_path / "n"
    node = LocalNode(root if in_the_way != "parent" else tmp_path / "f" / "n")
    task = node.plan("j", "t")
    blocker = {
        "root": root,
        "parent": tmp_path / "f",
        "state": root / "state",
        "stdout": task.stdout,
    }[in_the_way]
    blocker.parent.mkdir(parents=True, exist_ok=True)
    if in_the_way == "stdout":
        blocker.mkdir()
    else:
        blocker.write_text("in the way")
    before = tree(tmp_path)
    for attempt in (task.check, lambda: node.task("j", "t")):
        with pytest.raises(IOFailure) as info:
            attempt()
        assert info.value.run_code == 203
        assert str(node.root) in str(info.value)
        assert str(blocker) in str(info.value)
        assert tree(tmp_path) == before


def _resolved(tmp_path: Path, options: dict[str, Any], env: dict[str, str]) -> LocalRun:
    return LocalRun.resolve(LocalNode(tmp_path / "n"), options, ["echo", "hi"], environ=env)


def test_resolve_uses_the_given_ids_never_the_callers_batch_ones(tmp_path: Path) -> None:
    """Ids come from the options or TASKKIT_*; a Batch id of the calling environment is
    ignored for the local default (job 'local', task of the command)."""
    stale = {"AZ_BATCH_JOB_ID": "real-job", "AZ_BATCH_TASK_ID": "real-task"}
    run = _resolved(tmp_path, {}, stale)
    assert (run.spec.job_id, run.spec.task_id) == (DEFAULT_JOB_ID, task_id_of(["echo", "hi"]))
    assert run.environ["AZ_BATCH_JOB_ID"] == DEFAULT_JOB_ID
    run = _resolved(tmp_path, {"job_id": "j2"}, {**stale, "TASKKIT_TASK_ID": "t2"})
    assert (run.spec.job_id, run.spec.task_id) == ("j2", "t2")
    assert (run.task.job_id, run.task.task_id) == ("j2", "t2")
    assert run.environ["AZ_BATCH_TASK_ID"] == "t2"
    with pytest.raises(ConfigError):
        _resolved(tmp_path, {"task_id": "../up"}, {})
    assert tree(tmp_path) == []


def test_resolve_defaults_state_and_workdir_to_the_nodes_and_keeps_given_ones(
    tmp_path: Path, stores: Stores
) -> None:
    """The state is the node's unless named (option or TASKKIT_STATE); the attempt's working
    directory is the task's wd unless --workdir; a plan of it makes nothing."""
    run = _resolved(tmp_path, {}, {})
    assert run.spec.state == run.task.node.state_url
    plan = plan_attempt(run.spec, stores, environ=run.environ, dry_run=True)
    assert plan.workdir == str(run.task.workdir)
    assert tree(tmp_path) == []
    elsewhere = tmp_path / "elsewhere"
    run = _resolved(tmp_path, {"workdir": str(elsewhere)}, {"TASKKIT_STATE": "memory://s"})
    assert run.spec.state == "memory://s"
    assert plan_attempt(run.spec, stores, environ=run.environ, dry_run=True).workdir == str(
        elsewhere
    )
    assert _resolved(tmp_path, {"state": "memory://o"}, {}).spec.state == "memory://o"


def test_a_spec_files_state_wins_over_the_nodes(tmp_path: Path) -> None:
    """The node's state is a default below the spec file's, as every default is; the
    environment the attempt reads names the state the run uses."""
    spec_file = tmp_path / "task.toml"
    spec_file.write_text('state = "memory://from-spec"\nmax-retries = 2\n')
    node = LocalNode(tmp_path / "n")
    run = LocalRun.resolve(node, {}, ["true"], spec_file=spec_file, environ={})
    assert run.spec.state == "memory://from-spec"
    assert run.spec.max_retries == 2
    assert run.environ["TASKKIT_STATE"] == "memory://from-spec"
    env = {"TASKKIT_STATE": "memory://from-env"}
    run = LocalRun.resolve(node, {}, ["true"], spec_file=spec_file, environ=env)
    assert run.spec.state == "memory://from-env"
    run = LocalRun.resolve(node, {}, ["true"], environ={})
    assert run.spec.state == node.state_url
    assert run.environ["TASKKIT_STATE"] == node.state_url


class _Recorded:
    """A launcher that writes through the sink it is given, as run_logged does."""

    def __init__(self, out: bytes, err: bytes) -> None:
        self.out, self.err = out, err
        self.sinks: list[Any] = []

    def __call__(self, argv: list[str], *, sink: Any = None, **rest: Any) -> Finished:
        self.sinks.append(sink)
        sink.file("stdout").write(self.out)
        sink.file("stderr").write(self.err)
        sink.note("a note")
        return Finished(0, None, False, 0.0)


def test_the_launcher_appends_each_attempts_output_and_feeds_the_attempts_logs(
    tmp_path: Path,
) -> None:
    """The command's stdout and stderr reach the task's files, attempt after attempt
    (appended, as written), and the attempt's own log sink still gets every byte."""
    task = LocalNode(tmp_path / "n").task("j", "t")
    for number in (1, 2):
        logs = tmp_path / f"logs-{number}"
        launch = _Recorded(f"out {number}\n".encode(), f"err {number} sig=x\n".encode())
        with LogSink(logs, None) as sink:
            task.launcher(launch)(["cmd"], sink=sink, deadline=None)
        assert (logs / "stdout.txt").read_bytes() == f"out {number}\n".encode()
        assert b"a note" in (logs / "taskkit.txt").read_bytes()
    assert task.stdout.read_bytes() == b"out 1\nout 2\n"
    # Raw, as the console shows it; the stored logs are the redacted ones.
    assert task.stderr.read_bytes() == b"err 1 sig=x\nerr 2 sig=x\n"


def test_the_launcher_tees_a_real_command_without_a_sink(tmp_path: Path) -> None:
    """run_logged through the launcher, given no log sink, still fills stdout.txt and
    stderr.txt; a command that cannot start leaves its one line in stderr.txt."""
    task = LocalNode(tmp_path / "n").task("j", "t")
    finished = task.launcher()(
        ["sh", "-c", "echo out; echo err >&2; exit 3"], sink=None, cwd=str(task.workdir)
    )
    assert finished.returncode == 3
    assert task.stdout.read_bytes() == b"out\n"
    assert task.stderr.read_bytes() == b"err\n"
    missing = task.launcher(run_logged)([str(tmp_path / "no-such-command")], sink=None)
    assert missing.returncode == 127
    assert b"cannot run" in task.stderr.read_bytes()


def test_an_unwritable_output_file_never_fails_the_command(tmp_path: Path) -> None:
    """When stdout.txt cannot be written the command still runs and its attempt's logs
    still get the output: the copy is dropped, not an error."""
    task = LocalNode(tmp_path / "n").task("j", "t")
    task.stdout.unlink()
    task.stdout.mkdir()  # cannot be opened for appending
    launch = _Recorded(b"out\n", b"err\n")
    with LogSink(tmp_path / "logs", None) as sink:
        assert task.launcher(launch)(["cmd"], sink=sink).returncode == 0
    assert (tmp_path / "logs" / "stdout.txt").read_bytes() == b"out\n"
    assert task.stderr.read_bytes() == b"err\n"


def test_local_task_is_a_frozen_value(tmp_path: Path) -> None:
    """A LocalTask compares by value and cannot be changed after it is made."""
    task = LocalNode(tmp_path).plan("j", "t")
    assert task == LocalNode(tmp_path).plan("j", "t")
    with pytest.raises(AttributeError):
        task.job_id = "other"  # type: ignore[misc]
    assert isinstance(task, LocalTask)


def test_a_relative_root_is_refused() -> None:
    """LocalNode holds an absolute root: a relative one is a configuration error."""
    with pytest.raises(TaskkitError):
        LocalNode(Path("relative"))
    assert os.path.isabs(LocalNode.at("relative").root)
