"""taskkit.transfer.stage: plans carried out atomically, per-file failures, the node cache on
disk."""

from __future__ import annotations

import errno
import logging
import os
import random
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from observing import OnPlan
from store_counts import counting_stores

from taskkit.content.digest import CHUNK_SIZE, Digest, hash_bytes
from taskkit.content.statcache import RACY_WINDOW_NS, StatCache
from taskkit.exceptions import DataError, IOFailure, TaskFailure
from taskkit.storage.stores import Stores
from taskkit.transfer.nodecache import OBJECT_MODE, NodeCache
from taskkit.transfer.stage import execute, planned, stage
from taskkit.transfer.stage_plan import Plan, PlanEntry, parse_input, plan

MiB = 1024 * 1024
_TASKKIT = [sys.executable, "-m", "taskkit"]


def later_clock() -> int:
    """A stat-cache clock past the racy window of every file written by the test."""
    return time.time_ns() + 10 * RACY_WINDOW_NS


def make_source(root: Path, sizes: dict[str, int], seed: int = 0) -> dict[str, bytes]:
    """Files of the given sizes (random bytes) under ``root``; returns their contents."""
    rng = random.Random(seed)
    contents = {}
    for name, size in sizes.items():
        data = rng.randbytes(size)
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
        contents[name] = data
    return contents


def leftovers(root: Path) -> list[Path]:
    """Partial files and journals anywhere below ``root``."""
    return sorted(p for p in root.rglob("*") if p.name.startswith(".taskkit-"))


SIZES = {
    "empty": 0,
    "one": 1,
    "exact/chunk.bin": CHUNK_SIZE,
    "exact/chunk-plus-one.bin": CHUNK_SIZE + 1,
    "big/twenty.bin": 20 * MiB,
}


@pytest.fixture
def source(tmp_path: Path) -> tuple[Path, dict[str, bytes]]:
    src = tmp_path / "src"
    return src, make_source(src, SIZES)


def plan_prefix(src: Path, workdir: Path, stores: Stores, dest: str = "in/", **kw: object) -> Plan:
    return plan([parse_input(f"{src}/={dest}")], workdir=workdir, stores=stores, **kw)  # type: ignore[arg-type]


def test_a_cold_stage_writes_identical_files_and_counts_them(
    source: tuple[Path, dict[str, bytes]], stores: Stores, workdir: Path
) -> None:
    """Every file arrives byte for byte (0 B, 1 B, 8 MiB, 8 MiB + 1, 20 MiB); nothing partial is
    left; the summary counts five downloads and every byte."""
    src, contents = source
    seen_bytes: list[int] = []
    seen_files: list[tuple[str, TaskFailure | None]] = []
    the_plan = plan_prefix(src, workdir, stores)
    assert {e.action for e in the_plan.entries} == {"download"}
    summary = execute(
        the_plan,
        jobs=4,
        on_bytes=lambda n, reused: seen_bytes.append(n),
        on_file=lambda entry, error: seen_files.append((entry.dest, error)),
    )
    for name, data in contents.items():
        assert (workdir / "in" / name).read_bytes() == data, name
    assert leftovers(workdir) == []
    total = sum(SIZES.values())
    assert (summary.files, summary.transferred, summary.skipped, summary.linked) == (5, 5, 0, 0)
    assert (summary.failed, summary.resumed, summary.problems) == (0, 0, [])
    assert summary.bytes_transferred == total
    assert summary.bytes_reused == 0
    assert summary.exit_error() is None
    assert sum(seen_bytes) == total
    assert sorted(seen_files) == sorted((f"in/{n}", None) for n in SIZES)


def test_a_second_run_skips_everything(
    source: tuple[Path, dict[str, bytes]], stores: Stores, workdir: Path, tmp_path: Path
) -> None:
    """Planned again after staging (with trusted stat-cache entries), every file is a skip:
    nothing is read or rewritten."""
    src, _ = source
    with StatCache.open(tmp_path / "cache", clock=later_clock) as cache:
        first = execute(plan_prefix(src, workdir, stores, cache=cache), cache=cache)
        assert first.transferred == 5
        before = {p: os.stat(p) for p in (workdir / "in").rglob("*") if p.is_file()}
        again = plan_prefix(src, workdir, stores, cache=cache)
        assert [e.action for e in again.entries] == ["skip"] * 5
        summary = execute(again, cache=cache)
        entry = cache.get(workdir / "in" / "one", os.stat(workdir / "in" / "one"))
    assert (summary.files, summary.skipped, summary.transferred, summary.failed) == (5, 5, 0, 0)
    assert summary.bytes_transferred == 0
    after = {p: os.stat(p) for p in before}
    assert all(
        (before[p].st_ino, before[p].st_mtime_ns) == (after[p].st_ino, after[p].st_mtime_ns)
        for p in before
    )
    assert entry is not None
    assert entry.digest == hash_bytes(source[1]["one"])
    assert entry.source == f"file://{src}/one"


def test_files_found_by_hashing_are_unchanged_since_staged_on_the_next_run(
    source: tuple[Path, dict[str, bytes]], stores: Stores, workdir: Path, tmp_path: Path
) -> None:
    """Files whose entries were racy are hashed while planning and skipped as the same; the
    run records their provenance then, so the next run skips them as staged from this very
    version (trusted without a read). A DEST file that differs is staged, never vouched for."""
    src, contents = source
    with StatCache.open(tmp_path / "cache") as racy:  # recorded as they are written: racy
        execute(plan_prefix(src, workdir, stores, cache=racy), cache=racy)
    (workdir / "in" / "one").write_bytes(b"x")  # same size, other bytes, while racy too
    with StatCache.open(tmp_path / "cache", clock=later_clock) as cache:
        hashed = plan_prefix(src, workdir, stores, cache=cache)
        reasons = {e.dest: (e.action, e.reason) for e in hashed.entries}
        assert reasons.pop("in/one")[0] == "download"
        assert set(reasons.values()) == {("skip", "same digest as the source (hashed)")}
        execute(hashed, cache=cache)
        again = plan_prefix(src, workdir, stores, cache=cache)
    assert {(e.action, e.reason) for e in again.entries} == {
        ("skip", "unchanged since it was staged from this version")
    }
    assert (workdir / "in" / "one").read_bytes() == contents["one"]


def test_a_dry_run_summary_reports_what_would_happen(
    source: tuple[Path, dict[str, bytes]], stores: Stores, workdir: Path
) -> None:
    """planned() counts the plan without touching anything."""
    src, _ = source
    summary = planned(plan_prefix(src, workdir, stores))
    assert summary.dry_run
    assert (summary.files, summary.transferred, summary.bytes_transferred) == (
        5,
        5,
        sum(SIZES.values()),
    )
    assert list(workdir.iterdir()) == []


# -- the node cache ----------------------------------------------------------------------------

SMALL = {"empty": 0, "a.txt": 1000, "large.bin": CHUNK_SIZE + 4096}


def test_a_second_workdir_links_from_the_node_cache(tmp_path: Path, stores: Stores) -> None:
    """Another task's workdir gets 'link': a hard link to the read-only object, no download."""
    src = tmp_path / "src"
    contents = make_source(src, SMALL)
    node = NodeCache(tmp_path / "node")
    work1, work2 = tmp_path / "w1", tmp_path / "w2"
    work1.mkdir()
    work2.mkdir()
    first = execute(plan_prefix(src, work1, stores, node_cache=node), node_cache=node)
    assert (first.transferred, first.linked, first.failed) == (3, 0, 0)

    second_plan = plan_prefix(src, work2, stores, node_cache=node)
    assert [e.action for e in second_plan.entries] == ["link"] * 3
    second = execute(second_plan, node_cache=node)
    assert (second.linked, second.transferred, second.bytes_transferred) == (3, 0, 0)
    for name, data in contents.items():
        staged = work2 / "in" / name
        assert staged.read_bytes() == data
        obj = node.object_path(hash_bytes(data))
        assert os.stat(staged).st_ino == os.stat(obj).st_ino
        assert stat.S_IMODE(os.stat(obj).st_mode) == OBJECT_MODE
    assert list((tmp_path / "node" / "partial").iterdir()) == []
    assert leftovers(work2) == []


def _object(node: NodeCache, data: bytes, tmp_path: Path) -> Path:
    partial = tmp_path / f"partial-{len(data)}"
    partial.write_bytes(data)
    digest = hash_bytes(data)
    return node.publish(NodeCache.key(f"memory://{len(data)}", "v1"), partial, digest)


def test_eviction_keeps_the_most_recently_used_objects(tmp_path: Path) -> None:
    """Over max_bytes, the objects with the oldest access times go until the rest fit."""
    node = NodeCache(tmp_path / "node", max_bytes=250)
    objects = [_object(node, bytes([i]) * (100 + i), tmp_path) for i in range(4)]
    base = 1_700_000_000 * 10**9
    order = [2, 0, 3, 1]  # objects[2] is the least recently used, objects[1] the most
    for rank, i in enumerate(order):
        os.utime(objects[i], ns=(base + rank * 10**9, base))
    freed = node.evict()
    assert [p.exists() for p in objects] == [False, True, False, True]
    assert freed == 102 + 100


def test_eviction_spares_the_object_being_handed_out(tmp_path: Path) -> None:
    """evict(keep=...) never deletes that object, even when it is the oldest."""
    node = NodeCache(tmp_path / "node", max_bytes=150)
    old, new = (_object(node, bytes([i]) * 100, tmp_path) for i in (1, 2))
    base = 1_700_000_000 * 10**9
    os.utime(old, ns=(base, base))
    os.utime(new, ns=(base + 10**9, base))
    node.evict(keep=old)
    assert (old.exists(), new.exists()) == (True, False)


def test_a_cache_without_max_bytes_and_room_to_spare_never_evicts(tmp_path: Path) -> None:
    """max_bytes=None on a filesystem well above its free share: evict() frees nothing."""
    node = NodeCache(tmp_path / "node", disk_usage=lambda path: (100, 10, 90))
    obj = _object(node, b"x" * 1000, tmp_path)
    assert node.evict() == 0
    assert obj.exists()


def test_staging_through_a_bounded_cache_stays_within_it(tmp_path: Path, stores: Stores) -> None:
    """After staging files totalling more than max_bytes, the cache holds at most max_bytes,
    and every staged file is complete anyway."""
    src = tmp_path / "src"
    contents = make_source(src, {f"f{i}": 1000 for i in range(5)})
    node = NodeCache(tmp_path / "node", max_bytes=2500)
    work = tmp_path / "w"
    work.mkdir()
    summary = execute(plan_prefix(src, work, stores, node_cache=node), jobs=1, node_cache=node)
    assert summary.failed == 0
    kept = [p for p in (tmp_path / "node" / "objects").rglob("*") if p.is_file()]
    assert 1 <= len(kept) <= 2
    for name, data in contents.items():
        assert (work / "in" / name).read_bytes() == data


def test_an_altered_object_is_discarded_and_fetched_again(
    tmp_path: Path, stores: Stores, caplog: pytest.LogCaptureFixture
) -> None:
    """An object whose bytes no longer match its name is deleted with a warning and the file
    is downloaded afresh; the new task gets the right bytes."""
    src = tmp_path / "src"
    contents = make_source(src, {"f.bin": 4096})
    node = NodeCache(tmp_path / "node")
    work1, work2 = tmp_path / "w1", tmp_path / "w2"
    work1.mkdir()
    work2.mkdir()
    with StatCache.open(tmp_path / "cache", clock=later_clock) as cache:
        execute(
            plan_prefix(src, work1, stores, node_cache=node, cache=cache),
            cache=cache,
            node_cache=node,
        )
        obj = node.object_path(hash_bytes(contents["f.bin"]))
        os.chmod(obj, 0o644)
        with open(obj, "r+b") as f:
            f.write(b"\xff" * 4096)
        assert obj.stat().st_size == 4096
        the_plan = plan_prefix(src, work2, stores, node_cache=node, cache=cache)
        assert [e.action for e in the_plan.entries] == ["link"]
        with caplog.at_level(logging.WARNING, logger="taskkit"):
            summary = execute(the_plan, cache=cache, node_cache=node)
    assert (summary.failed, summary.linked, summary.transferred) == (0, 0, 1)
    assert (work2 / "in" / "f.bin").read_bytes() == contents["f.bin"]
    assert obj.read_bytes() == contents["f.bin"]
    assert stat.S_IMODE(obj.stat().st_mode) == OBJECT_MODE
    assert any("was altered" in r.getMessage() for r in caplog.records)


# -- failures ----------------------------------------------------------------------------------


def _with_expected(the_plan: Plan, wrong: set[str]) -> Plan:
    entries: list[PlanEntry] = [
        e._replace(expected=Digest(b"\0" * 16)) if e.dest in wrong else e for e in the_plan.entries
    ]
    return the_plan._replace(entries=tuple(entries))


@pytest.mark.parametrize("via_node_cache", [False, True], ids=["direct", "node-cache"])
def test_a_digest_mismatch_fails_that_file_and_leaves_nothing(
    tmp_path: Path, stores: Stores, workdir: Path, via_node_cache: bool
) -> None:
    """Bytes that do not match the declared digest: DataError (65) for that file, no file at
    its final path, no partial or journal; the other file is still staged."""
    src = tmp_path / "src"
    contents = make_source(src, {"small": 100, "large": CHUNK_SIZE + 10, "good": 50})
    node = NodeCache(tmp_path / "node") if via_node_cache else None
    the_plan = _with_expected(
        plan_prefix(src, workdir, stores, node_cache=node), {"in/small", "in/large"}
    )
    summary = execute(the_plan, node_cache=node)
    assert summary.failed == 2
    assert sorted(p.what for p in summary.problems) == [str(src / "large"), str(src / "small")]
    for problem in summary.problems:
        assert isinstance(problem.error, DataError)
        assert problem.error.exit_code == 65
        assert "declares xxh3-128:" + "0" * 32 in str(problem.error)
    error = summary.exit_error()
    assert isinstance(error, DataError)
    assert not (workdir / "in" / "small").exists()
    assert not (workdir / "in" / "large").exists()
    assert (workdir / "in" / "good").read_bytes() == contents["good"]
    assert leftovers(workdir) == []
    if node is not None:
        assert list((tmp_path / "node" / "partial").iterdir()) == []


@pytest.mark.parametrize("size", [10 * MiB, 6 * MiB], ids=["chunked", "single-chunk"])
def test_a_full_disk_is_an_io_failure_and_leaves_no_partial(
    small_disk: Path, tmp_path: Path, stores: Stores, size: int
) -> None:
    """Staging more than fits: IOFailure (74) saying 'no space', and no partial file left."""
    src = tmp_path / "src"
    make_source(src, {"big.bin": size})
    the_plan = plan([parse_input(f"{src}/big.bin")], workdir=small_disk, stores=stores)
    summary = execute(the_plan)
    assert summary.failed == 1
    (problem,) = summary.problems
    assert isinstance(problem.error, IOFailure)
    assert problem.error.exit_code == 74
    assert "no space" in str(problem.error).lower()
    assert list(small_disk.iterdir()) == []


def test_stage_plans_then_executes_and_a_dry_run_changes_nothing(
    tmp_path: Path, workdir: Path
) -> None:
    """stage(): a dry run reports the plan and writes nothing; the real run stages it."""
    src = tmp_path / "src"
    contents = make_source(src, {"a": 10, "d/b": 20})
    plans: list[Plan] = []
    with StatCache.open(tmp_path / "cache", clock=later_clock) as cache:
        dry = stage(
            [f"{src}/=in/"],
            workdir=workdir,
            cache=cache,
            dry_run=True,
            observer=OnPlan(plans.append),
        )
        assert dry.dry_run
        assert (dry.files, dry.transferred, dry.bytes_transferred) == (2, 2, 30)
        assert list(workdir.iterdir()) == []
        assert [e.action for e in plans[0].entries] == ["download", "download"]
        real = stage([f"{src}/=in/"], workdir=workdir, cache=cache)
    assert (real.dry_run, real.transferred, real.failed) == (False, 2, 0)
    for name, data in contents.items():
        assert (workdir / "in" / name).read_bytes() == data


# -- a full disk after the node cache, the action done -----------------------------------------


def test_relinking_the_object_a_file_already_is_leaves_no_temporary_name(
    tmp_path: Path, stores: Stores
) -> None:
    """The source rewritten with the same bytes (a new version, the same content): the file
    is fetched again into the cache, whose object it already is a link to; the rename onto
    that same file does nothing, and its temporary name must not stay in DEST."""
    src = tmp_path / "src"
    contents = make_source(src, {"a.txt": 1000})
    node = NodeCache(tmp_path / "node")
    work = tmp_path / "w"
    work.mkdir()
    first = execute(plan_prefix(src, work, stores, node_cache=node), node_cache=node)
    assert first.failed == 0
    (src / "a.txt").write_bytes(contents["a.txt"])  # same bytes, a new version
    os.utime(src / "a.txt", ns=(1, 1))
    again = plan_prefix(src, work, stores, node_cache=node)
    assert [e.action for e in again.entries] != ["skip"]
    assert execute(again, node_cache=node).failed == 0
    assert sorted(p.name for p in (work / "in").iterdir()) == ["a.txt"]
    assert leftovers(work) == []


def test_a_full_dest_after_the_node_cache_names_dest_and_its_filesystem(
    small_disk: Path, tmp_path: Path, stores: Stores
) -> None:
    """The node cache (another disk) takes the file and the copy into a full DEST fails:
    IOFailure (74) saying it was going to DEST and naming DEST's filesystem (the tmpfs), not
    the cache's object or disk; nothing left in DEST; the object stays in the cache."""
    src = tmp_path / "src"
    contents = make_source(src, {"six.bin": 6 * MiB})
    node = NodeCache(tmp_path / "node")
    the_plan = plan(
        [parse_input(f"{src}/six.bin=six.bin")], workdir=small_disk, stores=stores, node_cache=node
    )
    summary = execute(the_plan, node_cache=node)
    (problem,) = summary.problems
    message = str(problem.error)
    assert isinstance(problem.error, IOFailure)
    assert problem.error.exit_code == 74
    assert message.startswith(f"cannot stage {str(src / 'six.bin')!r} to 'six.bin': "), message
    assert f"no space left on device: the filesystem {str(small_disk)!r} (tmpfs" in message
    assert str(tmp_path / "node") not in message
    assert list(small_disk.iterdir()) == []
    assert node.object_path(hash_bytes(contents["six.bin"])).read_bytes() == contents["six.bin"]


def test_a_link_into_a_full_dest_names_dest_not_the_object(
    tmp_path: Path, stores: Stores, workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A hard link from the node cache that fails for lack of space (the kernel's error names
    the object first): the message names DEST's path and says it was going to DEST."""
    src = tmp_path / "src"
    make_source(src, {"f.bin": 1000})
    node = NodeCache(tmp_path / "node")

    def no_room(source: Path, target: Path) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(source), None, str(target))

    monkeypatch.setattr(os, "link", no_room)
    summary = execute(plan_prefix(src, workdir, stores, node_cache=node), node_cache=node)
    (problem,) = summary.problems
    message = str(problem.error)
    assert isinstance(problem.error, IOFailure)
    assert message.startswith(f"cannot stage {str(src / 'f.bin')!r} to 'in/f.bin': "), message
    assert f"cannot link it from the node cache to {str(workdir / 'in' / 'f.bin')!r}" in message
    assert "no space left on device: the filesystem " in message
    assert str(tmp_path / "node") not in message
    assert leftovers(workdir) == []


def test_each_file_done_is_told_with_the_action_done_not_the_one_planned(
    tmp_path: Path, stores: Stores
) -> None:
    """on_file (what -v prints) gets the action that was done: a planned 'link' whose object
    was evicted before it was handed out is a 'download', as the summary counts it."""
    src = tmp_path / "src"
    contents = make_source(src, {"a": 1000, "b": 2000})
    node = NodeCache(tmp_path / "node")
    work1, work2 = tmp_path / "w1", tmp_path / "w2"
    work1.mkdir()
    work2.mkdir()
    execute(plan_prefix(src, work1, stores, node_cache=node), node_cache=node)
    the_plan = plan_prefix(src, work2, stores, node_cache=node)
    assert [e.action for e in the_plan.entries] == ["link", "link"]
    node.object_path(hash_bytes(contents["a"])).unlink()  # evicted after the plan
    told: dict[str, str] = {}
    summary = execute(
        the_plan,
        node_cache=node,
        on_file=lambda entry, error: told.__setitem__(entry.dest, entry.action),
    )
    assert told == {"in/a": "download", "in/b": "link"}
    assert (summary.transferred, summary.linked) == (1, 1)


def test_a_partial_in_the_node_cache_the_plan_resumes_outlives_the_room_made_for_others(
    tmp_path: Path, stores: Stores
) -> None:
    """A run that will resume a node-cache partial ('resume' planned) makes room for its other
    files from the cache's objects first, even from one used more recently than the partial
    was written: that object goes, not the partial; the cache ends within max_bytes."""
    src = tmp_path / "src"
    contents = make_source(src, {"a.bin": 1000, "z.bin": 1000})
    node = NodeCache(tmp_path / "node", max_bytes=2100)
    work = tmp_path / "w"
    work.mkdir()
    the_plan = plan_prefix(src, work, stores, node_cache=node)
    z = next(e for e in the_plan.entries if e.dest == "in/z.bin")
    partial = node.partial(NodeCache.key(z.identity, z.source.version))
    partial.parent.mkdir(parents=True)
    partial.write_bytes(b"\0" * 1000)  # a download of z.bin killed midway
    other = _object(node, b"o" * 1000, tmp_path)
    old, recent = 1_700_000_000 * 10**9, time.time_ns() + 3600 * 10**9
    os.utime(partial, ns=(old, old))
    os.utime(other, ns=(recent, old))  # used after anything this run adds
    the_plan = plan_prefix(src, work, stores, node_cache=node)
    assert [e.action for e in the_plan.entries] == ["download", "resume"]
    summary = execute(the_plan, jobs=1, node_cache=node)
    assert summary.failed == 0
    assert not other.exists()
    for name, data in contents.items():
        assert (work / "in" / name).read_bytes() == data
    objects = [p for p in (tmp_path / "node" / "objects").rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in objects) <= 2100


def test_given_stores_are_used_and_left_open(
    source: tuple[Path, dict[str, bytes]],
    stores: Stores,
    workdir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """stage(stores=...) opens no Stores of its own, lists and reads through the given one and
    leaves it open; without it, stage opens one and closes it once."""
    src, contents = source
    counts = counting_stores(monkeypatch)
    summary = stage([f"{src}/=in/"], workdir=workdir, stores=stores)
    assert summary.transferred == len(contents)
    assert counts.opened == []
    assert counts.users() == {id(stores)}
    assert counts.closes[id(stores)] == 0
    counts.reset()
    again = stage([f"{src}/=again/"], workdir=workdir)
    assert again.transferred == len(contents)
    assert len(counts.opened) == 1
    assert counts.closed_once_each()
    assert counts.users() == {id(counts.opened[0])}


def test_a_local_source_rewritten_with_its_old_size_and_mtime_is_staged_again(
    tmp_path: Path,
) -> None:
    """A file:// source rewritten in place at the same size, its mtime put back, is another
    version (its ctime moved): staged again, never skipped as the version staged before,
    whether the stat-cache's entry of the staged file is still racy or not."""
    src = tmp_path / "src"
    src.mkdir()
    source = src / "f.txt"
    with StatCache.open(tmp_path / "cache", clock=lambda: time.time_ns() + RACY_WINDOW_NS) as cache:
        for content in (b"content-0001\n", b"CONTENT-0001\n", b"content-0002\n"):
            source.write_bytes(content)
            os.utime(source, ns=(1_577_836_800_000_000_000,) * 2)  # the same mtime each time
            summary = stage([f"file://{src}/=in/"], workdir=tmp_path / "w", cache=cache)
            assert summary.exit_error() is None
            assert (tmp_path / "w" / "in" / "f.txt").read_bytes() == content


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL])
def test_a_local_stage_interrupted_mid_way_leaves_whole_files_and_the_next_finishes(
    tmp_path: Path, sig: signal.Signals
) -> None:
    """A local source is staged one file at a time by the main thread: Ctrl-C (one line, 130),
    SIGTERM (one line, 143; nothing of taskkit's left beside the files) or kill -9, part-way
    through thousands of files, leaves every file at its final path whole, and the next run
    stages the rest and ends with the tree identical to the source."""
    from runner_helpers import wait_for

    src, work = tmp_path / "src", tmp_path / "work"
    expected = {}
    for i in range(6000):
        data = i.to_bytes(4, "little") * (i % 50 + 1)
        expected[f"d{i % 6}/f{i:05d}"] = data
        (src / f"d{i % 6}").mkdir(parents=True, exist_ok=True)
        (src / f"d{i % 6}" / f"f{i:05d}").write_bytes(data)
    env = {**os.environ, "TASKKIT_CACHE_DIR": str(tmp_path / "cache")}
    argv = [sys.executable, "-m", "taskkit", "stage", "-i", f"file://{src}/=dst/"]
    argv += ["--workdir", str(work)]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:

        def under_way() -> bool:
            return sum(len(os.listdir(d)) for d in (work / "dst").glob("d*")) >= 200

        wait_for(lambda: (work / "dst").is_dir() and under_way(), "200 files staged", 60)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
        proc.wait()
    if sig == signal.SIGKILL:
        assert proc.returncode == -signal.SIGKILL
    else:
        said = "interrupted" if sig == signal.SIGINT else "terminated (SIGTERM)"
        assert (proc.returncode, err.decode()) == (128 + sig, f"taskkit: error: {said}\n")
    # Each file is written without a name and named once whole: whatever the signal, even
    # kill -9, nothing of taskkit's is left beside the files.
    assert list(work.rglob(".taskkit-*")) == []
    final = {
        str(p.relative_to(work / "dst")): p.read_bytes()
        for p in (work / "dst").rglob("f*")
        if p.is_file()
    }
    assert 200 <= len(final) < len(expected)  # really stopped part-way
    assert all(expected[name] == data for name, data in final.items())  # each one whole
    again = subprocess.run(argv, capture_output=True, env=env, timeout=120, check=False)
    assert (again.returncode, again.stderr) == (0, b"")
    staged = {
        str(p.relative_to(work / "dst")): p.read_bytes()
        for p in (work / "dst").rglob("*")
        if p.is_file()
    }
    assert staged == expected  # nothing partial or temporary left beside them either


def test_a_file_put_at_its_destination_after_planning_is_replaced_whole(tmp_path: Path) -> None:
    """A small file planned as not present, but put there by someone else before it is
    staged (another stage, the user): it is not written over through its nameless copy,
    which cannot take a name in use, but replaced whole the partial's way; nothing left."""
    src = tmp_path / "src"
    contents = make_source(src, {"a/x.bin": 100, "a/y.bin": 0, "b/z.bin": 3000})
    work = tmp_path / "w"
    with StatCache.open(tmp_path / "cache", clock=later_clock) as cache:
        stores = Stores()
        planned_ = plan_prefix(src, work, stores, cache=cache)
        assert {e.reason for e in planned_.entries} == {"not present"}
        for name in contents:
            (work / "in" / name).parent.mkdir(parents=True, exist_ok=True)
            (work / "in" / name).write_bytes(b"someone else's")
        summary = execute(planned_, cache=cache)
    assert summary.exit_error() is None
    assert summary.transferred == 3
    assert {n: (work / "in" / n).read_bytes() for n in contents} == contents
    assert leftovers(work) == []


@pytest.mark.parametrize("fails", ["open", "name"])
def test_where_a_nameless_file_cannot_be_made_or_named_the_partial_way_stages_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fails: str
) -> None:
    """On a filesystem without O_TMPFILE, or where /proc cannot name a descriptor, small
    files are staged through a partial and a rename, as whole and checked."""
    import taskkit.transfer.stage as stage_module

    if fails == "open":
        monkeypatch.setattr(stage_module, "open_nameless", lambda directory, make=True: None)
    else:
        monkeypatch.setattr(stage_module, "name_nameless", lambda fd, path: False)
    src = tmp_path / "src"
    contents = make_source(src, {f"d{i % 3}/f{i}": i * 37 for i in range(30)})
    work = tmp_path / "w"
    with StatCache.open(tmp_path / "cache", clock=later_clock) as cache:
        summary = stage([f"file://{src}/=in/"], workdir=work, cache=cache)
    assert summary.exit_error() is None
    assert summary.transferred == 30
    assert {n: (work / "in" / n).read_bytes() for n in contents} == contents
    assert leftovers(work) == []


def test_a_directory_at_a_small_files_destination_fails_that_file_and_leaves_no_partial(
    tmp_path: Path,
) -> None:
    """A directory where a file of one request goes: that file fails (74, 'is a directory'),
    the directory is untouched, the other files are staged, and no partial is left, run
    after run."""
    src = tmp_path / "src"
    contents = make_source(src, {"a/x.bin": 100, "a/y.bin": 200})
    work = tmp_path / "w"
    (work / "in" / "a" / "x.bin" / "keep").mkdir(parents=True)
    with StatCache.open(tmp_path / "cache", clock=later_clock) as cache:
        for _ in range(2):
            summary = stage([f"file://{src}/=in/"], workdir=work, cache=cache)
            error = summary.exit_error()
            assert isinstance(error, IOFailure)
            assert "is a directory" in str(error)
            assert (work / "in" / "a" / "y.bin").read_bytes() == contents["a/y.bin"]
            assert (work / "in" / "a" / "x.bin" / "keep").is_dir()
            assert leftovers(work) == []


def test_an_interruption_just_after_a_partial_is_created_leaves_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A signal landing between the creation of a small file's partial and the code that
    removes it on an interruption (here: Ctrl-C raised as the partial is claimed) leaves no
    partial: the interrupted file's partial is dropped, unless someone holds it locked."""
    import taskkit.transfer.stage as stage_module

    real_claim = stage_module.claim

    def interrupted(partial: str) -> int | None:
        fd = real_claim(partial)
        assert fd is not None
        os.close(fd)
        raise KeyboardInterrupt

    monkeypatch.setattr(stage_module, "claim", interrupted)
    src = tmp_path / "src"
    make_source(src, {"a/x.bin": 100})
    work = tmp_path / "w"
    (work / "in" / "a").mkdir(parents=True)
    (work / "in" / "a" / "x.bin").write_bytes(b"older")  # replaced: the partial's way
    with (
        StatCache.open(tmp_path / "cache", clock=later_clock) as cache,
        pytest.raises(KeyboardInterrupt),
    ):
        stage([f"file://{src}/=in/"], workdir=work, cache=cache)
    assert leftovers(work) == []
    assert (work / "in" / "a" / "x.bin").read_bytes() == b"older"


def test_two_stages_of_one_prefix_into_one_workdir_at_once_both_finish(tmp_path: Path) -> None:
    """Two processes stage the same local prefix into the same working directory at the same
    time, three times over: both exit 0 every time, and the tree is the source's, with
    nothing of taskkit's beside it. (A partial one process created and the other wrote and
    renamed into place must never be written again by the first: it is a final file.)"""
    src = tmp_path / "src"
    expected = {}
    for i in range(4000):
        name = f"d{i % 4}/f{i:05d}"
        expected[name] = i.to_bytes(4, "little") * (i % 40 + 1)
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_bytes(expected[name])
    for round_ in range(3):
        work = tmp_path / f"work{round_}"
        procs = [
            subprocess.Popen(
                [*_TASKKIT, "stage", "-i", f"file://{src}/=dst/", "--workdir", str(work)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env={**os.environ, "TASKKIT_CACHE_DIR": str(tmp_path / f"cache{round_}-{n}")},
            )
            for n in range(2)
        ]
        outcomes = [(p.communicate(timeout=120)[1], p.returncode) for p in procs]
        assert [code for _, code in outcomes] == [0, 0], outcomes
        staged = {
            str(p.relative_to(work / "dst")): p.read_bytes()
            for p in (work / "dst").rglob("*")
            if p.is_file()
        }
        assert staged == expected
