"""``taskkit batch task-json`` on the command line: the task id as typed, a missing state, the
transfer options and durations carried into the command line it writes, and their bounds."""

from __future__ import annotations

import json
import os
import shlex
from pathlib import Path
from typing import Any

import pytest
from runner_helpers import invoke, one_error

from taskkit.batch.taskjson import task_json
from taskkit.cli.tasks import run_command, spec_from_options
from taskkit.exceptions import ConfigError
from taskkit.runner.policy import DEFAULT_POLICY
from taskkit.runner.spec import TASK_LIFETIME

STATE = ["--state", "az://state/runs"]


def task_json_of(*args: str) -> tuple[int, dict[str, Any] | None, str]:
    """``taskkit batch task-json ARGS``: exit code, the JSON printed (if any), stderr."""
    code, out, err = invoke(["batch", "task-json", *args])
    return code, (json.loads(out) if out.strip() else None), err


def run_args_of(document: dict[str, Any]) -> list[str]:
    """The arguments ``taskkit run`` gets from the JSON's command line, split as Batch and
    ``sh`` split it."""
    shell, flag, inner = shlex.split(document["commandLine"])
    assert (shell, flag) == ("/bin/sh", "-c")
    exec_, program, verb, *args = shlex.split(inner)
    assert (exec_, program, verb) == ("exec", "taskkit", "run")
    return args


def spec_on_the_node(args: list[str]) -> Any:
    """The RunSpec ``taskkit run ARGS`` builds on the node (with Batch's ids)."""
    ctx = run_command.make_context("run", list(args))
    options = dict(ctx.params)
    command = options.pop("command")
    options.pop("dry_run")
    return spec_from_options({**options, "task_id": "t7"}, command)


@pytest.fixture(autouse=True)
def _no_settings_of_this_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith(("TASKKIT_", "AZ_BATCH_", "AZURE_STORAGE_")):
            monkeypatch.delenv(name)


@pytest.mark.parametrize("bad", ["", "bad id", "x" * 65, "é"])
def test_a_bad_or_empty_id_gets_one_code_and_names_the_option_typed(bad: str) -> None:
    """--id '' and --id 'bad id' (and every other bad id) exit with the same code, one line
    naming --id, not the --task-id the user did not type; nothing is printed."""
    code, document, err = task_json_of("--id", bad, *STATE, "--", "true")
    assert code == 78
    assert document is None
    line = one_error(err, "--id", "not a Batch id")
    assert "--task-id" not in line
    code, _, err = task_json_of("--task-id", bad, *STATE, "--", "true")
    assert code == 78  # the same code when the id comes as --task-id, named so
    one_error(err, "--task-id")


def test_a_missing_id_is_still_a_usage_error() -> None:
    """No id at all is a usage error (64) that says to give --id."""
    code, _, err = task_json_of(*STATE, "--", "true")
    assert code == 64
    one_error(err, "give --id")


def test_without_a_state_it_prints_the_json_and_warns() -> None:
    """Neither --state nor TASKKIT_STATE in --env: the JSON still, and one warning that the
    task cannot run as is; either one of them silences it."""
    code, document, err = task_json_of("--id", "t7", "--", "true")
    assert code == 0
    assert document is not None
    assert document["id"] == "t7"
    lines = err.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("taskkit: warning: ")
    assert "--state" in lines[0]
    assert "TASKKIT_STATE" in lines[0]
    assert "cannot run" in lines[0]
    for given in (STATE, ["--env", "TASKKIT_STATE=az://state/runs"]):
        code, document, err = task_json_of("--id", "t7", *given, "--", "true")
        assert (code, err) == (0, "")
        assert document is not None


TRANSFER = [
    "-j", "4",
    "--cache-dir", "/mnt/cache",
    "--no-node-cache",
    "--cache-max-bytes", "50G",
    "--retries", "3",
    "--retry-budget", "0",
    "--progress-interval", "1m",
    "-v",
]  # fmt: skip


EXPECTED = {
    "jobs": 4,
    "cache_dir": "/mnt/cache",
    "no_node_cache": True,
    "cache_max_bytes": 50 << 30,
    "retries": 3,
    "retry_budget": 0.0,
    "progress_interval": 60.0,
    "verbose": True,
}


def test_transfer_options_and_durations_reach_the_node_unchanged(tmp_path: Path) -> None:
    """Every transfer option, and durations up to their bounds, given on the command line or
    in a spec file, reach the node's `taskkit run` as the same settings."""
    durations = ["--deadline", "180d", "--log-interval", "60d", "--checkpoint-interval", "20d"]
    code, document, err = task_json_of("--id", "t7", *STATE, *TRANSFER, *durations, "--", "x")
    assert (code, err) == (0, ""), err
    assert document is not None
    args = run_args_of(document)
    assert "e+" not in " ".join(args)  # no duration written with an exponent
    spec = spec_on_the_node(args)
    for name, value in EXPECTED.items():
        assert getattr(spec, name) == value, name
    assert spec.deadline == TASK_LIFETIME
    assert spec.log_interval == TASK_LIFETIME / 3
    assert spec.checkpoint_interval == 20 * 86400.0
    # The same settings from a spec file, which the node does not have: inlined.
    spec_file = tmp_path / "task.toml"
    spec_file.write_text(
        'jobs = 4\ncache-dir = "/mnt/cache"\nno-node-cache = true\ncache-max-bytes = "50G"\n'
        'retries = 3\nretry-budget = 0\nprogress-interval = "1m"\nverbose = true\n'
    )
    code, inlined, err = task_json_of("--id", "t7", *STATE, "--spec", str(spec_file), "--", "x")
    assert (code, err) == (0, ""), err
    assert inlined is not None
    spec = spec_on_the_node(run_args_of(inlined))
    for name, value in EXPECTED.items():
        assert getattr(spec, name) == value, name


def test_defaults_are_not_written() -> None:
    """Transfer settings left at their defaults add nothing to the command line."""
    code, document, _ = task_json_of("--id", "t7", *STATE, "--", "x")
    assert code == 0
    assert document is not None
    assert run_args_of(document) == [*STATE, "--", "x"]


@pytest.mark.parametrize(
    ("option", "beyond"),
    [("--deadline", "181d"), ("--log-interval", "61d"), ("--checkpoint-interval", "1000d")],
)
def test_a_duration_beyond_its_bound_is_refused_before_any_json(option: str, beyond: str) -> None:
    """task-json refuses the durations run refuses, with one line naming the option, and
    prints no JSON (no maxWallClockTime Batch cannot hold)."""
    code, document, err = task_json_of("--id", "t7", *STATE, option, beyond, "--", "x")
    assert code == 78
    assert document is None
    one_error(err, option)


def test_a_wall_clock_limit_that_would_reach_the_task_lifetime_is_left_out() -> None:
    """maxWallClockTime only while it is shorter than Batch's 180-day task lifetime (which
    ends the task first); a deadline beyond the lifetime is refused by the library too."""
    code, document, _ = task_json_of(
        "--id", "t7", *STATE, "--deadline", "20d", "--max-retries", "9", "--", "x"
    )
    assert code == 0
    assert document is not None
    assert document["constraints"] == {"maxTaskRetryCount": 9}
    code, document, _ = task_json_of("--id", "t7", *STATE, "--deadline", "1h", "--", "x")
    assert document is not None
    assert document["constraints"]["maxWallClockTime"] == "PT1H6M"
    with pytest.raises(ConfigError, match="180 days"):
        task_json(
            ["--", "x"],
            task_id="t7",
            max_retries=0,
            deadline=TASK_LIFETIME + 1,
            policy=DEFAULT_POLICY,
        )


def test_inputs_and_outputs_reach_the_node_as_typed() -> None:
    """-i and -o are written into the command line as the user typed them (a bare SRC, a
    trailing '=', a GLOB=DEST without its '/'), not as the spec parsed them, so the node's
    spec, and the work's fingerprint, are the same."""
    given = ["-i", "az://c/in/a.txt", "-i", "az://c/y=2024/=", "-o", "out/=az://r/x"]
    given += ["-o", "year=2024/*.csv=az://r/y=2024"]
    code, document, err = task_json_of("--id", "t7", *STATE, *given, "--", "x")
    assert (code, err) == (0, ""), err
    assert document is not None
    outputs, inputs = given[4:], given[:4]  # task-json writes the outputs first
    assert run_args_of(document) == [*outputs, *inputs, *STATE, "--", "x"]
    spec = spec_on_the_node(run_args_of(document))
    assert spec.input_texts == ("az://c/in/a.txt", "az://c/y=2024/=")
    assert spec.output_texts == ("out/=az://r/x", "year=2024/*.csv=az://r/y=2024")


@pytest.mark.parametrize("verb_args", [["--", "true"], ["--call", "pipeline:shard", "n=3"]])
@pytest.mark.parametrize(
    ("choice", "action"), [("terminate-job", "terminate"), ("disable-job", "disable")]
)
def test_on_permanent_sets_the_job_action_and_says_which_job_it_needs(
    verb_args: list[str], choice: str, action: str
) -> None:
    """--on-permanent terminate-job/disable-job: every permanent entry gets that jobAction, and
    one note on stderr names the job's onTaskFailure it needs; the default says nothing."""
    code, document, err = task_json_of("--id", "t7", *STATE, "--on-permanent", choice, *verb_args)
    assert code == 0
    assert document is not None
    conditions = document["exitConditions"]
    entries = [*conditions.get("exitCodes", []), *conditions.get("exitCodeRanges", [])]
    assert entries
    assert all(
        e["exitOptions"] == {"dependencyAction": "block", "jobAction": action} for e in entries
    )
    (line,) = err.splitlines()
    assert line.startswith("taskkit: note: ")
    assert "onTaskFailure performExitOptionsJobAction" in line
    code, document, err = task_json_of("--id", "t7", *STATE, *verb_args)
    assert (code, err) == (0, "")
    assert document is not None
    assert all(
        e["exitOptions"] == {"dependencyAction": "block"}
        for e in document["exitConditions"].get("exitCodeRanges", [])
    )


def test_an_unknown_on_permanent_is_a_usage_error() -> None:
    """--on-permanent takes block, terminate-job or disable-job; anything else exits 64."""
    code, document, err = task_json_of("--id", "t7", *STATE, "--on-permanent", "kill", "--", "true")
    assert code == 64
    assert document is None
    assert "terminate-job" in one_error(err)
