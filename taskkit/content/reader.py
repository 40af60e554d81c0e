"""A second process that reads and hashes small files, so that a many-file hash uses two cores.

Hashing many small files is system calls (open, fstat, read, close) wrapped in Python; threads
cannot share that work, since each call gives up the GIL and waits to take it back. A forked
reader process does the reads, the hashing and the packing of stat-cache entries, while the
calling process walks, consults the stat-cache (and checks there the files it knows: a stat
and a compare cost less than sending them), writes the results and records them.

Invariants:

* The reader may only say "here is the entry" or "not me": any file it cannot read in one go
  (an error, not a regular file, empty, larger than :data:`~taskkit.content.digest.READ_SIZE`,
  a read shorter than its stat) is "not me", and the caller hashes it itself, so every error
  and every odd file is handled in one place, exactly as without a reader.
* An entry carries the ``fstat`` of the descriptor read, taken before the read, and the
  recording time the caller took before sending the request, so it passes the stat-cache's
  racy-timestamp guard only as an entry made by the caller would.
* The caller never waits: an answer not yet there when needed is taken back
  (:meth:`Reader.take_back`) and the caller hashes those files; the reader skips a request
  taken back before it starts it, and a late answer is dropped. A reader slow to be scheduled
  on a busy machine costs little, and one that dies costs nothing but its files' re-reads.
* Answers in flight never exceed the reply pipe's capacity, so the reader never blocks on a
  full pipe while the caller blocks on the other one.
* It is forked only on Linux and only by a process with one thread (forking a threaded
  process can leave a lock held forever in the child). It ends when its request pipe closes,
  and :meth:`Reader.close` also kills and reaps it: no run leaves a process behind.

Protocol: a request is a :data:`_HEAD` (length of the paths, recording time) and the
NUL-separated :func:`~taskkit.content.statcache.path_key` paths (a path cannot hold a NUL); the
reply is one fixed :data:`REPLY` record per path, in order.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import signal
import stat
import struct
import sys
import threading
from collections import deque
from collections.abc import Sequence

from taskkit.content import chunkio
from taskkit.content.digest import READ_SIZE, Digest, hash_chunk
from taskkit.content.statcache import CacheEntry, FileStat

__all__ = ["ENTRY_SIZE", "MAX_BATCH", "REPLY", "Reader"]

#: Paths in one request at most.
MAX_BATCH = 256
#: The stat-cache entry of a file read in one piece: its size is fixed.
ENTRY_SIZE = len(CacheEntry.of(b"", FileStat(0, 0, 0, 0, 0), Digest(bytes(16)), [bytes(16)], 0).raw)
#: One reply: read (1) or not (0), then the file's stat-cache entry (zeros when not read).
REPLY = struct.Struct(f"<B{ENTRY_SIZE}s")
#: A request's head: its length, and the time to stamp new entries with.
_HEAD = struct.Struct("<Iq")
#: Requests unanswered at most; a request's "taken back" byte is at its number modulo this.
_RING = 64
#: The signals whose handlers the caller may have set and the reader must not run.
_OWN_SIGNALS = {
    getattr(signal, name)
    for name in ("SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2", "SIGALRM")
    if hasattr(signal, name)
}
#: The reply pipe's size asked for: room for the answers to many requests at once.
_PIPE_WANTED = 1 << 20
_NOT_ME = REPLY.pack(0, b"")


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _read_exact(fd: int, size: int) -> bytes:
    """``size`` bytes, or fewer if the pipe ends first."""
    parts = []
    while size:
        part = os.read(fd, size)
        if not part:
            break
        parts.append(part)
        size -= len(part)
    return b"".join(parts)


def _hash_one(path: bytes, buf: memoryview, recorded_ns: int) -> bytes:
    try:
        fd = os.open(path, chunkio.OPEN_FLAGS)
    except OSError:
        return _NOT_ME
    try:
        st = os.fstat(fd)
        size = st.st_size
        if not stat.S_ISREG(st.st_mode) or not 0 < size <= READ_SIZE:
            return _NOT_ME
        if os.preadv(fd, [buf[:size]], 0) != size:
            return _NOT_ME
        digest = hash_chunk(buf[:size])
        entry = CacheEntry.of(path, st, Digest(digest), (digest,), recorded_ns).raw
        return REPLY.pack(1, entry) if len(entry) == ENTRY_SIZE else _NOT_ME
    except OSError:
        return _NOT_ME
    finally:
        os.close(fd)


def _serve(requests: int, replies: int, taken: mmap.mmap) -> None:
    """The reader's whole life: answer requests until the request pipe ends. A request the
    caller has taken back (its byte in ``taken`` set) is answered "not me" without reading."""
    buf = memoryview(bytearray(READ_SIZE))
    seq = 0
    while True:
        head = _read_exact(requests, _HEAD.size)
        if len(head) < _HEAD.size:
            return
        length, recorded_ns = _HEAD.unpack(head)
        payload = _read_exact(requests, length)
        slot = seq % _RING
        seq += 1
        out = [
            _NOT_ME if taken[slot] else _hash_one(path, buf, recorded_ns)
            for path in payload.split(b"\0")
        ]
        _write_all(replies, b"".join(out))


class Reader:
    """The caller's end of a reader process. Use :meth:`start`; always :meth:`close`.

    Requests are numbered in the order sent. The caller never waits for an answer: if it is
    not there yet when needed, :meth:`take_back` lets the caller hash those files itself (the
    reader skips them if it has not started, and its late answer is dropped), so a reader
    that is slow to be scheduled on a busy machine costs little.
    """

    def __init__(self, pid: int, requests: int, replies: int, taken: mmap.mmap) -> None:
        self.pid = pid
        self._requests = requests
        self._replies = replies
        self._taken = taken
        self.alive = True
        self._closed = False
        self._sent = 0
        self._inbox = bytearray()
        #: Requests not yet answered in full, oldest first: (number, reply bytes, dropped).
        self._waiting: deque[list[int]] = deque()
        self._answered: dict[int, bytes] = {}
        self._capacity = _pipe_size(replies)
        _pipe_size(requests)  # a larger request pipe, so that sending seldom waits

    @classmethod
    def start(cls) -> Reader | None:
        """A new reader process, or None where one cannot be forked safely."""
        if sys.platform != "linux" or threading.active_count() > 1:
            return None
        fds: list[int] = []
        # Signals wait (blocked) across the fork, so that none reaches the child before it
        # has dropped the caller's handlers; the caller gets any that came meanwhile.
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, _OWN_SIGNALS)
        try:
            taken = mmap.mmap(-1, _RING)  # shared with the child: MAP_SHARED by default
            for _ in range(2):
                fds.extend(os.pipe())
            req_r, req_w, rep_r, rep_w = fds
            pid = os.fork()
        except OSError:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
            for fd in fds:
                os.close(fd)
            return None
        if pid == 0:  # pragma: no cover - the child; coverage does not follow a fork
            code = 0
            try:
                os.close(req_w)
                os.close(rep_r)
                # Ctrl-C is the caller's to handle: it closes the pipe, which ends this loop.
                # The caller's own handlers (a runner forwarding SIGTERM to its task, say)
                # must not run here: any other signal ends the reader.
                for signum in _OWN_SIGNALS:
                    signal.signal(signum, signal.SIG_DFL)
                signal.signal(signal.SIGINT, signal.SIG_IGN)
                signal.pthread_sigmask(signal.SIG_SETMASK, mask)
                _serve(req_r, rep_w, taken)
            except BaseException:
                code = 1
            finally:
                os._exit(code)  # never the caller's cleanup, atexit hooks or buffered output
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        os.close(req_r)
        os.close(rep_w)
        os.set_blocking(rep_r, False)
        return cls(pid, req_w, rep_r, taken)

    def send(self, paths: Sequence[bytes], recorded_ns: int) -> int | None:
        """Ask for ``paths`` (at most :data:`MAX_BATCH`, each a :func:`path_key`), their
        entries to be stamped ``recorded_ns``; the request's number, or None if the reader is
        gone or its answers in flight would not fit the pipe (the caller hashes them itself)."""
        return self._send(b"\0".join(paths), len(paths) * REPLY.size, recorded_ns)

    def _send(self, payload: bytes, reply: int, recorded_ns: int) -> int | None:
        self._collect()
        in_flight = sum(size for _, size, _ in self._waiting)
        if not self.alive or in_flight + reply > self._capacity or len(self._waiting) >= _RING:
            return None
        seq = self._sent
        self._taken[seq % _RING] = 0
        try:
            _write_all(self._requests, _HEAD.pack(len(payload), recorded_ns) + payload)
        except OSError:  # EPIPE: it died
            self.alive = False
            return None
        self._sent += 1
        self._waiting.append([seq, reply, 0])
        return seq

    def answers(self, seq: int, paths: Sequence[bytes]) -> list[CacheEntry | None] | None:
        """The answers to request ``seq`` (of ``paths``) if they are all here: for each path
        its stat-cache entry, or None if the caller must hash it itself. None if they are
        not all here yet: see :meth:`take_back`."""
        self._collect()
        data = self._answered.pop(seq, None)
        if data is None:
            return None
        new = tuple.__new__
        return [
            new(CacheEntry, (path, raw)) if read else None
            for path, (read, raw) in zip(paths, REPLY.iter_unpack(data), strict=True)
        ]

    def take_back(self, seq: int) -> None:
        """Request ``seq`` will be hashed by the caller: the reader skips what it has not
        read yet, and its answer is dropped."""
        self._taken[seq % _RING] = 1
        self._answered.pop(seq, None)  # arrived already (collected while sending another)
        for waiting in self._waiting:
            if waiting[0] == seq:
                waiting[2] = 1

    def _collect(self) -> None:
        """Read what answers have arrived, without waiting."""
        while self.alive:
            try:
                part = os.read(self._replies, 1 << 16)
            except BlockingIOError:
                break
            except OSError:
                part = b""
            if not part:  # the reader is gone: whatever it still owed, the caller hashes
                self.alive = False
                break
            self._inbox += part
        while self._waiting and len(self._inbox) >= self._waiting[0][1]:
            seq, size, dropped = self._waiting.popleft()
            if not dropped:
                self._answered[seq] = bytes(self._inbox[:size])
            del self._inbox[:size]

    def close(self) -> None:
        """End the reader and reap it, whatever it was doing (once; later calls do nothing)."""
        if self._closed:
            return
        self._closed = True
        for fd in (self._requests, self._replies):
            with contextlib.suppress(OSError):
                os.close(fd)
        with contextlib.suppress(OSError):
            os.kill(self.pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(self.pid, 0)
        self._taken.close()
        self.alive = False


def _pipe_size(fd: int) -> int:
    """How many bytes the pipe ``fd`` holds, after asking for :data:`_PIPE_WANTED`."""
    import fcntl

    try:
        return fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, _PIPE_WANTED)
    except (OSError, AttributeError):
        try:
            return fcntl.fcntl(fd, fcntl.F_GETPIPE_SZ)
        except (OSError, AttributeError):
            return 65536
