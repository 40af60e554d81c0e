"""How fast taskkit hashes, next to the standard tools on the same machine and the same bytes.

What is measured (each a median of ``--runs`` runs, the variants of a section taking turns so that
a noisy neighbour hurts them all alike; one untimed warm-up run of each first):

A. One large file (``--size-gib``, default 4 GiB) held in the page cache (read once with ``cat``
   first; ``fincore`` confirms it is resident where available):

   * ``taskkit.content.hashing.hash_file(path, cache=None)`` inside this process, default jobs and
     jobs=1;
   * ``taskkit hash --no-cache FILE`` as a whole process;
   * the anchors ``xxhsum -H2``, ``b3sum``, ``md5sum`` (fewer runs: it is slow) and
     ``cat FILE > /dev/null``, the price of reading the bytes at all.

B. Many small files (``--files``, default 20,000 of 4 KiB in 40 directories):

   * ``taskkit hash DIR`` as a whole process, cold (a fresh, empty ``TASKKIT_CACHE_DIR`` each run)
     and warm (a cache filled by an earlier run; one ``--json`` run checks that every file is a
     hit), and with ``--no-cache``;
   * the same through ``hash_paths`` in this process, cold, warm and without a cache;
   * ``find DIR -type f -print0 | xargs -0 xxhsum -H2`` as the anchor, and a bare stat walk
     (``find -printf`` of size, times and inode; and ``os.scandir`` + ``os.stat`` in this process)
     as the floor for a warm run.

C. The files of B again, with the page cache, dentries and inodes dropped before every run (root
   only: ``/proc/sys/vm/drop_caches``), as after a node restart: the stat-cache's re-run against
   ``--no-cache`` and the xxhsum pipeline, both of which must read every byte from disk.

Also the start-up floor: ``python -c pass``, ``taskkit --version`` and importing the modules that
``taskkit hash`` needs, to show how much of a whole-process time is start-up.

Times are wall-clock (``time.perf_counter`` around the call or around ``subprocess.run``); tool
output goes to ``/dev/null``. GB/s are decimal (1e9 bytes per second). The data lives in
``--workdir`` (default ``.bench/`` at the repository root, ignored by git) and is reused when it is
already there with the right sizes. ``--profile`` adds a cProfile of one in-process cold and one
warm run of section B.

Anchors: ``apt-get install -y xxhash b3sum`` (md5sum, cat, find and xargs come with coreutils and
findutils). A missing anchor is reported and skipped.

Run: ``.venv/bin/python bench/hash_bench.py [--runs N] [--size-gib G] [--files N] [--workdir DIR]
[--small-dir DIR] [--sections A,B,C]``; ``--small-dir`` measures B and C on a tree that exists
(left as it is), e.g. ``--small-dir /data/s20k --sections B``.
"""

from __future__ import annotations

import argparse
import compileall
import cProfile
import io
import json
import os
import platform
import pstats
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import xxhash
from benchlib import (
    Spread,
    cpu_model,
    output,
    print_ratio,
    print_ratio_header,
    run_main,
)

import taskkit
from taskkit.content.chunkio import default_jobs
from taskkit.content.hashing import FileDigest, hash_file, hash_paths
from taskkit.content.statcache import RACY_WINDOW_NS, StatCache

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
PYTHON = str(VENV_BIN / "python")
TASKKIT = str(VENV_BIN / "taskkit")
INSTALL_HINT = "apt-get install -y xxhash b3sum"

GIB = 1 << 30
SMALL_SIZE = 4096
SMALL_DIRS = 40
POOL_SIZE = 64 << 20
#: Seconds to wait after the last write to the data before the first cached run: the stat-cache
#: does not trust an entry for a file touched less than RACY_WINDOW_NS before it was recorded.
SETTLE_S = RACY_WINDOW_NS / 1e9 + 0.5
MD5_RUNS = 3
NOISY = 0.20


# -- timing ------------------------------------------------------------------------------------


@dataclass
class Timing(Spread):
    """The wall times of one variant."""

    label: str
    seconds: list[float] = field(default_factory=list)


@dataclass
class Variant:
    """One thing to time; ``setup`` runs untimed before each run."""

    label: str
    action: Callable[[], object]
    runs: int
    setup: Callable[[], object] | None = None
    warmup: bool = True


def measure(variants: Sequence[Variant]) -> dict[str, Timing]:
    """Time every variant, taking turns run by run, after one untimed warm-up each."""
    for v in variants:
        if v.warmup:
            if v.setup is not None:
                v.setup()
            v.action()
    timings = {v.label: Timing(v.label) for v in variants}
    for i in range(max(v.runs for v in variants)):
        for v in variants:
            if i >= v.runs:
                continue
            if v.setup is not None:
                v.setup()
            start = time.perf_counter()
            v.action()
            timings[v.label].seconds.append(time.perf_counter() - start)
    return timings


def command(
    argv: Sequence[str], *, env: dict[str, str] | None = None, shell: bool = False
) -> Callable[[], None]:
    """A callable that runs ``argv`` with stdout and stderr on /dev/null and checks it worked."""
    args: str | list[str] = " ".join(argv) if shell else list(argv)

    def run() -> None:
        done = subprocess.run(
            args,
            shell=shell,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            check=False,
        )
        if done.returncode != 0:
            shown = args if isinstance(args, str) else shlex.join(args)
            raise RuntimeError(f"{shown!r} exited with {done.returncode}")

    return run


# -- machine and tools ---------------------------------------------------------------------------


def first_line(argv: Sequence[str]) -> str:
    text = output(argv)
    return text.splitlines()[0] if text else "?"


def mem_total_gib() -> float:
    try:
        with open("/proc/meminfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024 / GIB
    except OSError:
        pass
    return float("nan")


def load() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "?"


def source_state() -> str:
    """Which taskkit code is measured: the commit, and any uncommitted change to it."""
    head = first_line(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"])
    changed = output(["git", "-C", str(REPO), "diff", "HEAD", "--name-only", "--", "taskkit"])
    files = changed.split()
    return f"git {head}" + (f", uncommitted changes in {', '.join(files)}" if files else "")


def print_machine(workdir: Path, tools: dict[str, str | None]) -> None:
    print("Machine")
    print(f"  cpu           {cpu_model()}")
    print(f"  nproc         {os.cpu_count()} (usable by this process: {default_jobs()})")
    print(f"  memory        {mem_total_gib():.1f} GiB")
    print(f"  kernel        {platform.system()} {platform.release()}")
    fs = first_line(["stat", "-f", "-c", "%T", str(workdir)])
    print(f"  workdir       {workdir} ({fs})")
    print(f"  load average  {load()} (1, 5, 15 min) at start")
    print("Software")
    print(f"  python        {platform.python_version()} ({sys.executable})")
    print(f"  taskkit       {taskkit.__version__}, {source_state()}")
    if os.environ.get("PYTHONDONTWRITEBYTECODE"):
        print(
            "  note          PYTHONDONTWRITEBYTECODE is set; taskkit's bytecode was compiled\n"
            "                once at the start of this run, as an installed package has it"
        )
    print(f"  xxhash (py)   {xxhash.VERSION} (libxxhash {xxhash.XXHASH_VERSION})")
    for name, path in tools.items():
        if path is None:
            print(f"  {name:<13} MISSING: install with `{INSTALL_HINT}`; its anchors are skipped")
        else:
            print(f"  {name:<13} {first_line([path, '--version'])}")
    print()


# -- data ---------------------------------------------------------------------------------------


def make_big(path: Path, size: int) -> None:
    """A file of ``size`` incompressible bytes, written once and synced so later runs read RAM."""
    if path.is_file() and path.stat().st_size == size:
        print(f"  reusing {path} ({size} bytes)")
        return
    print(f"  writing {path} ({size / GIB:.2f} GiB) ...", flush=True)
    start = time.perf_counter()
    pool = os.urandom(POOL_SIZE)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            written = 0
            block = 0
            while written < size:
                # Each block is the random pool rotated by a different odd amount, so no two
                # pages of the file are equal and nothing deduplicates or compresses.
                shift = (block * 1_000_003) % POOL_SIZE
                data = pool[shift:] + pool[:shift]
                n = min(POOL_SIZE, size - written)
                f.write(data[:n])
                written += n
                block += 1
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    print(f"  written in {time.perf_counter() - start:.1f} s")


def small_paths(root: Path, count: int) -> Iterator[Path]:
    for i in range(count):
        yield root / f"d{i % SMALL_DIRS:02d}" / f"f{i:06d}.bin"


def scan_files(root: Path) -> Iterator[os.DirEntry[str]]:
    stack = [str(root)]
    while stack:
        with os.scandir(stack.pop()) as it:
            for entry in it:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
                elif entry.is_file(follow_symlinks=False):
                    yield entry


def make_small(root: Path, count: int) -> None:
    """``count`` files of 4 KiB of random bytes in 40 directories (built aside, then renamed)."""
    if root.is_dir():
        sizes = [e.stat(follow_symlinks=False).st_size for e in scan_files(root)]
        if len(sizes) == count and all(s == SMALL_SIZE for s in sizes):
            print(f"  reusing {root} ({count} files of {SMALL_SIZE} bytes)")
            return
        print(f"  {root} has {len(sizes)} files, not {count} of {SMALL_SIZE} bytes: rebuilding")
        shutil.rmtree(root)
    print(f"  writing {root} ({count} files of {SMALL_SIZE} bytes) ...", flush=True)
    start = time.perf_counter()
    tmp = root.with_name(root.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        for d in range(min(SMALL_DIRS, count)):
            (tmp / f"d{d:02d}").mkdir(parents=True)
        pool = os.urandom(count * SMALL_SIZE)
        for i, path in enumerate(small_paths(tmp, count)):
            path.write_bytes(pool[i * SMALL_SIZE : (i + 1) * SMALL_SIZE])
        os.sync()
        tmp.rename(root)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"  written in {time.perf_counter() - start:.1f} s")


def settle(paths: Sequence[Path]) -> None:
    """Wait until SETTLE_S after the newest change to ``paths`` (files, or trees of files)."""
    newest = 0
    for path in paths:
        if path.is_dir():
            for entry in scan_files(path):
                st = entry.stat(follow_symlinks=False)
                newest = max(newest, st.st_mtime_ns, st.st_ctime_ns)
        else:
            st = path.stat()
            newest = max(newest, st.st_mtime_ns, st.st_ctime_ns)
    wait = newest / 1e9 + SETTLE_S - time.time()
    if wait > 0:
        print(f"  waiting {wait:.1f} s so the stat-cache's racy-timestamp guard trusts the data")
        time.sleep(wait)


# -- reporting ----------------------------------------------------------------------------------


def gbps(size: int, seconds: float) -> float:
    return size / seconds / 1e9


def print_table(
    timings: Sequence[Timing], *, size: int | None = None, files: int | None = None
) -> None:
    width = max(len(t.label) for t in timings)
    rate = "GB/s" if size is not None else "files/s" if files is not None else ""
    header = f"  {'variant':<{width}} {'runs':>4} {'median':>9} {'min':>9} {'spread':>7} {rate:>9}"
    print(header.rstrip())
    for t in timings:
        if size is not None:
            speed = f"{gbps(size, t.median):9.2f}"
        elif files is not None:
            speed = f"{files / t.median:9,.0f}"
        else:
            speed = " " * 9
        flag = "  noisy" if t.spread > NOISY else ""
        row = (
            f"  {t.label:<{width}} {len(t.seconds):>4} {t.median:8.3f}s {t.best:8.3f}s "
            f"{t.spread:7.0%} {speed}{flag}"
        )
        print(row.rstrip())
    print("  (spread = (max - min) / median, 'noisy' above 20%; rates are from the median)")


def section_startup(runs: int, workdir: Path) -> dict[str, Timing]:
    print("Start-up floor (whole processes)")
    imports = "import taskkit.cli, taskkit.content.hashing, taskkit.content.statcache"
    # As an installed (not editable) taskkit would start: its bytecode compiled once and kept.
    compiled = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    compiled["PYTHONPYCACHEPREFIX"] = str(workdir / "pycache")
    timings = measure(
        [
            Variant("python -c pass", command([PYTHON, "-c", "pass"]), runs),
            Variant("taskkit --version", command([TASKKIT, "--version"]), runs),
            Variant(
                "taskkit --version, bytecode kept (PYTHONPYCACHEPREFIX)",
                command([TASKKIT, "--version"], env=compiled),
                runs,
            ),
            Variant(f"python -c '{imports}'", command([PYTHON, "-c", imports]), runs),
        ]
    )
    print_table(list(timings.values()))
    print()
    return timings


def page_cached(path: Path) -> int | None:
    """Bytes of ``path`` resident in the page cache, per ``fincore``; None if it cannot tell."""
    if shutil.which("fincore") is None:
        return None
    text = output(["fincore", "--bytes", "--noheadings", "--output", "RES", str(path)])
    try:
        return int(text.split()[0])
    except (ValueError, IndexError):
        return None


def timed(action: Callable[[], object]) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def warm_big(path: Path, size: int) -> None:
    """Read the file into the page cache and say whether it is resident."""
    cat = command(["cat", shlex.quote(str(path)), ">", "/dev/null"], shell=True)
    first, second = timed(cat), timed(cat)
    print(
        f"  warming: cat took {first:.2f} s ({gbps(size, first):.2f} GB/s), "
        f"then {second:.2f} s ({gbps(size, second):.2f} GB/s)"
    )
    resident = page_cached(path)
    if resident is not None:
        state = "fully" if resident >= size else f"{resident / size:.1%}"
        print(f"  fincore: {resident} of {size} bytes resident: {state} page-cached")
    verdict = "page-cached" if gbps(size, second) > 1.5 else "PROBABLY NOT page-cached"
    print(f"  the second cat ran at {gbps(size, second):.2f} GB/s: {verdict}")


def anchor_variants(
    path: Path, runs: int, tools: dict[str, str | None]
) -> tuple[list[Variant], dict[str, str]]:
    """The tool runs of section A, and the label of each tool that is there."""
    anchors = {
        "xxhsum": ("xxhsum -H2 FILE", ["-H2", str(path)]),
        "b3sum": ("b3sum FILE", [str(path)]),
        "md5sum": (f"md5sum FILE (only {min(MD5_RUNS, runs)} runs, no warm-up: slow)", [str(path)]),
    }
    variants: list[Variant] = []
    labels: dict[str, str] = {}
    for tool, (label, args) in anchors.items():
        exe = tools.get(tool)
        if exe is None:
            print(f"  skipping {tool}: not installed (`{INSTALL_HINT}`)")
            continue
        labels[tool] = label
        slow = tool == "md5sum"
        n = min(MD5_RUNS, runs) if slow else runs
        variants.append(Variant(label, command([exe, *args]), n, warmup=not slow))
    labels["cat"] = "cat FILE > /dev/null (read limit)"
    cat = command(["cat", shlex.quote(str(path)), ">", "/dev/null"], shell=True)
    variants.append(Variant(labels["cat"], cat, runs))
    return variants, labels


def section_big(path: Path, runs: int, tools: dict[str, str | None], env: dict[str, str]) -> None:
    size = path.stat().st_size
    print(f"A. One {size / GIB:.2f} GiB file, page-cached: {path}")
    warm_big(path, size)
    digest = hash_file(path, cache=None).digest
    cli = subprocess.run(
        [TASKKIT, "hash", "--no-cache", str(path)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    same = cli.stdout.split()[:1] == [str(digest)]
    print(f"  sanity: CLI digest equals in-process digest {digest}: {'yes' if same else 'NO'}")

    in_default = f"taskkit hash_file in-process (jobs={default_jobs()}, default)"
    in_one = "taskkit hash_file in-process (jobs=1)"
    whole = "taskkit hash --no-cache FILE (whole process)"
    anchors, labels = anchor_variants(path, runs, tools)
    timings = measure(
        [
            Variant(in_default, lambda: hash_file(path, cache=None), runs),
            Variant(in_one, lambda: hash_file(path, jobs=1, cache=None), runs),
            Variant(whole, command([TASKKIT, "hash", "--no-cache", str(path)], env=env), runs),
            *anchors,
        ]
    )
    print_table(list(timings.values()), size=size)

    print_ratio_header("Ratios (section A)")
    t = timings
    if "xxhsum" in labels:
        xx = t[labels["xxhsum"]]
        print_ratio("in-process GB/s (default jobs) / xxhsum GB/s", xx, t[in_default], ">= 1.4")
        print_ratio("in-process GB/s (jobs=1) / xxhsum GB/s", xx, t[in_one])
        print_ratio("whole-process wall / xxhsum wall", t[whole], xx, "<= 1.0")
    for tool in ("b3sum", "md5sum", "cat"):
        if tool in labels:
            other = t[labels[tool]]
            print_ratio(f"in-process GB/s (default jobs) / {tool} GB/s", other, t[in_default])
            print_ratio(f"whole-process wall / {tool} wall", t[whole], other)
    print()


def stat_walk(root: Path) -> int:
    """What a warm run cannot avoid: list every file and stat it."""
    n = 0
    for entry in scan_files(root):
        os.stat(entry.path)
        n += 1
    return n


def hash_all(root: Path, cache_dir: Path | None) -> list[FileDigest]:
    """``hash_paths`` over ``root`` with a stat-cache in ``cache_dir`` (None: no cache)."""
    cache = StatCache.open(cache_dir) if cache_dir is not None else None
    try:
        results = list(hash_paths([root], cache=cache))
    finally:
        if cache is not None:
            cache.close()
    digests = [r for r in results if isinstance(r, FileDigest)]
    if len(digests) != len(results):
        raise RuntimeError(f"{len(results) - len(digests)} of {len(results)} files not hashed")
    return digests


def fresh_dir(path: Path) -> Callable[[], None]:
    def reset() -> None:
        shutil.rmtree(path, ignore_errors=True)

    return reset


def cli_hits(root: Path, env: dict[str, str]) -> tuple[int, int]:
    done = subprocess.run(
        [TASKKIT, "hash", "--json", str(root)], env=env, capture_output=True, text=True, check=True
    )
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    return sum(1 for row in rows if row.get("cached") is True), len(rows)


def check_small(
    root: Path, count: int, warm_env: dict[str, str], inproc_warm: Path, xxhsum: str | None
) -> None:
    """Fill the warm caches, check that they hit, and check one digest against xxhsum."""
    shutil.rmtree(warm_env["TASKKIT_CACHE_DIR"], ignore_errors=True)
    shutil.rmtree(inproc_warm, ignore_errors=True)
    command([TASKKIT, "hash", str(root)], env=warm_env)()
    hits, total = cli_hits(root, warm_env)
    state = "every file hit" if hits == total == count else "NOT ALL FILES HIT: anomaly"
    print(f'  warm CLI cache check (--json): {hits} of {total} files "cached": true: {state}')
    first = hash_all(root, inproc_warm)
    warm = hash_all(root, inproc_warm)
    hits = sum(r.cached for r in warm)
    state = "every file hit" if hits == count else "NOT ALL FILES HIT: anomaly"
    print(f"  warm in-process cache check: {hits} of {len(warm)} cached: {state}")
    if any(r.cached for r in first) or any(r.cached for r in hash_all(root, None)):
        print("  ANOMALY: a run with an empty cache or none reported cached results")
    if xxhsum is not None:
        line = output([xxhsum, "-H2", warm[0].path])
        same = "yes" if line.split()[:1] == [warm[0].digest.value.hex()] else "NO"
        print(f"  sanity: taskkit digest of one 4 KiB file equals xxhsum -H2: {same}")


# Labels of section B.
COLD = "taskkit hash DIR, cold (empty cache) (whole process)"
WARM = "taskkit hash DIR, warm (filled cache) (whole process)"
NOCACHE = "taskkit hash --no-cache DIR (whole process)"
IN_COLD = "hash_paths in-process, cold (fresh StatCache)"
IN_WARM = "hash_paths in-process, warm (filled StatCache)"
IN_NONE = "hash_paths in-process, cache=None"
XX = "find | xargs -0 xxhsum -H2 (whole pipeline)"
FIND_WALK = "find -printf '%s %T@ %C@ %i' (stat walk)"
PY_WALK = "os.scandir + os.stat in-process (stat walk)"


def small_variants(
    root: Path, runs: int, workdir: Path, xxhsum: str | None
) -> tuple[list[Variant], dict[str, str]]:
    base = {k: v for k, v in os.environ.items() if k != "TASKKIT_CACHE_DIR"}
    envs = {
        name: {**base, "TASKKIT_CACHE_DIR": str(workdir / f"cache-{name}")}
        for name in ("cold", "warm", "unused")
    }
    inproc_cold = workdir / "cache-inproc-cold"
    inproc_warm = workdir / "cache-inproc-warm"
    hash_dir = [TASKKIT, "hash", str(root)]
    no_cache = [TASKKIT, "hash", "--no-cache", str(root)]
    variants = [
        Variant(
            COLD,
            command(hash_dir, env=envs["cold"]),
            runs,
            fresh_dir(Path(envs["cold"]["TASKKIT_CACHE_DIR"])),
        ),
        Variant(WARM, command(hash_dir, env=envs["warm"]), runs),
        Variant(NOCACHE, command(no_cache, env=envs["unused"]), runs),
        Variant(IN_COLD, lambda: hash_all(root, inproc_cold), runs, fresh_dir(inproc_cold)),
        Variant(IN_WARM, lambda: hash_all(root, inproc_warm), runs),
        Variant(IN_NONE, lambda: hash_all(root, None), runs),
    ]
    if xxhsum is not None:
        pipeline = [
            "find", shlex.quote(str(root)), "-type", "f", "-print0", "|", "xargs", "-0",
            shlex.quote(xxhsum), "-H2", ">", "/dev/null", "2>", "/dev/null",
        ]  # fmt: skip
        variants.append(Variant(XX, command(pipeline, shell=True), runs))
    else:
        print(f"  skipping the xxhsum pipeline: not installed (`{INSTALL_HINT}`)")
    walk_cmd = ["find", str(root), "-type", "f", "-printf", r"%s %T@ %C@ %i\n"]
    variants.append(Variant(FIND_WALK, command(walk_cmd), runs))
    variants.append(Variant(PY_WALK, lambda: stat_walk(root), runs))
    return variants, envs["warm"]


def small_ratios(t: dict[str, Timing], startup: dict[str, Timing]) -> None:
    print_ratio_header("Ratios (section B)")
    if XX in t:
        print_ratio("cold whole-process / xxhsum pipeline (issue 15)", t[COLD], t[XX], "<= 1.5")
        print_ratio("no-cache whole-process / xxhsum pipeline", t[NOCACHE], t[XX])
    print_ratio("warm / cold (whole process) (issue 15)", t[WARM], t[COLD], "<= 0.5")
    print_ratio("no-cache / cold (whole process)", t[NOCACHE], t[COLD])
    print_ratio("warm / cold (in-process)", t[IN_WARM], t[IN_COLD])
    print_ratio("warm whole-process / find stat walk", t[WARM], t[FIND_WALK])
    print_ratio("warm in-process / os.scandir + os.stat walk", t[IN_WARM], t[PY_WALK])
    print_ratio(
        "cold in-process / cache=None in-process (cost of recording)", t[IN_COLD], t[IN_NONE]
    )
    version = startup["taskkit --version"].median
    floor = startup["python -c pass"].median
    print("Start-up share of whole-process times (taskkit --version median / run median)")
    for label in (COLD, WARM, NOCACHE):
        run = t[label].median
        print(f"  {label:<66} {version / run:7.0%}  (bare python: {floor / run:.0%})")


DROP_CACHES = Path("/proc/sys/vm/drop_caches")


def drop_caches() -> None:
    """Empty the page cache, dentries and inodes: the disk as after a node restart."""
    os.sync()
    DROP_CACHES.write_text("3\n")


def section_cold_disk(root: Path, count: int, runs: int, workdir: Path, xxh: str | None) -> None:
    """What the stat-cache is for: a re-run after the page cache is gone (a node restart, a
    retry after other tasks pushed the data out). Needs root, to drop the caches."""
    print(f"C. The same {count:,} files with the page cache, dentries and inodes dropped first")
    if os.geteuid() != 0 or not os.access(DROP_CACHES, os.W_OK):
        print("  skipped: dropping the caches needs root and a writable /proc/sys/vm/drop_caches")
        print()
        return
    warm_env = {**os.environ, "TASKKIT_CACHE_DIR": str(workdir / "cache-warm")}
    labels = {
        "warm": "taskkit hash DIR, stat-cache filled (whole process)",
        "nocache": "taskkit hash --no-cache DIR (whole process)",
        "xx": "find | xargs -0 xxhsum -H2 (whole pipeline)",
    }
    variants = [
        Variant(labels["warm"], command([TASKKIT, "hash", str(root)], env=warm_env), runs,
                drop_caches, warmup=False),
        Variant(labels["nocache"], command([TASKKIT, "hash", "--no-cache", str(root)]), runs,
                drop_caches, warmup=False),
    ]  # fmt: skip
    if xxh is not None:
        pipeline = (
            f"find {shlex.quote(str(root))} -type f -print0 | xargs -0 {shlex.quote(xxh)} -H2"
            " > /dev/null 2> /dev/null"
        )
        variants.append(
            Variant(labels["xx"], command([pipeline], shell=True), runs, drop_caches, False)
        )
    timings = measure(variants)
    print_table(list(timings.values()), files=count)
    print_ratio_header("Ratios (section C)")
    print_ratio("stat-cache / no cache", timings[labels["warm"]], timings[labels["nocache"]])
    if xxh is not None:
        print_ratio("stat-cache / xxhsum pipeline", timings[labels["warm"]], timings[labels["xx"]])
        print_ratio("no cache / xxhsum pipeline", timings[labels["nocache"]], timings[labels["xx"]])
    print()


def section_small(
    root: Path,
    count: int,
    runs: int,
    tools: dict[str, str | None],
    workdir: Path,
    startup: dict[str, Timing],
    profile: bool,
) -> None:
    print(f"B. {count:,} small files: {root}")
    xxhsum = tools.get("xxhsum")
    variants, warm_env = small_variants(root, runs, workdir, xxhsum)
    inproc_warm = workdir / "cache-inproc-warm"
    check_small(root, count, warm_env, inproc_warm, xxhsum)
    timings = measure(variants)
    print_table(list(timings.values()), files=count)
    hits, total = cli_hits(root, warm_env)
    print(f"  after the runs, the warm CLI cache still hits {hits} of {total} files")
    small_ratios(timings, startup)
    print()
    if profile:
        profile_run(
            "in-process cold (fresh StatCache)", root, workdir / "cache-profile", reset=True
        )
        profile_run("in-process warm (filled StatCache)", root, inproc_warm, reset=False)


def profile_run(name: str, root: Path, cache_dir: Path, *, reset: bool) -> None:
    if reset:
        shutil.rmtree(cache_dir, ignore_errors=True)
    profiler = cProfile.Profile()
    profiler.enable()
    hash_all(root, cache_dir)
    profiler.disable()
    for key in ("tottime", "cumulative"):
        text = io.StringIO()
        stats = pstats.Stats(profiler, stream=text)
        stats.sort_stats(key).print_stats(15)
        print(f"cProfile, {name}, top 15 by {key}")
        print(trim_profile(text.getvalue()))


def trim_profile(text: str) -> str:
    """pstats output without its blank lines and with repository paths shortened."""
    lines = [line.replace(str(REPO) + "/", "") for line in text.splitlines() if line.strip()]
    return "\n".join("  " + line for line in lines)


# -- main ---------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=5, help="timed runs per variant [5]")
    parser.add_argument("--size-gib", type=float, default=4.0, help="large file size [4]")
    parser.add_argument("--files", type=int, default=20_000, help="small files [20000]")
    parser.add_argument(
        "--workdir", type=Path, default=REPO / ".bench", help="where the data lives [.bench/]"
    )
    parser.add_argument(
        "--profile", action="store_true", help="cProfile one cold and one warm in-process run of B"
    )
    parser.add_argument(
        "--small-dir",
        type=Path,
        default=None,
        help="hash this existing tree in B and C instead of writing --files files (read only)",
    )
    parser.add_argument(
        "--sections",
        default="A,B,C",
        help="which sections to run, of A (large file), B (small files), C (cold disk) [A,B,C]",
    )
    args = parser.parse_args(argv)
    if args.runs < 1 or args.files < 1 or args.size_gib <= 0:
        parser.error("--runs and --files must be >= 1 and --size-gib > 0")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    began = time.perf_counter()
    workdir: Path = args.workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    tools = {name: shutil.which(name) for name in ("xxhsum", "b3sum", "md5sum", "cat", "find")}
    # Start as an installed taskkit does: with its bytecode compiled once (pip does it at install
    # time; an editable install under PYTHONDONTWRITEBYTECODE would recompile at every start).
    compileall.compile_dir(str(Path(taskkit.__file__).parent), quiet=1)
    print_machine(workdir, tools)
    if args.runs < 5:
        print(f"NOTE: only {args.runs} runs per variant; medians of fewer than 5 are rough.\n")

    print("Data")
    sections = {name.strip().upper() for name in args.sections.split(",")}
    size = int(args.size_gib * GIB)
    big = workdir / f"big-{size}.bin"
    if "A" in sections:
        make_big(big, size)
    if args.small_dir is not None:
        small = args.small_dir.resolve()
        count = sum(1 for _ in scan_files(small))
        print(f"  using {small} as it is ({count:,} files)")
    else:
        small, count = workdir / f"small-{args.files}x{SMALL_SIZE}", args.files
        if sections & {"B", "C"}:
            make_small(small, count)
    settle([p for p in (big, small) if p.exists()])
    print()

    startup = section_startup(args.runs, workdir)
    env = {**os.environ, "TASKKIT_CACHE_DIR": str(workdir / "cache-unused")}
    if "A" in sections:
        section_big(big, args.runs, tools, env)
    if "B" in sections:
        section_small(small, count, args.runs, tools, workdir, startup, args.profile)
    if "C" in sections:
        section_cold_disk(small, count, min(args.runs, 3), workdir, tools.get("xxhsum"))
    print(f"load average {load()} at the end; total {time.perf_counter() - began:.0f} s")
    return 0


if __name__ == "__main__":
    run_main(main)
