"""``taskkit local run`` as a user meets it: real ``python -m taskkit`` processes, the exit code,
the summary naming what did not succeed, one line for bad input, Ctrl-C with nothing left
running, and the live line on a terminal."""

from __future__ import annotations

import json
import os
import pty
import select
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from runner_helpers import TASKKIT, clean_environment, wait_for


def sh(script: str, **fields: Any) -> dict[str, Any]:
    return {"commandLine": "/bin/sh -c " + shlex.quote(script), **fields}


def write_tasks(path: Path, *objects: dict[str, Any], lines: bool = False) -> Path:
    text = "\n".join(json.dumps(o) for o in objects) if lines else json.dumps(list(objects))
    path.write_text(text)
    return path


def local_run(
    tmp_path: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*TASKKIT, "local", "run", *args],
        cwd=tmp_path,
        env=env or clean_environment(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_every_task_succeeding_exits_0_with_a_summary_and_a_report(tmp_path: Path) -> None:
    """Exit 0; stdout's summary counts the tasks; the report sits in DIR and at --report."""
    tasks = write_tasks(tmp_path / "t.jsonl", sh("true", id="a"), sh("true", id="b"), lines=True)
    done = local_run(tmp_path, str(tasks), "--report", "r.json")
    assert done.returncode == 0, done.stderr
    assert "job local: 2 succeeded, 0 failed, 0 blocked, 0 not run" in done.stdout
    kept = json.loads((tmp_path / ".taskkit-local/report-local.json").read_text())
    assert kept == json.loads((tmp_path / "r.json").read_text())
    assert [t["state"] for t in kept["tasks"]] == ["succeeded", "succeeded"]
    assert "Traceback" not in done.stderr


def test_a_failed_or_blocked_task_exits_1_and_is_named(tmp_path: Path) -> None:
    """Exit 1 (never 0 over a failure); the summary names the failed and the blocked task, and
    stderr has a line for each as it happens."""
    tasks = write_tasks(
        tmp_path / "t.json",
        sh("exit 3", id="bad"),
        sh("true", id="after", dependsOn={"taskIds": ["bad"]}),
        sh("true", id="fine"),
    )
    done = local_run(tmp_path, str(tasks), "--job-id", "j1", "--dir", "d")
    assert done.returncode == 1
    assert "  failed: bad (exit 3)" in done.stdout.splitlines()
    assert "  blocked: after (blocked: bad failed)" in done.stdout.splitlines()
    assert "fine" not in done.stdout
    assert "taskkit: local: bad: failed (exit 3)" in done.stderr
    assert (tmp_path / "d/report-j1.json").is_file()


def test_stdin_takes_the_tasks(tmp_path: Path) -> None:
    """``-`` reads the task objects from stdin (piped from task-json)."""
    done = subprocess.run(
        [*TASKKIT, "local", "run", "-"],
        input=json.dumps(sh('echo "$AZ_BATCH_TASK_ID" > "$BOX"', id="s1")),
        cwd=tmp_path,
        env={**clean_environment(tmp_path), "BOX": str(tmp_path / "box")},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "box").read_text() == "s1\n"


def test_a_task_made_by_task_json_runs_taskkit_run_on_the_node(tmp_path: Path) -> None:
    """The line `taskkit batch task-json` writes runs as is: taskkit run starts in the task's
    working folder, keeps its journal in DIR/state, and a second run finds the goal met."""
    env = clean_environment(tmp_path)
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env["PATH"]
    line = ["sh", "-c", "echo ran >> ../../count"]
    made = subprocess.run(
        [*TASKKIT, "batch", "task-json", "--task-id", "w1", "--", *line],
        env=env, capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    (tmp_path / "t.json").write_text(made.stdout)
    first = local_run(tmp_path, "t.json", "--nodes", "1", env=env)
    again = local_run(tmp_path, "t.json", "--nodes", "1", env=env)
    assert (first.returncode, again.returncode) == (0, 0), first.stderr + again.stderr
    count = tmp_path / ".taskkit-local/nodes/node-1/node/workitems/local/job-1/count"
    assert count.read_text() == "ran\n"
    assert (tmp_path / ".taskkit-local/state").is_dir()


def test_fields_that_are_not_emulated_are_named_in_a_warning(tmp_path: Path) -> None:
    """resourceFiles is Batch's but not emulated: one warning naming it and the task; the job
    still runs."""
    tasks = write_tasks(tmp_path / "t.json", sh("true", id="a", resourceFiles=[{"httpUrl": "x"}]))
    done = local_run(tmp_path, str(tasks))
    assert done.returncode == 0
    assert "taskkit: warning: resourceFiles is not emulated: ignored in a" in done.stderr


def test_bad_input_is_one_line_with_its_exit_code(tmp_path: Path) -> None:
    """A malformed task file (65), a missing one (66), a bad --chaos (64): one line each, no
    traceback, and no DIR made."""
    (tmp_path / "bad.json").write_text('[{"id": "a", "commandLine": "true", "colour": 1}]')
    (tmp_path / "ok.json").write_text('[{"id": "a", "commandLine": "true"}]')
    cases = [
        (["bad.json"], 65, "unknown field 'colour'"),
        (["nothing.json"], 66, "no task file"),
        (["ok.json", "--chaos", "kill=3"], 64, "kill is a chance"),
        (["ok.json", "--nodes", "0"], 64, "--nodes"),
    ]
    for args, code, words in cases:
        done = local_run(tmp_path, *args)
        lines = done.stderr.strip().splitlines()
        assert done.returncode == code, (args, done.stderr)
        assert len(lines) == 1, (args, done.stderr)
        assert words in lines[0]
        assert "Traceback" not in done.stderr
    assert not (tmp_path / ".taskkit-local").exists()


@pytest.mark.parametrize("then", [None, signal.SIGTERM, signal.SIGINT])
def test_ctrl_c_kills_every_task_and_still_writes_the_report(
    tmp_path: Path, then: signal.Signals | None
) -> None:
    """SIGINT: exit 130, the running tasks' process groups are gone (their children too), and
    the report names the interruption. Another signal right behind it changes nothing: the
    exit code is still the report's."""
    pids = tmp_path / "pids"
    pids.mkdir()
    script = (
        'sleep 60 & echo $! > "$PIDS/$AZ_BATCH_TASK_ID.child"; '
        'echo $$ > "$PIDS/$AZ_BATCH_TASK_ID"; wait'
    )
    tasks = write_tasks(tmp_path / "t.json", sh(script, id="a"), sh(script, id="b"))
    env = {**clean_environment(tmp_path), "PIDS": str(pids)}
    proc = subprocess.Popen(
        [*TASKKIT, "local", "run", str(tasks), "--nodes", "2"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        wait_for(  # written, not just created: `echo $$ > f` makes f empty first
            lambda: sum(1 for f in pids.iterdir() if f.read_text().strip()) == 4,
            "both tasks and their children",
        )
        started = {int(f.read_text()): _started(int(f.read_text())) for f in pids.iterdir()}
        proc.send_signal(signal.SIGINT)
        if then is not None:
            proc.send_signal(then)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    for pid, when in started.items():
        wait_for(lambda pid=pid, when=when: not _alive(pid, when), f"process {pid} gone", 10)
    report = json.loads((tmp_path / ".taskkit-local/report-local.json").read_text())
    assert report["terminated"] == "interrupted"
    assert report["exitCode"] == 130
    assert [t["state"] for t in report["tasks"]] == ["interrupted", "interrupted"]
    assert "2 interrupted" in out


def _started(pid: int) -> str | None:
    """The start time of process ``pid`` (None: there is none), which tells it from a later
    process given the same pid."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[-1].split()[19]
    except FileNotFoundError:
        return None


def _alive(pid: int, started: str | None) -> bool:
    """Process ``pid``, started at ``started``, still runs: not gone, not a zombie waiting
    for a parent that is not the test (the pid reused by another process counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[-1].split()
    except FileNotFoundError:
        return False
    return fields[19] == started and fields[0] != "Z"


def test_on_a_terminal_the_status_line_is_redrawn(tmp_path: Path) -> None:
    """A TTY on stderr gets the live line (``\\r`` redraws with the counts), then the summary."""
    tasks = write_tasks(tmp_path / "t.json", *(sh("sleep 0.2", id=f"t{i}") for i in range(4)))
    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        [*TASKKIT, "local", "run", str(tasks)],
        cwd=tmp_path, env=clean_environment(tmp_path), stdout=subprocess.PIPE, stderr=follower,
    )  # fmt: skip
    os.close(follower)
    seen = b""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ready, _, _ = select.select([leader], [], [], 1.0)
        if not ready:
            if proc.poll() is not None:
                break
            continue
        try:
            chunk = os.read(leader, 4096)
        except OSError:
            break
        if not chunk:
            break
        seen += chunk
    os.close(leader)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0
    assert b"\r4/4 done: 0 running, 4 succeeded, 0 failed" in seen
    assert b"job local: 4 succeeded" in out


def _pid_of(path: Path) -> tuple[int, str | None]:
    pid = int(path.read_text())
    return pid, _started(pid)


def test_nothing_a_task_left_running_outlives_the_job(tmp_path: Path) -> None:
    """A daemon a task started (in a session of its own) is killed when the job ends."""
    script = "setsid sh -c 'echo $$ > \"$BOX/daemon\"; exec sleep 300' & sleep 0.2; exit 0"
    tasks = write_tasks(tmp_path / "t.json", sh(script, id="d"))
    env = {**clean_environment(tmp_path), "BOX": str(tmp_path)}
    done = local_run(tmp_path, str(tasks), env=env)
    assert done.returncode == 0, done.stderr
    pid = int((tmp_path / "daemon").read_text())
    wait_for(lambda: not _alive(pid, _started(pid)), "the daemon killed", timeout=10)


def test_a_run_killed_with_sigkill_is_cleaned_up_by_the_next(tmp_path: Path) -> None:
    """kill -9 of taskkit local run leaves its task running; the next run in the same DIR
    kills it (and says so) before running the job again."""
    script = 'echo $$ >> "$BOX/pids"; [ -e "$BOX/second" ] || exec sleep 300'
    tasks = write_tasks(tmp_path / "t.json", sh(script, id="k"))
    env = {**clean_environment(tmp_path), "BOX": str(tmp_path)}
    first = subprocess.Popen([*TASKKIT, "local", "run", str(tasks)], cwd=tmp_path, env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        wait_for((tmp_path / "pids").exists, "the first run's task")
        first.kill()
        first.wait(timeout=30)
    finally:
        if first.poll() is None:
            first.kill()
    orphan, started = _pid_of(tmp_path / "pids")
    assert _alive(orphan, started)
    (tmp_path / "second").touch()
    again = local_run(tmp_path, str(tasks), env=env)
    assert again.returncode == 0, again.stderr
    assert "ended the processes an earlier run of this pool left running" in again.stderr
    assert not _alive(orphan, started)


def test_sighup_stops_the_job_like_sigterm(tmp_path: Path) -> None:
    """A closed terminal (SIGHUP): exit 129, the task killed, the report written."""
    tasks = write_tasks(tmp_path / "t.json", sh('echo $$ > "$BOX/pid"; exec sleep 300', id="h"))
    env = {**clean_environment(tmp_path), "BOX": str(tmp_path)}
    proc = subprocess.Popen([*TASKKIT, "local", "run", str(tasks)], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        wait_for((tmp_path / "pid").exists, "the task")
        pid, started = _pid_of(tmp_path / "pid")
        proc.send_signal(signal.SIGHUP)
        proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 129
    assert not _alive(pid, started)
    report = json.loads((tmp_path / ".taskkit-local/report-local.json").read_text())
    assert report["exitCode"] == 129


def test_a_taskkit_run_around_the_emulator_does_not_name_its_tasks(tmp_path: Path) -> None:
    """TASKKIT_TASK_ID and the like of the caller (set when local run runs under taskkit run)
    never reach the pool's tasks; a byte-order mark before the JSON is dropped."""
    tasks = tmp_path / "t.json"
    tasks.write_text("\ufeff" + json.dumps([sh('echo "${TASKKIT_TASK_ID:-none}" > "$BOX/id"',
                                                 id="e")]), encoding="utf-8")  # fmt: skip
    env = {**clean_environment(tmp_path), "BOX": str(tmp_path), "TASKKIT_TASK_ID": "outer",
           "TASKKIT_JOB_ID": "outer", "TASKKIT_ATTEMPT": "3"}  # fmt: skip
    done = local_run(tmp_path, str(tasks), env=env)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "id").read_text() == "none\n"


def test_empty_stdin_and_storage_chaos_without_storage_make_nothing(tmp_path: Path) -> None:
    """`-` with nothing on stdin is 65; storage chaos with no local endpoint is 64; neither
    makes DIR."""
    (tmp_path / "ok.json").write_text('[{"id": "a", "commandLine": "true"}]')
    closed = subprocess.run([*TASKKIT, "local", "run", "-"], cwd=tmp_path, stdin=subprocess.DEVNULL,
                            env=clean_environment(tmp_path), capture_output=True, text=True,
                            check=False, timeout=60)  # fmt: skip
    assert closed.returncode == 65  # /dev/null: nothing in it
    chaos = local_run(tmp_path, "ok.json", "--chaos", "storage=0.1")
    assert chaos.returncode == 64
    assert "AZURE_STORAGE_CONNECTION_STRING" in chaos.stderr
    assert not (tmp_path / ".taskkit-local").exists()


def test_a_closed_stdin_or_an_endless_task_file_is_one_line(tmp_path: Path) -> None:
    """`-` with stdin closed is no task file (66), not an internal error; /dev/zero is read up
    to the cap and refused (65), not for ever."""
    closed = subprocess.run(
        [*TASKKIT, "local", "run", "-"], cwd=tmp_path, env=clean_environment(tmp_path),
        stdin=subprocess.DEVNULL, preexec_fn=lambda: os.close(0),
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    endless = local_run(tmp_path, "/dev/zero")
    assert (closed.returncode, endless.returncode) == (66, 65), closed.stderr + endless.stderr
    assert "stdin is closed" in closed.stderr
    assert "more than 256 MiB of tasks" in endless.stderr
    assert len(closed.stderr.splitlines()) == len(endless.stderr.splitlines()) == 1
