"""``taskkit report`` and ``taskkit local run --report FILE.html`` as a user meets them: real
``python -m taskkit`` processes, the page where it was asked for, one line saying so."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

from runner_helpers import SH_TASKKIT, TASKKIT, clean_environment

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from journal_fakes import FakeJob

from taskkit.storage.stores import Stores


def taskkit(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*TASKKIT, *args],
        cwd=cwd,
        env=clean_environment(cwd),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_report_writes_the_page_of_a_job_named_after_it(tmp_path: Path, stores: Stores) -> None:
    """Without -o the page is report-JOB.html here, and one line says what it holds."""
    job = FakeJob(stores, f"file://{tmp_path}/state")
    job.attempt("a", 1, start=0, end=1)
    job.attempt("b", 1, node="node-2", start=0, end=2, verdict="permanent", exit_code=3)
    done = taskkit(tmp_path, "report", "--state", job.state, "--job-id", job.job)
    assert done.returncode == 0, done.stderr
    page = (tmp_path / "report-job-1.html").read_text()
    assert page.startswith("<!DOCTYPE html>")
    assert done.stderr == (
        "taskkit: report: wrote report-job-1.html: 2 tasks, 2 bars on 2 nodes "
        f"({len(page.encode()) / 1024:.1f} KiB)\n"
    )
    assert done.stdout == ""


def test_report_to_stdout_writes_no_file(tmp_path: Path, stores: Stores) -> None:
    """-o - prints the page, and nothing else, on stdout."""
    job = FakeJob(stores, f"file://{tmp_path}/state")
    job.attempt("a", 1, start=0, end=1)
    done = taskkit(tmp_path, "report", "--state", job.state, "--job-id", job.job, "-o", "-")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("<!DOCTYPE html>")
    assert done.stdout.endswith("</html>\n")
    assert not [p for p in tmp_path.iterdir() if p.suffix == ".html"]


def test_local_run_writes_the_page_and_the_json_report_by_suffix(tmp_path: Path) -> None:
    """--report r.html gets the page of the journal the emulated tasks kept (each attempt a
    bar), --report r.json the JSON report, both from one run."""
    tasks = []
    for n in range(3):
        marker = shlex.quote(str(tmp_path / f"marker-{n}"))  # any node: the first try fails
        body = f"test -e {marker} || {{ touch {marker}; exit 1; }}"
        script = f"{SH_TASKKIT} run --max-retries 1 -- sh -c {shlex.quote(body)}"
        tasks.append(
            {
                "id": f"t{n}",
                "commandLine": "/bin/sh -c " + shlex.quote(script),
                "constraints": {"maxTaskRetryCount": 1},
            }
        )
    (tmp_path / "tasks.json").write_text(json.dumps(tasks))
    done = taskkit(
        tmp_path, "local", "run", "tasks.json", "--report", "r.html", "--report", "r.json"
    )
    assert done.returncode == 0, done.stderr
    assert json.loads((tmp_path / "r.json").read_text())["summary"]["succeeded"] == 3
    page = (tmp_path / "r.html").read_text()
    data = page.split('id="data">', 1)[1].split("</script>", 1)[0]
    drawn = json.loads(data)
    assert sorted(drawn["tasks"]) == ["t0", "t1", "t2"]
    assert len(drawn["bars"]) // 9 == 6  # a retryable failure, then a success, each
    assert "taskkit: report: wrote r.html: 3 tasks, 6 bars" in done.stderr


def test_local_run_of_plain_commands_still_gets_its_page(tmp_path: Path) -> None:
    """Tasks that do not run through taskkit run keep no journal: the page is written,
    empty, saying so; the run's exit code is the job's."""
    (tmp_path / "tasks.json").write_text(json.dumps([{"id": "a", "commandLine": "true"}]))
    done = taskkit(tmp_path, "local", "run", "tasks.json", "--report", "out/r.HTML")
    assert done.returncode == 0, done.stderr
    page = (tmp_path / "out" / "r.HTML").read_text()
    assert "no task of job local has a journal" in page
