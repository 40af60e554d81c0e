"""taskkit.content.hashing: files hash to the digest of their bytes, in order, in parallel or
not."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from taskkit.content import chunkio
from taskkit.content.digest import CHUNK_SIZE, READ_SIZE, hash_bytes
from taskkit.content.hashing import FileDigest, hash_file, hash_paths
from taskkit.content.statcache import StatCache
from taskkit.content.walk import Failed, Skipped
from taskkit.exceptions import InputNotFound, IOFailure, MisuseError

C = CHUNK_SIZE


def pattern(n: int, seed: int = 0) -> bytes:
    return (bytes((i * 7 + seed) % 256 for i in range(256)) * (n // 256 + 1))[:n]


SMALL = 64 * 1024  # hashing._SMALL: read whole in one call up to here
SIZES = [0, 1, SMALL - 1, SMALL, SMALL + 1, READ_SIZE - 1, READ_SIZE, READ_SIZE + 1]
SIZES += [C - 1, C, C + 1, 2 * C, 3 * C + 777]


@pytest.mark.parametrize("size", SIZES)
def test_file_digest_equals_bytes_digest_in_parallel_and_serial(tmp_path: Path, size: int) -> None:
    """Chunk boundaries and read-size boundaries do not change the digest, whatever the jobs."""
    f = tmp_path / "f.bin"
    data = pattern(size, seed=size % 251)
    f.write_bytes(data)
    serial = hash_file(f, jobs=1)
    parallel = hash_file(f, jobs=4)
    assert serial.digest == parallel.digest == hash_bytes(data)
    assert serial.size == size
    assert serial.chunks == parallel.chunks
    assert not serial.cached


def test_results_keep_input_order_across_small_and_large_files(tmp_path: Path) -> None:
    """Large files hashed by the pool come out in their place among small ones."""
    names = []
    for i, size in enumerate([10, 2 * C + 1, 5, 3 * C, 0, C + 1, 7]):
        f = tmp_path / f"{i}.bin"
        f.write_bytes(pattern(size, seed=i))
        names.append(str(f))
    results = list(hash_paths(names, jobs=2))
    assert [r.path for r in results] == names
    assert all(isinstance(r, FileDigest) for r in results)
    assert [r.digest for r in results if isinstance(r, FileDigest)] == [
        hash_bytes(Path(n).read_bytes()) for n in names
    ]


def test_failures_and_skips_are_reported_in_place_and_the_rest_is_hashed(tmp_path: Path) -> None:
    """A missing path and a FIFO do not stop the files after them."""
    good = tmp_path / "good"
    good.write_bytes(b"ok")
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    results = list(hash_paths([tmp_path / "missing", fifo, good]))
    assert isinstance(results[0], Failed)
    assert isinstance(results[0].error, InputNotFound)
    assert isinstance(results[1], Skipped)
    assert "FIFO" in results[1].reason
    assert isinstance(results[2], FileDigest)
    assert results[2].digest == hash_bytes(b"ok")


def test_hash_file_raises_for_a_missing_file(tmp_path: Path) -> None:
    """The single-file API raises the failure, as a FileNotFoundError too."""
    with pytest.raises(FileNotFoundError) as info:
        hash_file(tmp_path / "nope")
    assert isinstance(info.value, InputNotFound)
    assert info.value.exit_code == 66


def test_hash_file_refuses_a_directory(tmp_path: Path) -> None:
    """A directory is not a file to hash."""
    with pytest.raises(IOFailure):
        hash_file(tmp_path)


@pytest.mark.parametrize("jobs", [0, -1, True, 1.5, "2"])
def test_bad_jobs_is_a_misuse(jobs: object) -> None:
    """jobs must be a whole number >= 1."""
    with pytest.raises(MisuseError):
        list(hash_paths([], jobs=jobs))  # type: ignore[arg-type]


def test_a_file_rewritten_while_read_is_read_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A change between the stat before and after the read is caught, and the file re-read."""
    f = tmp_path / "f.bin"
    f.write_bytes(pattern(2 * C))
    real = chunkio.hash_range
    calls = {"n": 0}

    def rewrite_on_first_read(fd: int, offset: int, length: int) -> bytes:
        calls["n"] += 1
        if calls["n"] == 1:
            f.write_bytes(pattern(2 * C, seed=9))
        return real(fd, offset, length)

    monkeypatch.setattr(chunkio, "hash_range", rewrite_on_first_read)
    result = hash_file(f, jobs=1)
    assert result.digest == hash_bytes(pattern(2 * C, seed=9))
    assert calls["n"] > 2


def test_a_file_that_never_settles_fails_after_the_attempts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file that changes during every read is reported as failed, never with a digest."""
    f = tmp_path / "f.bin"
    f.write_bytes(pattern(C + 1))
    real = chunkio.hash_range
    seed = {"n": 0}

    def always_rewrite(fd: int, offset: int, length: int) -> bytes:
        seed["n"] += 1
        with open(f, "r+b") as out:
            out.write(pattern(16, seed=seed["n"]))
            out.write(b"x" * (seed["n"] % 3))
        return real(fd, offset, length)

    monkeypatch.setattr(chunkio, "hash_range", always_rewrite)
    (result,) = hash_paths([f], jobs=2)
    assert isinstance(result, Failed)
    assert "kept changing" in str(result.error)


def test_a_file_that_shrinks_during_the_read_is_not_given_a_digest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Truncation mid-read is seen (a short read), then the file is read again as it is now."""
    f = tmp_path / "f.bin"
    f.write_bytes(pattern(2 * C))
    real = chunkio.hash_range
    calls = {"n": 0}

    def truncate_once(fd: int, offset: int, length: int) -> bytes:
        calls["n"] += 1
        if calls["n"] == 1:
            os.truncate(f, 100)
        return real(fd, offset, length)

    monkeypatch.setattr(chunkio, "hash_range", truncate_once)
    result = hash_file(f, jobs=1)
    assert result.size == 100
    assert result.digest == hash_bytes(pattern(100))


@pytest.mark.parametrize("new_size", [0, 100, SMALL - 1])
def test_a_small_file_that_shrinks_before_its_one_read_is_read_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, new_size: int
) -> None:
    """A small file cut shorter between its stat and its one-call read gets the digest of
    what it holds now, never of the short read taken for the size stat gave."""
    from taskkit.content import hashing

    assert SMALL == hashing._SMALL
    f = tmp_path / "f.bin"
    f.write_bytes(pattern(SMALL))
    real = os.pread
    calls = {"n": 0}

    def truncate_once(fd: int, length: int, offset: int) -> bytes:
        calls["n"] += 1
        if calls["n"] == 1:
            os.truncate(f, new_size)
        return real(fd, length, offset)

    monkeypatch.setattr(hashing.os, "pread", truncate_once)
    result = hash_file(f, jobs=1)
    assert result.size == new_size
    assert result.digest == hash_bytes(pattern(new_size))


@pytest.mark.parametrize("size", [0, 1, SMALL, C, C + 1, 2 * C + 3])
def test_a_cache_hit_equals_the_read_it_stands_for(tmp_path: Path, size: int) -> None:
    """A digest from the cache carries the same digest, size and chunk digests as reading the
    file gave, on both sides of the one-chunk size."""
    f = tmp_path / "f.bin"
    f.write_bytes(pattern(size, seed=3))
    cache = StatCache(tmp_path / "c.sqlite3", clock=lambda: 4 * 10**18)  # past the racy window
    (read,) = hash_paths([f], jobs=2, cache=cache)
    (hit,) = hash_paths([f], jobs=2, cache=cache)
    cache.close()
    assert isinstance(read, FileDigest)
    assert isinstance(hit, FileDigest)
    assert (read.cached, hit.cached) == (False, True)
    assert hit._replace(cached=False) == read


def test_cache_hits_skip_reading_and_misses_are_recorded(tmp_path: Path) -> None:
    """With a stat-cache, an unchanged file's second digest comes from the cache unread."""
    data = tmp_path / "data"
    data.mkdir()
    for i in range(5):
        (data / f"{i}").write_bytes(pattern(100 + i))
    (data / "big").write_bytes(pattern(C + 5))
    clock = {"now": 0}
    cache = StatCache.open(tmp_path / "cache", clock=lambda: clock["now"])
    clock["now"] = os.stat(data / "big").st_ctime_ns + 10**10  # well past the racy window
    first = list(hash_paths([data], cache=cache))
    second = list(hash_paths([data], cache=cache))
    assert [r.cached for r in first if isinstance(r, FileDigest)] == [False] * 6
    assert [r.cached for r in second if isinstance(r, FileDigest)] == [True] * 6
    assert [(r.path, r.digest, r.chunks) for r in first if isinstance(r, FileDigest)] == [
        (r.path, r.digest, r.chunks) for r in second if isinstance(r, FileDigest)
    ]
    cache.close()


def test_closing_early_records_what_was_hashed(tmp_path: Path) -> None:
    """Stopping after the first result still leaves the finished digests in the cache."""
    for i in range(3):
        (tmp_path / f"{i}").write_bytes(pattern(10 + i))
    cache = StatCache.open(tmp_path / "cache", clock=lambda: 2**62)
    it = hash_paths(sorted(str(p) for p in tmp_path.iterdir() if p.is_file()), cache=cache)
    first = next(it)
    it.close()
    assert isinstance(first, FileDigest)
    assert cache.get(first.path, os.stat(first.path)) is not None
    cache.close()


@pytest.mark.parametrize(
    "pseudo",
    [
        "/proc/version",  # size 0, content not empty
        "/sys/devices/system/cpu/online",  # size 4096, content a few bytes
    ],
)
def test_pseudo_files_are_hashed_as_read_not_as_stat_says(pseudo: str) -> None:
    """A procfs/sysfs file's digest is that of its content, whatever size stat reports."""
    if not os.path.exists(pseudo):
        pytest.skip(f"{pseudo} does not exist here")
    with open(pseudo, "rb") as f:
        content = f.read()
    assert content
    assert len(content) != os.stat(pseudo).st_size
    result = hash_file(pseudo, jobs=1)
    assert (result.digest, result.size) == (hash_bytes(content), len(content))


def test_empty_files_hash_as_empty(tmp_path: Path) -> None:
    """The zero-size path (which reads to the end) still gives the empty digest, and caches it."""
    f = tmp_path / "empty"
    f.touch()
    cache = StatCache.open(tmp_path / "c", clock=lambda: 2**62)
    first = hash_file(f, cache=cache)
    again = hash_file(f, cache=cache)
    assert first.digest == again.digest == hash_bytes(b"")
    assert (first.cached, again.cached) == (False, True)
    cache.close()


def test_digests_are_keyed_by_the_paths_as_given_and_leave_out_what_cannot_be_read(
    tmp_path: Path,
) -> None:
    """digests() of strings is keyed by those strings, of Paths by those Paths, with the same
    digests; a missing file, a directory and a FIFO are left out, in either spelling."""
    from taskkit.content.hashing import digests

    (tmp_path / "sub").mkdir()
    os.mkfifo(tmp_path / "fifo")
    names = []
    for i in range(50):
        (tmp_path / "sub" / f"f{i}").write_bytes(b"%d" % i)
        names.append(str(tmp_path / "sub" / f"f{i}"))
    names += [str(tmp_path / "missing"), str(tmp_path / "sub"), str(tmp_path / "fifo")]
    by_str = digests(names, jobs=2)
    by_path = digests([Path(n) for n in names], jobs=2)
    assert list(by_str) == names[:50]
    assert all(type(key) is str for key in by_str)
    assert list(by_path) == [Path(n) for n in names[:50]]
    assert list(by_str.values()) == list(by_path.values())
    assert list(by_str.values()) == [hash_bytes(b"%d" % i) for i in range(50)]


@pytest.mark.parametrize("jobs", [1, 4])
def test_provenance_is_recorded_only_with_the_digest_it_expects(tmp_path: Path, jobs: int) -> None:
    """An entry recorded by digests() carries the source and etag named for its key only when
    the file hashed to the digest expected there: a file that differs from its source is
    recorded as what it holds, without a provenance that would vouch for it."""
    from taskkit.content.hashing import digests
    from taskkit.content.statcache import Provenance, path_key

    paths = {}
    for i, name in enumerate(["same", "other", "unnamed"] * 40):
        paths[f"{name}{i}"] = tmp_path / f"{name}{i}"
        paths[f"{name}{i}"].write_bytes(name.encode() * (i + 1))
    sources = {
        path_key(p): Provenance(
            f"az://c/{name}",
            f"0x{len(name)}",
            hash_bytes(p.read_bytes() if name.startswith("same") else b"something else"),
        )
        for name, p in paths.items()
        if not name.startswith("unnamed")
    }
    with StatCache.open(tmp_path / "c") as cache:
        got = digests(list(paths.values()), cache=cache, jobs=jobs, provenance=sources)
        entries = cache.lookup(sorted(path_key(p) for p in paths.values()))
    assert len(got) == len(entries) == len(paths)  # every file hashed and recorded
    for name, p in paths.items():
        entry = entries[path_key(p)]
        assert entry.digest == got[p] == hash_bytes(p.read_bytes())
        vouched = (entry.source, entry.etag) == (f"az://c/{name}", f"0x{len(name)}")
        assert vouched is name.startswith("same"), name
