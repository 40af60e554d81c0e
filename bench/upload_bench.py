"""How fast ``taskkit upload`` sends files, next to the raw async Azure SDK and adlfs.

Everything runs against a private Azurite server that this script starts (``taskkit.testing``'s
``Azurite``), from local files it writes under a temporary folder (random bytes, their mtimes set
an hour back). Azurite is one Node.js process sharing the machine's CPUs with the client under
test and is the bottleneck: the absolute MB/s say little about Azure, the ratios against anchors
measured in the same run are the result.

Every run is a whole process, timed from its start to its exit (interpreter start-up and imports
included), under ``/usr/bin/time`` for the peak RSS and the CPU time (user + system) of that
process alone: on a busy machine the CPU time is the steadier measure of a client's own cost.
Each number is the median of ``--runs`` runs (default 3); the variants of a section take turns
run by run (a, b, c, a, b, c, ...) so that a noisy neighbour hurts them all alike.

1. COLD 200 x 1 MiB, and 2. COLD 2 x 512 MiB (2 x 64 MiB with ``--quick``), at J requests in
   flight (``--jobs``, default 8). Every run writes into a fresh, empty container (``out/``
   under it) with a fresh stat-cache (``TASKKIT_CACHE_DIR``):

   a. ``python -m taskkit upload -o NAME/**=az://C/out/ --workdir DATA -j J --json``;
   b. the raw-SDK anchor, a script of its own: ``azure.storage.blob.aio``'s
      ``BlobServiceClient.from_connection_string(max_single_put_size=8 MiB,
      max_block_size=8 MiB)``, ``asyncio.Semaphore(F)`` over the files with F = min(files, J),
      each file ``upload_blob(..., overwrite=True, metadata=...)`` with ``max_concurrency =
      J // F``: a small file read whole and sent in one Put Blob (F = 8 at a time), a large one
      streamed from its open file in 8 MiB blocks (2 files x 4 blocks): J requests in flight,
      8 MiB blocks, as taskkit. The metadata is a placeholder the size of taskkit's: the
      anchor computes nothing;
   c. adlfs ``fs.put(DATA/NAME/, C/out/, recursive=True)`` with adlfs's defaults.

   The first run of each variant is checked (untimed): the container holds exactly the files,
   with their sizes (and, for taskkit, its manifest and the digest of each file's bytes in the
   blob's metadata), and the requests it made are counted (Azurite's debug log).

3. UNCHANGED re-upload of both sets with one stat-cache: a first upload (counted), then
   ``--runs`` re-uploads of the same files, each with the requests Azurite served: no
   ``BlockBlob_Upload``, ``BlockBlob_StageBlock`` or ``BlockBlob_CommitBlockList`` may appear.
   Next to the start-up floors ``python -c 'import adlfs'``, ``python -m taskkit --version``
   and ``python -c 'import azure.storage.blob.aio'`` (what the raw anchor imports).

4. MANY SMALL FILES to a ``file://`` DEST on the same disk (``--small``: this section only, no
   Azurite), for each tree (``--small-tree DIR``, repeatable; default: 20,000 x 4 KiB written
   here, in 20 directories), run by run in turn:

   a. ``cp -r TREE COPY``, the anchor;
   b. COLD ``python -m taskkit upload -o '**=file://DST/' --workdir TREE --json`` into an
      empty DST with a fresh stat-cache;
   c. UNCHANGED: the same command again, DST and stat-cache kept (every file skipped).

   Printed: cold / cp -r (target <= 2.0x) and the unchanged run's wall time (target <= 0.6 s
   for 20,000 files).

MB/s are decimal (1e6 bytes per second), sizes binary (MiB). Needs Azurite (``make test``
installs it) and GNU time at /usr/bin/time (else no peak RSS or CPU time is reported).

Run: ``.venv/bin/python bench/upload_bench.py [--runs N] [--jobs J] [--quick] [--small]
[--small-tree DIR]...``
"""

from __future__ import annotations

import argparse
import collections
import compileall
import os
import platform
import random
import shlex
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from benchlib import (
    TIME,
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
    spawn,
)

import taskkit
from taskkit import CHUNK_SIZE, Digest, hash_file
from taskkit.content.statcache import RACY_WINDOW_NS
from taskkit.storage.base import DIGEST_METADATA
from taskkit.testing import Azurite, find_azurite

REPO = Path(__file__).resolve().parent.parent
PYTHON = str(Path(sys.executable).parent / "python")

MIB = 1 << 20
#: Block size of both taskkit (its chunk) and the raw anchor.
BLOCK = CHUNK_SIZE
DATA_OPS = ("BlockBlob_Upload", "BlockBlob_StageBlock", "BlockBlob_CommitBlockList")
MANIFEST = "_taskkit_manifest.json"
PREFIX = "out/"
RATIO_WIDTH = 72

# -- the anchors, run as files under the scratch directory ----------------------------------------

RAW_SDK = '''\
"""Raw azure.storage.blob.aio upload of a directory's files (the anchor of bench/upload_bench.py).

argv: SRC CONTAINER PREFIX JOBS. F = min(files, JOBS) files at a time, each with
upload_blob(max_concurrency=JOBS // F): JOBS requests in flight. A file of up to 8 MiB is read
whole and sent in one Put Blob; a larger one is streamed from its open file in 8 MiB blocks.
"""

import asyncio
import os
import sys

from azure.storage.blob.aio import BlobServiceClient

BLOCK = 8 << 20
DIGEST = "xxh3-128:" + "0" * 32  # a placeholder the size of taskkit's: nothing is computed


async def send(sem, service, container, name, path, per_file):
    async with sem:
        size = os.path.getsize(path)
        meta = {"taskkit_digest": DIGEST, "taskkit_size": str(size)}
        blob = service.get_blob_client(container, name)
        with open(path, "rb") as f:
            if size <= BLOCK:
                await blob.upload_blob(f.read(), overwrite=True, metadata=meta)
            else:
                await blob.upload_blob(
                    f, length=size, overwrite=True, metadata=meta, max_concurrency=per_file
                )


async def main(src, container, prefix, jobs):
    names = sorted(os.listdir(src))
    at_once = max(1, min(len(names), jobs))
    sem = asyncio.Semaphore(at_once)
    conn = os.environ["AZURE_STORAGE_CONNECTION_STRING"]
    async with BlobServiceClient.from_connection_string(
        conn, max_single_put_size=BLOCK, max_block_size=BLOCK
    ) as service:
        await asyncio.gather(*(
            send(sem, service, container, prefix + n, os.path.join(src, n), jobs // at_once)
            for n in names
        ))


src, container, prefix, jobs = sys.argv[1:5]
asyncio.run(main(src, container, prefix, int(jobs)))
'''

ADLFS = '''\
"""adlfs upload of a directory, with adlfs's defaults (argv: SRC/ CONTAINER/PREFIX/)."""

import os
import sys

import adlfs

fs = adlfs.AzureBlobFileSystem(connection_string=os.environ["AZURE_STORAGE_CONNECTION_STRING"])
fs.put(sys.argv[1], sys.argv[2], recursive=True)
'''


# -- data -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Dataset:
    """``count`` files of ``size`` random bytes in the folder ``name``."""

    name: str
    count: int
    size: int

    @property
    def total(self) -> int:
        return self.count * self.size

    @property
    def files(self) -> list[str]:
        return [f"f{i:04d}.bin" for i in range(self.count)]

    def describe(self) -> str:
        return f"{self.count} x {human(self.size)} ({human(self.total)})"


def human(n: float) -> str:
    return f"{n / MIB:.4g} MiB"


def mbps(size: int, seconds: float) -> float:
    return size / seconds / 1e6


def write_data(root: Path, datasets: Sequence[Dataset]) -> dict[str, Digest]:
    """Write the files (mtimes an hour back) and return the taskkit digest of each."""
    digests: dict[str, Digest] = {}
    for ds in datasets:
        folder = root / ds.name
        folder.mkdir(parents=True)
        for name in ds.files:
            path = folder / name
            with path.open("wb") as f:
                for offset in range(0, ds.size, BLOCK):  # never more than a block in memory
                    f.write(os.urandom(min(BLOCK, ds.size - offset)))
            digests[f"{ds.name}/{name}"] = hash_file(path, cache=None).digest
            old = time.time() - 3600
            os.utime(path, (old, old))
    os.sync()
    return digests


# -- processes ------------------------------------------------------------------------------------


def shown(argv: Sequence[str], data: Path) -> str:
    """A command line as printed, with short paths (no credential is in argv)."""
    text = shlex.join(argv)
    for path, short in ((str(data), "DATA"), (str(REPO) + "/", ""), (PYTHON, "python")):
        text = text.replace(path, short)
    return text


def data_ops(ops: Sequence[str]) -> int:
    return sum(1 for op in ops if op in DATA_OPS)


# -- the bench ------------------------------------------------------------------------------------


@dataclass
class Variant:
    """A whole process to time, writing into the container it is given."""

    label: str
    argv: Callable[[str], list[str]]
    taskkit: bool = False
    target: str | None = None  # for the throughput ratio of taskkit to it


class Bench:
    def __init__(
        self, args: argparse.Namespace, az: Azurite, scratch: Path, digests: dict[str, Digest]
    ) -> None:
        self.args = args
        self.az = az
        self.scratch = scratch
        self.data = scratch / "data"
        self.digests = digests
        self.problems: list[str] = []
        base = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("TASKKIT_", "AZ_BATCH_", "AZURE_STORAGE_"))
        }
        self.env = {**base, "AZURE_STORAGE_CONNECTION_STRING": az.connection_string}
        self.scripts = scratch / "scripts"
        self.scripts.mkdir()
        (self.scripts / "raw_sdk.py").write_text(RAW_SDK)
        (self.scripts / "adlfs_put.py").write_text(ADLFS)
        self.service = az.blob_service_client()

    def anomaly(self, text: str) -> None:
        self.problems.append(text)
        print(f"  ANOMALY: {text}", flush=True)

    def failed(self, proc: Proc, what: str) -> None:
        tail = "\n".join(proc.stderr.strip().splitlines()[-15:])
        self.anomaly(
            f"{what}: `{shown(proc.argv, self.data)}` exited with {proc.code}\n"
            f"    stdout: {proc.stdout.strip()[-2000:]!r}\n    stderr (tail):\n{tail}"
        )

    def run(self, argv: list[str], cache: Path) -> tuple[Proc, list[str]]:
        """One timed run with the stat-cache ``cache``, and the requests Azurite served."""
        os.sync()  # no dirty pages of an earlier run left to be written during this one
        offset = self.az.log_offset()
        proc = spawn(argv, {**self.env, "TASKKIT_CACHE_DIR": str(cache)}, self.scratch)
        return proc, self.az.operations(offset)

    # -- commands

    def taskkit(self, outputs: Sequence[tuple[str, str]]) -> list[str]:
        pairs = [arg for glob, url in outputs for arg in ("-o", f"{glob}={url}")]
        return [PYTHON, "-m", "taskkit", "upload", *pairs, "--workdir", str(self.data),
                "-j", str(self.args.jobs), "--json"]  # fmt: skip

    def variants(self, ds: Dataset) -> list[Variant]:
        jobs = self.args.jobs
        src = str(self.data / ds.name)
        raw = str(self.scripts / "raw_sdk.py")
        put = str(self.scripts / "adlfs_put.py")
        at_once = min(ds.count, jobs)
        return [
            Variant(
                f"taskkit upload -j {jobs}",
                lambda c: self.taskkit([(f"{ds.name}/**", f"az://{c}/{PREFIX}")]),
                taskkit=True,
            ),
            Variant(
                f"raw SDK aio, {at_once} files x max_concurrency={jobs // at_once}",
                lambda c: [PYTHON, raw, src, c, PREFIX, str(jobs)],
                target=">= 0.95",
            ),
            Variant(
                "adlfs fs.put(recursive=True), defaults",
                lambda c: [PYTHON, put, src + "/", f"{c}/{PREFIX}"],
            ),
        ]

    # -- checking

    def check(self, variant: Variant, ds: Dataset, container: str, proc: Proc) -> None:
        """Whether the container holds exactly the files (and, for taskkit, its manifest and
        the digests of the files' bytes)."""
        client = self.service.get_container_client(container)
        found = {b.name: b for b in client.list_blobs(include=["metadata"])}
        expected = {PREFIX + name for name in ds.files}
        if variant.taskkit:
            expected.add(PREFIX + MANIFEST)
        wrong = [f"missing {n}" for n in sorted(expected - set(found))]
        wrong += [f"unexpected {n}" for n in sorted(set(found) - expected)]
        for name in sorted(expected & set(found)):
            if name.endswith(MANIFEST):
                continue
            blob = found[name]
            if blob.size != ds.size:
                wrong.append(f"{name}: {blob.size} bytes, not {ds.size}")
            digest = str(self.digests[f"{ds.name}/{name[len(PREFIX) :]}"])
            if variant.taskkit and (blob.metadata or {}).get(DIGEST_METADATA) != digest:
                wrong.append(f"{name}: metadata {blob.metadata}, not digest {digest}")
        if wrong:
            self.anomaly(f"{variant.label}: wrong upload: " + "; ".join(wrong[:5]))
        else:
            what = f"{ds.count} blobs" + (" and the manifest" if variant.taskkit else "")
            digests = ", and the digests in the metadata," if variant.taskkit else ""
            print(f"  {variant.label}: checked {what}: names and sizes{digests} right", flush=True)
        if variant.taskkit:
            self.check_summary(variant.label, proc, {"files": ds.count,
                "transferred": ds.count, "failed": 0, "bytes_transferred": ds.total})  # fmt: skip

    def check_summary(self, label: str, proc: Proc, want: dict[str, object]) -> None:
        got = proc.summary()
        if any(got.get(k) != v for k, v in want.items()):
            self.anomaly(f"{label}: --json summary {got or proc.stdout!r}; expected {want}")

    # -- sections

    def cold(self, number: int, ds: Dataset) -> None:
        runs, jobs = self.args.runs, self.args.jobs
        print(f"{number}. COLD upload of {ds.describe()}, J = {jobs}, {runs} run(s) each")
        print_load()
        variants = self.variants(ds)
        for v in variants:
            print(f"  $ {shown(v.argv('C'), self.data)}")
        timings = {v.label: Timing(v.label) for v in variants}
        for i in range(runs):
            for n, v in enumerate(variants):
                container = f"{ds.name}-{'abc'[n]}-{i}"
                self.service.create_container(container)
                cache = self.scratch / "cache" / container
                proc, ops = self.run(v.argv(container), cache)
                if proc.code != 0:
                    self.failed(proc, v.label)
                if i == 0:
                    print(f"  {v.label}: requests {op_counts(ops)}", flush=True)
                    self.check(v, ds, container, proc)
                timings[v.label].procs.append(proc)
        print_table(list(timings.values()), ds.total)
        tk = timings[variants[0].label]
        own = statistics.median(float(str(p.summary().get("seconds", "nan"))) for p in tk.procs)
        print(f"  taskkit's own clock (--json 'seconds', from the start of the upload command to "
              f"its summary): median {own:.3f} s, {mbps(ds.total, own):.0f} MB/s")  # fmt: skip
        print(f"  note: adlfs put {adlfs_note()}")
        print_ratio_header(f"Ratios ({number}; throughput, > 1: taskkit faster)", RATIO_WIDTH)
        for v in variants[1:]:
            print_ratio(f"taskkit / {v.label}", timings[v.label], tk, v.target, RATIO_WIDTH)
        print()

    def unchanged(self, number: int, datasets: Sequence[Dataset]) -> None:
        runs = self.args.runs
        files = sum(ds.count for ds in datasets)
        size = human(sum(ds.total for ds in datasets))
        print(f"{number}. UNCHANGED re-upload of {' + '.join(ds.name for ds in datasets)} "
              f"({files} files, {size}), J = {self.args.jobs}, one stat-cache")  # fmt: skip
        print_load()
        container = "unchanged"
        self.service.create_container(container)
        cache = self.scratch / "cache" / container
        argv = self.taskkit([(f"{ds.name}/**", f"az://{container}/{ds.name}/") for ds in datasets])
        print(f"  $ {shown(argv, self.data)}")
        # The stat-cache trusts a file only if it was last touched (mtime or ctime) more than
        # RACY_WINDOW_NS before it was recorded: the mtimes are an hour back, ctime is not.
        touched = max(
            max(st.st_mtime_ns, st.st_ctime_ns)
            for ds in datasets
            for st in (os.stat(self.data / ds.name / name) for name in ds.files)
        )
        wait = (touched + RACY_WINDOW_NS) / 1e9 + 0.1 - time.time()
        if wait > 0:
            print(f"  waiting {wait:.1f} s: files touched < 2 s ago are not trusted", flush=True)
            time.sleep(wait)

        first, ops = self.run(argv, cache)
        if first.code != 0:
            self.failed(first, "first upload")
        total = sum(ds.total for ds in datasets)
        self.check_summary("first upload", first, {"files": files, "transferred": files,
                           "failed": 0, "bytes_transferred": total})  # fmt: skip
        print(f"  first upload: {first.seconds:.2f} s; requests {op_counts(ops)}", flush=True)

        label = "taskkit upload, unchanged (whole process)"
        floors = {
            "floor: python -c 'import adlfs'": [PYTHON, "-c", "import adlfs"],
            "floor: python -m taskkit --version": [PYTHON, "-m", "taskkit", "--version"],
            "floor: python -c 'import azure.storage.blob.aio' (raw SDK)": [
                PYTHON, "-c", "import azure.storage.blob.aio"],
        }  # fmt: skip
        timings = {name: Timing(name) for name in [label, *floors]}
        seen: list[list[str]] = []
        for _ in range(runs):
            proc, ops = self.run(argv, cache)
            if proc.code != 0:
                self.failed(proc, label)
            self.check_summary(label, proc, {"files": files, "transferred": 0, "skipped": files,
                               "failed": 0, "bytes_transferred": 0})  # fmt: skip
            timings[label].procs.append(proc)
            seen.append(ops)
            for name, floor in floors.items():
                proc = spawn(floor, self.env, self.scratch)
                if proc.code != 0:
                    self.failed(proc, name)
                timings[name].procs.append(proc)
        print_table(list(timings.values()))
        per_run = collections.Counter(op_counts(ops) for ops in seen)
        for text, n in per_run.items():
            print(f"  requests, {n} run(s): {text}")
        sent = max(data_ops(ops) for ops in seen)
        print(f"  data-carrying requests ({' + '.join(DATA_OPS)}): at most {sent} per run; "
              f"target 0: {'met' if sent == 0 else 'MISSED'}")  # fmt: skip
        print(f"  total requests per run: {', '.join(str(len(ops)) for ops in seen)}")
        title = f"Ratios ({number}; wall times, < 1: faster than the floor)"
        print_ratio_header(title, RATIO_WIDTH)
        for name in floors:
            print_ratio(f"unchanged / {name[len('floor: ') :]}", timings[label], timings[name],
                        width=RATIO_WIDTH)  # fmt: skip
        print()


def small_files(number: int, args: argparse.Namespace, scratch: Path) -> list[str]:
    """Section 4: cp -r, a cold and an unchanged upload of each tree to file://; the anomalies."""
    problems: list[str] = []
    trees = [Path(t).resolve() for t in args.small_tree]
    if not trees:
        tree = scratch / "small"
        rng = random.Random(20_000)
        for d in range(20):
            (tree / f"d{d:04d}").mkdir(parents=True)
            for f in range(1000):
                (tree / f"d{d:04d}" / f"f{f:06d}.bin").write_bytes(rng.randbytes(4096))
        trees = [tree]
        time.sleep(RACY_WINDOW_NS / 1e9 + 0.1)  # files touched < 2 s before a record: racy
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TASKKIT_", "AZ_BATCH_"))}
    for tree in trees:
        count = sum(len(files) for _, _, files in os.walk(tree))
        print(f"{number}. MANY SMALL FILES: {tree} ({count} files) to file:// on the same disk, "
              f"{args.runs} run(s) each")  # fmt: skip
        print_load()
        cp, cold, warm = Timing("cp -r"), Timing("taskkit upload, cold"), Timing("unchanged")
        for i in range(args.runs):
            work = scratch / f"small-{i}"
            work.mkdir()
            dst, cache = work / "dst", work / "cache"
            argv = [PYTHON, "-m", "taskkit", "upload", "-o", f"**={dst.as_uri()}/",
                    "--workdir", str(tree), "-j", str(args.jobs), "--json"]  # fmt: skip
            if i == 0:
                print(f"  $ {shlex.join(argv)}")
            for timing, command, want in (
                (cp, ["cp", "-r", str(tree), str(work / "copy")], None),
                (cold, argv, {"files": count, "transferred": count, "failed": 0}),
                (warm, argv, {"files": count, "skipped": count, "transferred": 0}),
            ):
                os.sync()  # no dirty pages of an earlier run written during this one
                proc = spawn(command, {**env, "TASKKIT_CACHE_DIR": str(cache)}, scratch)
                got = proc.summary()
                if proc.code != 0 or (want and any(got.get(k) != v for k, v in want.items())):
                    problems.append(f"{timing.label}: exit {proc.code}, {got or proc.stderr}")
                    print(f"  ANOMALY: {problems[-1]}")
                timing.procs.append(proc)
            shutil.rmtree(work)
        print_table([cp, cold, warm])
        print_ratio_header(f"Ratios ({number}; wall times)", RATIO_WIDTH)
        print_ratio("cold upload / cp -r", cold, cp, "<= 2.0", RATIO_WIDTH)
        verdict = "met" if warm.median <= 0.6 * count / 20_000 else "MISSED"
        print(f"  {'unchanged upload, seconds':<{RATIO_WIDTH}} {warm.median:7.2f}s "
              f"{warm.best:7.2f}s  target <= {0.6 * count / 20_000:.1f} s: {verdict}")  # fmt: skip
        print()
    return problems


def adlfs_note() -> str:
    from fsspec.asyn import _get_batch_size

    batch = _get_batch_size()
    at_once = "all files" if batch < 0 else f"up to {batch} files"
    return (
        f"sends {at_once} at once (fsspec's batch, the open-files limit / 8), each with "
        "upload_blob(max_concurrency=1): SDK defaults, one Put Blob up to 64 MiB, else 4 MiB "
        "blocks one after the other"
    )


def print_header(args: argparse.Namespace, azurite: str) -> None:
    print("taskkit upload benchmark. NOTE: Azurite (one Node.js process on this machine) takes")
    print("every byte and is the bottleneck: compare the ratios, not the MB/s.")
    print("Machine")
    print(f"  cpu           {cpu_model()}")
    print(f"  cpus          {os.cpu_count()} (shared by Azurite and the client under test)")
    print(f"  kernel        {platform.system()} {platform.release()}")
    print(f"  load average  {load()} (1, 5, 15 min) at start")
    print("Software")
    print(f"  python        {platform.python_version()} ({sys.executable})")
    head = output(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"])
    print(f"  taskkit       {taskkit.__version__}, git {head}")
    for name in ("azure-storage-blob", "azure-core", "aiohttp", "adlfs", "fsspec"):
        print(f"  {name:<13} {metadata.version(name)}")
    print(f"  azurite       {output([azurite, '--version'])}")
    if not os.access(TIME, os.X_OK):
        print(f"  note          no {TIME}: peak RSS and CPU time are not measured")
    mode = "QUICK (large files shrunk)" if args.quick else "full"
    print(f"Settings: {mode}; runs {args.runs}; J = {args.jobs}")
    print()


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=3, help="timed runs per variant [3]")
    parser.add_argument("--jobs", type=int, default=8, help="requests in flight, J [8]")
    parser.add_argument(
        "--quick", action="store_true", help="2 x 64 MiB instead of 2 x 512 MiB, for a smoke run"
    )
    parser.add_argument(
        "--small", action="store_true", help="only section 4 (many small files to file://)"
    )
    parser.add_argument(
        "--small-tree", action="append", default=[], metavar="DIR",
        help="a tree of small files for section 4 (repeatable) [20,000 x 4 KiB written here]",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if min(args.runs, args.jobs) < 1:
        parser.error("--runs and --jobs must be >= 1")
    large = 64 * MIB if args.quick else 512 * MIB
    args.datasets = [Dataset("small", 200, 1 * MIB), Dataset("large", 2, large)]
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    began = time.perf_counter()
    if args.small:
        with tempfile.TemporaryDirectory(prefix="upload-bench-") as tmp:
            problems = small_files(4, args, Path(tmp))
        code = report_anomalies(problems, "No anomaly: every run exited 0 as expected.")
        print(f"load average {load()} at the end; total {time.perf_counter() - began:.0f} s")
        return code
    azurite = find_azurite(cwd=REPO)
    compileall.compile_dir(str(Path(taskkit.__file__).parent), quiet=1)
    print_header(args, azurite)
    with tempfile.TemporaryDirectory(prefix="upload-bench-") as tmp, Azurite(azurite) as az:
        scratch = Path(tmp)
        print(f"Azurite (pid {az.pid}) up in {az.startup_seconds:.1f} s at {az.blob_endpoint}")
        start = time.perf_counter()
        digests = write_data(scratch / "data", args.datasets)
        print(f"Data: {', '.join(f'{ds.name}/ = {ds.describe()}' for ds in args.datasets)}, "
              f"written in {time.perf_counter() - start:.1f} s, mtimes an hour back")  # fmt: skip
        print()
        bench = Bench(args, az, scratch, digests)
        for number, ds in enumerate(args.datasets, 1):
            bench.cold(number, ds)
        bench.unchanged(len(args.datasets) + 1, args.datasets)
        bench.service.close()
        bench.problems += small_files(len(args.datasets) + 2, args, scratch)
    code = report_anomalies(
        bench.problems,
        "No anomaly: every run exited 0, every checked container holds the files, the\n"
        "unchanged runs skipped every file.",
    )
    print(f"load average {load()} at the end; total {time.perf_counter() - began:.0f} s")
    return code


if __name__ == "__main__":
    run_main(main)
