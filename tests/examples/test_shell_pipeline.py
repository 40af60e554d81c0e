"""The shell pipeline (examples/shell-pipeline/) run as a user runs it: its commands in a copy of
the example, real processes on an emulated pool, real step runs counted through the ledger its
steps append to (``RUNS_LOG``); and ``make demo``, which is that example end to end.

The expected results are computed here from the generated data, independently of the
pipeline's awk and sort."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from taskkit.runner.journal import Attempt, Skip, StepRecord
from taskkit.testing.batch_endpoint import BatchEndpoint

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "shell-pipeline"
#: What running the example makes, left out of the copy.
MADE = ("remote", ".taskkit-local", "tasks.json", "runs.log", "report.html", "__pycache__")
SAMPLES = ("s1", "s2", "s3")
JOB = "shell-pipeline"
#: Every first launch is struck within 2 s; seed 13 strikes s1 0.17 s after its start (before
#: any attempt can end, so at least one kill always lands), s2 at 0.62 s and s3 at 1.04 s.
CHAOS = ("--chaos", "kill=1,limit=1,within=2", "--seed", "13")
LOCAL = ("local", "run", "tasks.json", "--job-id", JOB, "--nodes", "1", "--slots", "2")

# One worker runs this module, so the chaos run below is made once for the tests that read it.
pytestmark = pytest.mark.xdist_group("shell-pipeline")


class Example:
    """A copy of the example with its data made and its tasks written, as its README says."""

    def __init__(self, where: Path) -> None:
        self.dir = where / "shell-pipeline"
        shutil.copytree(EXAMPLE, self.dir, ignore=shutil.ignore_patterns(*MADE))
        own = ("AZ_BATCH_", "TASKKIT_", "AZURE_")
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(own)}
        self.env.update(
            PATH=os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]]),
            PYTHONPATH=str(ROOT),
            TASKKIT_STATE=f"file://{self.dir / 'remote' / 'state'}",
            RUNS_LOG=str(self.dir / "runs.log"),
        )
        self.state = self.dir / "remote" / "state" / JOB

    def run(self, *argv: str, code: int = 0, env: dict[str, str] | None = None) -> str:
        """``argv`` in the example's folder, which must exit ``code``; its stdout."""
        done = subprocess.run(
            list(argv),
            cwd=self.dir,
            env={**self.env, **(env or {})},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == code, done.stdout + done.stderr
        assert "Traceback" not in done.stderr, done.stderr
        return done.stdout

    def taskkit(self, *argv: str, code: int = 0) -> str:
        return self.run("taskkit", *argv, code=code)

    def make(self, *samples: str) -> None:
        """``python make_data.py SAMPLES`` and ``sh tasks.sh SAMPLES > tasks.json``."""
        self.run(sys.executable, "make_data.py", *samples)
        (self.dir / "tasks.json").write_text(self.run("sh", "tasks.sh", *samples))

    def runs(self) -> list[tuple[str, str, int]]:
        """``(step, task, attempt)`` per real run of a step, in order."""
        ledger = self.dir / "runs.log"
        lines = ledger.read_text().splitlines() if ledger.exists() else []
        return [(s, t, int(n)) for s, t, _, n in (line.split() for line in lines)]

    def attempts(self, task: str) -> list[Attempt]:
        found = sorted((self.state / task / "attempts").glob("*.json"))
        return [Attempt.model_validate_json(p.read_bytes()) for p in found]

    def step(self, task: str, name: str) -> StepRecord:
        path = self.state / task / "steps" / f"{name}.json"
        return StepRecord.model_validate_json(path.read_bytes())

    def skips(self, task: str) -> list[Skip]:
        found = sorted((self.state / task / "skips").glob("*.json"))
        return [Skip.model_validate_json(p.read_bytes()) for p in found]

    def report(self) -> dict[str, Any]:
        found: dict[str, Any] = json.loads(
            (self.dir / ".taskkit-local" / f"report-{JOB}.json").read_text()
        )
        return found

    def results(self, sample: str) -> Path:
        return self.dir / "remote" / "results" / sample


def expected_counts(example: Example, sample: str) -> str:
    """What counts.tsv must hold: reads per gene of the read's first 12 bases, most first,
    then by name; ``*`` for reads of no gene."""
    genes = dict(
        line.split("\t")
        for line in (example.dir / "remote" / "ref" / "genes.tsv").read_text().splitlines()
    )
    reads = (example.dir / "remote" / "samples" / f"{sample}.tsv").read_text().splitlines()
    counts = Counter(genes.get(line.split("\t")[1][:12], "*") for line in reads)
    ordered = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return "".join(f"{gene}\t{n}\n" for gene, n in ordered)


@pytest.fixture(scope="module")
def chaos_run(tmp_path_factory: pytest.TempPathFactory) -> Example:
    """The example's job run once under chaos, every task killed once."""
    example = Example(tmp_path_factory.mktemp("chaos"))
    example.make()
    said = example.taskkit(*LOCAL, *CHAOS)
    assert f"job {JOB}: 3 succeeded, 0 failed" in said, said
    return example


def test_the_job_under_chaos_publishes_what_the_pipeline_computes(chaos_run: Example) -> None:
    """Killed attempts and all, each sample's published counts are the right ones, under a
    manifest naming them, with each step's output beside them."""
    report = chaos_run.report()
    assert report["summary"]["kills"] >= 1
    for sample in SAMPLES:
        results = chaos_run.results(sample)
        counts = (results / "counts.tsv").read_text()
        assert counts == expected_counts(chaos_run, sample)
        manifest = json.loads((results / "_taskkit_manifest.json").read_text())
        assert sorted(f["name"] for f in manifest["files"]) == ["counts.tsv", "summary.txt"]
        mapped = sum(int(n) for gene, n in (ln.split("\t") for ln in counts.splitlines()))
        assert (results / "summary.txt").read_text().startswith(f"{sample}: ")
        assert f" of {mapped} reads on " in (results / "summary.txt").read_text()
        assert (results / "steps" / "summarise" / "counts.tsv").read_text() == counts
        assert (results / "steps" / "align" / "hits.tsv").exists()


def test_no_step_recorded_done_runs_again_and_no_input_is_downloaded_twice(
    chaos_run: Example,
) -> None:
    """A step runs again only in an attempt before the one its record names (a kill landed
    while it ran); every attempt that ended kept its logs in the store; and the node fetched
    each distinct input once: the reference and the scripts are shared through its cache,
    a retry finds its own sample in place."""
    runs = chaos_run.runs()
    for sample in SAMPLES:
        for name in ("align", "summarise"):
            done = chaos_run.step(sample, name).attempt
            ran = [n for s, t, n in runs if (s, t) == (name, sample)]
            assert done in ran
            assert max(ran) == done, f"{name} of {sample} ran after it was done: {ran}"
    attempts = [a for s in SAMPLES for a in chaos_run.attempts(s)]
    downloaded = sum(a.staged.transferred for a in attempts if a.staged is not None)
    assert downloaded <= 1 + len(SAMPLES) + 3  # genes.tsv, a sample each, 3 scripts
    for attempt in attempts:
        if attempt.ended is not None:
            assert attempt.logs is not None
            assert (Path(attempt.logs) / "taskkit.txt").exists()


def test_the_job_again_meets_every_goal_and_runs_nothing(chaos_run: Example) -> None:
    """The same job in the same folder: exit 0 at once, no step runs, the published sets are
    left as they are, and each task notes a run short-circuited by its goal."""
    runs = chaos_run.runs()
    manifests = {s: (chaos_run.results(s) / "_taskkit_manifest.json").read_bytes() for s in SAMPLES}
    said = chaos_run.taskkit(*LOCAL, "--report", "report.html")
    assert f"job {JOB}: 3 succeeded" in said
    assert chaos_run.runs() == runs
    for sample in SAMPLES:
        assert (chaos_run.results(sample) / "_taskkit_manifest.json").read_bytes() == manifests[
            sample
        ]
        assert [s.goal for s in chaos_run.skips(sample)] == ["met"]
    assert (chaos_run.dir / "report.html").read_text().startswith("<!DOCTYPE html>")


def test_a_malformed_sample_fails_once_with_its_permanent_code(tmp_path: Path) -> None:
    """Exit 3 is permanent: step align runs once; Batch's retries (it retries any non-zero
    exit) end at once with the same code, and the task fails."""
    example = Example(tmp_path)
    example.run(sys.executable, "make_data.py", "--bad", "s9")
    (example.dir / "tasks.json").write_text(example.run("sh", "tasks.sh", "s9"))
    said = example.taskkit(*LOCAL, code=1)
    assert "failed: s9 (exit 3)" in said, said
    assert example.runs() == [("align", "s9", 1)]
    assert [a.exit_code for a in example.attempts("s9")] == [3]
    assert [a.verdict for a in example.attempts("s9")] == ["permanent"]
    report = example.report()
    assert len(report["tasks"][0]["attempts"]) == 4  # maxTaskRetryCount 3
    assert [s.goal for s in example.skips("s9")] == ["permanent"] * 3
    assert not (example.results("s9") / "_taskkit_manifest.json").exists()


@pytest.fixture
def endpoint() -> Iterator[BatchEndpoint]:
    with BatchEndpoint("devbatch") as ep:
        yield ep


def test_the_tasks_for_azure_go_to_batch_as_written(
    tmp_path: Path, endpoint: BatchEndpoint
) -> None:
    """With STORE=az://..., tasks.sh writes tasks for a real pool (the storage account and
    the pool identity's client id as their settings); taskkit batch submit checks
    them offline (--dry-run), then adds them to a new job on the pool; a second submit adds
    none (the local endpoint answers as the Batch service documents)."""
    example = Example(tmp_path)
    identity = {"AZURE_STORAGE_ACCOUNT_NAME": "mystorage", "AZURE_CLIENT_ID": "0b1e6a3c"}
    azure = example.run(
        "sh", "tasks.sh", env={"STORE": "az://pipeline", "TASKKIT_STATE": "", **identity}
    )
    (example.dir / "batch-tasks.json").write_text(azure)
    written = _objects(azure)
    assert [t["id"] for t in written] == list(SAMPLES)
    assert all("file://" not in t["commandLine"] for t in written)
    assert "--state az://pipeline/state" in written[0]["commandLine"]
    settings = {e["name"]: e["value"] for e in written[0]["environmentSettings"]}
    assert settings == identity
    submit = ("batch", "submit", "batch-tasks.json", "--job-id", JOB)
    dry = example.taskkit(*submit, "--dry-run", "--create-job", "--pool-id", "spot-d4")
    assert "3 tasks (s1 .. s3)" in dry
    assert not endpoint.requests
    env = {"AZURE_BATCH_ACCOUNT": "devbatch", "AZURE_BATCH_ACCESS_KEY": "a2V5"}
    online = (*submit, "--endpoint", endpoint.url, "--create-job", "--pool-id", "spot-d4")
    said = example.run("taskkit", *online, env=env)
    assert f"job {JOB}: 3 added, 0 already there, 0 failed" in said
    assert sorted(endpoint.task_ids(JOB)) == list(SAMPLES)
    added = [t for r in endpoint.posted("/addtaskcollection") for t in r.json()["value"]]
    assert [t["commandLine"] for t in added] == [t["commandLine"] for t in written]
    again = example.run("taskkit", *online, env=env)
    assert f"job {JOB}: 0 added, 3 already there" in again


def _objects(text: str) -> list[dict[str, Any]]:
    """The JSON objects ``taskkit batch task-json`` printed one after another."""
    decoder, found, at = json.JSONDecoder(), [], 0
    text = text.strip()
    while at < len(text):
        obj, at = decoder.raw_decode(text, at)
        found.append(obj)
        while at < len(text) and text[at].isspace():
            at += 1
    return found


def test_make_demo_shows_a_kill_a_resumed_retry_a_re_run_and_the_work_saved(
    tmp_path: Path,
) -> None:
    """``make demo`` runs examples/demo.py: in a copy of examples/ it exits 0, shows s2 killed
    after its step align and its retry running summarise only with its inputs in place, the
    re-run meeting every goal, the figures saved, and keeps everything under .demo/."""
    assert "$(BIN)/python examples/demo.py" in (ROOT / "Makefile").read_text()
    shutil.copytree(
        ROOT / "examples",
        tmp_path / "examples",
        ignore=shutil.ignore_patterns(*MADE, "pipeline"),
    )
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AZ_BATCH_", "TASKKIT_"))}
    env["PYTHONPATH"] = str(ROOT)
    done = subprocess.run(
        [sys.executable, str(tmp_path / "examples" / "demo.py")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    said = done.stdout
    for line in (
        "kill -9 s2's taskkit run (pid ",
        "s2 attempt 1: interrupted ran align",
        "s2 attempt 2: success     staged nothing downloaded, 5 already there; ran summarise\n",
        "=> s2's retry found its 5 inputs in place and align done (not run again)",
        "s3 attempt 1: success     staged 1 downloaded (996.1 KiB), 4 linked from the node cache;",
        "2. the same job again: every goal is met, nothing runs",
        "steps not recomputed  1 of 6 recorded (really run: align 3 times,",
        "runs short-circuited  3, goal met:",
        "files not moved ",
        "report: .demo/shell-pipeline/report.html",
    ):
        assert line in said, said
    assert (tmp_path / ".demo" / "shell-pipeline" / "report.html").exists()
    after = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    outside = [p for p in after if p not in before and p.parts[0] != ".demo"]
    assert outside == [], outside
