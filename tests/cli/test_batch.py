"""taskkit/cli/batch.py: ``taskkit batch task-json --call MODULE:FUNCTION NAME=VALUE...``, the
Batch task whose command line is ``taskkit call``."""

from __future__ import annotations

import json
import os
import shlex
from typing import Any

import pytest
from runner_helpers import invoke, one_error

from taskkit.cli.call import call_command

STATE = ["--state", "az://state/calls"]


@pytest.fixture(autouse=True)
def _no_settings_of_this_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith(("TASKKIT_", "AZ_BATCH_", "AZURE_STORAGE_")):
            monkeypatch.delenv(name)


def task_json_of(*args: str) -> tuple[int, dict[str, Any] | None, str]:
    """``taskkit batch task-json ARGS``: exit code, the JSON printed (if any), stderr."""
    code, out, err = invoke(["batch", "task-json", *args])
    return code, (json.loads(out) if out.strip() else None), err


def call_args_of(document: dict[str, Any]) -> list[str]:
    """The arguments ``taskkit call`` gets from the JSON's command line, split as Batch and
    ``sh`` split it."""
    shell, flag, inner = shlex.split(document["commandLine"])
    assert (shell, flag) == ("/bin/sh", "-c")
    exec_, program, verb, *args = shlex.split(inner)
    assert (exec_, program, verb) == ("exec", "taskkit", "call")
    return args


def parsed_on_the_node(args: list[str]) -> dict[str, Any]:
    """What ``taskkit call ARGS`` reads on the node: its parameters as click parses them."""
    return dict(call_command.make_context("call", list(args)).params)


AWKWARD = [
    "plain=1",
    "spaced=a b",
    'quoted=it\'s "x"',
    "dollar=$HOME `id`",
    "glob=*.csv",
    "nl=a\nb",
    "uni=é",
]


def test_the_node_gets_exactly_the_function_and_its_values() -> None:
    """Split as Batch and sh split it, the command line gives `taskkit call` the function,
    --state and every NAME=VALUE unchanged, whatever characters they hold."""
    code, document, err = task_json_of("--id", "c1", *STATE, "--call", "pkg.mod:fn", *AWKWARD)
    assert (code, err) == (0, "")
    assert document is not None
    args = call_args_of(document)
    assert args == ["pkg.mod:fn", "--state", "az://state/calls", *AWKWARD]
    params = parsed_on_the_node(args)
    assert params["target"] == "pkg.mod:fn"
    assert params["words"] == tuple(AWKWARD)
    assert params["state"] == "az://state/calls"


def test_exit_conditions_list_the_calls_permanent_codes() -> None:
    """1 (the function failed permanently) and 200-202 (taskkit's own permanent failures) are
    listed as permanent; 75 and 203-206 (retryable) are not."""
    code, document, _ = task_json_of("--id", "c1", *STATE, "--call", "pkg:fn", "n=1")
    assert code == 0
    assert document is not None
    conditions = document["exitConditions"]
    listed = {entry["code"] for entry in conditions.get("exitCodes", [])}
    for span in conditions.get("exitCodeRanges", []):
        listed |= set(range(span["start"], span["end"] + 1))
    assert {1, 200, 201, 202} <= listed
    assert not listed & {0, 75, 203, 204, 205, 206}


def test_max_retries_and_the_task_id_are_batchs_and_no_wall_clock_is_guessed() -> None:
    """--max-retries is maxTaskRetryCount, --id the task id; no maxWallClockTime (the
    function's deadline is its decorator's, not known here)."""
    code, document, _ = task_json_of(
        "--id", "c1", *STATE, "--max-retries", "3", "--call", "pkg:fn", "n=1"
    )
    assert code == 0
    assert document is not None
    assert document["id"] == "c1"
    assert document["constraints"] == {"maxTaskRetryCount": 3}


def test_path_and_verbose_reach_the_node() -> None:
    """--path (repeatable) and -v are carried to `taskkit call`, before the values."""
    code, document, _ = task_json_of(
        "--id", "c1", *STATE, "-v", "--path", "src", "--path", "/opt/lib", "--call", "m:f", "n=1"
    )
    assert code == 0
    assert document is not None
    args = call_args_of(document)
    params = parsed_on_the_node(args)
    assert params["paths"] == ("src", "/opt/lib")
    assert params["verbose"] is True
    assert params["words"] == ("n=1",)


@pytest.mark.parametrize(
    "option",
    [
        ["-o", "out/**=az://r/x/"],
        ["-i", "az://d/in/=in/"],
        ["--deadline", "1h"],
        ["--success-codes", "0,3"],
        ["--permanent-codes", "2"],
        ["--workdir", "/tmp"],
        ["--checkpoint-dir", "ck"],
        ["--allow-empty"],
        ["--jobs", "4"],
    ],
)
def test_run_only_options_are_refused_with_call(option: list[str]) -> None:
    """A setting of `taskkit run` given with --call is refused in one line naming it (a task
    function takes it from its decorator); no JSON is printed."""
    code, document, err = task_json_of("--id", "c1", *STATE, *option, "--call", "m:f", "n=1")
    assert code == 64
    assert document is None
    one_error(err, f"--call: {option[0]}", "@taskkit.task")


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--call", "not-a-target", "n=1"], "expected MODULE:FUNCTION"),
        (["--call", "m:f", "n"], "expected NAME=VALUE"),
        (["--call", "m:f", "n=1", "--id", "x"], "expected NAME=VALUE"),  # options go first
        (["--path", "src", "--", "true"], "--path goes with --call"),
    ],
)
def test_malformed_call_words_are_refused(args: list[str], fragment: str) -> None:
    """A target that is not MODULE:FUNCTION, a word that is not NAME=VALUE (an option after
    the values too), --path without --call: one line, exit 64, no JSON."""
    code, document, err = task_json_of("--id", "c1", *STATE, *args)
    assert code == 64
    assert document is None
    one_error(err, fragment)


def test_a_call_needs_a_task_id() -> None:
    """No --id: a usage error saying to give one."""
    code, _, err = task_json_of(*STATE, "--call", "m:f", "n=1")
    assert code == 64
    one_error(err, "give --id")


def test_a_credential_in_a_value_is_refused_without_echoing_it() -> None:
    """A SAS token in a NAME=VALUE is refused (78) naming `taskkit call`, never echoing it."""
    secret = "sig=abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG%3D"
    url = f"https://acct.blob.core.windows.net/c/b?sv=2024-01-01&{secret}"
    code, document, err = task_json_of("--id", "c1", *STATE, "--call", "m:f", f"src={url}")
    assert code == 78
    assert document is None
    one_error(err, "credential", "`taskkit call`")
    assert "abcdefghijklmnop" not in err


def test_without_a_state_the_call_json_warns() -> None:
    """No --state and no TASKKIT_STATE in --env: the JSON, and the one warning `run` gives."""
    code, document, err = task_json_of("--id", "c1", "--call", "m:f", "n=1")
    assert code == 0
    assert document is not None
    assert "--state" not in call_args_of(document)
    assert err.startswith("taskkit: warning: no state")
    code, document, err = task_json_of(
        "--id", "c1", "--env", "TASKKIT_STATE=az://s/c", "--call", "m:f", "n=1"
    )
    assert (code, err) == (0, "")
    assert document is not None
    assert document["environmentSettings"] == [{"name": "TASKKIT_STATE", "value": "az://s/c"}]


def test_the_command_form_is_unchanged() -> None:
    """Without --call the task still runs `taskkit run -- COMMAND` (no call word leaks in)."""
    code, document, _ = task_json_of("--id", "r1", *STATE, "--", "echo", "n=1")
    assert code == 0
    assert document is not None
    inner = shlex.split(shlex.split(document["commandLine"])[2])
    assert inner[:3] == ["exec", "taskkit", "run"]
    assert inner[-3:] == ["--", "echo", "n=1"]
