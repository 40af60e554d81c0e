"""The node cache: files downloaded once per node and handed to every task that needs them.

Layout under the cache root (``$AZ_BATCH_NODE_SHARED_DIR/taskkit/cache`` on a Batch node)::

    objects/<2 hex>/<32 hex>   one read-only file per content digest (xxh3-128)
    refs/<2 hex>/<32 hex>      one per source version (its identity and etag): its digest
    partial/<32 hex>           a download in progress, + its journal
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
* The cache is bounded (``max_bytes``): after an object is added, the least recently used ones
  (access time, which taskkit sets on every use) are deleted until the rest fit. Files already
  linked into task directories live on: a link is a name, not a copy.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from pathlib import Path
from typing import NamedTuple

import xxhash

from taskkit.digest import Digest
from taskkit.exceptions import DataError

__all__ = ["NodeCache"]

log = logging.getLogger("taskkit")
OBJECT_MODE = 0o444


class _Object(NamedTuple):
    path: Path
    size: int
    used_ns: int


class NodeCache:
    """The node cache at ``root``; ``max_bytes`` bounds the size of its objects (None: no bound)."""

    def __init__(self, root: str | os.PathLike[str], max_bytes: int | None = None) -> None:
        self.root = Path(root)
        self.max_bytes = max_bytes

    def __repr__(self) -> str:
        return f"NodeCache({str(self.root)!r}, max_bytes={self.max_bytes})"

    @staticmethod
    def key(identity: str, version: str) -> str:
        """The name of a source version in ``refs/`` and ``partial/``."""
        return xxhash.xxh3_128_hexdigest(
            f"{identity}\0{version}".encode("utf-8", "surrogateescape")
        )

    def object_path(self, digest: Digest) -> Path:
        return self.root / "objects" / digest.hex[:2] / digest.hex

    def ref_path(self, key: str) -> Path:
        return self.root / "refs" / key[:2] / key

    def partial(self, key: str) -> Path:
        return self.root / "partial" / key

    def lock_path(self, key: str) -> Path:
        """The lock of a source version: held to fetch, verify or link it. Never deleted,
        so that a waiting process always locks the file the holder locked."""
        return self.root / "locks" / key[:2] / key

    def fits(self, size: int) -> bool:
        """Whether a file of ``size`` bytes may enter the cache at all."""
        return self.max_bytes is None or size <= self.max_bytes

    def lookup(self, key: str) -> Digest | None:
        """The digest of the source version ``key`` if its object is in the cache."""
        try:
            digest = Digest.parse(self.ref_path(key).read_text().strip())
        except (OSError, UnicodeDecodeError, DataError):
            return None
        return digest if self.object_path(digest).is_file() else None

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
    def used(path: Path) -> None:
        """Mark an object as just used (its access time), for the LRU order."""
        with contextlib.suppress(OSError):
            os.utime(path, ns=(time.time_ns(), os.stat(path).st_mtime_ns))

    def discard(self, digest: Digest) -> None:
        """Delete an object whose content does not match its name."""
        with contextlib.suppress(FileNotFoundError):
            self.object_path(digest).unlink()
        log.warning("node cache object %s was altered: deleted, it will be fetched again", digest)

    def evict(self, keep: Path | None = None) -> int:
        """Delete least recently used objects until the rest fit in ``max_bytes``; returns
        the bytes freed. One process evicts at a time; the others go on."""
        if self.max_bytes is None:
            return 0
        import fcntl

        self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.root / ".evict.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return 0
            objects = sorted(self._objects(), key=lambda o: o.used_ns)
            total = sum(o.size for o in objects)
            freed = 0
            for obj in objects:
                if total - freed <= self.max_bytes:
                    break
                if obj.path == keep:
                    continue
                with contextlib.suppress(FileNotFoundError):
                    obj.path.unlink()
                    freed += obj.size
            return freed
        finally:
            os.close(fd)

    def _objects(self) -> list[_Object]:
        found = []
        for shard in (self.root / "objects").glob("??"):
            for entry in os.scandir(shard):
                with contextlib.suppress(FileNotFoundError):
                    st = entry.stat(follow_symlinks=False)
                    found.append(_Object(Path(entry.path), st.st_size, st.st_atime_ns))
        return found
