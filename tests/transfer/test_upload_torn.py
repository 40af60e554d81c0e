"""An output rewritten in place, at the same size, while upload reads it is never published
torn, nor with a digest other than its bytes' (taskkit.transfer.upload ``_check``: the file's
identity
before and after the read).

Same size is the hard case: nothing but the file's times says it changed. Each test backdates
the file first, as an output is once its command has ended, so the rewrite moves its mtime
whatever the clock's granularity. The rewrite happens at a set moment, not by timing: inside a
read (``os.pread`` returns the first half of the old bytes and the second half of the new, as
a read racing a writer can), or while the first block is being sent (the store's hook).
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable
from pathlib import Path

import pytest
from observing import OnPlan
from upload_fakes import FakeStores, Recorded

from taskkit.content.digest import CHUNK_SIZE, hash_bytes
from taskkit.storage.base import DIGEST_METADATA, SIZE_METADATA, Store
from taskkit.storage.memory import MemoryStore
from taskkit.testing import Azurite
from taskkit.transfer.manifest import Manifest
from taskkit.transfer.patterns import parse_output
from taskkit.transfer.upload import execute, upload
from taskkit.transfer.upload_plan import MANIFEST_NAME, plan

SMALL = 4096  # one request
LARGE = 3 * CHUNK_SIZE - 7  # three blocks
OLD_TIME = 1_000_000_000  # 2001: long before any write the test makes


def versions(size: int) -> tuple[bytes, bytes]:
    """Two contents of one size that differ in every half."""
    rng = random.Random(size)
    return rng.randbytes(size), rng.randbytes(size)


def backdated(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.utime(path, ns=(OLD_TIME * 10**9, OLD_TIME * 10**9))


def rewrite_in_place(path: Path, data: bytes) -> None:
    """Overwrite every byte of ``path`` without truncating it: its size never changes."""
    fd = os.open(path, os.O_WRONLY)
    try:
        view = memoryview(data)
        offset = 0
        while offset < len(data):
            offset += os.pwrite(fd, view[offset:], offset)
    finally:
        os.close(fd)


@pytest.fixture
def torn_read(monkeypatch: pytest.MonkeyPatch) -> Callable[[Path, bytes], list[int]]:
    """Make the first read of a file a torn one: half old bytes, then the file rewritten in
    place with ``new``, then the rest of the read from the new bytes. The list returned
    counts the reads of that file."""

    def arm(path: Path, new: bytes) -> list[int]:
        real_pread = os.pread
        ino = path.stat().st_ino
        reads: list[int] = []

        def pread(fd: int, length: int, offset: int) -> bytes:
            if os.fstat(fd).st_ino != ino:
                return real_pread(fd, length, offset)
            reads.append(offset)
            if len(reads) > 1:
                return real_pread(fd, length, offset)
            half = length // 2
            head = real_pread(fd, half, offset)
            rewrite_in_place(path, new)
            return head + real_pread(fd, length - half, offset + half)

        monkeypatch.setattr(os, "pread", pread)
        return reads

    return arm


def assert_published_whole(
    data: bytes, metadata: dict[str, str], manifest: bytes, new: bytes
) -> None:
    """The blob holds one whole version (the final one), its taskkit digest and the
    manifest's describe exactly those bytes."""
    assert data == new, "the blob holds a torn mix of two versions"
    lowered = {k.lower(): v for k, v in metadata.items()}
    assert lowered[DIGEST_METADATA] == str(hash_bytes(data))
    assert lowered[SIZE_METADATA] == str(len(data))
    (entry,) = Manifest.parse(manifest, "manifest").files
    assert (entry.digest, entry.size) == (hash_bytes(data), len(data))


def assert_published_whole_in(fake: MemoryStore, new: bytes) -> None:
    """:func:`assert_published_whole` of ``result.bin`` published to ``fake://c/run/``."""
    assert_published_whole(
        fake.data("c/run/result.bin"),
        fake.metadata("c/run/result.bin"),
        fake.data(f"c/run/{MANIFEST_NAME}"),
        new,
    )


@pytest.mark.parametrize("size", [SMALL, LARGE], ids=["one-request", "in-blocks"])
def test_a_torn_read_of_a_same_size_rewrite_is_read_again(
    workdir: Path, torn_read: Callable[[Path, bytes], list[int]], size: int
) -> None:
    """A same-size rewrite in the middle of a read: the file is read again and the blob,
    its digest and the manifest are all the new version, never the torn bytes."""
    old, new = versions(size)
    path = workdir / "out" / "result.bin"
    backdated(path, old)
    stores = FakeStores()
    the_plan = plan([parse_output("out/*=fake://c/run/")], workdir=workdir, stores=stores)
    reads = torn_read(path, new)
    summary = execute(the_plan, jobs=4, task={})
    assert summary.problems == []
    assert len(reads) > -(-size // CHUNK_SIZE), "the file was read again after the change"
    assert_published_whole_in(stores.fake, new)


def test_a_same_size_rewrite_while_a_block_is_sent_is_sent_again(workdir: Path) -> None:
    """A same-size rewrite while the first of three blocks is being sent (one block at a time,
    so the next ones are read from the new bytes): the blocks are abandoned, the file is
    read and sent again, and what is published is the new version, whole."""
    old, new = versions(LARGE)
    path = workdir / "out" / "result.bin"
    backdated(path, old)
    rewritten: list[str] = []

    def rewrite_once(action: str, key: str) -> None:
        if action == "write" and not rewritten:
            rewritten.append(key)
            rewrite_in_place(path, new)

    made: list[Recorded] = []

    def wrap(store: Store) -> Store:
        made.append(Recorded(store, rewrite_once))
        return made[-1]

    stores = FakeStores(wrap=wrap)
    the_plan = plan([parse_output("out/*=fake://c/run/")], workdir=workdir, stores=stores)
    summary = execute(the_plan, jobs=1, task={})
    assert summary.problems == []
    assert rewritten == ["c/run/result.bin"]
    assert made[0].actions("writer", "abort", "commit") == [
        ("writer", "c/run/result.bin"),
        ("abort", "c/run/result.bin"),
        ("writer", "c/run/result.bin"),
        ("commit", "c/run/result.bin"),
    ]
    assert_published_whole_in(stores.fake, new)


@pytest.fixture
def own_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """upload() opens the default stat-cache: keep it in the test's own folder."""
    monkeypatch.setenv("TASKKIT_CACHE_DIR", str(tmp_path / "default-cache"))


@pytest.mark.azurite
@pytest.mark.parametrize("size", [SMALL, LARGE], ids=["one-request", "in-blocks"])
def test_on_azurite_a_torn_read_never_reaches_the_blob(
    azurite: Azurite,
    azurite_container: str,
    own_cache: None,
    workdir: Path,
    torn_read: Callable[[Path, bytes], list[int]],
    size: int,
) -> None:
    """The same on a real block blob: the blob Azurite serves is the new version, whole, and
    its ``taskkit_digest`` metadata and the manifest describe exactly its bytes."""
    old, new = versions(size)
    path = workdir / "out" / "result.bin"
    backdated(path, old)
    armed: list[list[int]] = []

    def arm(the_plan: object) -> None:
        # Armed once the plan has hashed the file: the torn read is the upload's first.
        armed.append(torn_read(path, new))

    summary = upload(
        [f"out/*=az://{azurite_container}/run/"],
        workdir=workdir,
        storage_options=azurite.storage_options(),
        task={},
        observer=OnPlan(arm),
    )
    assert summary.problems == []
    assert len(armed[0]) > -(-size // CHUNK_SIZE)
    with azurite.blob_service_client() as service:
        container = service.get_container_client(azurite_container)
        blob = container.download_blob("run/result.bin")
        data = blob.readall()
        metadata = dict(blob.properties.metadata)
        manifest = container.download_blob(f"run/{MANIFEST_NAME}").readall()
    assert_published_whole(data, metadata, manifest, new)
