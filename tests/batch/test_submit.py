"""``taskkit batch submit`` against a local endpoint that answers as the Batch service documents
(taskkit.testing.batch_endpoint): the Batch service itself cannot run here. The real azure-batch
SDK sends every request; each test runs the CLI as a real process (importing azure.batch into
the test process would register SDK error classes that the storage tests walk)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from taskkit.batch.submit import BODY_LIMIT, COLLECTION_LIMIT, plan_submission
from taskkit.exceptions import ConfigError, DataError, UsageError
from taskkit.testing.batch_endpoint import BatchEndpoint, Failure

ACCOUNT = "devbatch"
KEY = "c2VjcmV0LWtleS1uZXZlci10by1iZS1zaG93bg=="  # base64, as a real key is


@pytest.fixture
def endpoint() -> Iterator[BatchEndpoint]:
    with BatchEndpoint(ACCOUNT) as ep:
        yield ep


def tasks_file(tmp_path: Path, tasks: list[dict[str, Any]], name: str = "tasks.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(tasks))
    return path


def plain(n: int, prefix: str = "t", **extra: Any) -> list[dict[str, Any]]:
    return [
        {"id": f"{prefix}{i:05}", "commandLine": f"/bin/sh -c 'echo {i}'", **extra}
        for i in range(n)
    ]


def submit(
    endpoint: BatchEndpoint,
    path: Path,
    *args: str,
    env: dict[str, str] | None = None,
    patience: str = "1s",
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        submit_argv(endpoint.url, path, "--patience", patience, *args),
        capture_output=True,
        text=True,
        env=submit_env(env),
        timeout=120,
        check=False,
    )
    assert "Traceback" not in done.stdout + done.stderr, done.stderr
    assert KEY not in done.stdout + done.stderr
    return done


def submit_argv(url: str, path: Path, *args: str) -> list[str]:
    """``taskkit batch submit PATH --endpoint URL ARGS`` as a process's argv."""
    return [
        sys.executable, "-m", "taskkit", "batch", "submit", str(path),
        "--endpoint", url, *args,
    ]  # fmt: skip


def submit_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This environment without Batch or taskkit settings, with the test account's key."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AZURE_BATCH", "TASKKIT_"))}
    env.update(AZURE_BATCH_ACCOUNT=ACCOUNT, AZURE_BATCH_ACCESS_KEY=KEY)
    env.update(extra or {})
    return env


def collections(endpoint: BatchEndpoint) -> list[list[dict[str, Any]]]:
    return [r.json()["value"] for r in endpoint.posted("/addtaskcollection") if r.status == 200]


# --- the plan (pure) ------------------------------------------------------------------------


def test_plan_cuts_collections_of_at_most_100_tasks() -> None:
    """250 small tasks: three requests of 100, 100 and 50, in file order."""
    plan = plan_submission(json.dumps(plain(250)), "f", job_id="j")
    assert [len(c.tasks) for c in plan.collections] == [100, 100, 50]
    assert [i for c in plan.collections for i in c.tasks] == list(range(250))


def test_plan_cuts_collections_under_the_size_limit() -> None:
    """Tasks of ~40 KB each: a request holds as many as stay under the body limit, every
    request's body (as the SDK serialises it) stays under it, and none is empty."""
    big = plain(60, environmentSettings=[{"name": "BLOB", "value": "x" * 40_000}])
    plan = plan_submission(json.dumps(big), "f", job_id="j")
    assert len(plan.collections) > 1
    for collection in plan.collections:
        body = json.dumps({"value": [plan.tasks[i] for i in collection.tasks]})
        assert 0 < len(collection.tasks) <= COLLECTION_LIMIT
        assert len(body) <= collection.size <= BODY_LIMIT


def test_a_task_larger_than_one_request_is_refused_before_sending() -> None:
    """One task over the limit cannot be sent at all: a DataError naming it."""
    huge = plain(2)
    huge[1]["environmentSettings"] = [{"name": "X", "value": "y" * BODY_LIMIT}]
    with pytest.raises(DataError, match=r"'t00001'.*bytes"):
        plan_submission(json.dumps(huge), "f", job_id="j")


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"job_id": "bad id"}, ConfigError),
        ({"job_id": "x" * 65}, ConfigError),
        ({"job_id": "j", "create_job": True}, UsageError),
        ({"job_id": "j", "pool_id": "p"}, UsageError),
        ({"job_id": "j", "pool_id": "p/q", "create_job": True}, ConfigError),
    ],
)
def test_bad_settings_are_refused_in_the_plan(
    kwargs: dict[str, Any], error: type[Exception]
) -> None:
    """Job and pool ids are Batch ids; --create-job needs a pool; a pool needs --create-job."""
    with pytest.raises(error):
        plan_submission(json.dumps(plain(1)), "f", **kwargs)


def test_depends_on_beyond_64000_characters_is_refused() -> None:
    """dependsOn.taskIds may hold 64,000 characters in all; beyond, the plan says to use
    ranges."""
    many = [{"id": f"{'p' * 60}{i:04}", "commandLine": "true"} for i in range(1100)]
    many.append(
        {"id": "last", "commandLine": "true", "dependsOn": {"taskIds": [t["id"] for t in many]}}
    )
    with pytest.raises(DataError, match="taskIdRanges"):
        plan_submission(json.dumps(many), "f", job_id="j")


def test_container_tasks_are_taken_for_the_service() -> None:
    """Fields the emulator refuses (a container) are sent to Batch as written."""
    task = plain(1)[0] | {"containerSettings": {"imageName": "ubuntu"}, "requiredSlots": 2}
    plan = plan_submission(json.dumps([task]), "f", job_id="j")
    assert plan.tasks[0]["containerSettings"] == {"imageName": "ubuntu"}


# --- against the endpoint -------------------------------------------------------------------


def test_tasks_arrive_as_written_in_collections_of_100(
    endpoint: BatchEndpoint, tmp_path: Path
) -> None:
    """Every task reaches Batch once, exactly as in the file, in requests of at most 100, each
    signed with the account's shared key; the summary counts them."""
    endpoint.add_job("nightly")
    tasks = plain(250)
    tasks[3]["environmentSettings"] = [{"name": "Q", "value": "quote ' \" $HOME `x` é"}]
    done = submit(endpoint, tasks_file(tmp_path, tasks), "--job-id", "nightly")
    assert done.returncode == 0, done.stderr
    assert "250 added, 0 already there, 0 failed, 0 not sent" in done.stdout
    sent = collections(endpoint)  # in any order: -j 4 sends four at once
    assert sorted(len(c) for c in sent) == [50, 100, 100]
    assert sorted((t for c in sent for t in c), key=lambda t: str(t["id"])) == tasks
    for collection in sent:  # each request holds a run of the file, in the file's order
        ids = [int(str(t["id"])[1:]) for t in collection]
        assert ids == list(range(ids[0], ids[0] + len(ids)))
    assert all(
        r.headers["authorization"].startswith(f"SharedKey {ACCOUNT}:") for r in endpoint.requests
    )
    assert sorted(endpoint.task_ids("nightly")) == [t["id"] for t in tasks]


def test_submitting_again_adds_nothing_and_says_so(endpoint: BatchEndpoint, tmp_path: Path) -> None:
    """A re-run of the same file lists the job's tasks and sends none of them again."""
    endpoint.add_job("nightly")
    path = tasks_file(tmp_path, plain(120))
    assert submit(endpoint, path, "--job-id", "nightly").returncode == 0
    posts = len(list(endpoint.posted("/addtaskcollection")))
    again = submit(endpoint, path, "--job-id", "nightly", "--json")
    assert again.returncode == 0, again.stderr
    outcome = json.loads(again.stdout)
    assert (len(outcome["added"]), len(outcome["existing"])) == (0, 120)
    assert len(list(endpoint.posted("/addtaskcollection"))) == posts
    assert len(endpoint.task_ids("nightly")) == 120


def test_task_exists_counts_as_already_there(endpoint: BatchEndpoint, tmp_path: Path) -> None:
    """A task Batch reports as existing (added by someone else after the listing) is counted
    as already there, not as a failure: exit 0."""
    endpoint.add_job("nightly")
    endpoint.task_errors["t00002"] = [("clientError", "TaskExists")]
    done = submit(endpoint, tasks_file(tmp_path, plain(5)), "--job-id", "nightly", "--json")
    assert done.returncode == 0, done.stderr
    outcome = json.loads(done.stdout)
    assert outcome["existing"] == ["t00002"]
    assert len(outcome["added"]) == 4
    assert outcome["failed"] == {}


def test_a_refused_task_is_named_and_a_rerun_adds_only_it(
    endpoint: BatchEndpoint, tmp_path: Path
) -> None:
    """A client error for one task: the others are added, that one is named on stderr with
    Batch's code, exit 65; the re-run sends that task alone."""
    endpoint.add_job("nightly")
    endpoint.task_errors["t00007"] = [("clientError", "InvalidPropertyValue")]
    path = tasks_file(tmp_path, plain(30))
    done = submit(endpoint, path, "--job-id", "nightly")
    assert done.returncode == 65
    assert "29 added, 0 already there, 1 failed" in done.stdout
    (line,) = [ln for ln in done.stderr.splitlines() if "error" in ln]
    assert "'t00007'" in line
    assert "InvalidPropertyValue" in line
    again = submit(endpoint, path, "--job-id", "nightly")
    assert again.returncode == 0, again.stderr
    assert [t["id"] for t in collections(endpoint)[-1]] == ["t00007"]


def test_a_server_error_for_one_task_is_sent_again(endpoint: BatchEndpoint, tmp_path: Path) -> None:
    """Batch answering serverError for a task in a collection: that task is sent again in a
    later request and added."""
    endpoint.add_job("nightly")
    endpoint.task_errors["t00004"] = [("serverError", "InternalError")]
    done = submit(endpoint, tasks_file(tmp_path, plain(10)), "--job-id", "nightly")
    assert done.returncode == 0, done.stderr
    assert [t["id"] for t in collections(endpoint)[-1]] == ["t00004"]
    assert len(endpoint.task_ids("nightly")) == 10


def test_a_service_down_mid_run_stops_with_75_and_the_rerun_adds_the_rest(
    endpoint: BatchEndpoint, tmp_path: Path
) -> None:
    """The first collection is added, then every request fails with 503 for longer than the
    patience: exit 75, the 150 unsent tasks counted; the re-run sends exactly those."""
    endpoint.add_job("nightly")
    path = tasks_file(tmp_path, plain(250))
    endpoint.fail(Failure(503, times=10_000, suffix="/addtaskcollection", after=1))
    done = submit(endpoint, path, "--job-id", "nightly", "--json", "-j", "1")
    assert done.returncode == 75, done.stderr
    outcome = json.loads(done.stdout)
    assert len(outcome["added"]) == 100
    assert len(outcome["unsent"]) == 150
    assert "re-run" in done.stderr or "again" in done.stderr
    endpoint.failures.clear()
    before = len(collections(endpoint))
    again = submit(endpoint, path, "--job-id", "nightly", "--json")
    assert again.returncode == 0, again.stderr
    resent = [t["id"] for c in collections(endpoint)[before:] for t in c]
    assert sorted(resent) == outcome["unsent"]
    assert len(endpoint.task_ids("nightly")) == 250


def test_after_a_5xx_the_retry_opens_a_new_connection(
    endpoint: BatchEndpoint, tmp_path: Path
) -> None:
    """A 503 keeps its connection open on the server's side; the retry still comes on a new
    connection and says Connection: close."""
    endpoint.add_job("nightly")
    endpoint.fail(Failure(503, times=1, suffix="/addtaskcollection"))
    done = submit(endpoint, tasks_file(tmp_path, plain(3)), "--job-id", "nightly")
    assert done.returncode == 0, done.stderr
    posts = list(endpoint.posted("/addtaskcollection"))
    assert [p.status for p in posts] == [503, 200]
    assert posts[1].connection != posts[0].connection
    assert posts[1].headers.get("connection") == "close"


def test_throttling_with_retry_after_is_waited_out(endpoint: BatchEndpoint, tmp_path: Path) -> None:
    """429 twice, then success: the tasks are added once."""
    endpoint.add_job("nightly")
    endpoint.fail(Failure(429, times=2, suffix="/addtaskcollection", retry_after=0))
    done = submit(endpoint, tasks_file(tmp_path, plain(3)), "--job-id", "nightly")
    assert done.returncode == 0, done.stderr
    assert [p.status for p in endpoint.posted("/addtaskcollection")] == [429, 429, 200]


def test_no_job_without_create_job_is_66_and_nothing_is_sent(
    endpoint: BatchEndpoint, tmp_path: Path
) -> None:
    """A job that is not there: exit 66 naming --create-job; no task request."""
    done = submit(endpoint, tasks_file(tmp_path, plain(3)), "--job-id", "missing")
    assert done.returncode == 66
    assert "--create-job" in done.stderr
    assert not list(endpoint.posted("/addtaskcollection"))


def test_create_job_sets_dependencies_and_the_failure_action(
    endpoint: BatchEndpoint, tmp_path: Path
) -> None:
    """--create-job: the job is created on the pool with usesTaskDependencies when a task has
    dependsOn and onTaskFailure performExitOptionsJobAction when a task sets a jobAction."""
    tasks = plain(3)
    tasks[2]["dependsOn"] = {"taskIds": ["t00000"]}
    tasks[1]["exitConditions"] = {
        "exitCodes": [
            {"code": 3, "exitOptions": {"dependencyAction": "block", "jobAction": "terminate"}}
        ]
    }
    args = (tasks_file(tmp_path, tasks), "--job-id", "run7", "--create-job", "--pool-id", "spot")
    done = submit(endpoint, *args)
    assert done.returncode == 0, done.stderr
    assert "(job created)" in done.stdout
    (created,) = [r.json() for r in endpoint.posted("/jobs")]
    assert created == {
        "id": "run7",
        "poolInfo": {"poolId": "spot"},
        "usesTaskDependencies": True,
        "onTaskFailure": "performExitOptionsJobAction",
    }
    again = submit(endpoint, *args)
    assert again.returncode == 0, again.stderr
    assert len(list(endpoint.posted("/jobs"))) == 1  # the job is reused, not created twice


@pytest.mark.parametrize(
    ("job", "task_extra", "words"),
    [
        ({"uses_task_dependencies": False}, {"dependsOn": {"taskIds": ["t00000"]}}, "dependencies"),
        (
            {"on_task_failure": "noaction"},
            {"exitConditions": {"default": {"jobAction": "disable"}}},
            "jobAction",
        ),
        ({"state": "completed"}, {}, "completed"),
    ],
)
def test_a_job_that_cannot_take_the_tasks_is_refused_before_any_task(
    endpoint: BatchEndpoint,
    tmp_path: Path,
    job: dict[str, Any],
    task_extra: dict[str, Any],
    words: str,
) -> None:
    """An existing job without task dependencies, without the failure action a jobAction needs,
    or already completed: exit 78, one line, no task sent."""
    endpoint.add_job("old", **job)
    tasks = plain(2)
    tasks[1].update(task_extra)
    done = submit(endpoint, tasks_file(tmp_path, tasks), "--job-id", "old")
    assert done.returncode == 78, done.stderr
    assert len(done.stderr.splitlines()) == 1
    assert words in done.stderr
    assert not list(endpoint.posted("/addtaskcollection"))


def test_dry_run_sends_nothing_and_shows_each_request(
    endpoint: BatchEndpoint, tmp_path: Path
) -> None:
    """--dry-run checks the file and prints one line per request with its task count and
    bytes, and makes no request at all (no credentials needed)."""
    done = submit(
        endpoint,
        tasks_file(tmp_path, plain(250)),
        "--job-id",
        "j",
        "--dry-run",
        env={"AZURE_BATCH_ACCESS_KEY": "", "AZURE_BATCH_ACCOUNT": ""},
    )
    assert done.returncode == 0, done.stderr
    posts = [ln for ln in done.stdout.splitlines() if "addtaskcollection" in ln]
    assert len(posts) == 3
    assert "100 tasks (t00000 .. t00099)" in posts[0]
    assert "bytes" in posts[2]
    assert endpoint.requests == []


def test_wrong_credentials_are_78_and_never_shown(endpoint: BatchEndpoint, tmp_path: Path) -> None:
    """A key for another account: Batch answers 403; the run stops with one line and the key
    appears nowhere."""
    endpoint.add_job("nightly")
    done = submit(
        endpoint,
        tasks_file(tmp_path, plain(2)),
        "--job-id",
        "nightly",
        env={"AZURE_BATCH_ACCOUNT": "someoneelse"},
    )
    assert done.returncode in (77, 78), done.stderr
    assert len(done.stderr.splitlines()) == 1
    assert "someoneelse" not in endpoint.task_ids("nightly")


def test_ten_thousand_tasks_show_progress_and_all_arrive(
    endpoint: BatchEndpoint, tmp_path: Path
) -> None:
    """10,000 tasks: 100 requests, every task added once, progress lines on stderr."""
    endpoint.add_job("big")
    done = submit(
        endpoint,
        tasks_file(tmp_path, plain(10_000)),
        "--job-id",
        "big",
        "--progress-interval",
        "50ms",
    )
    assert done.returncode == 0, done.stderr
    assert len(collections(endpoint)) == 100
    assert len(endpoint.task_ids("big")) == 10_000
    assert "taskkit: submitting:" in done.stderr


def test_a_retry_after_longer_than_the_patience_does_not_hold_the_run(
    endpoint: BatchEndpoint, tmp_path: Path
) -> None:
    """Throttled with Retry-After: 3600 for ever: the run stops when --patience (3 s) is
    spent, exit 75, the tasks counted as not sent."""
    endpoint.add_job("nightly")
    endpoint.fail(Failure(429, times=10**6, suffix="/addtaskcollection", retry_after=3600))
    started = time.monotonic()
    done = submit(
        endpoint,
        tasks_file(tmp_path, plain(3)),
        "--job-id",
        "nightly",
        "--json",
        patience="3s",
    )
    assert done.returncode == 75, done.stderr
    assert time.monotonic() - started < 30
    assert json.loads(done.stdout)["unsent"] == ["t00000", "t00001", "t00002"]


def test_time_ends_the_retries_not_a_count(endpoint: BatchEndpoint, tmp_path: Path) -> None:
    """Thirty 503s in a row, each asking to retry at once: well within --patience 60s, so the
    run goes on and adds the tasks (a cap on the number of retries would have stopped it)."""
    endpoint.add_job("nightly")
    endpoint.fail(Failure(503, times=30, suffix="/addtaskcollection", retry_after=0))
    done = submit(endpoint, tasks_file(tmp_path, plain(3)), "--job-id", "nightly", patience="60s")
    assert done.returncode == 0, done.stderr
    statuses = [p.status for p in endpoint.posted("/addtaskcollection")]
    assert statuses == [503] * 30 + [200]


class _Nonsense(BaseHTTPRequestHandler):
    """A web server that is not Batch: a page of HTML for every request."""

    def do_GET(self) -> None:
        self._html()

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self._html()

    def _html(self) -> None:
        body = b"<html><body>It works!</body></html>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


def test_an_endpoint_that_is_not_batch_is_78_in_one_line(tmp_path: Path) -> None:
    """A web server answering HTML: exit 78, one line naming the endpoint, no traceback."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Nonsense)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        done = subprocess.run(
            submit_argv(url, tasks_file(tmp_path, plain(2)), "--job-id", "j", "--patience", "2s"),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            env=submit_env(),
        )
    finally:
        server.shutdown()
        server.server_close()
    assert done.returncode == 78, done.stderr
    (line,) = done.stderr.splitlines()
    assert url in line
    assert "did not answer as the Batch service does" in line


def test_ctrl_c_says_what_was_added_and_a_rerun_adds_the_rest(
    endpoint: BatchEndpoint, tmp_path: Path
) -> None:
    """SIGINT while the service throttles the 21st request: exit 130, a note of the 2,000
    tasks added so far; the same command again adds exactly the other 1,000."""
    endpoint.add_job("big")
    endpoint.fail(Failure(429, times=10**6, suffix="/addtaskcollection", after=20, retry_after=1))
    path = tasks_file(tmp_path, plain(3000))
    proc = subprocess.Popen(
        submit_argv(endpoint.url, path, "--job-id", "big", "--patience", "5m", "-j", "1"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=submit_env(),
    )
    deadline = time.monotonic() + 60
    while sum(1 for r in endpoint.posted("/addtaskcollection") if r.status == 429) < 1:
        assert time.monotonic() < deadline, "the throttled request never came"
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted: job big: 2,000 added" in err
    assert "Traceback" not in err
    endpoint.failures.clear()
    again = submit(endpoint, path, "--job-id", "big", "--json")
    assert again.returncode == 0, again.stderr
    outcome = json.loads(again.stdout)
    assert (len(outcome["added"]), len(outcome["existing"])) == (1000, 2000)
    assert len(endpoint.task_ids("big")) == 3000


@pytest.mark.parametrize("jobs", [1, 4])
def test_requests_in_flight_follow_jobs(endpoint: BatchEndpoint, tmp_path: Path, jobs: int) -> None:
    """-j N: up to N collections are sent at once (the endpoint answers each after 50 ms), and
    every task still arrives exactly once."""
    endpoint.add_job("nightly")
    endpoint.delay = 0.05
    done = submit(
        endpoint, tasks_file(tmp_path, plain(1000)), "--job-id", "nightly", "-j", str(jobs)
    )
    assert done.returncode == 0, done.stderr
    assert endpoint.most_at_once == jobs
    sent = [t["id"] for c in collections(endpoint) for t in c]
    assert sorted(sent) == [f"t{i:05}" for i in range(1000)]
