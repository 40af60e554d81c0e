"""Which chunk size and read size hash a large page-cached file fastest, on 1 thread and on all.

taskkit cuts a large file into ``CHUNK_SIZE`` chunks (8 MiB), hashes the chunks on a thread pool
and reads each chunk in ``READ_SIZE`` pieces (512 KiB) into one buffer per thread. This script
measures that scheme on its own, without taskkit's code, for chunk sizes 1-32 MiB and read sizes
128 KiB, 512 KiB and 2 MiB, with a pool of 1 thread and of ``nproc`` threads:

* each task hashes one chunk: ``os.preadv`` into the thread's reused buffer, then a streaming
  ``xxhash.xxh3_128().update`` per read; the chunk digests are hashed together at the end;
* the file (``--size-gib``, default 2 GiB, kept in ``--workdir``, default ``.bench/``) is read
  with ``cat`` first so that it is in the page cache (``fincore`` confirms it where available);
* each configuration is run ``--runs`` times (default 3), configurations taking turns so that a
  noisy neighbour hurts them all alike, and the median is reported in GB/s (1e9 bytes/s).

For reference it also reports ``cat FILE > /dev/null`` and ``xxhsum -H2 FILE`` when installed
(``apt-get install -y xxhash``), and XXH3-128 over a buffer already in the CPU cache.

Run: ``.venv/bin/python bench/chunk_size.py [--runs N] [--size-gib G] [--workdir DIR]``
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import xxhash

REPO = Path(__file__).resolve().parent.parent
KIB = 1024
MIB = 1024 * KIB
GIB = 1024 * MIB
CHUNK_SIZES = (1 * MIB, 2 * MIB, 4 * MIB, 8 * MIB, 16 * MIB, 32 * MIB)
READ_SIZES = (128 * KIB, 512 * KIB, 2 * MIB)
CURRENT = (8 * MIB, 512 * KIB)
POOL_SIZE = 64 * MIB
NOISY = 0.20


def usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def human(n: int) -> str:
    return f"{n // MIB} MiB" if n >= MIB else f"{n // KIB} KiB"


# -- data ---------------------------------------------------------------------------------------


def make_file(path: Path, size: int) -> None:
    """``size`` incompressible bytes, written once (synced) and reused on later runs."""
    if path.is_file() and path.stat().st_size == size:
        print(f"  reusing {path} ({size} bytes)")
        return
    print(f"  writing {path} ({size / GIB:.2f} GiB) ...", flush=True)
    pool = os.urandom(POOL_SIZE)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            written = block = 0
            while written < size:
                # The pool rotated by a different amount each time: no two pages alike.
                shift = (block * 1_000_003) % POOL_SIZE
                n = min(POOL_SIZE, size - written)
                f.write((pool[shift:] + pool[:shift])[:n])
                written += n
                block += 1
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def read_with_cat(path: Path) -> float:
    start = time.perf_counter()
    with open(os.devnull, "wb") as sink:
        subprocess.run(["cat", str(path)], stdout=sink, check=True)
    return time.perf_counter() - start


def resident_bytes(path: Path) -> int | None:
    if shutil.which("fincore") is None:
        return None
    done = subprocess.run(
        ["fincore", "--bytes", "--noheadings", "--output", "RES", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    try:
        return int(done.stdout.split()[0])
    except (ValueError, IndexError):
        return None


# -- the hashing scheme under test ----------------------------------------------------------------


class Hasher:
    """Hash a file as chunks of ``chunk`` bytes on ``threads`` threads, reading ``read`` at once."""

    def __init__(self, chunk: int, read: int, threads: int) -> None:
        self.chunk = chunk
        self.read = read
        self.threads = threads
        self._local = threading.local()

    def _buffer(self) -> memoryview:
        view: memoryview | None = getattr(self._local, "buffer", None)
        if view is None:
            view = self._local.buffer = memoryview(bytearray(self.read))
        return view

    def _chunk(self, fd: int, offset: int, length: int) -> bytes:
        buf = self._buffer()
        hasher = xxhash.xxh3_128()
        end = offset + length
        while offset < end:
            n = os.preadv(fd, [buf[: min(self.read, end - offset)]], offset)
            if n == 0:
                raise EOFError(f"file ended at {offset}, {end - offset} bytes short")
            hasher.update(buf[:n])
            offset += n
        return hasher.digest()

    def __call__(self, path: Path) -> bytes:
        fd = os.open(path, os.O_RDONLY)
        try:
            size = os.fstat(fd).st_size
            offsets = range(0, size, self.chunk)
            pool = ThreadPoolExecutor(self.threads)
            try:
                digests = list(
                    pool.map(lambda off: self._chunk(fd, off, min(self.chunk, size - off)), offsets)
                )
            finally:
                # On Ctrl-C, drop the chunks not started rather than hash the rest of the file.
                pool.shutdown(wait=True, cancel_futures=True)
        finally:
            os.close(fd)
        return xxhash.xxh3_128_digest(b"".join(digests))


# -- measuring -----------------------------------------------------------------------------------


Config = tuple[int, int, int]  # threads, chunk size, read size


def measure(configs: Sequence[Config], path: Path, runs: int) -> dict[Config, list[float]]:
    """Wall seconds of every configuration, configurations taking turns, one warm-up each."""
    hashers = {config: Hasher(config[1], config[2], config[0]) for config in configs}
    for hasher in hashers.values():
        hasher(path)
    times: dict[Config, list[float]] = {config: [] for config in configs}
    for _ in range(runs):
        for config, hasher in hashers.items():
            start = time.perf_counter()
            hasher(path)
            times[config].append(time.perf_counter() - start)
    return times


def median_of(action: Callable[[], object], runs: int) -> float:
    seconds = []
    for _ in range(runs):
        start = time.perf_counter()
        action()
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds)


def in_cache_speed(runs: int) -> float:
    """XXH3-128 GB/s over a 512 KiB buffer that stays in the CPU cache: the hash-only ceiling."""
    buf = memoryview(os.urandom(512 * KIB))
    rounds = 2000

    def work() -> None:
        hasher = xxhash.xxh3_128()
        for _ in range(rounds):
            hasher.update(buf)

    return len(buf) * rounds / median_of(work, runs) / 1e9


def print_tables(times: dict[Config, list[float]], size: int, thread_counts: Sequence[int]) -> None:
    for threads in thread_counts:
        print(f"GB/s (median), {threads} thread{'s' if threads > 1 else ''}")
        header = "chunk / read"
        print(f"  {header:<13}" + "".join(f"{human(r):>12}" for r in READ_SIZES))
        for chunk in CHUNK_SIZES:
            cells = []
            for read in READ_SIZES:
                seconds = times[(threads, chunk, read)]
                median = statistics.median(seconds)
                spread = (max(seconds) - min(seconds)) / median
                mark = "*" if spread > NOISY else " "
                here = "<" if (chunk, read) == CURRENT else " "
                cells.append(f"{size / median / 1e9:9.2f}{mark}{here} ")
            print(f"  {human(chunk):<13}" + "".join(cells))
        print()
    print(f"  < taskkit's current choice ({human(CURRENT[0])} chunks, {human(CURRENT[1])} reads)")
    print(f"  * runs spread more than {NOISY:.0%} of the median ((max - min) / median)")


def print_ranking(times: dict[Config, list[float]], size: int, threads: int) -> None:
    ranked = sorted(
        (statistics.median(times[(threads, c, r)]), c, r) for c in CHUNK_SIZES for r in READ_SIZES
    )
    best = ranked[0][0]
    print(f"\nRanking with {threads} threads (of {len(ranked)} configurations)")
    for place, (median, chunk, read) in enumerate(ranked, 1):
        if place <= 5 or (chunk, read) == CURRENT:
            note = "  <- current" if (chunk, read) == CURRENT else ""
            print(
                f"  {place:>2}. {human(chunk):>6} chunks, {human(read):>7} reads: "
                f"{size / median / 1e9:6.2f} GB/s ({median / best - 1:+.1%} time vs best){note}"
            )


# -- main ---------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=3, help="timed runs per configuration [3]")
    parser.add_argument("--size-gib", type=float, default=2.0, help="file size [2]")
    parser.add_argument(
        "--workdir", type=Path, default=REPO / ".bench", help="where the file lives [.bench/]"
    )
    args = parser.parse_args(argv)
    if args.runs < 1 or args.size_gib <= 0:
        parser.error("--runs must be >= 1 and --size-gib > 0")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    began = time.perf_counter()
    workdir: Path = args.workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    size = int(args.size_gib * GIB)
    path = workdir / f"chunk-{size}.bin"
    cpus = usable_cpus()
    thread_counts = sorted({1, cpus})
    print(
        f"python {platform.python_version()}, xxhash {xxhash.VERSION} "
        f"(libxxhash {xxhash.XXHASH_VERSION}), nproc {os.cpu_count()} (usable {cpus}), "
        f"load average {load()}"
    )
    make_file(path, size)
    first, second = read_with_cat(path), read_with_cat(path)
    print(
        f"file {path}: {size / GIB:.2f} GiB; cat {size / first / 1e9:.2f} GB/s, "
        f"then {size / second / 1e9:.2f} GB/s"
    )
    resident = resident_bytes(path)
    if resident is not None:
        print(f"fincore: {resident} of {size} bytes in the page cache")
    cat_speed = size / median_of(lambda: read_with_cat(path), args.runs) / 1e9
    print(f"reference: cat FILE > /dev/null {cat_speed:.2f} GB/s")
    xxhsum = shutil.which("xxhsum")
    if xxhsum is None:
        print("reference: xxhsum not installed (`apt-get install -y xxhash`): skipped")
    else:

        def run_xxhsum() -> None:
            subprocess.run(
                [xxhsum, "-H2", str(path)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                check=True,
            )

        xx_speed = size / median_of(run_xxhsum, args.runs) / 1e9
        print(f"reference: xxhsum -H2 FILE {xx_speed:.2f} GB/s")
    ceiling = in_cache_speed(args.runs)
    print(f"reference: XXH3-128 of a CPU-cached 512 KiB buffer, 1 thread: {ceiling:.2f} GB/s")
    configs = [(t, c, r) for t in thread_counts for c in CHUNK_SIZES for r in READ_SIZES]
    print(f"measuring {len(configs)} configurations x {args.runs} runs ...\n", flush=True)
    times = measure(configs, path, args.runs)
    print_tables(times, size, thread_counts)
    for threads in thread_counts:
        print_ranking(times, size, threads)
    print(f"\nload average {load()} at the end; total {time.perf_counter() - began:.0f} s")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        sys.exit(130)
