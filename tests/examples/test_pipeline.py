"""The example pipeline (examples/pipeline/) run as a user runs it: real processes in a copy of
the example, real runs counted through the ledger its shards append to, never in this process."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "pipeline"
#: What running the example makes, left out of the copy.
MADE = ("remote", ".taskkit", "results", "runs.log", "__pycache__")
SHARDS = [f"summarize_shard part-0{n}.csv" for n in range(4)]


class Example:
    """A copy of the example with its own dataset, state and stat-cache."""

    def __init__(self, where: Path) -> None:
        self.dir = where / "pipeline"
        shutil.copytree(EXAMPLE, self.dir, ignore=shutil.ignore_patterns(*MADE))
        self.env = {
            k: v for k, v in os.environ.items() if not k.startswith(("TASKKIT_", "AZ_BATCH_"))
        }
        self.env.pop("PIPELINE_DATA", None)
        self.env.update(PYTHONPATH=str(ROOT), TASKKIT_CACHE_DIR=str(where / "statcache"))
        self.python("make_data.py")

    def python(self, *args: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [sys.executable, *args],
            cwd=self.dir,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        return done

    def run(self, *args: str) -> dict[str, object]:
        """``python -m pipeline ARGS``: its summary (the one line on stdout)."""
        summary: dict[str, object] = json.loads(self.python("-m", "pipeline", *args).stdout)
        return summary

    def explain(self, *args: str) -> str:
        return self.python("-m", "pipeline", "--explain", *args).stdout.strip()

    def runs(self) -> list[str]:
        """One line per real run of a shard, in order."""
        ledger = self.dir / "runs.log"
        return ledger.read_text().splitlines() if ledger.exists() else []

    def edit(self, module: str, old: str, new: str) -> None:
        path = self.dir / "pipeline" / module
        text = path.read_text()
        assert text.count(old) == 1, f"{old!r} is not once in {module}"
        path.write_text(text.replace(old, new))


@pytest.fixture
def example(tmp_path: Path) -> Example:
    """The example after its first run (4 shards)."""
    made = Example(tmp_path)
    assert made.explain() == "never run"
    first = made.run()
    assert first["shards"] == 4
    assert made.runs() == SHARDS
    return made


def test_the_first_run_publishes_the_results_and_returns_the_summary(example: Example) -> None:
    """The published set is the results folder's files, under a manifest; the summary adds
    up what the shards kept and dropped."""
    published = example.dir / "remote" / "results"
    manifest = json.loads((published / "_taskkit_manifest.json").read_text())
    assert sorted(f["name"] for f in manifest["files"]) == ["shards.csv", "stations.csv"]
    for name in ("shards.csv", "stations.csv"):
        assert (published / name).read_bytes() == (example.dir / "results" / name).read_bytes()
    summary = example.run()
    assert summary["kept"] == 140
    assert summary["dropped"] == 20
    assert len(summary["warmest"]) == 3  # type: ignore[arg-type]


def test_a_second_run_computes_nothing_and_returns_the_same_summary(example: Example) -> None:
    """Goal met: no shard runs again, the top task neither, and the result is the stored one."""
    first = (example.dir / "remote" / "results" / "_taskkit_manifest.json").read_bytes()
    assert example.explain() == "goal met: attempt 1 returned it"
    before = example.run()
    assert example.run() == before
    assert example.runs() == SHARDS
    assert (example.dir / "remote" / "results" / "_taskkit_manifest.json").read_bytes() == first


def test_an_argument_of_the_top_task_runs_it_again_but_no_shard(example: Example) -> None:
    """``top`` is the top task's alone: it runs again, its nested calls return their stored
    results."""
    assert example.explain("5") == "would run: argument top: 3 -> 5"
    summary = example.run("5")
    assert len(summary["warmest"]) == 5  # type: ignore[arg-type]
    assert example.runs() == SHARDS


def test_a_new_shard_in_the_reference_data_runs_that_shard_only(example: Example) -> None:
    """A new version of the staged input runs the top task again; of its shards only the new
    one is computed."""
    example.python("make_data.py", "--add")
    said = example.explain()
    assert said.startswith("would run: input ref: new version of file://"), said
    assert example.run()["shards"] == 5
    assert example.runs() == [*SHARDS, "summarize_shard part-04.csv"]


def test_comments_and_docstrings_in_the_package_run_nothing_again(example: Example) -> None:
    """A comment, a docstring and re-formatting in the task and in its helper change no key."""
    example.edit("shards.py", "    dropped = 0\n", "    dropped = 0  # a row that is no reading\n")
    example.edit(
        "shards.py",
        '"""Per station of one shard: how many readings and their sum."""',
        '"""Per station of one shard: the count of its readings and their sum."""',
    )
    example.edit("shards.py", "for station, value in rows:", "for (station, value) in rows:")
    assert example.explain() == "goal met: attempt 1 returned it"
    example.run()
    assert example.runs() == SHARDS


@pytest.mark.parametrize(
    ("module", "old", "new", "reason"),
    [
        pytest.param(
            "shards.py",
            "if not station or value == MISSING:",
            "if not station or value == MISSING or value > 60:",
            "code of clean_rows() changed",
            id="helper",
        ),
        pytest.param(
            "shards.py",
            "MISSING = -99.9",
            "MISSING = -99.0",
            "constant MISSING: -99.9 -> -99.0",
            id="constant",
        ),
    ],
)
def test_an_edit_the_tasks_depend_on_is_named_and_runs_every_shard(
    example: Example, module: str, old: str, new: str, reason: str
) -> None:
    """The helper clean_rows() and the constant it reads live in another module than the top
    task: an edit of either is part of both tasks' keys, and explain() says which."""
    example.edit(module, old, new)
    said = example.explain()
    assert said.startswith("would run: "), said
    assert reason in said.split(": ", 1)[1].split("; "), said
    example.run()
    assert example.runs() == SHARDS * 2


def test_one_batch_task_per_shard_through_call_and_a_params_file(tmp_path: Path) -> None:
    """The README's fan-out: task-json --call summarize_part, batch tasks over parts.csv (a
    column becomes the call's part=...), local run: each shard published once as its own task,
    the same numbers as summarize_shard; a second local run runs nothing; submit --dry-run
    takes the file."""
    made = Example(tmp_path)
    env = {**made.env, "PATH": os.path.dirname(sys.executable) + os.pathsep + made.env["PATH"]}

    def taskkit(*args: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [sys.executable, "-m", "taskkit", *args],
            cwd=made.dir,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        return done

    state = (made.dir / "state").as_uri()
    template = taskkit(
        "batch",
        "task-json",
        "--id",
        "part",
        "--state",
        state,
        "--max-retries",
        "2",
        "--path",
        str(made.dir),
        "--call",
        "pipeline.flow:summarize_part",
    )
    (made.dir / "part.json").write_text(template.stdout)
    tasks = taskkit(
        "batch", "tasks", "--template", "part.json", "--params", "parts.csv", "--id-column", "part"
    )
    (made.dir / "tasks.json").write_text(tasks.stdout)
    assert [t["id"] for t in json.loads(tasks.stdout)] == [f"part-0{n}" for n in range(4)]
    first = taskkit("local", "run", "tasks.json")
    assert "4 succeeded" in first.stdout + first.stderr
    parts = made.dir / "remote" / "results" / "parts"
    for n in range(4):
        text = (made.dir / "remote" / "ref" / f"part-0{n}.csv").read_text()
        published = json.loads((parts / f"part-0{n}.json").read_text())
        rows = [r for r in text.splitlines()[1:] if r.split(",")[1] not in ("-99.9", "n/a")]
        assert published["part"] == f"part-0{n}.csv"
        assert published["kept"] == len(rows)
    ledgers = lambda: sorted(  # noqa: E731 - read twice
        line for log in made.dir.rglob("runs.log") for line in log.read_text().splitlines()
    )
    assert ledgers() == [f"summarize_shard part-0{n}.csv" for n in range(4)]
    again = taskkit("local", "run", "tasks.json")
    assert "4 succeeded" in again.stdout + again.stderr
    assert len(ledgers()) == 4  # nothing ran again
    dry = taskkit("batch", "submit", "tasks.json", "--job-id", "pipeline-parts", "--dry-run")
    assert "4 tasks" in dry.stdout
