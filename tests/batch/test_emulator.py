"""The emulator runs task objects as Azure Batch runs them: each rule of the service pinned by a
job of small shell tasks, run in real processes on emulated nodes under tmp_path.

Waits are never guesses: a task that must be running when something happens to it blocks on a
file the test creates, and the tests read what happened from the report and from the files the
tasks wrote.
"""

from __future__ import annotations

import json
import os
import shlex
import time
from pathlib import Path
from typing import Any

import pytest

from taskkit.batch.chaos import Chaos
from taskkit.batch.emulator import Emulator
from taskkit.batch.report import EmulatorReport, Event
from taskkit.batch.tasks import BatchTask, read_tasks
from taskkit.exceptions import DataError, TransientError, UsageError


def tasks(*objects: dict[str, Any]) -> tuple[BatchTask, ...]:
    return read_tasks(json.dumps(list(objects)), "tasks.json").tasks


def sh(script: str, **fields: Any) -> dict[str, Any]:
    """A task object running ``script`` with /bin/sh; ``id`` and other fields as given."""
    return {"commandLine": "/bin/sh -c " + shlex.quote(script), **fields}


def run(tmp_path: Path, objects: list[dict[str, Any]], **options: Any) -> EmulatorReport:
    env = {"PATH": os.environ["PATH"], "BOX": str(tmp_path / "box")}
    (tmp_path / "box").mkdir(parents=True, exist_ok=True)
    emulator = Emulator(tasks(*objects), root=tmp_path / "dir", environ=env, **options)
    return emulator.run()


def task_of(report: EmulatorReport, task_id: str) -> Any:
    return next(t for t in report.tasks if t.id == task_id)


def test_a_command_line_runs_without_a_shell_split_as_batch_splits_it(tmp_path: Path) -> None:
    """Quotes group words and nothing is expanded: ``$HOME`` and ``*`` reach the program as
    written, and ``&&`` is a plain word."""
    report = run(tmp_path, [{"id": "a", "commandLine": "echo $HOME 'x  y' * && true"}])
    stdout = tmp_path / "dir/nodes"
    out = next(stdout.rglob("a/stdout.txt")).read_text()
    assert report.ok
    assert out == "$HOME x  y * && true\n"


def test_a_task_sees_the_variables_and_folders_of_a_batch_node(tmp_path: Path) -> None:
    """AZ_BATCH_* name the task's own folders on its node, the working folder is the cwd, and
    the caller's TASKKIT_LOCAL never reaches the task."""
    script = (
        'printf "%s\\n" "$AZ_BATCH_JOB_ID" "$AZ_BATCH_TASK_ID" "$AZ_BATCH_NODE_ID" "$PWD" '
        '"$AZ_BATCH_TASK_WORKING_DIR" "$AZ_BATCH_NODE_SHARED_DIR" "$TASKKIT_STATE" '
        '"${TASKKIT_LOCAL:-unset}" > "$BOX/env"; echo err >&2'
    )
    report = run(tmp_path, [sh(script, id="t-1")], job_id="job_9", nodes=1)
    job, task, node, cwd, wd, shared, state, local = (
        (tmp_path / "box/env").read_text().split("\n")[:8]
    )
    task_dir = tmp_path / "dir/nodes/node-1/node/workitems/job_9/job-1/t-1"
    assert (job, task, node, local) == ("job_9", "t-1", "node-1", "unset")
    assert cwd == wd == str(task_dir / "wd")
    assert shared == str(tmp_path / "dir/nodes/node-1/node/shared")
    assert state == "file://" + str(tmp_path / "dir/state")
    assert (task_dir / "stderr.txt").read_text() == "err\n"
    assert report.ok


def test_environment_settings_reach_the_task_and_win_over_the_callers(tmp_path: Path) -> None:
    """environmentSettings are set on top of the environment the job starts from."""
    settings = [{"name": "BOX", "value": str(tmp_path / "other")}, {"name": "X", "value": "a b"}]
    (tmp_path / "other").mkdir()
    run(tmp_path, [sh('echo "$X" > "$BOX/x"', id="a", environmentSettings=settings)])
    assert (tmp_path / "other/x").read_text() == "a b\n"


def test_a_failing_task_is_retried_up_to_its_retry_count_then_fails(tmp_path: Path) -> None:
    """maxTaskRetryCount 2: three attempts, then the task completes failed with the last
    exit code; the report keeps each attempt."""
    report = run(
        tmp_path, [sh('echo x >> "$BOX/n"; exit 3', id="a", constraints={"maxTaskRetryCount": 2})]
    )
    task = task_of(report, "a")
    assert (tmp_path / "box/n").read_text().count("x") == 3
    assert (task.state, task.exit_code, task.retries) == ("failed", 3, 2)
    assert [a.retry for a in task.attempts] == [0, 1, 2]
    assert report.exit_code == 1


def test_unlimited_retries_run_until_the_task_succeeds(tmp_path: Path) -> None:
    """maxTaskRetryCount -1: retried until exit 0."""
    script = 'echo x >> "$BOX/n"; [ "$(wc -l < "$BOX/n")" -ge 5 ]'
    report = run(tmp_path, [sh(script, id="a", constraints={"maxTaskRetryCount": -1})])
    assert task_of(report, "a").retries == 4
    assert report.ok


def test_a_retry_on_the_same_node_finds_its_old_working_directory(tmp_path: Path) -> None:
    """One node: the second attempt reads what the first left in its working folder."""
    script = "if [ -e left ]; then exit 0; fi; touch left; exit 1"
    report = run(tmp_path, [sh(script, id="a", constraints={"maxTaskRetryCount": 1})], nodes=1)
    assert task_of(report, "a").retries == 1
    assert report.ok


def test_output_files_keep_every_attempts_output(tmp_path: Path) -> None:
    """stdout.txt is appended attempt after attempt, as on a node reusing the task folder."""
    run(tmp_path, [sh("echo try; exit 1", id="a", constraints={"maxTaskRetryCount": 2})], nodes=1)
    out = next((tmp_path / "dir").rglob("a/stdout.txt")).read_text()
    assert out == "try\ntry\ntry\n"


def test_the_wall_clock_completes_the_task_as_failed_without_a_retry(tmp_path: Path) -> None:
    """maxWallClockTime stops a running task (SIGTERM) and no retry follows, whatever the
    retry count."""
    started = time.monotonic()
    report = run(
        tmp_path,
        [
            sh(
                'echo x >> "$BOX/n"; exec sleep 30',
                id="a",
                constraints={"maxTaskRetryCount": 3, "maxWallClockTime": "PT0.5S"},
            )
        ],
    )
    task = task_of(report, "a")
    assert time.monotonic() - started < 10
    assert (task.state, task.retries, len(task.attempts)) == ("failed", 0, 1)
    assert task.attempts[0].wall_clock
    assert task.exit_code == 143
    assert (tmp_path / "box/n").read_text() == "x\n"


def test_a_command_that_cannot_start_fails_at_once_without_a_retry(tmp_path: Path) -> None:
    """A program that is not there is Batch's pre-processing error: not retried."""
    report = run(
        tmp_path,
        [
            {
                "id": "a",
                "commandLine": "no-such-program-xyz",
                "constraints": {"maxTaskRetryCount": 5},
            }
        ],
    )
    task = task_of(report, "a")
    assert (task.state, task.exit_code, len(task.attempts)) == ("failed", None, 1)
    assert "cannot start" in (task.note or "")


def test_a_dependent_task_waits_for_its_dependencies(tmp_path: Path) -> None:
    """dependsOn (taskIds and taskIdRanges): the dependent starts after every dependency ended,
    even with free slots."""
    objects = [
        sh('sleep 0.3; echo "$AZ_BATCH_TASK_ID" >> "$BOX/order"', id=str(n)) for n in (1, 2, 3)
    ] + [
        sh(
            'echo last >> "$BOX/order"',
            id="z",
            dependsOn={"taskIds": ["3"], "taskIdRanges": [{"start": 1, "end": 2}]},
        )
    ]
    report = run(tmp_path, objects, nodes=2, slots=4)
    assert report.ok
    assert (tmp_path / "box/order").read_text().splitlines()[-1] == "last"


def test_a_failed_dependency_blocks_its_dependents_which_never_run(tmp_path: Path) -> None:
    """Batch's default after a failure is block: the dependent and its own dependents never
    start, and the job exits non-zero naming them."""
    objects = [
        sh("exit 2", id="a"),
        sh('touch "$BOX/b"', id="b", dependsOn={"taskIds": ["a"]}),
        sh('touch "$BOX/c"', id="c", dependsOn={"taskIds": ["b"]}),
    ]
    report = run(tmp_path, objects)
    assert [t.state for t in report.tasks] == ["failed", "blocked", "blocked"]
    assert not (tmp_path / "box/b").exists()
    assert not (tmp_path / "box/c").exists()
    assert not any(t.attempts for t in report.tasks[1:])


def test_exit_conditions_choose_the_dependency_action(tmp_path: Path) -> None:
    """An exit code mapped to satisfy lets dependents run after a failure; exit 0 mapped to
    block blocks them; ranges and default are read in Batch's order."""
    satisfy = {"exitOptions": {"dependencyAction": "satisfy"}}
    block = {"exitOptions": {"dependencyAction": "block"}}
    objects = [
        sh(
            "exit 7",
            id="a",
            exitConditions={
                "exitCodeRanges": [{"start": 5, "end": 9, **satisfy}],
                "default": block["exitOptions"],
            },
        ),
        sh("exit 0", id="b", exitConditions={"exitCodes": [{"code": 0, **block}]}),
        sh("exit 4", id="c", exitConditions={"default": satisfy["exitOptions"]}),
        sh('touch "$BOX/after-a"', id="da", dependsOn={"taskIds": ["a"]}),
        sh('touch "$BOX/after-b"', id="db", dependsOn={"taskIds": ["b"]}),
        sh('touch "$BOX/after-c"', id="dc", dependsOn={"taskIds": ["c"]}),
    ]
    report = run(tmp_path, objects)
    states = {t.id: t.state for t in report.tasks}
    assert states == {
        "a": "failed",
        "b": "succeeded",
        "c": "failed",
        "da": "succeeded",
        "db": "blocked",
        "dc": "succeeded",
    }


def _job_action_job(tmp_path: Path, action: str) -> list[dict[str, Any]]:
    exit_conditions = {"exitCodes": [{"code": 3, "exitOptions": {"jobAction": action}}]}
    return [
        sh('touch "$BOX/long-started"; exec sleep 30', id="long"),
        sh(
            'while [ ! -e "$BOX/long-started" ]; do sleep 0.01; done; exit 3',
            id="bad",
            exitConditions=exit_conditions,
        ),
        sh('touch "$BOX/later"', id="later", dependsOn={"taskIds": ["bad"]}),
        sh('touch "$BOX/queued"', id="queued"),
    ]


def test_job_action_terminate_is_honoured_only_when_the_job_opted_in(tmp_path: Path) -> None:
    """performExitOptionsJobAction: the failure terminates the job; the running task ends
    failed and nothing more starts. With noaction (the default) the job goes on."""
    report = run(
        tmp_path / "on",
        _job_action_job(tmp_path / "on", "terminate"),
        nodes=1,
        slots=2,
        on_task_failure="performExitOptionsJobAction",
    )
    states = {t.id: t.state for t in report.tasks}
    assert report.terminated == "TaskFailed"
    assert states == {"long": "failed", "bad": "failed", "later": "blocked", "queued": "not-run"}
    assert not (tmp_path / "on/box/queued").exists()

    quick = [o for o in _job_action_job(tmp_path / "off", "terminate") if o["id"] != "long"]
    quick.append(sh('touch "$BOX/long-started"', id="long"))
    with pytest.raises(DataError, match="Batch refuses"):
        run(tmp_path / "off", quick, nodes=1, slots=2)  # an explicit jobAction needs opting in
    for task in quick:
        task.pop("exitConditions", None)  # the default jobAction: terminate, ignored here
    report = run(tmp_path / "off", quick, nodes=1, slots=2)
    assert report.terminated is None
    assert task_of(report, "bad").state == "failed"
    assert task_of(report, "queued").state == "succeeded"


def test_job_action_disable_requeues_running_tasks_and_starts_nothing(tmp_path: Path) -> None:
    """disable: the running task is stopped and left queued (not run), nothing else starts."""
    report = run(
        tmp_path,
        _job_action_job(tmp_path, "disable"),
        nodes=1,
        slots=2,
        on_task_failure="performExitOptionsJobAction",
    )
    states = {t.id: t.state for t in report.tasks}
    assert report.terminated == "disabled"
    assert states == {"long": "not-run", "bad": "failed", "later": "blocked", "queued": "not-run"}


def test_a_killed_attempt_is_requeued_without_counting_as_a_retry(tmp_path: Path) -> None:
    """kill=1 with limit=2: two attempts are SIGKILLed mid-run and the third, unharmed,
    succeeds, although the task allows no retry."""
    script = 'echo x >> "$BOX/n"; sleep 0.5'
    report = run(tmp_path, [sh(script, id="a")], chaos=Chaos(kill=1.0, within=0.2, limit=2))
    task = task_of(report, "a")
    assert report.ok
    assert (task.retries, task.requeues) == (0, 2)
    assert [a.chaos for a in task.attempts] == ["kill", "kill", None]
    assert [a.exit_code for a in task.attempts][:2] == [137, 137]
    assert report.kills == 2


def test_preemption_wipes_the_node_shared_folder_and_comes_back_as_a_new_node(
    tmp_path: Path,
) -> None:
    """preempt: the attempt's node loses its folders (the shared folder too) and returns with a
    new id; the requeued attempt starts on a clean node. The preemption lands within 0.2 s: on a
    loaded machine it can come before the first attempt has left its mark, which proves
    nothing, so the job is run again (three times at most) until one does."""
    script = (
        'if [ -e "$AZ_BATCH_NODE_SHARED_DIR/mark" ]; then exit 9; fi; '
        'touch "$AZ_BATCH_NODE_SHARED_DIR/mark"; echo "$AZ_BATCH_NODE_ID" >> "$BOX/nodes"; '
        "sleep 0.5"
    )
    seen = []
    for round_ in range(3):
        where = tmp_path / f"round{round_}"
        where.mkdir()
        report = run(
            where, [sh(script, id="a")], nodes=1, chaos=Chaos(preempt=1.0, within=0.2, limit=1)
        )
        task = task_of(report, "a")
        assert report.ok  # the second attempt never found the first one's mark
        assert report.preemptions == 1
        assert [a.chaos for a in task.attempts] == ["preempt", None]
        nodes = (where / "box/nodes").read_text().split()
        assert nodes in (["node-1-r1"], ["node-1", "node-1-r1"])
        seen.append(nodes)
        if nodes == ["node-1", "node-1-r1"]:
            break
    assert seen[-1] == ["node-1", "node-1-r1"], seen


def test_preemption_requeues_every_attempt_of_the_node(tmp_path: Path) -> None:
    """A node going away takes all its running attempts with it, not only the one struck."""
    objects = [sh('echo "$AZ_BATCH_TASK_ID" >> "$BOX/s"; sleep 0.6', id=i) for i in ("a", "b")]
    report = run(tmp_path, objects, nodes=1, slots=2, chaos=Chaos(preempt=1.0, within=0.3, limit=1))
    assert report.ok
    assert all(any(a.chaos == "preempt" for a in t.attempts) for t in report.tasks)
    assert sum(t.requeues for t in report.tasks) > report.preemptions


def test_chaos_decisions_are_the_same_for_the_same_seed() -> None:
    """The strike of a launch depends on the seed, the task and the launch number only."""
    chaos = Chaos(kill=0.3, preempt=0.2, within=2.0)
    first = [chaos.strike(5, f"t{i}", n, 0, []) for i in range(50) for n in (1, 2)]
    again = [chaos.strike(5, f"t{i}", n, 0, []) for i in range(50) for n in (1, 2)]
    other = [chaos.strike(6, f"t{i}", n, 0, []) for i in range(50) for n in (1, 2)]
    assert first == again != other
    kinds = {s.kind for s in first if s}
    assert kinds == {"kill", "preempt"}
    assert all(0 <= s.after < 2.0 for s in first if s)
    assert chaos.strike(5, "t1", 1, chaos.limit, []) is None


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        ("kill=2", "kill is a chance"),
        ("kill=0.7,preempt=0.5", "at most 1"),
        ("boom=1", "'boom=1' is not one of"),
        ("kill", "'kill' is not one of"),
        ("kill=x", "not a number"),
        ("kill=nan", "not a number"),
        ("within=0", "within"),
        ("limit=1.5", "whole number"),
        ("kill=0.1,kill=0.2", "given twice"),
    ],
)
def test_a_bad_chaos_spec_is_refused_naming_the_part(spec: str, words: str) -> None:
    """Each malformed --chaos spec: a UsageError (exit 64) that says what is wrong."""
    with pytest.raises(UsageError, match=words):
        Chaos.parse(spec)


def test_the_report_is_json_with_every_attempt(tmp_path: Path) -> None:
    """The report holds the job, each task's final state and every attempt's node, times,
    exit code and chaos; written whole."""
    report = run(tmp_path, [sh("exit 1", id="a", constraints={"maxTaskRetryCount": 1})])
    report.write(tmp_path / "r.json")
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["exitCode"] == 1
    assert data["summary"]["failed"] == 1
    attempts = data["tasks"][0]["attempts"]
    assert [a["exitCode"] for a in attempts] == [1, 1]
    assert {"node", "start", "end", "chaos", "wallClock"} <= attempts[0].keys()
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_watch_hears_each_start_and_end(tmp_path: Path) -> None:
    """Events reach ``watch``: a start and a success per task, with the running count."""
    heard: list[Event] = []
    env = {"PATH": os.environ["PATH"]}
    Emulator(
        tasks(sh("true", id="a"), sh("true", id="b")),
        root=tmp_path,
        environ=env,
        watch=heard.append,
    ).run()
    assert sorted((e.kind, e.task) for e in heard) == [
        ("start", "a"),
        ("start", "b"),
        ("succeeded", "a"),
        ("succeeded", "b"),
    ]
    assert heard[-1].running == 0


def test_two_emulators_never_share_a_folder(tmp_path: Path) -> None:
    """The second one is refused (exit 75) while the first holds the folder."""
    import fcntl

    (tmp_path / "dir").mkdir()
    with open(tmp_path / "dir/.lock", "a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(TransientError, match="another taskkit local run"):
            run(tmp_path, [sh("true", id="a")])


def test_a_bad_pool_or_job_id_is_refused_before_anything_is_made(tmp_path: Path) -> None:
    """Zero nodes or a job id that is not a Batch id: refused, and no folder made."""
    from taskkit.exceptions import ConfigError

    with pytest.raises(UsageError):
        Emulator(tasks(sh("true", id="a")), root=tmp_path / "d", nodes=0)
    with pytest.raises(ConfigError):
        Emulator(tasks(sh("true", id="a")), root=tmp_path / "d", job_id="../x")
    assert not (tmp_path / "d").exists()


def test_a_lost_node_takes_down_the_processes_that_left_the_attempts_group(
    tmp_path: Path,
) -> None:
    """kill: a process the attempt started in a session of its own (as ``taskkit run`` starts
    its command) dies too, before the task is requeued. The strike lands at a random moment of
    the first attempt; one that lands before the process is started (a loaded machine) proves
    nothing, so the job is run again, in a fresh folder, until one lands after."""
    script = (
        'if [ ! -e "$BOX/first" ]; then touch "$BOX/first"; '
        "setsid sh -c 'echo $$ > \"$BOX/orphan\"; exec sleep 60' & "
        'while [ ! -s "$BOX/orphan" ]; do sleep 0.01; done; sleep 60; fi'
    )
    for round in range(20):
        where = tmp_path / str(round)
        report = run(where, [sh(script, id="a")], chaos=Chaos(kill=1.0, within=0.3, limit=1))
        assert report.ok
        assert [a.chaos for a in task_of(report, "a").attempts] == ["kill", None]
        if (where / "box/orphan").exists():
            break
    else:
        pytest.fail("in 20 runs the strike never came after the process was started")
    orphan = int((where / "box/orphan").read_text())
    with (
        open(f"/proc/{orphan}/stat") if Path(f"/proc/{orphan}").exists() else open(os.devnull) as f
    ):
        fields = f.read().rsplit(")", 1)[-1].split()
    assert not fields or fields[0] == "Z", "the orphan outlived its node"


def test_a_wall_clock_ends_what_shrugged_off_sigterm_too(tmp_path: Path) -> None:
    """The attempt's leader dies of SIGTERM, a process of its group that ignores SIGTERM is
    killed with it, not left running."""
    script = (
        'sh -c \'trap "" TERM; echo $$ > "$BOX/stubborn"; exec sleep 300\' & '
        'while [ ! -s "$BOX/stubborn" ]; do sleep 0.01; done; wait'
    )
    limits = {"maxWallClockTime": "PT0.5S"}
    report = run(tmp_path, [sh(script, id="a", constraints=limits)])
    pid = int((tmp_path / "box/stubborn").read_text())
    assert task_of(report, "a").attempts[0].wall_clock
    stat = Path(f"/proc/{pid}/stat")
    assert not stat.exists() or stat.read_text().rsplit(")", 1)[-1].split()[0] == "Z"


def test_an_interruption_as_an_attempt_is_launched_still_ends_it_in_the_report(
    tmp_path: Path,
) -> None:
    """Ctrl-C between an attempt's process starting and its waiter starting (here: as the
    start is told to ``watch``): the process is ended, and the report shows the attempt
    interrupted with an end, never left running."""

    def watch(event: Any) -> None:
        if event.kind == "start":
            raise KeyboardInterrupt

    env = {"PATH": os.environ["PATH"], "BOX": str(tmp_path / "box")}
    (tmp_path / "box").mkdir()
    script = 'echo $$ > "$BOX/pid"; exec sleep 60'
    emulator = Emulator(tasks(sh(script, id="a")), root=tmp_path / "dir", environ=env, watch=watch)
    with pytest.raises(KeyboardInterrupt):
        emulator.run()
    (task,) = emulator.report.tasks
    assert task.state == "interrupted"
    assert [(a.end is not None, a.note) for a in task.attempts] == [
        (True, "interrupted: taskkit local run was stopped")
    ]
    assert emulator.report.terminated == "interrupted"
