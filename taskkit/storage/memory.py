"""Blob storage in memory, with Azure's semantics: a test tool for taskkit and for its users.

fsspec's ``memory://`` is a filesystem: it keeps no metadata, no etag and no staged blocks.
:class:`MemoryStore` is a blob store, as Azure is one:

* every write makes a new version (an etag), and a listing reports each blob's version and the
  taskkit digest of its metadata;
* reads are conditional on the version that was listed (:class:`SourceChanged` otherwise);
* writes and deletes may be conditional on a version or on absence (:class:`Conflict`
  otherwise: of writers racing on one condition exactly one wins);
* a large file is written as staged blocks that show at its key only when their list is
  committed; staged blocks outlive an abort, so a later try sends only the missing ones;
* appends go on from a given size, and an append whose earlier try landed is not made twice.

Invariants: one lock guards all state, so every method is atomic and safe from any thread;
nothing ever fails transiently (wrap it in :class:`taskkit.testing.FaultyStore` for that); a
listing is by plain prefix, as Azure lists blobs.

Example::

    from taskkit.storage.memory import MemoryStore
    from taskkit.storage.stores import Stores

    memory = MemoryStore(protocol="az")
    with Stores(mounts={"az://": memory}) as stores:
        store, key = stores.open("az://container/run/result.json")
        version = store.put(key, b"{}", {}, if_absent=True)
    assert memory.data("container/run/result.json") == b"{}"
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Mapping, Sequence
from typing import NamedTuple

from taskkit.exceptions import Conflict, InputNotFound, MisuseError, SourceChanged
from taskkit.storage.base import RemoteFile, Store, Writer, is_conditional, metadata_digest
from taskkit.storage.retry import RetryBudget

__all__ = ["Blob", "MemoryStore"]


class Blob(NamedTuple):
    """One blob as the store holds it."""

    data: bytes
    metadata: dict[str, str]
    version: str


class MemoryStore(Store):
    """Blobs in memory, keyed by name, shown as ``{protocol}://{key}``.

    ``retry`` is the budget :meth:`Store.call` would spend; nothing here fails transiently,
    so it matters only to a wrapper that calls through it. Inspect what was written with
    :attr:`blobs`, :meth:`data` and :meth:`metadata`.
    """

    def __init__(self, protocol: str = "memory", retry: RetryBudget | None = None) -> None:
        super().__init__(retry or RetryBudget(attempts=1))
        self.protocol = protocol
        self._blobs: dict[str, Blob] = {}
        self._blocks: dict[str, dict[str, bytes]] = {}
        self._versions = itertools.count(1)
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"MemoryStore({self.protocol!r}, {len(self._blobs)} blobs)"

    # -- inspection, for tests ----------------------------------------------------------------

    @property
    def blobs(self) -> dict[str, Blob]:
        """A copy of every blob, by key."""
        with self._lock:
            return dict(self._blobs)

    def data(self, key: str) -> bytes:
        """The bytes of the blob at ``key`` (:class:`KeyError` if there is none)."""
        with self._lock:
            return self._blobs[key].data

    def metadata(self, key: str) -> dict[str, str]:
        """The metadata of the blob at ``key`` (:class:`KeyError` if there is none)."""
        with self._lock:
            return dict(self._blobs[key].metadata)

    # -- the store contract -------------------------------------------------------------------

    def identity(self, key: str) -> str:
        return self.url(key)

    def _file(self, key: str, blob: Blob) -> RemoteFile:
        digest = metadata_digest(blob.metadata, len(blob.data))
        return RemoteFile(self.url(key), key, len(blob.data), blob.version, digest)

    def _store(self, key: str, data: bytes, metadata: Mapping[str, str]) -> str:
        """Write a new version of ``key``; called with the lock held."""
        version = f'"0x{next(self._versions):x}"'  # quoted, as Azure's etags are
        self._blobs[key] = Blob(bytes(data), dict(metadata), version)
        return version

    def list(self, key: str) -> list[RemoteFile]:
        with self._lock:
            return [self._file(k, b) for k, b in sorted(self._blobs.items()) if k.startswith(key)]

    def has_files(self, key: str) -> bool:
        with self._lock:
            return any(k.startswith(key) for k in self._blobs)

    def stat(self, key: str) -> RemoteFile:
        with self._lock:
            blob = self._blobs.get(key)
            if blob is None:
                raise InputNotFound(f"cannot read {self.url(key)}: not found")
            return self._file(key, blob)

    def read(self, file: RemoteFile, offset: int, length: int) -> bytes:
        what = f"cannot read {file.url}"
        with self._lock:
            blob = self._blobs.get(file.key)
        if blob is None:
            raise InputNotFound(f"{what}: not found")
        data = blob.data[offset : offset + length]
        if blob.version != file.version or len(data) != length:
            raise SourceChanged(f"{what}: it changed while being read; a new attempt will see it")
        return data

    def confirm(self, file: RemoteFile) -> None:
        with self._lock:
            blob = self._blobs.get(file.key)
        if blob is None or blob.version != file.version:
            raise SourceChanged(
                f"cannot read {file.url}: it changed while being read; a new attempt will see it"
            )

    def load(self, key: str) -> tuple[bytes, str] | None:
        with self._lock:
            blob = self._blobs.get(key)
        return None if blob is None else (blob.data, blob.version)

    def _check(self, key: str, if_match: str | None, if_absent: bool, what: str) -> None:
        """Raise :class:`Conflict` unless the blob at ``key`` meets the condition; called with
        the lock held."""
        blob = self._blobs.get(key)
        if blob is None:
            if if_match is not None:
                raise Conflict(f"{what}: another writer changed it first (it is gone)")
            return
        if if_absent or blob.version != if_match:
            shown = "it exists" if if_absent else f"it is version {blob.version}, not {if_match}"
            raise Conflict(f"{what}: another writer changed it first ({shown})")

    def put(
        self,
        key: str,
        data: bytes,
        metadata: Mapping[str, str],
        *,
        if_match: str | None = None,
        if_absent: bool = False,
    ) -> str:
        conditional = is_conditional(if_match, if_absent)
        with self._lock:
            if conditional:
                self._check(key, if_match, if_absent, f"cannot write {self.url(key)}")
            return self._store(key, data, metadata)

    def delete(self, key: str, *, if_match: str | None = None) -> None:
        conditional = is_conditional(if_match, False)
        with self._lock:
            if conditional:
                self._check(key, if_match, False, f"cannot delete {self.url(key)}")
            self._blobs.pop(key, None)

    def append(self, key: str, offset: int, data: bytes) -> None:
        what = f"cannot write {self.url(key)}"
        with self._lock:
            blob = self._blobs.get(key)
            if offset == 0:
                self._store(key, data, {})
                return
            if blob is None:
                raise InputNotFound(f"{what}: not found")
            size = len(blob.data)
            if size == offset + len(data) and blob.data[offset:] == data:
                return  # an earlier try of this very append landed after all
            if size != offset:
                raise SourceChanged(f"{what}: it holds {size} bytes, not {offset}")
            self._store(key, blob.data + data, blob.metadata)

    def writer(self, key: str) -> Writer:
        return _BlockWriter(self, key)


class _BlockWriter(Writer):
    """Blocks staged from any thread, kept after an abort, made the blob by the commit (which
    drops the blocks it does not name, as Azure does)."""

    parallel = True

    def __init__(self, store: MemoryStore, key: str) -> None:
        self.store = store
        self.key = key

    def known(self) -> frozenset[str]:
        with self.store._lock:
            return frozenset(self.store._blocks.get(self.key, {}))

    def write(self, block_id: str, data: bytes) -> None:
        with self.store._lock:
            self.store._blocks.setdefault(self.key, {})[block_id] = bytes(data)

    def commit(self, block_ids: Sequence[str], metadata: Mapping[str, str]) -> str:
        with self.store._lock:
            held = self.store._blocks.get(self.key, {})
            missing = [b for b in block_ids if b not in held]
            if missing:
                raise MisuseError(
                    f"cannot write {self.store.url(self.key)}: block {missing[0]!r} was "
                    "never written"
                )
            kept = {b: held[b] for b in block_ids}
            self.store._blocks[self.key] = kept
            return self.store._store(self.key, b"".join(kept[b] for b in block_ids), metadata)
