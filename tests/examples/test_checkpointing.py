"""The checkpointing example (examples/checkpointing/) run as a user runs it: ./run.sh in a copy
of the folder, real processes (taskkit local run, a Spot preemption drawn by its seed, taskkit
run on the nodes), the work counted through the ledger the task appends to outside the nodes."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "checkpointing"
#: What running the example makes, left out of the copy.
MADE = (".taskkit-local", "results", "steps.log", "tasks-local.json", "report.html", "__pycache__")
STEPS = 1000
ACCOUNT = re.compile(
    r"^resumed at step (\d+) of (\d+): (\d+\.\d) s of (\d+\.\d) s recomputed, (\d+\.\d) s saved$",
    re.MULTILINE,
)


def environment(where: Path) -> dict[str, str]:
    """The user's shell: this tree's taskkit on the PATH, no TASKKIT_ or AZ_BATCH_ setting."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TASKKIT_", "AZ_BATCH_"))}
    env.pop("TRAIN_LEDGER", None)
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    env["PYTHONPATH"] = str(ROOT)
    env["HOME"] = str(where)
    return env


class Run:
    """The example copied into a folder and run once by ./run.sh."""

    def __init__(self, where: Path) -> None:
        self.dir = where / "checkpointing"
        shutil.copytree(EXAMPLE, self.dir, ignore=shutil.ignore_patterns(*MADE))
        self.env = environment(where)
        self.done = subprocess.run(
            ["./run.sh"],
            cwd=self.dir,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    def ledger(self) -> list[dict[str, Any]]:
        lines = (self.dir / "steps.log").read_text().splitlines()
        return [json.loads(line) for line in lines]

    def computed(self) -> list[dict[str, Any]]:
        """One record per step computed, in order."""
        return [r for r in self.ledger() if "step" in r]

    def starts(self) -> list[dict[str, Any]]:
        """One record per start of the task's command: where it resumed."""
        return [r for r in self.ledger() if "resumed" in r]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    made = Run(tmp_path_factory.mktemp("example"))
    assert made.done.returncode == 0, made.done.stdout + made.done.stderr
    return made


def uninterrupted(where: Path) -> dict[str, Any]:
    """The result of train.py run once, start to end, with an empty checkpoint directory."""
    shutil.copy(EXAMPLE / "train.py", where / "train.py")
    env = {**environment(where), "TASKKIT_CHECKPOINT_DIR": str(where / "checkpoint")}
    subprocess.run(
        [sys.executable, "train.py", "--steps", str(STEPS)],
        cwd=where, env=env, capture_output=True, timeout=120, check=True,
    )  # fmt: skip
    result: dict[str, Any] = json.loads((where / "result.json").read_text())
    return result


def test_the_node_is_preempted_once_and_the_job_succeeds(run: Run) -> None:
    """The seed strikes the first launch: one preemption, one requeue, no retry counted, the
    task succeeded; the job's page is written."""
    assert (
        "job local: 1 succeeded, 0 failed, 0 blocked, 0 not run; "
        "0 retries, 1 requeues (0 kills, 1 preemptions)"
    ) in run.done.stdout
    assert "taskkit: local: node-" in run.done.stderr
    assert " preempted" in run.done.stderr
    assert (run.dir / "report.html").read_text().startswith("<!DOCTYPE html>")


def test_the_published_result_is_the_uninterrupted_runs(run: Run, tmp_path: Path) -> None:
    """The result published after a preemption and a resume is the result of one run from
    start to end, bit for bit: the checkpoint holds the random generator's state too."""
    published = json.loads((run.dir / "results" / "result.json").read_text())
    assert published == uninterrupted(tmp_path)
    manifest = json.loads((run.dir / "results" / "_taskkit_manifest.json").read_text())
    assert [f["name"] for f in manifest["files"]] == ["result.json"]


def test_the_retry_resumed_from_a_checkpoint_on_another_node(run: Run) -> None:
    """Two starts, on two node ids (a preempted node comes back as a new VM, wiped): the first
    from step 0, the second from a step the first had reached; more steps were computed than
    the job has, and fewer than twice as many; every step was computed at least once."""
    first, second = run.starts()
    assert (first["resumed"], first["attempt"]) == (0, "1")
    assert second["attempt"] == "2"
    assert first["node"] != second["node"]
    computed = run.computed()
    reached = max(r["step"] for r in computed if r["attempt"] == "1")
    assert 0 < second["resumed"] <= reached + 1 < STEPS
    assert STEPS < len(computed) < 2 * STEPS
    assert {r["step"] for r in computed} == set(range(STEPS))
    assert [r["step"] for r in computed if r["attempt"] == "2"] == list(
        range(second["resumed"], STEPS)
    )


def test_the_recomputation_line_is_printed_and_adds_up(run: Run) -> None:
    """The last line says where the task resumed and splits the first attempt's measured
    seconds into the part computed again and the part saved, as the ledger has them."""
    found = ACCOUNT.search(run.done.stdout)
    assert found is not None, run.done.stdout
    resumed, steps, again, before, saved = found.groups()
    assert (int(resumed), int(steps)) == (run.starts()[1]["resumed"], STEPS)
    first = [r for r in run.computed() if r["attempt"] == "1"]
    assert float(before) == pytest.approx(sum(r["seconds"] for r in first), abs=0.051)
    lost = sum(r["seconds"] for r in first if r["step"] >= int(resumed))
    assert float(again) == pytest.approx(lost, abs=0.051)
    assert float(again) + float(saved) == pytest.approx(float(before), abs=0.11)
    assert float(saved) > 0


def test_the_store_holds_the_last_checkpoint_and_the_journal_both_attempts(run: Run) -> None:
    """The checkpoint lives in the journal (STATE/JOB/TASK/checkpoint/), synced a last time when
    the command ended; the journal names the preempted attempt interrupted."""
    task = run.dir / ".taskkit-local" / "state" / "local" / "train"
    manifests = {
        found.parent: json.loads(found.read_text())
        for found in (task / "checkpoint").glob("*/*/_taskkit_manifest.json")
    }
    newest = max(manifests, key=lambda slot: manifests[slot]["task"]["sync"])
    assert [f["name"] for f in manifests[newest]["files"]] == ["state.json"]
    assert json.loads((newest / "state.json").read_text())["step"] == STEPS
    status = subprocess.run(
        ["taskkit", "status", "--state", (task.parents[1]).as_uri(), "--job-id", "local",
         "--task-id", "train"],
        env=run.env, capture_output=True, text=True, timeout=60, check=True,
    ).stdout  # fmt: skip
    assert "attempt 1: interrupted" in status
    assert "attempt 2: ended, exit 0, success" in status


def test_a_second_run_of_the_job_computes_nothing(run: Run) -> None:
    """The goal is met: taskkit local run again in the same folder starts no step."""
    before = len(run.ledger())
    again = subprocess.run(
        ["taskkit", "local", "run", "tasks-local.json"],
        cwd=run.dir, env={**run.env, "TRAIN_LEDGER": str(run.dir / "steps.log")},
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert "job local: 1 succeeded" in again.stdout
    assert len(run.ledger()) == before


def test_tasks_json_is_what_the_readme_command_writes(tmp_path: Path) -> None:
    """The Batch task in tasks.json is exactly what the README's task-json command prints."""
    readme = (EXAMPLE / "README.md").read_text()
    found = re.search(r"^\$ (taskkit batch task-json (?:.*\\\n)*.*> tasks\.json)$", readme, re.M)
    assert found is not None
    words = shlex.split(found.group(1).replace("\\\n", " "))
    assert words[-2:] == [">", "tasks.json"]
    made = subprocess.run(
        words[:-2], env=environment(tmp_path), capture_output=True, text=True, timeout=60,
        check=True,
    )  # fmt: skip
    assert json.loads(made.stdout) == json.loads((EXAMPLE / "tasks.json").read_text())
