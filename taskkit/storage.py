"""The one boundary between taskkit and remote storage: open a URL, list, stat, read ranges.

Any fsspec URL opens: ``az://`` and ``abfs://`` through adlfs, ``file://`` and plain paths,
``memory://``, and whatever other fsspec protocols are installed. Azure credentials are resolved
exactly as adlfs resolves them (``AZURE_STORAGE_CONNECTION_STRING``; ``AZURE_STORAGE_ACCOUNT_NAME``
with ``AZURE_STORAGE_ACCOUNT_KEY`` or ``AZURE_STORAGE_SAS_TOKEN``; else DefaultAzureCredential,
i.e. the node's managed identity), then taskkit talks to the Azure SDK directly, so that

* a prefix is listed with its metadata in one request per 5,000 blobs;
* every read of a blob is conditional on the etag that was listed, so the bytes of one file
  all come from one version, even across a resumed download;
* retries are taskkit's (:class:`~taskkit.retry.RetryBudget`), not the SDK's own minutes-long
  defaults.

Invariants:

* Every upstream error leaves this module as a :class:`~taskkit.exceptions.TaskkitError`,
  translated by :func:`~taskkit.translate.translate` (most specific class first, by the table
  :data:`~taskkit.translate.RULES`) and raised ``from`` the original. Errors that are not
  storage errors (bugs) pass unchanged.
* No message, URL or identity built here contains a credential (:func:`~taskkit.redaction.redact`).
"""

from __future__ import annotations

import contextlib
import datetime
import re
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

import xxhash

from taskkit.digest import Digest
from taskkit.exceptions import (
    ConfigError,
    DataError,
    InputNotFound,
    TaskkitError,
    UsageError,
)
from taskkit.redaction import redact
from taskkit.retry import RetryBudget
from taskkit.translate import RULES, SourceChanged, guarded, reason, translate

if TYPE_CHECKING:
    from fsspec import AbstractFileSystem

__all__ = [
    "DIGEST_METADATA",
    "RULES",
    "SIZE_METADATA",
    "RemoteFile",
    "SourceChanged",
    "Store",
    "Stores",
    "Writer",
    "file_metadata",
    "is_temporary",
    "metadata_digest",
    "temporary_key",
    "translate",
]

_T = TypeVar("_T")

#: Blob metadata written by taskkit uploads: the content digest and size.
DIGEST_METADATA = "taskkit_digest"
SIZE_METADATA = "taskkit_size"
AZURE_PROTOCOLS = frozenset({"az", "abfs", "abfss"})
_TEMP_PREFIX = ".taskkit-"
_TEMP_SUFFIX = ".partial"
_CONTAINER_RE = re.compile(r"[a-z0-9](?:[a-z0-9]|-(?=[a-z0-9])){2,62}|\$root|\$web|\$logs")


class RemoteFile(NamedTuple):
    """One file in a store, as a listing describes it.

    ``url`` is how taskkit shows it (``az://container/name``, never a credential), ``key`` is the
    store's path for it, ``version`` an etag (or, for stores without one, a change token made
    from the listing), ``digest`` the taskkit digest from its metadata when a taskkit upload
    wrote one.
    """

    url: str
    key: str
    size: int
    version: str
    digest: Digest | None


# -- stores -------------------------------------------------------------------------------------


class Store:
    """A place files are read from, with its retry budget. Subclasses talk to one kind of
    storage; every method raises only :class:`TaskkitError` for storage failures."""

    protocol: str

    def __init__(self, retry: RetryBudget) -> None:
        self.retry = retry

    def url(self, key: str) -> str:
        """How the file at ``key`` is shown to users."""
        return f"{self.protocol}://{key}"

    def identity(self, key: str) -> str:
        """Where the bytes of ``key`` come from, stable and credential-free: recorded as the
        provenance of staged files and keyed on by the node cache."""
        raise NotImplementedError

    def call(self, action: Callable[[], _T], what: str) -> _T:
        """``action`` with upstream errors translated and transient ones retried."""
        return self.retry.call(
            lambda: guarded(action, what), what, lambda exc: not isinstance(exc, SourceChanged)
        )

    def list(self, key: str) -> list[RemoteFile]:
        """Every file under the prefix ``key`` (a directory of a filesystem), in one pass."""
        raise NotImplementedError

    def stat(self, key: str) -> RemoteFile:
        """The one file at ``key``; :class:`InputNotFound` if there is none."""
        raise NotImplementedError

    def read(self, file: RemoteFile, offset: int, length: int) -> bytes:
        """``length`` bytes of ``file`` from ``offset``, from the version that was listed."""
        raise NotImplementedError

    def confirm(self, file: RemoteFile) -> None:
        """Raise :class:`TransientError` if ``file`` is no longer the version that was listed
        (for stores whose reads cannot be made conditional)."""

    def put(self, key: str, data: bytes, metadata: Mapping[str, str]) -> str:
        """Write ``data`` at ``key`` with ``metadata`` in one atomic step; the new version."""
        raise NotImplementedError

    def writer(self, key: str) -> Writer:
        """Write the file at ``key`` in blocks; nothing shows at ``key`` until the commit."""
        raise NotImplementedError

    def delete(self, key: str) -> None:
        """Remove the file at ``key``, if there is one."""
        raise NotImplementedError

    def append(self, key: str, offset: int, data: bytes) -> None:
        """Add ``data`` to the file at ``key``, which holds ``offset`` bytes (0: a new file).
        Readers may see the file grow; used for logs, which are never read back by taskkit."""
        raise NotImplementedError

    def close(self) -> None:
        """Release connections."""


class Writer:
    """A file being written in blocks, each named by an id (the same length for all the
    blocks of one file). Nothing is visible at its key until :meth:`commit`, which makes the
    file the given blocks in the given order.

    ``parallel`` writers take blocks from several threads in any order and keep them across a
    crash (:meth:`known` lists them for a later attempt); others take them in order, once.
    """

    parallel = False

    def known(self) -> frozenset[str]:
        """Ids of blocks the store already holds for this key, committed or not: a block
        with one of these ids need not be sent again."""
        return frozenset()

    def write(self, block_id: str, data: bytes) -> None:
        raise NotImplementedError

    def commit(self, block_ids: Sequence[str], metadata: Mapping[str, str]) -> str:
        """Publish the file; its new version."""
        raise NotImplementedError

    def abort(self) -> None:
        """Give up: nothing is published (a parallel writer's blocks stay for a later try)."""


def file_metadata(digest: Digest, size: int) -> dict[str, str]:
    """The metadata a taskkit upload writes: what staging reads back to skip the file."""
    return {DIGEST_METADATA: str(digest), SIZE_METADATA: str(size)}


def is_temporary(key: str) -> bool:
    """Whether ``key`` names a file taskkit is writing (never a file to list or read)."""
    name = key.rsplit("/", 1)[-1]
    return name.startswith(_TEMP_PREFIX) and name.endswith(_TEMP_SUFFIX)


def temporary_key(key: str) -> str:
    """Where a store without atomic writes holds a file being written, beside ``key``: one
    name per key, so a crashed write is replaced by the next one, not left to pile up."""
    parent, _, name = key.rpartition("/")
    tag = xxhash.xxh3_64_hexdigest(name.encode("utf-8", "surrogateescape"))
    return f"{parent}/{_TEMP_PREFIX}{tag}{_TEMP_SUFFIX}"


def metadata_digest(metadata: Mapping[str, str] | None, size: int) -> Digest | None:
    """The digest a taskkit upload stored, if it is there, well-formed, and for this size."""
    if not metadata:
        return None
    lowered = {k.lower(): v for k, v in metadata.items()}
    text = lowered.get(DIGEST_METADATA)
    if text is None or lowered.get(SIZE_METADATA, str(size)) != str(size):
        return None
    try:
        return Digest.parse(text)
    except DataError:
        return None


class FsspecStore(Store):
    """Any other fsspec filesystem, called synchronously (fsspec runs async ones on its loop)."""

    def __init__(self, fs: AbstractFileSystem, protocol: str, retry: RetryBudget) -> None:
        super().__init__(retry)
        self.fs = fs
        self.protocol = protocol

    def __repr__(self) -> str:
        return f"FsspecStore({self.protocol!r})"

    def url(self, key: str) -> str:
        return key if self.protocol == "file" else f"{self.protocol}://{key.lstrip('/')}"

    def identity(self, key: str) -> str:
        return f"{self.protocol}://{key}"

    @staticmethod
    def _version(info: Mapping[str, Any]) -> str:
        """A change token from what a listing says: the store's etag if it has one, else
        size, modification time and file id."""
        for name in ("etag", "ETag", "generation", "version_id", "VersionId"):
            if info.get(name):
                return str(info[name])
        stamp = next(
            (info[n] for n in ("mtime", "LastModified", "last_modified", "created") if n in info),
            None,
        )
        if isinstance(stamp, datetime.datetime):  # from info(); a listing gives a float
            stamp = stamp.timestamp()
        return f"{info.get('size')}-{stamp}-{info.get('ino', '')}"

    def _file(self, info: Mapping[str, Any]) -> RemoteFile:
        size = int(info.get("size") or 0)
        key = str(info["name"])
        metadata = info.get("metadata")
        digest = metadata_digest(metadata if isinstance(metadata, Mapping) else None, size)
        return RemoteFile(self.url(key), key, size, self._version(info), digest)

    def list(self, key: str) -> list[RemoteFile]:
        found = self.call(
            lambda: self.fs.find(key, detail=True, withdirs=False), f"cannot list {self.url(key)}"
        )
        return [self._file(info) for name, info in sorted(found.items()) if not is_temporary(name)]

    def stat(self, key: str) -> RemoteFile:
        what = f"cannot read {self.url(key)}"
        info = self.call(lambda: self.fs.info(key), what)
        if info.get("type") == "directory":
            raise InputNotFound(f"{what}: it is a directory (end it with / to stage its files)")
        return self._file(info)

    def read(self, file: RemoteFile, offset: int, length: int) -> bytes:
        what = f"cannot read {file.url}"

        def ranged() -> bytes:
            data = bytes(self.fs.cat_file(file.key, start=offset, end=offset + length))
            if len(data) != length:
                raise SourceChanged(f"{what}: it changed while being read")
            return data

        return self.call(ranged, what)

    def confirm(self, file: RemoteFile) -> None:
        if self.stat(file.key).version != file.version:
            raise SourceChanged(
                f"cannot read {file.url}: it changed while being read; a new attempt will see it"
            )

    # Writes go to a temporary name beside the key, then move into place: on a local
    # filesystem that is one rename, so the key never holds a partial file.

    def _published(self, temp: str, key: str) -> str:
        self.fs.mv(temp, key)
        return self._version(self.fs.info(key))

    def put(self, key: str, data: bytes, metadata: Mapping[str, str]) -> str:
        def write() -> str:
            temp = temporary_key(key)
            self.fs.makedirs(self.fs._parent(key), exist_ok=True)
            self.fs.pipe_file(temp, data)
            return self._published(temp, key)

        return self.call(write, f"cannot write {self.url(key)}")

    def writer(self, key: str) -> Writer:
        return _StreamWriter(self, key)

    def delete(self, key: str) -> None:
        def remove() -> None:
            with contextlib.suppress(FileNotFoundError):
                self.fs.rm_file(key)

        self.call(remove, f"cannot delete {self.url(key)}")

    def append(self, key: str, offset: int, data: bytes) -> None:
        what = f"cannot write {self.url(key)}"

        def add() -> None:
            if offset == 0:
                self.fs.makedirs(self.fs._parent(key), exist_ok=True)
                self.fs.pipe_file(key, data)
                return
            size = self.fs.size(key)
            if size == offset + len(data):
                return  # an earlier try of this very append landed after all
            if size != offset:
                raise SourceChanged(f"{what}: it holds {size} bytes, not {offset}")
            with self.fs.open(key, "ab") as handle:
                handle.write(data)

        self.call(add, what)


class _StreamWriter(Writer):
    """Blocks written in order to one temporary file, moved into place by the commit."""

    def __init__(self, store: FsspecStore, key: str) -> None:
        self.store = store
        self.key = key
        self.temp = temporary_key(key)
        self.what = f"cannot write {store.url(key)}"
        self._handle: Any = None

    def _open(self) -> Any:
        if self._handle is None:
            fs = self.store.fs
            fs.makedirs(fs._parent(self.key), exist_ok=True)
            self._handle = fs.open(self.temp, "wb")
        return self._handle

    def write(self, block_id: str, data: bytes) -> None:
        # Not retried: a stream cannot take a block twice. The whole file is tried again.
        guarded(lambda: self._open().write(data), self.what)

    def commit(self, block_ids: Sequence[str], metadata: Mapping[str, str]) -> str:
        def publish() -> str:
            self._open().close()
            return self.store._published(self.temp, self.key)

        return guarded(publish, self.what)

    def abort(self) -> None:
        with contextlib.suppress(Exception):
            if self._handle is not None:
                self._handle.close()
            self.store.fs.rm_file(self.temp)


class Stores:
    """The stores of one run, opened once per protocol and options, closed together."""

    def __init__(
        self,
        retry: RetryBudget | None = None,
        storage_options: Mapping[str, Any] | None = None,
    ) -> None:
        self.retry = retry or RetryBudget()
        self.storage_options = dict(storage_options or {})
        self._open: dict[str, Store] = {}

    def __enter__(self) -> Stores:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        stores, self._open = list(self._open.values()), {}
        for store in stores:
            store.close()

    def open(self, url: str) -> tuple[Store, str]:
        """The store that holds ``url`` and the key of ``url`` in it."""
        import fsspec.core

        protocol, _ = fsspec.core.split_protocol(url)
        protocol = protocol or "file"
        what = f"cannot open {redact(url)}"
        try:
            if protocol in AZURE_PROTOCOLS:
                _check_container(url, protocol)
            fs, key = fsspec.core.url_to_fs(url, **self.storage_options)
        except ValueError as exc:  # adlfs: no usable credentials; fsspec: a malformed URL
            raise ConfigError(f"{what}: {reason(exc)}") from exc
        except ImportError as exc:
            raise ConfigError(f"{what}: no installed fsspec package reads {protocol}://") from exc
        except TaskkitError:
            raise
        except Exception as exc:
            failure = translate(exc, what)
            if failure is None:
                raise
            raise failure from exc
        name = f"{protocol}:{id(fs)}"  # fsspec hands out one instance per protocol and options
        store = self._open.get(name)
        if store is None:
            if protocol in AZURE_PROTOCOLS:
                from taskkit.azureblob import AzureStore

                store = AzureStore(fs, protocol, self.retry)
            else:
                names = (fs.protocol,) if isinstance(fs.protocol, str) else fs.protocol
                store = FsspecStore(fs, "file" if "file" in names else protocol, self.retry)
            self._open[name] = store
        return store, key


def _check_container(url: str, protocol: str) -> None:
    """Refuse a container name Azure would refuse, before any request is made."""
    rest = url.split("://", 1)[1] if "://" in url else url
    container = rest.split("/", 1)[0].split("@", 1)[0]
    shown = redact(url)
    if not container:
        raise UsageError(f"{shown!r} names no container ({protocol}://CONTAINER/PATH)")
    if not _CONTAINER_RE.fullmatch(container):
        raise UsageError(
            f"{redact(container)!r} in {shown!r} is not a valid container name (3-63 "
            "lowercase letters, digits and single hyphens, starting and ending with a letter "
            "or digit)"
        )
