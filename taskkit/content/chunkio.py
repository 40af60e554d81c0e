"""Reading a file chunk by chunk: the I/O under every taskkit digest of a file on disk.

Reads are positional (``preadv``) into one reused :data:`~taskkit.content.digest.READ_SIZE` buffer
per
thread, so any number of threads can hash chunks of one shared descriptor at once, and memory is
``threads * 512 KiB`` whatever the file size. Each chunk's XXH3-128 is fed piece by piece while the
piece is still in the CPU cache. A read that meets the end of the file before the expected length
raises :class:`Shrunk`; the caller decides whether the file changed or its size lied.
"""

from __future__ import annotations

import os
import threading

import xxhash

from taskkit.content.digest import CHUNK_SIZE, READ_SIZE, hash_chunk
from taskkit.exceptions import IOFailure, MisuseError, from_os_error

__all__ = [
    "OPEN_FLAGS",
    "RUN_CHUNKS",
    "Shrunk",
    "check_jobs",
    "default_jobs",
    "hash_chunks",
    "hash_range",
    "hash_run",
    "pread_into",
    "read_buffer",
    "runs",
]

#: Never block on open (a FIFO swapped in after the stat), never become a controlling terminal.
OPEN_FLAGS = (
    os.O_RDONLY
    | getattr(os, "O_NONBLOCK", 0)
    | getattr(os, "O_NOCTTY", 0)
    | getattr(os, "O_CLOEXEC", 0)
    | getattr(os, "O_BINARY", 0)
)
#: Chunks in one work item of a pool at most (512 MiB).
RUN_CHUNKS = 64


class Shrunk(Exception):
    """The file ended before the bytes that were asked for."""


def default_jobs() -> int:
    """The number of CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def check_jobs(jobs: int | None) -> int:
    """``jobs`` as given, or :func:`default_jobs` for None; anything but an int >= 1 is misuse."""
    if jobs is None:
        return default_jobs()
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise MisuseError(f"jobs must be a whole number >= 1, not {jobs!r}")
    return jobs


if hasattr(os, "preadv"):

    def pread_into(fd: int, view: memoryview, offset: int) -> int:
        """Read into ``view`` from ``offset`` of ``fd``; the descriptor's position is untouched."""
        return os.preadv(fd, [view], offset)

else:  # pragma: no cover - Windows: no positional reads, so reads of one descriptor take turns
    _seek_lock = threading.Lock()

    def pread_into(fd: int, view: memoryview, offset: int) -> int:
        """Read into ``view`` from ``offset`` of ``fd``."""
        with _seek_lock:
            os.lseek(fd, offset, os.SEEK_SET)
            return os.readv(fd, [view])


_local = threading.local()


def read_buffer() -> memoryview:
    """This thread's reusable read buffer."""
    view: memoryview | None = getattr(_local, "buffer", None)
    if view is None:
        view = _local.buffer = memoryview(bytearray(READ_SIZE))
    return view


def hash_range(fd: int, offset: int, length: int) -> bytes:
    """The XXH3-128 of ``length`` bytes of ``fd`` from ``offset``, read in cache-sized pieces."""
    buf = read_buffer()
    end = offset + length
    if length <= READ_SIZE:
        got = 0
        while got < length:
            n = pread_into(fd, buf[got:length], offset + got)
            if n == 0:
                raise Shrunk
            got += n
        return hash_chunk(buf[:length])
    hasher = xxhash.xxh3_128()
    while offset < end:
        n = pread_into(fd, buf[: min(READ_SIZE, end - offset)], offset)
        if n == 0:
            raise Shrunk
        hasher.update(buf[:n])
        offset += n
    return hasher.digest()


def hash_run(fd: int, size: int, first: int, count: int) -> list[bytes]:
    """The digests of ``count`` consecutive chunks of a file of ``size`` bytes."""
    return [
        hash_range(fd, i * CHUNK_SIZE, min(CHUNK_SIZE, size - i * CHUNK_SIZE))
        for i in range(first, first + count)
    ]


def runs(chunks: int, jobs: int, first: int = 0) -> list[tuple[int, int]]:
    """Chunks ``first ..`` cut into ``(first, count)`` runs for a pool: about four runs per
    thread, so that the threads finish together, and at most :data:`RUN_CHUNKS` chunks each, so
    that a huge file is a bounded number of work items."""
    per_run = min(RUN_CHUNKS, max(1, -(-chunks // (4 * jobs))))
    return [(i, min(per_run, first + chunks - i)) for i in range(first, first + chunks, per_run)]


def hash_chunks(
    path: str | os.PathLike[str],
    first: int = 0,
    count: int | None = None,
    *,
    jobs: int | None = None,
) -> list[bytes]:
    """The digests of chunks ``first``, ``first + 1``, ... of a file as it is now on disk.

    Chunks past the end of the file are not returned; a short last chunk is hashed as it is.
    Staging uses this to check the chunks of a partial download before it resumes.
    """
    workers = check_jobs(jobs)
    try:
        fd = os.open(path, OPEN_FLAGS)
    except OSError as exc:
        raise from_os_error(exc, "cannot hash") from exc
    try:
        size = os.fstat(fd).st_size
        available = max(0, -(-size // CHUNK_SIZE) - first)
        work = runs(available if count is None else min(count, available), workers, first)
        try:
            if workers == 1 or len(work) < 2:
                return [d for run in work for d in hash_run(fd, size, *run)]
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(min(workers, len(work))) as pool:
                parts = pool.map(lambda run: hash_run(fd, size, *run), work)
                return [d for part in parts for d in part]
        except Shrunk:
            raise IOFailure(
                f"cannot hash {os.fspath(path)!r}: it shrank while being read", path=path
            ) from None
        except OSError as exc:
            raise from_os_error(exc, "cannot hash") from exc
    finally:
        os.close(fd)
