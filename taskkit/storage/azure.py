"""Azure Blob storage through the async SDK: the Azure side of :mod:`taskkit.storage.base`.

adlfs resolves the credentials (connection string, account key, SAS token or managed identity);
taskkit then talks to the SDK directly, driven from any thread through fsspec's I/O loop, so that
a prefix is listed with its metadata in one request per 5,000 blobs, every read is conditional on
the listed etag, writes carry taskkit's metadata, and retries are taskkit's own.

Writes: a small file is one request (Put Blob), a large one is staged in blocks and becomes
visible only when its block list is committed, so a blob at its name is always whole. Staged
blocks outlive a crashed upload (for a week), and :meth:`_BlockWriter.known` lists them, so a
later attempt sends only the blocks that are missing. A container that does not exist is a
configuration error when writing or loading (taskkit never creates containers), not a missing
input.

Conditions are the service's own: If-Match on the etag, If-None-Match: * for "only if absent",
so a conditional write is atomic across every process and node that writes the blob. Azurite
answers a failed If-None-Match with 409 BlobAlreadyExists and a failed If-Match (also on a
missing blob) with 412 ConditionNotMet; those, a 412 however labelled, and a 404 BlobNotFound
all become :class:`~taskkit.exceptions.Conflict` (:func:`~taskkit.storage.errors.translate`).
"""

from __future__ import annotations

import builtins
import contextlib
import mimetypes
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from taskkit.exceptions import ConfigError, InputNotFound, SourceChanged, TransientError, UsageError
from taskkit.storage.base import RemoteFile, Store, Writer, is_conditional, metadata_digest
from taskkit.storage.retry import RetryBudget

__all__ = ["APPEND_LIMIT", "AzureStore"]

_T = TypeVar("_T")

#: Bytes per Append Block request (the service's limit on older API versions).
APPEND_LIMIT = 4 * 1024 * 1024
#: Content-Type of files that mimetypes calls encoded (``.tar.gz`` is gzip, not a tar).
_COMPRESSED = {
    "gzip": "application/gzip",
    "bzip2": "application/x-bzip2",
    "xz": "application/x-xz",
    "compress": "application/x-compress",
    "br": "application/x-brotli",
}
#: Blobs per listing request: the service's largest page.
LIST_PAGE = 5000
#: A listed blob: its name in the container, size, etag (as listed) and metadata.
_Listed = tuple[str, int, str, dict[str, str]]
_Listing = list[_Listed]  # named here: in AzureStore, ``list`` is the method
#: The most bytes of a response body taken from aiohttp per step: each step costs the SDK's
#: stream wrapper about 20 us of CPU, and its default of 4 KiB makes 256 steps of a MiB.
#: A step takes only what has arrived, so this bounds no buffer: aiohttp's own limit does.
READ_BLOCK = 8 * 1024 * 1024
#: Seconds to open a connection, and to wait for the next bytes of a response.
CONNECT_TIMEOUT = 10
READ_TIMEOUT = 60


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
            transport=_transport(),
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

    def _named(self, key: str) -> tuple[str, str]:
        """The container and blob name of ``key``, which must name a blob (the SDK's own
        refusal of a bare container is a ValueError, an internal error)."""
        container, name = self._split(key)
        if not name:
            raise UsageError(f"{self.url(key)!r} names a container, not a blob")
        return container, name

    def _file(self, container: str, props: Any) -> RemoteFile:
        key = f"{container}/{props.name}"
        return RemoteFile(
            self.url(key),
            key,
            int(props.size),
            _etag(props.etag),
            metadata_digest(props.metadata, int(props.size)),
        )

    def list(self, key: str) -> list[RemoteFile]:
        container, prefix = self._split(key)
        files: list[RemoteFile] = self.call(
            lambda: self._sync(self._listing, container, prefix), f"cannot list {self._where(key)}"
        )
        return files

    def _files(self, container: str, listed: _Listing, into: builtins.list[RemoteFile]) -> None:
        """The files of one page, added to ``into`` as they are made, so that only one page of
        names and metadata is held beside the RemoteFiles."""
        for name, size, etag, metadata in listed:
            # Hierarchical-namespace accounts list their directories as empty marker blobs.
            if metadata.get("hdi_isfolder") == "true":
                continue
            blob = f"{container}/{name}"
            digest = metadata_digest(metadata, size)
            into.append(RemoteFile(self.url(blob), blob, size, _etag(etag), digest))

    async def _listing(
        self, container: str, prefix: str, page: int = LIST_PAGE
    ) -> builtins.list[RemoteFile]:
        """Every file whose name starts with ``prefix``, one request per ``page`` blobs.

        The pages are the SDK's List Blobs requests, sent through the client's own pipeline
        (credential, API version, transport), but their XML is read here: the SDK's model
        deserializer spends about 0.3 ms of CPU per blob (0.65 s for 2,000, half a minute for
        100,000), ElementTree a seventh of that. An answer other than 200 is asked again
        through the SDK's own listing, so that an error is exactly the SDK's (which
        :func:`~taskkit.storage.errors.translate` knows)."""
        from urllib.parse import quote

        from azure.core.rest import HttpRequest

        client = self._client.get_container_client(container)
        found: builtins.list[RemoteFile] = []
        marker = ""
        while True:
            params = {"restype": "container", "comp": "list", "include": "metadata"}
            params["maxresults"] = str(page)
            if prefix:
                params["prefix"] = prefix
            if marker:
                params["marker"] = marker
            request = HttpRequest(
                "GET",
                client.url,
                # azure-core joins the parameters as given: quoted here, as the SDK's own.
                params={name: quote(value, safe="") for name, value in params.items()},
                headers={"x-ms-version": client.api_version, "Accept": "application/xml"},
            )
            response = await client._client._send_request(request)
            if response.status_code != 200:
                await response.close()  # its body may be consumed already (the SDK's hooks)
                found = []
                self._files(container, await self._sdk_listing(client, prefix, page), found)
                return found
            listed, marker = _page(await response.read())
            self._files(container, listed, found)
            if not marker:
                return found

    @staticmethod
    async def _sdk_listing(client: Any, prefix: str, page: int) -> _Listing:
        """:meth:`_listing` through the SDK's models: its errors are the SDK's."""
        blobs = client.list_blobs(
            name_starts_with=prefix or None, include=["metadata"], results_per_page=page
        )
        return [
            (props.name, int(props.size), str(props.etag), dict(props.metadata or {}))
            async for props in blobs
        ]

    def has_files(self, key: str) -> bool:
        container, prefix = self._split(key)

        async def first() -> bool:
            blobs = self._client.get_container_client(container).list_blobs(
                name_starts_with=prefix or None, results_per_page=1
            )
            async for page in blobs.by_page():
                async for _ in page:
                    return True
                return False
            return False

        found: bool = self.call(lambda: self._sync(first), f"cannot list {self._where(key)}")
        return found

    def stat(self, key: str) -> RemoteFile:
        container, name = self._named(key)

        async def properties() -> Any:
            return await self._client.get_blob_client(container, name).get_blob_properties()

        props = self.call(lambda: self._sync(properties), f"cannot read {self._where(key)}")
        return self._file(container, props)

    def read(self, file: RemoteFile, offset: int, length: int) -> bytes:
        what = f"cannot read {self._where(file.key)}"

        def ranged() -> bytes:
            data: bytes = self._sync(self._download, file, offset, length)
            if len(data) != length:
                raise TransientError(f"{what}: {len(data)} bytes came, not {length}")
            return data

        return self.call(ranged, what)

    async def _download(self, file: RemoteFile, offset: int, length: int) -> bytes:
        """One GET of ``length`` bytes at ``offset``, only if the blob still has the listed
        etag; on the I/O loop."""
        from azure.core import MatchConditions

        container, name = self._split(file.key)
        stream = await self._client.get_blob_client(container, name).download_blob(
            offset=offset,
            length=length,
            etag=file.version,
            match_condition=MatchConditions.IfNotModified,
            decompress=False,  # the stored bytes, whatever Content-Encoding says
        )
        # readinto hands over the response body as it is; readall would copy it twice.
        sink = _Sink()
        await stream.readinto(sink)  # type: ignore[arg-type]
        return sink.parts[0] if len(sink.parts) == 1 else b"".join(sink.parts)

    # -- writes ------------------------------------------------------------------------------

    def _write(
        self, action: Callable[[], _T], key: str, *, verb: str = "write", conditional: bool = False
    ) -> _T:
        """A write (or a load), retried like any call; a missing container is a setting to
        fix. ``conditional``: see :meth:`Store.call`."""
        where = self._where(key)
        try:
            return self.call(action, f"cannot {verb} {where}", conditional=conditional)
        except InputNotFound as exc:
            if "ContainerNotFound" not in str(exc):
                raise
            container = self._split(key)[0]
            raise ConfigError(
                f"cannot {verb} {where}: container {container!r} does not exist "
                "(taskkit does not create containers)"
            ) from exc

    def load(self, key: str) -> tuple[bytes, str] | None:
        from azure.core.exceptions import ResourceNotFoundError

        async def download() -> tuple[bytes, str] | None:
            try:
                stream = await self._blob(key).download_blob(decompress=False)
            except ResourceNotFoundError as exc:
                if getattr(exc, "error_code", None) == "ContainerNotFound":
                    raise  # a setting to fix, not a missing file
                return None
            sink = _Sink()
            await stream.readinto(sink)
            return b"".join(sink.parts), _etag(stream.properties.etag)

        found: tuple[bytes, str] | None = self._write(
            lambda: self._sync(download), key, verb="read"
        )
        return found

    def _blob(self, key: str) -> Any:
        container, name = self._named(key)
        return self._client.get_blob_client(container, name)

    @staticmethod
    def _settings(key: str) -> Any:
        """The Content-Type a browser or the portal needs. Never a Content-Encoding: the SDK
        and browsers would inflate a ``.gz`` on download, and its bytes would not come back."""
        from azure.storage.blob import ContentSettings

        kind, encoding = mimetypes.guess_type(key, strict=False)
        if encoding is not None:
            kind = _COMPRESSED.get(encoding, "application/octet-stream")
        return ContentSettings(content_type=kind or "application/octet-stream")

    def put(
        self,
        key: str,
        data: bytes,
        metadata: Mapping[str, str],
        *,
        if_match: str | None = None,
        if_absent: bool = False,
    ) -> str:
        from azure.core import MatchConditions

        conditional = is_conditional(if_match, if_absent)
        condition = (
            {}
            if if_match is None
            else {"etag": if_match, "match_condition": MatchConditions.IfNotModified}
        )

        async def upload() -> Any:
            return await self._blob(key).upload_blob(
                data,
                length=len(data),
                overwrite=not if_absent,  # False sends If-None-Match: *
                metadata=dict(metadata),
                content_settings=self._settings(key),
                max_concurrency=1,
                **condition,
            )

        def attempt() -> str:
            return _etag(self._sync(upload)["etag"])

        if not conditional:
            return self._write(attempt, key)
        return self._settle(
            lambda a: self._write(a, key, conditional=True),
            attempt,
            lambda: self._holding(key, data),
        )

    def writer(self, key: str) -> Writer:
        return _BlockWriter(self, key)

    def delete(self, key: str, *, if_match: str | None = None) -> None:
        from azure.core import MatchConditions
        from azure.core.exceptions import ResourceNotFoundError

        async def remove() -> bool:
            if if_match is None:
                with contextlib.suppress(ResourceNotFoundError):
                    await self._blob(key).delete_blob()
            else:
                await self._blob(key).delete_blob(
                    etag=if_match, match_condition=MatchConditions.IfNotModified
                )
            return True

        if not is_conditional(if_match, False):
            self._write(lambda: self._sync(remove), key)
            return
        self._settle(
            lambda a: self._write(a, key, verb="delete", conditional=True),
            lambda: bool(self._sync(remove)),
            lambda: self._gone(key),
        )

    def append(self, key: str, offset: int, data: bytes) -> None:
        from azure.core.exceptions import HttpResponseError

        async def create() -> None:
            await self._blob(key).create_append_blob(content_settings=self._settings(key))

        async def add(piece: bytes, at: int) -> None:
            try:
                await self._blob(key).append_block(piece, length=len(piece), appendpos_condition=at)
            except HttpResponseError as exc:
                # An earlier try of this very append that timed out may have landed after all.
                if exc.status_code != 412:
                    raise
                props = await self._blob(key).get_blob_properties()
                if props.size != at + len(piece):
                    where = self._where(key)
                    raise SourceChanged(
                        f"cannot write {where}: it holds {props.size} bytes, not {at}"
                    ) from exc

        if offset == 0:
            self._write(lambda: self._sync(create), key)
        for start in range(0, len(data), APPEND_LIMIT):
            piece = data[start : start + APPEND_LIMIT]
            at = offset + start
            self._write(lambda: self._sync(add, piece, at), key)  # noqa: B023 - called at once

    def close(self) -> None:
        self._sync(self._client.close)


def _transport() -> Any:
    """The SDK's aiohttp transport, sending each request once. aiohttp re-sends an idempotent
    request (GET, PUT, DELETE) once, unseen, when the connection drops before the reply: a
    conditional write whose reply was lost would meet its own write on what taskkit counts as
    its first try, and be reported as another writer's :class:`~taskkit.exceptions.Conflict`
    (:meth:`Store.put`). Retries are taskkit's own, and counted."""
    from azure.core.pipeline.transport import AioHttpTransport

    class SendOnce(AioHttpTransport):  # type: ignore[misc]  # azure-core's aiohttp types are Any
        async def open(self) -> None:
            await super().open()
            if self.session is not None:  # aiohttp's own switch (its test client turns it off)
                self.session._retry_connection = False

    return SendOnce(
        connection_timeout=CONNECT_TIMEOUT,
        read_timeout=READ_TIMEOUT,
        connection_data_block_size=READ_BLOCK,
        use_env_settings=_environment_matters(),
    )


def _environment_matters() -> bool:
    """Whether aiohttp must consult the environment on each request: only when a proxy is set
    or a netrc file exists. aiohttp, told to trust the environment, looks up the proxy and the
    netrc credentials anew for every request, each in a worker thread: two thread hops per
    request, a fifth of taskkit's CPU staging 2,000 blobs of 64 KiB (9.2 s, 7.3 s without).
    Without a proxy variable or a netrc file both lookups find nothing, so leaving them out
    changes no request. Read once, when the store opens."""
    import urllib.request
    from pathlib import Path

    if urllib.request.getproxies_environment():
        return True
    netrc = os.environ.get("NETRC")
    try:
        return Path(netrc).exists() if netrc is not None else (Path.home() / ".netrc").exists()
    except (OSError, RuntimeError):  # no home to look in: let aiohttp decide, as it always did
        return True


def _page(body: bytes) -> tuple[list[_Listed], str]:
    """The blobs of one List Blobs answer, and the marker of the next page ("" at the end).
    A name the service could not put in XML as it is comes percent-encoded (Encoded="true"),
    as the SDK decodes it."""
    from urllib.parse import unquote
    from xml.etree import ElementTree

    root = ElementTree.fromstring(body)
    listed: _Listing = []
    for blob in root.iterfind("Blobs/Blob"):
        tag = blob.find("Name")
        name = _field(blob, "Name")
        if tag is not None and tag.get("Encoded") == "true":
            name = unquote(name)
        found = blob.find("Metadata")
        metadata = {} if found is None else {m.tag: m.text or "" for m in found}
        size = int(_field(blob, "Properties/Content-Length"))
        listed.append((name, size, _field(blob, "Properties/Etag"), metadata))
    return listed, root.findtext("NextMarker") or ""


def _field(element: Any, path: str) -> str:
    """The text at ``path`` under a listed blob, which the service always sends."""
    text = element.findtext(path)
    if not text:
        raise TransientError(f"a listing page has a blob without {path}")
    return str(text)


def _etag(value: object) -> str:
    """One form for an etag, however the service reported it: listings give it bare, the
    headers of other responses quoted (HTTP's form, which If-Match wants)."""
    text = str(value)
    return text if text.startswith('"') else f'"{text}"'


class _BlockWriter(Writer):
    """A block blob: blocks staged from any thread, visible once the list is committed."""

    parallel = True

    def __init__(self, store: AzureStore, key: str) -> None:
        self.store = store
        self.key = key
        self.blob = store._blob(key)

    def known(self) -> frozenset[str]:
        from azure.core.exceptions import ResourceNotFoundError

        async def blocks() -> frozenset[str]:
            try:
                committed, uncommitted = await self.blob.get_block_list("all")
            except ResourceNotFoundError:  # neither a blob nor staged blocks at this name
                return frozenset()
            return frozenset(str(b.id) for b in (*committed, *uncommitted))

        return self.store._write(lambda: self.store._sync(blocks), self.key)

    def write(self, block_id: str, data: bytes) -> None:
        async def stage() -> None:
            await self.blob.stage_block(block_id, data, length=len(data))

        self.store._write(lambda: self.store._sync(stage), self.key)

    def commit(self, block_ids: Sequence[str], metadata: Mapping[str, str]) -> str:
        async def commit() -> Any:
            return await self.blob.commit_block_list(
                list(block_ids),
                metadata=dict(metadata),
                content_settings=self.store._settings(self.key),
            )

        result = self.store._write(lambda: self.store._sync(commit), self.key)
        return _etag(result["etag"])
