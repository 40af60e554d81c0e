"""Hashing files: one large file on every core, many small files on two.

How the work is shared out:

* Files are taken in windows of 256, planned a few windows ahead: each window's paths are
  looked up in the stat-cache in one batch.
* Asked for (``reader=True``, as ``taskkit hash`` does) with ``jobs > 1`` on Linux, many small
  files go to a second, forked process, the reader
  (:mod:`taskkit.content.reader`): it reads, hashes and packs the stat-cache entries of the
  files the cache does not vouch for, while this process walks, looks up, checks the files
  the cache knows (a stat and a compare: cheaper here than the request that would send
  them), yields and records.
  Threads cannot do this: they fight for the GIL between the many short system calls (20,000
  page-cached 4 KiB files took 0.17 s on one thread and 0.63 s on two when this was designed).
  What the reader has not answered when its turn comes is done here, as is every file it
  declines (anything but a plain file read in one go), so errors and odd files take one path.
* Otherwise, a file of at most :data:`~taskkit.content.digest.CHUNK_SIZE` bytes is read and
  hashed by the calling thread in one pass.
* A larger file is cut into chunks, and the chunks are hashed by a pool of ``jobs`` threads with
  positional reads on one shared descriptor. ``xxhash`` and the reads release the GIL, so the
  chunks really run in parallel; meanwhile the calling thread goes on with the small files.
* Results come out in input order. At most :data:`MAX_PENDING` files are in flight.

Memory: each pool thread reuses one :data:`~taskkit.content.digest.READ_SIZE` (512 KiB) buffer
and the calling thread one more, so reading costs ``(jobs + 1) * 512 KiB`` whatever the file
sizes (the reader has one more, in its own process), plus the one file of at most
:data:`_SMALL` (64 KiB) being read whole; on top come 16 bytes per chunk of the files in flight
and the windows planned ahead (about a thousand entries).

A file read in more than one piece is stat'ed before and after; if its size, mtime or ctime
moved, it is read again, up to :data:`ATTEMPTS` times, then reported as failed. This is a best
effort, as in every hashing tool: the kernel stamps a write's time when the write starts, so a
write still in progress during the read (or writes through a shared mmap) can go unseen and give
a digest of a mix of old and new bytes. Hash files once their writers are done.
"""

from __future__ import annotations

import errno
import os
import stat
import time
from collections import deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple, TypeVar

from taskkit.content import chunkio
from taskkit.content.digest import (
    CHUNK_SIZE,
    READ_SIZE,
    Digest,
    StreamHasher,
    chunk_count,
    combine_chunks,
    hash_chunk,
)
from taskkit.content.statcache import CacheEntry, FileStat, Provenance, StatCache
from taskkit.content.walk import (
    FS_ENCODING,
    FS_ERRORS,
    Failed,
    FileEntry,
    Skipped,
    describe_mode,
    walk,
)
from taskkit.exceptions import IOFailure, from_os_error

if TYPE_CHECKING:  # the pool and the reader are imported when first needed
    from concurrent.futures import Future, ThreadPoolExecutor

    from taskkit.content.reader import Reader

__all__ = [
    "ATTEMPTS",
    "MAX_PENDING",
    "FileDigest",
    "HashResult",
    "digests",
    "hash_file",
    "hash_paths",
]

_P = TypeVar("_P", str, Path)

ATTEMPTS = 3
#: How much a file whose size stat cannot tell (procfs, sysfs) may yield before it is refused:
#: some, like /proc/self/pagemap, never end.
STREAM_LIMIT = 64 * 1024 * 1024
MAX_PENDING = 1024
_WINDOW = 256
#: Files to read in one window before a reader process is worth its fork (about 2 ms).
_READER_MIN = 64
#: Windows planned ahead of the one being finished: the reader's head start.
_AHEAD = 4
#: Files in one request to the reader: what is redone here when it is taken back.
_PIECE = 64
#: Files up to this size are read into a new bytes object in one call rather than through
#: the reused buffer: half the Python on the way for the many small files.
_SMALL = 64 * 1024


def _pieces(indices: list[int]) -> list[list[int]]:
    return [indices[i : i + _PIECE] for i in range(0, len(indices), _PIECE)]


class FileDigest(NamedTuple):
    """The digest of one file. ``cached`` is true when it came from the stat-cache unread.

    ``chunks`` are the 16-byte digests of its 8 MiB chunks (one for a file of one chunk).
    """

    path: str
    digest: Digest
    size: int
    cached: bool
    chunks: tuple[bytes, ...]

    def __repr__(self) -> str:
        return (
            f"FileDigest(path={self.path!r}, digest={self.digest!r}, size={self.size}, "
            f"cached={self.cached}, chunks=<{len(self.chunks)}>)"
        )


HashResult = FileDigest | Skipped | Failed
"""What :func:`hash_paths` yields for each path: a digest, a path passed over, or a failure."""


def _same(a: os.stat_result, b: os.stat_result) -> bool:
    return (
        a.st_size == b.st_size
        and a.st_mtime_ns == b.st_mtime_ns
        and a.st_ctime_ns == b.st_ctime_ns
        and a.st_ino == b.st_ino
    )


def _gather(futures: list[Future[list[bytes]]]) -> tuple[bytes, ...]:
    """Every chunk digest; on a failure, the first error once no chunk still reads the file."""
    for i, future in enumerate(futures):
        error = future.exception()
        if error is not None:
            rest = futures[i + 1 :]
            for other in rest:
                other.cancel()
            for other in rest:
                if not other.cancelled():
                    other.exception()
            raise error
    return tuple(digest for future in futures for digest in future.result())


class _Window(NamedTuple):
    """Up to ``_WINDOW`` walked items: the results known at once (``slots``: a cache hit, a
    skip or a failure) and the pieces of reading asked of the reader as ``(indices,
    request)``. A file in no piece and without a slot is read by this process."""

    items: list[FileEntry | Skipped | Failed]
    keys: list[bytes]
    slots: list[HashResult | None]
    reading: list[tuple[list[int], int]]


class _Large(NamedTuple):
    """A large file whose chunks are being hashed by the pool."""

    entry: FileEntry
    key: bytes
    fd: int
    before: os.stat_result
    recorded_ns: int
    futures: list[Future[list[bytes]]]
    attempt: int


def hash_paths(
    paths: Iterable[str | os.PathLike[str]],
    *,
    jobs: int | None = None,
    cache: StatCache | None = None,
    recurse: bool = True,
    reader: bool = False,
    provenance: Mapping[bytes, Provenance] | None = None,
) -> Iterator[HashResult]:
    """Hash every regular file named by ``paths`` (directories walked when ``recurse``).

    Yields one result per file in order (see :mod:`taskkit.content.walk` for the order and for
    what is
    skipped). With a ``cache``, unchanged files are not read and new digests are recorded;
    an entry gets the source and etag ``provenance`` names for its cache key when its digest
    is the one expected there (staging: the file holds the bytes of that source). Closing the
    iterator early stops the work and still records what was hashed. ``reader``: many small
    files may go to a forked reader process (the ``taskkit hash`` command asks for it; a
    library call inside someone's program never forks unless asked).
    """
    workers = chunkio.check_jobs(jobs)
    run = _Run(cache, workers, reader=reader, provenance=provenance)
    try:
        yield from run.results(walk(paths, recurse=recurse))
    finally:
        run.close()


def hash_file(
    path: str | os.PathLike[str], *, jobs: int | None = None, cache: StatCache | None = None
) -> FileDigest:
    """The digest of one regular file; a failure is raised as a :class:`TaskFailure`."""
    (result,) = hash_paths([path], jobs=jobs, cache=cache, recurse=False)
    if isinstance(result, Failed):
        raise result.error
    if isinstance(result, Skipped):
        raise IOFailure(
            f"cannot hash {result.path!r}: {result.reason}", path=result.path, errno=errno.EINVAL
        )
    return result


def digests(
    paths: Sequence[_P],
    *,
    jobs: int | None = None,
    cache: StatCache | None = None,
    provenance: Mapping[bytes, Provenance] | None = None,
) -> dict[_P, Digest]:
    """The digests of the regular files among ``paths`` that could be read, keyed by the
    paths as given (strings are cheaper than ``Path`` objects for many files); the others are
    left out (a caller deciding whether to transfer a file treats them as different).
    ``provenance``: as :func:`hash_paths` records it."""
    if not paths:
        return {}
    results = hash_paths(paths, cache=cache, jobs=jobs, recurse=False, provenance=provenance)
    return {
        path: result.digest
        for path, result in zip(paths, results, strict=True)
        if isinstance(result, FileDigest)
    }


class _Run:
    """One call of :func:`hash_paths`: the pool, the files in flight, the cache writes."""

    def __init__(
        self,
        cache: StatCache | None,
        jobs: int,
        *,
        reader: bool = False,
        provenance: Mapping[bytes, Provenance] | None = None,
    ) -> None:
        self.cache = cache
        self.provenance = provenance or {}
        self.clock = cache.clock if cache is not None else time.time_ns
        self.jobs = jobs
        self.pool: ThreadPoolExecutor | None = None
        self.in_flight: deque[HashResult | _Large] = deque()
        self.units_in_flight = 0
        self.to_record: list[CacheEntry] = []
        self.use_reader = reader and jobs > 1
        self.reader: Reader | None = None

    def close(self) -> None:
        if self.reader is not None:
            self.reader.close()
        for item in self.in_flight:
            if isinstance(item, _Large):
                for future in item.futures:
                    future.cancel()
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
        for item in self.in_flight:
            if isinstance(item, _Large):
                os.close(item.fd)
        self.in_flight.clear()
        self._flush()

    def results(self, items: Iterator[FileEntry | Skipped | Failed]) -> Iterator[HashResult]:
        # Windows are planned (walked, looked up, their misses sent to the reader) a few ahead
        # of the one being finished, so the reader hashes while this process writes results.
        planned: deque[_Window] = deque()
        while window := list(islice(items, _WINDOW)):
            planned.append(self._plan(window))
            if len(planned) >= _AHEAD:
                yield from self._ordered(self._finish_window(planned.popleft()))
            if len(self.to_record) >= 4 * _WINDOW:
                self._flush()
        while planned:
            yield from self._ordered(self._finish_window(planned.popleft()))
        while self.in_flight:
            yield self._finish(self.in_flight.popleft())

    def _ordered(self, results: Iterator[HashResult | _Large]) -> Iterator[HashResult]:
        """Results in input order: a large file's chunks are awaited only when it is next."""
        in_flight = self.in_flight
        for result in results:
            if not in_flight and not isinstance(result, _Large):
                yield result  # the common case: nothing is waiting before it
                continue
            in_flight.append(result)
            while in_flight and (
                not isinstance(in_flight[0], _Large)
                or len(in_flight) > MAX_PENDING
                or self.units_in_flight > MAX_PENDING
            ):
                yield self._finish(in_flight.popleft())

    def _plan(self, window: list[FileEntry | Skipped | Failed]) -> _Window:
        """Look the window up in the cache, check here the files it knows, and share out the
        reading of the others: to the reader when it pays."""
        keys = [
            item.abspath.encode(FS_ENCODING, FS_ERRORS) if type(item) is FileEntry else b""
            for item in window
        ]
        known = self.cache.lookup([k for k in keys if k]) if self.cache is not None else {}
        hit, lookup = self._hit, known.get
        slots: list[HashResult | None] = []
        misses: list[int] = []
        for i, (item, key) in enumerate(zip(window, keys, strict=True)):
            if type(item) is not FileEntry:
                slots.append(item)  # type: ignore[arg-type]
                continue
            entry = lookup(key)
            slot = None if entry is None else hit(item, entry)
            slots.append(slot)
            if slot is None:
                misses.append(i)
        reading: list[tuple[list[int], int]] = []
        reader = self._reader_for(len(misses))
        if reader is not None:
            sent_ns = self.clock()  # before the reader opens any of them
            for part in _pieces(misses):
                seq = reader.send([keys[i] for i in part], sent_ns)
                if seq is not None:
                    reading.append((part, seq))
        return _Window(window, keys, slots, reading)

    def _reader_for(self, files: int) -> Reader | None:
        if self.reader is None and self.use_reader and files >= _READER_MIN:
            self.use_reader = False  # one attempt per run
            from taskkit.content.reader import Reader

            self.reader = Reader.start()
        return self.reader

    def _finish_window(self, plan: _Window) -> Iterator[HashResult | _Large]:
        if not plan.reading:  # nothing asked of the reader
            for item, slot, key in zip(plan.items, plan.slots, plan.keys, strict=True):
                yield slot if slot is not None else self._read(item, key, 1)  # type: ignore[arg-type]
            return
        # A piece's answers are looked for when its first file is reached, so the reader
        # goes on with the later pieces meanwhile; a piece not answered yet is taken back.
        reader = self.reader
        read_at = {part[0]: (part, seq) for part, seq in plan.reading}
        done: dict[int, CacheEntry | None] = {}
        cache = self.cache
        new = tuple.__new__  # FileDigest(...) through its generated __new__ costs five times more
        for i, (item, slot) in enumerate(zip(plan.items, plan.slots, strict=True)):
            if slot is not None:
                yield slot
                continue
            if i in read_at and reader is not None:
                part, seq = read_at[i]
                answers = reader.answers(seq, [plan.keys[j] for j in part])
                if answers is None:  # not read yet: this process does it rather than wait
                    reader.take_back(seq)
                else:
                    done.update(zip(part, answers, strict=True))
            assert type(item) is FileEntry
            key = plan.keys[i]
            answer = done.get(i)
            if answer is None:
                yield self._read(item, key, 1)
                continue
            if cache is not None:
                self.to_record.append(answer)
            digest = answer.digest
            yield new(FileDigest, (item.path, digest, answer.size, False, (digest.value,)))

    def _hit(self, entry: FileEntry, known: CacheEntry) -> HashResult | None:
        """The cached digest of an unchanged file, a failed stat, or None: hash it."""
        try:
            st = entry.stat or os.stat(entry.abspath)
        except OSError as exc:
            return Failed(entry.path, from_os_error(exc, "cannot hash"))
        if StatCache.fresh(known, st) and stat.S_ISREG(st.st_mode):
            size = st.st_size
            digest = known.digest
            # A file of one chunk is its own chunk (the size is the entry's: it is fresh).
            chunks = (digest.value,) if size <= CHUNK_SIZE else known.chunks
            args = (entry.path, digest, size, True, chunks)
            return tuple.__new__(FileDigest, args)  # FileDigest(*args), five times faster
        return None

    def _read(self, entry: FileEntry, key: bytes, attempt: int) -> HashResult | _Large:
        recorded_ns = self.clock()
        try:
            fd = os.open(entry.abspath, chunkio.OPEN_FLAGS)
        except OSError as exc:
            exc.filename = entry.path
            return Failed(entry.path, from_os_error(exc, "cannot hash"))
        handed_over = False
        try:
            before = os.fstat(fd)
            if not stat.S_ISREG(before.st_mode):
                return Skipped(entry.path, f"{describe_mode(before.st_mode)}, not a regular file")
            if before.st_size > CHUNK_SIZE and self.jobs > 1:
                handed_over = True
                return self._submit(entry, key, fd, before, recorded_ns, attempt)
            size = before.st_size
            if size == 0:  # empty, or a file whose size says nothing (/proc, /sys)
                return self._stream(entry, fd, before, key, recorded_ns)
            data = os.pread(fd, size, 0) if size <= _SMALL else b""
            if len(data) == size:  # a small file, read whole in one call
                chunks: tuple[bytes, ...] = (hash_chunk(data),)
            elif size <= CHUNK_SIZE:  # larger, or a short read: pieces until the end
                chunks = (chunkio.hash_range(fd, 0, size),)
            else:
                chunks = tuple(chunkio.hash_run(fd, size, 0, chunk_count(size)))
            # One read cannot see a torn write that the stat-cache would keep (the racy guard
            # refuses such entries); several reads check that nothing moved in between.
            if size > READ_SIZE and not _same(before, os.fstat(fd)):
                raise chunkio.Shrunk
        except chunkio.Shrunk:
            if _same(before, os.fstat(fd)):  # fewer bytes than stat says, yet nothing moved
                return self._stream(entry, fd, before, key, recorded_ns)
            return self._changed(entry, key, attempt)
        except OSError as exc:
            exc.filename = entry.path
            return Failed(entry.path, from_os_error(exc, "cannot hash"))
        finally:
            if not handed_over:
                os.close(fd)
        return self._done(entry, key, before, recorded_ns, chunks)

    def _stream(
        self, entry: FileEntry, fd: int, before: os.stat_result, key: bytes, recorded_ns: int
    ) -> HashResult:
        """Hash whatever the file yields up to its end, for files whose size cannot be trusted.

        Pseudo-files (procfs, sysfs) report a size of 0 or 4096 whatever they hold. Their
        digest is that of the bytes read; they are cached only if those match the stat."""
        hasher = StreamHasher()
        buf = chunkio.read_buffer()
        while n := chunkio.pread_into(fd, buf, hasher.size):
            hasher.update(buf[:n])
            if hasher.size > max(before.st_size, STREAM_LIMIT):
                return Failed(
                    entry.path,
                    IOFailure(
                        f"cannot hash {entry.path!r}: stat says {before.st_size} bytes but it "
                        f"yields more than {STREAM_LIMIT >> 20} MiB (a /proc or /sys file?)",
                        path=entry.path,
                        errno=errno.EFBIG,
                    ),
                )
        chunks = hasher.all_chunks()
        if hasher.size != before.st_size:
            digest = combine_chunks(hasher.size, chunks)
            return FileDigest(entry.path, digest, hasher.size, False, chunks)
        return self._done(entry, key, before, recorded_ns, chunks)

    def _submit(
        self,
        entry: FileEntry,
        key: bytes,
        fd: int,
        before: os.stat_result,
        recorded_ns: int,
        attempt: int,
    ) -> _Large:
        if self.pool is None:
            from concurrent.futures import ThreadPoolExecutor

            self.pool = ThreadPoolExecutor(self.jobs, thread_name_prefix="taskkit-hash")
        futures = [
            self.pool.submit(chunkio.hash_run, fd, before.st_size, first, count)
            for first, count in chunkio.runs(chunk_count(before.st_size), self.jobs)
        ]
        self.units_in_flight += len(futures)
        return _Large(entry, key, fd, before, recorded_ns, futures, attempt)

    def _finish(self, item: HashResult | _Large) -> HashResult:
        """The result of an item in flight, waiting for its chunks if it has any."""
        if not isinstance(item, _Large):
            return item
        self.units_in_flight -= len(item.futures)
        try:
            chunks = _gather(item.futures)
            if not _same(item.before, os.fstat(item.fd)):
                raise chunkio.Shrunk
        except chunkio.Shrunk:
            return self._changed(item.entry, item.key, item.attempt)
        except OSError as exc:
            exc.filename = item.entry.path
            return Failed(item.entry.path, from_os_error(exc, "cannot hash"))
        finally:
            os.close(item.fd)
        return self._done(item.entry, item.key, item.before, item.recorded_ns, chunks)

    def _changed(self, entry: FileEntry, key: bytes, attempt: int) -> HashResult:
        if attempt < ATTEMPTS:
            return self._finish(self._read(entry, key, attempt + 1))
        return Failed(
            entry.path,
            IOFailure(
                f"cannot hash {entry.path!r}: it kept changing while being read "
                f"({ATTEMPTS} attempts)",
                path=entry.path,
                errno=errno.EAGAIN,
            ),
        )

    def _done(
        self,
        entry: FileEntry,
        key: bytes,
        st: os.stat_result | FileStat,
        recorded_ns: int,
        chunks: tuple[bytes, ...],
    ) -> FileDigest:
        size = st.size if type(st) is FileStat else st.st_size  # type: ignore[union-attr]
        digest = Digest(chunks[0]) if len(chunks) == 1 else combine_chunks(size, chunks)
        if self.cache is not None:
            self.to_record.append(CacheEntry.of(key, st, digest, chunks, recorded_ns))
        args = (entry.path, digest, size, False, chunks)
        return tuple.__new__(FileDigest, args)  # FileDigest(*args), five times faster

    def _flush(self) -> None:
        if self.cache is not None and self.to_record:
            records, self.to_record = self.to_record, []
            if self.provenance:
                known = self.provenance
                records = [r.vouched(known[r.path]) if r.path in known else r for r in records]
            self.cache.record(records)
