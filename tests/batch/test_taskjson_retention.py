"""taskkit.batch.taskjson: ``retention_time``, Batch's ``constraints.retentionTime``, from the
library and from ``taskkit batch task-json --retention-time``."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from runner_helpers import invoke, one_error

from taskkit.batch.taskjson import task_json
from taskkit.batch.tasks import parse_duration as iso_seconds
from taskkit.batch.tasks import read_tasks
from taskkit.exceptions import ConfigError
from taskkit.runner.policy import DEFAULT_POLICY


def make(**overrides: object) -> dict[str, object]:
    """task_json of an ordinary task, any setting overridden."""
    settings: dict[str, object] = {
        "task_id": "t1",
        "max_retries": 2,
        "deadline": 600.0,
        "policy": DEFAULT_POLICY,
    }
    settings.update(overrides)
    return task_json(["--", "true"], **settings)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("seconds", "iso"),
    [(90.0, "PT1M30S"), (43200.0, "PT12H"), (7 * 86400.0, "PT168H"), (0.2, "PT1S")],
)
def test_retention_time_is_an_iso_duration_rounded_up(seconds: float, iso: str) -> None:
    """Seconds become an ISO 8601 duration of whole seconds, never shorter than asked."""
    constraints = make(retention_time=seconds)["constraints"]
    assert isinstance(constraints, dict)
    assert constraints["retentionTime"] == iso
    assert iso_seconds(iso) >= seconds


def test_without_retention_time_the_constraint_is_left_to_batch() -> None:
    """No retentionTime unless asked: Batch's default (7 days) holds."""
    constraints = make()["constraints"]
    assert isinstance(constraints, dict)
    assert "retentionTime" not in constraints


@pytest.mark.parametrize(
    ("deadline", "retries"), [(None, 0), (600.0, -1), (600.0, 3), (170 * 86400.0, 5)]
)
def test_retention_time_is_written_whatever_the_wall_clock_does(
    deadline: float | None, retries: int
) -> None:
    """With no deadline, unlimited retries or a limit past the task lifetime (no
    maxWallClockTime in each), retentionTime is still there, after the other constraints."""
    constraints = make(deadline=deadline, max_retries=retries, retention_time=3600.0)["constraints"]
    assert isinstance(constraints, dict)
    assert list(constraints)[-1] == "retentionTime"
    assert constraints["retentionTime"] == "PT1H"


@pytest.mark.parametrize("bad", [0, -5.0, math.inf, math.nan, True, "1h"])
def test_a_bad_retention_time_is_a_config_error(bad: object) -> None:
    """Zero, negative, infinite, NaN and non-numbers are refused as a ConfigError."""
    with pytest.raises(ConfigError, match="retention time"):
        make(retention_time=bad)


def test_the_json_with_a_retention_time_is_read_back_by_read_tasks() -> None:
    """What task_json writes is a task read_tasks takes, naming retentionTime as not emulated."""
    found = read_tasks(json.dumps(make(retention_time=7200.0)), "t.json")
    assert found.not_emulated == {"constraints.retentionTime": ("t1",)}


def test_the_sdk_reads_the_retention_time_as_the_duration_given() -> None:
    """azure-batch's BatchTaskConstraints parses the value to the same number of seconds (in
    a child process: importing azure.batch registers error classes the storage tests walk)."""
    constraints = make(retention_time=2 * 86400.0 + 30)["constraints"]
    code = (
        "import json, sys\n"
        "from azure.batch import models\n"
        "c = models.BatchTaskConstraints(json.loads(sys.stdin.read()))\n"
        "print(c.retention_time.total_seconds())\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        input=json.dumps(constraints),
        capture_output=True,
        text=True,
        check=False,
        cwd=Path(__file__).parents[2],
    )
    assert done.returncode == 0, done.stderr
    assert float(done.stdout) == 2 * 86400.0 + 30


@pytest.mark.parametrize(
    ("typed", "iso"), [("12h", "PT12H"), ("7d", "PT168H"), ("90s", "PT1M30S"), ("1h30m", "PT1H30M")]
)
def test_the_option_takes_the_duration_syntax_of_deadline(typed: str, iso: str) -> None:
    """task-json --retention-time reads 12h, 7d, 90s, 1h30m as --deadline does."""
    code, out, err = invoke(
        ["batch", "task-json", "--id", "a", "--state", "az://s/r", "--retention-time", typed,
         "--", "true"]
    )  # fmt: skip
    assert code == 0, err
    assert json.loads(out)["constraints"]["retentionTime"] == iso


def test_the_option_reaches_a_call_task_too() -> None:
    """task-json --call writes the retention time as well."""
    code, out, err = invoke(
        ["batch", "task-json", "--id", "a", "--state", "az://s/r", "--retention-time", "2h",
         "--call", "m:f", "n=1"]
    )  # fmt: skip
    assert code == 0, err
    assert json.loads(out)["constraints"]["retentionTime"] == "PT2H"


@pytest.mark.parametrize("typed", ["soon", "0s", "-1h", "1h1h"])
def test_a_bad_option_value_is_one_line_naming_the_option(typed: str) -> None:
    """A duration that does not parse or is not positive: exit 78, one line, no JSON."""
    code, out, err = invoke(
        ["batch", "task-json", "--id", "a", "--state", "az://s/r", f"--retention-time={typed}",
         "--", "true"]
    )  # fmt: skip
    assert (code, out) == (78, "")
    one_error(err, "--retention-time")
