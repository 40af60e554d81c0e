"""Stores for the upload unit tests (not a test module).

* :class:`FakeBlobStore`: blob semantics in memory, as Azure has them and ``memory://`` does
  not: metadata kept with each blob (so a taskkit digest is listed), a new etag per version,
  blocks staged per name and kept across an abort (so :meth:`FakeWriter.known` lists them).
* :class:`Passthrough`, :class:`PassthroughWriter`: any store or writer as it is, the base
  of wrappers that watch some of its calls.
* :class:`Recorded`: any store, with every write recorded in order and a hook run before each
  (to fail it, or to change a local file at that moment).
* :class:`FakeStores`: :class:`~taskkit.storage.stores.Stores` that open ``fake://`` on a
  :class:`FakeBlobStore` and pass every store through a wrapper, once.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Mapping, Sequence

import fsspec

from taskkit.exceptions import InputNotFound
from taskkit.storage.base import RemoteFile, Store, Writer, metadata_digest
from taskkit.storage.errors import SourceChanged
from taskkit.storage.retry import RetryBudget
from taskkit.storage.stores import Stores

Hook = Callable[[str, str], None]


def clear_memory() -> None:
    """Empty fsspec's process-wide memory filesystem."""
    fs = fsspec.filesystem("memory")
    fs.store.clear()
    fs.pseudo_dirs.clear()
    fs.pseudo_dirs.append("")


class FakeBlobStore(Store):
    """Blobs in a dict: ``blobs[key] = (data, metadata, etag)``; ``blocks[key]`` the blocks
    the store holds for ``key`` (staged or committed)."""

    protocol = "fake"

    def __init__(self) -> None:
        super().__init__(RetryBudget(attempts=1))
        self.blobs: dict[str, tuple[bytes, dict[str, str], str]] = {}
        self.blocks: dict[str, dict[str, bytes]] = {}
        self._etags = itertools.count(1)
        self._lock = threading.Lock()

    def url(self, key: str) -> str:
        return f"fake://{key}"

    def identity(self, key: str) -> str:
        return f"fake://{key}"

    def _file(self, key: str) -> RemoteFile:
        data, metadata, etag = self.blobs[key]
        return RemoteFile(self.url(key), key, len(data), etag, metadata_digest(metadata, len(data)))

    def list(self, key: str) -> list[RemoteFile]:
        with self._lock:
            return [self._file(k) for k in sorted(self.blobs) if k.startswith(key)]

    def stat(self, key: str) -> RemoteFile:
        with self._lock:
            if key not in self.blobs:
                raise InputNotFound(f"cannot read {self.url(key)}: not found")
            return self._file(key)

    def read(self, file: RemoteFile, offset: int, length: int) -> bytes:
        with self._lock:
            data, _, etag = self.blobs[file.key]
        if etag != file.version:
            raise SourceChanged(f"cannot read {file.url}: it changed")
        return data[offset : offset + length]

    def put(self, key: str, data: bytes, metadata: Mapping[str, str]) -> str:
        etag = f"etag-{next(self._etags)}"
        with self._lock:
            self.blobs[key] = (bytes(data), dict(metadata), etag)
        return etag

    def writer(self, key: str) -> Writer:
        return FakeWriter(self, key)

    def delete(self, key: str) -> None:
        with self._lock:
            self.blobs.pop(key, None)

    def data(self, key: str) -> bytes:
        return self.blobs[key][0]

    def metadata(self, key: str) -> dict[str, str]:
        return self.blobs[key][1]


class FakeWriter(Writer):
    """Blocks staged from any thread, kept after an abort, published by the commit."""

    parallel = True

    def __init__(self, store: FakeBlobStore, key: str) -> None:
        self.store = store
        self.key = key

    def known(self) -> frozenset[str]:
        with self.store._lock:
            return frozenset(self.store.blocks.get(self.key, {}))

    def write(self, block_id: str, data: bytes) -> None:
        with self.store._lock:
            self.store.blocks.setdefault(self.key, {})[block_id] = bytes(data)

    def commit(self, block_ids: Sequence[str], metadata: Mapping[str, str]) -> str:
        with self.store._lock:
            held = self.store.blocks.get(self.key, {})
            kept = {b: held[b] for b in block_ids}
            self.store.blocks[self.key] = kept
        return self.store.put(self.key, b"".join(kept[b] for b in block_ids), metadata)


class Passthrough(Store):
    """``inner`` as it is, for wrappers that watch some of its calls: a subclass overrides
    those; listing and reading (``url``, ``identity``, ``list``, ``stat``, ``read``) pass here."""

    def __init__(self, inner: Store) -> None:
        super().__init__(inner.retry)
        self.inner = inner
        self.protocol = inner.protocol

    def url(self, key: str) -> str:
        return self.inner.url(key)

    def identity(self, key: str) -> str:
        return self.inner.identity(key)

    def list(self, key: str) -> list[RemoteFile]:
        return self.inner.list(key)

    def stat(self, key: str) -> RemoteFile:
        return self.inner.stat(key)

    def read(self, file: RemoteFile, offset: int, length: int) -> bytes:
        return self.inner.read(file, offset, length)


class PassthroughWriter(Writer):
    """``inner`` as it is, for wrappers that watch some of its calls (a subclass overrides
    those)."""

    def __init__(self, inner: Writer) -> None:
        self.inner = inner
        self.parallel = inner.parallel

    def known(self) -> frozenset[str]:
        return self.inner.known()

    def write(self, block_id: str, data: bytes) -> None:
        self.inner.write(block_id, data)

    def commit(self, block_ids: Sequence[str], metadata: Mapping[str, str]) -> str:
        return self.inner.commit(block_ids, metadata)

    def abort(self) -> None:
        self.inner.abort()


class Recorded(Passthrough):
    """``inner`` with every write recorded in ``calls`` as ``(action, key)`` (put, delete,
    writer, write, commit, abort) and ``before(action, key)`` run first."""

    def __init__(self, inner: Store, before: Hook | None = None) -> None:
        super().__init__(inner)
        self.before = before
        self.calls: list[tuple[str, str]] = []
        self.blocks: list[tuple[str, str, int]] = []  # key, block id, length
        self._lock = threading.Lock()

    def note(self, action: str, key: str) -> None:
        with self._lock:
            self.calls.append((action, key))
        if self.before is not None:
            self.before(action, key)

    def actions(self, *kinds: str) -> list[tuple[str, str]]:
        with self._lock:
            return [c for c in self.calls if not kinds or c[0] in kinds]

    def put(self, key: str, data: bytes, metadata: Mapping[str, str]) -> str:
        self.note("put", key)
        return self.inner.put(key, data, metadata)

    def delete(self, key: str) -> None:
        self.note("delete", key)
        self.inner.delete(key)

    def writer(self, key: str) -> Writer:
        self.note("writer", key)
        return _RecordedWriter(self, key, self.inner.writer(key))


class _RecordedWriter(PassthroughWriter):
    def __init__(self, store: Recorded, key: str, inner: Writer) -> None:
        super().__init__(inner)
        self.store = store
        self.key = key

    def write(self, block_id: str, data: bytes) -> None:
        with self.store._lock:
            self.store.blocks.append((self.key, block_id, len(data)))
        self.store.note("write", self.key)
        self.inner.write(block_id, data)

    def commit(self, block_ids: Sequence[str], metadata: Mapping[str, str]) -> str:
        self.store.note("commit", self.key)
        return self.inner.commit(block_ids, metadata)

    def abort(self) -> None:
        self.store.note("abort", self.key)
        self.inner.abort()


class FakeStores(Stores):
    """Stores that open ``fake://KEY`` on ``fake`` and hand out every store as ``wrap``
    returns it (each store wrapped once, so its records cover the whole run)."""

    def __init__(
        self,
        fake: FakeBlobStore | None = None,
        wrap: Callable[[Store], Store] | None = None,
    ) -> None:
        super().__init__(RetryBudget(attempts=1))
        self.fake = fake or FakeBlobStore()
        self.wrap = wrap
        self.wrapped: dict[int, Store] = {}

    def open(self, url: str) -> tuple[Store, str]:
        if url.startswith("fake://"):
            store: Store = self.fake
            key = url.removeprefix("fake://")
        else:
            store, key = super().open(url)
        if self.wrap is None:
            return store, key
        if id(store) not in self.wrapped:
            self.wrapped[id(store)] = self.wrap(store)
        return self.wrapped[id(store)], key
