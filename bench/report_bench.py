"""How fast ``taskkit report`` is at 10,000 tasks, and how fast its page draws.

Builds a synthetic journal on ``file://`` in a temporary folder (the records ``taskkit run``
writes: attempts with their transfers, outcomes, steps, skips; a tenth of the tasks retried,
some killed, some permanent, a re-run of half the job that found its goal met), then times:

* reading the journal into a timeline (one listing, then every record), median of runs;
* rendering the page from it, median of runs; the page's size, in all and per task;
* ``taskkit report`` end to end, as a process;
* the page in headless Chromium: the whole browser run (start-up included) and the time the
  page's own script took to draw every bar (it says so in ``data-draw-ms``).

Usage: python bench/report_bench.py [--tasks 10000] [--nodes 100] [--runs 5]
"""

from __future__ import annotations

import argparse
import datetime
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from taskkit.batch.htmlreport import render
from taskkit.runner.journal import Attempt, Moved, Outcome, Skip, StepRecord
from taskkit.runner.timeline import read_timeline
from taskkit.storage.stores import Stores

FP = "xxh3-128:33333333333333333333333333333333"
T0 = datetime.datetime(2026, 3, 1, 12, 0, 0, tzinfo=datetime.timezone.utc)


def _at(seconds: float) -> str:
    stamp = T0 + datetime.timedelta(seconds=seconds)
    return stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def make_job(root: Path, tasks: int, nodes: int, slots: int = 4, seed: int = 7) -> int:
    """A job ``j`` of ``tasks`` tasks under ``root`` (the state folder); the records written."""
    rng = random.Random(seed)
    free = [0.0] * (nodes * slots)  # when each slot is next free
    written = 0
    for n in range(tasks):
        task = root / "j" / f"task-{n:05d}"
        (task / "attempts").mkdir(parents=True)
        tries = 1 + (rng.random() < 0.1) + (rng.random() < 0.03)
        permanent = rng.random() < 0.01
        number = 0
        for t in range(tries):
            number += 1
            slot = min(range(len(free)), key=free.__getitem__) if n % 50 == 0 else n % len(free)
            start = free[slot] + rng.random()
            seconds = rng.uniform(20, 120)
            free[slot] = start + seconds
            last = t == tries - 1
            killed = not last and rng.random() < 0.3
            verdict = "permanent" if permanent and last else "success" if last else "retryable"
            moved = Moved(
                files=12,
                transferred=2 if t else 12,
                skipped=10 if t else 0,
                bytes_transferred=rng.randint(1, 1 << 28),
                bytes_kept=(10 << 20) if t else 0,
            )
            record = Attempt(
                number=number,
                node=f"tvmps_{slot // slots:04d}",
                host="node/boot",
                fingerprint=FP,
                started=_at(start),
                heartbeat=_at(start + seconds),
                interval=30.0,
                logs=f"file://{task}/logs/{number:05d}/",
                ended=None if killed else _at(start + seconds),
                exit_code=None if killed else (0 if verdict == "success" else 3),
                verdict=None if killed else verdict,  # type: ignore[arg-type]
                reason=None if killed else f"exit code {0 if verdict == 'success' else 3}",
                staged=moved,
                uploaded=Moved(files=1, transferred=1, bytes_transferred=1 << 20)
                if verdict == "success"
                else None,
            )
            (task / "attempts" / f"{number:05d}.json").write_bytes(record.to_bytes())
            written += 1
        outcome = Outcome(
            state="permanent" if permanent else "success",
            fingerprint=FP,
            attempt=number,
            at=_at(free[0]),
            exit_code=3 if permanent else 0,
        )
        (task / "outcome.json").write_bytes(outcome.to_bytes())
        (task / "steps").mkdir()
        for step in ("fetch", "align"):
            record_step = StepRecord(name=step, fingerprint=FP, attempt=1, at=_at(0))
            (task / "steps" / f"{step}.json").write_bytes(record_step.to_bytes())
        written += 3
        if n % 2 == 0:  # a re-run of half the job: goal met, nothing run
            (task / "skips").mkdir()
            at = 4000 + rng.random() * 60
            skip = Skip(
                goal="permanent" if permanent else "met",
                attempt=number,
                node=f"tvmps_{rng.randrange(nodes):04d}",
                started=_at(at),
                at=_at(at + 0.3),
                exit_code=3 if permanent else 0,
            )
            (task / "skips" / f"{n:05d}.json").write_bytes(skip.to_bytes())
            written += 1
    return written


def _median(runs: int, work: object) -> tuple[float, object]:
    times, result = [], None
    for _ in range(runs):
        began = time.perf_counter()
        result = work()  # type: ignore[operator]
        times.append(time.perf_counter() - began)
    return statistics.median(times), result


def _chromium(page: Path, profile: Path) -> tuple[float, float, int]:
    """Seconds of a headless Chromium run that loads ``page`` and dumps its DOM, the draw
    time the page's script reports, and the bars drawn."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        raise SystemExit("chromium is needed for the page's load time (apt-get install chromium)")
    began = time.perf_counter()
    done = subprocess.run(
        [browser, "--headless", "--disable-gpu", "--no-sandbox", "--no-first-run",
         f"--user-data-dir={profile}", "--window-size=1400,900", "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=300, check=True,
    )  # fmt: skip
    seconds = time.perf_counter() - began
    draw = re.search(r'data-draw-ms="([0-9.]+)"', done.stdout)
    bars = re.search(r'data-drawn="([0-9]+)"', done.stdout)
    if draw is None or bars is None:
        raise SystemExit("the page's script did not finish drawing")
    return seconds, float(draw.group(1)), int(bars.group(1))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--nodes", type=int, default=100)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="taskkit-report-bench-") as tmp:
        root = Path(tmp)
        began = time.perf_counter()
        records = make_job(root / "state", args.tasks, args.nodes)
        print(f"synthetic journal: {args.tasks:,} tasks, {records:,} records on file:// "
              f"({time.perf_counter() - began:.1f} s to write)")  # fmt: skip
        state = f"file://{root}/state"
        with Stores() as stores:
            read_s, timeline = _median(args.runs, lambda: read_timeline(stores, state, "j"))
        assert timeline is not None
        bars = len(timeline.bars)  # type: ignore[attr-defined]
        render_s, page = _median(args.runs, lambda: render(timeline))  # type: ignore[arg-type]
        size = len(str(page).encode())
        target = root / "report.html"
        cli = []
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
        for _ in range(args.runs):
            began = time.perf_counter()
            subprocess.run(
                [sys.executable, "-m", "taskkit", "report", "--state", state, "--job-id", "j",
                 "-o", str(target)],
                check=True, capture_output=True, env=env,
            )  # fmt: skip
            cli.append(time.perf_counter() - began)
        loads = [_chromium(target, root / f"profile-{n}") for n in range(min(args.runs, 3))]
        print(f"read the journal into a timeline ({bars:,} bars): median {read_s:.2f} s "
              f"of {args.runs}")  # fmt: skip
        print(f"render the page: median {render_s * 1000:.0f} ms of {args.runs}")
        print(f"page size: {size / 1e6:.2f} MB, {size / args.tasks:.0f} bytes per task, "
              f"{size / bars:.0f} per bar")  # fmt: skip
        print(f"taskkit report end to end (a process): median {statistics.median(cli):.2f} s "
              f"of {args.runs}")  # fmt: skip
        print(f"headless Chromium, start to DOM dumped: median "
              f"{statistics.median(s for s, _, _ in loads):.2f} s of {len(loads)}; the page's "
              f"script drew {loads[0][2]:,} bars in median "
              f"{statistics.median(d for _, d, _ in loads):.0f} ms")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
