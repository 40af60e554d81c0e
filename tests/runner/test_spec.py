"""taskkit.runner.spec: durations, the RunSpec value, spec files, and where each setting comes
from."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pydantic
import pytest

from taskkit.exceptions import ConfigError, UsageError
from taskkit.runner.spec import RunSpec, load_spec_file, parse_duration, resolve

# -- parse_duration -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        (90, 90.0),
        (1.5, 1.5),
        ("90", 90.0),
        ("90s", 90.0),
        ("5m", 300.0),
        ("2h30m", 9000.0),
        ("1d", 86400.0),
        ("250ms", 0.25),
        (" 1h 30m ", 5400.0),
        ("1.5h", 5400.0),
        ("1H", 3600.0),
    ],
)
def test_parse_duration_reads_numbers_and_units(text: object, seconds: float) -> None:
    """Plain numbers are seconds; d, h, m, s and ms units add up, spaces between parts allowed."""
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "bad",
    ["", "   ", "x", "5x", "-1", "0", "0s", 0, -5, True, False, "1h30", math.inf, math.nan, None],
)
def test_parse_duration_refuses_what_is_not_a_positive_duration(bad: object) -> None:
    """Empty, unknown units, negative, zero, booleans, a bare number after a unit, infinity and
    NaN are ValueErrors with a one-line message quoting the value."""
    with pytest.raises(ValueError, match="duration") as caught:
        parse_duration(bad)
    assert "\n" not in str(caught.value)
    assert repr(bad) in str(caught.value)


# -- RunSpec ------------------------------------------------------------------------------------


def test_run_spec_defaults() -> None:
    """Nothing given: no command, success is exit 0, no retries, 30 s logs, 5 min checkpoints."""
    spec = RunSpec.model_validate({})
    assert spec.command == ()
    assert spec.inputs == spec.outputs == ()
    assert spec.max_retries == 0
    assert spec.success_codes == "0"
    assert spec.permanent_codes == ""
    assert spec.retryable_codes is None
    assert spec.deadline is None
    assert spec.log_interval == 30.0
    assert spec.checkpoint_interval == 300.0


def test_run_spec_is_frozen() -> None:
    """A RunSpec cannot be changed after it is built."""
    spec = RunSpec.model_validate({"job_id": "job"})
    with pytest.raises(pydantic.ValidationError):
        spec.job_id = "other"
    assert spec.job_id == "job"


def test_run_spec_forbids_unknown_keys() -> None:
    """A misspelt setting is an error, not silently ignored."""
    with pytest.raises(pydantic.ValidationError, match="max_retry"):
        RunSpec.model_validate({"max_retry": 3})


@pytest.mark.parametrize("good", ["a", "job-1_B", "x" * 64, "0"])
def test_run_spec_accepts_batch_ids(good: str) -> None:
    """Job and task ids of 1-64 letters, digits, hyphens and underscores are taken as given."""
    spec = RunSpec.model_validate({"job_id": good, "task_id": good})
    assert (spec.job_id, spec.task_id) == (good, good)


@pytest.mark.parametrize("bad", ["", "x" * 65, "a b", "a/b", "a.b", "ü", "job\n"])
@pytest.mark.parametrize("field", ["job_id", "task_id"])
def test_run_spec_refuses_ids_batch_would_refuse(field: str, bad: str) -> None:
    """An empty, too long, or otherwise non-Batch id is refused."""
    with pytest.raises(pydantic.ValidationError, match="Batch id"):
        RunSpec.model_validate({field: bad})


@pytest.mark.parametrize(
    ("given", "canonical"),
    [("5-9,2", "2,5-9"), ("3, 1 ,2", "1-3"), ([7, 5, 6], "5-7"), (4, "4"), ("", "")],
)
def test_run_spec_canonicalises_codes(given: object, canonical: str) -> None:
    """Codes as text, a list or one int are stored sorted with ranges merged."""
    spec = RunSpec.model_validate({"permanent_codes": given})
    assert spec.permanent_codes == canonical


@pytest.mark.parametrize("bad", ["256", "a", "5-", "1,,2", [1, "x"], -1, True])
def test_run_spec_refuses_bad_codes(bad: object) -> None:
    """Codes outside 0-255 or not numbers are refused."""
    with pytest.raises(pydantic.ValidationError):
        RunSpec.model_validate({"retryable_codes": bad})


#: Two valid items of each list setting.
_ITEMS = {
    "command": ("a b", "b"),
    "inputs": ("a b", "az://c/d=e"),
    "outputs": ("a b=memory://o/", "b/=memory://o/x"),
}


def _as_given(spec: RunSpec, field: str) -> tuple[str, ...]:
    """A list setting of ``spec`` as it was given: the command, or the inputs' or outputs' texts."""
    return {"command": spec.command, "inputs": spec.input_texts, "outputs": spec.output_texts}[
        field
    ]


@pytest.mark.parametrize("field", ["command", "inputs", "outputs"])
def test_run_spec_takes_a_string_or_a_list_of_strings(field: str) -> None:
    """A single string is a one-item tuple; a list becomes a tuple; a non-string item is refused."""
    one, two = _ITEMS[field]
    assert _as_given(RunSpec.model_validate({field: one}), field) == (one,)
    assert _as_given(RunSpec.model_validate({field: [one, two]}), field) == (one, two)
    with pytest.raises(pydantic.ValidationError, match="every item must be a string"):
        RunSpec.model_validate({field: [one, 1]})


def test_run_spec_parses_durations() -> None:
    """deadline, log_interval and checkpoint_interval take duration text."""
    spec = RunSpec.model_validate(
        {"deadline": "2h", "log_interval": "10s", "checkpoint_interval": "1m"}
    )
    assert (spec.deadline, spec.log_interval, spec.checkpoint_interval) == (7200.0, 10.0, 60.0)


def test_run_spec_refuses_max_retries_below_minus_one() -> None:
    """-1 means unlimited; anything lower is an error."""
    assert RunSpec(max_retries=-1).max_retries == -1
    with pytest.raises(pydantic.ValidationError):
        RunSpec(max_retries=-2)


# -- load_spec_file -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("s.toml", 'max-retries = 2\ninputs = ["a", "b"]\n'),
        ("s.yaml", "max-retries: 2\ninputs: [a, b]\n"),
        ("s.yml", "max-retries: 2\ninputs:\n  - a\n  - b\n"),
        ("s.json", '{"max-retries": 2, "inputs": ["a", "b"]}'),
        ("S.JSON", '{"max-retries": 2, "inputs": ["a", "b"]}'),
    ],
)
def test_load_spec_file_reads_each_format(tmp_path: Path, name: str, text: str) -> None:
    """TOML, YAML (.yaml, .yml) and JSON give the same table, keys as written."""
    path = tmp_path / name
    path.write_text(text)
    assert load_spec_file(path) == {"max-retries": 2, "inputs": ["a", "b"]}


@pytest.mark.parametrize("text", ["", "# only a comment\n", "---\n"])
def test_load_spec_file_empty_yaml_is_no_settings(tmp_path: Path, text: str) -> None:
    """An empty YAML document is an empty table."""
    path = tmp_path / "empty.yaml"
    path.write_text(text)
    assert load_spec_file(path) == {}


@pytest.mark.parametrize(
    ("name", "text"),
    [("l.yaml", "- a\n- b\n"), ("l.json", "[1, 2]"), ("s.json", '"text"'), ("n.yml", "42\n")],
)
def test_load_spec_file_refuses_a_top_level_that_is_not_a_table(
    tmp_path: Path, name: str, text: str
) -> None:
    """A list or a scalar at the top is a ConfigError naming the file."""
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ConfigError, match="must be a table") as caught:
        load_spec_file(path)
    assert str(path) in str(caught.value)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("b.toml", "a = [\n"),
        ("b.yaml", "x: [\n  y: : z\n"),
        ("b.yml", "x: [\n"),
        ("b.json", "{bad\n\n}"),
        ("u.json", b"\xff\xfe{}"),
        ("u.toml", b"a = '\xff'"),
    ],
)
def test_load_spec_file_unparseable_is_a_one_line_config_error(
    tmp_path: Path, name: str, text: str | bytes
) -> None:
    """A file its parser refuses (or that is not UTF-8) is one ConfigError line naming the file."""
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    with pytest.raises(ConfigError, match="not valid") as caught:
        load_spec_file(path)
    assert str(path) in str(caught.value)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("name", ["spec.ini", "spec", "spec.txt"])
def test_load_spec_file_refuses_an_unknown_suffix(tmp_path: Path, name: str) -> None:
    """Only .toml, .yaml, .yml and .json are read; the error names the file."""
    path = tmp_path / name
    path.write_text("{}")
    with pytest.raises(ConfigError, match="unknown spec format") as caught:
        load_spec_file(path)
    assert str(path) in str(caught.value)


def test_load_spec_file_missing_is_a_config_error(tmp_path: Path) -> None:
    """A spec that does not exist is a ConfigError naming it, not a FileNotFoundError."""
    path = tmp_path / "missing.toml"
    with pytest.raises(ConfigError, match="cannot read the spec") as caught:
        load_spec_file(path)
    assert str(path) in str(caught.value)
    assert "\n" not in str(caught.value)


# -- resolve ------------------------------------------------------------------------------------


def _spec(tmp_path: Path, data: dict[str, object], name: str = "spec.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return path


def test_resolve_with_nothing_is_the_defaults() -> None:
    """No options, no file, an empty environment: the RunSpec defaults."""
    assert resolve({}, environ={}) == RunSpec.model_validate({})


def test_resolve_precedence_cli_env_file_batch(tmp_path: Path) -> None:
    """The command line beats TASKKIT_* beats the spec file beats AZ_BATCH_* beats defaults."""
    path = _spec(
        tmp_path, {"job-id": "file", "task-id": "file", "max-retries": 1, "state": "memory://s"}
    )
    environ = {
        "TASKKIT_JOB_ID": "env",
        "TASKKIT_TASK_ID": "env",
        "AZ_BATCH_JOB_ID": "batch",
        "AZ_BATCH_TASK_ID": "batch",
    }
    spec = resolve({"job_id": "cli"}, spec_file=path, environ=environ)
    assert spec.job_id == "cli"
    assert spec.task_id == "env"
    assert spec.max_retries == 1
    assert spec.state == "memory://s"
    assert spec.log_interval == 30.0


def test_resolve_spec_file_beats_batch_ids(tmp_path: Path) -> None:
    """Ids in the spec file win over Batch's variables."""
    path = _spec(tmp_path, {"job_id": "file"})
    environ = {"AZ_BATCH_JOB_ID": "batch", "AZ_BATCH_TASK_ID": "batch-task"}
    spec = resolve({}, spec_file=path, environ=environ)
    assert (spec.job_id, spec.task_id) == ("file", "batch-task")


def test_resolve_batch_ids_are_the_last_fallback() -> None:
    """AZ_BATCH_JOB_ID/AZ_BATCH_TASK_ID fill ids nothing else gave."""
    spec = resolve({}, environ={"AZ_BATCH_JOB_ID": "j", "AZ_BATCH_TASK_ID": "t"})
    assert (spec.job_id, spec.task_id) == ("j", "t")


def test_resolve_not_given_options_do_not_override() -> None:
    """None and () on the command line are "not given"; 0 is a value and wins."""
    environ = {"TASKKIT_MAX_RETRIES": "5", "TASKKIT_INPUTS": "a", "TASKKIT_STATE": "memory://s"}
    spec = resolve({"inputs": (), "state": None, "max_retries": 0}, environ=environ)
    assert spec.input_texts == ("a",)
    assert spec.state == "memory://s"
    assert spec.max_retries == 0


def test_resolve_empty_environment_values_are_not_given(tmp_path: Path) -> None:
    """TASKKIT_X="" does not override the spec file."""
    path = _spec(tmp_path, {"state": "memory://from-file"})
    spec = resolve({}, spec_file=path, environ={"TASKKIT_STATE": ""})
    assert spec.state == "memory://from-file"


def test_resolve_reads_every_setting_from_the_environment() -> None:
    """Each TASKKIT_<NAME> sets <name>, parsed as the file value would be."""
    environ = {
        "TASKKIT_STATE": "memory://state",
        "TASKKIT_WORKDIR": "/w",
        "TASKKIT_MAX_RETRIES": "3",
        "TASKKIT_SUCCESS_CODES": "5-9,2",
        "TASKKIT_PERMANENT_CODES": "10",
        "TASKKIT_RETRYABLE_CODES": "11",
        "TASKKIT_DEADLINE": "1h",
        "TASKKIT_LOG_INTERVAL": "5s",
        "TASKKIT_CHECKPOINT_DIR": "ckpt",
        "TASKKIT_CHECKPOINT_INTERVAL": "2m",
        "TASKKIT_OUTPUTS": "out/**=memory://o/",
    }
    spec = resolve({}, environ=environ)
    assert spec.state == "memory://state"
    assert spec.workdir == "/w"
    assert spec.max_retries == 3
    assert spec.success_codes == "2,5-9"
    assert (spec.permanent_codes, spec.retryable_codes) == ("10", "11")
    assert (spec.deadline, spec.log_interval, spec.checkpoint_interval) == (3600.0, 5.0, 120.0)
    assert spec.checkpoint_dir == "ckpt"
    assert spec.output_texts == ("out/**=memory://o/",)


def test_resolve_ignores_a_command_in_the_environment() -> None:
    """The command comes from the command line or the spec file only."""
    assert resolve({}, environ={"TASKKIT_COMMAND": "rm -rf /"}).command == ()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a b\tc", ("a b\tc",)),
        ("  a  ", ("a",)),
        ("a b=x/\nc d", ("a b=x/", "c d")),
        ("a\nb\n", ("a", "b")),
        ("a\n\nb\n", ("a", "b")),
    ],
)
def test_resolve_splits_list_variables(text: str, expected: tuple[str, ...]) -> None:
    """TASKKIT_INPUTS/OUTPUTS split on newlines when there are any (so names may hold
    spaces), else on whitespace; blank lines are no item."""
    assert resolve({}, environ={"TASKKIT_INPUTS": text}).input_texts == expected
    # The same lines as outputs, each naming a destination (its blanks kept around it).
    dest = "=memory://o/"
    as_outputs = "\n".join(
        line.rstrip() + dest + line[len(line.rstrip()) :] if line.strip() else line
        for line in text.split("\n")
    )
    outputs = resolve({}, environ={"TASKKIT_OUTPUTS": as_outputs}).output_texts
    assert outputs == tuple(item + dest for item in expected)


def test_resolve_takes_dashed_and_underscored_keys_in_files(tmp_path: Path) -> None:
    """max-retries and max_retries in a spec file are the same setting."""
    toml = tmp_path / "s.toml"
    toml.write_text('max-retries = 4\nsuccess-codes = [2, 0, 1]\ncheckpoint_interval = "1m"\n')
    spec = resolve({}, spec_file=toml, environ={})
    assert spec.max_retries == 4
    assert spec.success_codes == "0-2"
    assert spec.checkpoint_interval == 60.0


def test_resolve_reads_a_command_from_a_yaml_spec(tmp_path: Path) -> None:
    """A YAML spec can give the command as a list, or as one string."""
    listed = tmp_path / "l.yaml"
    listed.write_text("command: [python, -c, 'print(1)']\n")
    assert resolve({}, spec_file=listed, environ={}).command == ("python", "-c", "print(1)")
    single = tmp_path / "s.yml"
    single.write_text("command: ./run.sh\n")
    assert resolve({}, spec_file=single, environ={}).command == ("./run.sh",)


def _one_line_error(**kwargs: object) -> str:
    with pytest.raises(ConfigError) as caught:
        resolve(**kwargs)  # type: ignore[arg-type]
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_resolve_file_error_names_the_file_and_the_key(tmp_path: Path) -> None:
    """A bad value in the spec file names the file's path and the key as written."""
    toml = tmp_path / "s.toml"
    toml.write_text('max-retries = "lots"\n')
    message = _one_line_error(options={}, spec_file=toml, environ={})
    assert str(toml) in message
    assert "max-retries" in message


@pytest.mark.parametrize(("key", "value"), [("inputs", ["=x"]), ("outputs", ["out/**"])])
def test_resolve_a_malformed_input_or_output_names_its_file_or_variable(
    tmp_path: Path, key: str, value: list[str]
) -> None:
    """A malformed SRC=DEST or GLOB=DEST in the spec file or a variable names where it came
    from (a usage error, 200 in taskkit run); on the command line it is said as typed."""
    path = _spec(tmp_path, {key: value})
    with pytest.raises(UsageError) as info:
        resolve({}, spec_file=path, environ={})
    assert info.value.message.startswith(f"{path}: {key}: ")
    variable = f"TASKKIT_{key.upper()}"
    with pytest.raises(UsageError) as info:
        resolve({}, environ={variable: value[0]})
    assert info.value.message.startswith(f"environment: {variable}: ")
    with pytest.raises(UsageError) as info:
        resolve({key: tuple(value)}, environ={})
    assert info.value.message.startswith(("input", "output"))


def test_resolve_unknown_key_in_a_file_names_the_file_and_the_key(tmp_path: Path) -> None:
    """An unknown key in the spec file is named, with the file."""
    path = _spec(tmp_path, {"max-retry": 1})
    message = _one_line_error(options={}, spec_file=path, environ={})
    assert str(path) in message
    assert "'max-retry'" in message
    assert "unknown setting" in message


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("TASKKIT_MAX_RETRIES", "x"),
        ("TASKKIT_JOB_ID", "bad id"),
        ("TASKKIT_DEADLINE", "5x"),
        ("TASKKIT_SUCCESS_CODES", "1-"),
        ("TASKKIT_LOG_INTERVAL", "0"),
    ],
)
def test_resolve_environment_error_names_the_variable(variable: str, value: str) -> None:
    """A bad TASKKIT_* value is a ConfigError naming the variable."""
    message = _one_line_error(options={}, environ={variable: value})
    assert variable in message


@pytest.mark.parametrize(
    ("options", "flag"),
    [
        ({"max_retries": -5}, "--max-retries"),
        ({"task_id": "a b"}, "--task-id"),
        ({"checkpoint_interval": "soon"}, "--checkpoint-interval"),
        ({"bogus_option": 1}, "--bogus-option"),
    ],
)
def test_resolve_command_line_error_names_the_option(options: dict[str, object], flag: str) -> None:
    """A bad command-line value is a ConfigError naming the --option."""
    message = _one_line_error(options=options, environ={})
    assert flag in message


def test_resolve_bad_batch_id_names_the_batch_variable() -> None:
    """An id Batch's variable gave that is not valid names AZ_BATCH_JOB_ID."""
    message = _one_line_error(options={}, environ={"AZ_BATCH_JOB_ID": "no spaces"})
    assert "AZ_BATCH_JOB_ID" in message


def test_resolve_checks_each_source_on_its_own(tmp_path: Path) -> None:
    """A bad value in the file is reported as the file's even when the environment overrides
    the same key (so the user learns which source is wrong)."""
    path = _spec(tmp_path, {"max-retries": "many"})
    message = _one_line_error(options={}, spec_file=path, environ={"TASKKIT_MAX_RETRIES": "1"})
    assert str(path) in message


def test_resolve_refuses_overlapping_codes(tmp_path: Path) -> None:
    """A code both permanent and retryable, even from different sources, is a ConfigError."""
    message = _one_line_error(
        options={"permanent_codes": "3"}, environ={"TASKKIT_RETRYABLE_CODES": "3"}
    )
    assert "3" in message
    path = _spec(tmp_path, {"permanent-codes": [3], "retryable-codes": "1-5"})
    message = _one_line_error(options={}, spec_file=path, environ={})
    assert "3" in message


def test_resolve_refuses_a_success_code_that_is_also_permanent() -> None:
    """Exit 0 cannot be permanent: it means success."""
    _one_line_error(options={"permanent_codes": "0"}, environ={})


def test_resolve_never_reads_the_real_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """With ``environ=`` given, os.environ is not consulted."""
    monkeypatch.setenv("TASKKIT_MAX_RETRIES", "9")
    monkeypatch.setenv("AZ_BATCH_JOB_ID", "real")
    spec = resolve({}, environ={})
    assert spec.max_retries == 0
    assert spec.job_id is None


@pytest.mark.parametrize("state", ["az://", "file://", "  ", "memory:///"])
def test_a_state_that_names_no_place_is_refused(state: str) -> None:
    """A scheme alone (an unset $CONTAINER in az://$CONTAINER) or blanks is an error, not a
    journal in some local directory."""
    with pytest.raises(ConfigError, match="names no place"):
        resolve({"state": state}, environ={})


def test_a_local_state_path_is_made_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A relative state path means the same directory for the command and its steps."""
    monkeypatch.chdir(tmp_path)
    assert resolve({"state": "rel/state"}, environ={}).state == str(tmp_path / "rel" / "state")


def test_yes_is_not_a_number_of_retries(tmp_path: Path) -> None:
    """YAML's yes is a boolean, never 1 retry."""
    path = tmp_path / "spec.yaml"
    path.write_text("max-retries: yes\n")
    with pytest.raises(ConfigError, match="max-retries"):
        resolve({}, spec_file=path, environ={})


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("spec.toml", "max-retries = 2\nmax_retries = 5\n"),
        ("spec.json", '{"state": "memory://a", "state": "memory://b"}'),
        ("spec.yaml", "state: memory://a\nstate: memory://b\n"),
    ],
)
def test_a_setting_given_twice_in_a_file_is_refused(tmp_path: Path, name: str, text: str) -> None:
    """Two spellings of one key, or one key twice, is an error naming the file."""
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ConfigError, match=name) as caught:
        resolve({}, spec_file=path, environ={})
    assert "\n" not in str(caught.value)


def test_inputs_from_the_environment_are_one_per_line() -> None:
    """A blob name with spaces stays one input; blank lines are no inputs."""
    spec = resolve({}, environ={"TASKKIT_INPUTS": "az://c/sp ace.txt=in/a.txt\n\naz://c/b=b\n"})
    assert spec.input_texts == ("az://c/sp ace.txt=in/a.txt", "az://c/b=b")


def test_intervals_below_a_second_are_refused() -> None:
    """Every interval is a write to the store: 1 ms would be a flood."""
    with pytest.raises(ConfigError, match="log-interval"):
        resolve({"log_interval": "1ms"}, environ={})


@pytest.mark.parametrize("text", ["1h1h", "5m 5m", "2s1h2s", "\u0663s", "1\u0660m", "\uff15s"])
def test_a_duration_with_a_unit_twice_or_other_digits_is_refused(text: str) -> None:
    """'1h1h' is a slip, not two hours; digits other than ASCII 0-9 (Arabic-Indic, full
    width) are no number a user typed on purpose: both are refused, naming the value."""
    with pytest.raises(ValueError, match=r"duration|twice"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("key", "value"),
    [("max_retries", 2**31), ("jobs", 1025), ("retries", 101), ("max_retries", -2)],
)
def test_counts_beyond_what_batch_or_a_node_can_hold_are_refused(key: str, value: int) -> None:
    """maxTaskRetryCount is a 32-bit integer in Batch; requests in flight and tries of one
    request have a sane ceiling: a value past one is refused naming the option."""
    with pytest.raises(ConfigError, match=key.replace("_", "-")):
        resolve({key: value}, environ={})


@pytest.mark.parametrize("state", ["http://h/state/runs", "HTTPS://h/state/runs?sv=1&sig=x"])
def test_a_state_over_http_is_refused(state: str) -> None:
    """The journal is written: an http(s) URL (which taskkit only reads) is refused at once,
    naming the way to give a token, never printing one."""
    with pytest.raises(ConfigError, match="AZURE_STORAGE_SAS_TOKEN") as info:
        resolve({"state": state}, environ={})
    assert "sig=x" not in str(info.value)


@pytest.mark.parametrize("state", ["az://state/../x", "az://state//x", "file:///s/./x"])
def test_a_state_whose_path_has_an_empty_dot_or_dotdot_segment_is_refused(state: str) -> None:
    """The journal's blob names would hold '..', '.' or '//': refused at parse time, not by
    the service after a request."""
    with pytest.raises(ConfigError, match="segment"):
        resolve({"state": state}, environ={})


def test_inputs_and_outputs_are_parsed_once_and_keep_their_text() -> None:
    """The spec holds Input and Output values, parsed when it is made; the texts they were
    given as are kept, and serializing the spec writes them back."""
    from taskkit.transfer.patterns import Output
    from taskkit.transfer.stage_plan import Input

    given = {"inputs": ["az://c/in/a.txt", "az://c/y=2024/="], "outputs": ["out/=memory://o/x"]}
    spec = RunSpec.model_validate(given)
    assert spec.inputs == (Input("az://c/in/a.txt", "a.txt"), Input("az://c/y=2024/", "y=2024/"))
    assert spec.outputs == (Output("out/**", "memory://o/x/"),)
    assert spec.model_dump(include={"inputs", "outputs"}) == given
    assert RunSpec.model_validate(spec.model_dump()) == spec
    values = RunSpec(inputs=[Input("az://c/a", "b")], outputs=Output("o/**", "memory://o/"))
    assert (values.input_texts, values.output_texts) == (("az://c/a=b",), ("o/**=memory://o/",))


@pytest.mark.parametrize(
    ("field", "bad", "message"),
    [
        ("inputs", "=x", "names no source"),
        ("inputs", "az://c/a=az://c/b", "must be a local path"),
        ("outputs", "out/**", "has no destination"),
        ("outputs", "../x=memory://o/", "must not leave the working directory"),
    ],
)
def test_a_malformed_input_or_output_is_refused_with_the_settings(
    field: str, bad: str, message: str
) -> None:
    """A SRC=DEST or GLOB=DEST that does not parse is refused when the spec is made, from the
    command line or the environment alike, with the UsageError taskkit stage and upload give
    (run exit 200), before anything is run."""
    with pytest.raises(UsageError, match=message):
        resolve({field: (bad,)}, environ={})
    with pytest.raises(UsageError, match=message):
        resolve({}, environ={f"TASKKIT_{field.upper()}": bad})
