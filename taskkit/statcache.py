"""The stat-cache: a file that has not changed since it was hashed is not read again.

One SQLite file per node (``statcache-v1.sqlite3`` in :func:`default_cache_dir`) maps an absolute
path to the identity of the file version that was hashed, ``(dev, ino, size, mtime_ns,
ctime_ns)``, its digest and chunk digests, when it was recorded and, optionally, where its bytes
came from (source URL and etag, written by staging).

Invariants:

* An entry is trusted only if the file's identity is unchanged **and** the file had not been
  touched within :data:`RACY_WINDOW_NS` before the entry was recorded (git's racy-timestamp
  guard: a write inside the same timestamp tick as the recorded one leaves the identity as it
  was). ``ctime`` cannot be set back by a program, so a same-size rewrite whose mtime was put
  back with ``os.utime`` is still seen.
* The recording time is taken *before* the file is read, so a write during the read can never
  hide behind it.
* Every row carries a checksum of its own fields; a row that fails it is a miss.
* A corrupt cache file is set aside (renamed ``*.corrupt-<time>``) and rebuilt with one warning;
  a cache that cannot be opened or written is skipped with one warning. Neither ever yields a
  digest, and neither fails the hashing.
* Several processes may use one cache at once: WAL journal, a busy timeout, short write
  transactions.
"""

from __future__ import annotations

import itertools
import logging
import os
import sqlite3
import struct
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import xxhash

from taskkit.digest import Digest

__all__ = [
    "RACY_WINDOW_NS",
    "CacheEntry",
    "FileStat",
    "StatCache",
    "default_cache_dir",
    "path_key",
]

log = logging.getLogger("taskkit")

#: Timestamps within this long before the recording time make an entry racy. 2 s covers the
#: coarsest common filesystem clock (FAT); finer filesystems only pay a re-hash of files written
#: in the two seconds before they were hashed.
RACY_WINDOW_NS = 2_000_000_000
FILE_NAME = "statcache-v1.sqlite3"
BUSY_TIMEOUT_S = 30.0
_LOOKUP_BATCH = 500
_I64 = 1 << 63

_SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    path BLOB PRIMARY KEY,
    ident BLOB NOT NULL,
    digest BLOB NOT NULL,
    chunks BLOB,
    recorded_ns INTEGER NOT NULL,
    source TEXT,
    etag TEXT,
    checksum INTEGER NOT NULL
) WITHOUT ROWID
"""


def default_cache_dir() -> Path:
    """``$TASKKIT_CACHE_DIR``, else ``$AZ_BATCH_NODE_SHARED_DIR/taskkit``, else the user cache."""
    explicit = os.environ.get("TASKKIT_CACHE_DIR")
    if explicit:
        return Path(explicit)
    shared = os.environ.get("AZ_BATCH_NODE_SHARED_DIR")
    if shared:
        return Path(shared) / "taskkit"
    if sys.platform == "win32":
        base = os.environ.get("LOCALAPPDATA") or str(Path.home() / "AppData" / "Local")
        return Path(base) / "taskkit" / "Cache"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches" / "taskkit"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "taskkit"


def path_key(path: str | os.PathLike[str]) -> bytes:
    """The cache key of a path: its absolute form as bytes (any name, even not UTF-8, fits)."""
    return os.fsencode(os.path.abspath(path))


def _signed(value: int) -> int:
    """dev and ino are unsigned 64-bit; SQLite integers are signed."""
    return value - (1 << 64) if value >= _I64 else value


_IDENT = struct.Struct("<5q")


def _ident(st: os.stat_result | FileStat) -> bytes:
    """A file version's identity packed as stored: dev, ino, size, mtime_ns, ctime_ns."""
    if isinstance(st, FileStat):
        return _IDENT.pack(_signed(st.dev), _signed(st.ino), st.size, st.mtime_ns, st.ctime_ns)
    return _IDENT.pack(
        _signed(st.st_dev), _signed(st.st_ino), st.st_size, st.st_mtime_ns, st.st_ctime_ns
    )


@dataclass(frozen=True, slots=True)
class FileStat:
    """The identity of one version of a file, as ``stat`` reports it."""

    dev: int
    ino: int
    size: int
    mtime_ns: int
    ctime_ns: int

    @classmethod
    def from_stat(cls, st: os.stat_result) -> FileStat:
        return cls(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


class CacheEntry(NamedTuple):
    """What the cache knows of one path: an immutable value.

    ``path`` is a :func:`path_key`; ``ident`` the packed identity of the file version that was
    hashed (see :attr:`stat`); ``recorded_ns`` when it was recorded (taken before the file was
    read); ``source`` and ``etag`` where its bytes came from. Build one with :meth:`of`.
    """

    path: bytes
    ident: bytes
    digest: Digest
    chunks: tuple[bytes, ...]
    recorded_ns: int
    source: str | None = None
    etag: str | None = None

    @classmethod
    def of(
        cls,
        path: bytes,
        stat: FileStat | os.stat_result,
        digest: Digest,
        chunks: tuple[bytes, ...],
        recorded_ns: int,
        source: str | None = None,
        etag: str | None = None,
    ) -> CacheEntry:
        return cls(path, _ident(stat), digest, chunks, recorded_ns, source, etag)

    @property
    def stat(self) -> FileStat:
        dev, ino, size, mtime_ns, ctime_ns = _IDENT.unpack(self.ident)
        return FileStat(dev % (1 << 64), ino % (1 << 64), size, mtime_ns, ctime_ns)

    @classmethod
    def _from_row(cls, row: _Row) -> CacheEntry | None:
        """The entry a row holds, or None if the row fails its checksum."""
        path, ident, digest, chunks, recorded_ns, source, etag, checksum = row
        if _checksum(path, ident, digest, chunks, recorded_ns, source, etag) != checksum:
            return None
        parts = (
            (digest,)
            if chunks is None
            else tuple(chunks[i : i + 16] for i in range(0, len(chunks), 16))
        )
        return cls(path, ident, Digest(digest), parts, recorded_ns, source, etag)

    def _row(self) -> _Row:
        chunks = b"".join(self.chunks) if len(self.chunks) > 1 else None
        checksum = _checksum(
            self.path,
            self.ident,
            self.digest.value,
            chunks,
            self.recorded_ns,
            self.source,
            self.etag,
        )
        return (
            self.path,
            self.ident,
            self.digest.value,
            chunks,
            self.recorded_ns,
            self.source,
            self.etag,
            checksum,
        )


_Row = tuple[bytes, bytes, bytes, "bytes | None", int, "str | None", "str | None", int]
_LENGTHS = struct.Struct("<4Qq")


def _checksum(
    path: bytes,
    ident: bytes,
    digest: bytes,
    chunks: bytes | None,
    recorded_ns: int,
    source: str | None,
    etag: str | None,
) -> int:
    """XXH3-64 over every field of a row, each length-prefixed so fields cannot trade bytes."""
    extra = b""
    src = et = b""
    if source is not None or etag is not None:
        src = (source or "").encode("utf-8", "surrogateescape")
        et = (etag or "").encode("utf-8", "surrogateescape")
        extra = src + et
    chunks = chunks or b""
    head = _LENGTHS.pack(len(path), len(chunks), len(src), len(et), recorded_ns)
    return _signed(xxhash.xxh3_64_intdigest(head + path + ident + digest + chunks + extra))


class StatCache:
    """A persistent map from a file version to its digest. See the module docstring.

    ``clock`` returns nanoseconds since the epoch and stamps new entries; tests pass their own.
    """

    def __init__(
        self, path: str | os.PathLike[str], *, clock: Callable[[], int] = time.time_ns
    ) -> None:
        self.path = Path(path)
        self.clock = clock
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        self._disabled = False
        self._ident: tuple[int, int] | None = None

    @classmethod
    def open(
        cls,
        directory: str | os.PathLike[str] | None = None,
        *,
        clock: Callable[[], int] = time.time_ns,
    ) -> StatCache:
        """The cache in ``directory`` (default :func:`default_cache_dir`)."""
        root = default_cache_dir() if directory is None else Path(directory)
        return cls(root / FILE_NAME, clock=clock)

    def __repr__(self) -> str:
        return f"StatCache({str(self.path)!r})"

    def __enter__(self) -> StatCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    # -- reading -------------------------------------------------------------------------------

    def lookup(self, keys: Sequence[bytes]) -> dict[bytes, CacheEntry]:
        """The entries stored for ``keys`` (from :func:`path_key`), not yet checked for freshness.

        When ``keys`` are sorted, as a directory walk yields them, ranges are read instead of
        single keys: one query for each few hundred files.
        """
        found: dict[bytes, CacheEntry] = {}
        for start in range(0, len(keys), _LOOKUP_BATCH):
            batch = keys[start : start + _LOOKUP_BATCH]
            if all(a < b for a, b in itertools.pairwise(batch)):
                sql = "SELECT * FROM files WHERE path BETWEEN ? AND ?"
                params: Sequence[bytes] = (batch[0], batch[-1])
            else:
                sql = f"SELECT * FROM files WHERE path IN ({','.join('?' * len(batch))})"
                params = batch
            for row in self._query(sql, params):
                entry = CacheEntry._from_row(row)
                if entry is not None:
                    found[entry.path] = entry
        return found

    def get(self, path: str | os.PathLike[str], st: os.stat_result | FileStat) -> CacheEntry | None:
        """The trusted entry for ``path`` whose version is ``st``, or None."""
        key = path_key(path)
        entry = self.lookup([key]).get(key)
        return entry if entry is not None and self.fresh(entry, st) else None

    @staticmethod
    def fresh(entry: CacheEntry, st: os.stat_result | FileStat) -> bool:
        """Whether ``entry`` may be trusted for a file whose current version is ``st``."""
        if isinstance(st, FileStat):
            touched = max(st.mtime_ns, st.ctime_ns)
        else:
            touched = max(st.st_mtime_ns, st.st_ctime_ns)
        return touched + RACY_WINDOW_NS <= entry.recorded_ns and entry.ident == _ident(st)

    # -- writing -------------------------------------------------------------------------------

    def record(self, entries: Iterable[CacheEntry]) -> None:
        """Store ``entries`` in one short transaction, replacing what was there."""
        rows = [entry._row() for entry in entries]
        if rows:
            self._write("INSERT OR REPLACE INTO files VALUES (?,?,?,?,?,?,?,?)", rows)

    def forget(self, keys: Iterable[bytes]) -> None:
        """Drop the entries of ``keys``."""
        rows = [(key,) for key in keys]
        if rows:
            self._write("DELETE FROM files WHERE path = ?", rows)

    # -- the database, and what to do when it fails ----------------------------------------------

    def _query(self, sql: str, params: Sequence[bytes]) -> list[_Row]:
        with self._lock:
            for _ in range(2):
                db = self._connect()
                if db is None:
                    return []
                try:
                    return db.execute(sql, params).fetchall()
                except sqlite3.DatabaseError as exc:
                    self._failed(exc)
            return []

    def _write(self, sql: str, rows: list[tuple]) -> None:  # type: ignore[type-arg]
        with self._lock:
            for _ in range(2):
                db = self._connect()
                if db is None:
                    return
                try:
                    db.execute("BEGIN IMMEDIATE")
                    try:
                        db.executemany(sql, rows)
                    except BaseException:
                        db.execute("ROLLBACK")
                        raise
                    db.execute("COMMIT")
                    return
                except sqlite3.DatabaseError as exc:
                    self._failed(exc)

    def _connect(self) -> sqlite3.Connection | None:
        if self._db is not None or self._disabled:
            return self._db
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(
                self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
            )
        except (OSError, sqlite3.Error) as exc:
            self._disable(exc)
            return None
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute(_SCHEMA)
        except sqlite3.DatabaseError as exc:
            db.close()
            self._failed(exc)
            return self._db
        st = os.stat(self.path)
        self._ident = (st.st_dev, st.st_ino)
        self._db = db
        return db

    def _failed(self, exc: sqlite3.DatabaseError) -> None:
        """Decide between "corrupt: set aside and rebuild" and "unusable: do without"."""
        if self._db is not None:
            self._db.close()
            self._db = None
        if isinstance(exc, sqlite3.OperationalError):
            # locked past the busy timeout, read-only, out of disk: the file may be fine.
            self._disable(exc)
            return
        aside = self.path.with_name(f"{self.path.name}.corrupt-{time.time_ns()}")
        try:
            st = os.stat(self.path)
            # Another process may have rebuilt it already; never set aside a healthy new file.
            if self._ident is None or self._ident == (st.st_dev, st.st_ino):
                os.replace(self.path, aside)
            for suffix in ("-wal", "-shm"):
                Path(f"{self.path}{suffix}").unlink(missing_ok=True)
        except OSError as err:
            self._disable(err)
            return
        self._ident = None
        log.warning(
            "stat-cache %s was corrupt (%s): set aside as %s and rebuilt",
            self.path,
            exc,
            aside.name,
        )

    def _disable(self, exc: BaseException) -> None:
        if not self._disabled:
            self._disabled = True
            log.warning("stat-cache %s is not usable (%s): hashing without it", self.path, exc)
