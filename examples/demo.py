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


if __name__ == "__main__":
    main()
