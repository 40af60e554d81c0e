"""taskkit/attempt.py: an attempt ends in order whatever stops it, and says what it leaves out."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from runner_helpers import SH_TASKKIT, TASKKIT, Task, interrupted_publish, q, sh

from taskkit.runner.command import SignalsDeferred, Stopped, signals_held


@pytest.fixture
def task(tmp_path: Path) -> Iterator[Task]:
    opened = Task(tmp_path)
    try:
        yield opened
    finally:
        opened.close()


def test_a_signal_while_taskkit_works_raises_stopped_and_the_handlers_come_back() -> None:
    """SIGTERM inside an attempt's acting block is Stopped (not the default death); the
    handlers are as before once the attempt's block ends."""
    before = signal.getsignal(signal.SIGTERM)
    with SignalsDeferred() as signals, pytest.raises(Stopped) as caught, signals.acting():
        os.kill(os.getpid(), signal.SIGTERM)
    assert caught.value.name == "SIGTERM"
    assert signal.getsignal(signal.SIGTERM) is before


def test_signals_held_arrive_where_the_block_ends() -> None:
    """Within the acting block, a SIGTERM inside signals_held() does not cut the block:
    Stopped is raised where it ends, once; the handlers come back."""
    before = signal.getsignal(signal.SIGTERM)
    done: list[str] = []

    def held_then_on() -> None:
        with signals_held():
            os.kill(os.getpid(), signal.SIGTERM)
            done.append("rest of the block")
        done.append("after the block")

    with SignalsDeferred() as signals, pytest.raises(Stopped), signals.acting():
        held_then_on()
    assert done == ["rest of the block"]
    assert signal.getsignal(signal.SIGTERM) is before


def test_a_signal_noted_before_the_attempt_acts_stops_it_where_it_begins() -> None:
    """A SIGTERM before the acting block (noted, not acted on) is Stopped as the block begins;
    one after the end is settled is noted and changes nothing."""
    with SignalsDeferred() as signals:
        os.kill(os.getpid(), signal.SIGTERM)
        assert signals.caught == [signal.SIGTERM]
        with pytest.raises(Stopped), signals.acting():
            pytest.fail("the block ran")
        assert (signals.caught, signals.acted) == ([], True)
    with SignalsDeferred() as signals:
        with signals.acting():
            signals.settle()
            os.kill(os.getpid(), signal.SIGINT)
            settled = "not cut short"
        assert (settled, signals.caught) == ("not cut short", [signal.SIGINT])


SECOND_SIGNAL = """
import os, signal, sys
from taskkit.runner.command import SignalsDeferred, Stopped, signals_held
first, second = (getattr(signal, name) for name in sys.argv[1:3])
where = sys.argv[3]
with SignalsDeferred() as signals:
    try:
        with signals.acting():
            if where == "settled":
                signals.settle()
            if where == "held":
                with signals_held():
                    os.kill(os.getpid(), first)
                    print("held", flush=True)
                    os.kill(os.getpid(), second)
                    print("survived the second", flush=True)
            os.kill(os.getpid(), first)
            print("went on", flush=True)
    except Stopped:
        print("stopped", flush=True)
    os.kill(os.getpid(), second)
    print("survived the second", flush=True)
"""


@pytest.mark.parametrize("where", ["acting", "settled", "held"])
@pytest.mark.parametrize(("first", "second"), [("SIGTERM", "SIGINT"), ("SIGINT", "SIGINT")])
def test_a_second_signal_ends_the_process_at_once(first: str, second: str, where: str) -> None:
    """After a first signal (acted on: Stopped; noted once the end is settled; held for the
    block's end), any other SIGTERM or SIGINT ends the process as the default would, wherever
    it comes."""
    done = subprocess.run(
        [sys.executable, "-c", SECOND_SIGNAL, first, second, where],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == -getattr(signal, second), done.stderr
    assert done.stdout == {"acting": "stopped\n", "settled": "went on\n", "held": "held\n"}[where]


def test_a_missing_working_directory_is_made(task: Task) -> None:
    """--workdir that does not exist yet is created, not reported as 'command not found'."""
    fresh = task.root / "not-yet" / "wd"
    done = task.run(["sh", "-c", "pwd > here.txt"], workdir=fresh)
    assert done.returncode == 0, done.stderr
    assert (fresh / "here.txt").read_text().strip() == str(fresh)


def test_a_working_directory_that_is_a_file_is_retryable_203(task: Task) -> None:
    """A node-local problem is retryable and never recorded as the task's permanent failure."""
    blocker = task.root / "a-file"
    blocker.write_text("x")
    done = task.run(["true"], "--max-retries", "2", workdir=blocker)
    assert done.returncode == 203, done.stderr
    assert task.outcome() is None
    assert task.attempt(1)["verdict"] == "retryable"


def test_a_step_runs_where_it_is_called(task: Task) -> None:
    """'cd sub && taskkit step ...' runs the step and finds its outputs in sub/."""
    results = task.root / "results"
    script = (
        "mkdir -p sub && cd sub && "
        f"{SH_TASKKIT} step s1 -o 'o.txt=file://{results}/' -- "
        "sh -c 'pwd > o.txt'"
    )
    done = task.run(["sh", "-c", script])
    assert done.returncode == 0, done.stderr
    assert (results / "o.txt").read_text().strip() == str(task.workdir / "sub")


def test_allow_empty_publishes_an_empty_output(task: Task) -> None:
    """Without --allow-empty an output that matches nothing is 201; with it, an empty set."""
    dest = task.root / "results"
    refused = task.run(["true"], "-o", f"out/**=file://{dest}/")
    assert refused.returncode == 201, refused.stderr
    other = Task(task.root, task="task-2")
    done = other.run(["true"], "-o", f"out/**=file://{dest}/", "--allow-empty")
    assert done.returncode == 0, done.stderr
    assert json.loads((dest / "_taskkit_manifest.json").read_text())["files"] == []


def test_files_the_outputs_leave_out_are_named(task: Task) -> None:
    """A link out of the working directory is not uploaded, and the run says so."""
    dest = task.root / "results"
    command = sh(f"mkdir -p out && echo x > out/a.txt && ln -sf {q(task.root)}/outside out/link")
    (task.root / "outside").write_text("secret-ish")
    done = task.run(command, "-o", f"out/**=file://{dest}/")
    assert done.returncode == 0, done.stderr
    assert "not uploading 'out/link'" in done.stderr
    assert not (dest / "link").exists()


def live_claim(task: Task, holder_pid: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """The record of a live attempt 99 of other work (``holder_pid`` on this host), and its
    publishing claim: what another copy of the task, busy publishing, leaves in the journal."""
    from taskkit.runner.journal import host_identity, now

    start = Path(f"/proc/{holder_pid}/stat").read_text().rsplit(")", 1)[-1].split()[19]
    holder = {
        "number": 99,
        "host": host_identity(),
        "pid": holder_pid,
        "pid_start": start,
        "fingerprint": "other",
        "started": now(),
        "heartbeat": now(),
        "interval": 30.0,
    }
    claim = {"state": "publishing", "fingerprint": "other", "attempt": 99, "at": now()}
    return holder, claim


def test_sigterm_while_taskkit_waits_to_publish_ends_the_attempt_in_order(task: Task) -> None:
    """A live attempt of other work holds the publishing claim; SIGTERM while this one waits
    for it gives exit 143, a recorded end, logs, and no claim of this attempt left behind."""
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        journal = task.state_dir / task.job / task.task
        holder, claim = live_claim(task, sleeper.pid)
        command = sh(
            f"mkdir -p {q(journal / 'attempts')} && "
            f"printf %s {q(json.dumps(holder))} > {q(journal / 'attempts' / '00099.json')} && "
            f"printf %s {q(json.dumps(claim))} > {q(journal / 'outcome.json')} && "
            f"touch {q(task.box / 'claimed.started')}"
        )
        proc = task.start(command, "--max-retries", "3")
        task.wait_started("claimed", proc)  # the command is done; taskkit is about to wait
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 143, err
        record = task.attempt(1)
        assert (record["exit_code"], record["verdict"]) == (143, "retryable")
        outcome = json.loads((journal / "outcome.json").read_text())
        assert (outcome["state"], outcome["attempt"]) == ("publishing", 99)
        assert "attempt 1: retryable" in task.log(1, "taskkit")
    finally:
        sleeper.kill()
        sleeper.wait()


def test_sigterm_while_taskkit_waits_before_its_attempt_ends_it_in_order(task: Task) -> None:
    """A live attempt of other work holds the publishing claim when taskkit starts: SIGTERM
    while it waits, before its own attempt begins, gives one line and 143; no attempt is
    recorded and the claim is left to its holder."""
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        journal = task.state_dir / task.job / task.task
        holder, claim = live_claim(task, sleeper.pid)
        (journal / "attempts").mkdir(parents=True)
        (journal / "attempts" / "00099.json").write_text(json.dumps(holder))
        (journal / "outcome.json").write_text(json.dumps(claim))
        proc = task.start(sh(task.counted("cmd")), "--max-retries", "3")
        assert proc.stderr is not None
        line = proc.stderr.readline()
        assert line.endswith("; waiting for it\n"), line
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 143, err
        assert err == "taskkit: error: terminated (SIGTERM)\n"
        assert sorted(p.name for p in (journal / "attempts").iterdir()) == ["00099.json"]
        assert json.loads((journal / "outcome.json").read_text()) == claim
        assert task.count("cmd") == 0
    finally:
        sleeper.kill()
        sleeper.wait()


PUBLISH_GATES = ["phase", "upload", "uploaded", "claim"]


def publishing(task: Task) -> tuple[list[str], tuple[str, ...]]:
    """A command counting its runs and writing out/a.txt, and its options to publish it."""
    command = sh(f"{task.counted('cmd')}\nmkdir -p out\necho alpha > out/a.txt\n")
    return command, ("--max-retries", "3", "-o", f"out/**=file://{task.root / 'dest'}/")


@pytest.mark.parametrize("gate", PUBLISH_GATES)
def test_sigterm_anywhere_in_the_publish_gives_the_claim_back(task: Task, gate: str) -> None:
    """SIGTERM at any moment from the publishing claim to the success record (the phase's
    log flush, the upload, after it, the claim's own write): the attempt ends 143, no claim
    is left behind, status shows no outcome; the next attempt publishes."""
    command, options = publishing(task)
    stopped = interrupted_publish(task, gate, signal.SIGTERM, command, *options)
    assert stopped.returncode == 143, stopped.stderr
    assert task.outcome() is None
    assert task.attempt(1)["exit_code"] == 143
    assert task.status()["outcome"] is None
    again = task.run(command, *options)
    assert again.returncode == 0, again.stderr
    assert (task.count("cmd"), task.outcome()["attempt"]) == (2, 2)  # type: ignore[index]


@pytest.mark.parametrize("gate", ["phase", "uploaded"])
def test_a_claim_whose_holder_died_is_shown_stale(task: Task, gate: str) -> None:
    """kill -9 while publishing leaves the claim: status shows it as stale (interrupted), not
    as an outcome, in the task view and in the job's table; the next attempt takes it over."""
    command, options = publishing(task)
    killed = interrupted_publish(task, gate, signal.SIGKILL, command, *options)
    assert killed.returncode == -signal.SIGKILL
    assert task.outcome()["state"] == "publishing"  # type: ignore[index]
    shown = task.status()["outcome"]
    assert (shown["stale"], shown["replaced"]) == ("interrupted", None)
    base = [*TASKKIT, "status", "--state", task.state, "--job-id", task.job]
    text = task.taskkit([*base, "--task-id", task.task]).stdout.splitlines()
    assert text[1] == "outcome: none yet", text
    assert text[2].startswith("  stale publishing claim of attempt 1 at ")
    assert text[2].endswith(
        ", publishing: that attempt was interrupted; the next attempt takes it over"
    )
    [row] = json.loads(task.taskkit([*base, "--json"]).stdout)["tasks"]
    assert (row["outcome"], row["exit_code"]) == ("open", None)
    assert row["reason"] == "stale publishing claim of attempt 1 (interrupted)"
    again = task.run(command, *options)
    assert again.returncode == 0, again.stderr
    assert task.outcome()["state"] == "success"  # type: ignore[index]


@pytest.mark.parametrize("name", ["TERM", "INT"])
@pytest.mark.parametrize("code", [0, 3])
def test_a_signal_once_the_end_is_decided_leaves_the_end_as_recorded(
    task: Task, name: str, code: int
) -> None:
    """SIGTERM or SIGINT after the attempt's end is decided (its success published, or its
    failure classified): the end is recorded as decided, taskkit exits with its code, and one
    warning says the signal came and changed nothing; status agrees with the exit."""
    command = sh(f"{task.counted('cmd')}\nmkdir -p out\necho alpha > out/a.txt\nexit {code}\n")
    options = ("--max-retries", "3", "-o", f"out/**=file://{task.root / 'dest'}/")
    done = interrupted_publish(task, f"ended:{name}", signal.SIGTERM, command, *options)
    assert done.returncode == code, done.stderr
    record = task.attempt(1)
    verdict = "success" if code == 0 else "retryable"
    assert (record["exit_code"], record["verdict"]) == (code, verdict)
    assert task.status()["attempts"][0]["state"] == "ended"
    warning = f"taskkit: warning: received SIG{name} as attempt 1 ended: its end ({verdict}, exit"
    assert [ln for ln in done.stderr.splitlines() if "received SIG" in ln] == [
        f"{warning} {code}) is recorded and stands"
    ]
    assert (task.outcome() or {}).get("state") == ("success" if code == 0 else None)
    again = task.run(command, *options)
    assert again.returncode == code, again.stderr
    assert task.count("cmd") == (1 if code == 0 else 2)  # a success is not run again


@pytest.mark.parametrize("name", ["TERM", "INT"])
def test_a_signal_as_the_success_is_written_leaves_the_success(task: Task, name: str) -> None:
    """SIGTERM or SIGINT as the success is written in the claim's place (before the write
    returns): the success stands, the attempt ends 0 and reads as a success, one warning."""
    command, options = publishing(task)
    done = interrupted_publish(task, f"recorded:{name}", signal.SIGTERM, command, *options)
    assert done.returncode == 0, done.stderr
    assert task.outcome()["state"] == "success"  # type: ignore[index]
    record = task.attempt(1)
    assert (record["exit_code"], record["verdict"]) == (0, "success")
    assert f"received SIG{name} as attempt 1 ended: its end (success, exit 0)" in done.stderr


def test_a_second_signal_once_the_end_is_decided_ends_the_process_at_once(task: Task) -> None:
    """Two SIGTERMs after the success is published: the second ends the process as the default
    would; the success stands, the attempt shows interrupted, the next run exits 0 unrun."""
    command, options = publishing(task)
    done = interrupted_publish(task, "ended-twice", signal.SIGTERM, command, *options)
    assert done.returncode == -signal.SIGTERM, done.stderr
    assert task.outcome()["state"] == "success"  # type: ignore[index]
    again = task.run(command, *options)
    assert again.returncode == 0, again.stderr
    assert task.count("cmd") == 1


@pytest.mark.parametrize(("name", "code"), [("TERM", 143), ("INT", 130)])
def test_a_signal_as_the_attempt_begins_stops_it_before_its_command(
    task: Task, name: str, code: int
) -> None:
    """SIGTERM or SIGINT right after the attempt's record is written, before taskkit acts on
    signals itself: the attempt ends in order (143, 130, its end recorded) and its command
    never runs."""
    command, options = publishing(task)
    done = interrupted_publish(task, f"begun:{name}", signal.SIGTERM, command, *options)
    assert done.returncode == code, done.stderr
    record = task.attempt(1)
    assert (record["exit_code"], record["verdict"]) == (code, "retryable")
    assert f"taskkit was stopped by SIG{name}" in record["reason"]
    assert task.count("cmd") == 0
    assert "received SIG" not in done.stderr
