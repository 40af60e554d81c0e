"""taskkit run against a real Azurite server: the journal, the outputs, and what each run cost.

taskkit runs as a real process (``python -m taskkit run``) with its state and outputs in
containers created for each test; what it wrote is read back with the plain Azure SDK. Requests
come from Azurite's own debug log, with their method, headers and status, so "a re-run only
reads" and "outcome.json is written by conditional requests" are what the server saw. The
commands count their own runs in files outside their working directories.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from taskkit.testing import Azurite

pytestmark = pytest.mark.azurite

TASKKIT = [sys.executable, "-m", "taskkit"]
MANIFEST = "_taskkit_manifest.json"
JOB = "job-1"
#: Operations that change a container, by name (the method is checked too: GET and HEAD only).
WRITE_WORDS = ("Upload", "Stage", "Commit", "Append", "Delete", "Create", "Set", "Put", "Copy")

# Azurite's --debug log: a request's method, URL and headers, then its operation, then its end.
_LOGGED_REQUEST = re.compile(
    r"^\S+ (?P<id>\S+) \w+: BlobStorageContextMiddleware: RequestMethod=(?P<method>\S+) "
    r"RequestURL=(?P<url>\S+) RequestHeaders:(?P<headers>\{.*\}) ClientIP="
)
_LOGGED_OP = re.compile(r"^\S+ (?P<id>\S+) \w+: DispatchMiddleware: Operation=(?P<op>\w+)")
_LOGGED_END = re.compile(r"^\S+ (?P<id>\S+) \w+: EndMiddleware: .* StatusCode=(?P<status>\d+)")


class Request(NamedTuple):
    """One request Azurite served."""

    method: str
    op: str
    container: str
    name: str
    headers: dict[str, str]
    status: int

    @property
    def writes(self) -> bool:
        return self.method not in ("GET", "HEAD") or any(w in self.op for w in WRITE_WORDS)

    @property
    def conditional(self) -> bool:
        return "if-match" in self.headers or self.headers.get("if-none-match") == "*"

    def __repr__(self) -> str:  # short, for assertion messages; never a header
        return f"{self.method} {self.op} {self.container}/{self.name} -> {self.status}"


def requests_since(azurite: Azurite, since: int) -> list[Request]:
    """The requests after byte offset ``since`` of the debug log, in order (barriers left out)."""
    end = azurite.log_offset()  # every request answered so far is in the log now
    with azurite.debug_log.open("rb") as log:
        log.seek(since)
        text = log.read(end - since).decode("utf-8", errors="replace")
    seen: dict[str, dict[str, Any]] = {}
    order: list[str] = []
    for line in text.splitlines():
        if logged := _LOGGED_REQUEST.match(line):
            path = urllib.parse.urlsplit(logged["url"]).path
            parts = [*path.split("/", 3), "", ""][1:4]  # account, container, blob name
            seen[logged["id"]] = {
                "method": logged["method"],
                "container": parts[1],
                "name": urllib.parse.unquote(parts[2]),
                "headers": json.loads(logged["headers"]),
            }
        elif (logged := _LOGGED_OP.match(line)) and logged["id"] in seen:
            seen[logged["id"]]["op"] = logged["op"]
            order.append(logged["id"])
        elif (logged := _LOGGED_END.match(line)) and logged["id"] in seen:
            seen[logged["id"]]["status"] = int(logged["status"])
    return [
        Request(s["method"], s["op"], s["container"], s["name"], s["headers"], s.get("status", 0))
        for s in (seen[i] for i in order)
        if not s["container"].startswith("tk-log-barrier-")
    ]


def secrets_of(connection_string: str) -> list[str]:
    """The connection string and its account key."""
    key = re.search(r"AccountKey=([^;]+)", connection_string)
    assert key is not None
    return [connection_string, key.group(1)]


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what} did not happen within {timeout:g} s"
        time.sleep(0.01)  # bounded poll: a file gives no change notification


def sh(script: str, *args: object) -> list[str]:
    """A command: ``sh -c SCRIPT sh ARGS...`` (paths as arguments, never quoted into code)."""
    return ["sh", "-c", script, "sh", *map(str, args)]


def runs_of(counter: Path) -> int:
    """How many times a command that appends a line to ``counter`` ran."""
    return len(counter.read_text().splitlines()) if counter.exists() else 0


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str

    @property
    def own_lines(self) -> list[str]:
        """What taskkit itself said (the command's own output is passed through as is)."""
        return [line for line in self.stderr.splitlines() if line.startswith("taskkit: ")]

    def assert_one_error_line(self) -> None:
        assert "Traceback" not in self.stderr, self.stderr
        lines = self.stderr.strip().splitlines()
        assert len(lines) == 1, lines
        assert lines[0].startswith("taskkit: error: "), lines


@dataclass
class Running:
    proc: subprocess.Popen[str]
    echoes_secrets: bool


@dataclass
class Tasks:
    """Runs ``taskkit run`` as a real process against the session's Azurite, with its state,
    inputs and outputs in containers of the test's own."""

    azurite: Azurite
    tmp: Path
    state: str
    data: str
    out: str
    started: list[Running] = field(default_factory=list)

    @property
    def state_url(self) -> str:
        return f"az://{self.state}/runs"

    @property
    def secrets(self) -> list[str]:
        return secrets_of(self.azurite.connection_string)

    def journal(self, task: str, name: str) -> str:
        return f"runs/{JOB}/{task}/{name}"

    def workdir(self, name: str) -> Path:
        path = self.tmp / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("AZ_BATCH_", "AZURE_", "TASKKIT_"))
        }
        env["AZURE_STORAGE_CONNECTION_STRING"] = self.azurite.connection_string
        env["TASKKIT_CACHE_DIR"] = str(self.tmp / "statcache")
        env.update(extra or {})
        return env

    def start(
        self,
        *args: str,
        task: str,
        command: list[str],
        workdir: Path | None = None,
        state: str | None = None,
        echoes_secrets: bool = False,
        extra_env: dict[str, str] | None = None,
    ) -> Running:
        wd = workdir or self.workdir(f"wd-{task}")
        argv = [*TASKKIT, "run", "--state", state or self.state_url, "--job-id", JOB,
                "--task-id", task, "--workdir", str(wd), *args, "--", *command]  # fmt: skip
        proc = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
            errors="replace",
            env=self.env(extra_env),
            cwd=self.tmp,
        )
        running = Running(proc, echoes_secrets)
        self.started.append(running)
        return running

    def finish(self, running: Running, timeout: float = 60) -> Result:
        out, err = running.proc.communicate(timeout=timeout)
        result = Result(running.proc.returncode, out, err)
        # taskkit never shows a credential; the command's own output is passed through as is.
        shown = result.own_lines if running.echoes_secrets else [out, err]
        for secret in self.secrets:
            assert not any(secret in text for text in shown), "a credential in taskkit's output"
        return result

    def run(self, *args: str, **kw: Any) -> Result:
        return self.finish(self.start(*args, **kw))

    def counted(self, *args: str, **kw: Any) -> tuple[Result, list[Request]]:
        """A run and the requests it made of the account."""
        since = self.azurite.log_offset()
        result = self.run(*args, **kw)
        return result, requests_since(self.azurite, since)

    def stop_all(self) -> None:
        for running in self.started:
            if running.proc.poll() is None:
                running.proc.kill()
                running.proc.communicate()

    def status(self, task: str) -> dict[str, Any]:
        argv = [*TASKKIT, "status", "--state", self.state_url, "--job-id", JOB,
                "--task-id", task, "--json"]  # fmt: skip
        done = subprocess.run(
            argv, env=self.env(), capture_output=True, text=True, timeout=60, check=False
        )
        assert done.returncode == 0, done.stderr
        for secret in self.secrets:
            assert secret not in done.stdout + done.stderr, "a credential in taskkit status"
        found: dict[str, Any] = json.loads(done.stdout)
        return found

    # -- what the containers hold -------------------------------------------------------------

    def names(self, container: str) -> set[str]:
        with self.azurite.blob_service_client() as service:
            return {b.name for b in service.get_container_client(container).list_blobs()}

    def read(self, container: str, name: str) -> bytes:
        with self.azurite.blob_service_client() as service:
            content: bytes = service.get_blob_client(container, name).download_blob().readall()
            return content

    def record(self, task: str, name: str) -> dict[str, Any]:
        found: dict[str, Any] = json.loads(self.read(self.state, self.journal(task, name)))
        return found

    def holding(self, secret: str) -> list[str]:
        """The blobs of the test's containers that hold ``secret`` (their names only)."""
        return [name for name, content in self.everything().items() if secret.encode() in content]

    def attempts(self, task: str) -> list[dict[str, Any]]:
        """The attempt records of ``task``, in order."""
        prefix = self.journal(task, "attempts/")
        names = sorted(n for n in self.names(self.state) if n.startswith(prefix))
        return [json.loads(self.read(self.state, name)) for name in names]

    def everything(self) -> dict[str, bytes]:
        """Every blob of the test's containers, by ``container/name``."""
        return {
            f"{c}/{name}": self.read(c, name)
            for c in (self.state, self.data, self.out)
            for name in sorted(self.names(c))
        }


@pytest.fixture
def tasks(azurite: Azurite, tmp_path: Path) -> Iterator[Tasks]:
    """State, input and output containers of the test's own, deleted after it."""
    tag = uuid.uuid4().hex[:12]
    state, data, out = (f"tk-{role}-{tag}" for role in ("state", "data", "out"))
    with azurite.blob_service_client() as service:
        for name in (state, data, out):
            service.create_container(name)
        found = Tasks(azurite, tmp_path, state=state, data=data, out=out)
        try:
            yield found
        finally:
            found.stop_all()
            for name in (state, data, out):
                service.delete_container(name)


def put_input(t: Tasks, name: str, content: bytes) -> str:
    """Upload an input blob with the plain SDK; its ``az://`` URL."""
    with t.azurite.blob_service_client() as service:
        service.get_blob_client(t.data, name).upload_blob(content)
    return f"az://{t.data}/{name}"


#: Counts its run in $1, copies the staged input to res/, says which attempt it is.
COPY = 'echo run >> "$1"; echo "attempt $TASKKIT_ATTEMPT"; mkdir -p res && cp input.txt res/out.txt'


# -- tests ----------------------------------------------------------------------------------------


def test_a_goal_met_rerun_only_reads_and_does_not_run_the_command(tasks: Tasks) -> None:
    """Once a task succeeded, running it again makes a few reads, one write (the note of a run
    short-circuited, under the journal's skips/, that reports count), and runs nothing."""
    source = put_input(tasks, "in/input.txt", b"some input\n")
    counter = tasks.tmp / "count"
    args = ("-i", f"{source}=input.txt", "-o", f"res/**=az://{tasks.out}/r/")
    first = tasks.run(*args, task="t", command=sh(COPY, counter))
    assert first.returncode == 0, first.stderr
    assert runs_of(counter) == 1
    assert tasks.names(tasks.out) == {"r/out.txt", f"r/{MANIFEST}"}

    again, requests = tasks.counted(*args, task="t", command=sh(COPY, counter))
    assert again.returncode == 0, again.stderr
    assert runs_of(counter) == 1, "the command ran again"
    (note,) = [r for r in requests if r.writes]
    assert (note.container, note.name.rsplit("/", 1)[0]) == (
        tasks.state,
        tasks.journal("t", "skips"),
    )
    # The floor: the outcome, one listing (here: properties) per input, one properties request
    # per published manifest, which must still be at its recorded version.
    assert sorted((r.op, r.container, r.name) for r in requests if not r.writes) == sorted(
        [
            ("Blob_Download", tasks.state, tasks.journal("t", "outcome.json")),
            ("Blob_GetProperties", tasks.data, "in/input.txt"),
            ("Blob_GetProperties", tasks.out, f"r/{MANIFEST}"),
        ]
    ), requests
    assert again.stdout == ""
    assert again.own_lines == again.stderr.splitlines(), again.stderr
    assert "goal met by attempt 1" in again.stderr


def test_a_deleted_manifest_is_republished_from_the_working_directory(tasks: Tasks) -> None:
    """The published manifest deleted from the account: the re-run notices it (one request),
    republishes the working directory's output without running the command or sending the
    file again, and records the manifest's new version; the run after it is met."""
    source = put_input(tasks, "in/input.txt", b"some input\n")
    counter = tasks.tmp / "count"
    args = ("-i", f"{source}=input.txt", "-o", f"res/**=az://{tasks.out}/r/")
    first = tasks.run(*args, task="t", command=sh(COPY, counter))
    assert first.returncode == 0, first.stderr
    published = tasks.read(tasks.out, f"r/{MANIFEST}")
    with tasks.azurite.blob_service_client() as service:
        service.get_blob_client(tasks.out, f"r/{MANIFEST}").delete_blob()

    again, requests = tasks.counted(*args, task="t", command=sh(COPY, counter))
    assert again.returncode == 0, again.stderr
    assert runs_of(counter) == 1, "the command ran again"
    assert f"az://{tasks.out}/r/{MANIFEST} is missing; republishing them" in again.stderr
    on_out = [(r.op, r.name) for r in requests if r.container == tasks.out and r.writes]
    assert on_out == [("BlockBlob_Upload", f"r/{MANIFEST}")], requests
    assert (
        json.loads(tasks.read(tasks.out, f"r/{MANIFEST}"))["files"]
        == (json.loads(published)["files"])
    )
    outcome = tasks.record("t", "outcome.json")
    assert outcome["attempt"] == 2, outcome
    with tasks.azurite.blob_service_client() as service:
        props = service.get_blob_client(tasks.out, f"r/{MANIFEST}").get_blob_properties()
    assert outcome["published"][0]["version"].strip('"') == props.etag.strip('"'), outcome
    kept = tasks.read(tasks.state, tasks.journal("t", outcome["published"][0]["kept"]))
    assert kept == tasks.read(tasks.out, f"r/{MANIFEST}")

    met = tasks.run(*args, task="t", command=sh(COPY, counter))
    assert "goal met by attempt 2" in met.stderr, met.stderr


def test_a_failed_attempt_then_a_success_publishes_outputs_and_keeps_both_logs(
    tasks: Tasks,
) -> None:
    """Attempt 1 exits 3, attempt 2 succeeds: outcome success in attempt 2, the manifest lists
    the outputs, and attempt 1's stdout is kept in its logs."""
    counter = tasks.tmp / "count"
    script = (
        'echo run >> "$1"; echo "attempt $TASKKIT_ATTEMPT says hello"; '
        'if [ "$(wc -l < "$1")" -eq 1 ]; then echo "failing" >&2; exit 3; fi; '
        "mkdir -p res/sub && echo a > res/a.txt && echo b > res/sub/b.txt"
    )
    args = ("--max-retries", "2", "-o", f"res/**=az://{tasks.out}/r/")
    failed = tasks.run(*args, task="t", command=sh(script, counter))
    assert failed.returncode == 3, failed.stderr
    assert tasks.names(tasks.out) == set(), "a failed attempt published outputs"
    done = tasks.run(*args, task="t", command=sh(script, counter), workdir=tasks.workdir("wd2"))
    assert done.returncode == 0, done.stderr
    assert runs_of(counter) == 2

    outcome = tasks.record("t", "outcome.json")
    assert outcome["state"] == "success", outcome
    assert outcome["attempt"] == 2, outcome
    assert outcome["manifests"] == [f"az://{tasks.out}/r/{MANIFEST}"], outcome
    manifest = json.loads(tasks.read(tasks.out, f"r/{MANIFEST}"))
    assert [f["name"] for f in manifest["files"]] == ["a.txt", "sub/b.txt"], manifest
    assert [f["size"] for f in manifest["files"]] == [2, 2], manifest
    assert tasks.names(tasks.out) == {"r/a.txt", "r/sub/b.txt", f"r/{MANIFEST}"}

    first = tasks.record("t", "attempts/00001.json")
    assert (first["exit_code"], first["verdict"]) == (3, "retryable"), first
    stdout1 = tasks.read(tasks.state, tasks.journal("t", "logs/00001/stdout.txt"))
    assert stdout1 == b"attempt 1 says hello\n"
    stderr1 = tasks.read(tasks.state, tasks.journal("t", "logs/00001/stderr.txt"))
    assert stderr1 == b"failing\n"
    stdout2 = tasks.read(tasks.state, tasks.journal("t", "logs/00002/stdout.txt"))
    assert stdout2 == b"attempt 2 says hello\n"


def test_a_runner_killed_mid_command_is_attempt_1_interrupted(tasks: Tasks) -> None:
    """kill -9 of the runner while its command runs: the next run is attempt 2, reports attempt
    1 interrupted (in taskkit status too), and finishes."""
    pidfile, go = tasks.tmp / "pid", tasks.tmp / "go"
    script = (
        'echo $$ > "$1"; while [ ! -e "$2" ]; do sleep 0.02; done; '
        "mkdir -p res && echo done > res/x.txt"
    )
    command = sh(script, pidfile, go)
    args = ("--max-retries", "3", "-o", f"res/**=az://{tasks.out}/r/")
    running = tasks.start(*args, task="t", command=command)
    try:
        wait_for(pidfile.exists, "the command's start")
        wait_for(lambda: pidfile.read_text().strip().isdigit(), "the command's pid")
        running.proc.kill()
        running.proc.communicate(timeout=30)
    finally:
        # The command runs in a session of its own: the dead runner did not take it along.
        if pidfile.exists() and pidfile.read_text().strip().isdigit():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(int(pidfile.read_text()), signal.SIGKILL)
    assert running.proc.returncode == -signal.SIGKILL
    assert tasks.record("t", "attempts/00001.json")["ended"] is None
    assert tasks.status("t")["attempts"][0]["state"] == "interrupted"

    go.touch()
    done = tasks.run(*args, task="t", command=command)
    assert done.returncode == 0, done.stderr
    assert "attempt 2 of 4" in done.stderr, done.stderr
    assert "interrupted before: [1]" in done.stderr, done.stderr
    status = tasks.status("t")
    attempts = [(a["number"], a["state"], a["exit_code"]) for a in status["attempts"]]
    assert attempts == [(1, "interrupted", None), (2, "ended", 0)], status
    assert status["outcome"]["state"] == "success", status
    assert status["outcome"]["attempt"] == 2, status
    notes = tasks.read(tasks.state, tasks.journal("t", "logs/00002/taskkit.txt")).decode()
    assert "interrupted before: [1]" in notes


def test_two_concurrent_attempts_publish_once(tasks: Tasks) -> None:
    """Two attempts inside the command at once: one success outcome, outcome.json only written
    by conditional requests, the manifest written once, and both exit 0."""
    barrier = tasks.tmp / "barrier"
    barrier.mkdir()
    script = (
        'touch "$1/$TASKKIT_ATTEMPT"; '
        'while [ "$(ls "$1" | wc -l)" -lt 2 ]; do sleep 0.02; done; '
        "mkdir -p res && echo same > res/out.txt"
    )
    args = ("--max-retries", "3", "-o", f"res/**=az://{tasks.out}/r/")
    since = tasks.azurite.log_offset()
    both = [
        tasks.start(*args, task="t", command=sh(script, barrier), workdir=tasks.workdir(name))
        for name in ("node-a", "node-b")
    ]
    results = [tasks.finish(running) for running in both]
    requests = requests_since(tasks.azurite, since)
    assert [r.returncode for r in results] == [0, 0], [r.stderr for r in results]
    assert sorted(p.name for p in barrier.iterdir()) == ["1", "2"]

    outcome = tasks.record("t", "outcome.json")
    assert outcome["state"] == "success", outcome
    outcome_key = tasks.journal("t", "outcome.json")
    on_outcome = [r for r in requests if r.container == tasks.state and r.name == outcome_key]
    writes = [r for r in on_outcome if r.writes]
    assert writes, on_outcome
    assert all(r.conditional for r in writes), writes
    landed = [r for r in writes if 200 <= r.status < 300]
    # The claim (if absent), then success in its place (if still the claim): one publisher.
    assert [r.op for r in landed] == ["BlockBlob_Upload", "BlockBlob_Upload"], writes
    assert landed[0].headers.get("if-none-match") == "*", writes
    assert "if-match" in landed[1].headers, writes
    manifest_writes = [
        r for r in requests if r.container == tasks.out and r.name == f"r/{MANIFEST}" and r.writes
    ]
    assert [(r.op, r.status) for r in manifest_writes] == [("BlockBlob_Upload", 201)], requests
    data_writes = [r for r in requests if r.name == "r/out.txt" and r.writes]
    assert len(data_writes) == 1, data_writes

    attempts = tasks.attempts("t")
    assert [(a["number"], a["exit_code"]) for a in attempts] == [(1, 0), (2, 0)], attempts
    assert outcome["attempt"] in (1, 2)
    other = next(a for a in attempts if a["number"] != outcome["attempt"])
    assert "published the same work meanwhile" in other["reason"], other


def test_a_recorded_permanent_failure_ends_later_runs_without_writes(tasks: Tasks) -> None:
    """Exit 4 with --permanent-codes 4 is recorded; a later run exits 4 at once, running
    nothing and writing only the note of a run short-circuited (under the journal's skips/)."""
    counter = tasks.tmp / "count"
    command = sh('echo run >> "$1"; exit 4', counter)
    args = ("--permanent-codes", "4", "--max-retries", "3")
    first = tasks.run(*args, task="t", command=command)
    assert first.returncode == 4, first.stderr
    outcome = tasks.record("t", "outcome.json")
    assert (outcome["state"], outcome["exit_code"], outcome["attempt"]) == ("permanent", 4, 1)

    again, requests = tasks.counted(*args, task="t", command=command)
    assert again.returncode == 4, again.stderr
    assert runs_of(counter) == 1, "the command ran again"
    (note,) = [r for r in requests if r.writes]
    assert (note.container, note.name.rsplit("/", 1)[0]) == (
        tasks.state,
        tasks.journal("t", "skips"),
    )
    again.assert_one_error_line()
    assert "permanent failure in attempt 1" in again.stderr
    assert len(tasks.attempts("t")) == 1


def test_a_finished_step_is_restored_from_azurite_into_a_fresh_workdir(tasks: Tasks) -> None:
    """A step publishes its outputs, then the attempt fails; the retry, in a new working
    directory, skips the step and finds its files restored from Azurite."""
    counter, go = tasks.tmp / "count", tasks.tmp / "go"
    step = shlex.join([*TASKKIT, "step", "make", "-o", f"made/*=az://{tasks.out}/steps/", "--"])
    script = (
        f'{step} sh -c \'echo run >> "$0"; mkdir -p made && echo data > made/a.txt\' "$1" '
        '|| exit "$?"; cat made/a.txt; [ -e "$2" ] || exit 3'
    )
    command = sh(script, counter, go)
    first = tasks.run("--max-retries", "2", task="t", command=command)
    assert first.returncode == 3, first.stderr
    assert runs_of(counter) == 1
    assert tasks.record("t", "steps/make.json")["attempt"] == 1
    assert tasks.read(tasks.out, "steps/a.txt") == b"data\n"

    go.touch()
    fresh = tasks.workdir("fresh")
    retry = tasks.run("--max-retries", "2", task="t", command=command, workdir=fresh)
    assert retry.returncode == 0, retry.stderr
    assert runs_of(counter) == 1, "the step ran again"
    assert (fresh / "made" / "a.txt").read_bytes() == b"data\n"
    assert retry.stdout == "data\n"
    assert "step make: done in attempt 1, skipped; 1 of its files restored" in retry.stderr


def test_a_state_container_that_does_not_exist_is_exit_200_writing_nothing(tasks: Tasks) -> None:
    """--state in a missing container: exit 200, one error line, no write, no command run."""
    counter = tasks.tmp / "count"
    missing = f"tk-missing-{uuid.uuid4().hex[:12]}"
    result, requests = tasks.counted(
        "-o", f"res/**=az://{tasks.out}/r/", task="t", state=f"az://{missing}/runs",
        command=sh('echo run >> "$1"', counter),
    )  # fmt: skip
    assert result.returncode == 200, result.stderr
    result.assert_one_error_line()
    assert missing in result.stderr
    assert [r for r in requests if r.writes] == [], requests
    assert runs_of(counter) == 0
    with tasks.azurite.blob_service_client() as service:
        assert missing not in {c.name for c in service.list_containers()}
    assert tasks.names(tasks.out) == set()


def test_no_blob_and_no_output_holds_the_account_key(tasks: Tasks) -> None:
    """A command that prints the connection string and the key, a failed and a successful
    attempt with outputs, a missing input: no blob written holds a credential, and taskkit's
    own lines show none."""
    conn = tasks.azurite.connection_string
    counter = tasks.tmp / "count"
    script = (
        'echo run >> "$1"; echo "$AZURE_STORAGE_CONNECTION_STRING"; echo "key $TEST_KEY" >&2; '
        'if [ "$(wc -l < "$1")" -eq 1 ]; then exit 5; fi; mkdir -p res && echo r > res/r.txt'
    )
    # The key reaches the command through its environment, never its command line.
    options = {"command": sh(script, counter), "echoes_secrets": True,
               "extra_env": {"TEST_KEY": secrets_of(conn)[1]}}  # fmt: skip
    args = ("--max-retries", "1", "-o", f"res/**=az://{tasks.out}/r/")
    failed = tasks.run(*args, task="t", **options)
    assert failed.returncode == 5, failed.stderr
    assert conn in failed.stdout, "the command's own console output is passed through as is"
    done = tasks.run(*args, task="t", **options)
    assert done.returncode == 0, done.stderr
    missing = tasks.run("-i", f"az://{tasks.data}/nothing.txt=x", task="u", command=["true"])
    assert missing.returncode == 201, missing.stderr
    tasks.status("t")  # tasks.run and tasks.status check their output for credentials

    logs = [
        tasks.journal("t", f"logs/0000{n}/{f}.txt") for n in (1, 2) for f in ("stdout", "stderr")
    ]
    assert set(logs) <= tasks.names(tasks.state)
    assert tasks.names(tasks.out) == {"r/r.txt", f"r/{MANIFEST}"}
    conn_in = tasks.holding(conn)
    assert conn_in == [], f"blobs holding the connection string: {conn_in}"
    assert tasks.read(tasks.state, logs[0]) == b"***\n", "the line is kept, redacted"
    key_in = tasks.holding(secrets_of(conn)[1])
    assert key_in == [], f"blobs holding the account key: {key_in}"


def test_a_credential_in_the_command_line_is_not_stored(tasks: Tasks) -> None:
    """The connection string as an argument of the command (a shell expanded it into the Batch
    command line): no journal record holds it."""
    conn = tasks.azurite.connection_string
    result = tasks.run(task="t", command=["sh", "-c", "true", "sh", conn])
    assert result.returncode == 0, result.stderr
    assert tasks.record("t", "outcome.json")["state"] == "success"
    conn_in = tasks.holding(conn)
    assert conn_in == [], f"journal blobs holding the connection string: {conn_in}"
