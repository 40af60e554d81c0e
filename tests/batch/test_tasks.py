"""Task files read as the service reads task objects: every shape task-json and the REST API
use, and each thing the service refuses refused with one line naming the task and field."""

from __future__ import annotations

import json
import re
import shlex
from typing import Any

import hypothesis
import pytest
from hypothesis import strategies as st

from taskkit.batch.taskjson import task_json
from taskkit.batch.tasks import ExitConditions, ExitOptions, parse_duration, read_tasks
from taskkit.exceptions import DataError
from taskkit.runner.policy import ExitPolicy


def obj(task_id: str, **fields: Any) -> dict[str, Any]:
    return {"id": task_id, "commandLine": "true", **fields}


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("PT1H30M", 5400), ("P2D", 172800), ("PT0.5S", 0.5), ("P1DT1S", 86401), ("PT10M", 600)],
)
def test_iso_durations_are_read_as_batch_takes_them(text: str, seconds: float) -> None:
    """Days, hours, minutes and (fractional) seconds."""
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["P", "PT", "1H", "PT1X", "P1DT", "", "PT-1S", "pt1h"])
def test_malformed_durations_are_refused(text: str) -> None:
    """Anything that is not an ISO 8601 duration is a ValueError."""
    with pytest.raises(ValueError, match="ISO 8601"):
        parse_duration(text)


def test_every_shape_of_file_gives_the_same_tasks() -> None:
    """A JSON array, JSON lines and task-json's pretty objects one after another."""
    objects = [obj("a"), obj("b")]
    shapes = [
        json.dumps(objects),
        "\n".join(json.dumps(o) for o in objects) + "\n",
        "\n".join(json.dumps(o, indent=2) for o in objects),
    ]
    ids = [[t.id for t in read_tasks(text, "f").tasks] for text in shapes]
    assert ids == [["a", "b"]] * 3


def test_what_task_json_prints_is_read_back_with_its_settings() -> None:
    """task-json's object: the argv comes back exactly, the retry count and the wall clock too."""
    made = task_json(["--", "echo", "a b", "$X"], task_id="t1", max_retries=2, deadline=60.0,
                     policy=ExitPolicy(), environment={"K": "v"})  # fmt: skip
    task = read_tasks(json.dumps(made), "f").tasks[0]
    assert task.argv[:2] == ("/bin/sh", "-c")
    assert task.argv[2].endswith("-- echo 'a b' '$X'")
    assert task.environment == {"K": "v"}
    assert task.max_retries == 2
    assert task.max_wall_clock is not None
    assert task.max_wall_clock > 60


def test_dependencies_are_read_from_ids_and_ranges() -> None:
    """taskIdRanges name the numeric ids in the range present in the file."""
    tasks = read_tasks(
        json.dumps([obj("1"), obj("2"), obj("5"), obj("z", dependsOn={
            "taskIds": ["5"], "taskIdRanges": [{"start": 1, "end": 3}]})]),
        "f",
    ).tasks  # fmt: skip
    assert tasks[-1].depends_on == ("5", "1", "2")


@pytest.mark.parametrize(
    ("objects", "words"),
    [
        ([obj("a"), obj("A")], "already used by task 'a'"),
        ([obj("a/b")], "not a Batch task id"),
        ([obj("x" * 65)], "not a Batch task id"),
        ([{"commandLine": "true"}], "no id"),
        ([{"id": "a"}], "commandLine"),
        ([obj("a", commandLine="echo 'open")], "cannot be split"),
        ([obj("a", colour="red")], "unknown field 'colour'"),
        ([obj("a", constraints={"maxTaskRetryCount": -2})], "maxTaskRetryCount"),
        ([obj("a", constraints={"maxTaskRetryCount": True})], "maxTaskRetryCount"),
        ([obj("a", constraints={"maxWallClockTime": "1h"})], "maxWallClockTime"),
        ([obj("a", constraints={"maxWallClockTime": "PT0S"})], "above zero"),
        ([obj("a", constraints={"maxRetries": 1})], "unknown field 'maxRetries'"),
        ([obj("a", dependsOn={"taskIds": ["nope"]})], "'nope' is no task of this file"),
        ([obj("a", dependsOn={"taskIds": ["a"]})], "cannot depend on itself"),
        (
            [obj("a", dependsOn={"taskIds": ["b"]}), obj("b", dependsOn={"taskIds": ["a"]})],
            "a cycle",
        ),
        ([obj("1", dependsOn={"taskIdRanges": [{"start": 5, "end": 9}]})], "no task has an id"),
        ([obj("a", requiredSlots=2)], "requiredSlots"),
        ([obj("a", environmentSettings=[{"name": "A=B", "value": "x"}])], "not a variable"),
        ([obj("a", environmentSettings={"A": "x"})], "environmentSettings"),
        ([obj("a", exitConditions={"exitCodes": [{"code": "3"}]})], "an integer"),
        ([obj("a", exitConditions={"default": {"jobAction": "explode"}})], "jobAction"),
        ([obj("a", exitConditions={"exitCodeRanges": [{"start": 9, "end": 1}]})], "above end"),
        ([obj("a", exitConditions={"onExit": {}})], "unknown field 'onExit'"),
        ([], "no tasks"),
        (["not an object"], "not a JSON object"),
    ],
)
def test_what_the_service_refuses_is_refused_naming_the_task(
    objects: list[Any], words: str
) -> None:
    """One DataError (exit 65) per case, naming the file and the field or the task."""
    with pytest.raises(DataError, match=words) as caught:
        read_tasks(json.dumps(objects), "tasks.json")
    assert str(caught.value).startswith("tasks.json")
    assert "\n" not in str(caught.value)


def test_not_json_and_repeated_fields_are_refused_with_their_line() -> None:
    """Broken JSON says where; a field given twice is refused, not silently overwritten."""
    with pytest.raises(DataError, match=r"not JSON: .* line 2"):
        read_tasks('{"id": "a", "commandLine": "true"}\n{"id": ', "f")
    with pytest.raises(DataError, match="'id' is given twice"):
        read_tasks('{"id": "a", "id": "b", "commandLine": "true"}', "f")


def test_fields_batch_knows_but_the_emulator_does_not_carry_out_are_returned() -> None:
    """resourceFiles and userIdentity are named with the tasks that use them."""
    found = read_tasks(
        json.dumps([obj("a", resourceFiles=[{"httpUrl": "x"}]), obj("b", userIdentity={"x": 1}),
                    obj("c", resourceFiles=[])]),
        "f",
    )  # fmt: skip
    assert dict(found.not_emulated) == {"resourceFiles": ("a",), "userIdentity": ("b",)}


def test_exit_conditions_are_looked_up_in_batchs_order() -> None:
    """Codes, then ranges, then default; exit 0 is a success unless a code names it; a
    command that could not start reads preProcessingError."""
    block, satisfy = (
        ExitOptions(dependency_action="block"),
        ExitOptions(dependency_action="satisfy"),
    )
    conditions = ExitConditions(
        codes={3: satisfy, 0: block},
        ranges=((1, 5, block),),
        pre_processing_error=satisfy,
        default=satisfy,
    )
    assert conditions.for_exit(3) is satisfy
    assert conditions.for_exit(4) is block
    assert conditions.for_exit(0) is block
    assert conditions.for_exit(9) is satisfy
    assert conditions.for_exit(None) is satisfy
    assert ExitConditions(default=block).for_exit(0).resolved(True) == ("none", "satisfy")
    assert ExitOptions().resolved(False) == ("terminate", "block")


def test_what_would_change_the_task_is_refused_and_ids_match_ignoring_case() -> None:
    """A container task is refused (it would run as a host process); AZ_BATCH_* settings are
    the service's; a dependency written in another case names the same task; a retention time
    is named as not emulated."""
    with pytest.raises(DataError, match="containerSettings is not emulated"):
        read_tasks(json.dumps([obj("a", containerSettings={"imageName": "x"})]), "f")
    with pytest.raises(DataError, match="AZ_BATCH_NODE_ID is the service's"):
        read_tasks(json.dumps([obj("a", environmentSettings=[
            {"name": "AZ_BATCH_NODE_ID", "value": "x"}])]), "f")  # fmt: skip
    found = read_tasks(
        json.dumps([obj("Prep"), obj("b", dependsOn={"taskIds": ["prep"]},
                                     constraints={"retentionTime": "P1D"})]),
        "f",
    )  # fmt: skip
    assert found.tasks[1].depends_on == ("Prep",)
    assert dict(found.not_emulated) == {"constraints.retentionTime": ("b",)}


def test_a_wall_clock_past_a_tasks_lifetime_is_no_limit() -> None:
    """What the service shows for "no limit" (TimeSpan.MaxValue) reads as no limit."""
    tasks = read_tasks(json.dumps([
        obj("a", constraints={"maxWallClockTime": "P10675199DT2H48M5.4775807S"}),
        obj("b", constraints={"maxWallClockTime": "P180D"}),
        obj("c", constraints={"maxWallClockTime": "P179D"})]), "f").tasks  # fmt: skip
    assert [t.max_wall_clock for t in tasks] == [None, None, 179 * 86400]


def test_a_rest_task_collection_is_read_and_a_string_of_ids_is_refused() -> None:
    """The REST body of Add Task Collection ({"value": [...]}) holds the tasks; taskIds given
    as a string is refused, not read letter by letter."""
    found = read_tasks(json.dumps({"value": [obj("a"), obj("b")]}), "f")
    assert [t.id for t in found.tasks] == ["a", "b"]
    with pytest.raises(DataError, match="taskIds: a list is needed"):
        read_tasks(json.dumps([obj("a"), obj("b", dependsOn={"taskIds": "a"})]), "f")


@pytest.mark.parametrize(
    ("conditions", "words"),
    [
        (
            {"exitCodes": [{"code": 3, "exitOption": {}}]},
            "exitCodes[1]: unknown field 'exitOption'",
        ),
        ({"default": {"jobActions": "none"}}, "default.exitOptions: unknown field 'jobActions'"),
        ({"exitCodes": ["x"]}, "exitCodes[1]: code: an integer"),
        ({"default": "block"}, "default.exitOptions: an object is needed"),
    ],
)
def test_a_misspelt_exit_condition_is_named(conditions: dict[str, Any], words: str) -> None:
    """The field that is wrong, by name and place, not only what would have been right."""
    with pytest.raises(DataError, match=re.escape(words)):
        read_tasks(json.dumps([obj("a", exitConditions=conditions)]), "f")


def test_the_line_named_is_counted_across_many_objects() -> None:
    """Lines are counted as the objects are read (not from the start for each, which was
    quadratic): a key given twice in the third JSON line, or a non-object after a pretty
    object of four lines, is named by its own line."""
    ok = '{"id": "a%d", "commandLine": "true"}\n'
    with pytest.raises(DataError, match="line 3: "):
        read_tasks(ok % 1 + ok % 2 + '{"id": "x", "id": "y", "commandLine": "true"}\n', "f")
    pretty = json.dumps({"id": "a", "commandLine": "true"}, indent=2)  # four lines
    with pytest.raises(DataError, match="line 6: task 3 is not a JSON object"):
        read_tasks(pretty + "\n" + ok % 2 + "7\n", "f")


@hypothesis.settings(max_examples=3000, deadline=None)
@hypothesis.given(
    st.lists(st.sampled_from(["a", "é", " ", "\t", "\n", "'", '"', "\\", "x y"]), max_size=16)
)
def test_the_one_pass_check_of_a_command_line_agrees_with_shlex(parts: list[str]) -> None:
    """What the service-side reading checks without splitting (the longest word, and whether
    the line can be split at all) is what shlex.split (POSIX) finds."""
    from taskkit.batch.tasks import _words_shape

    line = "".join(parts)
    longest, why = _words_shape(line)
    try:
        words: list[str] | None = shlex.split(line)
        problem = None
    except ValueError as exc:
        words, problem = None, str(exc)
    assert why == problem
    if words is not None:
        assert longest == max(map(len, words), default=0)
