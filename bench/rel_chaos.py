"""Reliability suites R1 (chaos) and R2 (storage faults), run by ``bench/reliability.py``.

**R1 chaos.** A job of ``taskkit run`` shell tasks (``reltasks/shell_task.sh``: two
``taskkit step``s, one of them a checkpointed loop, then the task's output) and ``taskkit call``
function tasks (``reltasks/relfn.py``: two inner task functions as steps, a loop kept in
``taskkit.checkpoint_dir()``, one published file), written by ``taskkit batch task-json`` (and
``--call``) once, with the trial's prefix filled in per trial. Every task stages one shared
input from Azurite through the node cache and publishes to Azurite; the journals are on Azurite
too. One chaos-free run gives the reference bytes; then each trial runs the job under
``taskkit local run --chaos kill=P,preempt=P --seed TRIAL`` and checks:

- every task succeeded (the emulator's exit code and its report);
- every output and step output is byte-identical to the reference (manifests: the same files,
  digests and sizes);
- no manifest ever named a missing or partial blob: a :class:`Watcher` thread lists the trial's
  output prefixes during the run (one listing is one consistent view in Azurite), checks every
  manifest against the blobs beside it and hashes each named blob once per version;
- every attempt the journals recorded has its logs in the store (``taskkit.txt``), and no step
  recorded done ran again: step bodies log ``start``/``end`` and the callers log ``done`` once the
  step is recorded (``taskkit step`` returned, or the inner task did) to a log outside the
  emulator's folder, which a preemption wipes (see ``reltasks/reljob.py``).

It reports the trials, kills and preemptions (from the reports), recomputed steps, the seconds
of checkpointed loops computed again against the checkpoint interval, and the bytes of the shared
input each node downloaded: the first download into a node whose cache lacks it (a new node, or
one a preemption wiped), and any other (a re-download on the same node, target 0), read from the
``staged ...`` line each attempt keeps in its stored ``taskkit.txt``.

**R2 storage faults.** The same job with ``--chaos storage=P`` succeeds within its retry budget;
a task staging a large input while Azurite is paused and resumed within the retry budget
succeeds; left down, the task (``taskkit run``, and ``taskkit call``) exits with a retryable
code, never a permanent one, and its journal (a ``file://`` state, which stays reachable)
records nothing permanent.

Every suite returns ``{"name", "rows", "problems"}``; empty problems = every invariant held.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from azure.core.exceptions import HttpResponseError, ResourceModifiedError, ResourceNotFoundError
from azure.storage.blob import BlobServiceClient, ContainerClient

from taskkit.content.digest import hash_bytes
from taskkit.testing import Azurite, find_azurite

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
TASKS = HERE / "reltasks"
CONTAINER = "rel"
SHARED = "input/shared.bin"
#: The trial's prefix in the job's template (task JSON), replaced per trial.
TOKEN = "RELTRIAL"
MANIFEST = "_taskkit_manifest.json"
TASKKIT = [sys.executable, "-m", "taskkit"]
#: The shell tasks' checkpoint interval (``--checkpoint-interval``) and the function tasks'
#: (``taskkit.checkpoint_dir()`` is synced every heartbeat and when the function ends).
CHECKPOINT_SECONDS = 0.2
FUNCTION_CHECKPOINT_SECONDS = 30.0
#: taskkit run's and taskkit call's codes that say a retry may succeed (README, exit codes).
RETRYABLE = {75, *range(203, 207)}
#: A trial takes seconds; one that has not ended after this is stuck.
TRIAL_SECONDS = 300.0


@dataclass(frozen=True)
class Size:
    """How big a run of the suites is."""

    trials: int
    shell_tasks: int = 1
    function_tasks: int = 1
    nodes: int = 2
    slots: int = 2
    kill: float = 0.3
    preempt: float = 0.1
    input_bytes: int = 2 * 1024 * 1024
    storage: float = 0.1
    storage_trials: int = 1
    outage_bytes: int = 48 * 1024 * 1024


SIZES = {"ci": Size(trials=3), "full": Size(trials=200, storage_trials=5)}


# -- the environment and the job -------------------------------------------------------------


def environment(connection_string: str, size: Size) -> dict[str, str]:
    """What the emulator (and so every task) gets: this process's environment without Batch's
    or taskkit's variables, this Python's folder first on PATH (``taskkit`` and ``python`` of
    the command lines), this checkout first on PYTHONPATH, the storage account."""
    own = ("AZ_BATCH_", "TASKKIT_", "AZURE_STORAGE_", "REL_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(own)}
    env["PATH"] = os.pathsep.join([os.path.dirname(sys.executable), env.get("PATH", "")])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    env["AZURE_STORAGE_CONNECTION_STRING"] = connection_string
    env["REL_SHARED"] = f"az://{CONTAINER}/{SHARED}"
    env["TASKKIT_PROGRESS_INTERVAL"] = "60"
    return env


def task_json(env: Mapping[str, str], argv: Sequence[str]) -> dict[str, Any]:
    """The task ``taskkit batch task-json ARGV`` prints."""
    done = subprocess.run(
        [*TASKKIT, "batch", "task-json", *argv],
        env=dict(env),
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"taskkit batch task-json {' '.join(argv)}: {done.stderr.strip()}")
    found: dict[str, Any] = json.loads(done.stdout)
    return found


def job_template(env: Mapping[str, str], size: Size, logs: Path, *, retries: int = 3) -> str:
    """The job's tasks (a JSON array) with ``TOKEN`` where each trial's prefix goes; the log
    is ``logs/TOKEN.log``."""
    root = f"az://{CONTAINER}/{TOKEN}"
    common = ["--state", f"{root}/state", "--max-retries", str(retries)]
    settings = ["--env", f"REL_ROOT={root}", "--env", f"REL_LOG={logs}/{TOKEN}.log"]
    tasks = []
    for n in range(1, size.shell_tasks + 1):
        name = f"s{n}"
        tasks.append(
            task_json(
                env,
                [
                    "--id", name, *common, *settings,
                    "-i", f"az://{CONTAINER}/{SHARED}=in/shared.bin",
                    "-o", f"out/**={root}/out/{name}/",
                    "--checkpoint-dir", "ckpt",
                    "--checkpoint-interval", f"{CHECKPOINT_SECONDS}s",
                    "--log-interval", "1s",
                    "--", "sh", str(TASKS / "shell_task.sh"), name,
                ],
            )
        )  # fmt: skip
    for n in range(1, size.function_tasks + 1):
        name = f"f{n}"
        tasks.append(
            task_json(
                env,
                ["--id", name, *common, *settings, "--path", str(TASKS),
                 "--call", "relfn:pipeline", f"name={name}"],
            )
        )  # fmt: skip
    return json.dumps(tasks, indent=1)


@contextlib.contextmanager
def azurite_with_input(size: Size) -> Iterator[tuple[Azurite, ContainerClient]]:
    """A private Azurite with the container and the shared input (deterministic bytes)."""
    with Azurite(find_azurite()) as server:
        service = BlobServiceClient.from_connection_string(server.connection_string)
        with service:
            container = service.create_container(CONTAINER)
            data = (bytes(range(256)) * (size.input_bytes // 256 + 1))[: size.input_bytes]
            container.upload_blob(SHARED, data)
            yield server, container


# -- the watcher -----------------------------------------------------------------------------


class Watcher(threading.Thread):
    """Polls ``prefixes`` of ``container`` while a trial runs: every manifest listed must name
    blobs listed beside it (same listing) with its sizes and digests, and each named blob's
    bytes must hash to its digest (checked once per blob version). ``problems`` says what
    disagreed; ``stop()`` ends it after one more poll."""

    def __init__(self, container: ContainerClient, prefixes: Sequence[str], every: float = 0.05):
        super().__init__(name="manifest-watcher", daemon=True)
        self.container, self.prefixes, self.every = container, list(prefixes), every
        self.problems: list[str] = []
        self.polls = 0
        self.manifests: set[tuple[str, str]] = set()
        self._parsed: dict[tuple[str, str], list[dict[str, Any]] | None] = {}
        self._hashed: dict[tuple[str, str], str | None] = {}
        self._stop_event = threading.Event()

    def stop(self) -> None:
        self._stop_event.set()
        self.join()

    def run(self) -> None:
        while True:
            last = self._stop_event.is_set()
            try:
                self.poll()
            except HttpResponseError as exc:  # a poll that fails proves nothing either way
                self.problems.append(f"watcher: listing failed: {exc.message}")
            if last:
                return
            self._stop_event.wait(self.every)

    def poll(self) -> None:
        self.polls += 1
        for prefix in self.prefixes:
            listed = {
                b.name: b
                for b in self.container.list_blobs(name_starts_with=prefix, include=["metadata"])
            }
            for name, blob in listed.items():
                if name.endswith("/" + MANIFEST):
                    self._check(name, str(blob.etag), listed)

    def _check(self, name: str, etag: str, listed: Mapping[str, Any]) -> None:
        files = self._manifest(name, etag)
        if files is None:
            return  # replaced since it was listed: the next poll sees the new one
        self.manifests.add((name, etag))
        dest = name[: -len(MANIFEST)]
        for entry in files:
            where = dest + entry["name"]
            blob = listed.get(where)
            if blob is None:
                self._problem(f"{name} names {entry['name']}, which is not there")
                continue
            metadata = blob.metadata or {}
            if blob.size != entry["size"]:
                self._problem(f"{name} names {entry['name']} of {entry['size']} bytes: {blob.size}")
            elif metadata.get("taskkit_digest") not in (None, entry["digest"]):
                self._problem(f"{name} names {entry['name']} as {entry['digest']}: the blob says "
                              f"{metadata.get('taskkit_digest')}")  # fmt: skip
            else:
                found = self._digest(where, str(blob.etag))
                if found is not None and found != entry["digest"]:
                    self._problem(f"{name} names {entry['name']} as {entry['digest']}: its bytes "
                                  f"are {found}")  # fmt: skip

    def _manifest(self, name: str, etag: str) -> list[dict[str, Any]] | None:
        if (name, etag) not in self._parsed:
            try:
                data = self.container.download_blob(name, etag=etag, match_condition=_IF_SAME)
                files = json.loads(data.readall())["files"]
            except (ResourceNotFoundError, ResourceModifiedError):
                files = None
            self._parsed[(name, etag)] = files
        return self._parsed[(name, etag)]

    def _digest(self, name: str, etag: str) -> str | None:
        if (name, etag) not in self._hashed:
            try:
                data = self.container.download_blob(name, etag=etag, match_condition=_IF_SAME)
                self._hashed[(name, etag)] = str(hash_bytes(data.readall()))
            except (ResourceNotFoundError, ResourceModifiedError):
                self._hashed[(name, etag)] = None
        return self._hashed[(name, etag)]

    def _problem(self, text: str) -> None:
        if text not in self.problems:
            self.problems.append(text)


def _if_same() -> Any:
    from azure.core import MatchConditions

    return MatchConditions.IfNotModified


_IF_SAME = _if_same()


# -- one run of the job ----------------------------------------------------------------------


@dataclass
class Trial:
    """One run of the job under the emulator, and what its checks found."""

    name: str
    report: dict[str, Any] = field(default_factory=dict)
    exit_code: int = -1
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)
    outputs: dict[str, bytes] = field(default_factory=dict)
    watcher_polls: int = 0
    manifests_seen: int = 0
    #: Manifests the watcher found naming a missing or partial blob; outputs unlike the
    #: reference's.
    bad_manifests: int = 0
    outputs_differing: int = 0
    journal_attempts: int = 0
    attempts_with_logs: int = 0
    #: (node id, bytes downloaded, attempt's start) of every shell attempt that staged. A
    #: preempted node comes back with a new id (a new VM, its folders and cache wiped).
    staged: list[tuple[str, int, float]] = field(default_factory=list)


def run_job(
    template: str,
    name: str,
    env: Mapping[str, str],
    container: ContainerClient,
    scratch: Path,
    size: Size,
    *,
    chaos: str | None = None,
    seed: int | None = None,
) -> Trial:
    """Run the job as trial ``name`` (its prefix and job id) under ``taskkit local run``."""
    trial = Trial(name)
    folder = scratch / name
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    tasks = folder / "tasks.json"
    tasks.write_text(template.replace(TOKEN, name))
    report = folder / "report.json"
    argv = [*TASKKIT, "local", "run", str(tasks), "--nodes", str(size.nodes),
            "--slots", str(size.slots), "--job-id", f"rel-{name}", "--report", str(report),
            "--dir", str(folder / "emu")]  # fmt: skip
    if chaos is not None:
        argv += ["--chaos", chaos]
    if seed is not None:
        argv += ["--seed", str(seed)]
    watcher = Watcher(container, [f"{name}/out/", f"{name}/steps/"])
    watcher.start()
    started = time.monotonic()
    try:
        code, said = emulate(argv, env)
    finally:
        watcher.stop()
    trial.seconds = time.monotonic() - started
    trial.exit_code = code
    (folder / "emulator.out").write_text(said)
    if code is None:
        errors = [line for line in said.splitlines() if "Error" in line or "Exception" in line]
        trial.problems.append(
            f"{name}: taskkit local run had not ended after {TRIAL_SECONDS:g} s; stopped with "
            f"Ctrl-C; it said: {' | '.join(errors[-2:]) or 'nothing'}"
        )
    trial.problems += [f"{name}: {p}" for p in watcher.problems]
    trial.bad_manifests = len(watcher.problems)
    trial.watcher_polls, trial.manifests_seen = watcher.polls, len(watcher.manifests)
    if report.is_file():
        trial.report = json.loads(report.read_text())
    failed = [
        f"{t['id']} {t['state']} (exit {t.get('exitCode')})"
        for t in trial.report.get("tasks", [])
        if t.get("state") != "succeeded"
    ]
    if code != 0 or failed or not trial.report:
        tail = " | ".join(said.strip().splitlines()[-3:])
        trial.problems.append(
            f"{name}: taskkit local run exited {code}; not succeeded: "
            f"{', '.join(failed) or 'none'}; {tail}"
        )
    trial.outputs = outputs(container, name)
    return trial


def emulate(argv: Sequence[str], env: Mapping[str, str]) -> tuple[int | None, str]:
    """Run ``taskkit local run`` (``argv``) to its end: its exit code and what it said. One
    that has not ended after ``TRIAL_SECONDS`` gets Ctrl-C (it kills the process groups it
    started), then SIGKILL: the code is None."""
    process = subprocess.Popen(
        argv, env=dict(env), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        said, _ = process.communicate(timeout=TRIAL_SECONDS)
        return process.returncode, said
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGINT)
        try:
            said, _ = process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            said, _ = process.communicate()
        return None, said


def outputs(container: ContainerClient, name: str) -> dict[str, bytes]:
    """What trial ``name`` published, by name below its prefix; a manifest by its files."""
    found = {}
    for prefix in (f"{name}/out/", f"{name}/steps/"):
        for blob in container.list_blobs(name_starts_with=prefix):
            data = container.download_blob(blob.name).readall()
            if blob.name.endswith("/" + MANIFEST):
                files = sorted(
                    (f["name"], f["digest"], f["size"]) for f in json.loads(data)["files"]
                )
                data = json.dumps(files).encode()
            found[blob.name[len(name) + 1 :]] = data
    return found


def compare(trial: Trial, reference: Trial) -> None:
    """Every output of ``trial`` byte-identical to the reference's, none missing or extra."""
    for name in sorted(reference.outputs.keys() | trial.outputs.keys()):
        mine, theirs = trial.outputs.get(name), reference.outputs.get(name)
        if mine != theirs:
            what = "missing" if mine is None else "extra" if theirs is None else "differs"
            trial.problems.append(f"{trial.name}: output {name} {what}")
            trial.outputs_differing += 1


# -- the journals: logs, and what each attempt staged ----------------------------------------


_STAGED = re.compile(r"staged (\d+) files in [\d.]+ s: (\d+) downloaded .*?(\d+) linked")


def check_journals(trial: Trial, container: ContainerClient, size: Size) -> None:
    """Every attempt the shell tasks' journals recorded has its ``taskkit.txt`` in the store;
    note what each one staged, and on which node."""
    job = f"rel-{trial.name}"
    for task in trial.report.get("tasks", []):
        if not task["id"].startswith("s"):
            continue
        folder = f"{trial.name}/state/{job}/{task['id']}/"
        for blob in container.list_blobs(name_starts_with=folder + "attempts/"):
            record = json.loads(container.download_blob(blob.name).readall())
            trial.journal_attempts += 1
            logs = str(record.get("logs") or "")
            key = logs.split(f"az://{CONTAINER}/", 1)[-1] + "taskkit.txt"
            try:
                text = container.download_blob(key).readall().decode(errors="replace")
            except ResourceNotFoundError:
                trial.problems.append(
                    f"{trial.name}: {task['id']} attempt {record['number']} has no logs in the "
                    f"store ({logs or 'no logs URL'})"
                )
                continue
            if not text.strip():
                trial.problems.append(f"{trial.name}: {task['id']} attempt "
                                      f"{record['number']}: empty taskkit.txt")  # fmt: skip
                continue
            trial.attempts_with_logs += 1
            staged = _STAGED.search(text)
            if staged is not None:
                downloaded = int(staged.group(2)) * size.input_bytes
                trial.staged.append(
                    (str(record.get("node", "")), downloaded, _seconds(record["started"]))
                )


def _seconds(stamp: object) -> float:
    """A time of a report or a journal (epoch seconds, or ISO 8601) as epoch seconds."""
    if isinstance(stamp, (int, float)):
        return float(stamp)
    text = str(stamp).replace("Z", "+00:00")
    return datetime.datetime.fromisoformat(text).timestamp()


def downloads(staged: Sequence[tuple[str, int, float]]) -> tuple[int, int, int]:
    """(bytes downloaded into a node whose cache lacked the input, bytes downloaded again into
    one that had it, nodes): per node (a preempted one comes back under a new id), the first
    attempt that finished staging with a download filled the cache; any later download there
    is a re-download. An attempt killed while it staged logged no ``staged`` line: the next
    one to finish on that node is the first."""
    by_node: dict[str, list[tuple[float, int]]] = defaultdict(list)
    for node, downloaded, start in staged:
        by_node[node].append((start, downloaded))
    new = again = 0
    for attempts in by_node.values():
        fetched = [d for _, d in sorted(attempts) if d > 0]
        new += fetched[0] if fetched else 0
        again += sum(fetched[1:])
    return new, again, len(by_node)


# -- the step log ----------------------------------------------------------------------------


@dataclass
class StepLog:
    """What the bodies logged in one trial (see ``reltasks/reljob.py``)."""

    recomputed: list[str] = field(default_factory=list)  # started again after done
    reruns: int = 0  # bodies started again before their step was recorded (killed in it)
    #: Seconds of loop iterations computed again, per (task, loop, attempt).
    again: dict[tuple[str, str, str], float] = field(default_factory=dict)

    @classmethod
    def read(cls, path: Path) -> StepLog:
        found = cls()
        done: set[tuple[str, str]] = set()
        starts: Counter[tuple[str, str]] = Counter()
        iterations: dict[tuple[str, str, str], int] = defaultdict(int)
        text = path.read_text() if path.is_file() else ""
        for line in text.splitlines():
            kind, *words = line.split()
            if kind == "start":
                task, step = words[0], words[1]
                if (task, step) in done:
                    found.recomputed.append(f"{task} step {step} (attempt {words[2]})")
                starts[(task, step)] += 1
            elif kind == "done":
                done.add((words[0], words[1]))
            elif kind == "iter":
                task, step, i, t0, t1, attempt = words
                iterations[(task, step, i)] += 1
                if iterations[(task, step, i)] > 1:
                    key = (task, step, attempt)
                    found.again[key] = found.again.get(key, 0.0) + float(t1) - float(t0)
        found.reruns = sum(n - 1 for n in starts.values())
        return found


# -- R1 --------------------------------------------------------------------------------------


def r1(size: str, scratch: Path) -> dict[str, Any]:
    """R1 chaos: see the module's docstring."""
    chosen = SIZES[size]
    scratch = scratch / "r1"
    shutil.rmtree(scratch, ignore_errors=True)
    (scratch / "logs").mkdir(parents=True)
    problems: list[str] = []
    with azurite_with_input(chosen) as (server, container):
        env = environment(server.connection_string, chosen)
        template = job_template(env, chosen, scratch / "logs")
        reference = run_job(template, "ref", env, container, scratch, chosen)
        check_journals(reference, container, chosen)
        problems += reference.problems
        if not reference.outputs:
            problems.append("ref: the chaos-free run published nothing")
        trials: list[Trial] = []
        logs: list[StepLog] = []
        # Strikes land evenly over a task's run time as the chaos-free run measured it (the
        # emulator's default window is the median of the attempts finished so far, a second
        # before any: in a job this small every first strike would land in the first second).
        ran = sorted(a["seconds"] for t in reference.report.get("tasks", [])
                     for a in t["attempts"])  # fmt: skip
        within = ran[len(ran) // 2] if ran else 5.0
        spec = f"kill={chosen.kill},preempt={chosen.preempt},within={within:.1f}"
        for n in range(1, chosen.trials + 1):
            trial = run_job(template, f"t{n}", env, container, scratch, chosen,
                            chaos=spec, seed=n)  # fmt: skip
            if trial.exit_code == 0:  # else the failure is the problem; its outputs would repeat it
                compare(trial, reference)
            check_journals(trial, container, chosen)
            _, again, _ = downloads(trial.staged)
            if again:
                trial.problems.append(f"t{n}: {again} B of the shared input downloaded again "
                                      "into a node cache that held it")  # fmt: skip
            log = StepLog.read(scratch / "logs" / f"t{n}.log")
            trial.problems += [f"t{n}: finished step ran again: {s}" for s in log.recomputed]
            problems += trial.problems
            trials.append(trial)
            logs.append(log)
            if not trial.problems:
                shutil.rmtree(scratch / f"t{n}" / "emu", ignore_errors=True)
    return {"name": "R1 chaos", "rows": r1_rows(chosen, spec, reference, trials, logs),
            "problems": problems}  # fmt: skip


def r1_rows(
    size: Size, spec: str, reference: Trial, trials: Sequence[Trial], logs: Sequence[StepLog]
) -> list[tuple[str, str]]:
    summaries = [t.report.get("summary", {}) for t in trials]
    tasks = sum(len(t.report.get("tasks", [])) for t in trials)
    succeeded = sum(s.get("succeeded", 0) for s in summaries)
    launched = Counter(
        "run" if task["id"].startswith("s") else "call"
        for t in trials
        for task in t.report.get("tasks", [])
        for _ in task.get("attempts", [])
    )
    clean = sum(1 for t in trials if not t.problems)
    shell_again = [v for log in logs for (_, step, _), v in log.again.items() if step != "floop"]
    fn_again = [v for log in logs for (_, step, _), v in log.again.items() if step == "floop"]
    counted = [downloads(t.staged) for t in trials]  # node ids are per trial (own emulator)
    new, again, nodes = (sum(c[i] for c in counted) for i in range(3))
    first, _, _ = downloads(reference.staged)
    seconds = sorted(t.seconds for t in trials)
    median = seconds[len(seconds) // 2] if seconds else 0.0
    return [
        ("job", f"{size.shell_tasks} taskkit run tasks (2 steps each) + {size.function_tasks} "
                f"taskkit call tasks, {size.nodes} nodes x {size.slots} slots"),
        ("chaos", f"{spec}, seeds 1..{len(trials)}"),
        ("trials (all invariants held)", f"{len(trials)} ({clean})"),
        ("tasks succeeded", f"{succeeded} of {tasks}"),
        ("kills / preemptions", f"{sum(s.get('kills', 0) for s in summaries)} / "
                                f"{sum(s.get('preemptions', 0) for s in summaries)}"),
        ("requeues / retries", f"{sum(s.get('requeues', 0) for s in summaries)} / "
                               f"{sum(s.get('retries', 0) for s in summaries)}"),
        ("taskkit run attempts: launched / recorded in the journal / with logs in the store",
         f"{launched['run']} / {sum(t.journal_attempts for t in trials)} / "
         f"{sum(t.attempts_with_logs for t in trials)} (a launch killed before its record "
         "is no attempt)"),
        ("taskkit call attempts launched", f"{launched['call']} (taskkit call stores no logs)"),
        ("outputs byte-identical to the chaos-free run",
         f"{sum(1 for t in trials if t.exit_code == 0 and not t.outputs_differing)} of "
         f"{len(trials)} trials ({len(reference.outputs)} blobs each)"),
        ("manifests checked by the watcher (polls)",
         f"{sum(t.manifests_seen for t in trials)} ({sum(t.watcher_polls for t in trials)}); "
         f"{sum(t.bad_manifests for t in trials)} bad"),
        ("finished steps recomputed", str(sum(len(log.recomputed) for log in logs))),
        ("step bodies re-run before their step was recorded", str(sum(x.reruns for x in logs))),
        ("recomputed loop seconds, taskkit run (total / max per attempt)",
         f"{sum(shell_again):.2f} s / {max(shell_again, default=0.0):.2f} s against a "
         f"{CHECKPOINT_SECONDS:g} s checkpoint interval"),
        ("recomputed loop seconds, taskkit call (total / max per attempt)",
         f"{sum(fn_again):.2f} s / {max(fn_again, default=0.0):.2f} s; checkpoint_dir() "
         f"syncs every {FUNCTION_CHECKPOINT_SECONDS:g} s and at the end"),
        ("shared input downloaded into a node lacking it (new node)",
         f"{new} B into {nodes} nodes ({size.input_bytes} B input; chaos-free run: {first} B)"),
        ("shared input re-downloaded on the same node", f"{again} B (target 0)"),
        ("trial seconds (median / max)", f"{median:.1f} / {max(seconds, default=0.0):.1f}"),
    ]  # fmt: skip


# -- R2 --------------------------------------------------------------------------------------

BIG = "input/big.bin"


def r2(size: str, scratch: Path) -> dict[str, Any]:
    """R2 storage faults: see the module's docstring."""
    chosen = SIZES[size]
    scratch = scratch / "r2"
    shutil.rmtree(scratch, ignore_errors=True)
    (scratch / "logs").mkdir(parents=True)
    problems: list[str] = []
    rows: list[tuple[str, str]] = []
    with azurite_with_input(chosen) as (server, container):
        container.upload_blob(BIG, os.urandom(chosen.outage_bytes))
        env = environment(server.connection_string, chosen)
        template = job_template(env, chosen, scratch / "logs")
        reference = run_job(template, "ref", env, container, scratch, chosen)
        problems += reference.problems
        spec = f"storage={chosen.storage}"
        trials = []
        for n in range(1, chosen.storage_trials + 1):
            trial = run_job(template, f"t{n}", env, container, scratch, chosen,
                            chaos=spec, seed=n)  # fmt: skip
            if trial.exit_code == 0:
                compare(trial, reference)
            problems += trial.problems
            trials.append(trial)
        summaries = [t.report.get("summary", {}) for t in trials]
        tasks = sum(len(t.report.get("tasks", [])) for t in trials)
        rows += [
            ("storage chaos", f"{spec} (every storage request through the faulty proxy), "
                              f"{len(trials)} trials, seeds 1..{len(trials)}"),
            ("tasks succeeded within their retries",
             f"{sum(s.get('succeeded', 0) for s in summaries)} of {tasks}"),
            ("storage faults injected", str(sum(s.get("storageFaults", 0) for s in summaries))),
            ("Batch retries / requeues", f"{sum(s.get('retries', 0) for s in summaries)} / "
                                         f"{sum(s.get('requeues', 0) for s in summaries)}"),
            ("outputs byte-identical to the run without faults",
             f"{sum(1 for t in trials if not t.problems)} of {len(trials)} trials"),
        ]  # fmt: skip
        outage_rows, outage_problems = outages(server, env, scratch, chosen)
        rows += outage_rows
        problems += outage_problems
    return {"name": "R2 storage faults", "rows": rows, "problems": problems}


def outage_tasks(env: Mapping[str, str], state: str, *, retries: Sequence[str]) -> str:
    """One ``taskkit run`` task (with the storage ``retries`` options) and one ``taskkit call``
    task staging the large input, with no Batch retry and a ``file://`` state (reachable while
    Azurite is down)."""
    big = f"az://{CONTAINER}/{BIG}"
    common = ["--state", state, "--max-retries", "0"]
    run = task_json(
        env,
        ["--id", "run", *common, "-i", f"{big}=in/big.bin", *retries,
         "--", "cksum", "in/big.bin"],
    )  # fmt: skip
    call = task_json(
        env,
        ["--id", "call", *common, "--env", f"REL_SHARED={big}",
         "--env", f"REL_ROOT=az://{CONTAINER}/outage", "--path", str(TASKS),
         "--call", "relfn:pipeline", "name=outage"],
    )  # fmt: skip
    return json.dumps([run, call])


def outages(
    server: Azurite, env: Mapping[str, str], scratch: Path, size: Size
) -> tuple[list[tuple[str, str]], list[str]]:
    """Azurite paused while the tasks download the large input: resumed within the retry
    budget (they succeed), then left down (their exit codes are retryable, and nothing is
    recorded permanent)."""
    rows, problems = [], []
    outage = ""
    for name, down in (("back", 3.0), ("down", None)):
        folder = scratch / f"outage-{name}"
        folder.mkdir()
        state = f"file://{folder}/state"
        tasks = folder / "tasks.json"
        # Back: taskkit's default retries (6 tries, 15 s of waits) outlast the outage. Left
        # down: fewer, so that taskkit run gives up soon (taskkit call keeps the default).
        retries = [] if down else ["--retries", "3", "--retry-budget", "3s"]
        tasks.write_text(outage_tasks(env, state, retries=retries))
        report = folder / "report.json"
        argv = [*TASKKIT, "local", "run", str(tasks), "--nodes", "2", "--job-id", "outage",
                "--report", str(report), "--dir", str(folder / "emu")]  # fmt: skip
        with (folder / "emulator.out").open("w") as out:
            emulator = subprocess.Popen(argv, env=dict(env), stdout=out, stderr=subprocess.STDOUT)
            try:
                caught = wait_for_partial(folder / "emu", emulator)
                server.pause()
                paused = time.monotonic()
                if down is not None:
                    time.sleep(down)  # the outage itself: how long storage stays away
                    server.resume()
                    outage = f"{time.monotonic() - paused:.1f} s"
                emulator.wait(timeout=600)
            finally:
                if emulator.poll() is None:
                    emulator.kill()
                    emulator.wait()
                if server.is_paused:
                    outage = f"{time.monotonic() - paused:.1f} s (to the end of the tasks)"
                    server.resume()
        found = json.loads(report.read_text()) if report.is_file() else {}
        codes = {t["id"]: t.get("exitCode") for t in found.get("tasks", [])}
        states = {t["id"]: t.get("state") for t in found.get("tasks", [])}
        if not caught:
            problems.append(f"outage {name}: no download was under way when Azurite stopped")
        if down is not None:
            bad = [f"{t} {s} (exit {codes[t]})" for t, s in states.items() if s != "succeeded"]
            if bad or len(states) != 2:
                problems.append(f"outage of {outage} within the retry budget: not succeeded: "
                                f"{', '.join(bad) or 'no report'}")  # fmt: skip
            rows.append((f"Azurite down {outage} mid-download, then back",
                         ", ".join(f"{t}: {s}" for t, s in sorted(states.items()))))  # fmt: skip
            continue
        for task, code in sorted(codes.items()):
            if code not in RETRYABLE:
                problems.append(f"outage left down: task {task} exited {code}, not a retryable "
                                "code")  # fmt: skip
        recorded = permanent_records(folder / "state")
        problems += [f"outage left down: recorded permanent: {r}" for r in recorded]
        rows += [
            (f"Azurite left down {outage}: exit codes",
             ", ".join(f"{t}: {c}" for t, c in sorted(codes.items())) + " (retryable: "
             + ("all" if all(c in RETRYABLE for c in codes.values()) and codes else "NOT all")
             + ")"),
            ("records saying permanent in the journals", str(len(recorded))),
        ]  # fmt: skip
    return rows, problems


def wait_for_partial(root: Path, process: subprocess.Popen[Any], timeout: float = 120.0) -> bool:
    """Wait until a download of the large input is under way (a partial file with bytes in
    it below ``root``); False when the tasks ended, or the time ran out, first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        for path in root.rglob("*"):
            with contextlib.suppress(OSError):
                named = "partial" in str(path.relative_to(root))
                if named and path.is_file() and path.stat().st_size > 0:
                    return True
        time.sleep(0.01)
    return False


def permanent_records(state: Path) -> list[str]:
    """Every journal record under ``state`` (a ``file://`` state's folder) that says permanent:
    an outcome, or an attempt's verdict."""
    found = []
    for path in sorted(state.rglob("*.json")):
        with contextlib.suppress(ValueError, OSError):
            record = json.loads(path.read_text())
            if isinstance(record, dict) and "permanent" in (
                record.get("state"),
                record.get("verdict"),
            ):
                found.append(str(path.relative_to(state)))
    return found


def suite(size: str, scratch: Path) -> dict[str, Any]:
    """R1 (``bench/reliability.py`` asks :func:`suite_r2` for R2)."""
    return r1(size, scratch)


def suite_r2(size: str, scratch: Path) -> dict[str, Any]:
    """R2."""
    return r2(size, scratch)
