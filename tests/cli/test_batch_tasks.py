"""``taskkit batch tasks`` as a user meets it: a template from ``task-json``, a parameter file,
the tasks ``taskkit local run`` runs end to end (a grouped task's retry skipping the shards
done), and one line with its exit code for bad input, stdout left empty."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from runner_helpers import TASKKIT, clean_environment, invoke, one_error

#: A command for the tasks: appends its value (as JSON) to BOX; with flaky=yes it fails once
#: (exit 3, retryable) before doing anything, leaving a marker so that the retry succeeds.
WORK = """\
import json, os, sys
box, value, flaky = sys.argv[1:4]
marker = box + ".failed-once"
if flaky == "yes" and not os.path.exists(marker):
    open(marker, "w").close()
    sys.exit(3)
with open(box, "a") as f:
    f.write(json.dumps(value) + "\\n")
"""
VALUES = ["plain", "with space", "it's $HOME", "ünï `x`"]


def taskkit(
    args: list[str], tmp_path: Path, env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [*TASKKIT, *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert "Traceback" not in done.stderr, done.stderr
    return done


def test_a_grouped_fan_out_runs_in_local_run_and_a_retry_skips_shards_done(
    tmp_path: Path,
) -> None:
    """task-json -> batch tasks --params --group 2 -> local run: every row's value reaches its
    command once; the shard that failed once is retried with its task, and the shard before
    it in that task is not run again (its own journal says done); a second local run runs
    nothing, and each shard has a journal of its own."""
    env = clean_environment(tmp_path)
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env["PATH"]
    (tmp_path / "work.py").write_text(WORK)
    box = tmp_path / "box.jsonl"
    made = taskkit(
        ["batch", "task-json", "--id", "w", "--max-retries", "2", "--",
         sys.executable, str(tmp_path / "work.py"), str(box), "{value}", "{flaky}"],
        tmp_path, env,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    (tmp_path / "w.json").write_text(made.stdout)
    rows = [{"value": v, "flaky": "yes" if n == 1 else "no"} for n, v in enumerate(VALUES)]
    (tmp_path / "p.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    fanned = taskkit(
        ["batch", "tasks", "--template", "w.json", "--params", "p.jsonl", "--group", "2"],
        tmp_path,
        env,
    )
    assert fanned.returncode == 0, fanned.stderr
    assert [t["id"] for t in json.loads(fanned.stdout)] == ["w-g0", "w-g1"]
    (tmp_path / "tasks.json").write_text(fanned.stdout)

    first = taskkit(["local", "run", "tasks.json", "--nodes", "1"], tmp_path, env)
    assert first.returncode == 0, first.stderr
    assert [json.loads(line) for line in box.read_text().splitlines()] == VALUES
    report = json.loads((tmp_path / ".taskkit-local/report-local.json").read_text())
    attempts = {t["id"]: len(t["attempts"]) for t in report["tasks"]}
    assert attempts == {"w-g0": 2, "w-g1": 1}

    again = taskkit(["local", "run", "tasks.json", "--nodes", "1"], tmp_path, env)
    assert again.returncode == 0, again.stderr
    assert len(box.read_text().splitlines()) == len(VALUES)
    journals = sorted(p.name for p in (tmp_path / ".taskkit-local/state/local").iterdir())
    assert journals == ["w-0", "w-1", "w-2", "w-3"]


def test_the_output_is_what_local_run_reads_and_is_the_same_every_time(tmp_path: Path) -> None:
    """The array and --jsonl forms hold the same tasks; two runs print the same bytes."""
    env = clean_environment(tmp_path)
    made = taskkit(["batch", "task-json", "--id", "t", "--", "echo", "{shard}"], tmp_path, env)
    (tmp_path / "t.json").write_text(made.stdout)
    args = ["batch", "tasks", "--template", "t.json", "--shards", "12", "--group", "5"]
    one, two = taskkit(args, tmp_path, env), taskkit(args, tmp_path, env)
    lines = taskkit([*args, "--jsonl"], tmp_path, env)
    assert one.stdout == two.stdout
    assert json.loads(one.stdout) == [json.loads(line) for line in lines.stdout.splitlines()]
    assert len(lines.stdout.splitlines()) == 3


def test_help_lists_the_command_under_batch() -> None:
    """taskkit batch --help names tasks; its own help shows the placeholders and examples."""
    code, out, _ = invoke(["batch", "--help"])
    assert code == 0
    assert "tasks " in out
    code, out, _ = invoke(["batch", "tasks", "--help"])
    assert code == 0
    for words in ("{shard}", "{id}", "--group", "Examples:", "NAME=VALUE"):
        assert words in out


def write_template(tmp_path: Path, *args: str) -> None:
    code, out, err = invoke(["batch", "task-json", "--id", "t", "--state", "az://s/r", *args])
    assert code == 0, err
    (tmp_path / "t.json").write_text(out)


@pytest.mark.parametrize(
    ("args", "code", "words"),
    [
        (["--shards", "2", "--params", "p.csv"], 64, "one of --shards"),
        ([], 64, "one of --shards"),
        (["--shards", "2", "--group", "0"], 64, "--group"),
        (["--shards", "2", "--id-column", "a"], 64, "--id-column goes with --params"),
        (["--params", "p.csv", "--id-column", "nope"], 64, "'nope' is not a column"),
        (["--shards", "2", "--retention-time", "soon"], 78, "--retention-time"),
        (["--params", "missing.csv"], 66, "no parameter file"),
        (["--params", "p.txt"], 64, ".csv or .jsonl"),
        (["--params", "dup.csv", "--id-column", "a"], 65, "line 5"),
        (["--shards", "2", "--template", "missing.json"], 66, "no template file"),
    ],
)
def test_bad_input_is_one_line_its_code_and_no_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str], code: int, words: str
) -> None:
    """Options that do not fit, missing files, a duplicate id on the last row: one line, the
    documented code, and nothing on stdout (no tasks before the bad row)."""
    monkeypatch.chdir(tmp_path)
    write_template(tmp_path, "--", "echo", "{shard}")
    (tmp_path / "p.csv").write_text("a\n1\n")
    (tmp_path / "p.txt").write_text("a\n1\n")
    (tmp_path / "dup.csv").write_text("a\nx\ny\nz\nX\n")
    template = [] if "--template" in args else ["--template", "t.json"]
    got, out, err = invoke(["batch", "tasks", *template, *args])
    assert (got, out) == (code, "")
    one_error(err, words)


def test_a_warning_is_one_line_and_the_tasks_are_still_printed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An unused column: a warning on stderr, the tasks on stdout."""
    monkeypatch.chdir(tmp_path)
    write_template(tmp_path, "--", "echo", "{a}")
    (tmp_path / "p.csv").write_text("a,b\n1,2\n")
    code, out, err = invoke(["batch", "tasks", "--template", "t.json", "--params", "p.csv"])
    assert code == 0
    assert err.splitlines() == [
        "taskkit: warning: p.csv: column 'b' is used by no placeholder of the template"
    ]
    assert [t["id"] for t in json.loads(out)] == ["t-0"]


#: A task function for the call fan-out: appends its values (as JSON) to the file $BOX names.
MODULE = """\
import json, os
import taskkit

@taskkit.task
def record(sample: str, n: int) -> int:
    with open(os.environ["BOX"], "a") as f:
        f.write(json.dumps([sample, n]) + "\\n")
    return n
"""


def test_a_call_fan_out_passes_each_column_as_a_word_and_runs_each_call_once(
    tmp_path: Path,
) -> None:
    """task-json --call (no words) -> batch tasks --params -> local run: each row's columns
    reach the function as its parameters, read by their annotations; a second run meets
    every call's goal and calls nothing."""
    env = clean_environment(tmp_path)
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env["PATH"]
    env["BOX"] = str(tmp_path / "box.jsonl")
    (tmp_path / "mods").mkdir()
    (tmp_path / "mods" / "rec.py").write_text(MODULE)
    made = taskkit(
        ["batch", "task-json", "--id", "rec", "--call", "rec:record",
         "--path", str(tmp_path / "mods"), "--env", f"BOX={env['BOX']}"],
        tmp_path, env,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    (tmp_path / "rec.json").write_text(made.stdout)
    (tmp_path / "p.csv").write_text('sample,n\nS 1,1\n"it\'s ""2""",2\nü,3\n')
    fanned = taskkit(
        ["batch", "tasks", "--template", "rec.json", "--params", "p.csv", "--group", "2"],
        tmp_path,
        env,
    )
    assert fanned.returncode == 0, fanned.stderr
    (tmp_path / "tasks.json").write_text(fanned.stdout)
    for _ in range(2):
        done = taskkit(["local", "run", "tasks.json", "--nodes", "2"], tmp_path, env)
        assert done.returncode == 0, done.stderr
    lines = (tmp_path / "box.jsonl").read_text().splitlines()
    assert sorted(json.loads(line) for line in lines) == [["S 1", 1], ['it\'s "2"', 2], ["ü", 3]]
