"""The node cache's bound: by default it keeps :data:`KEEP_FREE` of its filesystem free,
evicting least recently used objects no task links to, and partial downloads nobody is
downloading; ``max_bytes`` bounds it by size instead, partials included. Eviction never removes
the object being handed out, nor breaks a task's link, nor a partial being downloaded."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from taskkit.content.digest import hash_bytes
from taskkit.content.statcache import StatCache
from taskkit.transfer.nodecache import KEEP_FREE, NodeCache
from taskkit.transfer.stage import stage

MiB = 1024 * 1024


class Disk:
    """A stand-in for shutil.disk_usage: a filesystem of ``total`` bytes whose free space is
    what the cache's objects with a single link do not take, less ``used`` by others."""

    def __init__(self, cache: Path, total: int, used: int) -> None:
        self.cache, self.total, self.used = cache, total, used
        self.calls = 0

    def __call__(self, path: Path) -> tuple[int, int, int]:
        self.calls += 1
        held = sum(
            p.stat().st_size
            for p in [*(self.cache / "objects").rglob("*"), *(self.cache / "partial").rglob("*")]
            if p.is_file() and p.stat().st_nlink == 1
        )
        taken = self.used + held
        return self.total, taken, self.total - taken


def add(node: NodeCache, data: bytes, at_ns: int) -> Path:
    """An object of ``data`` in the cache, last used at ``at_ns``."""
    digest = hash_bytes(data)
    partial = node.root / "partial" / digest.hex
    partial.parent.mkdir(parents=True, exist_ok=True)
    partial.write_bytes(data)
    obj = node.publish(digest.hex, partial, digest)
    os.utime(obj, ns=(at_ns, obj.stat().st_mtime_ns))
    return obj


def objects(node: NodeCache) -> set[Path]:
    return {p for p in (node.root / "objects").rglob("*") if p.is_file()}


def test_the_default_bound_evicts_lru_until_the_share_is_free(tmp_path: Path) -> None:
    """Below the free share, the least recently used objects go, oldest first, until it is
    free again; more recent ones stay."""
    root = tmp_path / "cache"
    disk = Disk(root, total=100 * MiB, used=80 * MiB)
    node = NodeCache(root, disk_usage=disk)
    old, mid, new = (add(node, bytes([i]) * 4 * MiB, at) for i, at in ((1, 1), (2, 2), (3, 3)))
    assert old.exists()
    # 80 + 12 MiB used: 8 MiB free, 10 MiB wanted: the oldest object alone is enough.
    assert node.evict(keep=new) == 4 * MiB
    assert objects(node) == {mid, new}
    assert disk(root)[2] >= KEEP_FREE * disk.total


def test_nothing_is_walked_or_evicted_while_the_share_is_free(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With room to spare, eviction is one disk-usage call: no walk of the objects."""
    root = tmp_path / "cache"
    disk = Disk(root, total=100 * MiB, used=0)
    node = NodeCache(root, disk_usage=disk)
    kept = {add(node, bytes([i]) * MiB, i) for i in range(3)}
    monkeypatch.setattr(NodeCache, "_objects", lambda self: pytest.fail("walked the objects"))
    assert node.evict() == 0
    assert objects(node) == kept


def test_linked_objects_and_the_one_handed_out_are_never_evicted(tmp_path: Path) -> None:
    """An object a task links to frees nothing when deleted, so it stays (and the task's
    file with it); the object being handed out stays even when it is the oldest."""
    root = tmp_path / "cache"
    disk = Disk(root, total=10 * MiB, used=10 * MiB)  # full whatever is evicted
    node = NodeCache(root, disk_usage=disk)
    handed = add(node, b"h" * MiB, 1)
    linked = add(node, b"l" * MiB, 2)
    loose = add(node, b"x" * MiB, 3)
    task_file = tmp_path / "task" / "input.bin"
    task_file.parent.mkdir()
    os.link(linked, task_file)
    assert node.evict(keep=handed) == MiB
    assert objects(node) == {handed, linked}
    assert not loose.exists()
    assert task_file.read_bytes() == b"l" * MiB


def test_max_bytes_bounds_by_size_whatever_the_free_space(tmp_path: Path) -> None:
    """With max_bytes, the size bound holds: nothing goes while the objects fit, though the
    disk is full; once they do not, the oldest go, linked or not, and links live on."""
    root = tmp_path / "cache"
    disk = Disk(root, total=10 * MiB, used=10 * MiB)
    node = NodeCache(root, 3 * MiB, disk_usage=disk)
    first = add(node, b"1" * MiB, 1)
    task_file = tmp_path / "linked.bin"
    os.link(first, task_file)
    second = add(node, b"2" * MiB, 2)
    assert node.evict(keep=second) == 0
    assert disk.calls == 0
    third = add(node, b"3" * MiB, 3)
    fourth = add(node, b"4" * MiB, 4)
    assert node.evict(keep=fourth) == MiB
    assert objects(node) == {second, third, fourth}
    assert task_file.read_bytes() == b"1" * MiB


@pytest.fixture
def small_disk_mib() -> int:
    """This module's :func:`small_disk` is 8 MiB (the stand-in tests above run everywhere)."""
    return 8


def test_staging_through_a_default_cache_never_fills_its_disk(
    small_disk: Path, tmp_path: Path
) -> None:
    """Twelve 1 MiB inputs through a cache on an 8 MiB filesystem, with no max_bytes: every
    file is staged right, and after each stage the cache's filesystem keeps its free share."""
    src = tmp_path / "src"
    src.mkdir()
    node = NodeCache(small_disk / "cache")
    cache = StatCache(tmp_path / "sc.sqlite3")
    for i in range(12):
        data = os.urandom(MiB)
        (src / f"f{i}.bin").write_bytes(data)
        workdir = tmp_path / f"task{i}"  # another filesystem: the cache copies, links nothing
        workdir.mkdir()
        summary = stage([f"{src}/f{i}.bin=in.bin"], workdir=workdir, cache=cache, node_cache=node)
        assert summary.exit_error() is None, summary.problems
        assert (workdir / "in.bin").read_bytes() == data
        usage = os.statvfs(small_disk)
        assert usage.f_bavail * usage.f_frsize >= KEEP_FREE * usage.f_blocks * usage.f_frsize
    assert 1 <= len(objects(node)) < 8


def test_room_is_made_before_an_object_is_added(tmp_path: Path) -> None:
    """evict(incoming=N) frees enough that N more bytes still leave the free share."""
    root = tmp_path / "cache"
    disk = Disk(root, total=100 * MiB, used=80 * MiB)
    node = NodeCache(root, disk_usage=disk)
    first, second = (add(node, bytes([i]) * 4 * MiB, i) for i in (1, 2))
    # 88 MiB used, 12 free: 4 MiB more would leave 8 of the 10 wanted, so one object goes.
    assert node.evict(incoming=4 * MiB) == 4 * MiB
    assert objects(node) == {second}
    assert not first.exists()


def test_a_file_larger_than_the_fillable_share_bypasses_the_cache(tmp_path: Path) -> None:
    """fits(): without max_bytes, a file fits when it is within the share of the filesystem
    the cache may fill; a larger one is downloaded straight into place."""
    node = NodeCache(tmp_path / "cache", disk_usage=lambda path: (100 * MiB, 0, 100 * MiB))
    assert node.fits(90 * MiB)
    assert not node.fits(90 * MiB + 1)
    assert NodeCache(tmp_path / "c2", 10, disk_usage=lambda path: (0, 0, 0)).fits(10)


# -- partial downloads ---------------------------------------------------------------------------


def leave_partial(node: NodeCache, name: str, size: int, at_ns: int) -> Path:
    """What a download killed midway leaves: a partial of ``size`` bytes and its journal,
    last written at ``at_ns``, under the version key made from ``name``."""
    partial = node.partial(NodeCache.key(f"memory://{name}", "v1"))
    partial.parent.mkdir(parents=True, exist_ok=True)
    partial.write_bytes(b"p" * size)
    journal = Path(f"{partial}.chunks")
    journal.write_text("taskkit-partial-v1 header\n0 " + "0" * 32 + "\n")
    for path in (partial, journal):
        os.utime(path, ns=(at_ns, at_ns))
    return partial


def partials(node: NodeCache) -> set[str]:
    return {p.name for p in (node.root / "partial").iterdir()}


def test_partials_count_in_max_bytes_and_go_least_recently_touched_first(tmp_path: Path) -> None:
    """Orphan partials (and their journals) count in max_bytes and take their place in the
    least-recently-used order with the objects: the oldest goes first, whatever it is."""
    node = NodeCache(tmp_path / "cache", 4 * MiB)
    old = leave_partial(node, "old", MiB, 1)
    obj = add(node, b"o" * MiB, 2)
    newer = leave_partial(node, "newer", MiB, 3)
    recent = add(node, b"r" * MiB, 4)
    # 4 MiB and two journals held: 1 MiB more wants the oldest (the old partial) and the
    # next (the object) to go.
    freed = node.evict(incoming=MiB)
    assert freed >= 2 * MiB
    assert partials(node) == {newer.name, f"{newer.name}.chunks"}
    assert objects(node) == {recent}
    assert not obj.exists()
    assert not old.exists()


def test_partials_go_when_the_free_share_is_short(tmp_path: Path) -> None:
    """Without max_bytes, an orphan partial is evicted like an unlinked object while the
    filesystem's free share is short, and not while it is not."""
    root = tmp_path / "cache"
    disk = Disk(root, total=100 * MiB, used=80 * MiB)
    node = NodeCache(root, disk_usage=disk)
    partial = leave_partial(node, "killed", 4 * MiB, 1)
    kept = add(node, b"k" * 4 * MiB, 2)
    assert node.evict(incoming=0) == 0  # 88 MiB used: the share is free
    assert partial.exists()
    node.evict(incoming=4 * MiB)  # 4 MiB more would leave 8 of 10: the partial goes
    assert partials(node) == set()
    assert objects(node) == {kept}


HOLDER = """
import sys
from pathlib import Path
from taskkit.transfer.download import locked

with locked(Path(sys.argv[1])):
    print("locked", flush=True)
    sys.stdin.readline()
"""


def test_a_partial_being_downloaded_stays_until_its_downloader_is_killed(tmp_path: Path) -> None:
    """A partial whose version lock another process holds (it is downloading) is never
    evicted, even as the oldest; once that process is killed with SIGKILL (its lock dies
    with it), the next eviction removes it with its journal."""
    node = NodeCache(tmp_path / "cache", MiB)
    partial = leave_partial(node, "busy", 2 * MiB, 1)
    newer = add(node, b"n" * MiB, 2)
    lock = node.lock_path(partial.name)
    lock.parent.mkdir(parents=True, exist_ok=True)
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(lock)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "locked"
        node.evict(incoming=MiB)
        assert partials(node) == {partial.name, f"{partial.name}.chunks"}
        assert not newer.exists()  # what could go went
        holder.send_signal(signal.SIGKILL)
        assert holder.wait(timeout=20) == -signal.SIGKILL
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
        for stream in (holder.stdin, holder.stdout):
            if stream is not None:
                stream.close()
    assert node.evict() >= 2 * MiB
    assert partials(node) == set()


def test_a_partial_the_run_wants_goes_only_after_every_object(tmp_path: Path) -> None:
    """A partial of a version the staging run is about to resume (``wanted``) stays while
    objects can make the room, even when it is the oldest; it goes only when they cannot."""
    node = NodeCache(tmp_path / "cache", 3 * MiB + 4096)  # 4 KiB: room for the journal
    wanted = leave_partial(node, "wanted", MiB, 1)
    first, second = add(node, b"1" * MiB, 2), add(node, b"2" * MiB, 3)
    node.evict(incoming=MiB, wanted={wanted.name})
    assert partials(node) == {wanted.name, f"{wanted.name}.chunks"}
    assert objects(node) == {second}
    assert not first.exists()
    node.evict(incoming=3 * MiB, wanted={wanted.name})
    assert partials(node) == set()
    assert objects(node) == set()


def test_room_is_made_for_every_addition_in_flight(tmp_path: Path) -> None:
    """Two additions at once in one process: the second makes room for both (the first has
    not reserved its blocks yet), not only for itself, so the two do not share the space."""
    root = tmp_path / "cache"
    disk = Disk(root, total=100 * MiB, used=80 * MiB)
    node = NodeCache(root, disk_usage=disk)
    old, mid, new = (add(node, bytes([i]) * 4 * MiB, i) for i in (1, 2, 3))
    # 92 MiB used, 8 free, 10 wanted: 4 MiB more needs 6 MiB freed, so two objects go.
    with node.adding("a" * 32, 4 * MiB) as first:
        assert objects(node) == {new}
        # 16 MiB free; the first addition's 4 MiB are not on disk yet: 8 MiB more needs 2.
        with node.adding("b" * 32, 4 * MiB):
            assert objects(node) == set()
        first.write_bytes(b"f" * 4 * MiB)  # reserved: counted by the disk, not twice
        assert node.evict(incoming=0) == 0
    assert not old.exists()
    assert not mid.exists()


def test_temporary_links_of_a_killed_process_are_swept_and_a_live_ones_kept(
    tmp_path: Path,
) -> None:
    """A process killed while linking from the node cache leaves ``.taskkit-<hash>.<pid>.<t>``
    beside the file: the next stage into that directory removes it (its process is gone), and
    leaves the temporary link of a process still running, and every other file, alone."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("a.txt", "b.txt"):
        (src / name).write_text(name)
    node = NodeCache(tmp_path / "node")
    with StatCache.open(tmp_path / "cache") as cache:
        first = stage([f"file://{src}/=in/"], workdir=tmp_path / "w1", cache=cache, node_cache=node)
        assert first.exit_error() is None
        dest = tmp_path / "w2" / "in"
        dest.mkdir(parents=True)
        killed = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        killed.send_signal(signal.SIGKILL)
        killed.wait()
        running = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        try:
            gone = dest / f".taskkit-{'0' * 16}.{killed.pid}.140000000000001"
            live = dest / f".taskkit-{'1' * 16}.{running.pid}.140000000000001"
            mine = dest / ".taskkit-notes.txt"  # not of that shape: never ours to remove
            for path in (gone, live, mine):
                path.write_text("left")
            summary = stage(
                [f"file://{src}/=in/"], workdir=tmp_path / "w2", cache=cache, node_cache=node
            )
        finally:
            running.kill()
            running.wait()
    assert summary.linked == 2
    assert not gone.exists()
    assert live.read_text() == "left"
    assert mine.read_text() == "left"
    assert (dest / "a.txt").read_text() == "a.txt"
