"""Every ranged read on Azure is conditional on the etag the listing gave (taskkit.storage.azure
``read``): a blob overwritten while it is being staged ends in exit 75, with nothing at the
final path, on a real Azurite; the next attempt stages the new version whole.

The overwrite happens at a set moment, not by timing: after the first 8 MiB range of a
multi-range download has been read (the store's ``read`` returned it; one range at a time with
``jobs=1``), or between plan and execute for a file of one range (the observer's ``plan``). The new
version has the same size, so nothing but the etag tells the versions apart.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from observing import OnPlan

from taskkit.content.digest import CHUNK_SIZE, hash_bytes
from taskkit.content.statcache import StatCache
from taskkit.exceptions import SourceChanged
from taskkit.observer import Observer
from taskkit.storage.azure import AzureStore
from taskkit.storage.base import RemoteFile, file_metadata
from taskkit.testing import Azurite
from taskkit.transfer.nodecache import NodeCache
from taskkit.transfer.stage import stage
from taskkit.transfer.summary import Summary

pytestmark = pytest.mark.azurite

LARGE = 2 * CHUNK_SIZE + 1000  # three ranges: 8 MiB, 8 MiB, 1000 B
SMALL = 5000  # one range


def versions(size: int) -> tuple[bytes, bytes]:
    rng = random.Random(size)
    return rng.randbytes(size), rng.randbytes(size)


class Source:
    """One blob on Azurite, written with the plain SDK (never by taskkit)."""

    def __init__(self, azurite: Azurite, container: str, name: str, declared: bool) -> None:
        self.azurite = azurite
        self.url = f"az://{container}/{name}"
        self.container = container
        self.name = name
        self.declared = declared  # with a taskkit digest in its metadata, as an upload writes

    def write(self, data: bytes) -> None:
        metadata = file_metadata(hash_bytes(data), len(data)) if self.declared else None
        with self.azurite.blob_service_client() as service:
            service.get_blob_client(self.container, self.name).upload_blob(
                data, overwrite=True, metadata=metadata
            )


def staged(
    azurite: Azurite,
    source: Source,
    workdir: Path,
    tmp_path: Path,
    node_cache: bool,
    observer: Observer | None = None,
) -> Summary:
    node = NodeCache(tmp_path / "node") if node_cache else None
    with StatCache.open(tmp_path / "cache") as cache:
        return stage(
            [f"{source.url}=in/data.bin"],
            workdir=workdir,
            cache=cache,
            node_cache=node,
            storage_options=azurite.storage_options(),
            jobs=1,
            observer=observer,
        )


def assert_refused_as_changed(summary: Summary, source: Source, workdir: Path) -> None:
    """Exit 75 naming the change, and nothing at the final path."""
    assert len(summary.problems) == 1, "staged although the blob changed under the read"
    assert summary.problems[0].what == source.url
    error = summary.exit_error()
    assert isinstance(error, SourceChanged), error
    assert error.exit_code == 75
    assert "changed while being read" in str(error)
    assert not (workdir / "in" / "data.bin").exists()


@pytest.mark.parametrize("node_cache", [False, True], ids=["direct", "node-cache"])
@pytest.mark.parametrize("declared", [False, True], ids=["plain-blob", "taskkit-blob"])
def test_a_blob_overwritten_mid_download_is_75_and_nothing_at_the_final_path(
    azurite: Azurite,
    azurite_container: str,
    workdir: Path,
    tmp_path: Path,
    node_cache: bool,
    declared: bool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Overwritten (same size) after the first of three ranges landed: the next range is
    refused by its If-Match, the file fails with SourceChanged (75) and nothing is at its
    final path (nor in the node cache); the next attempt stages the new version, whole."""
    old, new = versions(LARGE)
    source = Source(azurite, azurite_container, "in/data.bin", declared)
    source.write(old)
    landed: list[int] = []
    read = AzureStore.read

    def overwrite_after_first_range(
        store: AzureStore, file: RemoteFile, offset: int, length: int
    ) -> bytes:
        data = read(store, file, offset, length)
        landed.append(len(data))
        if len(landed) == 1:
            source.write(new)
        return data

    monkeypatch.setattr(AzureStore, "read", overwrite_after_first_range)
    summary = staged(azurite, source, workdir, tmp_path, node_cache)
    monkeypatch.undo()
    assert landed[0] == CHUNK_SIZE  # the overwrite came after one whole range, mid-download
    assert_refused_as_changed(summary, source, workdir)
    assert landed == [CHUNK_SIZE], "no byte of the new version landed"
    if node_cache:
        assert [p for p in (tmp_path / "node" / "objects").rglob("*") if p.is_file()] == []

    again = staged(azurite, source, workdir, tmp_path, node_cache)
    assert again.problems == []
    assert (workdir / "in" / "data.bin").read_bytes() == new


@pytest.mark.parametrize("node_cache", [False, True], ids=["direct", "node-cache"])
def test_a_blob_overwritten_between_plan_and_read_is_75(
    azurite: Azurite, azurite_container: str, workdir: Path, tmp_path: Path, node_cache: bool
) -> None:
    """A file of one range, overwritten (same size) after it was listed and before its one
    read: that read is refused too (SourceChanged, 75), nothing at the final path."""
    old, new = versions(SMALL)
    source = Source(azurite, azurite_container, "in/data.bin", declared=False)
    source.write(old)
    summary = staged(
        azurite,
        source,
        workdir,
        tmp_path,
        node_cache,
        observer=OnPlan(lambda plan: source.write(new)),
    )
    assert_refused_as_changed(summary, source, workdir)
