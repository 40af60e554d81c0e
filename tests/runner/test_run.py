"""``taskkit run``: the goal-seeking runner, as real processes with real signals.

Each test drives ``python -m taskkit run`` against ``file://`` state under tmp_path (see
``runner_helpers.Task``), reads the journal it leaves (attempts, outcome, logs, checkpoint)
and the outputs it publishes. Commands count their runs in files outside the working
directory, and block on marker files the test creates; nothing sleeps for luck.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from runner_helpers import (
    SH_TASKKIT,
    Task,
    invoke,
    newest_checkpoint,
    one_error,
    opened_task,
    q,
    sh,
    wait_for,
)

from taskkit.content.digest import hash_bytes
from taskkit.transfer.upload_plan import MANIFEST_NAME

EX_CONFIG, EX_NOINPUT, EX_DEADLINE = 200, 201, 205


@pytest.fixture
def task(tmp_path: Path) -> Iterator[Task]:
    with opened_task(tmp_path) as opened:
        yield opened


def manifest(dest: Path) -> dict[str, Any]:
    found: dict[str, Any] = json.loads((dest / MANIFEST_NAME).read_text())
    return found


# -- attempts and the goal -----------------------------------------------------------------------


def test_a_failed_attempt_is_retried_and_the_second_publishes(task: Task, tmp_path: Path) -> None:
    """Exit 1 then 0: both attempts recorded with code and verdict, success by attempt 2,
    outputs published under a manifest naming attempt 2; the command is told its attempt."""
    dest = tmp_path / "dest"
    told = task.box / "told.txt"
    command = sh(
        f"{task.counted('cmd')}\n"
        'echo "$TASKKIT_ATTEMPT $TASKKIT_FINGERPRINT $TASKKIT_STATE $TASKKIT_JOB_ID '
        f'$TASKKIT_TASK_ID $TASKKIT_WORKDIR $PWD" >> {q(told)}\n'
        "mkdir -p out\n"
        'echo "made by attempt $TASKKIT_ATTEMPT" > out/result.txt\n'
        f'[ "$(wc -l < {q(task.box / "cmd.count")})" -ge 2 ]\n'
    )
    options = ("--max-retries", "3", "-o", f"out/*.txt=file://{dest}/")

    first = task.run(command, *options)
    assert first.returncode == 1, first.stderr
    assert "attempt 1 of 4" in first.stderr
    assert task.outcome() is None  # a retryable failure before the last attempt decides nothing
    assert not (dest / MANIFEST_NAME).exists()

    second = task.run(command, *options)
    assert second.returncode == 0, second.stderr
    assert task.count("cmd") == 2
    one, two = task.attempt(1), task.attempt(2)
    assert (one["number"], one["exit_code"], one["verdict"]) == (1, 1, "retryable")
    assert (two["number"], two["exit_code"], two["verdict"]) == (2, 0, "success")
    assert one["ended"] is not None
    assert two["ended"] is not None
    assert one["fingerprint"] == two["fingerprint"]
    where = f"{task.state} {task.job} {task.task} {task.workdir} {task.workdir}"
    assert told.read_text().splitlines() == [f"{n} {one['fingerprint']} {where}" for n in (1, 2)]
    outcome = task.outcome()
    assert outcome is not None
    assert (outcome["state"], outcome["attempt"], outcome["exit_code"]) == ("success", 2, 0)
    assert outcome["fingerprint"] == two["fingerprint"]
    assert outcome["manifests"] == [f"file://{dest}/{MANIFEST_NAME}"]
    published = (dest / "result.txt").read_bytes()
    assert published == b"made by attempt 2\n"
    listed = manifest(dest)
    assert listed["task"] == {"job": task.job, "task": task.task, "attempt": 2}
    assert listed["files"] == [
        {"name": "result.txt", "digest": str(hash_bytes(published)), "size": len(published)}
    ]


def test_a_met_goal_does_not_run_the_command_again(task: Task, tmp_path: Path) -> None:
    """After a success, a run exits 0, says the goal is met, runs nothing and changes no
    record: it only adds its note under skips/ (what a report counts as saved)."""
    dest = tmp_path / "dest"
    command = sh(f"{task.counted('cmd')}\nmkdir -p out\necho data > out/a.txt\n")
    options = ("-o", f"out/*.txt=file://{dest}/")
    assert task.run(command, *options).returncode == 0
    before = {p: p.stat().st_mtime_ns for p in task.journal_files()}
    published = (dest / MANIFEST_NAME).stat().st_mtime_ns

    again = task.run(command, *options)
    assert again.returncode == 0, again.stderr
    assert "goal met by attempt 1" in again.stderr
    assert "the command is not run again" in again.stderr
    assert task.count("cmd") == 1
    assert task.attempts() == [1]
    after = {p: p.stat().st_mtime_ns for p in task.journal_files()}
    added = set(after) - set(before)
    assert {p: after[p] for p in before} == before
    assert [p.parent.name for p in added] == ["skips"]
    skip = json.loads(next(iter(added)).read_text())
    assert (skip["goal"], skip["attempt"], skip["exit_code"]) == ("met", 1, 0)
    assert (dest / MANIFEST_NAME).stat().st_mtime_ns == published


def test_a_permanent_failure_short_circuits_later_attempts(task: Task) -> None:
    """--permanent-codes 3 and exit 3: outcome permanent; the next run exits 3 at once."""
    command = sh(f"{task.counted('cmd')}\nexit 3\n")
    first = task.run(command, "--permanent-codes", "3", "--max-retries", "5")
    assert first.returncode == 3, first.stderr
    outcome = task.outcome()
    assert outcome is not None
    assert (outcome["state"], outcome["attempt"], outcome["exit_code"]) == ("permanent", 1, 3)
    assert task.attempt(1)["verdict"] == "permanent"

    again = task.run(command, "--permanent-codes", "3", "--max-retries", "5")
    assert again.returncode == 3
    assert "permanent failure in attempt 1" in again.stderr
    assert task.count("cmd") == 1
    assert task.attempts() == [1]
    [skip] = (task.journal / "skips").iterdir()
    noted = json.loads(skip.read_text())
    assert (noted["goal"], noted["attempt"], noted["exit_code"]) == ("permanent", 1, 3)


def test_a_changed_command_runs_again_and_says_why(task: Task) -> None:
    """After a success, another command line is other work: it runs, saying the command changed."""
    assert task.run(sh(task.counted("cmd"))).returncode == 0
    changed = task.run(sh(task.counted("cmd") + "\ntrue"))
    assert changed.returncode == 0, changed.stderr
    assert "starting afresh: the command changed" in changed.stderr
    assert task.count("cmd") == 2
    assert task.attempts() == [1, 2]


def test_a_changed_input_runs_again_and_names_the_input(task: Task, tmp_path: Path) -> None:
    """After a success, new content in an input file (same size) runs the command again on the
    new content, and the note names the input file by its URL."""
    source = tmp_path / "inputs"
    source.mkdir()
    (source / "data.txt").write_text("v1\n")
    command = sh(f"{task.counted('cmd')}\ncat in/data.txt >> {q(task.box / 'seen.txt')}\n")
    option = ("-i", f"file://{source}/=in/")
    assert task.run(command, *option).returncode == 0
    assert task.count("cmd") == 1

    (source / "data.txt").write_text("v2\n")
    changed = task.run(command, *option)
    assert changed.returncode == 0, changed.stderr
    assert f"starting afresh: input file://{source}/data.txt changed" in changed.stderr
    assert task.count("cmd") == 2
    assert (task.box / "seen.txt").read_text() == "v1\nv2\n"


def test_each_attempt_records_what_its_transfers_moved(task: Task, tmp_path: Path) -> None:
    """An attempt's record keeps its staging's and upload's figures: the first moves every
    file, a second of other work finds them in place and moves none of the same bytes."""
    source, dest = tmp_path / "inputs", tmp_path / "dest"
    source.mkdir()
    (source / "a.txt").write_text("aaaa\n")
    (source / "b.txt").write_text("bb\n")
    options = ("-i", f"file://{source}/=in/", "-o", f"out/*.txt=file://{dest}/")
    body = "mkdir -p out\ncat in/a.txt in/b.txt > out/ab.txt\n"
    assert task.run(sh("true")).returncode == 0
    assert "staged" not in task.attempt(1)  # no inputs, no outputs: no transfers recorded
    first = task.run(sh(body), *options)
    assert first.returncode == 0, first.stderr
    number = task.attempts()[-1]
    record = task.attempt(number)
    assert record["staged"] == {
        "files": 2,
        "transferred": 2,
        "skipped": 0,
        "linked": 0,
        "bytes_transferred": 8,
        "bytes_kept": 0,
        "bytes_reused": 0,
    }
    assert (record["uploaded"]["files"], record["uploaded"]["transferred"]) == (1, 1)
    assert record["uploaded"]["bytes_transferred"] == 8

    again = task.run(sh(body + "true\n"), *options)  # other work, the same files
    assert again.returncode == 0, again.stderr
    second = task.attempt(task.attempts()[-1])
    assert (second["staged"]["skipped"], second["staged"]["transferred"]) == (2, 0)
    assert (second["staged"]["bytes_kept"], second["staged"]["bytes_transferred"]) == (8, 0)
    assert (second["uploaded"]["skipped"], second["uploaded"]["bytes_kept"]) == (1, 8)


# -- interruptions -------------------------------------------------------------------------------


def test_kill_9_leaves_an_interrupted_attempt_and_finished_steps_stay_done(task: Task) -> None:
    """kill -9 mid-command: attempt 1 has no end but its streamed logs and periodic checkpoint;
    the next run is attempt 2, says attempt 1 was interrupted, status shows it so, the
    checkpoint comes back and the step finished before the kill is skipped."""
    command = sh(
        f"{SH_TASKKIT} step first -- sh -c {q(task.counted('first'))}\n"
        'if [ "$TASKKIT_ATTEMPT" = 1 ]; then\n'
        "  echo 'streamed before the kill'\n"
        "  echo 'kept' > \"$TASKKIT_CHECKPOINT_DIR/progress.txt\"\n"
        f"{task.block('cmd')}"
        "fi\n"
        f'cat "$TASKKIT_CHECKPOINT_DIR/progress.txt" > {q(task.box / "restored.txt")}\n'
        f"{task.counted('after')}\n"
    )
    options = ("--max-retries", "3", "--log-interval", "0.2s", "--checkpoint-interval", "0.2s")
    proc = task.start(command, *options)
    task.wait_started("cmd", proc)
    stdout = task.journal / "logs" / "00001" / "stdout.txt"
    wait_for(
        lambda: stdout.exists() and "streamed before the kill" in stdout.read_text(),
        "the stdout of attempt 1 to reach the store",
    )
    synced = task.journal / "checkpoint" / "00001" / "a" / MANIFEST_NAME  # attempt 1's first sync
    wait_for(synced.exists, "the checkpoint directory to be synced")
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    os.killpg(int((task.box / "cmd.pid").read_text()), signal.SIGKILL)
    assert task.attempts() == [1]
    record = task.attempt(1)
    assert (record["ended"], record["exit_code"], record["verdict"]) == (None, None, None)
    assert task.outcome() is None

    task.release("cmd")
    retry = task.run(command, *options)
    assert retry.returncode == 0, retry.stderr
    assert "attempt 2 of 4" in retry.stderr
    assert "interrupted before: [1]" in retry.stderr
    assert "step first: done in attempt 1, skipped" in retry.stderr
    assert (task.count("first"), task.count("after")) == (1, 1)
    assert (task.box / "restored.txt").read_text() == "kept\n"
    assert "streamed before the kill\n" in task.log(1, "stdout")
    attempts = {a["number"]: a for a in task.status()["attempts"]}
    assert attempts[1]["state"] == "interrupted"
    assert (attempts[2]["state"], attempts[2]["verdict"]) == ("ended", "success")


def test_sigterm_is_forwarded_and_logs_and_checkpoint_are_kept(task: Task) -> None:
    """SIGTERM mid-command: exit 143, the output so far in the stored stdout, the checkpoint
    directory synced to the journal and restored into the next attempt's."""
    command = sh(
        'if [ "$TASKKIT_ATTEMPT" = 1 ]; then\n'
        "  echo 'before the signal'\n"
        "  echo 'saved by attempt 1' > \"$TASKKIT_CHECKPOINT_DIR/progress.txt\"\n"
        f"{task.block('cmd')}"
        "fi\n"
        f'cat "$TASKKIT_CHECKPOINT_DIR/progress.txt" > {q(task.box / "restored.txt")}\n'
    )
    proc = task.start(command, "--max-retries", "2")
    task.wait_started("cmd", proc)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 143, err
    assert "before the signal" in out
    assert "before the signal\n" in task.log(1, "stdout")
    assert "received SIGTERM; forwarded it" in task.log(1, "taskkit")
    record = task.attempt(1)
    assert (record["exit_code"], record["verdict"]) == (143, "retryable")
    checkpoint = newest_checkpoint(task.journal / "checkpoint")
    assert (checkpoint / "progress.txt").read_text() == "saved by attempt 1\n"
    assert [f["name"] for f in manifest(checkpoint)["files"]] == ["progress.txt"]

    retry = task.run(command, "--max-retries", "2")
    assert retry.returncode == 0, retry.stderr
    assert "restored 1 checkpoint files" in retry.stderr
    assert (task.box / "restored.txt").read_text() == "saved by attempt 1\n"


def test_the_deadline_stops_the_command_with_205(task: Task) -> None:
    """--deadline 1s on a 30 s command: exit 205 within seconds, attempt retryable, logs kept."""
    started = time.monotonic()
    ended = task.run(
        ["sh", "-c", "echo working; exec sleep 30"], "--deadline", "1s", "--max-retries", "1"
    )
    assert ended.returncode == EX_DEADLINE, ended.stderr
    assert time.monotonic() - started < 15
    record = task.attempt(1)
    assert (record["exit_code"], record["verdict"]) == (EX_DEADLINE, "retryable")
    assert record["reason"] == "deadline reached"
    assert task.log(1, "stdout") == "working\n"
    assert "the deadline passed; sent SIGTERM" in task.log(1, "taskkit")
    assert task.outcome() is None  # retryable, and not the last attempt


# -- the retry budget and the command's own failures ---------------------------------------------


def test_the_last_attempt_records_failed_with_diagnostics(task: Task) -> None:
    """--max-retries 1: attempt 1 records no outcome; attempt 2 records "failed" and writes
    diagnostics; a third run (a preemption) still runs the command."""
    command = sh(f"{task.counted('cmd')}\nexit 4\n")
    assert task.run(command, "--max-retries", "1").returncode == 4
    assert task.outcome() is None
    assert task.attempt(1)["last"] is False
    assert "diagnostics:" not in task.log(1, "taskkit")

    assert task.run(command, "--max-retries", "1").returncode == 4
    outcome = task.outcome()
    assert outcome is not None
    assert (outcome["state"], outcome["attempt"], outcome["exit_code"]) == ("failed", 2, 4)
    assert task.attempt(2)["last"] is True
    notes = task.log(2, "taskkit").splitlines()
    diagnostics = [line for line in notes if "diagnostics:" in line]
    assert len(diagnostics) >= 3
    assert any("the last attempt failed" in line for line in diagnostics)

    rerun = task.run(command, "--max-retries", "1")
    assert rerun.returncode == 4
    assert task.count("cmd") == 3
    assert task.attempts() == [1, 2, 3]


def test_a_command_not_found_is_127_and_permanent(task: Task) -> None:
    """A command that does not exist: 127, one line naming it, recorded permanent."""
    missing = str(task.root / "no-such-command")
    ended = task.run([missing, "arg"], "--max-retries", "3")
    assert ended.returncode == 127
    assert f"cannot run {missing}" in ended.stderr
    outcome = task.outcome()
    assert outcome is not None
    assert (outcome["state"], outcome["exit_code"]) == ("permanent", 127)


def test_a_command_not_executable_is_126_and_permanent(task: Task) -> None:
    """A file without the execute bit: 126, recorded permanent."""
    script = task.box / "script.sh"
    script.write_text("#!/bin/sh\necho never\n")
    script.chmod(0o644)
    ended = task.run([str(script)], "--max-retries", "3")
    assert ended.returncode == 126
    assert "never" not in ended.stdout
    outcome = task.outcome()
    assert outcome is not None
    assert (outcome["state"], outcome["exit_code"]) == ("permanent", 126)


# -- spec files and precedence --------------------------------------------------------------------

SPECS = {
    "spec.toml": (
        'max-retries = 2\npermanent-codes = "3,5-9"\noutputs = ["out/*.txt=file://{dest}/"]\n'
    ),
    "spec.yaml": (
        "max_retries: 2\npermanent_codes: 3,5-9\noutputs:\n  - out/*.txt=file://{dest}/\n"
    ),
    "spec.json": (
        '{{"max-retries": 2, "permanent_codes": "3,5-9", "outputs": ["out/*.txt=file://{dest}/"]}}'
    ),
}


@pytest.mark.parametrize("name", sorted(SPECS))
def test_a_spec_file_sets_retries_codes_and_outputs(task: Task, tmp_path: Path, name: str) -> None:
    """TOML, YAML and JSON specs: --dry-run shows their retries, permanent codes and outputs."""
    dest = tmp_path / "dest"
    spec = tmp_path / name
    spec.write_text(SPECS[name].format(dest=dest))
    code, out, err = invoke(task.args(["true"], "--spec", str(spec), "--dry-run"), env=task.env)
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert any(line.startswith("goal        open: attempt 1 of 3;") for line in lines), lines
    assert any(
        line.split() == ["3,5-9", "permanent", "exits", "the", "same", "code"] for line in lines
    )
    assert f"output      out/*.txt -> file://{dest}/  (written on success, manifest last)" in lines


def test_a_spec_file_drives_a_real_run(task: Task, tmp_path: Path) -> None:
    """A real run follows a TOML spec: its retry budget in the attempt count, its outputs
    published."""
    dest = tmp_path / "dest"
    spec = tmp_path / "spec.toml"
    spec.write_text(SPECS["spec.toml"].format(dest=dest))
    ended = task.run(sh("mkdir -p out\necho made > out/a.txt\n"), "--spec", str(spec))
    assert ended.returncode == 0, ended.stderr
    assert "attempt 1 of 3" in ended.stderr
    assert [f["name"] for f in manifest(dest)["files"]] == ["a.txt"]


def test_the_command_line_beats_the_environment_beats_the_spec(task: Task, tmp_path: Path) -> None:
    """max-retries from the spec (5), TASKKIT_MAX_RETRIES (2) and --max-retries (1): each
    later source wins, as --dry-run's "attempt 1 of N" shows."""
    spec = tmp_path / "spec.toml"
    spec.write_text("max-retries = 5\n")

    def total(*options: str, env: dict[str, str] | None = None) -> str:
        argv = task.args(["true"], "--spec", str(spec), "--dry-run", *options)
        code, out, err = invoke(argv, env={**task.env, **(env or {})})
        assert (code, err) == (0, "")
        goal = next(line for line in out.splitlines() if line.startswith("goal"))
        return goal.split("attempt 1 of ")[1].split(";")[0]

    assert total() == "6"
    assert total(env={"TASKKIT_MAX_RETRIES": "2"}) == "3"
    assert total("--max-retries", "1", env={"TASKKIT_MAX_RETRIES": "2"}) == "2"


@pytest.mark.parametrize(
    ("name", "text", "fragments"),
    [
        ("spec.toml", 'colour = "red"\n', ["unknown setting", "'colour'"]),
        ("spec.yaml", "max-retries: 2\nretry: 3\n", ["unknown setting", "'retry'"]),
        ("spec.toml", 'max-retries = "x"\n', ["max-retries"]),
        ("spec.json", '{"permanent-codes": "9-5"}', ["permanent-codes", "backwards"]),
        ("spec.yml", "permanent_codes: 9-5\n", ["permanent_codes", "backwards"]),
        ("spec.toml", "max-retries = \n", ["not valid TOML"]),
        ("spec.json", '{"max-retries": 2', ["not valid JSON"]),
        ("spec.yaml", "max-retries: [1\n", ["not valid YAML"]),
        ("spec.ini", "max-retries = 2\n", ["unknown spec format", "'.ini'"]),
        ("missing.toml", None, ["cannot read the spec"]),
    ],
)
def test_a_bad_spec_file_is_200_with_one_line_naming_it(
    task: Task, tmp_path: Path, name: str, text: str | None, fragments: list[str]
) -> None:
    """A spec with an unknown key, a bad value, bad syntax or an unknown suffix, or no spec
    there: exit 200, one line naming the file (and the key), the command not run."""
    spec = tmp_path / name
    if text is not None:
        spec.write_text(text)
    code, _, err = invoke(task.args(sh(task.counted("cmd")), "--spec", str(spec)), env=task.env)
    assert code == EX_CONFIG
    one_error(err, str(spec), *fragments)
    assert task.count("cmd") == 0
    assert not task.state_dir.exists()


# -- bad invocations ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("where", "options", "fragments"),
    [
        ({"state": False}, [], ["no state", "--state", "TASKKIT_STATE"]),
        ({"ids": False}, [], ["--job-id"]),
        ({"ids": False}, ["--job-id", "a/b", "--task-id", "t"], ["'a/b'", "Batch id"]),
        ({"ids": False}, ["--job-id", "j" * 65, "--task-id", "t"], ["Batch id"]),
        ({"ids": False}, ["--job-id", "j", "--task-id", ""], ["--task-id"]),
        ({}, ["-o", "out/*.txt"], ["out/*.txt"]),
        ({}, ["-o", "../x=file:///tmp/x/"], ["../x"]),
        ({}, ["--max-retries", "many"], ["--max-retries"]),
        ({}, ["--permanent-codes", "0"], ["exit code 0"]),
        ({}, ["--deadline", "soon"], ["--deadline"]),
        ({}, ["--colour", "red"], ["--colour"]),
        ({"command": []}, [], ["no command"]),
    ],
)
def test_a_bad_invocation_is_200_with_one_line_and_runs_nothing(
    task: Task, where: dict[str, Any], options: list[str], fragments: list[str]
) -> None:
    """Missing state, ids or command, bad ids, a malformed -o, bad values, an unknown option:
    exit 200, one error line, the command not run and no journal written."""
    given = dict(where)
    command = given.pop("command", sh(task.counted("cmd")))
    code, _, err = invoke(task.args(command, *options, **given), env=task.env)
    assert code == EX_CONFIG
    one_error(err, *fragments)
    assert task.count("cmd") == 0
    assert not task.state_dir.exists()


def test_an_unknown_option_is_200_as_a_real_process(task: Task) -> None:
    """A mistyped option exits in the run band (200), not click's 2 or taskkit's 64."""
    ended = task.run(sh(task.counted("cmd")), "--max-retrys", "2")
    assert ended.returncode == EX_CONFIG
    one_error(ended.stderr, "--max-retrys")
    assert task.count("cmd") == 0


def test_a_missing_input_is_201_and_permanent(task: Task, tmp_path: Path) -> None:
    """-i naming no file: exit 201 without running the command, recorded permanent, so the
    next run exits 201 at once."""
    option = ("-i", f"file://{tmp_path}/nonexistent/x=x", "--max-retries", "3")
    ended = task.run(sh(task.counted("cmd")), *option)
    assert ended.returncode == EX_NOINPUT, ended.stderr
    outcome = task.outcome()
    assert outcome is not None
    assert (outcome["state"], outcome["exit_code"]) == ("permanent", EX_NOINPUT)

    again = task.run(sh(task.counted("cmd")), *option)
    assert again.returncode == EX_NOINPUT
    assert "permanent failure in attempt 1" in again.stderr
    assert task.attempts() == [1]
    assert task.count("cmd") == 0


# -- several attempts at once, Batch's environment, secrets ----------------------------------------


def test_two_attempts_at_once_publish_once(task: Task, tmp_path: Path) -> None:
    """Two attempts of one task inside the command together: distinct numbers, both exit 0,
    one success outcome, and the outputs uploaded by one of them only."""
    dest = tmp_path / "dest"
    arrived = task.box / "arrived"
    arrived.mkdir()
    command = sh(  # a barrier: both commands wait (up to 30 s) until both have arrived
        f"touch {q(arrived)}/$$\n"
        "i=0\n"
        f'while [ "$(ls {q(arrived)} | wc -l)" -lt 2 ]; do\n'
        "  i=$((i + 1)); [ $i -lt 3000 ] || exit 9; sleep 0.01\n"
        "done\n"
        "mkdir -p out\n"
        'echo "made by attempt $TASKKIT_ATTEMPT" > out/result.txt\n'
    )
    options = ("--max-retries", "3", "-o", f"out/*.txt=file://{dest}/")
    workdirs = [tmp_path / "node-a", tmp_path / "node-b"]
    for workdir in workdirs:
        workdir.mkdir()
    procs = [task.start(command, *options, workdir=w) for w in workdirs]
    ended = [proc.communicate(timeout=60) for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0], [err for _, err in ended]

    assert task.attempts() == [1, 2]
    assert len(os.listdir(arrived)) == 2
    outcome = task.outcome()
    assert outcome is not None
    assert outcome["state"] == "success"
    publisher = outcome["attempt"]
    waited = [err for _, err in ended if "published the same work meanwhile" in err]
    assert len(waited) == 1, [err for _, err in ended]
    assert f"attempt {publisher} published the same work meanwhile" in waited[0]
    assert manifest(dest)["task"] == {"job": task.job, "task": task.task, "attempt": publisher}
    assert (dest / "result.txt").read_text() == f"made by attempt {publisher}\n"
    verdicts = [task.attempt(n)["verdict"] for n in (1, 2)]
    assert verdicts == ["success", "success"]


def test_batch_variables_name_the_task_node_and_log_folder(task: Task, tmp_path: Path) -> None:
    """AZ_BATCH_JOB_ID/TASK_ID give the ids, AZ_BATCH_NODE_ID is recorded in the attempt,
    logs are written under AZ_BATCH_TASK_DIR/taskkit/ (and removed there once stored),
    AZ_BATCH_TASK_WORKING_DIR is the workdir."""
    task_dir = tmp_path / "batch" / "task"
    working = task_dir / "wd"
    working.mkdir(parents=True)
    batch = {
        "AZ_BATCH_JOB_ID": "batch-job",
        "AZ_BATCH_TASK_ID": "batch-task",
        "AZ_BATCH_NODE_ID": "tvmps_node_7",
        "AZ_BATCH_TASK_DIR": str(task_dir),
        "AZ_BATCH_TASK_WORKING_DIR": str(working),
    }
    seen = task.box / "seen.txt"
    command = sh(
        'echo "$TASKKIT_JOB_ID $TASKKIT_TASK_ID $TASKKIT_WORKDIR $PWD" > '
        f"{q(seen)}\n"
        'echo "$TASKKIT_CHECKPOINT_DIR" >> '
        f"{q(seen)}\n"
        "echo hello from batch\n"
    )
    ended = task.run(command, env=batch, ids=False, own_workdir=False)
    assert ended.returncode == 0, ended.stderr
    ids, checkpoint = seen.read_text().splitlines()
    assert ids == f"batch-job batch-task {working} {working}"
    journal = task.state_dir / "batch-job" / "batch-task"
    record = json.loads((journal / "attempts" / "00001.json").read_text())
    assert record["node"] == "tvmps_node_7"
    kept = task_dir / "taskkit" / "attempt-00001"
    assert not (kept / "logs").exists()
    assert "attempt 1 of 1" in (journal / "logs" / "00001" / "taskkit.txt").read_text()
    assert Path(checkpoint).parent == kept
    assert (journal / "logs" / "00001" / "stdout.txt").read_text() == "hello from batch\n"


def test_a_storage_key_in_the_environment_is_never_written(task: Task, tmp_path: Path) -> None:
    """AZURE_STORAGE_CONNECTION_STRING's key appears in no journal file, log, output or
    message, even in the diagnostics of a failed last attempt; a line the command prints with
    it is stored redacted."""
    key = "c2VjcmV0LWFjY291bnQta2V5LWZvci10ZXN0cw=="
    secret = {
        "AZURE_STORAGE_CONNECTION_STRING": "DefaultEndpointsProtocol=https;AccountName=acct;"
        f"AccountKey={key};EndpointSuffix=core.windows.net"
    }
    dest = tmp_path / "dest"
    failing = sh(
        f"{SH_TASKKIT} step prepare -o 'part/*=file://{dest}/part/' -- "
        "sh -c 'mkdir -p part; echo p > part/p.txt'\n"
        "echo working; exit 4\n"
    )
    failed = task.run(failing, "-o", f"out/*=file://{dest}/out/", env=secret)
    assert failed.returncode == 4
    assert "diagnostics:" in task.log(1, "taskkit")
    assert key not in failed.stdout + failed.stderr

    printing = sh('echo "connecting with $AZURE_STORAGE_CONNECTION_STRING"\n')
    printed = task.run(printing, env=secret)
    assert printed.returncode == 0
    assert key not in printed.stderr
    assert task.log(2, "stdout") == "connecting with ***\n"
    assert task.attempt(2)["verdict"] == "success"
    for path in [*task.state_dir.rglob("*"), *dest.rglob("*"), *task.box.rglob("*")]:
        if path.is_file():
            assert key.encode() not in path.read_bytes(), path
