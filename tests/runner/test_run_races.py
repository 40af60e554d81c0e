"""taskkit/attempt.py ``_publish`` and ``_record``, taskkit/goal.py: attempts of one task that
run at the same time, as real ``python -m taskkit run`` processes (``runner_helpers.Task``).

Each attempt gets a working directory of its own (as on different nodes) and one published
DEST is shared. Commands mark their start in the test's box as ``started.<attempt>`` and
wait for ``go`` (or for each other), so which attempts overlap is decided by the test, never
by timing luck.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from runner_helpers import GATED_PUBLISH, Task, no_traceback, opened_task, q, sh, wait_for

from taskkit.transfer.upload_plan import MANIFEST_NAME

LOST = 204


@pytest.fixture
def task(tmp_path: Path) -> Iterator[Task]:
    with opened_task(tmp_path) as opened:
        yield opened


def gated(task: Task, body: str, gate: str = "go") -> list[str]:
    """A command that notes it started (``box/started.<attempt>``), waits for
    ``box/GATE.go`` (``task.release(GATE)``), then runs ``body``; the same text for every
    attempt of one work."""
    box = task.box
    return sh(
        f'touch {q(box)}/started."$TASKKIT_ATTEMPT"\n'
        "i=0\n"
        f"while [ ! -e {q(box / (gate + '.go'))} ]; do\n"
        "  i=$((i + 1)); [ $i -lt 3000 ] || exit 9; sleep 0.01\n"
        "done\n" + body
    )


def started(task: Task, count: int, procs: list[subprocess.Popen[str]]) -> None:
    """Wait until ``count`` commands have started (failing at once if a taskkit ended)."""

    def ready() -> bool:
        for proc in procs:
            if proc.poll() is not None:
                _, err = proc.communicate()
                pytest.fail(f"taskkit ended ({proc.returncode}) before its command started: {err}")
        return len(list(task.box.glob("started.*"))) >= count

    wait_for(ready, f"{count} commands to start")


def writes(label: str) -> str:
    return f"mkdir -p out\necho {label} > out/result.txt\n"


def test_of_concurrent_attempts_of_different_work_one_publishes_and_the_others_exit_204(
    task: Task, tmp_path: Path
) -> None:
    """Three works (three command texts) of one task inside their commands at once: exactly
    one exits 0 and is the work published; the others exit 204, "lost race", naming the
    publisher; the outcome is not theirs. A retry of a loser's work then decides afresh."""
    dest = tmp_path / "dest"
    options = ("--max-retries", "3", "-o", f"out/*.txt=file://{dest}/")
    commands = {label: gated(task, writes(label)) for label in ("red", "green", "blue")}
    procs: list[subprocess.Popen[str]] = []
    for label, command in commands.items():
        workdir = tmp_path / f"node-{label}"
        workdir.mkdir()
        procs.append(task.start(command, *options, workdir=workdir))
        started(task, len(procs), procs)  # each begins while the earlier ones run
    task.release("go")
    ended = [proc.communicate(timeout=60) for proc in procs]
    codes = [proc.returncode for proc in procs]
    assert sorted(codes) == [0, LOST, LOST], [err for _, err in ended]

    winner = list(commands)[codes.index(0)]
    outcome = task.outcome()
    assert outcome is not None
    assert (outcome["state"], outcome["work"]["command"][-1]) == ("success", commands[winner][-1])
    publisher = outcome["attempt"]
    assert (dest / "result.txt").read_text() == f"{winner}\n"
    assert json.loads((dest / MANIFEST_NAME).read_text())["task"]["attempt"] == publisher
    for (_, err), code in zip(ended, codes, strict=True):
        if code == LOST:
            assert f"lost race: attempt {publisher} published other work" in err, err
    reasons = [task.attempt(n)["reason"] for n in task.attempts()]
    assert sum("lost race" in r for r in reasons) == 2, reasons
    assert sum(r.startswith("lost race: attempt ") for r in reasons) == 2, reasons  # no prefix

    loser = list(commands)[codes.index(LOST)]
    retry = task.run(commands[loser], *options, workdir=tmp_path / f"node-{loser}")
    assert retry.returncode == 0, retry.stderr
    assert "starting afresh: the command changed" in retry.stderr
    assert (dest / "result.txt").read_text() == f"{loser}\n"


def test_a_loser_that_fails_does_not_replace_the_work_published_meanwhile(
    task: Task, tmp_path: Path
) -> None:
    """Work B starts while work A runs, A publishes, then B fails with a permanent code: B
    exits with its code, and the outcome stays A's success."""
    dest = tmp_path / "dest"
    options = ("--permanent-codes", "3", "-o", f"out/*.txt=file://{dest}/")
    winner = gated(task, writes("a"), gate="go-a")
    loser = gated(task, "exit 3\n", gate="go-b")
    procs = [task.start(winner, *options, workdir=tmp_path / "node-a")]
    started(task, 1, procs)
    procs.append(task.start(loser, *options, workdir=tmp_path / "node-b"))
    started(task, 2, procs)
    task.release("go-a")
    _, err = procs[0].communicate(timeout=60)
    assert procs[0].returncode == 0, err
    task.release("go-b")
    _, err = procs[1].communicate(timeout=60)
    assert procs[1].returncode == 3, err
    outcome = task.outcome()
    assert outcome is not None
    assert (outcome["state"], outcome["attempt"]) == ("success", 1)
    assert task.attempt(2)["verdict"] == "permanent"


def test_concurrent_attempts_of_one_work_exit_0_and_are_never_counted_as_reruns(
    task: Task, tmp_path: Path
) -> None:
    """Three copies of one work start one after the other while the earlier ones run: all
    exit 0, one publishes, and none calls itself "attempt 2 of 1 (a re-run ...)": running
    attempts are not retries Batch counted."""
    dest = tmp_path / "dest"
    command = gated(task, writes("same"))
    options = ("--max-retries", "0", "-o", f"out/*.txt=file://{dest}/")
    procs: list[subprocess.Popen[str]] = []
    for n in range(3):
        workdir = tmp_path / f"node-{n}"
        workdir.mkdir()
        procs.append(task.start(command, *options, workdir=workdir))
        started(task, n + 1, procs)
    task.release("go")
    ended = [proc.communicate(timeout=60) for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0, 0], [err for _, err in ended]
    for _, err in ended:
        assert "of 1 (a re-run" not in err, err
        assert "attempt 1 of 1 (the last)" in err, err
    assert sum("published the same work meanwhile" in err for _, err in ended) == 2
    assert task.attempts() == [1, 2, 3]
    assert "attempt 1 of 1 (the last), attempt 3 in the journal" in task.log(3, "taskkit")


def paused_publish(task: Task, gate: str, command: list[str], *options: str) -> Path:
    """``taskkit run`` of ``task`` started as a real process that pauses at ``gate``
    (``manifest`` or ``unpublish``, see tests/gated_publish_child.py) holding the publishing
    claim; the marker it touched (``marker.go`` lets it go on)."""
    marker = task.box / f"gate-{gate}"
    argv = [sys.executable, GATED_PUBLISH, gate, str(marker), "--"]
    argv += task.args(command, *options)[1:]
    proc = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=task.env, cwd=task.root
    )
    task._started.append(proc)
    wait_for(lambda: marker.exists() or proc.poll() is not None, f"the publish to reach {gate}")
    assert proc.poll() is None, proc.communicate()
    return marker


def taken_over(task: Task, by: int) -> None:
    """Another attempt (``by``) takes the claim over and records its success, as one does
    when the holder's heartbeat went stale (the holder frozen, or cut off)."""
    outcome = task.outcome()
    assert outcome is not None
    assert outcome["state"] == "publishing", outcome
    outcome.update(state="success", attempt=by, replaced=None)
    (task.journal / "outcome.json").write_text(json.dumps(outcome))


def resumed(task: Task, marker: Path) -> subprocess.CompletedProcess[str]:
    proc = task._started[-1]
    marker.with_name(marker.name + ".go").touch()
    out, err = proc.communicate(timeout=60)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def test_a_holder_that_lost_the_claim_while_paused_writes_no_manifest_and_exits_204(
    task: Task, tmp_path: Path
) -> None:
    """The claim holder pauses before its manifest write while another attempt takes the
    claim over and publishes; resumed, it leaves the winner's manifest as it is and exits 204
    naming the new holder. Its heartbeat kept beating during the upload."""
    dest = tmp_path / "dest"
    options = ("--log-interval", "0.2s", "-o", f"out/*.txt=file://{dest}/")
    marker = paused_publish(task, "manifest", sh(writes("late")), *options)
    beat = task.attempt(1)["heartbeat"]
    wait_for(lambda: task.attempt(1)["heartbeat"] != beat, "a heartbeat during the upload")
    taken_over(task, by=2)
    winner = b'{"written by": "attempt 2"}\n'
    (dest / MANIFEST_NAME).write_bytes(winner)
    ended = no_traceback(resumed(task, marker))
    assert (dest / MANIFEST_NAME).read_bytes() == winner
    assert ended.returncode == LOST, ended.stderr
    assert "lost the publishing claim to attempt 2" in ended.stderr, ended.stderr
    outcome = task.outcome()
    assert outcome is not None
    assert (outcome["state"], outcome["attempt"]) == ("success", 2)


def test_a_holder_that_lost_the_claim_while_paused_unpublishes_nothing(
    task: Task, tmp_path: Path
) -> None:
    """A republish of changed outputs pauses before it deletes the published manifest; the
    claim is taken over meanwhile: resumed, it deletes no manifest, sends no file, exits 204."""
    dest = tmp_path / "dest"
    options = ("-o", f"out/*.txt=file://{dest}/")
    first = task.run(sh(writes("one")), *options)
    assert first.returncode == 0, first.stderr
    published = (dest / MANIFEST_NAME).read_bytes()
    marker = paused_publish(task, "unpublish", sh(writes("two")), *options)
    taken_over(task, by=3)
    ended = no_traceback(resumed(task, marker))
    assert (dest / MANIFEST_NAME).read_bytes() == published
    assert (dest / "result.txt").read_text() == "one\n"
    assert ended.returncode == LOST, ended.stderr
    assert "lost the publishing claim to attempt 3" in ended.stderr, ended.stderr


def test_an_attempt_does_not_publish_files_of_other_work_run_beside_it(
    task: Task, tmp_path: Path
) -> None:
    """Two works in one working directory at once: the one that ends first while the other
    runs exits 204 publishing nothing; the other, ending after, finds the first one's file
    among its matches and exits 204 too; their retries each publish their work's files only."""
    dest = tmp_path / "dest"
    options = ("--max-retries", "3", "-o", f"out/*.txt=file://{dest}/")
    first = sh("mkdir -p out\necho w1 > out/w1.txt\n" + task.block("a"))
    second = sh("mkdir -p out\necho w2 > out/w2.txt\n")
    running = task.start(first, *options)
    task.wait_started("a", running)

    beside = task.run(second, *options)
    assert beside.returncode == LOST, beside.stderr
    assert (
        "attempt 1 of other work is running in this working directory; not publishing a mixed set"
        in beside.stderr
    ), beside.stderr
    assert not (dest / MANIFEST_NAME).exists()

    task.release("a")
    _, err = running.communicate(timeout=60)
    assert running.returncode == LOST, err
    assert "out/w2.txt: an output of other work" in err, err
    assert "not publishing a mixed set" in err, err
    assert not (dest / MANIFEST_NAME).exists()

    for command, mine in ((first, "w1.txt"), (second, "w2.txt")):
        retry = task.run(command, *options)
        assert retry.returncode == 0, retry.stderr
        names = [f["name"] for f in json.loads((dest / MANIFEST_NAME).read_text())["files"]]
        assert names == [mine], retry.stderr


def test_a_holder_that_lost_the_claim_before_its_upload_overwrites_no_file(
    task: Task, tmp_path: Path
) -> None:
    """The claim holder is paused before its first upload sends anything, another attempt
    takes the claim over and publishes meanwhile: resumed, it sends no file over the winner's
    and writes no manifest, and exits 204."""
    dest = tmp_path / "dest"
    options = ("-o", f"out/*.txt=file://{dest}/")
    marker = paused_publish(task, "unpublish", sh(writes("late")), *options)
    taken_over(task, by=2)
    dest.mkdir()
    (dest / "result.txt").write_text("winner\n")
    (dest / MANIFEST_NAME).write_text("the winner's manifest\n")
    ended = no_traceback(resumed(task, marker))
    assert (dest / "result.txt").read_text() == "winner\n"
    assert (dest / MANIFEST_NAME).read_text() == "the winner's manifest\n"
    assert ended.returncode == LOST, ended.stderr
    assert "lost the publishing claim to attempt 2" in ended.stderr, ended.stderr
