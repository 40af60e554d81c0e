"""taskkit.batch.taskjson: the Batch task JSON for a ``taskkit run`` command line."""

from __future__ import annotations

import copy
import datetime
import enum
import json
import re
import shlex
import stat
import subprocess
import sys
import typing
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

import pytest

from taskkit.batch.taskjson import FLUSH_MARGIN_MIN, command_line, task_json, wall_clock_margin
from taskkit.exceptions import ConfigError, MisuseError
from taskkit.runner.policy import DEFAULT_POLICY, ExitPolicy

PERMANENT_3_7_9 = ExitPolicy.from_codes(success="0", permanent="3,7-9", retryable=None)
RUN_ARGS = ["--state", "az://s/", "-i", "az://d/x=x", "--", "python", "train.py"]
SAS = "sv=2024-05-04&ss=b&srt=co&sp=rl&se=2030-01-01&sig=c2VjcmV0c2lnbmF0dXJlMTIzNA%3D"


def make(run_args: list[str] | None = None, **overrides: Any) -> dict[str, object]:
    """task_json with ordinary settings, any of them overridden."""
    settings: dict[str, Any] = {
        "task_id": "train-001",
        "max_retries": 3,
        "deadline": 3600.0,
        "policy": DEFAULT_POLICY,
    }
    settings.update(overrides)
    return task_json(RUN_ARGS if run_args is None else run_args, **settings)


# --- Validation against the azure-batch SDK model ------------------------------------------------
#
# The SDK's models are lenient mappings: BatchTaskCreateOptions({"anything": 1}) is accepted and
# a misspelt key is silently kept. So the helper walks the JSON against the models' declared
# fields and types itself, then round-trips it through the typed model.
#
# The walk runs in a child process: importing azure.batch registers its AzureError subclasses
# (CreateTasksError) in the interpreter, and test_storage's walk over every AzureError subclass
# would then meet a class the storage boundary never sees.


def _batch_models() -> Any:
    from azure.batch import models

    return models


def _is_model(tp: object) -> bool:
    return (
        isinstance(tp, type)
        and issubclass(tp, MutableMapping)
        and tp.__module__.startswith("azure.batch.models")
    )


def _fields(model: type) -> dict[str, tuple[str, Any]]:
    """rest name -> (attribute name, annotation) for a model class."""
    model({})  # the SDK computes its field table on first instantiation
    hints = typing.get_type_hints(model, localns={"_models": _batch_models()})
    table = model._attr_to_rest_field  # type: ignore[attr-defined]  # the SDK's (private) field table
    return {rf._rest_name: (attr, hints[attr]) for attr, rf in table.items()}


def _duration(text: str) -> datetime.timedelta:
    constraints = _batch_models().BatchTaskConstraints({"maxWallClockTime": text})
    value = constraints.max_wall_clock_time  # the raw text back when it does not parse
    assert isinstance(value, datetime.timedelta), f"not an ISO 8601 duration: {text!r}"
    return value


def _check(value: object, tp: Any, path: str) -> object:
    """``value`` checked against annotation ``tp``; returns it with durations parsed."""
    if typing.get_origin(tp) is typing.Union:
        arms = [a for a in typing.get_args(tp) if a is not type(None)]
        enums = [a for a in arms if isinstance(a, type) and issubclass(a, enum.Enum)]
        if enums:
            known = {member.value for member in enums[0]}
            assert value in known, f"{path}: {value!r} is not one of {sorted(known)}"
            return value
        assert len(arms) == 1, f"{path}: no check for {tp}"
        return _check(value, arms[0], path)
    if typing.get_origin(tp) is list:
        assert isinstance(value, list), f"{path}: expected a list, got {value!r}"
        (item,) = typing.get_args(tp)
        return [_check(v, item, f"{path}[{i}]") for i, v in enumerate(value)]
    if tp is datetime.timedelta:
        assert isinstance(value, str), f"{path}: expected a duration string, got {value!r}"
        return _duration(value)
    if tp in (int, str, bool):
        ok = isinstance(value, tp) and (tp is bool or not isinstance(value, bool))
        assert ok, f"{path}: expected {tp.__name__}, got {value!r}"
        return value
    if _is_model(tp):
        assert isinstance(value, dict), f"{path}: expected an object, got {value!r}"
        fields = _fields(tp)
        for key in value:
            assert key in fields, f"{path}: {tp.__name__} has no field {key!r}"
        for key, (_, hint) in fields.items():
            if type(None) not in typing.get_args(hint):
                assert key in value, f"{path}: {tp.__name__} requires {key!r}"
        return {key: _check(v, fields[key][1], f"{path}.{key}") for key, v in value.items()}
    raise AssertionError(f"{path}: no check for {tp}")


def assert_valid_task(task: dict[str, object]) -> None:
    """Fail unless ``task`` is a BatchTaskCreateOptions in every key and type, and round-trips."""
    model_type = _batch_models().BatchTaskCreateOptions
    checked = _check(task, model_type, "task")
    model = model_type(copy.deepcopy(task))
    assert model.as_dict() == task, "the SDK model changed the JSON"
    # Rebuild from the typed attributes, so the SDK serializes every value itself.
    typed = {attr: getattr(model, attr) for attr, _ in _fields(model_type).values()}
    rebuilt = model_type(**{attr: v for attr, v in typed.items() if v is not None}).as_dict()
    assert _check(rebuilt, model_type, "rebuilt") == checked, "the typed round trip differs"


def problems_in_process(tasks: list[dict[str, object]]) -> list[str | None]:
    """For each task, None if assert_valid_task accepts it, else its complaint."""
    found: list[str | None] = []
    for task in tasks:
        try:
            assert_valid_task(task)
        except AssertionError as exc:
            found.append(str(exc) or "invalid")
        else:
            found.append(None)
    return found


def sdk_problems(tasks: list[dict[str, object]]) -> list[str | None]:
    """problems_in_process, run in a child interpreter (see above)."""
    code = (
        "import importlib.util, json, sys\n"
        "spec = importlib.util.spec_from_file_location('batch_sdk_check', sys.argv[1])\n"
        "module = importlib.util.module_from_spec(spec)\n"
        "spec.loader.exec_module(module)\n"
        "print(json.dumps(module.problems_in_process(json.load(sys.stdin))))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, __file__],
        input=json.dumps(tasks),
        capture_output=True,
        text=True,
        check=False,
        cwd=Path(__file__).parents[2],
    )
    assert done.returncode == 0, done.stderr
    problems: list[str | None] = json.loads(done.stdout)
    return problems


def test_task_json_validates_against_the_sdk_model() -> None:
    """Full and minimal tasks are valid BatchTaskCreateOptions, keys and types alike."""
    full = make(environment={"B": "2", "A": "1"}, policy=PERMANENT_3_7_9)
    minimal = make(deadline=None, max_retries=0)
    unlimited = make(max_retries=-1)
    assert sdk_problems([full, minimal, unlimited]) == [None, None, None]
    assert list(full) == [
        "id",
        "commandLine",
        "environmentSettings",
        "constraints",
        "exitConditions",
    ]
    assert "environmentSettings" not in minimal
    assert minimal["constraints"] == {"maxTaskRetryCount": 0}


def test_building_the_json_needs_no_batch_sdk() -> None:
    """taskkit.batch.taskjson is pure: importing and using it loads no azure.batch module."""
    code = (
        "import sys\n"
        "from taskkit.batch.taskjson import task_json\n"
        "from taskkit.runner.policy import DEFAULT_POLICY\n"
        "task_json(['--', 'true'], task_id='t', max_retries=1, deadline=60,\n"
        "          policy=DEFAULT_POLICY)\n"
        "sys.exit(any(name.startswith('azure.batch') for name in sys.modules))\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[2])


#: How to spoil a valid task, and a word the complaint must contain.
CORRUPTIONS: dict[str, tuple[typing.Callable[[dict[str, Any]], object], str]] = {
    "misspelt constraint": (
        lambda t: t["constraints"].update(
            maxTaskRetryCounts=t["constraints"].pop("maxTaskRetryCount")
        ),
        "'maxTaskRetryCounts'",
    ),
    "misspelt top-level key": (
        lambda t: t.update(commandline=t.pop("commandLine")),
        "'commandline'",
    ),
    "retry count as a string": (
        lambda t: t["constraints"].update(maxTaskRetryCount="3"),
        "maxTaskRetryCount: expected int",
    ),
    "duration as seconds": (
        lambda t: t["constraints"].update(maxWallClockTime=3960),
        "maxWallClockTime: expected a duration",
    ),
    "bad duration text": (
        lambda t: t["constraints"].update(maxWallClockTime="66 minutes"),
        "not an ISO 8601 duration",
    ),
    "exit code as a string": (
        lambda t: t["exitConditions"]["exitCodes"][0].update(code="3"),
        "code: expected int",
    ),
    "unknown dependency action": (
        lambda t: t["exitConditions"]["exitCodes"][0].update(
            exitOptions={"dependencyAction": "cancel"}
        ),
        "'cancel' is not one of",
    ),
    "misspelt exit option": (
        lambda t: t["exitConditions"]["exitCodeRanges"][0].update(
            exitOptions={"dependencyActions": "block"}
        ),
        "'dependencyActions'",
    ),
    "environment as an object": (
        lambda t: t.update(environmentSettings={"A": "1"}),
        "environmentSettings: expected a list",
    ),
    "missing required id": (lambda t: t.pop("id"), "requires 'id'"),
}


def test_validation_helper_catches_a_wrong_key_or_type() -> None:
    """The validation is not vacuous: each misspelt key or wrong nested type fails it, named."""
    good = make(environment={"A": "1"}, policy=PERMANENT_3_7_9)
    corrupted = []
    for corrupt, _ in CORRUPTIONS.values():
        task: dict[str, Any] = copy.deepcopy(good)
        corrupt(task)
        corrupted.append(task)
    first, *rest = sdk_problems([good, *corrupted])
    assert first is None
    missed = {
        how: problem
        for (how, (_, expected)), problem in zip(CORRUPTIONS.items(), rest, strict=True)
        if problem is None or expected not in problem
    }
    assert missed == {}


# --- The command line survives Batch's splitting and sh -----------------------------------------


def batch_split(line: str) -> list[str]:
    """Batch's Linux splitting as researched (module docstring): POSIX words, no shell."""
    return shlex.split(line, posix=True)


def quotes_only_split(line: str) -> list[str]:
    """A stricter splitter: quotes group, but a backslash is never an escape."""
    words: list[str] = []
    current: list[str] = []
    in_word = False
    quote = ""
    for char in line:
        if quote:
            if char == quote:
                quote = ""
            else:
                current.append(char)
        elif char in " \t\n":
            if in_word:
                words.append("".join(current))
                current, in_word = [], False
        else:
            in_word = True
            if char in "'\"":
                quote = char
            else:
                current.append(char)
    assert not quote, "unterminated quote"
    if in_word:
        words.append("".join(current))
    return words


HOSTILE = [
    pytest.param(RUN_ARGS, id="ordinary"),
    pytest.param(["has space", "  two  spaces  ", "tab\there"], id="spaces"),
    pytest.param(["it's", "'", "''", "'\"'\"'", "\\'"], id="single-quotes"),
    pytest.param(['say "hi"', '"', '\\"', '""'], id="double-quotes"),
    pytest.param(["$HOME", "${PATH}", "$(id)", "$$", "$1", "$@", "$"], id="dollar"),
    pytest.param(["`id`", "`", "a`b"], id="backticks"),
    pytest.param(["a;b", "a|b", "a&b", "a && b", "x > out", "<in", "(sub)", "{a,b}"], id="ops"),
    pytest.param(["line1\nline2", "\n", "trailing\n", "\r\n"], id="newlines"),
    pytest.param(["*", "?", "[a-z]*", "~", "~root", "!", "#comment"], id="globs"),
    pytest.param(["héllo", "✓", "日本語", "emoji 🎉"], id="non-ascii"),
    pytest.param(["", "", "-"], id="empty"),
    pytest.param(["-n", "-e", "--", "-c", "--help"], id="leading-dash"),
    pytest.param(["back\\slash", "\\", "\\\\n", "a\\ b"], id="backslashes"),
    pytest.param([], id="no-args"),
]


@pytest.fixture
def argv_printer(tmp_path: Path) -> Path:
    """An executable in a directory whose name needs quoting; it prints its argv as JSON."""
    directory = tmp_path / "prog dir's $HOME"
    directory.mkdir()
    script = directory / "argv-printer"
    script.write_text(
        f"#!{sys.executable}\nimport json, sys\nprint(json.dumps(sys.argv[1:]))\n",
        encoding="utf-8",
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script


@pytest.mark.parametrize("run_args", HOSTILE)
def test_command_line_round_trips_through_batch_splitting_and_sh(
    run_args: list[str], argv_printer: Path, tmp_path: Path
) -> None:
    """Split as Batch splits it and run for real, the line hands taskkit exactly run_args."""
    (tmp_path / "a-file-a-glob-would-find").touch()
    words = batch_split(command_line(run_args, program=str(argv_printer)))
    assert words[:2] == ["/bin/sh", "-c"]
    assert len(words) == 3
    done = subprocess.run(words, cwd=tmp_path, capture_output=True, check=True)
    assert json.loads(done.stdout) == ["run", *run_args]


@pytest.mark.parametrize("run_args", HOSTILE)
def test_command_line_splits_the_same_without_backslash_escapes(run_args: list[str]) -> None:
    """The line never leans on backslash rules, so a stricter splitter gives the same words."""
    line = command_line(run_args)
    assert quotes_only_split(line) == batch_split(line)


def test_command_line_execs_the_program() -> None:
    """sh replaces itself with taskkit (exec), so Batch's signals reach taskkit."""
    words = batch_split(command_line(["--", "true"]))
    assert words == ["/bin/sh", "-c", "exec taskkit run -- true"]


def test_command_line_rejects_a_single_string() -> None:
    """Passing one string instead of a list of arguments is a programming error."""
    with pytest.raises(MisuseError):
        command_line("--state az://s/ -- true")


def test_command_line_rejects_a_nul_character() -> None:
    """No argv can carry a NUL; the error says which argument holds one."""
    with pytest.raises(ConfigError, match="argument 1"):
        command_line(["ok", "bad\0"])


# --- constraints -------------------------------------------------------------------------------


def iso_seconds(text: str) -> int:
    """Seconds in a ``PT#H#M#S`` duration (the only form task_json writes)."""
    match = re.fullmatch(r"PT(?:(\d+)H)?(?:(\d+)M)?(?:(\d+)S)?", text)
    assert match is not None, text
    hours, minutes, seconds = (int(part or 0) for part in match.groups())
    return 3600 * hours + 60 * minutes + seconds


def constraints_of(task: dict[str, object]) -> dict[str, object]:
    constraints = task["constraints"]
    assert isinstance(constraints, dict)
    return constraints


@pytest.mark.parametrize(
    ("deadline", "max_retries", "expected"),
    [
        (90.0, 0, "PT6M30S"),  # 90 s + 5 min floor
        (3600.0, 0, "PT1H6M"),  # 1 h + 10 % (6 min, above the 5 min floor)
        (36 * 3600.0, 0, "PT39H36M"),  # 36 h + 10 % = 3 h 36 min
        (90.0, 2, "PT19M30S"),  # 3 attempts x 6 min 30 s
        (3600.0, 3, "PT4H24M"),  # 4 attempts x 1 h 6 min
        (0.5, 0, "PT5M1S"),  # rounded up to whole seconds, never down
    ],
)
def test_max_wall_clock_time_covers_every_attempt_and_its_flush(
    deadline: float, max_retries: int, expected: str
) -> None:
    """maxWallClockTime = attempts x (deadline + margin), as an ISO 8601 duration."""
    task = make(deadline=deadline, max_retries=max_retries)
    assert constraints_of(task) == {
        "maxTaskRetryCount": max_retries,
        "maxWallClockTime": expected,
    }
    per_attempt = deadline + wall_clock_margin(deadline)
    assert iso_seconds(expected) >= (max_retries + 1) * per_attempt


def test_margin_is_five_minutes_or_a_tenth_of_the_deadline() -> None:
    """The flush margin never drops below five minutes and grows with long deadlines."""
    assert wall_clock_margin(60.0) == FLUSH_MARGIN_MIN == 300.0
    assert wall_clock_margin(3000.0) == 300.0
    assert wall_clock_margin(10 * 3600.0) == 3600.0


def test_no_max_wall_clock_time_without_a_deadline() -> None:
    """Without taskkit's own deadline Batch gets no wall clock limit either."""
    assert constraints_of(make(deadline=None)) == {"maxTaskRetryCount": 3}


def test_no_max_wall_clock_time_with_unlimited_retries() -> None:
    """With unlimited retries no finite limit is safe across attempts: none is set."""
    assert constraints_of(make(max_retries=-1)) == {"maxTaskRetryCount": -1}


@pytest.mark.parametrize("max_retries", [-2, 1.5, True, "3"])
def test_bad_retry_counts_are_config_errors(max_retries: object) -> None:
    """A retry count must be -1 or a whole number >= 0."""
    with pytest.raises(ConfigError, match="max retries"):
        make(max_retries=max_retries)


@pytest.mark.parametrize("deadline", [0.0, -5.0, float("inf"), float("nan"), True, "60"])
def test_bad_deadlines_are_config_errors(deadline: object) -> None:
    """A deadline must be a positive, finite number of seconds."""
    with pytest.raises(ConfigError, match="deadline"):
        make(deadline=deadline)


# --- exitConditions ----------------------------------------------------------------------------


def test_exit_conditions_list_every_permanent_code() -> None:
    """Single codes become exitCodes, runs of 2+ exitCodeRanges, each blocking dependents."""
    task = make(policy=PERMANENT_3_7_9)  # its SDK validation: the first test above
    block = {"dependencyAction": "block"}
    assert task["exitConditions"] == {
        "exitCodes": [{"code": 3, "exitOptions": block}],
        "exitCodeRanges": [
            {"start": 7, "end": 9, "exitOptions": block},
            {"start": 126, "end": 127, "exitOptions": block},  # cannot execute, not found
            {"start": 200, "end": 202, "exitOptions": block},  # taskkit's own permanent failures
        ],
    }


@pytest.mark.parametrize(
    ("on_permanent", "job_action"),
    [("block", None), ("terminate-job", "terminate"), ("disable-job", "disable")],
)
def test_on_permanent_adds_the_job_action_to_every_permanent_entry(
    on_permanent: str, job_action: str | None
) -> None:
    """terminate-job and disable-job add that jobAction beside dependencyAction: block on every
    permanent code and range, and nowhere else; block adds none."""
    task = make(policy=PERMANENT_3_7_9, on_permanent=on_permanent)
    conditions = task["exitConditions"]
    assert isinstance(conditions, dict)
    entries = [*conditions["exitCodes"], *conditions["exitCodeRanges"]]
    assert len(entries) == 4
    for entry in entries:
        expected = {"dependencyAction": "block"}
        if job_action is not None:
            expected["jobAction"] = job_action
        assert entry["exitOptions"] == expected
    assert set(conditions) == {"exitCodes", "exitCodeRanges"}  # no default entry


def test_exit_options_built_into_the_sdk_models_mean_block_and_the_job_action() -> None:
    """The azure-batch models read the JSON back as DependencyAction.BLOCK and
    BatchJobActionKind.TERMINATE, and the emulator's parser finds a jobAction set exactly when
    one was asked for."""
    from taskkit.batch.tasks import read_tasks

    code = (
        "import json, sys\n"
        "from azure.batch import models\n"
        "out = []\n"
        "for task in json.load(sys.stdin):\n"
        "    m = models.BatchTaskCreateOptions(task)\n"
        "    first = m.exit_conditions.exit_codes[0].exit_options\n"
        "    ranged = m.exit_conditions.exit_code_ranges[0].exit_options\n"
        "    out.append([first.dependency_action == models.DependencyAction.BLOCK,\n"
        "                ranged.dependency_action == models.DependencyAction.BLOCK,\n"
        "                first.job_action == models.BatchJobActionKind.TERMINATE,\n"
        "                m.as_dict() == task])\n"
        "print(json.dumps(out))\n"
    )
    tasks = [
        make(policy=PERMANENT_3_7_9),
        make(policy=PERMANENT_3_7_9, on_permanent="terminate-job", task_id="train-002"),
    ]
    done = subprocess.run(
        [sys.executable, "-c", code],
        input=json.dumps(tasks),
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).parents[2],
    )
    assert json.loads(done.stdout) == [[True, True, False, True], [True, True, True, True]]
    assert sdk_problems(tasks) == [None, None]
    parsed = read_tasks(json.dumps(tasks), "tasks.json").tasks
    assert [t.exit_conditions.sets_job_action() for t in parsed] == [False, True]


def test_an_unknown_on_permanent_is_a_config_error() -> None:
    """on_permanent is one of block, terminate-job, disable-job; the error names the choices."""
    with pytest.raises(ConfigError, match="terminate-job") as caught:
        make(on_permanent="terminate")
    assert "'terminate'" in str(caught.value)


def test_exit_conditions_cover_exactly_the_permanent_codes() -> None:
    """Every code the policy calls permanent is listed, and nothing else."""
    for policy in (DEFAULT_POLICY, PERMANENT_3_7_9):
        conditions = make(policy=policy)["exitConditions"]
        assert isinstance(conditions, dict)
        listed = {entry["code"] for entry in conditions.get("exitCodes", [])}
        for entry in conditions.get("exitCodeRanges", []):
            assert entry["end"] > entry["start"]
            listed |= set(range(entry["start"], entry["end"] + 1))
        assert listed == set(policy.permanent_codes())


def test_exit_zero_keeps_satisfying_dependents() -> None:
    """Exit 0 is listed nowhere and no default is set: Batch's 'satisfy on 0' stays."""
    conditions = make(policy=PERMANENT_3_7_9)["exitConditions"]
    assert isinstance(conditions, dict)
    assert set(conditions) <= {"exitCodes", "exitCodeRanges"}
    assert all(entry["code"] != 0 for entry in conditions.get("exitCodes", []))
    assert all(entry["start"] > 0 for entry in conditions.get("exitCodeRanges", []))


# --- id and environment ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "task_id",
    ["", "x" * 65, "has space", "a/b", "tâche", "a.b", "new\nline", "٣"],
    ids=["empty", "65-chars", "space", "slash", "unicode", "dot", "newline", "arabic-digit"],
)
def test_bad_task_ids_are_one_line_config_errors(task_id: str) -> None:
    """Batch ids are 1-64 ASCII letters, digits, '-' and '_'; anything else names the id."""
    with pytest.raises(ConfigError) as caught:
        make(task_id=task_id)
    assert "\n" not in str(caught.value)
    assert repr(task_id) in str(caught.value)


def test_longest_task_id_is_accepted() -> None:
    """64 characters of letters, digits, '-' and '_' is a valid id."""
    task_id = ("Ab-_9" * 13)[:64]
    assert make(task_id=task_id)["id"] == task_id


def test_environment_settings_are_sorted_by_name() -> None:
    """environmentSettings lists name/value pairs in name order."""
    task = make(environment={"ZETA": "z", "ALPHA": "a b", "MID": ""})
    assert task["environmentSettings"] == [
        {"name": "ALPHA", "value": "a b"},
        {"name": "MID", "value": ""},
        {"name": "ZETA", "value": "z"},
    ]


# --- credentials -------------------------------------------------------------------------------


def test_sas_in_an_environment_value_is_refused_without_echoing_it() -> None:
    """A SAS token in an environment value raises, naming the setting but not the secret."""
    with pytest.raises(ConfigError) as caught:
        make(environment={"DATA_URL": f"https://a.blob.core.windows.net/c?{SAS}"})
    message = str(caught.value)
    assert "'DATA_URL'" in message
    assert "pool/node" in message
    assert "sig=" not in message
    assert "c2VjcmV0" not in message


@pytest.mark.parametrize(
    "value",
    ["https://reader:c2VjcmV0pw@h/c/x", "X=sig=c2VjcmV0c2ln"],
    ids=["userinfo-password", "sig-after-equals"],
)
def test_other_credentials_in_an_environment_value_are_refused(value: str) -> None:
    """A URL's password, a signature after '=': the setting is named, the value is not."""
    with pytest.raises(ConfigError) as caught:
        make(environment={"DATA": value})
    assert "'DATA'" in str(caught.value)
    assert "c2VjcmV0" not in str(caught.value)


@pytest.mark.parametrize(
    "url",
    [
        "abfs://container@account.dfs.core.windows.net/in/x",
        "https://reader@h/c/x",
        "http://h:8080/c/x",
    ],
)
def test_a_userinfo_without_a_password_is_no_credential(url: str) -> None:
    """A container before '@', a user alone, a port: the URL goes into the JSON as given."""
    document = make(["-i", url, "--", "true"], environment={"SOURCE": url})
    assert url in str(document["commandLine"])


def test_credential_variable_names_are_refused_whatever_the_value() -> None:
    """AZURE_STORAGE_ACCOUNT_KEY and friends never go into task JSON."""
    with pytest.raises(ConfigError, match="AZURE_STORAGE_ACCOUNT_KEY"):
        make(environment={"AZURE_STORAGE_ACCOUNT_KEY": "short"})


@pytest.mark.parametrize(
    "secret",
    [
        f"az://c/x?{SAS}",
        "DefaultEndpointsProtocol=https;AccountName=a;AccountKey=c2VjcmV0a2V5MTIzNA==",
        "http://reader:c2VjcmV0pw@h:8080/c/x=a.txt",
        "abfs://reader:c2VjcmV0pw@account.dfs.core.windows.net/x",
    ],
    ids=["sas-url", "connection-string", "userinfo-password", "abfs-userinfo-password"],
)
def test_credential_in_a_run_argument_is_refused_without_echoing_it(secret: str) -> None:
    """A credential among the run arguments raises, naming its position and option only."""
    with pytest.raises(ConfigError) as caught:
        make(["--state", "az://s/", "-i", secret, "--", "true"])
    message = str(caught.value)
    assert "argument 3" in message
    assert "-i" in message
    assert "c2VjcmV0" not in message
    assert "\n" not in message


def test_value_of_a_credential_environment_variable_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A run argument holding the value of AZURE_STORAGE_SAS_TOKEN is caught too."""
    token = "se=2030&sp=r&sv=2022&opaque-token-value"
    monkeypatch.setenv("AZURE_STORAGE_SAS_TOKEN", token)
    with pytest.raises(ConfigError) as caught:
        make(["--token", token, "--", "true"])
    assert token not in str(caught.value)
