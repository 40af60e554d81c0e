"""How fast ``taskkit stage`` downloads, next to the Azure SDK and adlfs, on one server and data.

Everything runs against a private Azurite server that this script starts (``taskkit.testing``'s
``Azurite``: a random account, a temporary data folder, deleted at the end). Azurite is one Node.js
process that serves about 100-150 MB/s and shares the machine's CPUs with the client under test:
it is the bottleneck here, so the absolute MB/s say little about Azure, and the ratios against
anchors measured in the same run are the result.

What is measured (each a median of ``--runs`` runs, default 3, the variants of a section taking
turns run by run so that a noisy neighbour hurts them all alike; every run is a whole process,
timed from its start to its exit, interpreter start-up and imports included):

0. Seeding, with the Azure SDK (not taskkit): ``small/`` = 200 blobs of 1 MiB, ``large/`` = 4
   blobs of 256 MiB, ``big/`` = 2 blobs of 1 GiB (for section 4), all random bytes; the taskkit
   digest of every blob is computed from the bytes before they are uploaded. Also the start-up
   floors: ``python -c pass`` and the imports of each client.

1. COLD, each dataset on its own, at one concurrency J (``--jobs``, default 8), every run into a
   fresh, empty directory with a fresh stat-cache (``TASKKIT_CACHE_DIR``):

   * ``python -m taskkit stage -i az://C/small/=out/ --workdir W -j J --json --no-node-cache``;
   * the raw-SDK anchor: ``azure.storage.blob.aio``, list the prefix, then every blob under one
     ``asyncio.Semaphore(J)``: a blob of up to 8 MiB in one ``download_blob().readinto(f)``, a
     larger one in 8 MiB ranges (``download_blob(offset, length)``) written with ``os.pwrite`` at
     their offsets: the request pattern and concurrency taskkit uses;
   * (large files only) the SDK's own ``download_blob(max_concurrency=J).readinto(f)``, one file
     after the other (a first 32 MiB GET, then 4 MiB ranges: the SDK's defaults);
   * adlfs: ``AzureBlobFileSystem(connection_string=...).get("C/small/", W + "/", recursive=True)``
     with adlfs's defaults, which parallelise across files only (one request stream per file,
     ``max_concurrency=1``; fsspec's batch of files at once is the open-files limit / 8).

   The first run of each variant is checked (untimed): every file there with the right size and
   the taskkit digest of the seeded bytes, and the requests it made (Azurite's debug log).

2. WARM re-stage of both prefixes into one directory: one cold taskkit stage, then (after the
   stat-cache's 2 s racy window has passed, so that the first warm run records every file as
   trusted) one "first warm" run, which re-hashes the files written within 2 s of being recorded,
   and ``--runs`` more warm runs, with the requests of each (no ``Blob_Download`` may appear).
   The floor: a bare Python process that imports adlfs and lists both prefixes once
   (``fs.find(prefix, detail=True)``).

3. PEAK RSS while staging 2 GiB (``big/``) with taskkit, next to the peak RSS of the runs of
   section 1. Peak RSS is the child's own ``ru_maxrss`` from ``os.wait4`` (not
   ``getrusage(RUSAGE_CHILDREN)``, which is the largest of every child waited for so far).

4. ``--jobs-sweep [2,4,8,16,32]``: taskkit and the raw-SDK anchor, cold, small and large, at each
   J (``--sweep-runs`` runs each, default 1): the measurement behind taskkit's default of 8.

5. ``--small-files`` (``--small-only``: this section alone, seeding only its data): many small
   blobs, cold, ``tiny/`` = 2,000 blobs of 64 KiB and ``small/``, against the raw-SDK anchor AT
   ITS BEST: the anchor at each J of ``--anchor-jobs`` [8,16,32,64] and taskkit at each J of
   ``--taskkit-jobs`` [its default], all taking turns run by run (``--runs`` each), with each
   process's CPU time (user + system: Azurite and the client share two cores here, so the
   client's CPU is the client's speed). The ratios: taskkit at each J / the fastest anchor J
   (throughput, target >= 1.0).

``--quick`` shrinks everything for a smoke run (20 x 1 MiB, 2 x 32 MiB, one run, and no 2 GiB
stage unless ``--big-rss``). MB/s are decimal (1e6 bytes per second), sizes binary (MiB, GiB).
Data lives under ``--workdir`` (default ``.bench/`` at the repository root, ignored by git), in
``stage/``; Azurite keeps its blobs in a temporary folder of its own.

Needs Azurite: ``npm install --prefix .azurite azurite`` (``make test`` does it).

Run: ``.venv/bin/python bench/stage_bench.py [--runs N] [--jobs J] [--quick] [--jobs-sweep]
[--small-files | --small-only] [--anchor-jobs J,J,...] [--taskkit-jobs J,J,...]``
"""

from __future__ import annotations

import argparse
import collections
import compileall
import contextlib
import dataclasses
import importlib
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import xxhash
from benchlib import (
    Proc,
    Timing,
    cpu_model,
    load,
    op_counts,
    output,
    print_load,
    print_ratio,
    print_ratio_header,
    print_table,
    report_anomalies,
    run_main,
)

import taskkit
from taskkit import CHUNK_SIZE, Digest, hash_bytes, hash_file
from taskkit.content.statcache import RACY_WINDOW_NS
from taskkit.testing import Azurite, find_azurite
from taskkit.transfer.stage import DEFAULT_JOBS

REPO = Path(__file__).resolve().parent.parent
PYTHON = str(Path(sys.executable).parent / "python")

KIB = 1 << 10
MIB = 1 << 20
GIB = 1 << 30
#: The raw-SDK anchor's range size, and (taskkit's chunk size) the largest blob it gets in one GET.
ANCHOR_RANGE = 8 * MIB
SINGLE_MAX = CHUNK_SIZE
#: Bytes per range request of the taskkit under test (one chunk per request where it has no
#: RANGE_SIZE): the anchor is also run at this size when it differs.
TASKKIT_RANGE = int(
    getattr(importlib.import_module("taskkit.transfer.download"), "RANGE_SIZE", CHUNK_SIZE)
)
CONTAINER = "stagebench"
#: Seconds to wait after a cold stage before the first warm one: past the stat-cache's racy
#: window, so that the first warm run re-records the racy files as trusted.
SETTLE_S = RACY_WINDOW_NS / 1e9 + 0.1
RSS_TARGET_MB = 200
SWEEP_DEFAULT = "2,4,8,16,32"
#: Section 5: the anchor's concurrencies, of which its best is the one taskkit must match.
ANCHOR_JOBS_DEFAULT = "8,16,32,64"

# -- the anchors, run as files under the work directory -------------------------------------------

SDK_ANCHOR = '''\
"""Raw azure.storage.blob.aio download of one prefix (the anchor of bench/stage_bench.py).

argv: CONTAINER PREFIX DEST JOBS MODE RANGE; MODE is "ranged" (one semaphore of JOBS over every
request; a blob of up to 8 MiB in one GET, a larger one in RANGE-byte ranges written at their
offsets) or "sdk" (the SDK's own download_blob(max_concurrency=JOBS).readinto(f), one file after
another).
"""

import asyncio
import os
import sys

from azure.storage.blob.aio import ContainerClient

SINGLE_MAX = 8 << 20


async def whole(sem, blob, path):
    async with sem:
        with open(path, "wb") as f:
            await (await blob.download_blob()).readinto(f)


async def ranged(sem, blob, fd, offset, length):
    async with sem:
        data = await (await blob.download_blob(offset, length)).readall()
    if len(data) != length:
        raise RuntimeError(f"{blob.blob_name}@{offset}: {len(data)} bytes, not {length}")
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view, offset = view[written:], offset + written


async def main(container, prefix, dest, jobs, mode, size):
    sem = asyncio.Semaphore(jobs)
    conn = os.environ["AZURE_STORAGE_CONNECTION_STRING"]
    async with ContainerClient.from_connection_string(conn, container) as client:
        blobs = [b async for b in client.list_blobs(name_starts_with=prefix)]
        work, fds = [], []
        try:
            for b in blobs:
                path = os.path.join(dest, b.name[len(prefix):])
                os.makedirs(os.path.dirname(path), exist_ok=True)
                blob = client.get_blob_client(b.name)
                if mode == "sdk":
                    with open(path, "wb") as f:
                        await (await blob.download_blob(max_concurrency=jobs)).readinto(f)
                elif b.size <= SINGLE_MAX:
                    work.append(whole(sem, blob, path))
                else:
                    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                    fds.append(fd)
                    os.ftruncate(fd, b.size)
                    for offset in range(0, b.size, size):
                        length = min(size, b.size - offset)
                        work.append(ranged(sem, blob, fd, offset, length))
            await asyncio.gather(*work)
        finally:
            for fd in fds:
                os.close(fd)


container, prefix, dest, jobs, mode, size = sys.argv[1:7]
asyncio.run(main(container, prefix, dest, int(jobs), mode, int(size)))
'''

ADLFS_ANCHOR = '''\
"""adlfs download of one prefix, with adlfs's defaults (argv: CONTAINER/PREFIX/ DEST)."""

import os
import sys

import adlfs

fs = adlfs.AzureBlobFileSystem(connection_string=os.environ["AZURE_STORAGE_CONNECTION_STRING"])
fs.get(sys.argv[1], sys.argv[2].rstrip("/") + "/", recursive=True)
'''

LIST_FLOOR = '''\
"""The floor of a warm re-stage: import adlfs, list the prefixes once (argv: C/PREFIX/ ...)."""

import os
import sys

import adlfs

fs = adlfs.AzureBlobFileSystem(connection_string=os.environ["AZURE_STORAGE_CONNECTION_STRING"])
print(sum(len(fs.find(prefix, detail=True)) for prefix in sys.argv[1:]))
'''

SPAWNER = """\
import json, os, sys, time

for line in sys.stdin:
    req = json.loads(line)
    actions = [
        (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
        (os.POSIX_SPAWN_OPEN, 1, req["out"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600),
        (os.POSIX_SPAWN_OPEN, 2, req["err"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600),
    ]
    try:
        start = time.perf_counter()
        pid = os.posix_spawn(req["argv"][0], req["argv"], req["env"], file_actions=actions)
        _, status, usage = os.wait4(pid, 0)
        seconds = time.perf_counter() - start
    except OSError as exc:
        print(json.dumps({"error": str(exc)}), flush=True)
        continue
    code = os.waitstatus_to_exitcode(status)
    cpu = usage.ru_utime + usage.ru_stime
    print(json.dumps({"seconds": seconds, "maxrss_kib": usage.ru_maxrss, "cpu": cpu,
                      "code": code}), flush=True)
"""


# -- data sets ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Dataset:
    """``count`` blobs of ``size`` random bytes under ``name/``."""

    name: str
    count: int
    size: int

    @property
    def prefix(self) -> str:
        return f"{self.name}/"

    @property
    def total(self) -> int:
        return self.count * self.size

    @property
    def blobs(self) -> list[str]:
        return [f"{self.prefix}f{i:04d}.bin" for i in range(self.count)]

    @property
    def url(self) -> str:
        return f"az://{CONTAINER}/{self.prefix}"

    def describe(self) -> str:
        return f"{self.prefix} = {self.count} x {human(self.size)} ({human(self.total)})"


def human(n: float) -> str:
    if n >= GIB:
        return f"{n / GIB:.4g} GiB"
    if n >= MIB:
        return f"{n / MIB:.4g} MiB"
    return f"{n / KIB:g} KiB"


def seed(az: Azurite, datasets: Sequence[Dataset]) -> dict[str, Digest]:
    """Upload the datasets with the SDK; return the taskkit digest of every blob's bytes."""
    digests: dict[str, Digest] = {}
    with az.blob_service_client() as service:
        container = service.get_container_client(CONTAINER)
        if not container.exists():
            container.create_container()
        for ds in datasets:
            start = time.perf_counter()

            def upload(name: str, ds: Dataset = ds) -> tuple[str, Digest]:
                data = os.urandom(ds.size)
                digest = hash_bytes(data)
                container.upload_blob(name, data, overwrite=True, max_concurrency=4)
                return name, digest

            # Small blobs 8 at a time; a large blob alone, in 4 parallel blocks.
            with ThreadPoolExecutor(8 if ds.size <= SINGLE_MAX else 1) as pool:
                digests.update(pool.map(upload, ds.blobs))
            took = time.perf_counter() - start
            print(
                f"  uploaded {ds.describe()} in {took:.1f} s "
                f"({mbps(ds.total, took):.0f} MB/s into Azurite)",
                flush=True,
            )
    return digests


# -- processes and timing -------------------------------------------------------------------------


class Spawner:
    """Runs the measured processes from a small helper process, and times them there.

    A child's ``ru_maxrss`` starts at the peak RSS of the process it was forked from (Linux
    carries the old address space's high-water mark across ``exec``; ``vfork`` and
    ``posix_spawn`` share the parent's), so children forked from this script, which holds the
    seeded blobs for a while, would report this script's peak. The helper is a bare Python
    (about 10 MiB): it ``posix_spawn``s each command and returns its wall time (from before
    the spawn to after the reap) and ``os.wait4``'s rusage of that child alone (not
    ``getrusage(RUSAGE_CHILDREN)``, the largest of every child reaped so far), with the CPU
    time (user + system) of that child.
    """

    def __init__(self) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="stage-bench-")
        self._out = Path(self._dir.name, "stdout")
        self._err = Path(self._dir.name, "stderr")
        self._helper = subprocess.Popen(
            [PYTHON, "-c", SPAWNER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env={k: v for k, v in os.environ.items() if not k.startswith("AZURE_")},
        )

    def run(self, argv: Sequence[str], env: dict[str, str]) -> Proc:
        helper = self._helper
        assert helper.stdin is not None
        assert helper.stdout is not None
        request = {"argv": list(argv), "env": env, "out": str(self._out), "err": str(self._err)}
        helper.stdin.write(json.dumps(request) + "\n")
        helper.stdin.flush()
        line = helper.stdout.readline()
        if not line:
            raise RuntimeError(f"the spawner died (exit {helper.wait()}) running {shown(argv)}")
        done = json.loads(line)
        if "error" in done:
            raise RuntimeError(f"cannot run {shown(argv)}: {done['error']}")
        return Proc(
            list(argv),
            done["seconds"],
            rss_kib=done["maxrss_kib"],
            cpu=done["cpu"],
            code=done["code"],
            stdout=self._out.read_text(errors="replace"),
            stderr=self._err.read_text(errors="replace"),
        )

    def close(self) -> None:
        if self._helper.stdin is not None:
            self._helper.stdin.close()
        self._helper.wait()
        if self._helper.stdout is not None:
            self._helper.stdout.close()
        self._dir.cleanup()


class Anomalies:
    """Everything that went wrong, said where it happened and again at the end."""

    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, text: str) -> None:
        self.items.append(text)
        print(f"  ANOMALY: {text}", flush=True)

    def failed(self, proc: Proc, what: str) -> None:
        tail = "\n".join(proc.stderr.strip().splitlines()[-15:])
        self.add(
            f"{what}: `{shown(proc.argv)}` exited with {proc.code}\n"
            f"    stdout: {proc.stdout.strip()[-2000:]!r}\n    stderr (tail):\n{tail}"
        )


def shown(argv: Sequence[str]) -> str:
    """A command line as printed: repository paths made relative (no credential is in argv)."""
    text = shlex.join(argv)
    return text.replace(str(REPO) + "/", "").replace(PYTHON, "python")


def mbps(size: int, seconds: float) -> float:
    return size / seconds / 1e6


def fresh(*paths: Path) -> None:
    for path in paths:
        shutil.rmtree(path, ignore_errors=True)
    os.sync()  # no dirty pages of an earlier run left to be written during this one
    paths[0].mkdir(parents=True)


# -- the bench ------------------------------------------------------------------------------------


@dataclass
class Variant:
    """A whole process to time: ``argv(dest)``; ``check`` inspects the first run (untimed)."""

    label: str
    argv: Callable[[Path], list[str]]
    dataset: Dataset | None = None  # the files expected in dest afterwards
    taskkit: bool = False
    kind: str = ""  # its column in the jobs sweep
    target: str | None = None  # for the throughput ratio of taskkit to it


class Bench:
    def __init__(
        self,
        args: argparse.Namespace,
        az: Azurite,
        digests: dict[str, Digest],
        spawner: Spawner,
    ) -> None:
        self.args = args
        self.az = az
        self.digests = digests
        self.scratch: Path = args.workdir / "stage"
        self.scripts = self.scratch / "scripts"
        self.anomalies = Anomalies()
        base = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("TASKKIT_", "AZ_BATCH_", "AZURE_STORAGE_"))
        }
        self.env = {**base, "AZURE_STORAGE_CONNECTION_STRING": az.connection_string}
        self.spawn = spawner.run

    def write_scripts(self) -> None:
        self.scripts.mkdir(parents=True, exist_ok=True)
        for name, text in (
            ("sdk_anchor.py", SDK_ANCHOR),
            ("adlfs_anchor.py", ADLFS_ANCHOR),
            ("list_floor.py", LIST_FLOOR),
        ):
            (self.scripts / name).write_text(text)

    # -- commands

    def taskkit(self, inputs: Sequence[str], jobs: int) -> Callable[[Path], list[str]]:
        def argv(dest: Path) -> list[str]:
            pairs = [arg for text in inputs for arg in ("-i", text)]
            return [PYTHON, "-m", "taskkit", "stage", *pairs, "--workdir", str(dest),
                    "-j", str(jobs), "--json", "--no-node-cache"]  # fmt: skip

        return argv

    def sdk(
        self, ds: Dataset, jobs: int, mode: str, size: int = ANCHOR_RANGE
    ) -> Callable[[Path], list[str]]:
        script = str(self.scripts / "sdk_anchor.py")
        args = [CONTAINER, ds.prefix, str(jobs), mode, str(size)]
        return lambda dest: [PYTHON, script, *args[:2], str(dest), *args[2:]]

    def adlfs(self, ds: Dataset) -> Callable[[Path], list[str]]:
        script = str(self.scripts / "adlfs_anchor.py")
        return lambda dest: [PYTHON, script, f"{CONTAINER}/{ds.prefix}", str(dest)]

    def cold_variants(self, ds: Dataset, jobs: int, *, anchors: bool = True) -> list[Variant]:
        taskkit = self.taskkit([f"{ds.url}=out/"], jobs)
        out = [Variant(f"taskkit stage -j {jobs}", taskkit, ds, taskkit=True, kind="taskkit")]
        if ds.size <= SINGLE_MAX:
            label = f"raw SDK aio, Semaphore({jobs}), download_blob().readinto"
            run = self.sdk(ds, jobs, "ranged")
            out.append(Variant(label, run, ds, kind="raw SDK", target=">= 0.95"))
        else:
            for size in dict.fromkeys([ANCHOR_RANGE, TASKKIT_RANGE]):
                mib = f"{size / MIB:g} MiB"
                note = " (= taskkit's range)" if size == TASKKIT_RANGE else ""
                label = f"raw SDK aio, Semaphore({jobs}), {mib} ranges + pwrite{note}"
                run = self.sdk(ds, jobs, "ranged", size)
                out.append(Variant(label, run, ds, kind=f"raw {mib}", target=">= 0.95"))
        if anchors and ds.size > SINGLE_MAX:
            label = f"SDK download_blob(max_concurrency={jobs}), file by file"
            out.append(Variant(label, self.sdk(ds, jobs, "sdk"), ds, kind="SDK"))
        if anchors:
            label = "adlfs fs.get(recursive=True), defaults"
            out.append(Variant(label, self.adlfs(ds), ds, kind="adlfs"))
        return out

    # -- running

    def dest_of(self, variant: Variant) -> Path:
        return self.scratch / "out" / slug(variant.label)

    def run(self, variant: Variant, *, first: bool) -> Proc:
        """One timed run into a fresh directory; the first one is checked and its requests
        counted, outside the timed part."""
        dest = self.dest_of(variant)
        cache = self.scratch / "cache" / slug(variant.label)
        fresh(dest, cache)
        env = {**self.env, "TASKKIT_CACHE_DIR": str(cache)}
        offset = self.az.log_offset() if first else 0
        proc = self.spawn(variant.argv(dest), env)
        if proc.code != 0:
            self.anomalies.failed(proc, variant.label)
        if first:
            ops = self.az.operations(offset)
            print(f"  {variant.label}: requests {op_counts(ops)}", flush=True)
            self.check(variant, proc, dest)
        elif variant.taskkit and variant.dataset is not None:
            self.check_summary(variant.label, proc, variant.dataset)
        return proc

    def measure(self, variants: Sequence[Variant], runs: int) -> dict[str, Timing]:
        timings = {v.label: Timing(v.label) for v in variants}
        for i in range(runs):
            for v in variants:
                timings[v.label].procs.append(self.run(v, first=i == 0))
        for v in variants:  # leave the disk as it was found
            shutil.rmtree(self.dest_of(v), ignore_errors=True)
        return timings

    # -- checking

    def check(self, variant: Variant, proc: Proc, dest: Path) -> None:
        ds = variant.dataset
        if ds is None:
            return
        root = dest / "out" if variant.taskkit else dest
        problems = self.verify(root, ds)
        if variant.taskkit:
            self.check_summary(variant.label, proc, ds)
        if problems:
            self.anomalies.add(f"{variant.label}: wrong output: " + "; ".join(problems[:5]))
        else:
            print(
                f"  {variant.label}: checked {ds.count} files: names, sizes and digests "
                "equal the seeded bytes",
                flush=True,
            )

    def verify(self, root: Path, ds: Dataset) -> list[str]:
        """What differs between the files under ``root`` and the blobs of ``ds``."""
        expected = {name[len(ds.prefix) :]: name for name in ds.blobs}
        found = {str(path.relative_to(root)): path for path in root.rglob("*") if not path.is_dir()}
        problems = [f"missing {name}" for name in sorted(set(expected) - set(found))]
        problems += [f"unexpected {name}" for name in sorted(set(found) - set(expected))]
        for name in sorted(set(expected) & set(found)):
            path = found[name]
            size = path.stat().st_size
            if size != ds.size:
                problems.append(f"{name}: {size} bytes, not {ds.size}")
                continue
            digest = hash_file(path, cache=None).digest
            if digest != self.digests[expected[name]]:
                problems.append(f"{name}: digest {digest}, not {self.digests[expected[name]]}")
        return problems

    def check_summary(
        self, label: str, proc: Proc, ds: Dataset, *, warm: bool = False, files: int = 0
    ) -> None:
        got = proc.summary()
        if warm:
            want: dict[str, object] = {"files": files, "transferred": 0, "skipped": files}
        else:
            want = {"files": ds.count, "transferred": ds.count, "failed": 0,
                    "bytes_transferred": ds.total}  # fmt: skip
        wrong = {k: got.get(k) for k, v in want.items() if got.get(k) != v}
        if wrong:
            self.anomalies.add(f"{label}: --json summary {got or proc.stdout!r}; expected {want}")

    # -- sections

    def startup(self, runs: int) -> dict[str, Timing]:
        print("Start-up floor (whole processes; no request made)")
        print_load()
        floors = {
            "python -c pass": [PYTHON, "-c", "pass"],
            "python -c 'import azure.storage.blob.aio' (raw-SDK anchor)": [
                PYTHON, "-c", "import azure.storage.blob.aio"],
            "python -c 'import adlfs'": [PYTHON, "-c", "import adlfs"],
            "python -m taskkit --version": [PYTHON, "-m", "taskkit", "--version"],
            "python -c 'import taskkit.cli, <what stage imports>'": [
                PYTHON, "-c", "import taskkit.cli, taskkit.transfer.stage, "
                "taskkit.transfer.stage_plan, taskkit.storage.base, adlfs, azure.storage.blob.aio"],
        }  # fmt: skip
        timings = {label: Timing(label) for label in floors}
        for _ in range(runs):
            for label, argv in floors.items():
                proc = self.spawn(argv, self.env)
                if proc.code != 0:
                    self.anomalies.failed(proc, label)
                timings[label].procs.append(proc)
        print_table(list(timings.values()), cpu=False, rate_note=RATES)
        print()
        return timings

    def cold(self, datasets: Sequence[Dataset], runs: int, jobs: int) -> dict[str, Timing]:
        everything: dict[str, Timing] = {}
        for n, ds in enumerate(datasets, 1):
            print(f"1{'ab'[n - 1]}. COLD, {ds.describe()}, J = {jobs}, {runs} runs each")
            print_load()
            variants = self.cold_variants(ds, jobs)
            for v in variants:
                print(f"  $ {shown(v.argv(Path('W')))}")
            timings = self.measure(variants, runs)
            print_table(list(timings.values()), ds.total, cpu=False, rate_note=RATES)
            tk = timings[variants[0].label]
            own = [float(str(p.summary().get("seconds", "nan"))) for p in tk.procs]
            print(
                f"  taskkit's own clock (--json 'seconds': from the start of the stage command, "
                f"which then imports fsspec, adlfs and the Azure SDK, to its summary): median "
                f"{statistics.median(own):.3f} s; the rest of the wall time "
                f"({tk.median - statistics.median(own):.3f} s) is interpreter start-up, the "
                "imports of click and taskkit, and exit"
            )
            print(f"  note: adlfs gets {batch_note()}")
            print_ratio_header(
                f"Ratios (1{'ab'[n - 1]}; throughput, > 1: taskkit faster)", RATIO_WIDTH
            )
            for v in variants[1:]:
                print_ratio(f"taskkit / {v.label}", timings[v.label], tk, v.target, RATIO_WIDTH)
            print()
            everything.update({f"{ds.name}: {k}": t for k, t in timings.items()})
        return everything

    def warm(self, datasets: Sequence[Dataset], runs: int, jobs: int) -> Timing:
        files = sum(ds.count for ds in datasets)
        size = human(sum(ds.total for ds in datasets))
        names = " + ".join(ds.prefix for ds in datasets)
        print(f"2. WARM re-stage of {names} ({files} files, {size}) into one directory, J = {jobs}")
        print_load()
        work = self.scratch / "warm"
        cache = self.scratch / "cache" / "warm"
        fresh(work, cache)
        env = {**self.env, "TASKKIT_CACHE_DIR": str(cache)}
        argv = self.taskkit([f"{ds.url}={ds.prefix}" for ds in datasets], jobs)(work)
        floor_argv = [PYTHON, str(self.scripts / "list_floor.py"),
                      *(f"{CONTAINER}/{ds.prefix}" for ds in datasets)]  # fmt: skip
        print(f"  $ {shown(argv)}")
        print(f"  floor: $ {shown(floor_argv)}")

        cold, ops = self.counted(argv, env)
        ended = time.monotonic()
        if cold.code != 0:
            self.anomalies.failed(cold, "warm section, cold stage")
        print(f"  cold stage: {cold.seconds:.2f} s; requests {op_counts(ops)}")
        for ds in datasets:
            problems = self.verify(work / ds.name, ds)
            if problems:
                self.anomalies.add(f"cold stage of {ds.prefix}: " + "; ".join(problems[:5]))
        wait = ended + SETTLE_S - time.monotonic()
        print(f"  waiting {max(wait, 0):.1f} s: past the stat-cache's racy window", flush=True)
        time.sleep(max(wait, 0))

        first, ops = self.counted(argv, env)
        self.check_warm("first warm", first, ops, datasets[0], files)
        print(
            "  first warm (re-hashes the files written < 2 s before the cold run recorded them): "
            f"{first.seconds:.3f} s, {first.rss_mib:.0f} MiB; requests {op_counts(ops)}"
        )

        warm = Timing("taskkit stage, warm (whole process)")
        floor = Timing("floor: python, import adlfs, fs.find(detail=True) per prefix")
        requests: dict[str, list[str]] = {warm.label: [], floor.label: []}
        for _ in range(runs):
            proc, ops = self.counted(argv, env)
            self.check_warm("warm", proc, ops, datasets[0], files)
            warm.procs.append(proc)
            requests[warm.label].append(op_counts(ops))
            proc, ops = self.counted(floor_argv, self.env)
            if proc.code != 0 or proc.stdout.strip() != str(files):
                self.anomalies.failed(proc, f"floor (expected {files} files listed)")
            floor.procs.append(proc)
            requests[floor.label].append(op_counts(ops))
        first_timing = Timing("taskkit stage, first warm (whole process)", procs=[first])
        print_table([first_timing, warm, floor], cpu=False, rate_note=RATES)
        for label, seen in requests.items():
            per_run = "; ".join(
                f"{n} run(s): {text}" for text, n in collections.Counter(seen).items()
            )
            print(f"  requests per run, {label}: {per_run}")
        print_ratio_header("Ratios (2; wall times)", RATIO_WIDTH)
        print_ratio("warm / floor", warm, floor, "<= 1.5", RATIO_WIDTH)
        print_ratio("first warm / floor", first_timing, floor, width=RATIO_WIDTH)
        print()
        shutil.rmtree(work, ignore_errors=True)
        return warm

    def counted(self, argv: list[str], env: dict[str, str]) -> tuple[Proc, list[str]]:
        offset = self.az.log_offset()
        proc = self.spawn(argv, env)
        return proc, self.az.operations(offset)

    def check_warm(self, what: str, proc: Proc, ops: list[str], ds: Dataset, files: int) -> None:
        if proc.code != 0:
            self.anomalies.failed(proc, what)
        self.check_summary(what, proc, ds, warm=True, files=files)
        downloads = ops.count("Blob_Download")
        if downloads:
            self.anomalies.add(f"{what} run made {downloads} Blob_Download requests")

    def rss(self, big: Dataset | None, cold: dict[str, Timing], jobs: int) -> None:
        print(f"3. PEAK RSS (the child's ru_maxrss; target for taskkit <= {RSS_TARGET_MB} MB "
              f"= {RSS_TARGET_MB * 1e6 / MIB:.1f} MiB whatever the data size)")  # fmt: skip
        print_load()
        rows: list[tuple[str, int, Timing]] = []
        if big is not None:
            variant = self.cold_variants(big, jobs, anchors=False)[0]
            print(f"  {big.describe()}: $ {shown(variant.argv(Path('W')))}", flush=True)
            timing = self.measure([variant], 1)[variant.label]
            rows.append((f"{big.name}: {variant.label}", big.total, timing))
        else:
            print("  the 2 GiB stage is skipped (--quick without --big-rss, or --no-big-rss)")
        sizes = {ds.name: ds.total for ds in self.args.datasets}
        rows += [(label, sizes[label.split(":")[0]], t) for label, t in cold.items()]
        width = max(len(label) for label, _, _ in rows)
        print(f"  {'run':<{width}} {'data':>9} {'wall':>8} {'MB/s':>6} {'peak RSS':>10}")
        for label, size, t in rows:
            verdict = ""
            if ": taskkit stage" in label:
                ok = t.rss_mib * MIB <= RSS_TARGET_MB * 1e6
                verdict = f"  target: {'met' if ok else 'MISSED'}"
            print(f"  {label:<{width}} {human(size):>9} {t.median:7.2f}s "
                  f"{mbps(size, t.median):6.0f} {t.rss_mib:6.0f} MiB{verdict}")  # fmt: skip
        print("  (peak RSS is the largest of the runs; wall and MB/s the median)")
        print()

    def sweep(self, datasets: Sequence[Dataset], jobs_list: Sequence[int], runs: int) -> None:
        print(f"4. JOBS SWEEP, cold, {runs} run(s) per cell: MB/s (peak RSS of taskkit)")
        print_load()
        variants: list[tuple[int, Dataset, Variant]] = []
        for jobs in jobs_list:
            for ds in datasets:
                variants += [
                    (jobs, ds, dataclasses.replace(v, label=f"{ds.name}: {v.label}"))
                    for v in self.cold_variants(ds, jobs, anchors=False)
                ]
        timings = self.measure([v for _, _, v in variants], runs)
        cells = {(jobs, ds.name, v.kind): timings[v.label] for jobs, ds, v in variants}
        columns = list(dict.fromkeys((ds, v.kind) for _, ds, v in variants))
        table = [[f"{ds.name}: {kind}" for ds, kind in columns]]
        for jobs in jobs_list:
            row = []
            for ds, kind in columns:
                t = cells[jobs, ds.name, kind]
                rss = f" ({t.rss_mib:.0f} MiB)" if kind == "taskkit" else ""
                row.append(f"{mbps(ds.total, t.median):.0f}{rss}")
            table.append(row)
        widths = [max(len(row[i]) for row in table) + 2 for i in range(len(columns))]
        for jobs, row in zip(["J", *jobs_list], table, strict=True):
            cells_text = "".join(f"{cell:>{w}}" for cell, w in zip(row, widths, strict=True))
            mark = "  <- taskkit's default" if jobs == DEFAULT_JOBS else ""
            print(f"  {jobs:>3}{cells_text}{mark}")
        print()

    def small_files(
        self,
        datasets: Sequence[Dataset],
        anchor_jobs: Sequence[int],
        taskkit_jobs: Sequence[int],
        runs: int,
    ) -> None:
        print(f"5. SMALL FILES, cold, against the raw SDK at its best J ({runs} runs each, "
              "every variant taking turns)")  # fmt: skip
        for n, ds in enumerate(datasets):
            print(f"5{'abcdef'[n]}. {ds.describe()}")
            print_load()
            variants = [
                dataclasses.replace(
                    self.cold_variants(ds, jobs, anchors=False)[0], label=f"taskkit stage -j {jobs}"
                )
                for jobs in taskkit_jobs
            ]
            anchors = [
                Variant(f"raw SDK aio, Semaphore({jobs})", self.sdk(ds, jobs, "ranged"), ds)
                for jobs in anchor_jobs
            ]
            for v in [*variants, *anchors]:
                print(f"  $ {shown(v.argv(Path('W')))}")
            timings = self.measure([*variants, *anchors], runs)
            print_table(list(timings.values()), ds.total, cpu=True, rate_note=RATES)
            best = min((timings[a.label] for a in anchors), key=lambda t: t.median)
            per_file = {label: t.median / ds.count * 1e3 for label, t in timings.items()}
            print(f"  the anchor's best: {best.label} ({per_file[best.label]:.2f} ms per file)")
            print_ratio_header(
                f"Ratios (5{'abcdef'[n]}; throughput against the best anchor, > 1: taskkit faster)",
                RATIO_WIDTH,
            )
            for v in variants:
                print_ratio(f"{v.label} / {best.label}", best, timings[v.label], ">= 1.0",
                            RATIO_WIDTH)  # fmt: skip
            for v in variants:
                cpu = statistics.median(p.cpu or 0.0 for p in timings[v.label].procs)
                anchor_cpu = statistics.median(p.cpu or 0.0 for p in best.procs)
                print(f"  CPU of {v.label} / CPU of the best anchor: {cpu / anchor_cpu:.2f}x "
                      f"({cpu:.2f} s / {anchor_cpu:.2f} s)")  # fmt: skip
            print()


def slug(label: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in label.lower()).strip("-")[:60]


def batch_note() -> str:
    """How many files adlfs's get() fetches at once here, and how."""
    from fsspec.asyn import _get_batch_size

    batch = _get_batch_size()
    at_once = "all files" if batch < 0 else f"{batch} files"
    return (
        f"{at_once} at once (fsspec batch = open-files limit / 8) and parallelises across files "
        "only: one download_blob(max_concurrency=1) per file (a 32 MiB GET, then 4 MiB GETs, "
        "one after the other)"
    )


# -- reporting ------------------------------------------------------------------------------------


RATIO_WIDTH = 88
#: What the table says of its MB/s column.
RATES = "rates are from the median"


def source_state() -> str:
    head = output(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"])
    changed = output(["git", "-C", str(REPO), "diff", "HEAD", "--name-only", "--", "taskkit"])
    files = changed.split()
    return f"git {head}" + (f", uncommitted changes in {', '.join(files)}" if files else "")


def source_fingerprint() -> str:
    """The state of the taskkit code every measured process imports: its commit and a hash of
    its files (a change while the bench runs would mix versions in one table)."""
    digest = xxhash.xxh3_64()
    for path in sorted(Path(taskkit.__file__).parent.rglob("*.py")):
        digest.update(str(path).encode() + b"\0" + path.read_bytes())
    return f"{source_state()}, files {digest.hexdigest()}"


def print_header(args: argparse.Namespace, azurite: str) -> None:
    print("taskkit stage benchmark. NOTE: Azurite (one Node.js process on this machine, ~100-150")
    print("MB/s) serves every byte and is the bottleneck: compare the ratios, not the MB/s.")
    print("Machine")
    print(f"  cpu           {cpu_model()}")
    print(f"  cpus          {os.cpu_count()} (shared by Azurite and the client under test)")
    print(f"  kernel        {platform.system()} {platform.release()}")
    print(f"  load average  {load()} (1, 5, 15 min) at start")
    print("Software")
    print(f"  python        {platform.python_version()} ({sys.executable})")
    print(f"  taskkit       {taskkit.__version__}, {source_state()}")
    for name in ("azure-storage-blob", "azure-core", "aiohttp", "adlfs", "fsspec"):
        print(f"  {name:<13} {metadata.version(name)}")
    print(f"  azurite       {output([azurite, '--version'])} ({azurite})")
    if os.environ.get("PYTHONDONTWRITEBYTECODE"):
        print("  note          PYTHONDONTWRITEBYTECODE is set; taskkit's bytecode was compiled")
        print("                once at the start of this run, as an installed package has it")
    mode = "QUICK (smoke run: sizes shrunk)" if args.quick else "full"
    print(f"Settings: {mode}; runs {args.runs}; J = {args.jobs}; workdir {args.workdir}")
    print()


# -- main -----------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "--runs", type=int, default=None, help="timed runs per variant [3; 1 quick]"
    )
    parser.add_argument("--jobs", type=int, default=8, help="concurrency J of every client [8]")
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument(
        "--big-rss",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="stage 2 x 1 GiB for the peak RSS [on; off with --quick]",
    )
    parser.add_argument(
        "--jobs-sweep",
        nargs="?",
        const=SWEEP_DEFAULT,
        default=None,
        metavar="J,J,...",
        help=f"also run taskkit and the raw SDK cold at each J [{SWEEP_DEFAULT}]",
    )
    parser.add_argument("--sweep-runs", type=int, default=1, help="runs per sweep cell [1]")
    parser.add_argument(
        "--small-files",
        action="store_true",
        help="also run section 5: 2,000 x 64 KiB and the 1 MiB blobs against the best raw SDK",
    )
    parser.add_argument(
        "--small-only", action="store_true", help="run section 5 alone (implies --small-files)"
    )
    parser.add_argument(
        "--anchor-jobs",
        default=ANCHOR_JOBS_DEFAULT,
        metavar="J,J,...",
        help=f"section 5: the raw SDK's concurrencies [{ANCHOR_JOBS_DEFAULT}]",
    )
    parser.add_argument(
        "--taskkit-jobs",
        default=str(DEFAULT_JOBS),
        metavar="J,J,...",
        help=f"section 5: taskkit's concurrencies [{DEFAULT_JOBS}, its default]",
    )
    parser.add_argument(
        "--workdir", type=Path, default=REPO / ".bench", help="where the data lives [.bench/]"
    )
    args = parser.parse_args(argv)
    if args.runs is None:
        args.runs = 1 if args.quick else 3
    if args.big_rss is None:
        args.big_rss = not args.quick
    try:
        args.sweep = [int(j) for j in args.jobs_sweep.split(",")] if args.jobs_sweep else []
    except ValueError:
        parser.error(f"--jobs-sweep takes numbers separated by commas, not {args.jobs_sweep!r}")
    try:
        args.anchor_jobs = [int(j) for j in args.anchor_jobs.split(",")]
        args.taskkit_jobs = [int(j) for j in args.taskkit_jobs.split(",")]
    except ValueError:
        parser.error("--anchor-jobs and --taskkit-jobs take numbers separated by commas")
    args.small_files = args.small_files or args.small_only
    if min([args.runs, args.jobs, args.sweep_runs, *args.sweep, *args.anchor_jobs,
            *args.taskkit_jobs]) < 1:  # fmt: skip
        parser.error("--runs, --jobs, --sweep-runs and every J must be >= 1")
    args.workdir = args.workdir.resolve()
    if args.quick:
        args.datasets = [Dataset("small", 20, 1 * MIB), Dataset("large", 2, 32 * MIB)]
        args.big = Dataset("big", 2, 64 * MIB) if args.big_rss else None
    else:
        args.datasets = [Dataset("small", 200, 1 * MIB), Dataset("large", 4, 256 * MIB)]
        args.big = Dataset("big", 2, 1 * GIB) if args.big_rss else None
    args.tiny = Dataset("tiny", 200 if args.quick else 2000, 64 * KIB)
    if args.small_only:  # section 5 alone: neither the large blobs nor the 2 GiB
        args.datasets, args.big = args.datasets[:1], None
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    began = time.perf_counter()
    source = source_fingerprint()
    azurite = find_azurite(cwd=REPO)
    compileall.compile_dir(str(Path(taskkit.__file__).parent), quiet=1)
    print_header(args, azurite)
    spawner = Spawner()  # first, while this process is small
    with contextlib.closing(spawner), Azurite(azurite) as az:
        print(f"Azurite (pid {az.pid}) up in {az.startup_seconds:.1f} s at {az.blob_endpoint}")
        print("0. Seeding with the Azure SDK (upload_blob, max_concurrency=4)")
        datasets = [*args.datasets, *([args.big] if args.big is not None else [])]
        if args.small_files:
            datasets.append(args.tiny)
        digests = seed(az, datasets)
        print()
        bench = Bench(args, az, digests, spawner)
        bench.write_scripts()
        bench.startup(args.runs)
        if not args.small_only:
            cold = bench.cold(args.datasets, args.runs, args.jobs)
            bench.warm(args.datasets, args.runs, args.jobs)
            bench.rss(args.big, cold, args.jobs)
        if args.sweep:
            bench.sweep(args.datasets, args.sweep, args.sweep_runs)
        if args.small_files:
            small = [args.tiny, args.datasets[0]]
            bench.small_files(small, args.anchor_jobs, args.taskkit_jobs, args.runs)
    shutil.rmtree(args.workdir / "stage" / "cache", ignore_errors=True)
    shutil.rmtree(args.workdir / "stage" / "out", ignore_errors=True)
    if source_fingerprint() != source:
        bench.anomalies.add(
            f"taskkit's code changed while this ran ({source} -> {source_fingerprint()}): the "
            "processes measured did not all run the same version; run again"
        )
    code = report_anomalies(
        bench.anomalies.items,
        "No anomaly: every run exited 0, every checked output equals the seeded bytes, no\n"
        "warm run downloaded anything.",
    )
    print(f"load average {load()} at the end; total {time.perf_counter() - began:.0f} s")
    return code


if __name__ == "__main__":
    run_main(main)
