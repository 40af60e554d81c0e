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

import contextlib
import itertools
import logging
import os
import sqlite3
import struct
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import NamedTuple, TypeVar

import xxhash

from taskkit.content.digest import Digest
from taskkit.content.walk import Absolutes, absolute

__all__ = [
    "RACY_WINDOW_NS",
    "CacheEntry",
    "FileStat",
    "PathKeys",
    "Provenance",
    "StatCache",
    "default_cache_dir",
    "keyed_paths",
    "path_key",
    "path_keys",
]

log = logging.getLogger("taskkit")
_T = TypeVar("_T")

#: Timestamps within this long before the recording time make an entry racy. 2 s covers the
#: coarsest common filesystem clock (FAT); finer filesystems only pay a re-hash of files written
#: in the two seconds before they were hashed.
RACY_WINDOW_NS = 2_000_000_000
FILE_NAME = "statcache-v1.sqlite3"
SCHEMA_VERSION = 1
BUSY_TIMEOUT_S = 30.0
_LOOKUP_BATCH = 500
_I64 = 1 << 63

# One row per path; the entry is one packed blob (see CacheEntry), which SQLite reads and writes
# several times faster than the same fields as columns.
_SCHEMA = """
CREATE TABLE files (path BLOB PRIMARY KEY, entry BLOB NOT NULL) WITHOUT ROWID
"""


def default_cache_dir(environ: Mapping[str, str] | None = None) -> Path:
    """``$TASKKIT_CACHE_DIR``, else ``$AZ_BATCH_NODE_SHARED_DIR/taskkit``, else the user cache
    (the variables of ``environ``, default: this process's)."""
    env = os.environ if environ is None else environ
    explicit = env.get("TASKKIT_CACHE_DIR")
    if explicit:
        return Path(explicit)
    shared = env.get("AZ_BATCH_NODE_SHARED_DIR")
    if shared:
        return Path(shared) / "taskkit"
    if sys.platform == "win32":
        base = env.get("LOCALAPPDATA") or str(Path.home() / "AppData" / "Local")
        return Path(base) / "taskkit" / "Cache"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches" / "taskkit"
    return Path(env.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "taskkit"


def path_key(path: str | os.PathLike[str]) -> bytes:
    """The cache key of a path: :func:`taskkit.content.walk.absolute` as bytes (any name fits)."""
    return os.fsencode(absolute(os.fsdecode(path)))


class PathKeys:
    """:func:`path_key` for many paths below few directories: each directory is resolved once
    (:class:`~taskkit.content.walk.Absolutes`). For the length of one operation."""

    def __init__(self) -> None:
        self._absolutes = Absolutes()

    def __call__(self, path: str) -> bytes:
        # os.fsencode, without its checks: the file system encoding on POSIX
        return self._absolutes(path).encode(_FS_ENCODING, _FS_ERRORS)


_FS_ENCODING, _FS_ERRORS = sys.getfilesystemencoding(), sys.getfilesystemencodeerrors()


def keyed_paths(keys: Iterable[bytes]) -> list[str]:
    """The paths of cache keys: :func:`os.fsdecode` of each, without its checks."""
    return [key.decode(_FS_ENCODING, _FS_ERRORS) for key in keys]


def path_keys(paths: Iterable[str | os.PathLike[str]]) -> list[bytes]:
    """:func:`path_key` of each of ``paths``, each directory resolved once (:class:`PathKeys`)."""
    keys = PathKeys()
    return [keys(os.fspath(path)) for path in paths]


def _signed(value: int) -> int:
    """dev and ino are unsigned 64-bit; SQLite integers are signed."""
    return value - (1 << 64) if value >= _I64 else value


_IDENT = struct.Struct("<5q")


def _ident(st: os.stat_result | FileStat) -> bytes:
    """A file version's identity packed as stored: dev, ino, size, mtime_ns, ctime_ns."""
    if isinstance(st, FileStat):
        return _IDENT.pack(_signed(st.dev), _signed(st.ino), st.size, st.mtime_ns, st.ctime_ns)
    dev, ino = st.st_dev, st.st_ino
    if dev >= _I64 or ino >= _I64:
        dev, ino = _signed(dev), _signed(ino)
    return _IDENT.pack(dev, ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


class FileStat(NamedTuple):
    """The identity of one version of a file, as ``stat`` reports it."""

    dev: int
    ino: int
    size: int
    mtime_ns: int
    ctime_ns: int

    @classmethod
    def from_stat(cls, st: os.stat_result) -> FileStat:
        return cls(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


class Provenance(NamedTuple):
    """Where a file's bytes are expected to come from: ``source`` at ``etag``, of ``digest``."""

    source: str
    etag: str
    digest: Digest


# The packed entry: checksum u64 | ident 40 | recorded_ns i64 | digest 16 | chunk count u32 |
# the chunk digests when more than one | source length u32, source | etag length u32, etag.
# The checksum is XXH3-64 over the path and everything after the checksum.
_HEAD = struct.Struct("<Q40sq16sI")
_U32 = struct.Struct("<I")
_CHECKSUM = struct.Struct("<Q")
_RECORDED = struct.Struct("<q")  # at offset 48
_SIZE = struct.Struct("<q")  # at offset 24, in the identity
_NO_TEXTS = bytes(8)  # two empty texts


class CacheEntry(NamedTuple):
    """What the cache knows of one path: an immutable value, decoded from its row on demand.

    ``path`` is a :func:`path_key` and ``raw`` the packed entry; read it through :attr:`stat`
    (the file version that was hashed), :attr:`digest`, :attr:`chunks`, :attr:`recorded_ns`
    (when, taken before the file was read), :attr:`source` and :attr:`etag` (where its bytes
    came from). Build one with :meth:`of`.
    """

    path: bytes
    raw: bytes

    @classmethod
    def of(
        cls,
        path: bytes,
        stat: FileStat | os.stat_result,
        digest: Digest,
        chunks: Sequence[bytes],
        recorded_ns: int,
        source: str | None = None,
        etag: str | None = None,
    ) -> CacheEntry:
        many = len(chunks) > 1
        body = [
            _HEAD.pack(0, _ident(stat), recorded_ns, digest.value, len(chunks))[8:],
            b"".join(chunks) if many else b"",
        ]
        if source is None and etag is None:
            body.append(_NO_TEXTS)
        else:
            for text in (source, etag):
                raw = (text or "").encode("utf-8", "surrogateescape")
                body += [_U32.pack(len(raw)), raw]
        rest = b"".join(body)
        checksum = xxhash.xxh3_64_intdigest(path + rest)
        return cls(path, _CHECKSUM.pack(checksum) + rest)

    def valid(self) -> bool:
        """Whether the entry is whole and passes its checksum."""
        raw = self.raw
        return len(raw) >= _HEAD.size and (
            xxhash.xxh3_64_intdigest(self.path + raw[8:]) == _CHECKSUM.unpack_from(raw)[0]
        )

    @property
    def ident(self) -> bytes:
        """The packed identity (dev, ino, size, mtime_ns, ctime_ns) of the hashed version."""
        return self.raw[8:48]

    @property
    def stat(self) -> FileStat:
        dev, ino, size, mtime_ns, ctime_ns = _IDENT.unpack(self.ident)
        return FileStat(dev % (1 << 64), ino % (1 << 64), size, mtime_ns, ctime_ns)

    @property
    def size(self) -> int:
        """The size of the hashed version (:attr:`stat`'s, without decoding the rest)."""
        return int(_SIZE.unpack_from(self.raw, 24)[0])

    @property
    def recorded_ns(self) -> int:
        return int(_RECORDED.unpack_from(self.raw, 48)[0])

    @property
    def digest(self) -> Digest:
        return Digest(self.raw[56:72])

    @property
    def chunks(self) -> tuple[bytes, ...]:
        (count,) = _U32.unpack_from(self.raw, 72)
        if count <= 1:
            return (self.raw[56:72],)
        start = _HEAD.size
        return tuple(self.raw[start + 16 * i : start + 16 * (i + 1)] for i in range(count))

    def came_from(self, source: str, etag: str) -> bool:
        """Whether the entry's provenance is ``source`` at version ``etag`` (without decoding)."""
        raw = self.raw
        two = etag.encode("utf-8", "surrogateescape")
        if not two or not raw.endswith(two):  # stored empty, a text reads as none
            return False
        (count,) = _U32.unpack_from(raw, 72)
        at = _HEAD.size + (16 * count if count > 1 else 0)
        one = source.encode("utf-8", "surrogateescape")
        return bool(one) and raw[at:] == b"".join(
            (_U32.pack(len(one)), one, _U32.pack(len(two)), two)
        )

    def from_source(self, source: str, etag: str) -> CacheEntry:
        """This entry (same version, digest and recording time: the same trust) with its
        provenance ``source`` at ``etag``, made without decoding it."""
        (count,) = _U32.unpack_from(self.raw, 72)
        rest = [self.raw[8 : _HEAD.size + (16 * count if count > 1 else 0)]]
        for text in (source, etag):
            raw = text.encode("utf-8", "surrogateescape")
            rest += [_U32.pack(len(raw)), raw]
        body = b"".join(rest)
        return CacheEntry(
            self.path, _CHECKSUM.pack(xxhash.xxh3_64_intdigest(self.path + body)) + body
        )

    def vouched(self, provenance: Provenance) -> CacheEntry:
        """This entry with ``provenance`` when it holds the digest named there and does not
        say so yet; else this entry as it is (a file that differs is never vouched for)."""
        source, etag, digest = provenance
        if self.raw[56:72] != digest.value or self.came_from(source, etag):
            return self
        return self.from_source(source, etag)

    def _texts(self) -> tuple[str | None, str | None]:
        (count,) = _U32.unpack_from(self.raw, 72)
        at = _HEAD.size + (16 * count if count > 1 else 0)
        texts: list[str | None] = []
        for _ in range(2):
            (n,) = _U32.unpack_from(self.raw, at)
            texts.append(self.raw[at + 4 : at + 4 + n].decode("utf-8", "surrogateescape") or None)
            at += 4 + n
        return texts[0], texts[1]

    @property
    def source(self) -> str | None:
        return self._texts()[0]

    @property
    def etag(self) -> str | None:
        return self._texts()[1]

    def __repr__(self) -> str:
        return (
            f"CacheEntry(path={self.path!r}, stat={self.stat!r}, digest={self.digest!r}, "
            f"recorded_ns={self.recorded_ns}, source={self.source!r}, etag={self.etag!r})"
        )


_new_entry = tuple.__new__  # CacheEntry(key, raw) at a third of the cost, for many rows

#: How many set-aside cache files are kept for a post-mortem; older ones are deleted.
KEEP_SET_ASIDE = 3


def _prune_set_aside(path: Path) -> None:
    """Delete all but the newest :data:`KEEP_SET_ASIDE` set-aside copies of the cache file."""
    aside = sorted(
        (
            p
            for kind in ("corrupt", "incompatible")
            for p in path.parent.glob(f"{path.name}.{kind}-*")
        ),
        key=lambda p: int(p.name.rsplit("-", 1)[1]) if p.name.rsplit("-", 1)[1].isdigit() else 0,
    )
    for old in aside[:-KEEP_SET_ASIDE]:
        old.unlink(missing_ok=True)


class _Incompatible(sqlite3.DatabaseError):
    """The cache file holds something other than this version's schema."""


@contextlib.contextmanager
def _write_transaction(db: sqlite3.Connection) -> Iterator[None]:
    """A transaction that takes the write lock at once (no deadlock on upgrade), committed
    if the block ends normally and rolled back otherwise."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def _ensure_schema(db: sqlite3.Connection) -> None:
    """Create the schema in a new file; refuse a file that holds anything else."""
    with _write_transaction(db):
        (version,) = db.execute("PRAGMA user_version").fetchone()
        if version == 0:
            (tables,) = db.execute("SELECT count(*) FROM sqlite_master").fetchone()
            if tables:
                raise _Incompatible("tables of an unknown schema")
            db.execute(_SCHEMA)
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        elif version != SCHEMA_VERSION:
            raise _Incompatible(f"schema {version}, this taskkit reads {SCHEMA_VERSION}")


class StatCache:
    """A persistent map from a file version to its digest. See the module docstring.

    ``clock`` returns nanoseconds since the epoch and stamps new entries; tests pass their own.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        clock: Callable[[], int] = time.time_ns,
        read_only: bool = False,
    ) -> None:
        self.path = Path(path)
        self.clock = clock
        self.read_only = read_only
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
        environ: Mapping[str, str] | None = None,
    ) -> StatCache:
        """The cache in ``directory`` (default :func:`default_cache_dir` of ``environ``)."""
        root = default_cache_dir(environ) if directory is None else Path(directory)
        return cls(root / FILE_NAME, clock=clock)

    @classmethod
    def for_run(
        cls, *, dry_run: bool, environ: Mapping[str, str] | None = None
    ) -> StatCache | None:
        """The default cache for a transfer run (found in ``environ``). A dry run's is
        read-only, and None when there is none yet: a dry run writes nothing, not even the
        cache's lock or log files."""
        opened = cls.open(environ=environ)
        if not dry_run:
            return opened
        return cls(opened.path, read_only=True) if opened.path.exists() else None

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
        single keys: one query for each few hundred files (rows between them are passed over).
        """
        found: dict[bytes, CacheEntry] = {}
        for start in range(0, len(keys), _LOOKUP_BATCH):
            batch = keys[start : start + _LOOKUP_BATCH]
            if all(a < b for a, b in itertools.pairwise(batch)):
                sql = "SELECT path, entry FROM files WHERE path BETWEEN ? AND ?"
                params: Sequence[bytes] = (batch[0], batch[-1])
            else:
                sql = f"SELECT path, entry FROM files WHERE path IN ({','.join('?' * len(batch))})"
                params = batch
            rows = dict(self._query(sql, params))  # a range holds rows of other paths too
            for key in batch:
                raw = rows.get(key)
                if raw is not None and (entry := _new_entry(CacheEntry, (key, raw))).valid():
                    found[key] = entry
        return found

    def under(self, directory: str | os.PathLike[str]) -> dict[bytes, CacheEntry]:
        """Every entry for a path below ``directory`` (at any depth), in one range query:
        the keys that start with the directory's key and a ``/``."""
        start = path_key(os.path.join(os.fspath(directory), "x"))[:-1]  # ends in the separator
        end = start[:-1] + bytes([start[-1] + 1])
        found: dict[bytes, CacheEntry] = {}
        sql = "SELECT path, entry FROM files WHERE path >= ? AND path < ?"
        for path, raw in self._query(sql, (start, end)):
            entry = CacheEntry(path, raw)
            if entry.valid():
                found[path] = entry
        return found

    def keys_under(self, directory: str | os.PathLike[str]) -> list[bytes]:
        """The keys of :meth:`under`, sorted, without reading their entries."""
        start = path_key(os.path.join(os.fspath(directory), "x"))[:-1]
        end = start[:-1] + bytes([start[-1] + 1])
        sql = "SELECT path FROM files WHERE path >= ? AND path < ? ORDER BY path"
        return [row[0] for row in self._query(sql, (start, end))]

    def get(self, path: str | os.PathLike[str], st: os.stat_result | FileStat) -> CacheEntry | None:
        """The trusted entry for ``path`` whose version is ``st``, or None."""
        key = path_key(path)
        entry = self.lookup([key]).get(key)
        return entry if entry is not None and self.fresh(entry, st) else None

    @staticmethod
    def fresh(entry: CacheEntry, st: os.stat_result | FileStat) -> bool:
        """Whether ``entry`` may be trusted for a file whose current version is ``st``."""
        if isinstance(st, FileStat):
            mtime, ctime = st.mtime_ns, st.ctime_ns
        else:
            mtime, ctime = st.st_mtime_ns, st.st_ctime_ns
        raw = entry.raw
        return (
            raw[8:48] == _ident(st)
            and (mtime if mtime > ctime else ctime) + RACY_WINDOW_NS
            <= _RECORDED.unpack_from(raw, 48)[0]
        )

    # -- writing -------------------------------------------------------------------------------

    def record(self, entries: Iterable[CacheEntry]) -> None:
        """Store ``entries`` in one short transaction, replacing what was there."""
        rows = list(entries)
        if rows and not self.read_only:
            self._write("INSERT OR REPLACE INTO files VALUES (?, ?)", rows)

    def vouch(self, found: Mapping[bytes, Provenance]) -> None:
        """Give the entries of the keys of ``found`` their provenance where they hold the digest
        named (:meth:`CacheEntry.vouched`): files found the same as their source by digest, so
        that a later run trusts them as from that source without hashing anything again. Their
        trust is unchanged: the same version and recording time."""
        rows = []
        for key, known in self.lookup(sorted(found)).items():
            vouched = known.vouched(found[key])
            if vouched is not known:
                rows.append(vouched)
        self.record(rows)

    def forget(self, keys: Iterable[bytes]) -> None:
        """Drop the entries of ``keys``."""
        rows = [(key,) for key in keys]
        if rows and not self.read_only:
            self._write("DELETE FROM files WHERE path = ?", rows)

    # -- the database, and what to do when it fails ----------------------------------------------

    def _query(self, sql: str, params: Sequence[bytes]) -> list[tuple[bytes, bytes]]:
        return self._use(lambda db: db.execute(sql, params).fetchall(), [])

    def _write(self, sql: str, rows: Sequence[tuple[bytes, ...]]) -> None:
        def write(db: sqlite3.Connection) -> None:
            with _write_transaction(db):
                db.executemany(sql, rows)

        self._use(write, None)

    def _use(self, action: Callable[[sqlite3.Connection], _T], fallback: _T) -> _T:
        """``action`` on the database; on a failure, once more on a rebuilt one; ``fallback``
        when there is no usable database."""
        with self._lock:
            for _ in range(2):
                db = self._connect()
                if db is None:
                    return fallback
                try:
                    return action(db)
                except sqlite3.DatabaseError as exc:
                    self._failed(exc)
            return fallback

    def _connect(self) -> sqlite3.Connection | None:
        if self._db is not None or self._disabled:
            return self._db
        if self.read_only:
            return self._connect_read_only()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(
                self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
            )
            st = os.stat(self.path)
        except (OSError, sqlite3.Error) as exc:
            self._disable(exc)
            return None
        self._ident = (st.st_dev, st.st_ino)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            _ensure_schema(db)
        except sqlite3.DatabaseError as exc:
            db.close()
            self._failed(exc)
            return self._db
        self._db = db
        return db

    def _connect_read_only(self) -> sqlite3.Connection | None:
        """The file as it is, opened immutable: no lock, WAL or journal file is created, and
        entries still in another process's write-ahead log are not seen (they are hashed)."""
        try:
            uri = f"file:{urllib.parse.quote(str(self.path))}?immutable=1"
            db = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
            db.execute("SELECT 1 FROM files LIMIT 1").fetchall()
        except sqlite3.Error as exc:
            self._disable(exc)
            return None
        self._db = db
        return db

    def _failed(self, exc: sqlite3.DatabaseError) -> None:
        """Decide between "corrupt: set aside and rebuild" and "unusable: do without"."""
        if self._db is not None:
            self._db.close()
            self._db = None
        if self.read_only:
            self._disable(exc)
            return
        if isinstance(exc, sqlite3.OperationalError):
            # locked past the busy timeout, read-only, out of disk: the file may be fine.
            self._disable(exc)
            return
        kind = "incompatible" if isinstance(exc, _Incompatible) else "corrupt"
        aside = self.path.with_name(f"{self.path.name}.{kind}-{time.time_ns()}")
        try:
            st = os.stat(self.path)
            # Another process may have rebuilt it already: never set aside a healthy new file.
            if self._ident == (st.st_dev, st.st_ino):
                os.replace(self.path, aside)
                _prune_set_aside(self.path)
                for suffix in ("-wal", "-shm"):
                    Path(f"{self.path}{suffix}").unlink(missing_ok=True)
                log.warning(
                    "stat-cache %s was %s (%s): set aside as %s and rebuilt",
                    self.path,
                    kind,
                    exc,
                    aside.name,
                )
        except FileNotFoundError:
            pass  # another process set it aside first
        except OSError as err:
            self._disable(err)
            return
        self._ident = None

    def _disable(self, exc: BaseException) -> None:
        if not self._disabled:
            self._disabled = True
            log.warning("stat-cache %s is not usable (%s): hashing without it", self.path, exc)
