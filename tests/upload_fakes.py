"""Stores for the upload unit tests (not a test module).

* :class:`Passthrough`, :class:`PassthroughWriter`: any store or writer as it is, the base
  of wrappers that watch some of its calls.
* :class:`Recorded`: any store, with every write recorded in order and a hook run before each
  (to fail it, or to change a local file at that moment).
* :class:`FakeStores`: :class:`~taskkit.storage.stores.Stores` with a
  :class:`~taskkit.storage.memory.MemoryStore` mounted at ``fake://`` (blob semantics in
  memory, as Azure has them and ``memory://`` does not), every store passed through a
  wrapper, once.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence

import fsspec

from taskkit.storage.base import RemoteFile, Store, Writer
from taskkit.storage.memory import MemoryStore
from taskkit.storage.retry import RetryBudget
from taskkit.storage.stores import Stores

Hook = Callable[[str, str], None]


def clear_memory() -> None:
    """Empty fsspec's process-wide memory filesystem."""
    fs = fsspec.filesystem("memory")
    fs.store.clear()
    fs.pseudo_dirs.clear()
    fs.pseudo_dirs.append("")


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
    """Stores with ``fake`` (a new :class:`MemoryStore`) mounted at ``fake://``, handing out
    every store as ``wrap`` returns it (each store wrapped once, so its records cover the
    whole run)."""

    def __init__(
        self,
        fake: MemoryStore | None = None,
        wrap: Callable[[Store], Store] | None = None,
    ) -> None:
        self.fake = fake or MemoryStore("fake")
        super().__init__(RetryBudget(attempts=1), mounts={"fake://": self.fake})
        self.wrap = wrap
        self.wrapped: dict[int, Store] = {}

    def open(self, url: str) -> tuple[Store, str]:
        store, key = super().open(url)
        if self.wrap is None:
            return store, key
        if id(store) not in self.wrapped:
            self.wrapped[id(store)] = self.wrap(store)
        return self.wrapped[id(store)], key
