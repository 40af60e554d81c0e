"""Many small files: every row of issue 15's target table, each next to its anchor in one run.

Every run is a whole process (``python -m taskkit ...`` with ``PYTHONPATH`` at this checkout, or
the anchor's command), timed from before its spawn to after its reap; a row's variants take turns
run by run, so a noisy neighbour hurts them alike, and each time is the median of ``--runs`` runs
(default 3). Peak RSS is each child's own ``ru_maxrss`` from ``os.wait4``, taken by a small
helper process (``stage_bench.Spawner``) so that no child inherits this script's high-water mark.
Whatever a run needs first (fresh directories, an earlier task on the node) is done untimed
before it; the first run of every variant is checked untimed (exit code, the ``--json``
summary, the files and bytes in the destination or the lines printed).

The data, under ``--workdir`` (default ``.bench/many/`` at the repository root, ignored by git),
built once and reused: the tree of ``--files`` (default 100,000) files of 512 B, a tree of a tenth
of them (for the memory slope and the scale section), and the tree of ``--small-files`` (default
20,000) files of 4 KiB; 1,000 files a directory, random bytes.

The rows (N = ``--files``, M = ``--small-files``):

1. warm re-stage of N files from a ``file://`` source: absolute seconds (target <= 2.0 s). Before
   it, untimed: one cold stage into the workdir, a wait past the stat-cache's 2 s racy window,
   and one "first warm" run (which records the files as trusted).
2. cold stage of N files (a fresh workdir and ``TASKKIT_CACHE_DIR`` each run) against ``cp -r``
   of the tree (<= 2.0x).
3. cold stage of M files of 4 KiB with the node cache on, as the second task on the node: each
   run a fresh node (node cache and stat-cache), a first task staging into its own workdir
   (untimed, filling the node cache), then the timed second task, whose files are linked; against
   ``cp -al`` of the tree (<= 2.0x).
4. cold upload of M files to a fresh ``file://`` DEST (fresh stat-cache) against ``cp -r``
   (<= 2.0x).
5. unchanged upload of M files to the DEST of an earlier upload: absolute (<= 0.6 s); a first
   unchanged run (after the racy window) untimed.
6. ``taskkit hash`` of the M files, cold (fresh stat-cache) against ``find -print0 | xargs -0
   xxhsum -H2`` (<= 1.5x), and warm (the stat-cache filled, past the racy window, one untimed
   run) against the cold run (<= 0.5x). Both write their lines to a file.
7. peak RSS per planned file (<= 1 KiB): ``taskkit stage --dry-run`` of N and of N/10 files; the
   target is judged on the slope (peak(N) - peak(N/10)) / (N - N/10), which leaves out the
   interpreter and imports; (peak(N) - peak of ``taskkit stage --help``) / N is shown too, and
   the same slope for the cold stages of row 2 (a whole stage holds more than its plan).

Rows 2, 3 and 4 also time a bare loop of the system calls of taskkit's protocol for each file
(``bench/floor_loops.py``: no plan, no records, no progress), printed as "Floors" after the rows:
how near the anchor anything keeping the same guarantees could come from Python, and how far
taskkit is from that loop.

Then the scale on paper: for N/10, N (measured) and 1,000,000 files (measured with
``--scale-1m``, else extrapolated linearly from N/10 and N, and marked so), the warm check, the
cold stage, the planning memory, and the requests a stage or upload of that many files of up to
8 MiB makes against Azure, counted from what taskkit's code does (see :func:`azure_requests`).

Nothing a timed run made is deleted before the bench ends (see :func:`fresh`): ext4 makes file
creation many times dearer for minutes after a mass deletion. For the same reason, start a
bench a few minutes after the previous one (or anything else that deleted many files) ended.

``--quick`` is a smoke run of seconds: 2,000 and 1,000 files, one run.

Run: ``.venv/bin/python bench/many_files.py [--runs N] [--files N] [--small-files N] [--quick]
[--scale-1m] [--workdir DIR]``
"""

from __future__ import annotations

import argparse
import compileall
import math
import os
import platform
import re
import shutil
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import xxhash
from benchlib import (
    Proc,
    Timing,
    cpu_model,
    load,
    output,
    print_load,
    print_table,
    report_anomalies,
    run_main,
)
from stage_bench import Spawner

from taskkit.content.digest import CHUNK_SIZE
from taskkit.content.statcache import RACY_WINDOW_NS

REPO = Path(__file__).resolve().parent.parent
PYTHON = str(Path(sys.executable).parent / "python")

KIB = 1 << 10
MIB = 1 << 20
PER_DIR = 1000
BIG_SIZE = 512
SMALL_SIZE = 4 * KIB
MILLION = 1_000_000
#: Seconds to wait after the last write before a run whose stat-cache records must be trusted.
SETTLE_S = RACY_WINDOW_NS / 1e9 + 0.1
#: Blobs per List Blobs page (``results_per_page`` of taskkit.storage.azure's ``list``; Azure's
#: own maximum).
LIST_PAGE = 5000
#: The largest file moved in one request (Get Blob / Put Blob); a larger one goes in ranges or
#: blocks of this size.
ONE_REQUEST = CHUNK_SIZE
#: Environment variables that would change what is measured (a node cache, the stat-cache's
#: place, concurrency, a Batch node's shared folder).
DROPPED = ("TASKKIT_", "AZ_BATCH_", "AZURE_")


# -- data -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Tree:
    """``count`` files of ``size`` random bytes at ``root``, ``PER_DIR`` to a directory."""

    root: Path
    count: int
    size: int

    @property
    def total(self) -> int:
        return self.count * self.size

    @property
    def url(self) -> str:
        return f"file://{self.root}/"

    def describe(self) -> str:
        return f"{self.count:,} x {human(self.size)}"


def human(n: float) -> str:
    if n >= MIB:
        return f"{n / MIB:.4g} MiB"
    if n >= KIB:
        return f"{n / KIB:.4g} KiB"
    return f"{n:.0f} B"


def counted(root: Path) -> tuple[int, int]:
    """Files and bytes below ``root`` (0, 0 when it is not there)."""
    files = size = 0
    stack = [str(root)]
    while stack:
        try:
            it = os.scandir(stack.pop())
        except FileNotFoundError:
            continue
        with it:
            for entry in it:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
                else:
                    files += 1
                    size += entry.stat(follow_symlinks=False).st_size
    return files, size


def make_tree(tree: Tree) -> None:
    """Build ``tree`` (aside, then renamed into place), unless it is already there whole."""
    if counted(tree.root) == (tree.count, tree.total):
        print(f"  reusing {tree.root} ({tree.describe()})")
        return
    print(f"  writing {tree.root} ({tree.describe()}) ...", flush=True)
    start = time.perf_counter()
    shutil.rmtree(tree.root, ignore_errors=True)
    tmp = tree.root.with_name(tree.root.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    for d in range(0, tree.count, PER_DIR):
        folder = tmp / f"d{d // PER_DIR:04d}"
        folder.mkdir(parents=True)
        n = min(PER_DIR, tree.count - d)
        pool = os.urandom(n * tree.size)
        for i in range(n):
            with open(folder / f"f{d + i:07d}.bin", "wb") as f:
                f.write(pool[i * tree.size : (i + 1) * tree.size])
    os.sync()
    tmp.rename(tree.root)
    print(f"  written in {time.perf_counter() - start:.1f} s")


def fresh(path: Path) -> Path:
    """``path`` as a new empty directory, with no dirty pages of an earlier run left to be
    written during the next one.

    An earlier ``path`` is moved aside (into ``.trash`` beside it, removed when the bench ends),
    not deleted: on ext4, files created within minutes of a mass deletion cost up to 20 times
    more kernel time, because the inode allocator steps over every recently deleted inode
    (``recently_deleted`` in ``find_inode_bit``). Seen here: ``cp -r`` of 100,000 files took
    20.8 s of system time right after a tree of 100,000 was deleted, 1.1-2.6 s otherwise. Deleting
    between runs made both sides of a ratio swing 2-20 s with the order of the runs."""
    if path.exists():
        trash = path.parent / ".trash"
        trash.mkdir(exist_ok=True)
        path.rename(trash / f"{path.name}-{time.monotonic_ns()}")
    os.sync()
    path.mkdir(parents=True)
    return path


def settle() -> None:
    """Let the stat-cache's racy window pass after everything written so far."""
    time.sleep(SETTLE_S)


# -- cases ----------------------------------------------------------------------------------------

#: What a case needs before a run (untimed): its command line and environment.
Prepare = Callable[[], tuple[list[str], dict[str, str]]]
#: What a case's first run must show; the problems found.
Check = Callable[[Proc], list[str]]


@dataclass
class Case:
    """One variant of a row: ``prepare`` before every run, ``check`` after the first."""

    label: str
    prepare: Prepare
    check: Check | None = None


@dataclass(frozen=True)
class Row:
    """One row of the target table: a median in seconds or KiB, against an anchor or not."""

    work: str
    value: str
    anchor: str
    ratio: float | None  # None: the target is absolute
    target: str  # "<= 2.0x" or "<= 2.0 s"
    met: bool


def judged(work: str, num: Timing, den: Timing | None, bound: float) -> Row:
    """A timed row: ``num`` against ``den`` (at most ``bound`` times it), or, without ``den``,
    ``num``'s median against ``bound`` seconds."""
    if den is None:
        return Row(
            work, f"{num.median:.3f} s", "absolute", None, f"<= {bound} s", num.median <= bound
        )
    ratio = num.median / den.median
    return Row(
        work,
        f"{num.median:.3f} s",
        f"{den.median:.3f} s ({den.label})",
        ratio,
        f"<= {bound}x",
        ratio <= bound,
    )


class Bench:
    def __init__(self, args: argparse.Namespace, spawner: Spawner) -> None:
        self.args = args
        self.runs: int = args.runs
        self.spawner = spawner
        self.problems: list[str] = []
        self.run_dir: Path = args.workdir / "run"
        data = args.workdir / "data"
        self.big = Tree(data / f"s{args.files}x{BIG_SIZE}", args.files, BIG_SIZE)
        tenth = max(args.files // 10, 1)
        self.tenth = Tree(data / f"s{tenth}x{BIG_SIZE}", tenth, BIG_SIZE)
        self.small = Tree(data / f"s{args.small_files}x{SMALL_SIZE}", args.small_files, SMALL_SIZE)
        top = args.scale_top
        self.top = Tree(data / f"s{top}x{BIG_SIZE}", top, BIG_SIZE) if args.scale_1m else None
        self.rows: list[Row] = []
        #: (work, taskkit's timing, the bare loop's, the anchor's) of the rows with a floor.
        self.floors: list[tuple[str, Timing, Timing, Timing]] = []
        self.scale: dict[int, dict[str, float]] = {}
        self.base_env = {k: v for k, v in os.environ.items() if not k.startswith(DROPPED)}
        self.base_env["PYTHONPATH"] = str(REPO)

    # -- running --

    def env(self, cache: Path) -> dict[str, str]:
        """The environment of a taskkit run whose stat-cache lives in ``cache``."""
        return {**self.base_env, "TASKKIT_CACHE_DIR": str(cache)}

    def spawn(self, argv: Sequence[str], env: dict[str, str]) -> Proc:
        proc = self.spawner.run(argv, env)
        if proc.code != 0:
            tail = "\n".join(proc.stderr.strip().splitlines()[-10:])
            self.anomaly(f"`{shown(argv)}` exited with {proc.code}; stderr (tail):\n{tail}")
        return proc

    def untimed(self, argv: Sequence[str], env: dict[str, str], check: Check) -> None:
        """Run a preparation step and check it."""
        for problem in check(self.spawn(argv, env)):
            self.anomaly(f"preparing, `{shown(argv)}`: {problem}")

    def anomaly(self, text: str) -> None:
        self.problems.append(text)
        print(f"  ANOMALY: {text}", flush=True)

    def measure(self, title: str, cases: Sequence[Case]) -> dict[str, Timing]:
        """Run the cases in turns, ``runs`` rounds; print their table."""
        print(title, flush=True)
        timings = {c.label: Timing(c.label) for c in cases}
        for i in range(self.runs):
            for case in cases:
                argv, env = case.prepare()
                proc = self.spawn(argv, env)
                timings[case.label].argv = argv
                timings[case.label].procs.append(proc)
                if i == 0 and case.check is not None:
                    for problem in case.check(proc):
                        self.anomaly(f"{case.label}: {problem}")
        print_table(list(timings.values()), rate=False, cpu=False)
        print(flush=True)
        return timings

    # -- commands --

    @staticmethod
    def taskkit(*args: str) -> list[str]:
        return [PYTHON, "-m", "taskkit", *args]

    def stage(self, tree: Tree, workdir: Path, *more: str) -> list[str]:
        return self.taskkit(
            "stage", "-i", f"{tree.url}=dst/", "--workdir", str(workdir), "--json", *more
        )

    def upload(self, tree: Tree, dest: Path) -> list[str]:
        return self.taskkit(
            "upload",
            "-o",
            f"{tree.root.name}/**=file://{dest}/",
            "--workdir",
            str(tree.root.parent),
            "--json",
        )

    def copy(self, tree: Tree, flags: str, into: str) -> Prepare:
        """``cp FLAGS`` of the tree into a fresh folder."""

        def prepare() -> tuple[list[str], dict[str, str]]:
            parent = fresh(self.run_dir / into)
            return [tool("cp"), flags, str(tree.root), str(parent / "dst")], self.base_env

        return prepare

    def floor(self, mode: str, tree: Tree, into: str) -> Case:
        """The bare loop of ``mode``'s system calls (``bench/floor_loops.py``) from the tree
        into a fresh folder."""
        dst = self.run_dir / into / "dst"

        def prepare() -> tuple[list[str], dict[str, str]]:
            fresh(self.run_dir / into)
            loop = str(REPO / "bench" / "floor_loops.py")
            return [PYTHON, loop, mode, str(tree.root), str(dst)], self.base_env

        check = self.holds(dst, tree.count, tree.total)
        if mode == "link":  # the loop's lock files are there too
            check = self.holds(dst, 2 * tree.count, tree.total)
        return Case(f"bare loop of the {mode} protocol's calls, {tree.describe()}", prepare, check)

    # -- checks --

    @staticmethod
    def summary_says(**expected: int | bool) -> Check:
        """The ``--json`` summary has these values."""

        def check(proc: Proc) -> list[str]:
            found = proc.summary()
            wrong = {k: found.get(k) for k, v in expected.items() if found.get(k) != v}
            return [f"its summary has {wrong}, not {expected}"] if wrong else []

        return check

    @staticmethod
    def holds(root: Path, files: int, size: int | None, then: Check | None = None) -> Check:
        """``root`` holds ``files`` files of ``size`` bytes in all (any size: None)."""

        def check(proc: Proc) -> list[str]:
            found = counted(root)
            problems = [] if then is None else then(proc)
            if found[0] != files or (size is not None and found[1] != size):
                problems.append(
                    f"{root} holds {found[0]} files of {found[1]} B, not {files} of {size} B"
                )
            return problems

        return check

    @staticmethod
    def lines(count: int, cached: int | None = None) -> Check:
        """Printed ``count`` lines (and, per ``--summary``, ``cached`` from the stat-cache)."""

        def check(proc: Proc) -> list[str]:
            problems = []
            found = len(proc.stdout.splitlines())
            if found != count:
                problems.append(f"printed {found} lines, not {count}")
            hits = re.search(r"(\d+) from the stat-cache", proc.stderr)
            if cached is not None and (hits is None or int(hits.group(1)) != cached):
                said = hits.group(0) if hits else proc.stderr.strip()[-200:]
                problems.append(f"said {said!r}, not {cached} from the stat-cache")
            return problems

        return check

    # -- the rows --

    def prepare_warm(self) -> None:
        """Everything the warm rows need, then one wait past the racy window, then each warm
        variant once (the "first warm" run, which records the files as trusted)."""
        print(
            "Preparing the warm rows (untimed): cold runs, the racy window, first warm runs",
            flush=True,
        )
        trees = [self.big, self.tenth, *([self.top] if self.top is not None else [])]
        for tree in trees:
            work = fresh(self.run_dir / f"warm-{tree.count}")
            cache = fresh(self.run_dir / f"warm-{tree.count}-cache")
            self.untimed(
                self.stage(tree, work),
                self.env(cache),
                self.holds(
                    work / "dst", tree.count, tree.total, self.summary_says(transferred=tree.count)
                ),
            )
        dest = fresh(self.run_dir / "up-warm")
        up_cache = fresh(self.run_dir / "up-warm-cache")
        self.untimed(
            self.upload(self.small, dest),
            self.env(up_cache),
            self.summary_says(transferred=self.small.count),
        )
        hash_cache = fresh(self.run_dir / "hash-warm-cache")
        self.untimed(
            self.taskkit("hash", "--summary", str(self.small.root)),
            self.env(hash_cache),
            self.lines(self.small.count),
        )
        settle()
        for tree in trees:
            work, cache = (
                self.run_dir / f"warm-{tree.count}",
                self.run_dir / f"warm-{tree.count}-cache",
            )
            self.untimed(
                self.stage(tree, work),
                self.env(cache),
                self.summary_says(transferred=0, skipped=tree.count),
            )
        self.untimed(
            self.upload(self.small, dest),
            self.env(up_cache),
            self.summary_says(transferred=0, skipped=self.small.count),
        )
        self.untimed(
            self.taskkit("hash", "--summary", str(self.small.root)),
            self.env(hash_cache),
            self.lines(self.small.count),
        )
        print()

    def warm_case(self, tree: Tree) -> Case:
        work, cache = self.run_dir / f"warm-{tree.count}", self.run_dir / f"warm-{tree.count}-cache"
        return Case(
            f"taskkit stage, warm, {tree.describe()}",
            lambda: (self.stage(tree, work), self.env(cache)),
            self.summary_says(transferred=0, skipped=tree.count),
        )

    def cold_case(self, tree: Tree) -> Case:
        work, cache = self.run_dir / f"cold-{tree.count}", self.run_dir / f"cold-{tree.count}-cache"

        def prepare() -> tuple[list[str], dict[str, str]]:
            return self.stage(tree, fresh(work)), self.env(fresh(cache))

        check = self.holds(
            work / "dst", tree.count, tree.total, self.summary_says(transferred=tree.count)
        )
        return Case(f"taskkit stage, cold, {tree.describe()}", prepare, check)

    def dry_case(self, tree: Tree) -> Case:
        work, cache = self.run_dir / f"dry-{tree.count}", self.run_dir / f"dry-{tree.count}-cache"

        def prepare() -> tuple[list[str], dict[str, str]]:
            return self.stage(tree, fresh(work), "--dry-run"), self.env(fresh(cache))

        check = self.holds(work, 0, 0, self.summary_says(dry_run=True, files=tree.count))
        return Case(f"taskkit stage --dry-run, {tree.describe()}", prepare, check)

    def row_stage(self) -> None:
        big, tenth = self.big, self.tenth
        warm = self.measure(
            f"1. Warm re-stage from file:// (and {tenth.count:,} files for the scale section)",
            [self.warm_case(big), self.warm_case(tenth)],
        )
        self.rows.append(
            judged(
                f"warm re-stage, {big.describe()}, file://",
                warm[self.warm_case(big).label],
                None,
                2.0,
            )
        )
        cp = Case(
            f"cp -r, {big.describe()}",
            self.copy(big, "-r", "cp-big"),
            self.holds(self.run_dir / "cp-big" / "dst", big.count, big.total),
        )
        floor = self.floor("stage", big, "floor-stage")
        cold = self.measure(
            "2. Cold stage from file:// against cp -r (and the tenth, for the scale section)",
            [self.cold_case(big), cp, floor, self.cold_case(tenth)],
        )
        self.floors.append(
            (
                f"cold stage, {big.describe()}",
                cold[self.cold_case(big).label],
                cold[floor.label],
                cold[cp.label],
            )
        )
        self.rows.append(
            judged(
                f"cold stage, {big.describe()}, file://",
                cold[self.cold_case(big).label],
                cold[cp.label],
                2.0,
            )
        )
        for tree in (big, tenth):
            self.scale[tree.count] = {
                "warm": warm[self.warm_case(tree).label].median,
                "cold": cold[self.cold_case(tree).label].median,
                "stage_rss": rss_median(cold[self.cold_case(tree).label]),
            }

    def row_node_cache(self) -> None:
        tree = self.small
        node = self.run_dir / "node"

        def prepare() -> tuple[list[str], dict[str, str]]:
            fresh(node)
            env = self.env(node / "taskkit")
            first = self.stage(tree, node / "task-1", "--cache-dir", str(node / "cache"))
            self.untimed(first, env, self.summary_says(transferred=tree.count))
            return self.stage(tree, node / "task-2", "--cache-dir", str(node / "cache")), env

        second = Case(
            f"taskkit stage, second task on the node, {tree.describe()}",
            prepare,
            self.holds(
                node / "task-2" / "dst",
                tree.count,
                tree.total,
                self.summary_says(linked=tree.count),
            ),
        )
        # Linking adds a link to every file linked, which changes its ctime: the anchor links a
        # copy of the tree, so the stat-cache records of the tree itself (rows 5 and 6) hold.
        linkable = Tree(self.run_dir / "linkable", tree.count, tree.size)
        if counted(linkable.root) != (tree.count, tree.total):
            shutil.rmtree(linkable.root, ignore_errors=True)
            shutil.copytree(tree.root, linkable.root)
        cp = Case(
            f"cp -al, {tree.describe()}",
            self.copy(linkable, "-al", "cp-al"),
            self.holds(self.run_dir / "cp-al" / "dst", tree.count, tree.total),
        )
        floor = self.floor("link", linkable, "floor-link")
        found = self.measure(
            "3. Cold stage with the node cache on, the second task on the node "
            "(files linked), against cp -al",
            [second, cp, floor],
        )
        self.floors.append(
            (
                f"node cache, second task, {tree.describe()}",
                found[second.label],
                found[floor.label],
                found[cp.label],
            )
        )
        self.rows.append(
            judged(
                f"cold stage, {tree.describe()}, node cache, second task",
                found[second.label],
                found[cp.label],
                2.0,
            )
        )

    def row_upload(self) -> None:
        tree = self.small
        dest, cache = self.run_dir / "up-cold", self.run_dir / "up-cold-cache"

        def prepare() -> tuple[list[str], dict[str, str]]:
            return self.upload(tree, fresh(dest)), self.env(fresh(cache))

        # The DEST holds every file and the manifest (whose size is not known here).
        cold = Case(
            f"taskkit upload, cold, {tree.describe()}",
            prepare,
            self.holds(dest, tree.count + 1, None, self.summary_says(transferred=tree.count)),
        )
        cp = Case(
            f"cp -r, {tree.describe()}",
            self.copy(tree, "-r", "cp-small"),
            self.holds(self.run_dir / "cp-small" / "dst", tree.count, tree.total),
        )
        floor = self.floor("upload", tree, "floor-upload")
        found = self.measure("4. Cold upload to a file:// DEST against cp -r", [cold, cp, floor])
        self.floors.append(
            (
                f"cold upload, {tree.describe()}",
                found[cold.label],
                found[floor.label],
                found[cp.label],
            )
        )
        self.rows.append(
            judged(
                f"cold upload, {tree.describe()}, file:// DEST",
                found[cold.label],
                found[cp.label],
                2.0,
            )
        )
        warm_dest, warm_cache = self.run_dir / "up-warm", self.run_dir / "up-warm-cache"
        unchanged = Case(
            f"taskkit upload, unchanged, {tree.describe()}",
            lambda: (self.upload(tree, warm_dest), self.env(warm_cache)),
            self.summary_says(transferred=0, skipped=tree.count),
        )
        found = self.measure("5. Unchanged upload", [unchanged])
        self.rows.append(
            judged(f"unchanged upload, {tree.count:,} files", found[unchanged.label], None, 0.6)
        )

    def row_hash(self) -> None:
        tree = self.small
        cold_cache = self.run_dir / "hash-cold-cache"
        warm_cache = self.run_dir / "hash-warm-cache"
        argv = self.taskkit("hash", "--summary", str(tree.root))
        cold = Case(
            f"taskkit hash, cold stat-cache, {tree.describe()}",
            lambda: (argv, self.env(fresh(cold_cache))),
            self.lines(tree.count, 0),
        )
        warm = Case(
            f"taskkit hash, warm stat-cache, {tree.describe()}",
            lambda: (argv, self.env(warm_cache)),
            self.lines(tree.count, tree.count),
        )
        pipeline = f"find {tree.root} -type f -print0 | xargs -0 {tool('xxhsum')} -H2"
        anchor = Case(
            "find -print0 | xargs -0 xxhsum -H2",
            lambda: ([tool("sh"), "-c", pipeline], self.base_env),
            self.lines(tree.count),
        )
        found = self.measure("6. taskkit hash, cold and warm, against xxhsum", [cold, anchor, warm])
        self.rows.append(
            judged(
                f"taskkit hash, {tree.describe()}, cold stat-cache",
                found[cold.label],
                found[anchor.label],
                1.5,
            )
        )
        self.rows.append(
            judged(
                f"taskkit hash, {tree.describe()}, warm", found[warm.label], found[cold.label], 0.5
            )
        )

    def row_memory(self) -> None:
        big, tenth = self.big, self.tenth
        helped = Case(
            "taskkit stage --help", lambda: (self.taskkit("stage", "--help"), self.base_env)
        )
        found = self.measure(
            "7. Peak RSS while planning: --dry-run of N and N/10 files",
            [self.dry_case(big), self.dry_case(tenth), helped],
        )
        peak = {t.count: rss_median(found[self.dry_case(t).label]) for t in (big, tenth)}
        baseline = rss_median(found[helped.label])
        slope = (peak[big.count] - peak[tenth.count]) / (big.count - tenth.count)
        above = (peak[big.count] - baseline) / big.count
        print(
            f"  peak RSS (medians): {big.count:,} files {peak[big.count] / KIB:.1f} MiB, "
            f"{tenth.count:,} files {peak[tenth.count] / KIB:.1f} MiB, "
            f"`taskkit stage --help` {baseline / KIB:.1f} MiB"
        )
        print(
            f"  slope {slope:.3f} KiB per file (judged); above the --help baseline "
            f"{above:.3f} KiB per file (shown only)"
        )
        # A whole stage holds more than its plan (files in flight, results): shown beside it.
        staged = {t.count: self.scale[t.count]["stage_rss"] for t in (big, tenth)}
        print(
            f"  a cold stage (row 2) peaks at {staged[big.count] / KIB:.1f} MiB for "
            f"{big.count:,} files and {staged[tenth.count] / KIB:.1f} MiB for {tenth.count:,}: "
            f"{(staged[big.count] - staged[tenth.count]) / (big.count - tenth.count):.3f} KiB "
            "per file (shown only)\n"
        )
        self.rows.append(
            Row(
                f"peak RSS while planning, per file ({tenth.count:,} -> {big.count:,} dry runs)",
                f"{slope:.3f} KiB",
                f"slope; {above:.3f} KiB over --help",
                None,
                "<= 1 KiB",
                slope <= 1.0,
            )
        )
        for tree in (big, tenth):
            self.scale[tree.count]["memory"] = peak[tree.count] / KIB

    def row_top(self) -> None:
        """The scale section's largest size, measured (``--scale-1m``)."""
        top = self.top
        assert top is not None
        found = self.measure(
            f"Scale: {top.describe()} measured",
            [self.warm_case(top), self.cold_case(top), self.dry_case(top)],
        )
        self.scale[top.count] = {
            "warm": found[self.warm_case(top).label].median,
            "cold": found[self.cold_case(top).label].median,
            "memory": rss_median(found[self.dry_case(top).label]) / KIB,
        }

    # -- reporting --

    def print_rows(self) -> None:
        print(
            "Issue 15's targets, each against its anchor measured in this run (medians of "
            f"{self.runs} run{'s' if self.runs > 1 else ''})"
        )
        width = max(len(r.work) for r in self.rows)
        anchor_width = max(len(r.anchor) for r in self.rows)
        print(
            f"  {'work':<{width}}  {'taskkit':>11}  {'anchor':<{anchor_width}}  {'ratio':>6}  "
            f"{'target':<9} verdict"
        )
        for r in self.rows:
            ratio = "" if r.ratio is None else f"{r.ratio:.2f}x"
            print(
                f"  {r.work:<{width}}  {r.value:>11}  {r.anchor:<{anchor_width}}  {ratio:>6}  "
                f"{r.target:<9} {'met' if r.met else 'NOT MET'}"
            )
        print()
        if not self.floors:
            return
        print(
            "Floors: a bare Python loop of each protocol's system calls (bench/floor_loops.py: "
            "no plan, no records, no progress) against the same anchor"
        )
        width = max(len(work) for work, *_ in self.floors)
        print(f"  {'work':<{width}}  {'loop':>8}  {'loop/anchor':>11}  {'taskkit/loop':>12}")
        for work, ours, loop, anchor in self.floors:
            print(
                f"  {work:<{width}}  {loop.median:>7.3f}s  {loop.median / anchor.median:>10.2f}x  "
                f"{ours.median / loop.median:>11.2f}x"
            )
        print()

    def print_scale(self) -> None:
        small, large = self.tenth.count, self.big.count
        top = self.top.count if self.top is not None else MILLION
        measured = set(self.scale)
        print(
            "Scale on paper: files of 512 B from file:// (times, memory) and the requests a "
            "stage or upload of that many files of up to 8 MiB makes against Azure"
        )
        print(
            f"  {'files':>9}  {'warm check':>10}  {'cold stage':>10}  {'plan memory':>11}  "
            f"{'stage: list + GET':>19}  {'warm stage':>10}  {'upload: list + PUT':>21}  "
            f"{'unchanged upload':>16}  how"
        )
        for n in sorted({small, large, top}):
            if n in measured:
                values, how = self.scale[n], "measured"
            else:
                values = {k: extrapolate(self.scale, small, large, k, n) for k in self.scale[large]}
                how = f"extrapolated linearly from {small:,} and {large:,}"
            req = azure_requests(n)
            print(
                f"  {n:>9,}  {values['warm']:9.2f}s  {values['cold']:9.1f}s  "
                f"{values['memory']:7.0f} MiB  "
                f"{req['stage_list']:>6,} + {req['stage_get']:>10,}  {req['warm_stage']:>10,}  "
                f"{req['upload_list']:>5,} + {req['upload_put']:>13,}  "
                f"{req['unchanged_upload']:>16,}  {how}"
            )
        print(
            "  Extrapolated: on the straight line through the two measured sizes (flat where it\n"
            "  falls, as only noise makes it).\n"
            "  Requests, as taskkit's code makes them for N files of up to 8 MiB under one\n"
            "  prefix, without retries (a larger file adds a ranged GET or a Put Block per 8 MiB,\n"
            "  and a Put Block List):\n"
            f"  - stage, cold: ceil(N / {LIST_PAGE}) List Blobs (storage/azure.py list(),\n"
            f"    results_per_page={LIST_PAGE}) + N Get Blob (transfer/download.py: a file of\n"
            "    <= 8 MiB in one read at the listed etag; an empty file in none, counted here\n"
            "    anyway); warm, or every file linked from the node cache: the listing only.\n"
            "  - upload, cold to an empty DEST: 1 List Blobs of DEST (upload_plan.py) + N Put\n"
            "    Blob (upload.py, one put per file of <= 8 MiB) + 1 Put Blob for the manifest.\n"
            f"  - upload, unchanged: ceil((N + 1) / {LIST_PAGE}) List Blobs (the files and the\n"
            "    manifest) + 1 Get Blob of the manifest, compared and not rewritten.\n"
        )


def extrapolate(scale: dict[int, dict[str, float]], a: int, b: int, key: str, n: int) -> float:
    """The straight line through the measurements at ``a`` and ``b`` files, at ``n``; a line
    falling with more files (noise: no cost here shrinks with them) is taken as flat."""
    slope = max((scale[b][key] - scale[a][key]) / (b - a), 0.0)
    return scale[b][key] + slope * (n - b)


def azure_requests(n: int, size: int = BIG_SIZE) -> dict[str, int]:
    """Requests to Azure Blob storage for ``n`` files of ``size`` bytes under one prefix, as
    taskkit's code makes them (see the scale section's note)."""
    pages = math.ceil(n / LIST_PAGE)
    per_file = math.ceil(size / ONE_REQUEST) + (size > ONE_REQUEST)  # ranges (+ a block list)
    return {
        "stage_list": max(pages, 1),
        "stage_get": n * math.ceil(size / ONE_REQUEST),
        "warm_stage": max(pages, 1),
        "upload_list": 1,
        "upload_put": n * per_file + 1,
        "unchanged_upload": math.ceil((n + 1) / LIST_PAGE) + 1,
    }


def rss_median(timing: Timing) -> float:
    """The median of the runs' peak RSS, in KiB."""
    return statistics.median(p.rss_kib for p in timing.procs if p.rss_kib is not None)


def tool(name: str) -> str:
    """The absolute path of a command (the spawner does not search PATH)."""
    found = shutil.which(name)
    if found is None:
        raise SystemExit(f"many_files: {name} is not installed (xxhsum: apt-get install xxhash)")
    return found


def source_state() -> str:
    """The commit of the checkout measured, and its uncommitted changes to taskkit/."""
    head = output(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"])
    changed = output(["git", "-C", str(REPO), "diff", "HEAD", "--name-only", "--", "taskkit"])
    return f"git {head}" + (
        f", uncommitted changes in {', '.join(changed.split())}" if changed else ""
    )


def source_fingerprint() -> str:
    """A hash of the taskkit code every measured process imports (``PYTHONPATH``: this checkout,
    whichever taskkit this script itself imported): a change during the run mixes versions."""
    digest = xxhash.xxh3_64()
    for path in sorted((REPO / "taskkit").rglob("*.py")):
        digest.update(str(path).encode() + b"\0" + path.read_bytes())
    return f"{source_state()}, files {digest.hexdigest()}"


def shown(argv: Sequence[str]) -> str:
    return " ".join(argv).replace(PYTHON, "python")


# -- main -----------------------------------------------------------------------------------------


def print_header(args: argparse.Namespace) -> None:
    print("taskkit with many small files (bench/many_files.py): issue 15's target table")
    print("Machine")
    print(f"  cpu           {cpu_model()}")
    print(f"  cpus          {os.cpu_count()}")
    print(f"  kernel        {platform.system()} {platform.release()}")
    fs = output(["stat", "-f", "-c", "%T", str(args.workdir)])
    print(f"  workdir       {args.workdir} ({fs})")
    print(f"  load average  {load()} (1, 5, 15 min) at start")
    print_load()
    print("Software")
    print(f"  python        {platform.python_version()} ({sys.executable})")
    print(f"  taskkit       {REPO} (PYTHONPATH of every run), {source_state()}")
    print(f"  xxhsum        {output([tool('xxhsum'), '--version']).splitlines()[0]}")
    mode = "QUICK (smoke run: sizes shrunk)" if args.quick else "full"
    print(
        f"Settings: {mode}; runs {args.runs}; N = {args.files:,} files of {BIG_SIZE} B; "
        f"M = {args.small_files:,} files of {human(SMALL_SIZE)}"
    )
    print()


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "--runs", type=int, default=None, help="timed runs per variant [3; 1 quick]"
    )
    parser.add_argument(
        "--files", type=int, default=None, help="N, files of 512 B [100000; 2000 quick]"
    )
    parser.add_argument(
        "--small-files", type=int, default=None, help="M, files of 4 KiB [20000; 1000 quick]"
    )
    parser.add_argument("--quick", action="store_true", help="small sizes and one run: seconds")
    parser.add_argument(
        "--scale-1m",
        action="store_true",
        help="measure the scale section's 1,000,000 files (else extrapolated)",
    )
    parser.add_argument("--scale-top", type=int, default=MILLION, help=argparse.SUPPRESS)
    parser.add_argument(
        "--workdir",
        type=Path,
        default=REPO / ".bench" / "many",
        help="where the data and the runs live [.bench/many/]",
    )
    args = parser.parse_args(argv)
    if args.runs is None:
        args.runs = 1 if args.quick else 3
    if args.files is None:
        args.files = 2000 if args.quick else 100_000
    if args.small_files is None:
        args.small_files = 1000 if args.quick else 20_000
    if args.runs < 1 or args.small_files < 1 or args.files < 20:
        parser.error("--runs and --small-files must be >= 1, --files >= 20")
    if args.scale_1m and args.scale_top <= args.files:
        parser.error("the scale section's top size must be above --files")
    args.workdir = args.workdir.resolve()
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    began = time.perf_counter()
    spawner = Spawner()  # first, while this process is small
    try:
        args.workdir.mkdir(parents=True, exist_ok=True)
        source = source_fingerprint()
        # As an installed taskkit starts: its bytecode compiled once.
        compileall.compile_dir(str(REPO / "taskkit"), quiet=1)
        print_header(args)
        bench = Bench(args, spawner)
        print("Data")
        trees = [bench.big, bench.tenth, bench.small]
        for tree in [*trees, *([bench.top] if bench.top is not None else [])]:
            make_tree(tree)
        settle()
        print()
        bench.prepare_warm()
        bench.row_stage()
        bench.row_node_cache()
        bench.row_upload()
        bench.row_hash()
        bench.row_memory()
        if bench.top is not None:
            bench.row_top()
        bench.print_rows()
        bench.print_scale()
    finally:
        spawner.close()
        shutil.rmtree(args.workdir / "run", ignore_errors=True)
    if source_fingerprint() != source:
        bench.anomaly(
            f"taskkit's code changed while this ran ({source} -> {source_fingerprint()}): run again"
        )
    code = report_anomalies(
        bench.problems,
        "No anomaly: every run exited 0 and every first run's files, summary and lines were as"
        " expected.",
    )
    print(f"load average {load()} at the end; total {time.perf_counter() - began:.0f} s")
    return code


if __name__ == "__main__":
    run_main(main)
