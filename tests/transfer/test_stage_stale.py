"""Stale staged files: staging a prefix removes what taskkit staged there from a blob that no
longer exists, and nothing else (a file the user wrote, a staged file changed since, anything
outside the destination)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import ClassVar

import fsspec
import pytest
from observing import OnPlan
from runner_helpers import Task, opened_task, sh

from taskkit.content.statcache import RACY_WINDOW_NS, CacheEntry, StatCache, path_key
from taskkit.testing import Azurite
from taskkit.transfer.nodecache import NodeCache
from taskkit.transfer.stage import stage
from taskkit.transfer.stage_plan import Plan
from taskkit.transfer.summary import Summary


def later_clock() -> int:
    """A stat-cache clock past the racy window of every file the test writes."""
    return time.time_ns() + 10 * RACY_WINDOW_NS


class Source:
    """A prefix of blobs on ``file://`` or ``memory://``, written and deleted by the test."""

    def __init__(self, kind: str, root: Path) -> None:
        self.kind = kind
        self.fs = fsspec.filesystem(kind)
        self.root = str(root) if kind == "file" else "/taskkit-stale"

    def url(self, name: str = "") -> str:
        return f"{self.kind}://{self.root}/{name}"

    def put(self, name: str, data: bytes) -> None:
        if self.kind == "file":
            Path(self.root, name).parent.mkdir(parents=True, exist_ok=True)
        self.fs.pipe(f"{self.root}/{name}", data)

    def delete(self, name: str) -> None:
        self.fs.rm(f"{self.root}/{name}")


@pytest.fixture(params=["file", "memory"])
def source(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Source]:
    src = Source(request.param, tmp_path / "src")
    yield src
    if src.kind == "memory":
        with contextlib.suppress(FileNotFoundError):
            src.fs.rm(src.root, recursive=True)


@pytest.fixture
def cache(tmp_path: Path) -> Iterator[StatCache]:
    with StatCache(tmp_path / "statcache.sqlite3", clock=later_clock) as opened:
        yield opened


def run(
    inputs: Sequence[str], workdir: Path, cache: StatCache, **options: object
) -> tuple[Summary, Plan]:
    plans: list[Plan] = []
    summary = stage(inputs, workdir=workdir, cache=cache, observer=OnPlan(plans.append), **options)  # type: ignore[arg-type]
    return summary, plans[0]


def files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.name.startswith(".taskkit-")
    }


def seeded(source: Source, names: Sequence[str] = ("a.txt", "b.txt", "sub/c.txt")) -> None:
    for name in names:
        source.put(name, f"content of {name}\n".encode())


def test_a_deleted_blobs_staged_file_is_removed(
    source: Source, workdir: Path, cache: StatCache
) -> None:
    """A blob deleted since its prefix was staged: its file goes (counted, forgotten by the
    stat-cache), the others stay; a deeper one too."""
    seeded(source)
    summary, _ = run([source.url() + "=in/"], workdir, cache)
    assert summary.transferred == 3
    source.delete("b.txt")
    source.delete("sub/c.txt")
    summary, the_plan = run([source.url() + "=in/"], workdir, cache)
    assert sorted(e.dest for e in the_plan.removals) == ["in/b.txt", "in/sub/c.txt"]
    assert summary.removed == 2
    assert summary.as_json()["removed"] == 2
    assert files(workdir) == {"in/a.txt": b"content of a.txt\n"}
    assert cache.lookup([path_key(workdir / "in" / "b.txt")]) == {}
    again, the_plan = run([source.url() + "=in/"], workdir, cache)
    assert (again.removed, the_plan.removals) == (0, ())


def test_an_emptied_prefix_with_allow_empty_removes_everything_it_staged(
    source: Source, workdir: Path, cache: StatCache
) -> None:
    """A prefix that lists nothing now (allowed) leaves none of its earlier files."""
    seeded(source, ["p/a.txt", "q/x.txt"])
    run([source.url("p/") + "=in/"], workdir, cache)
    source.delete("p/a.txt")
    summary, _ = run([source.url("gone/") + "=in/"], workdir, cache, allow_empty=True)
    assert summary.removed == 0  # another prefix: not what staged in/a.txt
    summary, _ = run([source.url("p/") + "=in/"], workdir, cache, allow_empty=True)
    assert summary.removed == 1
    assert files(workdir) == {}


@pytest.mark.parametrize("change", ["appended", "same-size", "same-size-old-mtime", "replaced"])
def test_a_staged_file_changed_since_is_kept(
    source: Source, workdir: Path, cache: StatCache, change: str
) -> None:
    """A staged file the user changed (in place, at the same size, with its mtime put back,
    or replaced by a new file with the same bytes) is not taskkit's to remove."""
    seeded(source, ["a.txt", "b.txt"])
    run([source.url() + "=in/"], workdir, cache)
    path = workdir / "in" / "b.txt"
    before = path.stat()
    if change == "appended":
        with path.open("ab") as handle:
            handle.write(b"mine\n")
    elif change.startswith("same-size"):
        path.write_bytes(b"CONTENT OF B.TXT\n")
        if change.endswith("old-mtime"):
            os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    else:
        data = path.read_bytes()
        path.unlink()
        path.write_bytes(data)
    kept = path.read_bytes()
    source.delete("b.txt")
    summary, the_plan = run([source.url() + "=in/"], workdir, cache)
    assert the_plan.removals == ()
    assert summary.removed == 0
    assert path.read_bytes() == kept


def test_a_file_the_user_wrote_under_dest_is_kept(
    source: Source, workdir: Path, cache: StatCache
) -> None:
    """Files taskkit never staged are kept, even where a deleted blob's name would put them."""
    seeded(source, ["a.txt"])
    (workdir / "in").mkdir()
    (workdir / "in" / "mine.txt").write_bytes(b"mine")
    (workdir / "in" / "b.txt").write_bytes(b"also mine")  # the name of a blob that never was
    run([source.url() + "=in/"], workdir, cache)
    source.delete("a.txt")
    summary, _ = run([source.url() + "=in/"], workdir, cache, allow_empty=True)
    assert summary.removed == 1
    assert files(workdir) == {"in/mine.txt": b"mine", "in/b.txt": b"also mine"}


def test_nothing_outside_the_destination_is_removed(
    source: Source, workdir: Path, cache: StatCache
) -> None:
    """The same prefix staged to a sibling destination (in.bak/, in0/, a name sorting right
    beside in/) and another prefix's files are left alone when in/ is restaged."""
    seeded(source, ["p/a.txt", "q/b.txt"])
    for dest in ("in/", "in.bak/", "in0/", "inx/"):
        run([source.url("p/") + "=" + dest], workdir, cache)
    run([source.url("q/") + "=in/q/"], workdir, cache)
    source.delete("p/a.txt")
    source.delete("q/b.txt")
    summary, _ = run([source.url("p/") + "=in/"], workdir, cache, allow_empty=True)
    assert summary.removed == 1
    assert sorted(files(workdir)) == ["in.bak/a.txt", "in/q/b.txt", "in0/a.txt", "inx/a.txt"]


def test_a_file_staged_from_another_prefix_is_kept(
    source: Source, workdir: Path, cache: StatCache
) -> None:
    """A file another prefix staged into the same destination is not this prefix's to remove,
    though its blob is gone."""
    seeded(source, ["old/a.txt", "new/b.txt"])
    run([source.url("old/") + "=in/"], workdir, cache)
    source.delete("old/a.txt")
    summary, _ = run([source.url("new/") + "=in/"], workdir, cache)
    assert summary.removed == 0
    assert sorted(files(workdir)) == ["in/a.txt", "in/b.txt"]


def test_a_dry_run_shows_the_removal_and_removes_nothing(
    source: Source, workdir: Path, cache: StatCache
) -> None:
    """The dry run plans 'remove' with the blob it came from, counts it, and leaves the file
    and its stat-cache entry."""
    seeded(source, ["a.txt", "b.txt"])
    run([source.url() + "=in/"], workdir, cache)
    source.delete("b.txt")
    summary, the_plan = run([source.url() + "=in/"], workdir, cache, dry_run=True)
    (removal,) = the_plan.removals
    assert removal.action == "remove"
    assert removal.dest == "in/b.txt"
    assert removal.source.url.endswith("b.txt")
    assert removal.reason == f"staged from {removal.source.url}, which no longer exists"
    assert summary.removed == 1
    assert summary.dry_run
    assert (workdir / "in" / "b.txt").exists()
    assert cache.lookup([path_key(workdir / "in" / "b.txt")]) != {}


def test_a_stale_file_racy_in_the_stat_cache_is_removed_by_its_digest(
    source: Source, workdir: Path, tmp_path: Path
) -> None:
    """Restaged at once (inside the racy window, where identity alone proves nothing), a
    staged file is still removed when its inode and bytes are the staged ones, and kept when
    its bytes changed."""
    seeded(source, ["a.txt", "b.txt", "c.txt"])
    with StatCache(tmp_path / "now.sqlite3") as cache:
        run([source.url() + "=in/"], workdir, cache)
        with (workdir / "in" / "c.txt").open("r+b") as handle:
            handle.write(b"C")  # same size, same inode, other bytes
        source.delete("b.txt")
        source.delete("c.txt")
        summary, _ = run([source.url() + "=in/"], workdir, cache)
    assert summary.removed == 1
    assert sorted(files(workdir)) == ["in/a.txt", "in/c.txt"]


def test_one_stat_cache_range_query_per_prefix(
    source: Source, workdir: Path, tmp_path: Path
) -> None:
    """Looking for stale files costs one range query of keys per prefix input, whatever the
    number of files, and reads the entries of the files not planned now, not of every file."""
    seeded(source, [f"p/{i:03}.txt" for i in range(40)] + ["q/x.txt"])

    class Counting(StatCache):
        ranges = 0
        read: ClassVar[list[bytes]] = []

        def keys_under(self, directory: str | os.PathLike[str]) -> list[bytes]:
            Counting.ranges += 1
            return super().keys_under(directory)

        def lookup(self, keys: Sequence[bytes]) -> dict[bytes, CacheEntry]:
            Counting.read += keys
            return super().lookup(keys)

    with Counting(tmp_path / "sc.sqlite3", clock=later_clock) as cache:
        inputs = [source.url("p/") + "=p/", source.url("q/") + "=q/"]
        run(inputs, workdir, cache)
        Counting.ranges = 0
        for i in range(0, 40, 2):
            source.delete(f"p/{i:03}.txt")
        Counting.read = []
        _, plan_only = run(inputs, workdir, cache, dry_run=True)
        assert len(plan_only.removals) == 20
        assert Counting.ranges == 2
        # the 21 files still listed were looked up once, to decide them; only the 20 gone
        # were read again to find them stale
        stale_reads = [k for k in Counting.read if os.fsdecode(k).endswith(".txt")]
        assert len(stale_reads) == 21 + 20
        summary, _ = run(inputs, workdir, cache)
    assert summary.removed == 20


def test_a_file_linked_from_the_node_cache_is_removed_and_the_object_kept(
    source: Source, workdir: Path, cache: StatCache, tmp_path: Path
) -> None:
    """A stale file that is a hard link to a node-cache object goes; the object stays."""
    seeded(source, ["a.txt", "b.txt"])
    node = NodeCache(tmp_path / "node")
    run([source.url() + "=in/"], workdir, cache, node_cache=node)
    other = tmp_path / "other"
    other.mkdir()
    summary, _ = run([source.url() + "=in/"], other, cache, node_cache=node)
    assert summary.linked == 2  # a second task's links move the objects' ctime
    source.delete("b.txt")
    summary, _ = run([source.url() + "=in/"], workdir, cache, node_cache=node)
    assert summary.removed == 1
    assert sorted(files(workdir)) == ["in/a.txt"]
    assert (other / "in" / "b.txt").read_bytes() == b"content of b.txt\n"
    assert len(list((tmp_path / "node" / "objects").rglob("*"))) == 4  # 2 shards, 2 objects


def test_the_cli_dry_run_prints_the_removal_and_the_run_does_it(tmp_path: Path) -> None:
    """`taskkit stage --dry-run` prints 'remove DEST (staged from URL, which no longer
    exists)' and changes nothing; `taskkit stage --json` then removes it and counts it."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("a")
    (src / "old.csv").write_text("old")
    wd = tmp_path / "wd"
    env = {**os.environ, "TASKKIT_CACHE_DIR": str(tmp_path / "cache")}

    def stage(*options: str) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "taskkit", "stage", "--workdir", str(wd)]
        argv += ["-i", f"file://{src}/=samples/", *options]
        return subprocess.run(argv, env=env, capture_output=True, text=True, check=False)

    first = stage()
    assert first.returncode == 0, first.stderr
    (src / "old.csv").unlink()
    dry = stage("--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert (
        f"remove   samples/old.csv  (staged from {src}/old.csv, which no longer exists)"
        in dry.stdout.splitlines()
    )
    assert (wd / "samples" / "old.csv").exists()
    real = stage("--json")
    assert real.returncode == 0, real.stderr
    assert '"removed": 1' in real.stdout
    assert not (wd / "samples" / "old.csv").exists()


@pytest.fixture
def task(tmp_path: Path) -> Iterator[Task]:
    with opened_task(tmp_path) as opened:
        yield opened


def test_taskkit_run_removes_what_it_staged_from_a_deleted_blob(task: Task, tmp_path: Path) -> None:
    """`taskkit run -i PREFIX` stages with the same removal: after a blob is deleted (the
    work changes), the command no longer sees its file."""
    src = tmp_path / "inputs"
    src.mkdir()
    (src / "keep.txt").write_text("keep")
    (src / "gone.txt").write_text("gone")
    command = sh(f"ls in > {task.box / 'seen.txt'}")
    option = ("-i", f"file://{src}/=in/")
    assert task.run(command, *option).returncode == 0
    assert (task.box / "seen.txt").read_text().split() == ["gone.txt", "keep.txt"]
    (src / "gone.txt").unlink()
    again = task.run(command, *option)
    assert again.returncode == 0, again.stderr
    assert (task.box / "seen.txt").read_text().split() == ["keep.txt"]


@pytest.mark.azurite
def test_a_deleted_blob_is_removed_on_azurite(
    azurite: Azurite, azurite_container: str, workdir: Path, cache: StatCache
) -> None:
    """On Azure: a blob deleted from a staged prefix has its file removed (the dry run shows
    it first); a file the user added and a staged file the user changed are kept; the
    removal costs no request beyond the one listing."""
    names = ["p/a.txt", "p/b.txt", "p/sub/c.txt", "p/d.txt"]
    with azurite.blob_service_client() as service:
        container = service.get_container_client(azurite_container)
        for name in names:
            container.upload_blob(name, f"content of {name}\n".encode())
        url = f"az://{azurite_container}/p/=in/"
        options = {"storage_options": azurite.storage_options()}
        summary, _ = run([url], workdir, cache, **options)
        assert summary.transferred == 4
        (workdir / "in" / "mine.txt").write_text("mine")
        with (workdir / "in" / "d.txt").open("ab") as handle:
            handle.write(b"changed by the user\n")
        for name in ("p/b.txt", "p/sub/c.txt", "p/d.txt"):
            container.delete_blob(name)
    dry, the_plan = run([url], workdir, cache, dry_run=True, **options)
    assert dry.removed == 2
    assert sorted(e.dest for e in the_plan.removals) == ["in/b.txt", "in/sub/c.txt"]
    assert [e.source.url for e in the_plan.removals] == [
        f"az://{azurite_container}/p/b.txt",
        f"az://{azurite_container}/p/sub/c.txt",
    ]
    assert (workdir / "in" / "b.txt").exists()
    since = azurite.log_offset()
    summary, _ = run([url], workdir, cache, **options)
    assert azurite.operations(since) == ["Container_ListBlobFlatSegment"]
    assert summary.removed == 2
    assert sorted(files(workdir)) == ["in/a.txt", "in/d.txt", "in/mine.txt"]


def test_files_staged_before_a_kill_9_are_known_as_staged(tmp_path: Path) -> None:
    """taskkit run killed (SIGKILL) while one input is still being read, after another
    arrived: the one that arrived was recorded as staged within a moment, so once its blob
    is gone a later staging of that prefix removes it (the kill lost nothing it needs)."""
    import sys

    from http_fakes import Gate, http_server
    from runner_helpers import Task, kill_9_once

    from taskkit.content.statcache import StatCache, path_key

    task = Task(tmp_path)
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("a\n")
    staged = task.workdir / "in" / "a.txt"
    cache_file = Path(task.env["TASKKIT_CACHE_DIR"]) / "statcache-v1.sqlite3"

    def recorded() -> bool:
        if not cache_file.exists():
            return False
        with StatCache(cache_file) as cache:  # not immutable: it must see the WAL
            return bool(cache.lookup([path_key(staged)]))

    gate = Gate()
    with http_server(gate=gate) as (base, _):
        argv = task.argv(
            ["true"], "-j", "2", "-i", f"file://{src}/=in/", "-i", f"{base}/gate/g.bin=g.bin"
        )
        kill_9_once(
            argv,
            task.env,
            [
                (lambda: gate.reading.is_set() and staged.exists(), "a.txt in, g.bin held"),
                (recorded, "a.txt to be recorded as staged while g.bin is held"),
            ],
        )
    (src / "a.txt").unlink()
    (src / "b.txt").write_text("b\n")  # the prefix still lists something
    stage = [sys.executable, "-m", "taskkit", "stage", "--workdir", str(task.workdir)]
    again = task.taskkit([*stage, "-i", f"file://{src}/=in/"])
    assert again.returncode == 0, again.stderr
    assert "1 stale removed" in again.stdout
    assert not staged.exists()
