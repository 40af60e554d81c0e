"""taskkit.content.statcache: an entry is trusted only for the very file version it was made
from."""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from taskkit.content.digest import hash_bytes
from taskkit.content.hashing import FileDigest, hash_paths
from taskkit.content.statcache import (
    FILE_NAME,
    RACY_WINDOW_NS,
    CacheEntry,
    FileStat,
    StatCache,
    default_cache_dir,
    path_key,
)

LATER = 10 * RACY_WINDOW_NS


def query(db_file: Path, sql: str) -> tuple[object, ...]:
    """One row from the cache file, read with a connection of our own that is closed again."""
    with contextlib.closing(sqlite3.connect(db_file)) as db:
        return tuple(db.execute(sql).fetchone())


def entry_for(path: Path, digest_of: bytes, recorded_ns: int, **kw: str) -> CacheEntry:
    digest = hash_bytes(digest_of)
    return CacheEntry.of(
        path_key(path),
        FileStat.from_stat(os.stat(path)),
        digest,
        (digest.value,),
        recorded_ns,
        **kw,
    )


def test_hit_for_the_same_version_and_miss_after_a_change(tmp_path: Path) -> None:
    """The recorded version hits; appending a byte (size, mtime, ctime change) misses."""
    f = tmp_path / "f"
    f.write_bytes(b"abc")
    with StatCache.open(tmp_path / "c") as cache:
        recorded = os.stat(f).st_ctime_ns + LATER
        cache.record([entry_for(f, b"abc", recorded, source="az://c/f", etag="0x1")])
        hit = cache.get(f, os.stat(f))
        assert hit is not None
        assert hit.digest == hash_bytes(b"abc")
        assert (hit.source, hit.etag) == ("az://c/f", "0x1")
        f.write_bytes(b"abcd")
        assert cache.get(f, os.stat(f)) is None


def test_same_size_rewrite_with_mtime_put_back_is_a_miss(tmp_path: Path) -> None:
    """os.utime can restore mtime but not ctime, so the rewrite is still seen."""
    f = tmp_path / "f"
    f.write_bytes(b"aaaa")
    before = os.stat(f)
    with StatCache.open(tmp_path / "c") as cache:
        cache.record([entry_for(f, b"aaaa", before.st_ctime_ns + LATER)])
        f.write_bytes(b"bbbb")
        os.utime(f, ns=(before.st_atime_ns, before.st_mtime_ns))
        after = os.stat(f)
        assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)
        assert cache.get(f, after) is None
        (result,) = hash_paths([f], cache=cache)
        assert isinstance(result, FileDigest)
        assert result.digest == hash_bytes(b"bbbb")


def test_racy_entries_are_not_trusted(tmp_path: Path) -> None:
    """An entry recorded within the racy window of the file's last change is re-hashed."""
    f = tmp_path / "f"
    f.write_bytes(b"data")
    touched = max(os.stat(f).st_mtime_ns, os.stat(f).st_ctime_ns)
    with StatCache.open(tmp_path / "c") as cache:
        # Same identity, a deliberately wrong digest: only the racy guard keeps it out.
        cache.record([entry_for(f, b"WRONG", touched + RACY_WINDOW_NS - 1)])
        assert cache.get(f, os.stat(f)) is None
        (result,) = hash_paths([f], cache=cache)
        assert isinstance(result, FileDigest)
        assert not result.cached
        assert result.digest == hash_bytes(b"data")
        # Past the window the (wrong) entry would be served: the guard is what decides.
        cache.record([entry_for(f, b"WRONG", touched + RACY_WINDOW_NS)])
        assert cache.get(f, os.stat(f)) is not None


def test_recording_time_is_taken_before_the_read(tmp_path: Path) -> None:
    """A file hashed right after it was written gets a racy entry: the next run re-reads it."""
    f = tmp_path / "f"
    f.write_bytes(b"fresh")
    with StatCache.open(tmp_path / "c") as cache:
        list(hash_paths([f], cache=cache))
        (again,) = hash_paths([f], cache=cache)
        assert isinstance(again, FileDigest)
        assert not again.cached


def test_a_row_whose_bytes_were_altered_is_a_miss(tmp_path: Path) -> None:
    """A row failing its own checksum is never served."""
    f = tmp_path / "f"
    f.write_bytes(b"abc")
    with StatCache.open(tmp_path / "c") as cache:
        cache.record([entry_for(f, b"abc", os.stat(f).st_ctime_ns + LATER)])
    db = sqlite3.connect(tmp_path / "c" / FILE_NAME)
    ((raw,),) = db.execute("SELECT entry FROM files").fetchall()
    evil = hash_bytes(b"evil").value
    db.execute("UPDATE files SET entry = ?", (raw.replace(hash_bytes(b"abc").value, evil),))
    db.execute("INSERT INTO files VALUES (?, ?)", (b"/short", raw[:20]))
    db.commit()
    db.close()
    with StatCache.open(tmp_path / "c") as cache:
        assert cache.lookup([b"/short"]) == {}
    with StatCache.open(tmp_path / "c") as cache:
        assert cache.get(f, os.stat(f)) is None


def test_a_corrupt_cache_file_is_set_aside_with_one_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Garbage in the cache file never yields a digest; the file is set aside and rebuilt."""
    cache_dir = tmp_path / "c"
    cache_dir.mkdir()
    (cache_dir / FILE_NAME).write_bytes(os.urandom(8192))
    f = tmp_path / "f"
    f.write_bytes(b"payload")
    with caplog.at_level(logging.WARNING, logger="taskkit"), StatCache.open(cache_dir) as cache:
        (result,) = hash_paths([f], cache=cache)
        assert isinstance(result, FileDigest)
        assert result.digest == hash_bytes(b"payload")
    assert len(caplog.records) == 1
    assert "corrupt" in caplog.records[0].getMessage()
    assert len(list(cache_dir.glob(f"{FILE_NAME}.corrupt-*"))) == 1
    assert query(cache_dir / FILE_NAME, "SELECT count(*) FROM files") == (1,)


def test_a_truncated_cache_file_is_set_aside(tmp_path: Path) -> None:
    """A cache file cut in the middle (a crash, a full disk) is treated like garbage."""
    cache_dir = tmp_path / "c"
    f = tmp_path / "f"
    f.write_bytes(b"x")
    with StatCache.open(cache_dir, clock=lambda: 2**62) as cache:
        cache.record(
            [entry_for(f, b"x", 2**62)]
            + [
                CacheEntry.of(
                    b"/p%d" % i,
                    FileStat(1, i, 1, 1, 1),
                    hash_bytes(b"%d" % i),
                    (hash_bytes(b"%d" % i).value,),
                    5,
                )
                for i in range(2000)
            ]
        )
    db_file = cache_dir / FILE_NAME
    query(db_file, "PRAGMA wal_checkpoint(TRUNCATE)")
    data = db_file.read_bytes()
    db_file.write_bytes(data[: len(data) // 2] + b"\xff" * 4096)
    with StatCache.open(cache_dir) as cache:
        (result,) = hash_paths([f], cache=cache)
        assert isinstance(result, FileDigest)
        assert result.digest == hash_bytes(b"x")


def test_an_unusable_cache_location_only_warns(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A cache that cannot be created is done without, with one warning."""
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    f = tmp_path / "f"
    f.write_bytes(b"abc")
    with (
        caplog.at_level(logging.WARNING, logger="taskkit"),
        StatCache.open(blocker / "sub") as cache,
    ):
        results = list(hash_paths([f, f], cache=cache))
    assert [r.digest for r in results if isinstance(r, FileDigest)] == [hash_bytes(b"abc")] * 2
    assert len(caplog.records) == 1
    assert "not usable" in caplog.records[0].getMessage()


def test_64_bit_device_and_inode_numbers_round_trip(tmp_path: Path) -> None:
    """dev and ino are unsigned 64-bit; SQLite's signed integers must not lose them."""
    stat = FileStat(2**64 - 1, 2**63, 5, 1, 2)
    digest = hash_bytes(b"v")
    with StatCache.open(tmp_path / "c") as cache:
        cache.record([CacheEntry.of(b"/x", stat, digest, (digest.value,), 3)])
        (got,) = cache.lookup([b"/x"]).values()
    assert got.stat == stat
    assert got.size == stat.size == 5


def test_unsorted_keys_and_forget(tmp_path: Path) -> None:
    """Lookups work for keys in any order; forgotten keys are gone."""
    digest = hash_bytes(b"v")
    keys = [b"/b", b"/a", b"/c"]
    with StatCache.open(tmp_path / "c") as cache:
        cache.record(
            [CacheEntry.of(k, FileStat(1, 1, 1, 1, 1), digest, (digest.value,), 3) for k in keys]
        )
        assert set(cache.lookup(keys)) == set(keys)
        cache.forget([b"/a"])
        assert set(cache.lookup(sorted(keys))) == {b"/b", b"/c"}


def test_a_range_lookup_returns_only_the_keys_asked_for(tmp_path: Path) -> None:
    """Sorted keys are read as a range; rows that fall between them are not returned."""
    digest = hash_bytes(b"v")
    with StatCache.open(tmp_path / "c") as cache:
        cache.record(
            [
                CacheEntry.of(k, FileStat(1, 1, 1, 1, 1), digest, (digest.value,), 3)
                for k in (b"/a", b"/b", b"/c")
            ]
        )
        assert set(cache.lookup([b"/a", b"/c"])) == {b"/a", b"/c"}


@pytest.mark.parametrize("chunks", [1, 3])
@pytest.mark.parametrize("before", [(None, None), ("az://c/old", "0x1"), ("file:///é/ü", "")])
def test_provenance_added_keeps_the_entry_and_its_trust(
    chunks: int, before: tuple[str | None, str | None]
) -> None:
    """from_source gives the same version, digest, chunks and recording time with the new
    source and etag (any texts, any chunk count), a valid checksum, and came_from agrees."""
    digest = hash_bytes(b"v")
    parts = tuple(hash_bytes(bytes([i])).value for i in range(chunks))
    old = CacheEntry.of(b"/x/y", FileStat(7, 8, 9, 10, 11), digest, parts, 12, *before)
    new = old.from_source("file:///src/y \u2603", "512-1-2-3")
    assert new.valid()
    assert (new.path, new.stat, new.digest, new.chunks, new.recorded_ns) == (
        old.path,
        old.stat,
        old.digest,
        old.chunks,
        old.recorded_ns,
    )
    assert (new.source, new.etag) == ("file:///src/y \u2603", "512-1-2-3")
    assert new.came_from("file:///src/y \u2603", "512-1-2-3")
    assert not new.came_from("file:///src/y", "512-1-2-3")
    assert not new.came_from("file:///src/y \u2603", "512-1-2-4")
    assert new == CacheEntry.of(
        b"/x/y", FileStat(7, 8, 9, 10, 11), digest, parts, 12, "file:///src/y \u2603", "512-1-2-3"
    )


def test_default_cache_dir_follows_the_documented_order(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """TASKKIT_CACHE_DIR, then the Batch node's shared dir, then the user cache."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("TASKKIT_CACHE_DIR", raising=False)
    monkeypatch.delenv("AZ_BATCH_NODE_SHARED_DIR", raising=False)
    if sys.platform.startswith("linux"):
        assert default_cache_dir() == tmp_path / "xdg" / "taskkit"
    monkeypatch.setenv("AZ_BATCH_NODE_SHARED_DIR", str(tmp_path / "shared"))
    assert default_cache_dir() == tmp_path / "shared" / "taskkit"
    monkeypatch.setenv("TASKKIT_CACHE_DIR", str(tmp_path / "explicit"))
    assert default_cache_dir() == tmp_path / "explicit"


def test_default_cache_dir_reads_the_mapping_given(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Given a mapping, the cache is found in it alone, whatever this process's environment
    says; StatCache.open and for_run pass it on."""
    monkeypatch.setenv("TASKKIT_CACHE_DIR", str(tmp_path / "process"))
    given = {"AZ_BATCH_NODE_SHARED_DIR": str(tmp_path / "shared")}
    assert default_cache_dir(given) == tmp_path / "shared" / "taskkit"
    assert default_cache_dir({"TASKKIT_CACHE_DIR": str(tmp_path / "given")}) == tmp_path / "given"
    assert StatCache.open(environ=given).path.parent == tmp_path / "shared" / "taskkit"
    assert StatCache.for_run(dry_run=True, environ=given) is None  # none there yet
    assert not (tmp_path / "process").exists()


def test_concurrent_processes_share_one_cache(tmp_path: Path) -> None:
    """Six processes hashing overlapping trees at once all succeed, agree, and fill one cache."""
    data = tmp_path / "data"
    for i in range(600):
        p = data / f"d{i % 7}" / f"f{i}"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(os.urandom(64 + i))
    env = {**os.environ, "TASKKIT_CACHE_DIR": str(tmp_path / "cache")}
    cmds = [
        [sys.executable, "-m", "taskkit", "hash", "--json", str(data / f"d{i % 7}"), str(data)]
        for i in range(6)
    ]
    procs = [
        subprocess.Popen(c, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for c in cmds
    ]
    outputs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0] * 6
    assert all(err == b"" for _, err in outputs), [err for _, err in outputs]
    expected = {str(p): str(hash_bytes(p.read_bytes())) for p in data.rglob("f*")}
    for out, _ in outputs:
        import json

        for line in out.splitlines():
            obj = json.loads(line)
            assert obj["digest"] == expected[obj["path"]]
    assert query(tmp_path / "cache" / FILE_NAME, "SELECT count(*) FROM files") == (600,)
    assert query(tmp_path / "cache" / FILE_NAME, "PRAGMA integrity_check") == ("ok",)


def test_a_cache_of_another_schema_is_set_aside(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A file holding another layout (older or newer taskkit) is set aside, never misread."""
    cache_dir = tmp_path / "c"
    cache_dir.mkdir()
    other = sqlite3.connect(cache_dir / FILE_NAME)
    other.execute("CREATE TABLE files (path BLOB PRIMARY KEY, digest TEXT)")
    other.execute("INSERT INTO files VALUES (?, ?)", (path_key(tmp_path / "f"), "xxh3-128:00"))
    other.commit()
    other.close()
    f = tmp_path / "f"
    f.write_bytes(b"abc")
    with caplog.at_level(logging.WARNING, logger="taskkit"), StatCache.open(cache_dir) as cache:
        (result,) = hash_paths([f], cache=cache)
    assert isinstance(result, FileDigest)
    assert result.digest == hash_bytes(b"abc")
    assert [r.getMessage().split(" (")[0] for r in caplog.records] == [
        f"stat-cache {cache_dir / FILE_NAME} was incompatible"
    ]
    assert len(list(cache_dir.glob(f"{FILE_NAME}.incompatible-*"))) == 1


def test_only_the_newest_set_aside_copies_are_kept(tmp_path: Path) -> None:
    """Repeated corruption does not pile up copies: the three newest stay."""
    cache_dir = tmp_path / "c"
    cache_dir.mkdir()
    f = tmp_path / "f"
    f.write_bytes(b"x")
    for _ in range(5):
        (cache_dir / FILE_NAME).write_bytes(os.urandom(4096))
        with StatCache.open(cache_dir) as cache:
            assert [r.digest for r in hash_paths([f], cache=cache) if isinstance(r, FileDigest)]
    assert len(list(cache_dir.glob(f"{FILE_NAME}.corrupt-*"))) == 3


def test_a_file_has_one_key_however_it_is_named(tmp_path: Path) -> None:
    """Through a linked directory, `..` after a link, or a relative path: the same cache key;
    a link to a file keeps a key of its own."""
    (tmp_path / "real" / "sub").mkdir(parents=True)
    (tmp_path / "real" / "f").write_bytes(b"x")
    (tmp_path / "via").symlink_to(tmp_path / "real")
    (tmp_path / "lnk").symlink_to(tmp_path / "real" / "f")
    key = path_key(tmp_path / "real" / "f")
    assert path_key(tmp_path / "via" / "f") == key
    assert path_key(f"{tmp_path}/via/sub/../f") == key
    assert path_key(tmp_path / "lnk") != key
    with StatCache.open(tmp_path / "c", clock=lambda: 2**62) as cache:
        results = list(hash_paths([tmp_path / "via", tmp_path / "lnk"], cache=cache))
        assert {path_key(r.path) for r in results} == set(
            cache.lookup([key, path_key(tmp_path / "lnk")])
        )
        assert cache.get(tmp_path / "via" / "f", os.stat(tmp_path / "real" / "f")) is not None


def test_a_read_only_cache_reads_entries_and_writes_nothing(tmp_path: Path) -> None:
    """A dry run's read-only cache finds what a real run recorded, and creates, changes or
    records nothing: no -wal/-shm files, the folder and the file untouched."""
    f = tmp_path / "f"
    f.write_bytes(b"abc")
    folder = tmp_path / "c"
    with StatCache.open(folder) as cache:
        cache.record([entry_for(f, b"abc", os.stat(f).st_ctime_ns + LATER)])
    before = sorted((p.name, p.stat().st_mtime_ns, p.stat().st_size) for p in folder.iterdir())
    folder_mtime = folder.stat().st_mtime_ns
    with StatCache(folder / FILE_NAME, read_only=True) as ro:
        assert ro.get(f, os.stat(f)) is not None
        g = tmp_path / "g"
        g.write_bytes(b"g")
        ro.record([entry_for(g, b"g", os.stat(g).st_ctime_ns + LATER)])
        assert ro.get(g, os.stat(g)) is None
    after = sorted((p.name, p.stat().st_mtime_ns, p.stat().st_size) for p in folder.iterdir())
    assert after == before
    assert folder.stat().st_mtime_ns == folder_mtime


def test_a_read_only_cache_that_is_damaged_is_left_as_it_is(tmp_path: Path) -> None:
    """A damaged file opened read-only is not set aside or rebuilt: the cache does without."""
    folder = tmp_path / "c"
    folder.mkdir()
    (folder / FILE_NAME).write_bytes(b"not a database" * 100)
    with StatCache(folder / FILE_NAME, read_only=True) as ro:
        f = tmp_path / "f"
        f.write_bytes(b"abc")
        assert ro.get(f, os.stat(f)) is None
    assert sorted(p.name for p in folder.iterdir()) == [FILE_NAME]
