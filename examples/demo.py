"""The taskkit demo (``make demo``): examples/shell-pipeline/ end to end, on this machine.

A copy of the example goes to ``.demo/shell-pipeline/``, where its data is made (``remote/``
stands for blob storage; the tasks read and write it through ``file://`` URLs), the job's task
JSON is written by ``taskkit batch task-json`` (``tasks.sh``), and the job runs on an emulated
Batch node (``taskkit local run``). One task's ``taskkit run`` is killed with SIGKILL as soon as
its first step is recorded done: a lost node or the OOM killer can strike at any moment, and
this one is chosen so that the demo always shows the same thing, a retry that resumes. Then
the same job again, where every goal is met, and what the journal says was saved. Everything
stays under ``.demo/`` (``make clean`` removes it); no Azure account is needed.

The demo checks what it shows: it exits 1 with one line when the story did not happen.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

from taskkit.runner.journal import Attempt, Moved
from taskkit.runner.lifetime import process_start
from taskkit.runner.timeline import read_timeline
from taskkit.storage.stores import Stores
from taskkit.transfer.summary import format_size

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent / ".demo"
EXAMPLE = ROOT / "shell-pipeline"
JOB = "shell-pipeline"
#: The task killed once its first step is done.
VICTIM = "s2"
#: What running the example makes, left out of the copy.
MADE = ("remote", ".taskkit-local", "tasks.json", "runs.log", "report.html", "__pycache__")


class StoryBroken(Exception):
    """What the demo meant to show did not happen."""


def main() -> int:
    started = time.monotonic()
    shutil.rmtree(ROOT, ignore_errors=True)
    shutil.copytree(HERE / "shell-pipeline", EXAMPLE, ignore=shutil.ignore_patterns(*MADE))
    state = f"file://{EXAMPLE / 'remote' / 'state'}"
    env = environment(state)
    print(f"taskkit demo: examples/shell-pipeline on an emulated Batch node, in {shown(ROOT)}/")
    run(env, sys.executable, "make_data.py")
    (EXAMPLE / "tasks.json").write_text(run(env, "sh", "tasks.sh"))
    print(
        f"  data   {shown(EXAMPLE / 'remote')}/ (the store): a {size('ref/genes.tsv')} reference, "
        f"samples s1 s2 s3 ({size('samples/s1.tsv')} each)"
    )
    print("  tasks  tasks.json: a Batch task per sample, from taskkit batch task-json")

    local = ["taskkit", "local", "run", "tasks.json", "--job-id", JOB, "--nodes", "1"]
    local += ["--slots", "2"]
    print(f"\n1. the job on an emulated node; {VICTIM} is killed once its step align is done")
    print(f"  $ {' '.join(local)}")
    killer = Killer(EXAMPLE / "remote" / "state" / JOB / VICTIM)
    killer.start()
    first = run(env, *local, check=False)
    killer.stop()
    if killer.killed is None:
        raise StoryBroken(f"{VICTIM} finished before its step align was seen done")
    print(f"  kill -9 {VICTIM}'s taskkit run (pid {killer.killed}): align was recorded done")
    print(job_line(first, "the first run"))
    attempts()
    before = ledger_lines()
    results = EXAMPLE / "remote" / "results"
    print(f"  published in {shown(results)}/SAMPLE/ (counts.tsv, summary.txt):")
    for result in sorted(results.glob("*/summary.txt")):
        print(f"    {result.read_text().strip()}")

    print("\n2. the same job again: every goal is met, nothing runs")
    print(f"  $ {' '.join(local)} --report report.html")
    again = run(env, *local, "--report", "report.html", check=False)
    print(job_line(again, "the re-run"))
    if ledger_lines() != before:
        raise StoryBroken("a step ran again in the re-run")
    saved(state)
    print(f"\ndone in {time.monotonic() - started:.1f} s; all of it is under {shown(ROOT)}/")
    return 0


def environment(state: str) -> dict[str, str]:
    """Yours, without any Batch or taskkit setting of your shell; this Python's ``taskkit``
    first on PATH (the tasks' command lines call it); the journal where the tasks keep it."""
    own = ("AZ_BATCH_", "TASKKIT_", "AZURE_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(own)}
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["TASKKIT_STATE"] = state
    env["RUNS_LOG"] = str(EXAMPLE / "runs.log")
    return env


def run(env: dict[str, str], *argv: str, check: bool = True) -> str:
    """Run ``argv`` in the example's folder; what it printed (stdout, then stderr)."""
    done = subprocess.run(
        list(argv), cwd=EXAMPLE, env=env, capture_output=True, text=True, check=False
    )
    said = (done.stdout + done.stderr).strip()
    if check and done.returncode != 0:
        raise StoryBroken(f"{' '.join(argv)} exited {done.returncode}: {said}")
    return said


class Killer(threading.Thread):
    """Kills the running attempt of the task whose journal is ``task`` as soon as its step
    align is recorded done: the attempt's ``taskkit run``, by the pid and start time in its
    record (a pid the system gave to another process since is left alone)."""

    def __init__(self, task: Path) -> None:
        super().__init__(name="killer", daemon=True)
        self.task = task
        self.killed: int | None = None
        self._done = threading.Event()

    def stop(self) -> None:
        self._done.set()
        self.join()

    def run(self) -> None:
        while not self._done.wait(0.01):
            if not (self.task / "steps" / "align.json").exists():
                continue
            for record in sorted((self.task / "attempts").glob("*.json"), reverse=True):
                attempt = Attempt.model_validate_json(record.read_bytes())
                if attempt.ended is None and attempt.pid and alive(attempt):
                    os.kill(attempt.pid, signal.SIGKILL)
                    self.killed = attempt.pid
                break
            return


def alive(attempt: Attempt) -> bool:
    """Whether the attempt's ``taskkit run`` is still the process with its pid."""
    return attempt.pid_start is None or process_start(attempt.pid) == attempt.pid_start


def attempts() -> None:
    """Each task's attempts: what staging did and which steps ran (from the journal, and the
    ledger the steps append to); then whether the retry resumed."""
    ran = ledger_lines()
    for task in ("s1", "s2", "s3"):
        folder = EXAMPLE / "remote" / "state" / JOB / task / "attempts"
        for record in sorted(folder.glob("*.json")):
            attempt = Attempt.model_validate_json(record.read_bytes())
            steps = [s for s, t, n in ran if t == task and n == attempt.number]
            what = f"ran {', '.join(steps) or 'no step'}"
            if attempt.staged is None:
                what += ", then was killed (exit 137: Batch retries it)"
            else:
                what = f"staged {staging(attempt.staged)}; {what}"
            print(
                f"  {task} attempt {attempt.number}: {attempt.verdict or 'interrupted':<11} {what}"
            )
    retry = attempt_record(VICTIM, 2)
    if ("align", VICTIM, 1) not in ran or ("align", VICTIM, 2) in ran:
        raise StoryBroken(f"{VICTIM}'s retry ran align again")
    if retry.staged is None or retry.staged.transferred:
        raise StoryBroken(f"{VICTIM}'s retry downloaded its inputs again")
    print(
        f"  => {VICTIM}'s retry found its {retry.staged.files} inputs in place and align done "
        "(not run again)"
    )
    later = attempt_record("s3", 1).staged
    if later is None or later.linked < 4:
        raise StoryBroken("s3 did not link the reference and the scripts from the node cache")


def attempt_record(task: str, number: int) -> Attempt:
    path = EXAMPLE / "remote" / "state" / JOB / task / "attempts" / f"{number:05d}.json"
    return Attempt.model_validate_json(path.read_bytes())


def staging(moved: Moved) -> str:
    parts = [
        f"{moved.transferred} downloaded ({format_size(moved.bytes_transferred)})"
        if moved.transferred
        else "nothing downloaded"
    ]
    if moved.linked:
        parts.append(f"{moved.linked} linked from the node cache")
    if moved.skipped:
        parts.append(f"{moved.skipped} already there")
    return ", ".join(parts)


def ledger_lines() -> list[tuple[str, str, int]]:
    """``(step, task, attempt)`` per real run of a step, in order."""
    path = EXAMPLE / "runs.log"
    lines = path.read_text().split("\n") if path.exists() else []
    return [(s, t, int(n)) for s, t, _, n in (line.split() for line in lines if line)]


def saved(state: str) -> None:
    """What the journal says the job did not have to do (what ``taskkit report`` draws)."""
    with Stores() as stores:
        saved = read_timeline(stores, state, JOB).saved
    ran = Counter(step for step, _, _ in ledger_lines())
    print("\n3. what was saved, from the journal (the figures of taskkit report):")
    print(
        f"  files not moved       {saved.files_not_moved} ({format_size(saved.bytes_not_moved)}):"
        " linked from the node cache or already in place"
    )
    print(
        f"  steps not recomputed  {saved.steps_not_recomputed} of {saved.steps_done} recorded "
        f"(really run: align {ran['align']} times, summarise {ran['summarise']})"
    )
    print(
        f"  runs short-circuited  {saved.runs_met}, goal met: {saved.files_not_moved_by_met} "
        f"files ({format_size(saved.bytes_not_moved_by_met)}) not moved again"
    )
    print(
        f"  files moved           {saved.files_moved} ({format_size(saved.bytes_moved)}) by the "
        "attempts that ended (a killed one records none)"
    )
    print(f"  report: {shown(EXAMPLE / 'report.html')} (the job's timeline; open it in a browser)")
    if saved.steps_not_recomputed < 1 or saved.runs_met != 3:
        raise StoryBroken("the journal does not record the work saved")


def job_line(said: str, which: str) -> str:
    """The summary line of ``taskkit local run``, which must say every task succeeded."""
    line = next((line for line in said.splitlines() if line.startswith(f"job {JOB}:")), "")
    if "3 succeeded" not in line:
        raise StoryBroken(f"{which} did not end with every task succeeded:\n{said}")
    return f"  {line}"


def size(name: str) -> str:
    return format_size((EXAMPLE / "remote" / name).stat().st_size)


def shown(path: Path) -> str:
    return os.path.relpath(path)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except StoryBroken as exc:
        print(f"demo: {exc}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("\ndemo: interrupted; run it again to start afresh (everything is in .demo/)")
        sys.exit(130)
