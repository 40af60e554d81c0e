"""The taskkit demo: hash a generated dataset, stage it and upload results as a Batch task would.

Run it with ``make demo`` from a fresh clone. Everything it writes stays under ``.demo/``: the
dataset (the embedded ``file://`` store that tasks stage from and upload to), two task working
directories, the node cache they share, and the stat-cache.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / ".demo"
STORE = ROOT / "store"
RESULTS = ROOT / "results"
CACHE = ROOT / "cache"
NODE_CACHE = ROOT / "node-cache"
SMALL_FILES = 2000
LARGE_MIB = 256


def make_dataset() -> None:
    """2,000 small files in 20 folders and one 256 MiB file, from a fixed seed."""
    shutil.rmtree(ROOT, ignore_errors=True)
    block = bytes(range(256)) * 4096  # 1 MiB
    for i in range(SMALL_FILES):
        path = STORE / f"shard-{i % 20:02d}" / f"record-{i:05d}.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(block[i % 256 : i % 256 + 4096] + i.to_bytes(4, "little"))
    with open(STORE / "model.bin", "wb") as f:
        for i in range(LARGE_MIB):
            f.write(block[:-4] + i.to_bytes(4, "little"))


def taskkit_hash(label: str) -> list[dict[str, object]]:
    """Run ``taskkit hash --json`` over the store as a user would, and say what happened."""
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "taskkit", "hash", "--json", str(STORE)],
        capture_output=True,
        text=True,
        env={**os.environ, "TASKKIT_CACHE_DIR": str(CACHE)},
        check=True,
    )
    seconds = time.perf_counter() - started
    results = [json.loads(line) for line in proc.stdout.splitlines()]
    cached = sum(1 for r in results if r["cached"])
    total = sum(int(str(r["size"])) for r in results)
    print(
        f"  {label:<28} {len(results)} files, {total / 2**20:.0f} MiB in {seconds:.2f} s: "
        f"{cached} from the stat-cache, {len(results) - cached} read"
    )
    return results


def taskkit_json(*args: str) -> dict[str, object]:
    """Run ``taskkit ARGS --json`` as a user would; its closing summary object."""
    proc = subprocess.run(
        [sys.executable, "-m", "taskkit", *args, "--json"],
        capture_output=True,
        text=True,
        env={**os.environ, "TASKKIT_CACHE_DIR": str(CACHE)},
        check=True,
    )
    summary: dict[str, object] = json.loads(proc.stdout.splitlines()[-1])
    return summary


def moved(summary: dict[str, object]) -> str:
    return f"{summary['files']} files in {summary['seconds']} s: {summary['transferred']}"


def taskkit_stage(label: str, workdir: Path) -> dict[str, object]:
    """Run ``taskkit stage`` from the store into ``workdir``, through the node cache."""
    workdir.mkdir(parents=True, exist_ok=True)
    summary = taskkit_json(
        "stage",
        "-i",
        f"file://{STORE}/=inputs/",
        "--workdir",
        str(workdir),
        "--cache-dir",
        str(NODE_CACHE),
    )
    print(
        f"  {label:<28} {moved(summary)} copied "
        f"({int(str(summary['bytes_transferred'])) >> 20} MiB), "
        f"{summary['linked']} linked from the node cache, {summary['skipped']} already there"
    )
    return summary


def stage_demo() -> None:
    print("staging the store into task working directories (taskkit stage):")
    task1, task2 = ROOT / "task-1", ROOT / "task-2"
    taskkit_stage("4. task 1, cold", task1)
    warm = taskkit_stage("5. task 1 again (a retry)", task1)
    assert warm["transferred"] == 0
    assert warm["linked"] == 0
    other = taskkit_stage("6. task 2, same node", task2)
    assert other["transferred"] == 0
    (STORE / "shard-03" / "record-00003.bin").write_bytes(b"a new version")
    changed = taskkit_stage("7. task 1, one input changed", task1)
    assert changed["transferred"] == 1
    print("done: a retry moved nothing, a second task linked everything, a change moved one file.")


def taskkit_upload(label: str, workdir: Path) -> dict[str, object]:
    """Run ``taskkit upload`` of the task's ``out/`` to the store's results prefix."""
    summary = taskkit_json(
        "upload", "-o", f"out/**=file://{RESULTS}/run-1/", "--workdir", str(workdir)
    )
    print(
        f"  {label:<28} {moved(summary)} sent "
        f"({int(str(summary['bytes_transferred'])) >> 20} MiB), "
        f"{summary['skipped']} already there"
    )
    return summary


def upload_demo() -> None:
    print("uploading the task's results and publishing them (taskkit upload):")
    task1 = ROOT / "task-1"
    out = task1 / "out"
    for shard in range(20):  # the "work": one result per shard, and a copy of the model
        records = sorted((task1 / "inputs" / f"shard-{shard:02d}").iterdir())
        (out / "shards").mkdir(parents=True, exist_ok=True)
        (out / "shards" / f"shard-{shard:02d}.bin").write_bytes(
            b"".join(r.read_bytes() for r in records)
        )
    shutil.copyfile(task1 / "inputs" / "model.bin", out / "model.bin")
    first = taskkit_upload("8. first upload", task1)
    assert first["transferred"] == 21
    again = taskkit_upload("9. again (a retry)", task1)
    assert again["transferred"] == 0
    (out / "shards" / "shard-05.bin").write_bytes(b"a better result")
    changed = taskkit_upload("10. one result changed", task1)
    assert changed["transferred"] == 1
    manifest = json.loads((RESULTS / "run-1" / "_taskkit_manifest.json").read_bytes())
    print(
        f"  {RESULTS.relative_to(ROOT.parent)}/run-1/_taskkit_manifest.json lists "
        f"{len(manifest['files'])} files, written after them: the set is published"
    )
    print("done: a retry sent nothing, a change sent one file and re-published the set.")


TASK_SCRIPT = """\
set -e
taskkit step merge -o 'merged/*=file://{results}/run-2/merged/' -- \\
    sh -c 'mkdir -p merged && cat inputs/shard-00/* > merged/shard-00.bin && echo merged'
echo "attempt $TASKKIT_ATTEMPT" >> "$TASKKIT_CHECKPOINT_DIR/progress.txt"
if [ "$TASKKIT_ATTEMPT" = 1 ]; then echo 'out of memory (pretend)' >&2; exit 1; fi
mkdir -p out && wc -c merged/shard-00.bin > out/size.txt
"""


def taskkit_run(label: str, workdir: Path, script: Path) -> int:
    """Run the task's script through ``taskkit run`` as a Batch task would, on file:// state."""
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "AZ_BATCH_JOB_ID": "demo-job",
        "AZ_BATCH_TASK_ID": "task-2",
        "TASKKIT_STATE": f"file://{ROOT / 'state'}",
        "TASKKIT_CACHE_DIR": str(CACHE),
    }
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "taskkit",
            "run",
            "--max-retries",
            "2",
            "--workdir",
            str(workdir),
            "-i",
            f"file://{STORE}/shard-00/=inputs/shard-00/",
            "-o",
            f"out/**=file://{RESULTS}/run-2/",
            "--",
            "sh",
            str(script),
        ],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    notes = [line for line in done.stderr.splitlines() if line.startswith("taskkit:")]
    print(f"  {label:<28} exit {done.returncode}: {notes[-1] if notes else ''}")
    return done.returncode


def run_demo() -> None:
    print("running a task through the goal-seeking runner (taskkit run), as Batch retries it:")
    shutil.rmtree(ROOT / "state", ignore_errors=True)
    shutil.rmtree(RESULTS / "run-2", ignore_errors=True)
    workdir = ROOT / "task-2"
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir()
    script = ROOT / "task-2.sh"
    script.write_text(TASK_SCRIPT.format(results=RESULTS))
    assert taskkit_run("11. attempt 1 fails", workdir, script) == 1
    shutil.rmtree(workdir / "merged")  # a retry on another node: the step's output is gone
    assert taskkit_run("12. attempt 2 (a retry)", workdir, script) == 0
    assert (workdir / "merged" / "shard-00.bin").exists(), "the step's output was restored"
    assert taskkit_run("13. once more (goal met)", workdir, script) == 0
    status = subprocess.run(
        [
            sys.executable,
            "-m",
            "taskkit",
            "status",
            "--state",
            f"file://{ROOT / 'state'}",
            "--job-id",
            "demo-job",
            "--task-id",
            "task-2",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    for line in status.stdout.splitlines():
        print(f"    {line}")
    print(
        "done: the retry skipped the finished step (its output restored), resumed from the "
        "checkpoint, and the third run did nothing."
    )


def main() -> None:
    print(f"taskkit demo: dataset and stat-cache under {ROOT}")
    make_dataset()
    # The stat-cache trusts no entry for a file written within 2 s before it was hashed (a later
    # write in the same timestamp tick would be invisible), so let the fresh dataset settle.
    time.sleep(2.1)
    cold = taskkit_hash("1. cold (empty cache)")
    warm = taskkit_hash("2. warm (nothing changed)")
    assert [r["digest"] for r in cold] == [r["digest"] for r in warm]

    changed = STORE / "shard-07" / "record-00007.bin"
    stat = changed.stat()
    changed.write_bytes(b"X" * stat.st_size)  # same size...
    os.utime(changed, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # ...and the old mtime put back
    after = taskkit_hash("3. one file rewritten")
    moved = [r["path"] for r, w in zip(after, warm, strict=True) if r["digest"] != w["digest"]]
    print(
        f"  the rewrite was caught (ctime moved): {[os.path.relpath(str(m), ROOT) for m in moved]}"
    )
    big = next(r for r in after if str(r["path"]).endswith("model.bin"))
    print(f"  {os.path.relpath(str(big['path']), ROOT)}: {big['digest']}")
    print("the second hash run read nothing; the third read only the file that changed.")
    stage_demo()
    upload_demo()
    run_demo()


if __name__ == "__main__":
    main()
