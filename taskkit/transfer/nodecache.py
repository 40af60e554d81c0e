"""The node cache: files downloaded once per node and handed to every task that needs them.

Layout under the cache root (``$AZ_BATCH_NODE_SHARED_DIR/taskkit/cache`` on a Batch node)::

    objects/<2 hex>/<32 hex>   one read-only file per content digest (xxh3-128)
    refs/<2 hex>/<32 hex>      one per source version (its identity and etag): its digest
    partial/<32 hex>           a download in progress (or killed), + its journal
    locks/<2 hex>/<32 hex>     one empty lock file per source version

Invariants:

* An object's name is the digest of the content it was given. Tasks get objects by hard link
  (a copy where linking is impossible), so a task that writes into its input writes into the
  object: objects are read-only (mode 0444) to stop the accidental case, and every object is
  verified before it is handed out again, through the stat-cache (its identity has not moved
  since it was hashed) or by hashing it. One whose content no longer matches its name is
  deleted and downloaded afresh.
* A ref is written after its object, by atomic rename; a ref whose object is gone is a miss.
* At most one process downloads a source version: it holds the version's lock, and the others
  wait, then find the ref and link. Verifying and linking an object happen under the same
  lock, so no taskkit process moves an object's ctime while another checks it.
* ``taskkit stage`` and ``taskkit run`` find the cache in one place, :func:`node_cache`: so
  every task of a node shares it, whichever command staged.
* The cache is bounded, partial downloads included. With ``max_bytes``, before an object is
  added and after one is handed out, the least recently used objects and partials (access time
  of an object, which taskkit sets on every use; last write of a partial) are deleted until the
  rest fit. Without it (the default) the cache keeps its filesystem from filling: while less
  than :data:`KEEP_FREE` of the filesystem is free, the least recently used objects that no
  task links to any more, and partials, are deleted (deleting a linked object would free
  nothing). Either way the object being handed out is never deleted, and files already linked
  into task directories live on: a link is a name, not a copy.
* A partial is deleted only under its version's lock, taken without waiting: one being
  downloaded (its lock held, also by a process killed and not yet reaped) is never touched.
  A partial of a version the staging run still wants (``wanted``) goes last, after every
  object that may go, since that run is about to resume it.
* Additions in flight in this process are accounted for: the room made before one is added
  counts the bytes the others have not reserved on disk yet, so concurrent additions do not
  each find the same free space. (Another process's additions are not seen; a download that
  still meets a full cache is the caller's to send straight into place.)
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable, Collection, Iterator, Mapping
from pathlib import Path
from typing import NamedTuple

import xxhash

from taskkit.content.digest import Digest
from taskkit.envnames import env_variable
from taskkit.exceptions import DataError
from taskkit.transfer.download import JOURNAL_SUFFIX

__all__ = ["KEEP_FREE", "NodeCache", "default_root", "node_cache"]

log = logging.getLogger("taskkit")
OBJECT_MODE = 0o444
#: The share of its filesystem the node cache keeps free when no ``max_bytes`` is given. On a
#: Batch node the cache shares the temporary disk with every task's working directory and
#: Batch's own files: a tenth leaves the tasks room for their outputs on the smallest disks
#: (1.6 GiB of a 16 GiB one) without wasting much of the large ones.
KEEP_FREE = 0.10


class _Object(NamedTuple):
    path: Path
    size: int
    used_ns: int
    links: int


class _Partial(NamedTuple):
    """A partial download in ``partial/`` (its file, its journal, or both), by version key."""

    key: str
    size: int  # of the file and its journal
    used_ns: int  # the last write of either


class NodeCache:
    """The node cache at ``root``. ``max_bytes`` bounds the size of its objects; without it,
    the cache keeps ``keep_free`` of its filesystem free (``disk_usage`` measures it)."""

    def __init__(
        self,
        root: str | os.PathLike[str],
        max_bytes: int | None = None,
        *,
        keep_free: float = KEEP_FREE,
        disk_usage: Callable[[Path], tuple[int, int, int]] = shutil.disk_usage,
    ) -> None:
        self.root = Path(root)
        self._root = str(self.root)  # paths below are joined as strings: one Path each, not four
        self.max_bytes = max_bytes
        self.keep_free = keep_free
        self.disk_usage = disk_usage
        self._total: int | None = None
        #: Additions in flight in this process: version key -> the size being added.
        self._adding: dict[str, int] = {}
        #: Held while this process evicts, so its additions make room one after another.
        self._evicting = threading.Lock()

    def __repr__(self) -> str:
        bound = (
            f"max_bytes={self.max_bytes}"
            if self.max_bytes is not None
            else (f"keep_free={self.keep_free}")
        )
        return f"NodeCache({str(self.root)!r}, {bound})"

    @staticmethod
    def key(identity: str, version: str) -> str:
        """The name of a source version in ``refs/`` and ``partial/``."""
        return xxhash.xxh3_128_hexdigest(
            f"{identity}\0{version}".encode("utf-8", "surrogateescape")
        )

    def object_path(self, digest: Digest) -> Path:
        return Path(self.object_name(digest))

    def object_name(self, digest: Digest) -> str:
        """:meth:`object_path` as a string (what a file linked from the cache is given)."""
        hexed = digest.hex
        return f"{self._root}/objects/{hexed[:2]}/{hexed}"

    def ref_path(self, key: str) -> Path:
        return Path(f"{self._root}/refs/{key[:2]}/{key}")

    def partial(self, key: str) -> Path:
        return Path(f"{self._root}/partial/{key}")

    def lock_path(self, key: str) -> Path:
        """The lock of a source version: held to fetch, verify or link it. Never deleted,
        so that a waiting process always locks the file the holder locked."""
        return Path(self.lock_name(key))

    def lock_name(self, key: str) -> str:
        """:meth:`lock_path` as a string."""
        return f"{self._root}/locks/{key[:2]}/{key}"

    def fits(self, size: int) -> bool:
        """Whether a file of ``size`` bytes may enter the cache at all: within ``max_bytes``,
        else within the part of the filesystem the cache may fill."""
        if self.max_bytes is not None:
            return size <= self.max_bytes
        if self._total is None:
            try:
                self._total = self.disk_usage(self._existing())[0]
            except OSError:
                return True  # nothing to measure: the download finds out
        return size <= self._total * (1 - self.keep_free)

    def _existing(self) -> Path:
        """The cache root, or the nearest directory above it that exists (before the first
        object, the root may not)."""
        path = self.root.absolute()
        while not path.exists() and path.parent != path:
            path = path.parent
        return path

    def lookup(self, key: str) -> Digest | None:
        """The digest of the source version ``key`` if its object is in the cache."""
        try:
            fd = os.open(f"{self._root}/refs/{key[:2]}/{key}", os.O_RDONLY | os.O_CLOEXEC)
            try:
                text = os.read(fd, 256).decode("utf-8")  # a ref is one line of 42 characters
            finally:
                os.close(fd)
            digest = Digest.parse(text.strip())
        except (OSError, UnicodeDecodeError, DataError):
            return None
        return digest if os.path.isfile(self.object_name(digest)) else None

    def publish(self, key: str, partial: Path, digest: Digest) -> Path:
        """Make the complete file at ``partial`` the object of ``digest`` and note that source
        version ``key`` has that content. Returns the object's path."""
        target = self.object_path(digest)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(partial, OBJECT_MODE)
        if target.is_file():
            partial.unlink()  # the same content came from another source: keep the one there
        else:
            os.replace(partial, target)
        ref = self.ref_path(key)
        ref.parent.mkdir(parents=True, exist_ok=True)
        temp = ref.with_name(f".{ref.name}.{os.getpid()}.tmp")
        temp.write_text(f"{digest}\n")
        os.replace(temp, ref)
        self.used(target)
        return target

    @staticmethod
    def used(path: str | os.PathLike[str]) -> None:
        """Mark an object as just used (its access time), for the LRU order."""
        with contextlib.suppress(OSError):
            os.utime(path, ns=(time.time_ns(), os.stat(path).st_mtime_ns))

    def discard(self, digest: Digest) -> None:
        """Delete an object whose content does not match its name."""
        with contextlib.suppress(FileNotFoundError):
            self.object_path(digest).unlink()
        log.warning("node cache object %s was altered: deleted, it will be fetched again", digest)

    @contextlib.contextmanager
    def adding(self, key: str, size: int, wanted: Collection[str] = ()) -> Iterator[Path]:
        """Make room for ``size`` bytes of source version ``key`` about to be fetched into its
        partial (yielded), counting the other additions in flight in this process; the
        addition is in flight until the block ends. The caller holds the version's lock."""
        with self._evicting:
            self._adding[key] = size
            try:
                self._evict(None, self._unreserved(), frozenset(wanted))
            except BaseException:
                del self._adding[key]
                raise
        try:
            yield self.partial(key)
        finally:
            with self._evicting:
                self._adding.pop(key, None)

    def _unreserved(self) -> int:
        """The bytes the additions in flight will still take: their sizes, less what their
        partial files already hold (a reservation, chunks written, a partial being resumed)."""
        left = 0
        for key, size in self._adding.items():
            try:
                held = os.stat(self.partial(key)).st_size
            except OSError:
                held = 0
            left += max(0, size - held)
        return left

    def evict(
        self, keep: Path | None = None, incoming: int = 0, wanted: Collection[str] = ()
    ) -> int:
        """Delete least recently used objects and partials until the rest, and ``incoming``
        bytes about to be added, fit in ``max_bytes`` or, without it, leave ``keep_free`` of
        the filesystem free (or nothing that may go is left); never ``keep``, never a partial
        being downloaded, and a partial of a ``wanted`` version only after every object.
        Returns the bytes freed. One process evicts at a time; the others go on."""
        with self._evicting:
            return self._evict(keep, incoming + self._unreserved(), frozenset(wanted))

    def _evict(self, keep: Path | None, incoming: int, wanted: frozenset[str]) -> int:
        if self.max_bytes is None:
            try:
                total, _, free = self.disk_usage(self._existing())
            except OSError:
                return 0  # nothing to measure: nothing to evict
            excess = int(total * self.keep_free) + incoming - free
            if excess <= 0:
                return 0  # one statvfs: the common case costs no walk of the objects
        import fcntl

        self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.root / ".evict.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return 0
            objects = self._objects()
            partials = self._partials()
            if self.max_bytes is not None:
                held = sum(o.size for o in objects) + sum(p.size for p in partials)
                excess = held + incoming - self.max_bytes
            else:
                # Only an object no task links to gives its blocks back when deleted.
                objects = [o for o in objects if o.links == 1]
            # One least-recently-used order for objects and partials nobody wants, then the
            # partials this run is about to resume.
            first: list[_Object | _Partial] = [*objects]
            first += (p for p in partials if p.key not in wanted)
            first.sort(key=lambda o: o.used_ns)
            last = sorted((p for p in partials if p.key in wanted), key=lambda p: p.used_ns)
            freed = 0
            for victim in [*first, *last]:
                if freed >= excess:
                    break
                if isinstance(victim, _Partial):
                    freed += self._drop_partial(victim)
                elif victim.path != keep:
                    with contextlib.suppress(FileNotFoundError):
                        victim.path.unlink()
                        freed += victim.size
            return freed
        finally:
            os.close(fd)

    def _drop_partial(self, partial: _Partial) -> int:
        """Delete a partial and its journal if no one downloads it (its version's lock is
        free); the bytes freed."""
        import fcntl

        lock = self.lock_path(partial.key)
        try:
            lock.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        except OSError:
            return 0
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                return 0  # being downloaded (or resumed) right now
            path = self.partial(partial.key)
            freed = 0
            for name in (path, Path(f"{path}{JOURNAL_SUFFIX}")):
                with contextlib.suppress(FileNotFoundError):
                    size = name.stat().st_size
                    name.unlink()
                    freed += size
            return freed
        finally:
            os.close(fd)  # releases the lock

    def _partials(self) -> list[_Partial]:
        found: dict[str, _Partial] = {}
        try:
            entries = list(os.scandir(self.root / "partial"))
        except FileNotFoundError:
            return []
        for entry in entries:
            key = entry.name.removesuffix(JOURNAL_SUFFIX)
            with contextlib.suppress(FileNotFoundError):
                st = entry.stat(follow_symlinks=False)
                seen = found.get(key)
                size = st.st_size + (seen.size if seen else 0)
                touched = max(st.st_mtime_ns, seen.used_ns if seen else 0)
                found[key] = _Partial(key, size, touched)
        return list(found.values())

    def _objects(self) -> list[_Object]:
        found = []
        for shard in (self.root / "objects").glob("??"):
            for entry in os.scandir(shard):
                with contextlib.suppress(FileNotFoundError):
                    st = entry.stat(follow_symlinks=False)
                    found.append(_Object(Path(entry.path), st.st_size, st.st_atime_ns, st.st_nlink))
        return found


def default_root(environ: Mapping[str, str] | None = None) -> str | None:
    """Where a node's tasks share their cache: ``$TASKKIT_NODE_CACHE``, else
    ``$AZ_BATCH_NODE_SHARED_DIR/taskkit/cache`` on a Batch node, else nowhere (None)."""
    env = os.environ if environ is None else environ
    named = env.get(env_variable("cache_dir"))
    if named:
        return named
    shared = env.get("AZ_BATCH_NODE_SHARED_DIR")
    return os.path.join(shared, "taskkit", "cache") if shared else None


def node_cache(
    root: str | os.PathLike[str] | None = None,
    *,
    enabled: bool = True,
    max_bytes: int | None = None,
    environ: Mapping[str, str] | None = None,
) -> NodeCache | None:
    """The node cache a staging uses: at ``root``, else at :func:`default_root`; None when
    ``enabled`` is false (``--no-node-cache``) or there is no place for one."""
    if not enabled:
        return None
    where = root if root is not None else default_root(environ)
    return None if where is None else NodeCache(where, max_bytes)
