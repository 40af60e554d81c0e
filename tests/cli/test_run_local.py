"""``taskkit run --local [DIR]`` and ``TASKKIT_LOCAL``, each run a real ``python -m taskkit``.

Every process runs in a clean environment (no Batch, taskkit or storage variables of the
machine running the tests) with the test's tmp_path as its current directory, so the default
``.taskkit`` lands there; commands count their runs in a ``box`` outside the node.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest
from runner_helpers import (
    TASKKIT,
    TIMEOUT,
    clean_environment,
    invoke,
    kill_9_once,
    no_traceback,
    one_error,
    q,
)
from runner_helpers import snapshot as _snapshot

from taskkit.runner.local import task_id_of


def taskkit(
    cwd: Path,
    *args: str,
    env: Mapping[str, str | None] | None = None,
    prefix: Sequence[str] = (),
) -> subprocess.CompletedProcess[str]:
    """``taskkit ARGS`` to its end in ``cwd``, in a clean environment with ``env`` added (a
    None value removes the variable)."""
    merged = {**clean_environment(cwd / "box"), **(env or {})}
    proc = subprocess.run(
        [*prefix, *TASKKIT, *args],
        capture_output=True,
        text=True,
        env={k: v for k, v in merged.items() if v is not None},
        cwd=cwd,
        timeout=TIMEOUT,
        check=False,
    )
    return no_traceback(proc)


def counted(box: Path, *lines: str) -> list[str]:
    """A command that counts its runs in ``box/runs`` and then runs the shell ``lines``."""
    box.mkdir(exist_ok=True)
    return ["sh", "-ec", "\n".join([f"echo run >> {q(box / 'runs')}", *lines])]


def runs(box: Path) -> int:
    path = box / "runs"
    return len(path.read_text().splitlines()) if path.exists() else 0


def task_dir(root: Path, command: Sequence[str], job: str = "local") -> Path:
    return root / "node" / "workitems" / job / "job-1" / task_id_of(command)


def snapshot(root: Path) -> dict[str, tuple[int, int, str]]:
    """Every path under ``root`` but the tests' own box and stat-cache."""
    return {k: v for k, v in _snapshot(root).items() if "/box" not in k}


def test_a_second_local_run_is_goal_met_and_the_output_is_kept_as_batch_keeps_it(
    tmp_path: Path,
) -> None:
    """Bare --local makes ./.taskkit, runs the command in its task's wd with the output on
    the console and in stdout.txt/stderr.txt; the second run meets the goal and runs nothing."""
    command = counted(tmp_path / "box", "echo out", "echo err >&2", "pwd")
    first = taskkit(tmp_path, "run", "--local", "--", *command)
    assert first.returncode == 0, first.stderr
    folder = task_dir(tmp_path / ".taskkit", command)
    assert first.stdout == f"out\n{folder / 'wd'}\n"
    assert "err" in first.stderr.splitlines()
    assert (folder / "stdout.txt").read_text() == first.stdout
    assert (folder / "stderr.txt").read_text() == "err\n"
    again = taskkit(tmp_path, "run", "--local", "--", *command)
    assert again.returncode == 0, again.stderr
    assert "goal met by attempt 1" in again.stderr
    assert runs(tmp_path / "box") == 1
    assert (folder / "stdout.txt").read_text() == first.stdout
    journal = tmp_path / ".taskkit" / "state" / "local" / task_id_of(command) / "outcome.json"
    assert journal.is_file()


def test_taskkit_local_names_the_node_and_the_command_sees_a_batch_environment(
    tmp_path: Path,
) -> None:
    """TASKKIT_LOCAL=DIR alone is local mode; the command gets the node's AZ_BATCH_* variables
    and TASKKIT_STATE, never a stale AZ_BATCH_* value of the caller."""
    node = tmp_path / "node-dir"
    command = ["sh", "-c", "env | grep -E '^(AZ_BATCH_|TASKKIT_STATE=)' | sort"]
    stale = {"AZ_BATCH_JOB_ID": "real-job", "AZ_BATCH_ACCOUNT_URL": "https://acct.example"}
    proc = taskkit(tmp_path, "run", "--", *command, env={"TASKKIT_LOCAL": str(node), **stale})
    assert proc.returncode == 0, proc.stderr
    seen = dict(line.split("=", 1) for line in proc.stdout.splitlines())
    folder = task_dir(node, command)
    assert seen["AZ_BATCH_JOB_ID"] == "local"
    assert seen["AZ_BATCH_TASK_ID"] == task_id_of(command)
    assert seen["AZ_BATCH_TASK_DIR"] == str(folder)
    assert seen["AZ_BATCH_TASK_WORKING_DIR"] == str(folder / "wd")
    assert seen["AZ_BATCH_NODE_SHARED_DIR"] == str(node / "node" / "shared")
    assert seen["TASKKIT_STATE"] == f"file://{node}/state"
    assert "AZ_BATCH_ACCOUNT_URL" not in seen
    assert not (tmp_path / ".taskkit").exists()


def test_two_commands_are_two_tasks_and_given_ids_are_kept(tmp_path: Path) -> None:
    """Without --task-id each command line is its own task; --job-id/--task-id name the
    task directory and journal."""
    one, two = ["echo", "one"], ["echo", "two"]
    for command in (one, two):
        assert taskkit(tmp_path, "run", "--local", "--", *command).returncode == 0
    root = tmp_path / ".taskkit"
    assert (task_dir(root, one) / "stdout.txt").read_text() == "one\n"
    assert (task_dir(root, two) / "stdout.txt").read_text() == "two\n"
    named = taskkit(tmp_path, "run", "--local", "--job-id", "j", "--task-id", "t", "--", *one)
    assert named.returncode == 0, named.stderr
    assert (root / "node/workitems/j/job-1/t/stdout.txt").read_text() == "one\n"
    assert (root / "state/j/t/outcome.json").is_file()


def test_each_attempts_output_is_appended(tmp_path: Path) -> None:
    """A retried task's files hold every attempt's output in order: the first attempt's
    (which failed) is not lost when the second runs."""
    box = tmp_path / "box"
    command = counted(
        box,
        f"if [ -e {q(box / 'failed')} ]; then echo second; exit 0; fi",
        f"touch {q(box / 'failed')}; echo first; echo oops >&2; exit 3",
    )
    args = ["run", "--local", "--max-retries", "1", "--", *command]
    assert taskkit(tmp_path, *args).returncode == 3
    assert taskkit(tmp_path, *args).returncode == 0
    folder = task_dir(tmp_path / ".taskkit", command)
    assert (folder / "stdout.txt").read_text() == "first\nsecond\n"
    assert (folder / "stderr.txt").read_text() == "oops\n"


def test_a_local_dry_run_shows_the_plan_and_makes_nothing(tmp_path: Path) -> None:
    """--local --dry-run names the task directory it would make, plans in it, and writes
    nothing at all (no node, no state, no stat-cache in the node's shared folder, where it
    goes by default), with inputs and outputs too."""
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "in.txt").write_text("data")
    before = snapshot(tmp_path)
    command = ["cat", "in.txt"]
    proc = taskkit(
        tmp_path,
        "run",
        "--local",
        "--dry-run",
        "-i",
        f"file://{tmp_path}/src/in.txt=in.txt",
        "-o",
        f"out/**=file://{tmp_path}/results/",
        "--",
        *command,
        env={"TASKKIT_CACHE_DIR": None},
    )
    assert proc.returncode == 0, proc.stderr
    folder = task_dir(tmp_path / ".taskkit", command)
    assert f"local       task directory {folder} (would be created)" in proc.stdout
    assert f"would create the working directory {folder / 'wd'}" in proc.stdout
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("dry_run", [False, True])
def test_a_file_as_the_node_is_one_line_and_exit_203(tmp_path: Path, dry_run: bool) -> None:
    """A DIR that is a file (or lies below one) is local I/O: one line, 203, nothing made."""
    (tmp_path / "afile").write_text("not a folder")
    before = snapshot(tmp_path)
    for local in ("afile", "afile/below"):
        args = ["run", "--local", local, *(["--dry-run"] if dry_run else []), "--", "true"]
        proc = taskkit(tmp_path, *args)
        assert proc.returncode == 203, proc.stderr
        one_error(proc.stderr, "local mode", str(tmp_path / "afile"), "not a directory")
    assert snapshot(tmp_path) == before


def test_an_unwritable_node_is_one_line_and_exit_203(tmp_path: Path) -> None:
    """A DIR this user may not write is local I/O (203, retryable), one line, for a real run
    and a dry run alike."""
    prefix: list[str] = []
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("running as root without setpriv (util-linux) to drop CAP_DAC_OVERRIDE")
        prefix = ["setpriv", "--bounding-set=-dac_override,-dac_read_search"]
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        for extra in ([], ["--dry-run"]):
            args = ["run", "--local", "locked", *extra, "--", "true"]
            proc = taskkit(tmp_path, *args, prefix=prefix)
            assert proc.returncode == 203, proc.stderr
            one_error(proc.stderr, "local mode", str(locked), "permission denied")
        assert list(locked.iterdir()) == []
    finally:
        locked.chmod(0o755)


@pytest.mark.parametrize("bad", ["../escape", "a/b", "..", "x" * 65])
def test_a_hostile_task_id_is_refused_and_nothing_is_made(tmp_path: Path, bad: str) -> None:
    """A task or job id that is not a Batch id is a configuration error (200) in one line,
    before the node or anything outside it is made."""
    before = snapshot(tmp_path)
    for option in ("--task-id", "--job-id"):
        proc = taskkit(tmp_path, "run", "--local", "n/sub", option, bad, "--", "true")
        assert proc.returncode == 200, proc.stderr
        one_error(proc.stderr, "not a Batch id")
    assert snapshot(tmp_path) == before


def test_workdir_and_state_options_still_win(tmp_path: Path) -> None:
    """--workdir and --state override the node's defaults; the task's ids and files stay."""
    work, state = tmp_path / "work", tmp_path / "elsewhere"
    command = ["sh", "-c", "pwd; echo $TASKKIT_STATE"]
    proc = taskkit(
        tmp_path,
        "run",
        "--local",
        "--workdir",
        str(work),
        "--state",
        f"file://{state}",
        "--",
        *command,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"{work}\nfile://{state}\n"
    assert (state / "local" / task_id_of(command) / "outcome.json").is_file()
    assert (task_dir(tmp_path / ".taskkit", command) / "stdout.txt").read_text() == proc.stdout


def test_no_command_is_refused_before_the_node_is_made(tmp_path: Path) -> None:
    """Bare 'taskkit run --local' (no command) is the run's usage error (200), one line, and
    leaves no .taskkit behind."""
    proc = taskkit(tmp_path, "run", "--local")
    assert proc.returncode == 200, proc.stderr
    one_error(proc.stderr, "no command to run")
    assert not (tmp_path / ".taskkit").exists()


def test_a_local_run_killed_mid_command_resumes_in_the_same_task(tmp_path: Path) -> None:
    """kill -9 of taskkit while its command runs: the next run of the same line is attempt 2
    of the same task, says the first was interrupted, and stdout.txt keeps both attempts."""
    box = tmp_path / "box"
    box.mkdir()
    command = [
        "sh",
        "-ec",
        'echo "attempt $TASKKIT_ATTEMPT"\n'
        'if [ "$TASKKIT_ATTEMPT" = 1 ]; then while :; do sleep 0.05; done; fi\n'
        "echo finished",
    ]
    node = tmp_path / "node"
    args = [*TASKKIT, "run", "--local", str(node), "--max-retries", "2", "--", *command]
    stdout = task_dir(node, command) / "stdout.txt"

    def first_attempt_wrote() -> bool:
        return stdout.exists() and "attempt 1" in stdout.read_text()

    env = clean_environment(box)
    kill_9_once(args, env, [(first_attempt_wrote, "the first attempt's output in stdout.txt")])
    again = taskkit(tmp_path, *args[len(TASKKIT) :])
    assert again.returncode == 0, again.stderr
    assert "interrupted before: [1]" in again.stderr
    assert again.stdout == "attempt 2\nfinished\n"
    assert stdout.read_text() == "attempt 1\nattempt 2\nfinished\n"


def test_in_process_the_local_option_refuses_and_plans_alike(tmp_path: Path) -> None:
    """Through click in this process (CliRunner): a hostile id is 200 in one line, and
    --local DIR --dry-run plans in the task's directory; neither makes anything."""
    node = tmp_path / "n"
    code, _, err = invoke(["run", "--local", str(node), "--task-id", "../x", "--", "true"])
    assert code == 200
    one_error(err, "not a Batch id")
    code, out, err = invoke(["run", f"--local={node}", "--dry-run", "--", "true"])
    assert code == 0, err
    assert f"task directory {task_dir(node, ['true'])} (would be created)" in out
    code, out, err = invoke(["run", "--dry-run", "--", "true"], env={"TASKKIT_LOCAL": str(node)})
    assert code == 0, err
    assert f"journal {node}/state/local/{task_id_of(['true'])}/" in out
    assert not node.exists()
