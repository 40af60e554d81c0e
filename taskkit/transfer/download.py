"""Downloading one file into a locked partial file, in parallel ranges, resumably.

A download never writes at a final path. It fills a *partial* file that one process at a time
holds (``flock``); the caller renames it over the final path once every byte is in and the digest
is checked, so a final path only ever holds a complete file.

* Digests are computed from the bytes as they arrive, before they are written: no second read.
* A file larger than one chunk (:data:`~taskkit.content.digest.CHUNK_SIZE`) is fetched in
  chunk-sized
  ranges in parallel. Each chunk, once written, is noted with its digest in a journal beside the
  partial (``<partial>.chunks``). A process killed mid-download leaves the next one the chunks
  whose bytes on disk still hash to what the journal says; only the rest is fetched again. The
  journal names the size and version of the source, so a partial of another version is dropped.
* At most ``jobs`` reads, of at most :data:`MEMORY_BUDGET` bytes in all, are in flight for
  the whole run, so memory is bounded whatever the file sizes and ``jobs``.
* A full disk is an :class:`~taskkit.exceptions.IOFailure` naming the filesystem that is full
  (its mount point and device, :func:`write_error`), since the partial file may live on the
  destination's filesystem or on the node cache's.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple, TypeVar

import xxhash

from taskkit.content import chunkio
from taskkit.content.digest import CHUNK_SIZE, Digest, chunk_count, combine_chunks, hash_chunk
from taskkit.exceptions import IOFailure, TaskFailure, TransientError, from_os_error
from taskkit.storage.base import RemoteFile, Store
from taskkit.transfer.summary import format_size

__all__ = [
    "FULL_DISK",
    "JOURNAL_SUFFIX",
    "MEMORY_BUDGET",
    "RANGE_SIZE",
    "Budget",
    "Fetched",
    "Transfers",
    "claim",
    "drop_claimed",
    "filesystem",
    "gather",
    "locked",
    "open_partial",
    "remove_journal",
    "remove_partial",
    "write_error",
]

_T = TypeVar("_T")

JOURNAL_SUFFIX = ".chunks"
#: Bytes per request: one chunk. Azure (Azurite at least) pays a lot per request: 4 MiB
#: requests moved 1 GiB at 149 MB/s where 8 MiB ones reached 262 (bench/stage_bench.py).
RANGE_SIZE = CHUNK_SIZE
#: Bytes of responses in flight at once, whatever ``jobs`` is. The SDK and aiohttp hold a
#: response about twice over before it is written, so this bounds staging's memory to about
#: twice this much above the interpreter's own. 64 MiB measured 202 MiB peak RSS at -j 16;
#: six 8 MiB requests in flight already reach Azurite's throughput (bench/stage_bench.py).
MEMORY_BUDGET = 48 * 1024 * 1024
_JOURNAL_MAGIC = "taskkit-partial-v1"


class Fetched(NamedTuple):
    """A partial file filled with every byte of its source: ready to be renamed into place."""

    digest: Digest
    chunks: tuple[bytes, ...]
    transferred: int  # bytes fetched from the store
    reused: int  # bytes of an earlier partial download that were verified and kept


class Transfers:
    """The threads and the limit on reads in flight shared by the downloads of one run.

    ``on_bytes(n, reused)`` is called from worker threads as bytes land (progress reporting).
    """

    def __init__(
        self,
        jobs: int,
        on_bytes: Callable[[int, bool], None] | None = None,
        *,
        allocate: Callable[[int, int, int], None] | None = None,
    ) -> None:
        self.jobs = jobs
        self.on_bytes = on_bytes or (lambda n, reused: None)
        #: Reserves a file's blocks (``os.posix_fallocate``): a test stands in a full disk.
        self.allocate = allocate
        self._slots = threading.BoundedSemaphore(jobs)
        self._budget = Budget(MEMORY_BUDGET)
        #: Set to make every read that has not started fail at once (Ctrl-C, shutdown).
        self.stop = threading.Event()
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)

    def _chunks(self) -> ThreadPoolExecutor:
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.jobs, thread_name_prefix="taskkit-chunk")
            return self._pool

    def read(self, store: Store, file: RemoteFile, offset: int, length: int) -> bytes:
        with self._slots, self._budget.hold(length):
            if self.stop.is_set():
                raise TransientError(f"cannot read {file.url}: staging was stopped")
            return store.read(file, offset, length)

    def fetch(
        self, store: Store, file: RemoteFile, fd: int, partial: Path | str, *, empty: bool = False
    ) -> Fetched:
        """Fill the locked partial file ``fd`` (at ``partial``) with the bytes of ``file``;
        ``empty``: the partial was just created, so a small file needs no truncation."""
        try:
            if file.size <= CHUNK_SIZE:
                return self._fetch_small(store, file, fd, empty)
            return self._fetch_large(store, file, fd, Path(partial))
        except TaskFailure:
            # The store's own failure (a source it may not read is a PermissionError too):
            # it names the source, not the partial file being written.
            raise
        except OSError as exc:
            exc.filename = str(partial)
            raise write_error(exc, "cannot write") from exc

    def _fetch_small(self, store: Store, file: RemoteFile, fd: int, empty: bool) -> Fetched:
        data = self.read(store, file, 0, file.size) if file.size else b""
        digest = hash_chunk(data)
        if not empty:
            os.ftruncate(fd, 0)
        _write_all(fd, data, 0)
        self.on_bytes(len(data), False)
        return Fetched(Digest(digest), (digest,), len(data), 0)

    def _fetch_large(self, store: Store, file: RemoteFile, fd: int, partial: Path) -> Fetched:
        count = chunk_count(file.size)
        header = f"{_JOURNAL_MAGIC} {file.size} {store.identity(file.key)} {file.version}\n"
        journal = Path(f"{partial}{JOURNAL_SUFFIX}")
        kept = self._verified(fd, file.size, _read_journal(journal, header))
        if not kept:
            os.ftruncate(fd, 0)
            journal.write_text(header)
        _preallocate(fd, file.size, self.allocate)
        reused = sum(_chunk_length(file.size, i) for i in kept)
        self.on_bytes(reused, True)
        log_fd = os.open(journal, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
        try:

            def one(index: int) -> bytes:
                start = index * CHUNK_SIZE
                end = start + _chunk_length(file.size, index)
                hasher = xxhash.xxh3_128()
                for offset in range(start, end, RANGE_SIZE):
                    data = self.read(store, file, offset, min(RANGE_SIZE, end - offset))
                    hasher.update(data)
                    _write_all(fd, data, offset)
                    self.on_bytes(len(data), False)
                digest = hasher.digest()
                # One short append per chunk: atomic, so a killed process leaves whole lines.
                os.write(log_fd, f"{index} {digest.hex()}\n".encode())
                return digest

            missing = [i for i in range(count) if i not in kept]
            fetched = dict(zip(missing, gather(self._chunks(), one, missing), strict=True))
        finally:
            os.close(log_fd)
        chunks = tuple(kept[i] if i in kept else _present(fetched[i]) for i in range(count))
        return Fetched(combine_chunks(file.size, chunks), chunks, file.size - reused, reused)

    def _verified(self, fd: int, size: int, noted: dict[int, bytes]) -> dict[int, bytes]:
        """The chunks of ``noted`` whose bytes on disk still have the noted digest."""
        if not noted or os.fstat(fd).st_size < size:
            return {}
        indexes = sorted(noted)

        def check(index: int) -> bytes | None:
            try:
                actual = chunkio.hash_range(fd, index * CHUNK_SIZE, _chunk_length(size, index))
            except chunkio.Shrunk:
                return None
            return actual if actual == noted[index] else None

        results = gather(self._chunks(), check, indexes)
        return {i: d for i, d in zip(indexes, results, strict=True) if d is not None}


class Budget:
    """A count of bytes that transfers take before a request and give back after it, so
    the bytes held in memory for requests in flight stay bounded."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.free = total
        self._changed = threading.Condition()

    def hold(self, size: int) -> _Held:
        """``size`` bytes of the budget for the ``with`` block, waiting for them if need be.
        A request larger than the budget waits for all of it."""
        return _Held(self, min(size, self.total))


class _Held:
    """Bytes of a :class:`Budget` held for a ``with`` block (a class, not a generator: many
    small files take and give back thousands of times a second)."""

    __slots__ = ("budget", "size")

    def __init__(self, budget: Budget, size: int) -> None:
        self.budget = budget
        self.size = size

    def __enter__(self) -> None:
        budget, size = self.budget, self.size
        with budget._changed:
            if budget.free < size:
                budget._changed.wait_for(lambda: budget.free >= size)
            budget.free -= size

    def __exit__(self, *exc: object) -> None:
        budget = self.budget
        with budget._changed:
            budget.free += self.size
            budget._changed.notify_all()


def gather(pool: ThreadPoolExecutor, work: Callable[[int], _T], items: list[int]) -> list[_T]:
    """``work`` over ``items`` on ``pool``, in order; on a failure, the first error once no
    other item is still running (so nothing writes to a file the caller is about to close)."""
    futures: list[Future[_T]] = [pool.submit(work, item) for item in items]
    error: BaseException | None = None
    results: list[_T] = []
    for future in futures:
        if error is None:
            try:
                results.append(future.result())
            except BaseException as exc:
                error = exc
                for other in futures:
                    other.cancel()
        elif not future.cancelled():
            with contextlib.suppress(BaseException):
                future.result()
    if error is not None:
        raise error
    return results


def _present(digest: bytes | None) -> bytes:
    assert digest is not None  # a fetched chunk always has a digest
    return digest


def _chunk_length(size: int, index: int) -> int:
    return min(CHUNK_SIZE, size - index * CHUNK_SIZE)


def _write_all(fd: int, data: bytes, offset: int) -> None:
    written = os.pwrite(fd, data, offset)
    if written == len(data):
        return  # as a rule: one call
    view = memoryview(data)[written:]
    offset += written
    while view:
        written = os.pwrite(fd, view, offset)
        view = view[written:]
        offset += written


def _preallocate(
    fd: int, size: int, allocate: Callable[[int, int, int], None] | None = None
) -> None:
    """Reserve the file's blocks up front, so a full disk is found before any download."""
    if os.fstat(fd).st_size >= size:
        return
    try:
        (allocate or os.posix_fallocate)(fd, 0, size)
    except OSError as exc:
        if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
            raise
        os.ftruncate(fd, size)
    except AttributeError:  # pragma: no cover - not on Linux
        os.ftruncate(fd, size)


#: The errors of a full disk or quota.
FULL_DISK = frozenset({errno.ENOSPC, errno.EDQUOT})


def write_error(exc: OSError, what: str) -> TaskFailure:
    """:func:`~taskkit.exceptions.from_os_error`, except that a full disk (or quota) names
    the filesystem that is full, which may not be the one the user thinks of."""
    if exc.errno not in FULL_DISK or exc.filename is None:
        return from_os_error(exc, what)
    path = os.fsdecode(exc.filename)
    why = "quota exceeded" if exc.errno == errno.EDQUOT else "no space left on device"
    return IOFailure(
        f"{what} {path!r}: {why}: the filesystem {filesystem(path)} is full",
        path=path,
        errno=exc.errno,
    )


def filesystem(path: str | os.PathLike[str]) -> str:
    """The filesystem holding ``path`` as ``df`` shows it: its mount point, type, device
    and free space, e.g. ``'/mnt/batch' (ext4 on /dev/sdb1, 12.0 MiB free of 16.0 GiB)``."""
    existing = os.path.realpath(path)
    while not os.path.exists(existing) and os.path.dirname(existing) != existing:
        existing = os.path.dirname(existing)
    try:
        device = os.stat(existing).st_dev
        mount = existing
        while os.path.dirname(mount) != mount and os.stat(os.path.dirname(mount)).st_dev == device:
            mount = os.path.dirname(mount)
        usage = os.statvfs(existing)
    except OSError:
        return repr(existing)
    details = [
        " on ".join(_mount_source(mount)),
        f"{format_size(usage.f_bavail * usage.f_frsize)} free of "
        f"{format_size(usage.f_blocks * usage.f_frsize)}",
    ]
    return f"{mount!r} ({', '.join(d for d in details if d)})"


def _mount_source(mount: str) -> tuple[str, ...]:
    """The type and device of the filesystem mounted at ``mount`` (Linux), else nothing."""
    found: tuple[str, ...] = ()
    try:
        with open("/proc/self/mounts", encoding="utf-8", errors="replace") as table:
            for line in table:
                fields = line.split()
                if len(fields) >= 3 and _unescape(fields[1]) == mount:
                    found = (fields[2], _unescape(fields[0]))  # the last mount there wins
    except OSError:
        return ()
    return found


def _unescape(field: str) -> str:
    """A field of ``/proc/self/mounts``, where space, tab, newline and backslash are octal."""
    for code in ("\\040", "\\011", "\\012", "\\134"):
        field = field.replace(code, chr(int(code[1:], 8)))
    return field


def _read_journal(journal: Path, header: str) -> dict[int, bytes]:
    """The chunks a journal notes as written, if it is the journal of this source version."""
    try:
        text = journal.read_text()
    except (FileNotFoundError, UnicodeDecodeError):
        return {}
    if not text.startswith(header):
        return {}
    noted: dict[int, bytes] = {}
    for line in text[len(header) :].split("\n")[:-1]:  # a torn last line has no newline yet
        index, _, hexdigest = line.partition(" ")
        if index.isdigit() and len(hexdigest) == 32:
            with contextlib.suppress(ValueError):
                noted[int(index)] = bytes.fromhex(hexdigest)
    return noted


@contextlib.contextmanager
def locked(partial: str | os.PathLike[str]) -> Iterator[int]:
    """The partial file at ``partial``, created if need be, locked for this process alone.

    Waits while another process holds it. The lock dies with its process, even on ``kill -9``.
    A partial renamed or removed by its holder while this one waited is not the one at the path
    any more: then the file at the path is opened and locked afresh.
    """
    import fcntl

    while True:
        try:
            try:
                fd = os.open(partial, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
            except FileNotFoundError:  # its directory is not there yet
                os.makedirs(os.path.dirname(partial), exist_ok=True)
                fd = os.open(partial, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        except OSError as exc:
            raise write_error(exc, "cannot write") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            if _still_named(partial, fd):
                break
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)
    try:
        yield fd
    finally:
        os.close(fd)  # releases the lock


def claim(partial: str) -> int | None:
    """A partial file at ``partial`` created now and locked by this process, or None when
    one is there already (or another process locked the new one first, or has renamed it
    into place since): then :func:`locked` is the way. Three system calls past the create,
    where :func:`locked` needs more, for the common case of a file downloaded in one request
    with nobody else at it."""
    import fcntl

    try:
        fd = os.open(partial, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
    except (FileExistsError, FileNotFoundError):
        return None
    except OSError as exc:
        raise write_error(exc, "cannot write") from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        # Another process may have opened the new file and locked it first (it took our
        # partial for one left over), written it and renamed it into place: the lock is then
        # on a final file, and the name, if any, another partial's. As locked() checks.
        if _still_named(partial, fd):
            return fd
    except OSError:
        pass
    except BaseException:  # interrupted: the new partial is of no use to anyone
        drop_claimed(partial, fd)
        os.close(fd)
        raise
    os.close(fd)
    return None


def drop_claimed(partial: str, fd: int) -> None:
    """Remove the partial file of one request this process claimed (``fd``) and was
    interrupted writing: the next run fetches such a file whole again, so it would only be
    litter. Only if the name still holds that very file (it may have been renamed into place
    already, and the name claimed by another process since)."""
    with contextlib.suppress(OSError):
        if _still_named(partial, fd):
            os.unlink(partial)


def drop_unlocked(partial: str) -> None:
    """Remove the partial file at ``partial`` unless a process holds it locked (or it is
    not there, or not a regular file)."""
    import fcntl

    try:
        fd = os.open(partial, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return
    try:
        if stat.S_ISREG(os.fstat(fd).st_mode):
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            drop_claimed(partial, fd)
    except OSError:
        pass  # locked by its writer
    finally:
        os.close(fd)


def _still_named(path: str | os.PathLike[str], fd: int) -> bool:
    """Whether ``path`` names the file open at ``fd``: a partial may have been renamed into
    place (or removed) by its holder, and the name taken by another since."""
    try:
        there = os.stat(path)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (mine.st_dev, mine.st_ino) == (there.st_dev, there.st_ino)


def open_partial(partial: Path) -> int:
    """Open (create) a partial file whose lock the caller holds some other way."""
    try:
        partial.parent.mkdir(parents=True, exist_ok=True)
        return os.open(partial, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
    except OSError as exc:
        raise write_error(exc, "cannot write") from exc


def remove_journal(partial: Path) -> None:
    """Delete the journal of a partial file (its download is complete)."""
    Path(f"{partial}{JOURNAL_SUFFIX}").unlink(missing_ok=True)


def remove_partial(partial: Path) -> None:
    """Delete a partial file and its journal (a download that cannot be resumed)."""
    partial.unlink(missing_ok=True)
    remove_journal(partial)
