"""R4 node cache under load: eight tasks on one emulated node (``taskkit local run --nodes 1
--slots 8``) stage the same blob from Azurite through the node cache, all at once.

The blob (1 GiB at size "full", 128 MiB at "ci") is random bytes, uploaded with the plain SDK
(no taskkit metadata: nothing tells taskkit its digest beforehand). Each task is what
``taskkit batch task-json`` prints for ``taskkit run -i az://r4data/big.bin=big.bin -- test -s
big.bin``, with the journal in a ``file://`` state beside the emulator's folder.

What must hold (each broken one is a problem):

- **one download**, counted without taskkit: every ``Blob_Download`` of the blob that Azurite
  answered with 200 or 206 is read from Azurite's ``--debug`` log (its ``x-ms-range`` header, else
  the whole blob), and their bytes add up to the blob's size, once;
- **taskkit says the same**: the stage notes of the eight attempts (their ``taskkit.txt`` in the
  journal) say 1 file downloaded and 7 linked from the node cache, none failed;
- **eight correct files**: each task's ``wd/big.bin`` has the source's XXH3-128 (of its plain
  bytes, not taskkit's chunk tree; files sharing an inode are read once);
- **sane disk use**: the bytes allocated under the emulator's DIR (each inode once, sampled every
  50 ms while the job runs) stay below 1.5 x the blob: there was never a second copy;
- every task succeeded, and ``local run`` exited 0.

Rows: downloads, bytes fetched from storage against the blob's size, seconds, and each task's
wait (its staging time: the one that downloads, and the seven that wait for it, then link).

Run alone: ``.venv/bin/python bench/rel_cache.py [--size ci|full]`` (needs Azurite).
"""

from __future__ import annotations

import argparse
import base64
import json
import math
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import xxhash
from azure.storage.blob import BlobBlock

from taskkit.testing import Azurite, find_azurite

#: The repository: its .azurite/ holds the Azurite that make test installs.
REPO = Path(__file__).resolve().parent.parent
NAME = "R4 node cache"
TASKKIT = (sys.executable, "-m", "taskkit")
SIZES = {"ci": 128 * 1024**2, "full": 1024**3}
TASKS = 8
CONTAINER, BLOB = "r4data", "big.bin"
#: Bytes per block of the upload, and per read of a file being checked.
CHUNK = 8 * 1024**2
#: Seconds the whole job may take before the suite ends it.
TIMEOUT = 900.0
#: Peak bytes under DIR, in blobs, at or above which a second copy was made.
TWO_COPIES = 1.5

# Azurite's --debug log: a request's method, URL and headers, its operation, its end.
_REQUEST = re.compile(
    r"^\S+ (?P<id>\S+) \w+: BlobStorageContextMiddleware: RequestMethod=(?P<method>\S+) "
    r"RequestURL=(?P<url>\S+) RequestHeaders:(?P<headers>\{.*\}) ClientIP="
)
_OPERATION = re.compile(r"^\S+ (?P<id>\S+) \w+: DispatchMiddleware: Operation=(?P<op>\w+)")
_END = re.compile(r"^\S+ (?P<id>\S+) \w+: EndMiddleware: .* StatusCode=(?P<status>\d+)")
_RANGE = re.compile(r"bytes=(\d+)-(\d*)")


@dataclass
class Fetched:
    """The reads of one blob that Azurite served: answered (200/206) and refused ones."""

    requests: int = 0
    bytes: int = 0
    failed: int = 0


def fetched(log: str, container: str, blob: str, size: int) -> Fetched:
    """The GETs of ``container/blob`` in a piece of Azurite's debug log, and their bytes."""
    requests: dict[str, tuple[str, dict[str, str]]] = {}
    operations: dict[str, str] = {}
    found = Fetched()
    for line in log.splitlines():
        if request := _REQUEST.match(line):
            path = urllib.parse.unquote(urllib.parse.urlsplit(request["url"]).path)
            requests[request["id"]] = (path, json.loads(request["headers"]))
        elif operation := _OPERATION.match(line):
            operations[operation["id"]] = operation["op"]
        elif (end := _END.match(line)) and operations.get(end["id"]) == "Blob_Download":
            path, headers = requests.get(end["id"], ("", {}))
            if not path.endswith(f"/{container}/{blob}"):
                continue
            if end["status"] not in ("200", "206"):
                found.failed += 1
                continue
            found.requests += 1
            span = _RANGE.match(headers.get("x-ms-range") or headers.get("range") or "")
            if span is None:
                found.bytes += size
            else:
                last = int(span[2]) if span[2] else size - 1
                found.bytes += min(last, size - 1) - int(span[1]) + 1
    return found


@dataclass
class Staged:
    """What one attempt's stage note says."""

    task: str
    downloaded: int
    linked: int
    failed: int
    seconds: float


def stage_note(task: str, text: str) -> Staged | None:
    """The stage note of an attempt's ``taskkit.txt``: counts and seconds."""
    line = next((x for x in text.splitlines() if re.search(r"\bstaged \d+ files? in ", x)), None)
    if line is None:
        return None

    def count(pattern: str) -> int:
        found = re.search(pattern, line)
        return int(found[1]) if found else 0

    seconds = re.search(r"staged \d+ files? in ([\d.]+) s", line)
    return Staged(
        task,
        count(r"(\d+) downloaded"),
        count(r"(\d+) linked from the node cache"),
        count(r"(\d+) failed"),
        float(seconds[1]) if seconds else float("nan"),
    )


class DiskPeak:
    """The most bytes allocated under a folder (each inode once), sampled by a thread."""

    def __init__(self, root: Path, every: float = 0.05) -> None:
        self.root = root
        self.every = every
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="disk-peak", daemon=True)

    def __enter__(self) -> DiskPeak:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.allocated())

    def allocated(self) -> int:
        seen: dict[tuple[int, int], int] = {}
        for folder, _, names in os.walk(self.root):
            for name in names:
                try:
                    st = os.lstat(os.path.join(folder, name))
                except OSError:
                    continue  # renamed or removed while walked
                seen[(st.st_dev, st.st_ino)] = st.st_blocks * 512
        return sum(seen.values())

    def _sample(self) -> None:
        while not self._stop.wait(self.every):
            self.peak = max(self.peak, self.allocated())


def upload_random(azurite: Azurite, size: int) -> str:
    """Put ``size`` random bytes at ``r4data/big.bin`` in blocks; their XXH3-128 (hex)."""
    digest = xxhash.xxh3_128()
    with azurite.blob_service_client() as service:
        service.create_container(CONTAINER)
        blob = service.get_blob_client(CONTAINER, BLOB)
        blocks: list[BlobBlock] = []
        for index, start in enumerate(range(0, size, CHUNK)):
            data = os.urandom(min(CHUNK, size - start))
            digest.update(data)
            block = base64.b64encode(f"{index:08d}".encode()).decode()
            blob.stage_block(block, data)
            blocks.append(BlobBlock(block))
        blob.commit_block_list(blocks)
    return digest.hexdigest()


def file_digest(path: Path) -> str:
    digest = xxhash.xxh3_128()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def environ(azurite: Azurite) -> dict[str, str]:
    """This environment without Batch's, Azure's and taskkit's variables (each node keeps its
    caches in its own shared folder), with the connection string, and this Python's
    ``taskkit`` first on PATH (the command lines call it by name)."""
    foreign = ("AZ_BATCH_", "AZURE_", "TASKKIT_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(foreign)}
    env["PATH"] = os.pathsep.join([os.path.dirname(sys.executable), env.get("PATH", "")])
    env["AZURE_STORAGE_CONNECTION_STRING"] = azurite.connection_string
    return env


def task_json(env: dict[str, str], state: str) -> list[dict[str, object]]:
    """Eight tasks: what ``taskkit batch task-json`` prints, once per id (the command line
    names no task: ``taskkit run`` takes the id from ``AZ_BATCH_TASK_ID``)."""
    argv = [*TASKKIT, "batch", "task-json", "--id", "cache-1", "--state", state,
            "-i", f"az://{CONTAINER}/{BLOB}={BLOB}", "--", "test", "-s", BLOB]  # fmt: skip
    done = subprocess.run(argv, env=env, capture_output=True, text=True, check=True)
    task = json.loads(done.stdout)
    return [{**task, "id": f"cache-{n}"} for n in range(1, TASKS + 1)]


@dataclass
class Job:
    """One run of the eight tasks: what it left in ``scratch``, and what was measured."""

    scratch: Path
    size: int
    source: str = ""
    code: int = 0
    stderr: str = ""
    seconds: float = 0.0
    served: Fetched = field(default_factory=Fetched)
    peak: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def local(self) -> Path:
        return self.scratch / "local"

    @property
    def state(self) -> Path:
        return self.scratch / "state"

    def run(self, azurite: Azurite) -> None:
        """Upload the blob, run the tasks with ``taskkit local run``, count what Azurite
        served them and the disk they used."""
        self.source = upload_random(azurite, self.size)
        env = environ(azurite)
        tasks = self.scratch / "tasks.json"
        tasks.write_text(json.dumps(task_json(env, f"file://{self.state}"), indent=2))
        argv = [*TASKKIT, "local", "run", str(tasks), "--nodes", "1", "--slots", str(TASKS),
                "--job-id", "r4", "--dir", str(self.local),
                "--report", str(self.scratch / "report.json")]  # fmt: skip
        since = azurite.log_offset()
        started = time.monotonic()
        with DiskPeak(self.local) as disk:
            try:
                done = subprocess.run(argv, env=env, capture_output=True, text=True,
                                      timeout=TIMEOUT, check=False)  # fmt: skip
                self.code, self.stderr = done.returncode, done.stderr
            except subprocess.TimeoutExpired:
                self.code, self.stderr = -1, f"killed after {TIMEOUT:g} s"
        self.seconds = time.monotonic() - started
        self.peak = disk.peak
        end = azurite.log_offset()
        with azurite.debug_log.open("rb") as log:
            log.seek(since)
            text = log.read(end - since).decode(errors="replace")
        self.served = fetched(text, CONTAINER, BLOB, self.size)

    def check_job(self) -> None:
        if self.code != 0:
            last = (self.stderr.strip().splitlines() or ["(nothing on stderr)"])[-1]
            self.problems.append(f"taskkit local run exited {self.code}, not 0: {last}")
        report = self.scratch / "report.json"
        if not report.is_file():
            self.problems.append(f"no report at {report.name}")
            return
        tasks = json.loads(report.read_text()).get("tasks", [])
        failed = [t.get("id") for t in tasks if t.get("state") != "succeeded"]
        if failed or len(tasks) != TASKS:
            self.problems.append(f"not every task succeeded: {failed or 'tasks missing'}")

    def check_downloads(self) -> list[Staged]:
        """Azurite's count, then the journals'; returns the stage notes found."""
        if self.served.bytes != self.size:
            self.problems.append(
                f"Azurite served {self.served.bytes} bytes of the blob, not {self.size} "
                f"({self.served.bytes / self.size:.2f} downloads in {self.served.requests} GETs)"
            )
        staged = []
        for n in range(1, TASKS + 1):
            log = self.state / "r4" / f"cache-{n}" / "logs" / "00001" / "taskkit.txt"
            note = stage_note(f"cache-{n}", _read(log))
            if note is None:
                self.problems.append(f"no stage note in the journal of cache-{n}")
            else:
                staged.append(note)
        said = self.said(staged)
        if said != (1, TASKS - 1, 0):
            self.problems.append(f"the journals say {said[0]} downloaded, {said[1]} linked, "
                                 f"{said[2]} failed; expected 1, {TASKS - 1}, 0")  # fmt: skip
        return staged

    @staticmethod
    def said(staged: Sequence[Staged]) -> tuple[int, int, int]:
        return (sum(s.downloaded for s in staged), sum(s.linked for s in staged),
                sum(s.failed for s in staged))  # fmt: skip

    def check_files(self) -> tuple[int, int, bool]:
        """The staged files against the source: (files, distinct inodes, all equal)."""
        files = sorted(self.local.glob(f"nodes/*/node/workitems/*/job-1/cache-*/wd/{BLOB}"))
        digests: dict[tuple[int, int], str] = {}
        equal = True
        for path in files:
            st = path.stat()
            inode = (st.st_dev, st.st_ino)
            if inode not in digests:
                digests[inode] = file_digest(path)
            if digests[inode] != self.source:
                equal = False
                where = path.relative_to(self.scratch)
                self.problems.append(f"{where} is not the source (its XXH3-128 differs)")
        if len(files) != TASKS:
            self.problems.append(f"{len(files)} staged files found, not {TASKS}")
        if self.peak >= TWO_COPIES * self.size:
            self.problems.append(
                f"{_mib(self.peak)} allocated under the emulator's folder at the peak: "
                f"a second copy of the {_mib(self.size)} blob"
            )
        return len(files), len(digests), equal


def waits(staged: Sequence[Staged]) -> str:
    """Each task's staging time: the one that downloaded, and the range of those that linked."""
    if not staged:
        return "n/a"
    loader = [f"{s.seconds:.2f} s" for s in staged if s.downloaded]
    linkers = [s.seconds for s in staged if not s.downloaded] or [math.nan]
    median = statistics.median(s.seconds for s in staged)
    linked = f"{min(linkers):.2f}-{max(linkers):.2f} s"
    return (
        f"median {median:.2f} s; the download {', '.join(loader) or 'none'}, "
        f"the {len(staged) - len(loader)} that linked {linked}"
    )


def suite(size: str, scratch: Path) -> dict[str, object]:
    """R4 at ``size`` ("ci" or "full"), in ``scratch`` (an empty folder of the caller's)."""
    job = Job(scratch, SIZES[size])
    with Azurite(find_azurite(cwd=REPO)) as azurite:
        job.run(azurite)
    job.check_job()
    staged = job.check_downloads()
    said = job.said(staged)
    files, inodes, equal = job.check_files()
    served = job.served
    rows = [
        ("downloads", f"{served.bytes / job.size:.2f} (Azurite: {served.requests} GETs answered, "
                      f"{served.failed} refused; the journals: {said[0]} downloaded, "
                      f"{said[1]} linked)"),
        ("bytes fetched vs blob", f"{served.bytes:,} / {job.size:,} ({_mib(job.size)})"),
        ("files", f"{files} staged, {inodes} inode(s), "
                  f"{'all' if equal else 'NOT all'} equal to the source"),
        ("peak disk under DIR", f"{_mib(job.peak)} ({job.peak / job.size:.2f} x the blob)"),
        ("seconds", f"{job.seconds:.1f} s for {TASKS} tasks on 1 node x {TASKS} slots"),
        ("per-task wait (staging)", waits(staged)),
    ]  # fmt: skip
    return {"name": NAME, "rows": rows, "problems": job.problems}


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def _mib(n: float) -> str:
    return f"{n / 1024**2:.1f} MiB"


def main(argv: Sequence[str] | None = None) -> int:
    from rel_secrets import print_result

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--size", choices=tuple(SIZES), default="full")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="taskkit-r4-") as tmp:
        result = suite(args.size, Path(tmp))
    return print_result(result)


if __name__ == "__main__":
    from benchlib import run_main

    run_main(main)
