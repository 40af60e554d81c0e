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

import datetime
import re
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

from taskkit.digest import Digest
from taskkit.exceptions import (
    ConfigError,
    DataError,
    InputNotFound,
    TaskkitError,
    TransientError,
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
    "translate",
]

_T = TypeVar("_T")

#: Blob metadata written by taskkit uploads: the content digest and size.
DIGEST_METADATA = "taskkit_digest"
SIZE_METADATA = "taskkit_size"
AZURE_PROTOCOLS = frozenset({"az", "abfs", "abfss"})
_CONTAINER_RE = re.compile(r"[a-z0-9](?:[a-z0-9]|-(?=[a-z0-9])){2,62}|\$root|\$web|\$logs")
#: Seconds to open a connection, and to wait for the next bytes of a response.
CONNECT_TIMEOUT = 10
READ_TIMEOUT = 60


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

    def close(self) -> None:
        """Release connections."""


def _metadata_digest(metadata: Mapping[str, str] | None, size: int) -> Digest | None:
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


class _Sink:
    """A stream that keeps the bytes objects written to it, without copying them."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def write(self, data: bytes) -> int:
        self.parts.append(data)
        return len(data)


class AzureStore(Store):
    """Azure Blob storage through the async SDK, driven from any thread via fsspec's I/O loop."""

    def __init__(self, fs: Any, protocol: str, retry: RetryBudget) -> None:
        super().__init__(retry)
        import fsspec.asyn
        from azure.storage.blob.aio import BlobServiceClient

        self.protocol = protocol
        self._loop = fsspec.asyn.get_loop()
        resolved = fs.service_client  # adlfs has resolved the credentials the adlfs way
        self.account = resolved.account_name or "?"
        self._endpoint = resolved.url.split("?", 1)[0].rstrip("/")
        self._client = BlobServiceClient(
            resolved.url,
            credential=resolved.credential,
            retry_total=0,  # taskkit retries, with its own budget
            connection_timeout=CONNECT_TIMEOUT,
            read_timeout=READ_TIMEOUT,
        )

    def __repr__(self) -> str:
        return f"AzureStore({self._endpoint!r})"

    def identity(self, key: str) -> str:
        return f"{self._endpoint}/{key}"

    def _where(self, key: str) -> str:
        return f"{self.url(key)} (account {self.account})"

    def _sync(self, func: Callable[..., Any], *args: Any) -> Any:
        import fsspec.asyn

        return fsspec.asyn.sync(self._loop, func, *args)

    @staticmethod
    def _split(key: str) -> tuple[str, str]:
        container, _, name = key.partition("/")
        return container, name

    def _file(self, container: str, props: Any) -> RemoteFile:
        key = f"{container}/{props.name}"
        return RemoteFile(
            self.url(key),
            key,
            int(props.size),
            str(props.etag),
            _metadata_digest(props.metadata, int(props.size)),
        )

    def list(self, key: str) -> list[RemoteFile]:
        container, prefix = self._split(key)

        async def listing() -> list[Any]:
            blobs = self._client.get_container_client(container).list_blobs(
                name_starts_with=prefix or None, include=["metadata"], results_per_page=5000
            )
            return [blob async for blob in blobs]

        found = self.call(lambda: self._sync(listing), f"cannot list {self._where(key)}")
        return [
            self._file(container, props)
            for props in found
            # Hierarchical-namespace accounts list their directories as empty marker blobs.
            if (props.metadata or {}).get("hdi_isfolder") != "true"
        ]

    def stat(self, key: str) -> RemoteFile:
        container, name = self._split(key)

        async def properties() -> Any:
            return await self._client.get_blob_client(container, name).get_blob_properties()

        props = self.call(lambda: self._sync(properties), f"cannot read {self._where(key)}")
        return self._file(container, props)

    def read(self, file: RemoteFile, offset: int, length: int) -> bytes:
        from azure.core import MatchConditions

        container, name = self._split(file.key)

        async def download() -> bytes:
            stream = await self._client.get_blob_client(container, name).download_blob(
                offset=offset,
                length=length,
                etag=file.version,
                match_condition=MatchConditions.IfNotModified,
            )
            # readinto hands over the response body as it is; readall would copy it twice.
            sink = _Sink()
            await stream.readinto(sink)  # type: ignore[arg-type]
            return sink.parts[0] if len(sink.parts) == 1 else b"".join(sink.parts)

        what = f"cannot read {self._where(file.key)}"

        def ranged() -> bytes:
            data: bytes = self._sync(download)
            if len(data) != length:
                raise TransientError(f"{what}: {len(data)} bytes came, not {length}")
            return data

        return self.call(ranged, what)

    def close(self) -> None:
        self._sync(self._client.close)


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
        digest = _metadata_digest(metadata if isinstance(metadata, Mapping) else None, size)
        return RemoteFile(self.url(key), key, size, self._version(info), digest)

    def list(self, key: str) -> list[RemoteFile]:
        found = self.call(
            lambda: self.fs.find(key, detail=True, withdirs=False), f"cannot list {self.url(key)}"
        )
        return [self._file(info) for _, info in sorted(found.items())]

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
    if not container:
        raise UsageError(f"{url!r} names no container ({protocol}://CONTAINER/PATH)")
    if not _CONTAINER_RE.fullmatch(container):
        raise UsageError(
            f"{container!r} in {url!r} is not a valid container name (3-63 lowercase letters, "
            "digits and single hyphens, starting and ending with a letter or digit)"
        )
