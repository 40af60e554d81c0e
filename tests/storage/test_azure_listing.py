"""The Azure store lists a prefix from the List Blobs XML itself (taskkit.storage.azure
``_listing``, ``_page``), not through the SDK's models: what it finds must be exactly what the
SDK's listing finds (names however spelt, sizes, etags, taskkit metadata, every page), and a
failing listing must fail exactly as the SDK's does."""

from __future__ import annotations

import datetime
import re
from collections.abc import Iterator

import pytest
from azure.storage.blob import ContainerSasPermissions, generate_container_sas

from taskkit.content.digest import hash_bytes
from taskkit.exceptions import TaskkitError, TransientError
from taskkit.storage import azure
from taskkit.storage.azure import AzureStore
from taskkit.storage.base import RemoteFile, file_metadata
from taskkit.storage.retry import RetryBudget
from taskkit.storage.stores import Stores
from taskkit.testing import Azurite

#: Names the XML must carry faithfully: spaces, non-ASCII, XML's own specials, URL specials.
NAMES = [
    "in/plain.bin",
    "in/with space.txt",
    "in/ünïcödé/straße.bin",
    "in/<angle> & \"quote\" 'apos'.bin",
    "in/percent%20and+plus=eq?q#h.bin",
    "in/deep/er/and/deeper/x",
    "in/empty",
]
#: Listed by a prefix of "in" but not of "in/".
OUTSIDE = ["in.txt", "inner/x.bin", "out/y.bin"]


def content(name: str) -> bytes:
    return b"" if name.endswith("empty") else name.encode() * 3


@pytest.fixture
def seeded(azurite: Azurite, azurite_container: str) -> str:
    """The container, with NAMES (half with taskkit's metadata) and OUTSIDE in it."""
    with azurite.blob_service_client() as service:
        container = service.get_container_client(azurite_container)
        for i, name in enumerate([*NAMES, *OUTSIDE]):
            data = content(name)
            metadata = file_metadata(hash_bytes(data), len(data)) if i % 2 else {"other": "x"}
            container.upload_blob(name, data, metadata=metadata)
    return azurite_container


def opened(azurite: Azurite, options: dict[str, str] | None = None) -> Iterator[AzureStore]:
    with Stores(RetryBudget(attempts=1), options or azurite.storage_options()) as stores:
        store, _ = stores.open("az://any/")
        assert isinstance(store, AzureStore)
        yield store


@pytest.fixture
def store(azurite: Azurite) -> Iterator[AzureStore]:
    yield from opened(azurite)


def by_the_sdk(azurite: Azurite, container: str, prefix: str) -> list[RemoteFile]:
    """What the SDK's own listing says of ``prefix``, as RemoteFiles."""
    from taskkit.storage.base import metadata_digest

    with azurite.blob_service_client() as service:
        blobs = service.get_container_client(container).list_blobs(
            name_starts_with=prefix or None, include=["metadata"]
        )
        return [
            RemoteFile(
                f"az://{container}/{b.name}",
                f"{container}/{b.name}",
                b.size,
                f'"{b.etag.strip(chr(34))}"',
                metadata_digest(b.metadata, b.size),
            )
            for b in blobs
        ]


@pytest.mark.azurite
@pytest.mark.parametrize(
    "prefix",
    ["in/", "in", "", "in/deep/", "nothing/", 'in/<angle> & "', "in/percent%20and+", "in/ü"],
)
def test_the_listing_is_the_sdks(
    azurite: Azurite, seeded: str, store: AzureStore, prefix: str
) -> None:
    """Names (spaces, non-ASCII, XML and URL specials), sizes, etags and digests equal the
    SDK's listing, for a prefix that is a folder, a bare name prefix, the whole container,
    one that matches nothing and ones holding specials; nothing outside the prefix is listed,
    in one request (never the SDK's listing again behind it)."""
    since = azurite.log_offset()
    listed = store.list(f"{seeded}/{prefix}")
    assert azurite.operations(since) == ["Container_ListBlobFlatSegment"]
    assert listed == by_the_sdk(azurite, seeded, prefix)
    assert all(f.key.startswith(f"{seeded}/{prefix}") for f in listed)
    if prefix == "in/":
        assert sorted(f.key for f in listed) == sorted(f"{seeded}/{n}" for n in NAMES)
        assert sum(f.digest is not None for f in listed) == len(NAMES) // 2


@pytest.mark.azurite
@pytest.mark.parametrize("page", [1, 2, 3, 6, 7, 5000])
def test_every_page_is_read(azurite: Azurite, seeded: str, store: AzureStore, page: int) -> None:
    """However many blobs a page holds, every blob is listed once, in the service's order,
    with as many requests as the SDK's listing makes (one per page: never fewer)."""
    since = azurite.log_offset()
    found = store._sync(store._listing, seeded, "in/", page)
    ours = azurite.operations(since)
    since = azurite.log_offset()
    client = store._client.get_container_client(seeded)
    sdks: list[RemoteFile] = []
    store._files(seeded, store._sync(AzureStore._sdk_listing, client, "in/", page), sdks)
    assert [f.key for f in found] == [f"{seeded}/{name}" for name in sorted(NAMES)]
    assert found == sdks
    assert ours == azurite.operations(since)
    assert len(ours) >= -(-len(NAMES) // page)
    assert set(ours) == {"Container_ListBlobFlatSegment"}


def failure(action: object) -> tuple[type[BaseException], str, int | None]:
    with pytest.raises(TaskkitError) as caught:
        action()  # type: ignore[operator]
    error = caught.value
    return type(error), str(error), getattr(error, "exit_code", None)


@pytest.mark.azurite
def test_a_missing_container_fails_as_the_sdks_listing(
    store: AzureStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A listing the service refuses (no such container) ends in the very error the SDK's
    listing gives, class, message and exit code."""
    ours = failure(lambda: store.list("nosuchcontainer/in/"))

    async def sdk_only(container: str, prefix: str, page: int = azure.LIST_PAGE) -> object:
        client = store._client.get_container_client(container)
        found: list[RemoteFile] = []
        store._files(container, await AzureStore._sdk_listing(client, prefix, page), found)
        return found

    monkeypatch.setattr(store, "_listing", sdk_only)
    assert ours == failure(lambda: store.list("nosuchcontainer/in/"))


@pytest.mark.azurite
@pytest.mark.parametrize("may_list", [True, False], ids=["read-list", "read-only"])
def test_a_container_sas_lists_as_the_sdk_does(
    azurite: Azurite, seeded: str, may_list: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a container SAS as the credential (its token in every request's query, beside
    the listing's own parameters) the listing is the SDK's, and without the list permission
    it fails as the SDK's does."""
    key = re.search(r"AccountKey=([^;]+)", azurite.connection_string)
    assert key is not None
    sas = generate_container_sas(
        azurite.account_name,
        seeded,
        account_key=key.group(1),
        permission=ContainerSasPermissions(read=True, list=may_list),
        expiry=datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=1),
    )
    conn = f"BlobEndpoint={azurite.blob_endpoint};SharedAccessSignature={sas}"
    for store in opened(azurite, {"connection_string": conn}):
        if may_list:
            assert store.list(f"{seeded}/in/") == by_the_sdk(azurite, seeded, "in/")
            continue
        ours = failure(lambda: store.list(f"{seeded}/in/"))  # noqa: B023 - called at once

        async def sdk_only(container: str, prefix: str, page: int = azure.LIST_PAGE) -> object:
            client = store._client.get_container_client(container)  # noqa: B023
            found: list[RemoteFile] = []
            store._files(container, await AzureStore._sdk_listing(client, prefix, page), found)  # noqa: B023
            return found

        monkeypatch.setattr(store, "_listing", sdk_only)
        assert ours == failure(lambda: store.list(f"{seeded}/in/"))  # noqa: B023


PAGE = b"""<?xml version="1.0" encoding="utf-8"?>
<EnumerationResults ServiceEndpoint="http://h/" ContainerName="c">
  <Prefix>in/</Prefix><MaxResults>2</MaxResults>
  <Blobs>
    <Blob><Name Encoded="true">in%2Fbell%07.bin</Name>
      <Properties><Content-Length>3</Content-Length><Etag>0x1</Etag></Properties>
      <Metadata><taskkit_size>3</taskkit_size><empty /></Metadata></Blob>
    <Blob><Name>in/a%41.bin</Name>
      <Properties><Content-Length>0</Content-Length><Etag>0x2</Etag></Properties></Blob>
  </Blobs>
  <NextMarker>marker-2</NextMarker>
</EnumerationResults>"""


def test_a_page_decodes_only_encoded_names() -> None:
    """A name the service percent-encoded (Encoded="true") is decoded; a plain name that
    merely holds a percent sign is kept as it is; an empty metadata value is ""; the next
    page's marker is returned, and "" when there is none."""
    listed, marker = azure._page(PAGE)
    assert listed == [
        ("in/bell\x07.bin", 3, "0x1", {"taskkit_size": "3", "empty": ""}),
        ("in/a%41.bin", 0, "0x2", {}),
    ]
    assert marker == "marker-2"
    last = PAGE.replace(b"<NextMarker>marker-2</NextMarker>", b"<NextMarker />")
    assert azure._page(last)[1] == ""


@pytest.mark.parametrize("field", [b"<Etag>0x2</Etag>", b"<Content-Length>0</Content-Length>"])
def test_a_page_missing_a_blobs_field_is_transient(field: bytes) -> None:
    """A blob listed without its size or etag is never taken as size 0 or an empty etag
    (which no If-Match would ever meet): the page is refused as a passing failure."""
    with pytest.raises(TransientError):
        azure._page(PAGE.replace(field, b""))
