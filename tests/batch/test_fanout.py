"""taskkit.batch.fanout: a task-json template fanned out into many tasks, placeholders filled
inside argv words, ids stable and valid, shards grouped with their own journals."""

from __future__ import annotations

import json
import os
import shlex
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from taskkit.batch.fanout import FanOut, plan_fanout, read_template
from taskkit.batch.params import read_params
from taskkit.batch.taskjson import task_json
from taskkit.batch.tasks import read_tasks
from taskkit.exceptions import ConfigError, DataError, UsageError
from taskkit.runner.policy import DEFAULT_POLICY


def template_of(args: list[str], *, task_id: str = "tpl", verb: str = "run", **extra: Any) -> str:
    """The JSON text of a template made by task_json, fields of ``extra`` added."""
    made = task_json(
        args,
        task_id=task_id,
        max_retries=2,
        deadline=600.0,
        policy=DEFAULT_POLICY,
        program=extra.pop("program", "taskkit"),
        verb=verb,
        environment=extra.pop("environment", {}),
    )
    made.update(extra)
    return json.dumps(made, indent=2)


def plan(text: str, source: Any, **options: Any) -> FanOut:
    return plan_fanout(read_template(text, "tpl.json"), source, **options)


def jsonl(tmp_path: Path, *rows: dict[str, Any]) -> Any:
    path = tmp_path / "p.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return read_params(str(path))


def csv(tmp_path: Path, text: str) -> Any:
    path = tmp_path / "p.csv"
    path.write_text(text)
    return read_params(str(path))


def inner_words(task: dict[str, Any]) -> list[str]:
    """The words sh runs, split as Batch and then sh split the command line."""
    shell, flag, inner = shlex.split(task["commandLine"])
    assert (shell, flag) == ("/bin/sh", "-c")
    return shlex.split(inner)


# --- Values reach the program byte for byte ------------------------------------------------------

HOSTILE = [
    "plain",
    "has space",
    "it's",
    'say "hi"',
    "$HOME ${PATH} $(id) `id`",
    "a;b && c | d > e",
    "line1\nline2\n",
    "*.csv [a-z] ~root #x",
    "héllo ✓ 日本語 🎉",
    "back\\slash \\'",
    "{not a placeholder}",
    "",
    "--",
    "-n",
]


@pytest.fixture
def argv_printer(tmp_path: Path) -> Path:
    """An executable in a directory whose name needs quoting; it appends its argv as a JSON
    line to the file $ARGV_LOG names, and exits with N when its last argument is exit=N."""
    directory = tmp_path / "prog dir's $HOME"
    directory.mkdir()
    script = directory / "argv-printer"
    script.write_text(
        f"#!{sys.executable}\nimport json, os, sys\n"
        "with open(os.environ['ARGV_LOG'], 'a') as f: f.write(json.dumps(sys.argv[1:]) + '\\n')\n"
        "sys.exit(int(sys.argv[-1][5:]) if sys.argv[-1].startswith('exit=') else 0)\n",
        encoding="utf-8",
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script


def run_line(task: dict[str, Any], cwd: Path) -> int:
    """Run the task's command line as Batch would: split into words, no shell of its own;
    the argv printer logs to cwd/argv.jsonl."""
    words = shlex.split(task["commandLine"])
    env = {**os.environ, "ARGV_LOG": str(cwd / "argv.jsonl")}
    return subprocess.run(words, cwd=cwd, env=env, check=False, timeout=60).returncode


def printed(cwd: Path) -> list[list[str]]:
    """The argv of each run of the printer, in order."""
    return [json.loads(line) for line in (cwd / "argv.jsonl").read_text().splitlines()]


def test_every_hostile_value_reaches_the_program_exactly(
    tmp_path: Path, argv_printer: Path
) -> None:
    """Values with spaces, quotes, $, backticks, newlines, globs, non-ASCII, braces: run
    through Batch's splitting and a real /bin/sh, the program gets each whole and unchanged,
    alone and inside a word."""
    (tmp_path / "a-file-a-glob-would-find.csv").touch()
    text = template_of(["--", "{v}", "pre-{v}-post", "{{literal}}"], program=str(argv_printer))
    fan = plan(text, jsonl(tmp_path, *({"v": v} for v in HOSTILE)))
    for task in fan.tasks():
        assert run_line(task, tmp_path) == 0
    assert printed(tmp_path) == [["run", "--", v, f"pre-{v}-post", "{literal}"] for v in HOSTILE]


def test_a_group_runs_its_shards_in_order_each_with_its_own_task_id(
    tmp_path: Path, argv_printer: Path
) -> None:
    """A task of --group 3 runs three taskkit runs one after another, each given
    --task-id <shard id> first; the last group holds the rest."""
    text = template_of(["--", "x", "{shard}", "{id}"], program=str(argv_printer))
    tasks = list(plan(text, 5, group=3).tasks())
    assert [t["id"] for t in tasks] == ["tpl-g0", "tpl-g1"]
    for task in tasks:
        assert run_line(task, tmp_path) == 0
    assert printed(tmp_path) == [
        ["run", "--task-id", f"tpl-{n}", "--", "x", str(n), f"tpl-{n}"] for n in range(5)
    ]


def test_a_group_stops_at_the_first_failing_shard_with_its_code(
    tmp_path: Path, argv_printer: Path
) -> None:
    """Shard 1 exits 7: shard 2 does not run and the task exits 7, so the template's exit
    conditions read that shard's code."""
    fan = plan(
        template_of(["--", "exit={code}"], program=str(argv_printer)),
        csv(tmp_path, "code\n0\n7\n0\n"),
        group=3,
    )
    (task,) = fan.tasks()
    assert run_line(task, tmp_path) == 7
    assert [words[-1] for words in printed(tmp_path)] == ["exit=0", "exit=7"]


def test_a_line_past_linuxs_argument_limit_is_refused_and_one_below_it_runs(
    tmp_path: Path, argv_printer: Path
) -> None:
    """sh -c takes its line as one argument, which Linux caps at 128 KiB: a task of one
    120,000-character value runs; two of 70,000 in one group would not start, so the plan
    refuses that task, naming it and its first row."""
    text = template_of(["--", "{v}"], program=str(argv_printer))
    (task,) = plan(text, jsonl(tmp_path, {"v": "x" * 120_000})).tasks()
    assert run_line(task, tmp_path) == 0
    assert printed(tmp_path) == [["run", "--", "x" * 120_000]]
    fan = plan(text, jsonl(tmp_path, {"v": "a" * 70_000}, {"v": "b" * 70_000}), group=2)
    with pytest.raises(DataError, match=r"task tpl-g0 \(from line 1\): .* at most 131071 "):
        list(fan.tasks())


def test_the_last_shard_of_a_group_is_execed() -> None:
    """sh replaces itself with the last shard's taskkit, as task-json's line does."""
    (task,) = plan(template_of(["--", "x", "{shard}"]), 2, group=2).tasks()
    inner = shlex.split(task["commandLine"])[2]
    assert inner.count("exec ") == 1
    assert inner.startswith("taskkit run --task-id tpl-0 ")
    assert " && exec taskkit run --task-id tpl-1 " in inner


def test_one_shard_a_task_gives_task_jsons_own_line() -> None:
    """Without --group the command line is exactly what task-json writes for those args."""
    (task,) = plan(template_of(["--", "python", "x.py", "{shard}"]), 1).tasks()
    expected = json.loads(template_of(["--", "python", "x.py", "0"]))["commandLine"]
    assert task["commandLine"] == expected


# --- Ids -----------------------------------------------------------------------------------------


def test_index_ids_are_zero_padded_to_sort() -> None:
    """11 shards: tpl-00 ... tpl-10, in order, sorting as they run."""
    ids = [t["id"] for t in plan(template_of(["--", "x", "{shard}"]), 11).tasks()]
    assert ids == [f"tpl-{n:02d}" for n in range(11)]
    assert ids == sorted(ids)


def test_a_prefix_replaces_the_template_id() -> None:
    """--prefix names the tasks; the template's id is only the default."""
    ids = [t["id"] for t in plan(template_of(["--", "{id}"]), 2, prefix="run_7").tasks()]
    assert ids == ["run_7-0", "run_7-1"]


def test_ids_from_a_column_with_and_without_a_prefix(tmp_path: Path) -> None:
    """--id-column takes the value as the id; with a prefix, <prefix>-<value>."""
    params = csv(tmp_path, "sample,x\nS1,a\nS2,b\n")
    text = template_of(["--", "{x}", "{id}"])
    plain = [t["id"] for t in plan(text, params, id_column="sample").tasks()]
    prefixed = [t["id"] for t in plan(text, params, id_column="sample", prefix="p").tasks()]
    assert plain == ["S1", "S2"]
    assert prefixed == ["p-S1", "p-S2"]


@pytest.mark.parametrize(
    ("column", "words"),
    [
        ("S1\nbad id\n", ["line 3", "'bad id'", "not a Batch task id"]),
        ("S1\n../x\n", ["line 3", "'../x'"]),
        ("S1\n" + "x" * 65 + "\n", ["line 3", "not a Batch task id"]),
        ("S1\ns2\nS2\n", ["line 4", "'S2'", "line 3", "ignoring case"]),
        ('S1\n""\n', ["line 3", "''"]),
    ],
)
def test_a_bad_or_duplicate_id_from_a_column_names_its_row(
    tmp_path: Path, column: str, words: list[str]
) -> None:
    """An id that is no Batch id, or equal to another ignoring case: one DataError naming
    the row (and the row it repeats)."""
    fan = plan(template_of(["--", "{id}"]), csv(tmp_path, "sample\n" + column), id_column="sample")
    with pytest.raises(DataError) as info:
        list(fan.tasks())
    for word in words:
        assert word in str(info.value)


def test_a_prefix_that_makes_ids_too_long_is_refused_before_any_task() -> None:
    """Ids past 64 characters, or a prefix that is no id, are usage errors naming it."""
    with pytest.raises(UsageError, match="66 characters"):
        plan(template_of(["--", "{shard}"]), 100, prefix="p" * 63)
    with pytest.raises(UsageError, match="--prefix 'a b'"):
        plan(template_of(["--", "{shard}"]), 2, prefix="a b")
    assert len(next(plan(template_of(["--", "{id}"]), 10, prefix="p" * 62).tasks())["id"]) == 64


def test_same_inputs_give_the_same_tasks_byte_for_byte(tmp_path: Path) -> None:
    """Two plans of the same template and file give identical JSON."""
    params = csv(tmp_path, "a,b\n1,x y\n2,é\n")
    text = template_of(["--", "{a}", "{b}"])
    first = [json.dumps(t) for t in plan(text, params, group=2).tasks()]
    again = [json.dumps(t) for t in plan(text, read_params(params.path), group=2).tasks()]
    assert first == again


# --- Placeholders --------------------------------------------------------------------------------


def test_an_unknown_placeholder_is_an_error_listing_the_known(tmp_path: Path) -> None:
    """A misspelt column is refused, naming the placeholder and every known one."""
    with pytest.raises(DataError) as info:
        plan(template_of(["--", "{smaple}"]), csv(tmp_path, "sample\n1\n"))
    message = str(info.value)
    assert "unknown placeholder {smaple}" in message
    assert "{shard}, {shards}, {id}, {sample}" in message


@pytest.mark.parametrize(
    ("arg", "words"),
    [
        ("{shard", "'{' without its '}'"),
        ("x}", "'}' without its '{'"),
        ("{}", "empty placeholder"),
        ("{a{shard}}", "'{' without its '}'"),
    ],
)
def test_an_unbalanced_brace_is_an_error_naming_the_argument(arg: str, words: str) -> None:
    """A lone brace or an empty placeholder is refused with how to write a literal brace."""
    with pytest.raises(DataError) as info:
        plan(template_of(["--", "{shard}", arg]), 2)
    assert words in str(info.value)
    assert "argument 3 of taskkit run" in str(info.value)
    assert "{{" in str(info.value)


def test_a_template_without_placeholders_is_refused() -> None:
    """Every task would do the same work: a DataError saying what to use."""
    with pytest.raises(DataError, match="uses no placeholder"):
        plan(template_of(["--", "python", "x.py"]), 3)


def test_an_unused_column_is_a_warning(tmp_path: Path) -> None:
    """A column no placeholder uses (other than the id column) is named in a warning."""
    fan = plan(template_of(["--", "{a}"]), csv(tmp_path, "a,notes,key\n1,n,k\n"), id_column="key")
    assert len(fan.warnings) == 1
    assert "'notes' is used by no placeholder" in fan.warnings[0]


def test_a_column_named_like_a_builtin_is_refused_unless_it_is_the_id_column(
    tmp_path: Path,
) -> None:
    """A column 'shard' would hide {shard}: refused; a column 'id' is fine as the id column."""
    with pytest.raises(DataError, match="column 'shard' has the name of the placeholder"):
        plan(template_of(["--", "{shard}"]), csv(tmp_path, "shard\n1\n"))
    params = csv(tmp_path, "id,x\nA,1\n")
    (task,) = plan(template_of(["--", "{id}", "{x}"]), params, id_column="id").tasks()
    assert task["id"] == "A"
    assert inner_words(task)[-2:] == ["A", "1"]


def test_display_name_is_filled_and_environment_values_are_not(tmp_path: Path) -> None:
    """displayName takes placeholders; an environment value holding one is left as is, with
    a warning saying why."""
    text = template_of(
        ["--", "{x}"], displayName="sample {x}", environment={"TAG": "{x}", "OTHER": "{y}"}
    )
    fan = plan(text, csv(tmp_path, "x\n1\n"))
    (task,) = fan.tasks()
    assert task["displayName"] == "sample 1"
    assert {"name": "TAG", "value": "{x}"} in task["environmentSettings"]
    assert any("'TAG' holds a placeholder" in w for w in fan.warnings)
    assert not any("OTHER" in w for w in fan.warnings)


def test_a_display_name_with_placeholders_cannot_be_grouped() -> None:
    """A grouped task shows several shards: placeholders in displayName are refused."""
    with pytest.raises(UsageError, match="displayName"):
        plan(template_of(["--", "{shard}"], displayName="s {shard}"), 4, group=2)


# --- Calls ---------------------------------------------------------------------------------------


def test_a_call_template_without_placeholders_gets_each_column_as_a_word(tmp_path: Path) -> None:
    """The columns become NAME=VALUE words after the template's own, in column order."""
    text = template_of(["pipeline:clean", "--state", "az://s/c", "limit=5"], verb="call")
    (task,) = plan(text, csv(tmp_path, "sample,threshold\nS 1,0.5\n")).tasks()
    assert inner_words(task) == [
        "exec", "taskkit", "call", "pipeline:clean", "--state", "az://s/c", "limit=5",
        "sample=S 1", "threshold=0.5",
    ]  # fmt: skip


def test_a_call_template_with_placeholders_gets_only_those(tmp_path: Path) -> None:
    """Placeholders in the words mean the template chose: no column is added."""
    text = template_of(["m:f", "n={a}"], verb="call")
    fan = plan(text, csv(tmp_path, "a,b\n1,2\n"))
    (task,) = fan.tasks()
    assert inner_words(task)[3:] == ["m:f", "n=1"]
    assert "'b'" in fan.warnings[0]


@pytest.mark.parametrize(
    ("header", "words"),
    [("limit,x\n1,2\n", "also a word of the template"), ("sample id\n1\n", "Python name")],
)
def test_a_column_that_cannot_be_a_call_word_is_refused(
    tmp_path: Path, header: str, words: str
) -> None:
    """A column repeating a word of the template, or no Python name: refused by name."""
    with pytest.raises(DataError, match=words):
        plan(template_of(["m:f", "limit=5"], verb="call"), csv(tmp_path, header))


def test_a_grouped_call_task_runs_one_call_per_shard() -> None:
    """taskkit call is keyed by its values: no --task-id is added."""
    (task,) = plan(template_of(["m:f", "n={shard}"], verb="call"), 2, group=2).tasks()
    inner = shlex.split(task["commandLine"])[2]
    assert inner == "taskkit call m:f n=0 && exec taskkit call m:f n=1"


# --- The template --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "words"),
    [
        ("python x.py {shard}", "not /bin/sh -c"),
        ("/bin/sh -c 'python x.py {shard}'", "not /bin/sh -c"),
        ("/bin/sh -c 'exec taskkit hash {shard}'", "not /bin/sh -c"),
        ("/bin/sh -c 'exec taskkit run -- echo $HOME {shard}'", "'$' outside quotes"),
        ("/bin/sh -c 'exec taskkit run -- a {shard}; rm x'", "';' outside quotes"),
        ("/bin/sh -c 'exec taskkit run -- \"$X\" {shard}'", "'$' inside double quotes"),
        ("/bin/sh -c 'exec taskkit run -- *.csv {shard}'", "'*' outside quotes"),
    ],
)
def test_a_command_line_taskkit_did_not_write_is_refused(line: str, words: str) -> None:
    """Not a taskkit run/call under sh -c, or leaning on sh expansions a rebuilt line would
    lose: a DataError naming commandLine."""
    text = json.dumps({"id": "t", "commandLine": line})
    with pytest.raises(DataError) as info:
        read_template(text, "tpl.json")
    assert "commandLine" in str(info.value)
    assert words in str(info.value)


def test_a_hand_written_line_with_plain_words_is_taken() -> None:
    """Unquoted placeholders and double quotes without expansions read as sh reads them."""
    line = "/bin/sh -c 'exec taskkit run --state az://s/r -- python \"my script.py\" {shard}'"
    template = read_template(json.dumps({"id": "t", "commandLine": line}), "tpl.json")
    assert template.args == ("--state", "az://s/r", "--", "python", "my script.py", "{shard}")


def test_a_template_of_several_tasks_or_none_is_refused() -> None:
    """A template is one task; read_tasks' own checks run first (an empty file)."""
    one = json.loads(template_of(["--", "{shard}"]))
    with pytest.raises(DataError, match="2 tasks"):
        read_template(json.dumps([one, {**one, "id": "other"}]), "tpl.json")
    with pytest.raises(DataError, match="no tasks"):
        read_template("[]", "tpl.json")


def test_a_template_the_service_would_refuse_is_refused() -> None:
    """An unknown field is refused as read_tasks refuses it."""
    one = json.loads(template_of(["--", "{shard}"]))
    with pytest.raises(DataError, match="unknown field 'colour'"):
        read_template(json.dumps({**one, "colour": 1}), "tpl.json")


def test_a_run_template_with_its_own_task_id_is_refused() -> None:
    """--task-id in the template would give every shard one journal."""
    with pytest.raises(DataError, match="--task-id"):
        plan(template_of(["--task-id", "x", "--", "{shard}"]), 2)


def test_a_credential_in_a_value_is_refused_without_echoing_it(tmp_path: Path) -> None:
    """A SAS token from a row would land in the JSON: ConfigError naming the row, not the
    token."""
    secret = "sv=2024-05-04&sp=r&sig=c2VjcmV0c2lnbmF0dXJlMTIzNA%3D"
    fan = plan(template_of(["--", "{url}"]), csv(tmp_path, f"url\nx\nhttps://a/b?{secret}\n"))
    with pytest.raises(ConfigError) as info:
        list(fan.tasks())
    assert "line 3" in str(info.value)
    assert "c2VjcmV0" not in str(info.value)


def test_a_credential_deep_in_a_large_file_is_found_by_its_row(tmp_path: Path) -> None:
    """Rows are looked at many at a time: a credential in the 400th row is still named by
    its line, and no task after its chunk is made."""
    secret = "sv=2024-05-04&sp=r&sig=c2VjcmV0c2lnbmF0dXJlMTIzNA%3D"
    rows = [f"https://a/{n}" for n in range(600)]
    rows[399] += f"?{secret}"
    fan = plan(template_of(["--", "{url}"]), csv(tmp_path, "url\n" + "\n".join(rows) + "\n"))
    made: list[str] = []
    with pytest.raises(ConfigError, match="line 401 of "):
        made.extend(t["id"] for t in fan.tasks())
    assert len(made) < 399


# --- Constraints and the output ------------------------------------------------------------------


def test_a_group_multiplies_the_wall_clock_limit_by_its_shards() -> None:
    """maxWallClockTime covers each shard of the group (the last may hold fewer); fields
    keep the template's order."""
    text = template_of(["--", "{shard}"])
    limit = json.loads(text)["constraints"]["maxWallClockTime"]
    assert limit == "PT45M"
    tasks = list(plan(text, 5, group=2).tasks())
    assert [t["constraints"]["maxWallClockTime"] for t in tasks] == ["PT1H30M"] * 2 + ["PT45M"]
    assert list(tasks[0]) == list(json.loads(text))


def test_a_group_past_the_task_lifetime_has_no_wall_clock_limit() -> None:
    """A limit that would reach Batch's 180 days is left out, as task-json leaves it."""
    text = template_of(["--", "{shard}"])
    big = json.loads(text)
    big["constraints"]["maxWallClockTime"] = "PT2000H"
    (task,) = plan(json.dumps(big), 3, group=3).tasks()
    assert "maxWallClockTime" not in task["constraints"]


def test_retention_time_is_set_on_every_task() -> None:
    """retention_time becomes constraints.retentionTime, replacing the template's."""
    text = json.loads(template_of(["--", "{shard}"]))
    text["constraints"]["retentionTime"] = "PT1H"
    tasks = list(plan(json.dumps(text), 3, retention_time=86400.0).tasks())
    assert [t["constraints"]["retentionTime"] for t in tasks] == ["PT24H"] * 3


@pytest.mark.parametrize("group", [1, 3])
def test_read_tasks_takes_the_tasks_as_local_run_reads_them(group: int, tmp_path: Path) -> None:
    """The output, as a JSON array and as JSON lines, is read back by read_tasks with its
    ids, retries, limits and exit conditions intact."""
    text = template_of(["--", "{a}"])
    tasks = list(plan(text, csv(tmp_path, "a\n1\n2\n3\n4\n"), group=group).tasks())
    for document in (json.dumps(tasks), "\n".join(json.dumps(t) for t in tasks)):
        found = read_tasks(document, "tasks.json")
        assert [t.id for t in found.tasks] == [t["id"] for t in tasks]
        assert all(t.max_retries == 2 for t in found.tasks)
        assert found.tasks[0].exit_conditions == read_tasks(text, "t").tasks[0].exit_conditions
