"""taskkit.transfer.upload: exact bytes at each name, a file re-read when it changed under the read,
blocks for large files, each DEST published by a manifest written last and only after every
file arrived, and the stat-cache told which blob each file became."""

from __future__ import annotations

import concurrent.futures
import json
import os
import random
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import fsspec
import pytest
from observing import Recorder
from store_counts import counting_stores
from upload_fakes import FakeStores, Recorded, clear_memory

import taskkit.content.hashing
from taskkit.content.digest import CHUNK_SIZE, hash_bytes, hash_chunk
from taskkit.content.hashing import hash_file
from taskkit.content.statcache import RACY_WINDOW_NS, StatCache, path_key
from taskkit.exceptions import (
    ConfigError,
    DataError,
    InputNotFound,
    TaskFailure,
    TransientError,
)
from taskkit.storage.base import DIGEST_METADATA, Store, file_metadata
from taskkit.storage.memory import MemoryStore
from taskkit.storage.stores import Stores
from taskkit.transfer.manifest import Manifest, ManifestFile
from taskkit.transfer.patterns import Output, parse_output
from taskkit.transfer.summary import Summary
from taskkit.transfer.upload import (
    CHANGE_ATTEMPTS,
    MAX_BLOCKS,
    SMALL_BATCH,
    SMALL_BATCH_BYTES,
    _batches,
    block_size,
    execute,
    upload,
)
from taskkit.transfer.upload_plan import MANIFEST_NAME, UploadEntry, UploadPlan, plan

MiB = 1024 * 1024
DEADLINE = 30.0


def later_clock() -> int:
    """A stat-cache clock past the racy window of every file written by the test."""
    return time.time_ns() + 10 * RACY_WINDOW_NS


def make(root: Path, files: dict[str, bytes]) -> None:
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)


def snapshot(*roots: Path) -> dict[Path, tuple[bytes, int, int]]:
    """Every file below ``roots``: content, mtime and inode."""
    found = {}
    for root in roots:
        for path in sorted(root.rglob("*")) if root.exists() else []:
            if path.is_file():
                st = path.stat()
                found[path] = (path.read_bytes(), st.st_mtime_ns, st.st_ino)
    return found


def run(
    texts: Iterable[str],
    workdir: Path,
    stores: Stores,
    cache: StatCache | None = None,
    **kw: object,
) -> Summary:
    """Plan and carry out an upload of ``texts``."""
    the_plan = plan([parse_output(t) for t in texts], workdir=workdir, stores=stores, cache=cache)
    return execute(the_plan, cache=cache, **kw)  # type: ignore[arg-type]


def read_manifest(path: Path) -> Manifest:
    return Manifest.parse(path.read_bytes(), str(path))


def recording(
    before: object = None, fake: MemoryStore | None = None
) -> tuple[FakeStores, list[Recorded]]:
    """Stores whose every store is a :class:`Recorded` (the list fills as they are opened),
    ``fake`` (a new one by default) at ``fake://``."""
    made: list[Recorded] = []

    def wrap(store: Store) -> Store:
        made.append(Recorded(store, before))  # type: ignore[arg-type]
        return made[-1]

    return FakeStores(fake, wrap=wrap), made


@pytest.fixture(autouse=True)
def own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """upload() opens the default stat-cache: keep it in the test's own folder."""
    monkeypatch.setenv("TASKKIT_CACHE_DIR", str(tmp_path / "default-cache"))


@pytest.fixture
def memory() -> Iterator[fsspec.AbstractFileSystem]:
    """fsspec's process-wide memory filesystem, empty before and after the test."""
    clear_memory()
    yield fsspec.filesystem("memory")
    clear_memory()


@pytest.fixture
def cache(tmp_path: Path) -> Iterator[StatCache]:
    with StatCache.open(tmp_path / "cache", clock=later_clock) as opened:
        yield opened


@pytest.fixture
def dest(tmp_path: Path) -> Path:
    return tmp_path / "dest"


# -- block_size ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "block"),
    [
        (0, 8 * MiB),
        (1, 8 * MiB),
        (CHUNK_SIZE, 8 * MiB),
        (CHUNK_SIZE + 1, 8 * MiB),
        (MAX_BLOCKS * CHUNK_SIZE, 8 * MiB),
        (MAX_BLOCKS * CHUNK_SIZE + 1, 16 * MiB),
        (2 * MAX_BLOCKS * CHUNK_SIZE, 16 * MiB),
        (2 * MAX_BLOCKS * CHUNK_SIZE + 1, 24 * MiB),
        (3 * MAX_BLOCKS * CHUNK_SIZE + 1, 32 * MiB),
        (190 * 1024**4, 499 * 8 * MiB),
    ],
)
def test_block_size_grows_by_whole_chunks_past_max_blocks(size: int, block: int) -> None:
    """8 MiB blocks up to 50,000 * 8 MiB (390 GiB), then 16 MiB, 24 MiB, ...; Azure's largest
    blob (190 TiB) takes 3992 MiB blocks, within its 4000 MiB limit."""
    assert block_size(size) == block


@pytest.mark.parametrize("seed", range(3))
def test_block_size_is_the_smallest_whole_chunk_within_max_blocks(seed: int) -> None:
    """For any size: a multiple of CHUNK_SIZE, at most MAX_BLOCKS blocks, and one chunk less
    per block would need more than MAX_BLOCKS."""
    rng = random.Random(seed)
    sizes = [rng.randrange(0, 200 * 1024**4) for _ in range(2000)]
    sizes += [k * MAX_BLOCKS * CHUNK_SIZE + d for k in range(1, 6) for d in (-1, 0, 1)]
    for size in sizes:
        step = block_size(size)
        assert step % CHUNK_SIZE == 0, size
        assert -(-size // step) <= MAX_BLOCKS, size
        if step > CHUNK_SIZE:
            assert -(-size // (step - CHUNK_SIZE)) > MAX_BLOCKS, size


# -- upload: bytes and the manifest -------------------------------------------------------------

SIZES = {
    "empty": 0,
    "one": 1,
    "sub/small.txt": 1000,
    "sub/chunk.bin": CHUNK_SIZE,
    "sub/deep/chunk-plus-one.bin": CHUNK_SIZE + 1,
}


@pytest.fixture
def outputs(workdir: Path) -> dict[str, bytes]:
    """Files of the SIZES under workdir/out, random bytes; their contents by name."""
    rng = random.Random(7)
    contents = {name: rng.randbytes(size) for name, size in SIZES.items()}
    make(workdir / "out", contents)
    return contents


def test_upload_to_a_local_dest_lands_exact_bytes_and_a_manifest(
    workdir: Path, dest: Path, outputs: dict[str, bytes]
) -> None:
    """0 B to 8 MiB + 1 arrive byte for byte; the manifest lists each name with hash_file's
    digest, its size and the task; summary and observer count every file and byte."""
    heard = Recorder()
    summary = upload(
        ["out/**=file://" + str(dest / "run")],
        workdir=workdir,
        task={"job_id": "j", "attempt": 2},
        observer=heard,
    )
    plans = heard.of("plan")
    assert summary.problems == []
    for name, data in outputs.items():
        assert (dest / "run" / name).read_bytes() == data, name
    manifest = read_manifest(dest / "run" / MANIFEST_NAME)
    assert manifest.files == tuple(
        sorted(
            ManifestFile(n, hash_file(workdir / "out" / n).digest, len(d))
            for n, d in outputs.items()
        )
    )
    assert dict(manifest.task) == {"job_id": "j", "attempt": 2}
    total = sum(SIZES.values())
    assert (summary.files, summary.transferred, summary.skipped, summary.failed) == (5, 5, 0, 0)
    assert (summary.bytes_transferred, summary.bytes_reused, summary.resumed) == (total, 0, 0)
    assert summary.exit_error() is None
    last = heard.progresses()[-1]
    assert (last.bytes, last.total_bytes, last.files, last.total_files) == (total, total, 5, 5)
    assert last.ended
    assert heard.of("problem") == []
    run = dest / "run"
    assert sorted(heard.files()) == sorted(f"sent  out/{n} -> {run}/{n}" for n in SIZES)
    assert [len(p.entries) for p in plans if isinstance(p, UploadPlan)] == [5]
    assert [p.name for p in (dest / "run").rglob(".taskkit-*")] == []


def test_upload_to_memory_lands_exact_bytes(
    memory: fsspec.AbstractFileSystem, workdir: Path, outputs: dict[str, bytes]
) -> None:
    """The same files through memory:// (no metadata, a streamed writer) arrive intact."""
    summary = upload(["out/=memory://results/run-1"], workdir=workdir, task={})
    assert summary.problems == []
    for name, data in outputs.items():
        assert memory.cat_file(f"/results/run-1/{name}") == data, name
    manifest = Manifest.parse(memory.cat_file(f"/results/run-1/{MANIFEST_NAME}"), "memory")
    assert [f.name for f in manifest.files] == sorted(SIZES)


def test_blobs_carry_their_digest_and_size_as_metadata(workdir: Path) -> None:
    """A blob store that keeps metadata gets taskkit_digest and taskkit_size on every file, the
    digest of the bytes at that name."""
    make(workdir, {"a.txt": b"alpha", "big.bin": random.Random(1).randbytes(CHUNK_SIZE + 3)})
    stores = FakeStores()
    summary = run(["*=fake://c/run/"], workdir, stores, task={})
    assert summary.problems == []
    for name in ("a.txt", "big.bin"):
        data = stores.fake.data(f"c/run/{name}")
        assert data == (workdir / name).read_bytes()
        assert stores.fake.metadata(f"c/run/{name}") == file_metadata(hash_bytes(data), len(data))


def test_the_manifest_is_written_last(memory: fsspec.AbstractFileSystem, workdir: Path) -> None:
    """Every file (whole or in blocks) is at its name before the manifest is put."""
    make(workdir, {"a.txt": b"a", "b.txt": b"b", "big.bin": bytes(CHUNK_SIZE + 1)})
    stores, made = recording()
    summary = run(["*=memory://d/"], workdir, stores, task={})
    assert summary.problems == []
    (store,) = made
    calls = store.actions("put", "commit", "delete")
    assert calls[-1] == ("put", f"/d/{MANIFEST_NAME}")
    assert sorted(calls[:-1]) == [
        ("commit", "/d/big.bin"),
        ("put", "/d/a.txt"),
        ("put", "/d/b.txt"),
    ]


def test_the_task_comes_from_the_environment_by_default(
    workdir: Path, dest: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without task=, the manifest names the Batch job, task, node and attempt."""
    monkeypatch.setenv("AZ_BATCH_JOB_ID", "job")
    monkeypatch.setenv("AZ_BATCH_TASK_ID", "task")
    monkeypatch.setenv("AZ_BATCH_NODE_ID", "node")
    monkeypatch.setenv("TASKKIT_ATTEMPT", "3")
    make(workdir, {"a.txt": b"a"})
    assert upload([f"a.txt=file://{dest}"], workdir=workdir).problems == []
    assert dict(read_manifest(dest / MANIFEST_NAME).task) == {
        "job_id": "job",
        "task_id": "task",
        "node_id": "node",
        "attempt": 3,
    }


# -- upload again: skip, unpublish, republish ---------------------------------------------------


def test_an_unchanged_second_upload_writes_nothing(
    workdir: Path, dest: Path, cache: StatCache, outputs: dict[str, bytes]
) -> None:
    """Uploaded again unchanged to file://, every file is skipped: no byte sent, no write,
    and the manifest is the same file as before (inode and mtime)."""
    texts = [f"out/**=file://{dest}"]
    assert run(texts, workdir, Stores(), cache, task={}).problems == []
    before = snapshot(dest)
    stores, made = recording()
    summary = run(texts, workdir, stores, cache, task={"task_id": "another"})
    assert summary.problems == []
    assert (summary.files, summary.skipped, summary.transferred) == (5, 5, 0)
    assert summary.bytes_transferred == 0
    assert made[0].calls == []
    assert snapshot(dest) == before


def test_a_changed_file_unpublishes_first_and_republishes_last(
    workdir: Path, dest: Path, cache: StatCache
) -> None:
    """A published DEST about to change loses its manifest before any file is written and gets
    the new one after all of them; unchanged files are not sent again."""
    make(workdir, {"a.txt": b"a", "b.txt": b"b", "c.txt": b"c"})
    texts = [f"*.txt=file://{dest}"]
    assert run(texts, workdir, Stores(), cache, task={}).problems == []
    (workdir / "b.txt").write_bytes(b"b, changed")
    (workdir / "d.txt").write_bytes(b"new")
    stores, made = recording()
    summary = run(texts, workdir, stores, cache, task={})
    assert summary.problems == []
    manifest_key = str(dest / MANIFEST_NAME)
    calls = made[0].calls
    assert calls[0] == ("delete", manifest_key)
    assert calls[-1] == ("put", manifest_key)
    assert sorted(calls[1:-1]) == [("put", str(dest / "b.txt")), ("put", str(dest / "d.txt"))]
    assert (summary.transferred, summary.skipped) == (2, 2)
    assert (dest / "b.txt").read_bytes() == b"b, changed"
    manifest = read_manifest(dest / MANIFEST_NAME)
    assert {f.name: f.digest for f in manifest.files} == {
        n: hash_bytes(data)
        for n, data in [
            ("a.txt", b"a"),
            ("b.txt", b"b, changed"),
            ("c.txt", b"c"),
            ("d.txt", b"new"),
        ]
    }


@pytest.mark.parametrize("damage", ["missing", "corrupt", "fewer files"])
def test_an_unchanged_dest_with_a_wrong_manifest_is_published_again(
    workdir: Path, dest: Path, cache: StatCache, damage: str
) -> None:
    """Every file already there, but the manifest is missing, unreadable, or names another set
    of files: only the manifest is written (no unpublish needed, no file sent)."""
    make(workdir, {"a.txt": b"a", "b.txt": b"b"})
    texts = [f"*.txt=file://{dest}"]
    first = [f"a.txt=file://{dest}"] if damage == "fewer files" else texts
    assert run(first, workdir, Stores(), cache, task={}).problems == []
    if damage == "fewer files":
        (dest / "b.txt").write_bytes(b"b")
    if damage == "missing":
        (dest / MANIFEST_NAME).unlink()
    if damage == "corrupt":
        (dest / MANIFEST_NAME).write_bytes(b"{not json")
    stores, made = recording()
    summary = run(texts, workdir, stores, cache, task={})
    assert summary.problems == []
    assert summary.transferred == 0
    assert made[0].calls == [("put", str(dest / MANIFEST_NAME))]
    assert [f.name for f in read_manifest(dest / MANIFEST_NAME).files] == ["a.txt", "b.txt"]


def test_any_problem_means_no_manifest_anywhere(
    memory: fsspec.AbstractFileSystem, workdir: Path
) -> None:
    """One file that cannot be uploaded (a name staging could not write back) keeps every DEST
    of the run unpublished; the good files are still sent."""
    make(workdir, {"one/ok.txt": b"ok", "two/fine.txt": b"fine", "two/bad\\name.txt": b"x"})
    summary = upload(
        ["one/=memory://results/one/", "two/=memory://results/two/"], workdir=workdir, task={}
    )
    assert memory.cat_file("/results/one/ok.txt") == b"ok"
    assert memory.cat_file("/results/two/fine.txt") == b"fine"
    assert not memory.exists(f"/results/one/{MANIFEST_NAME}")
    assert not memory.exists(f"/results/two/{MANIFEST_NAME}")
    error = summary.exit_error()
    assert isinstance(error, DataError)
    assert error.exit_code == 65
    assert (summary.transferred, summary.failed) == (2, 1)


# -- blocks -------------------------------------------------------------------------------------


def test_a_large_file_goes_in_blocks_named_by_position_and_content(
    memory: fsspec.AbstractFileSystem, workdir: Path
) -> None:
    """Over 8 MiB: no single put but one block per 8 MiB (the last one short), ids
    '<index>-<chunk digest>', committed in order; the published digest is hash_file's."""
    data = random.Random(3).randbytes(2 * CHUNK_SIZE + 5)
    make(workdir, {"big.bin": data})
    stores, made = recording()
    summary = run(["big.bin=memory://d/"], workdir, stores, task={})
    assert summary.problems == []
    (store,) = made
    pieces = [data[i : i + CHUNK_SIZE] for i in range(0, len(data), CHUNK_SIZE)]
    assert store.blocks == [
        ("/d/big.bin", f"{i:05d}-{hash_chunk(piece).hex()}", len(piece))
        for i, piece in enumerate(pieces)
    ]
    assert ("put", "/d/big.bin") not in store.calls
    assert store.actions("writer", "commit") == [("writer", "/d/big.bin"), ("commit", "/d/big.bin")]
    assert memory.cat_file("/d/big.bin") == data
    (entry,) = Manifest.parse(memory.cat_file(f"/d/{MANIFEST_NAME}"), "m").files
    assert entry == ManifestFile("big.bin", hash_file(workdir / "big.bin").digest, len(data))


def test_blocks_the_store_already_holds_are_not_sent_again(workdir: Path) -> None:
    """Blocks already held (same position and content) are not sent again and count as reused;
    a held block of other content is replaced."""
    data = random.Random(4).randbytes(2 * CHUNK_SIZE + 10)
    make(workdir, {"big.bin": data})
    fake = MemoryStore("fake")
    first = f"00000-{hash_chunk(data[:CHUNK_SIZE]).hex()}"
    stale = f"00001-{hash_chunk(b'something else').hex()}"
    held = fake.writer("c/big.bin")
    held.write(first, data[:CHUNK_SIZE])
    held.write(stale, b"something else")
    stores, made = recording(fake=fake)
    summary = run(["big.bin=fake://c/"], workdir, stores, task={})
    assert summary.problems == []
    assert sorted(b[1][:5] for b in made[0].blocks) == ["00001", "00002"]
    assert (summary.resumed, summary.bytes_reused) == (1, CHUNK_SIZE)
    assert summary.bytes_transferred == len(data) - CHUNK_SIZE
    assert fake.data("c/big.bin") == data
    assert fake.metadata("c/big.bin")[DIGEST_METADATA] == str(hash_file(workdir / "big.bin").digest)


# -- files that change, vanish, or cannot be written --------------------------------------------


def change_during_read(
    monkeypatch: pytest.MonkeyPatch, path: Path, times: int, extra: bytes = b" and more"
) -> list[int]:
    """Make the first ``times`` reads of ``path`` from offset 0 append ``extra`` to it just
    after they read (as a writer still at work would); returns the list of read sizes."""
    real = os.pread
    ino = path.stat().st_ino
    reads: list[int] = []

    def pread(fd: int, length: int, offset: int) -> bytes:
        data = real(fd, length, offset)
        if offset == 0 and os.fstat(fd).st_ino == ino:
            reads.append(len(data))
            if len(reads) <= times:
                with open(path, "ab") as handle:
                    handle.write(extra)
        return data

    monkeypatch.setattr(os, "pread", pread)
    return reads


@pytest.mark.parametrize("size", [10, CHUNK_SIZE + 1])
def test_a_file_that_changed_while_it_was_read_is_read_again(
    memory: fsspec.AbstractFileSystem, workdir: Path, monkeypatch: pytest.MonkeyPatch, size: int
) -> None:
    """A write during the read (whole or in blocks) is noticed: the file is read and sent
    again, and what is published (bytes, manifest digest) is its final content."""
    make(workdir, {"f.bin": bytes(size)})
    reads = change_during_read(monkeypatch, workdir / "f.bin", times=1)
    summary = upload(["f.bin=memory://d/"], workdir=workdir, task={})
    assert summary.problems == []
    assert len(reads) == 2
    final = (workdir / "f.bin").read_bytes()
    assert final == bytes(size) + b" and more"
    assert memory.cat_file("/d/f.bin") == final
    (entry,) = Manifest.parse(memory.cat_file(f"/d/{MANIFEST_NAME}"), "m").files
    assert entry.digest == hash_bytes(final)


def test_a_file_changed_while_its_blocks_were_written_is_sent_again(
    memory: fsspec.AbstractFileSystem, workdir: Path
) -> None:
    """A write to the file while its first block is being sent: the attempt is aborted and
    the file read and sent again; the blob holds the final content."""
    make(workdir, {"big.bin": bytes(CHUNK_SIZE + 1)})
    path = workdir / "big.bin"
    done: list[str] = []

    def append_once(action: str, key: str) -> None:
        if action == "write" and not done:
            done.append(key)
            with open(path, "ab") as handle:
                handle.write(b"tail")

    stores, made = recording(append_once)
    summary = run(["big.bin=memory://d/"], workdir, stores, task={})
    assert summary.problems == []
    assert made[0].actions("writer", "abort", "commit") == [
        ("writer", "/d/big.bin"),
        ("abort", "/d/big.bin"),
        ("writer", "/d/big.bin"),
        ("commit", "/d/big.bin"),
    ]
    assert memory.cat_file("/d/big.bin") == bytes(CHUNK_SIZE + 1) + b"tail"
    (entry,) = Manifest.parse(memory.cat_file(f"/d/{MANIFEST_NAME}"), "m").files
    assert entry.digest == hash_file(path).digest


@pytest.mark.parametrize("size", [10, CHUNK_SIZE + 1])
def test_a_file_that_keeps_changing_is_a_transient_error(
    memory: fsspec.AbstractFileSystem, workdir: Path, monkeypatch: pytest.MonkeyPatch, size: int
) -> None:
    """Changed under every read: TransientError (75) after CHANGE_ATTEMPTS reads, nothing at its
    name, no manifest; the other file is still sent."""
    make(workdir, {"busy.bin": bytes(size), "calm.txt": b"calm"})
    reads = change_during_read(monkeypatch, workdir / "busy.bin", times=10**6)
    summary = upload(["*=memory://d/"], workdir=workdir, task={})
    assert len(reads) == CHANGE_ATTEMPTS
    (problem,) = summary.problems
    assert problem.what == "busy.bin"
    assert isinstance(problem.error, TransientError)
    assert problem.error.exit_code == 75
    assert "kept changing" in str(problem.error)
    assert memory.find("/d/") == ["/d/calm.txt"]
    assert (summary.transferred, summary.failed) == (1, 1)


def test_a_file_changed_after_its_read_is_published_as_read_and_not_cached(
    workdir: Path, cache: StatCache
) -> None:
    """A write after the whole read: blob, metadata and manifest agree on what was read, and the
    stat-cache does not claim the new version is there."""
    make(workdir, {"a.txt": b"as read"})
    path = workdir / "a.txt"

    def append(action: str, key: str) -> None:
        if action == "put" and key.endswith("a.txt"):
            with open(path, "ab") as handle:
                handle.write(b", then more")

    stores, _ = recording(append)
    summary = run(["a.txt=fake://c/"], workdir, stores, cache, task={})
    assert summary.problems == []
    fake = stores.fake
    assert fake.data("c/a.txt") == b"as read"
    assert fake.metadata("c/a.txt") == file_metadata(hash_bytes(b"as read"), 7)
    (entry,) = Manifest.parse(fake.data(f"c/{MANIFEST_NAME}"), "m").files
    assert entry == ManifestFile("a.txt", hash_bytes(b"as read"), 7)
    assert cache.lookup([path_key(path)]) == {}
    again = plan([parse_output("a.txt=fake://c/")], workdir=workdir, stores=FakeStores(fake))
    assert [e.action for e in again.entries] == ["send"]


def test_the_manifest_names_the_size_that_was_sent(
    memory: fsspec.AbstractFileSystem, workdir: Path
) -> None:
    """A file that grew between planning and sending: manifest size = blob size."""
    make(workdir, {"a.txt": b"short"})
    stores = FakeStores()
    the_plan = plan([parse_output("a.txt=memory://d/")], workdir=workdir, stores=stores)
    (workdir / "a.txt").write_bytes(b"longer than planned")
    assert execute(the_plan, task={}).problems == []
    (entry,) = Manifest.parse(memory.cat_file(f"/d/{MANIFEST_NAME}"), "m").files
    assert entry.digest == hash_bytes(b"longer than planned")
    assert entry.size == len(memory.cat_file("/d/a.txt"))


def test_a_file_that_vanished_after_planning_is_input_not_found(
    memory: fsspec.AbstractFileSystem, workdir: Path
) -> None:
    """Deleted between plan and execute: InputNotFound (66) saying it vanished; the others are
    uploaded; no manifest."""
    make(workdir, {"a.txt": b"a", "gone.txt": b"g", "z.txt": b"z"})
    stores = FakeStores()
    the_plan = plan([parse_output("*.txt=memory://d/")], workdir=workdir, stores=stores)
    (workdir / "gone.txt").unlink()
    summary = execute(the_plan, task={})
    (problem,) = summary.problems
    assert problem.what == "gone.txt"
    assert isinstance(problem.error, InputNotFound)
    assert problem.error.exit_code == 66
    assert "vanished" in str(problem.error)
    assert sorted(memory.find("/d/")) == ["/d/a.txt", "/d/z.txt"]
    assert summary.exit_error() is problem.error


def refuse_every_put(reported: threading.Event) -> object:
    """A hook failing every put with ConfigError; puts after the first wait until the first
    failure was reported, so a file that was not started by then can only be stopped."""

    def hook(action: str, key: str) -> None:
        if action != "put":
            return
        if not key.endswith("/a.txt") and not reported.wait(DEADLINE):
            raise AssertionError("the first failure was never reported")
        raise ConfigError(f"cannot write {key}: this request is not authorized")

    return hook


def test_a_config_error_stops_the_files_not_yet_started(workdir: Path) -> None:
    """A ConfigError on a write: files not started when it is seen are never attempted; exit 78,
    all counted failed, nothing published."""
    make(workdir, {"a.txt": b"a", "b.txt": b"b", "c.txt": b"c"})
    reported = threading.Event()
    stores, made = recording(refuse_every_put(reported))

    def on_file(entry: UploadEntry, error: TaskFailure | None) -> None:
        if entry.name == "a.txt":
            reported.set()

    summary = run(["*.txt=fake://c/"], workdir, stores, jobs=1, task={}, on_file=on_file)
    puts = made[0].actions("put")
    assert ("put", "c/c.txt") not in puts
    assert puts[0] == ("put", "c/a.txt")
    assert summary.problems[0].what == "a.txt"
    assert all(isinstance(p.error, ConfigError) for p in summary.problems)
    error = summary.exit_error()
    assert isinstance(error, ConfigError)
    assert error.exit_code == 78
    assert (summary.failed, summary.transferred) == (3, 0)
    assert stores.fake.blobs == {}


def test_a_config_error_stops_the_next_file_however_the_threads_run(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With one worker, the file after the one refused is never attempted, even when the
    thread collecting results is slow to wake up (here: it waits for every file)."""

    def slow_collector(
        futures: Iterable[concurrent.futures.Future[object]],
    ) -> Iterator[concurrent.futures.Future[object]]:
        waiting = list(futures)
        concurrent.futures.wait(waiting, timeout=DEADLINE)
        return iter(waiting)

    # taskkit.transfer.upload, the attribute, is the function the package exports: patch the module.
    monkeypatch.setattr(sys.modules["taskkit.transfer.upload"], "as_completed", slow_collector)
    make(workdir, {"a.txt": b"a", "b.txt": b"b", "c.txt": b"c"})
    reported = threading.Event()
    reported.set()
    stores, made = recording(refuse_every_put(reported))
    summary = run(["*.txt=fake://c/"], workdir, stores, jobs=1, task={})
    assert made[0].actions("put") == [("put", "c/a.txt")]
    assert len(summary.problems) == 1


def test_a_failed_unpublish_changes_nothing(workdir: Path) -> None:
    """The old manifest cannot be deleted: no file is sent, one problem names the manifest, and
    the files that were to be sent count as failed."""
    make(workdir, {"a.txt": b"a", "b.txt": b"b"})
    stores = FakeStores()
    assert run(["*.txt=fake://c/"], stores=stores, workdir=workdir, task={}).problems == []
    (workdir / "a.txt").write_bytes(b"changed")

    def refuse_delete(action: str, key: str) -> None:
        if action == "delete":
            raise TransientError(f"cannot delete {key}: the service is busy")

    wrapped, made = recording(refuse_delete, stores.fake)
    summary = run(["*.txt=fake://c/"], workdir, wrapped, task={})
    assert made[0].calls == [("delete", f"c/{MANIFEST_NAME}")]
    (problem,) = summary.problems
    assert problem.what == f"fake://c/{MANIFEST_NAME}"
    assert isinstance(problem.error, TransientError)
    assert summary.exit_error() is problem.error
    assert (summary.transferred, summary.skipped, summary.failed) == (0, 1, 1)
    assert stores.fake.data("c/a.txt") == b"a"
    assert f"c/{MANIFEST_NAME}" in stores.fake.blobs


def test_a_failed_manifest_write_is_the_runs_failure(workdir: Path) -> None:
    """Every file arrived but the manifest could not be written: one problem naming the
    manifest, and the run fails with its error."""
    make(workdir, {"a.txt": b"a"})

    def refuse_manifest(action: str, key: str) -> None:
        if action == "put" and key.endswith(MANIFEST_NAME):
            raise TransientError(f"cannot write {key}: timed out")

    stores, _ = recording(refuse_manifest)
    summary = run(["a.txt=fake://c/run/"], workdir, stores, task={})
    (problem,) = summary.problems
    assert problem.what == f"fake://c/run/{MANIFEST_NAME}"
    assert summary.exit_error() is problem.error
    assert stores.fake.data("c/run/a.txt") == b"a"


# -- the fence: a manifest is written or deleted only while the caller allows it ---------------

TWO_DESTS = ["one/*.txt=fake://c/one/", "two/*.txt=fake://c/two/"]


def published_twice(workdir: Path) -> FakeStores:
    """Two DESTs published from ``one/`` and ``two/``, then a file of each changed."""
    make(workdir, {"one/a.txt": b"a", "two/b.txt": b"b"})
    stores = FakeStores()
    assert run(TWO_DESTS, workdir, stores, task={}).problems == []
    make(workdir, {"one/a.txt": b"a, changed", "two/b.txt": b"b, changed"})
    return stores


def test_the_fence_is_passed_right_before_each_manifest_delete_and_write(workdir: Path) -> None:
    """Each manifest delete and each manifest write comes right after a call of the fence,
    and each changing DEST passed it before any file is sent; files are sent without one."""
    old = published_twice(workdir)
    stores, made = recording(fake=old.fake)
    summary = run(
        TWO_DESTS, workdir, stores, task={}, fence=lambda: made[0].calls.append(("fence", ""))
    )
    assert summary.problems == []
    calls = made[0].calls
    manifests = [i for i, call in enumerate(calls) if call[1].endswith(MANIFEST_NAME)]
    assert len(manifests) == 4  # two deletes, two writes
    assert all(calls[i - 1] == ("fence", "") for i in manifests), calls
    assert calls.count(("fence", "")) == 4, calls
    first_file = next(i for i, call in enumerate(calls) if call[0] == "put")
    assert calls[:first_file].count(("fence", "")) == 2, calls


def test_a_fence_that_refuses_a_manifest_write_leaves_every_manifest_unwritten(
    workdir: Path,
) -> None:
    """The fence refuses before the first manifest write: no manifest is written (nor any
    later DEST's), and the fence's failure is the run's."""
    make(workdir, {"one/a.txt": b"a", "two/b.txt": b"b"})
    stores, made = recording()
    refusal = TransientError("lost the publishing claim to attempt 2")
    fenced = []

    def fence() -> None:
        fenced.append(True)
        if len(fenced) == 3:  # passed for both DESTs' files, refused at the first manifest
            raise refusal

    summary = run(TWO_DESTS, workdir, stores, task={}, fence=fence)
    assert summary.exit_error() is refusal
    assert len(summary.problems) == 1
    assert len(fenced) == 3
    assert [c for c in made[0].calls if c[1].endswith(MANIFEST_NAME)] == []
    assert stores.fake.data("c/one/a.txt") == b"a"  # files before the manifest are sent


def test_a_fence_that_refuses_before_the_first_publish_sends_nothing(workdir: Path) -> None:
    """The fence refuses at once (the caller lost its right before the upload began): no file
    is sent to any DEST, no manifest written, and the fence's failure is the run's."""
    make(workdir, {"one/a.txt": b"a", "two/b.txt": b"b"})
    stores, made = recording()
    refusal = TransientError("lost the publishing claim to attempt 2")

    def fence() -> None:
        raise refusal

    summary = run(TWO_DESTS, workdir, stores, task={}, fence=fence)
    assert summary.exit_error() is refusal
    assert [c for c in made[0].calls if c[0] in ("put", "delete")] == []
    assert (summary.transferred, summary.failed) == (0, 2)


def test_a_fence_that_refuses_an_unpublish_deletes_nothing_and_sends_nothing(
    workdir: Path,
) -> None:
    """The fence refuses before the published manifest is deleted: both manifests stay, no
    file is sent, and the fence's failure is the run's."""
    old = published_twice(workdir)
    stores, made = recording(fake=old.fake)
    refusal = TransientError("lost the publishing claim to attempt 3")

    def fence() -> None:
        raise refusal

    summary = run(TWO_DESTS, workdir, stores, task={}, fence=fence)
    assert summary.exit_error() is refusal
    assert made == [] or made[0].calls == []
    assert f"c/one/{MANIFEST_NAME}" in old.fake.blobs
    assert f"c/two/{MANIFEST_NAME}" in old.fake.blobs
    assert old.fake.data("c/one/a.txt") == b"a"


# -- the stat-cache, dry runs, empty outputs ----------------------------------------------------


def test_sent_files_are_recorded_with_the_blob_they_became(
    workdir: Path, cache: StatCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After an upload each file's stat-cache entry has source = the blob's identity and
    etag = its new version, so the next plan skips it without reading it."""
    make(workdir, {"a.txt": b"alpha", "big.bin": bytes(CHUNK_SIZE + 1)})
    stores = FakeStores()
    assert run(["*=fake://c/run/"], workdir, stores, cache, task={}).problems == []
    for name in ("a.txt", "big.bin"):
        entry = cache.get(workdir / name, os.stat(workdir / name))
        assert entry is not None, name
        assert entry.source == f"fake://c/run/{name}"
        assert entry.etag == stores.fake.blobs[f"c/run/{name}"].version
        assert entry.digest == hash_file(workdir / name).digest

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("hashed")

    monkeypatch.setattr(taskkit.content.hashing, "hash_paths", refuse)
    again = plan([parse_output("*=fake://c/run/")], workdir=workdir, stores=stores, cache=cache)
    assert {e.reason for e in again.entries} == {"unchanged since it was uploaded there"}


@pytest.mark.parametrize("scheme", ["memory", "file"])
def test_records_name_the_store_identity_and_listed_version(
    memory: fsspec.AbstractFileSystem,
    workdir: Path,
    dest: Path,
    cache: StatCache,
    scheme: str,
) -> None:
    """On memory:// and file:// too, the recorded source and etag are the store's identity
    for the key and the version a listing reports for the blob."""
    make(workdir, {"a.txt": b"alpha"})
    url = "memory://d/" if scheme == "memory" else f"file://{dest}/"
    stores = Stores()
    assert run([f"a.txt={url}"], workdir, stores, cache, task={}).problems == []
    store, key = stores.open(url)
    (listed,) = [f for f in store.list(key) if f.key.endswith("a.txt")]
    entry = cache.get(workdir / "a.txt", os.stat(workdir / "a.txt"))
    assert entry is not None
    assert (entry.source, entry.etag) == (store.identity(listed.key), listed.version)


def test_a_dry_run_writes_nothing_anywhere(workdir: Path, dest: Path, tmp_path: Path) -> None:
    """upload(dry_run=True) neither creates nor changes the stat-cache nor touches DEST, though
    the real run would unpublish, send and republish."""
    cache_dir = tmp_path / "default-cache"
    make(workdir, {"a.txt": b"a", "b.txt": b"b"})
    texts = [f"*.txt=file://{dest}"]
    dry = upload(texts, workdir=workdir, dry_run=True)
    assert not cache_dir.exists()
    assert not dest.exists()
    assert (dry.dry_run, dry.files, dry.transferred, dry.bytes_transferred) == (True, 2, 2, 2)
    assert upload(texts, workdir=workdir, task={}).problems == []
    (workdir / "a.txt").write_bytes(b"a, changed")
    (workdir / "c.txt").write_bytes(b"c")
    before = snapshot(dest, cache_dir)
    assert any(p.name.startswith("statcache") for p in before)
    dry = upload(texts, workdir=workdir, dry_run=True)
    assert snapshot(dest, cache_dir) == before
    assert (dry.files, dry.transferred, dry.skipped, dry.failed) == (3, 2, 1, 0)
    assert dry.bytes_transferred == len(b"a, changed") + 1


def test_allow_empty_publishes_an_empty_manifest(workdir: Path, dest: Path) -> None:
    """No file matches and that is allowed: the DEST is published with a manifest of no files."""
    summary = upload([f"*.txt=file://{dest}"], workdir=workdir, allow_empty=True, task={})
    assert summary.problems == []
    assert (summary.files, summary.transferred) == (0, 0)
    assert read_manifest(dest / MANIFEST_NAME).files == ()


def test_no_match_without_allow_empty_publishes_nothing(workdir: Path, dest: Path) -> None:
    """A GLOB matching nothing fails the run (66) and writes no manifest."""
    summary = upload([f"*.txt=file://{dest}"], workdir=workdir, task={})
    error = summary.exit_error()
    assert isinstance(error, InputNotFound)
    assert error.exit_code == 66
    assert not dest.exists()


def test_given_stores_are_used_and_left_open(
    workdir: Path,
    dest: Path,
    outputs: dict[str, bytes],
    stores: Stores,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """upload(stores=...) opens no Stores of its own, writes and publishes through the given
    one and leaves it open; without it, upload opens one and closes it once."""
    counts = counting_stores(monkeypatch)
    summary = upload([f"out/**=file://{dest}/a/"], workdir=workdir, stores=stores)
    assert summary.transferred == len(outputs)
    assert (dest / "a" / MANIFEST_NAME).exists()
    assert counts.opened == []
    assert counts.users() == {id(stores)}
    assert counts.closes[id(stores)] == 0
    counts.reset()
    again = upload([f"out/**=file://{dest}/b/"], workdir=workdir)
    assert again.transferred == len(outputs)
    assert len(counts.opened) == 1
    assert counts.closed_once_each()
    assert counts.users() == {id(counts.opened[0])}


def test_small_files_go_in_groups_each_file_once_and_a_large_one_alone(
    memory: fsspec.AbstractFileSystem, workdir: Path
) -> None:
    """The groups one thread sends in turn hold every file to send exactly once, a file
    larger than a chunk alone, at most SMALL_BATCH small ones and SMALL_BATCH_BYTES together,
    and enough groups that every thread gets several."""
    make(workdir, {f"s/{i:04d}.txt": b"x" * (i % 7) for i in range(1000)})
    make(workdir, {f"m/{i:02d}.bin": b"m" * (300 * 1024) for i in range(20)})
    make(workdir, {"big.bin": b"b" * (CHUNK_SIZE + 1), "edge.bin": b"e" * CHUNK_SIZE})
    the_plan = plan([parse_output("**=memory://d/")], workdir=workdir, stores=FakeStores())
    sent = [e for e in the_plan.entries if e.action == "send"]
    for jobs in (1, 2, 8, 64):
        groups = _batches(sent, jobs)
        assert sorted(e.local for g in groups for e in g) == sorted(e.local for e in sent)
        assert [e.local for g in groups for e in g if len(g) == 1 and e.size > CHUNK_SIZE] == [
            "big.bin"
        ]
        assert all(len(g) <= SMALL_BATCH for g in groups)
        assert all(sum(e.size for e in g) <= SMALL_BATCH_BYTES for g in groups if len(g) > 1)
        assert all(e.size <= CHUNK_SIZE for g in groups if len(g) > 1 for e in g)
        assert len(groups) >= min(len(sent), 4 * jobs)
    assert _batches([], 8) == []


def test_a_failure_inside_a_group_fails_that_file_only(
    memory: fsspec.AbstractFileSystem, workdir: Path
) -> None:
    """Files vanished after planning, scattered through the groups: each is reported once
    (66), every other file of its group and of the others lands exact, the counts add up,
    and no manifest is written."""
    files = {f"s/{i:04d}.txt": f"file {i}".encode() for i in range(600)}
    make(workdir, files)
    the_plan = plan([parse_output("**=memory://d/")], workdir=workdir, stores=FakeStores())
    gone = {f"s/{i:04d}.txt" for i in (0, 1, 63, 64, 65, 300, 599)}
    for name in gone:
        (workdir / name).unlink()
    summary = execute(the_plan, task={}, jobs=2)
    assert sorted(p.what for p in summary.problems) == sorted(gone)
    assert all(isinstance(p.error, InputNotFound) for p in summary.problems)
    assert (summary.transferred, summary.failed) == (600 - len(gone), len(gone))
    landed = {k.removeprefix("/d/"): memory.cat_file(k) for k in memory.find("/d/")}
    assert landed == {name: data for name, data in files.items() if name not in gone}


def _count_files(root: Path) -> int:
    """Files below ``root`` (taskkit's partial files included), 0 while it is missing."""
    count = 0
    pending = [str(root)]
    while pending:
        try:
            with os.scandir(pending.pop()) as entries:
                for item in entries:
                    if item.is_dir(follow_symlinks=False):
                        pending.append(item.path)
                    else:
                        count += 1
        except FileNotFoundError:
            continue
    return count


@pytest.mark.parametrize("kill_after", [1, 700])
def test_a_local_upload_killed_while_it_sends_file_by_file_leaves_whole_files_and_no_manifest(
    tmp_path: Path, kill_after: int
) -> None:
    """kill -9 of a real `taskkit upload` to a file:// DEST while it sends its small files one
    at a time on its own thread: every final name there holds its whole file, no manifest is
    written; the re-run sends the rest and publishes exactly the files."""
    import signal
    import subprocess

    work, dest = tmp_path / "work", tmp_path / "dest"
    rng = random.Random(kill_after)
    files = {f"out/d{i % 20:02d}/f{i:05d}.bin": rng.randbytes(4096) for i in range(2000)}
    make(work, files)
    env = {**os.environ, "TASKKIT_CACHE_DIR": str(tmp_path / "cache")}
    args = [sys.executable, "-m", "taskkit", "upload", "-o", f"out/**=file://{dest}/"]
    args += ["--workdir", str(work), "--json"]
    child = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while child.poll() is None and time.monotonic() < deadline:
            if _count_files(dest) >= kill_after:
                child.send_signal(signal.SIGKILL)
                break
        assert child.wait(timeout=60) == -signal.SIGKILL, "it ended before it could be killed"
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        assert child.stderr is not None
        child.stderr.close()
    assert not (dest / MANIFEST_NAME).exists()
    there = {
        p.relative_to(dest).as_posix(): p.read_bytes()
        for p in dest.rglob("*")
        if p.is_file() and not p.name.startswith(".taskkit-")
    }
    assert there, "killed before a file arrived"
    for name, data in there.items():
        assert data == files["out/" + name], name  # whole, never a part

    again = subprocess.run(args, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert again.returncode == 0, again.stderr
    manifest = Manifest.parse((dest / MANIFEST_NAME).read_bytes(), "m")
    assert {f.name: f.digest for f in manifest.files} == {
        name.removeprefix("out/"): hash_bytes(data) for name, data in files.items()
    }
    for name, data in files.items():
        assert (dest / name.removeprefix("out/")).read_bytes() == data


def test_files_to_a_local_dest_are_sent_by_the_calling_thread_and_others_by_the_pool(
    tmp_path: Path, workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Small files to a file:// DEST are written by the thread that called execute (a local
    disk creates files fastest from one thread); to a store that takes files in parallel, by
    the pool's threads; a large file to a local DEST still sends its blocks from the pool."""
    make(workdir, {f"d/{i:03d}.bin": bytes([i]) * 100 for i in range(40)})
    make(workdir, {"big.bin": b"b" * (CHUNK_SIZE + 1)})
    writers: dict[str, set[str]] = {}
    from taskkit.storage.fsstore import FsspecStore

    for kind in (FsspecStore, MemoryStore):

        def put(self: Store, key: str, *args: object, _real: Any = kind.put, **kw: object) -> str:
            writers.setdefault(key.rsplit("/", 1)[-1], set()).add(threading.current_thread().name)
            return str(_real(self, key, *args, **kw))

        monkeypatch.setattr(kind, "put", put)
    main = threading.current_thread().name
    for dest, alone in ((f"file://{tmp_path}/local/", True), ("memory://d/", False)):
        writers.clear()
        with Stores() as stores:
            the_plan = plan([parse_output(f"d/**={dest}")], workdir=workdir, stores=stores)
            assert execute(the_plan, task={}).problems == []
        names = {f"{i:03d}.bin" for i in range(40)}
        assert names <= set(writers)
        threads = set().union(*(writers[n] for n in names))
        assert (threads == {main}) is alone, (dest, threads)
    with Stores() as stores:
        the_plan = plan(
            [parse_output(f"big.bin=file://{tmp_path}/big/")], workdir=workdir, stores=stores
        )
        assert execute(the_plan, task={}).problems == []
    assert (tmp_path / "big" / "big.bin").read_bytes() == b"b" * (CHUNK_SIZE + 1)


def test_files_found_the_same_as_their_blobs_are_trusted_unread_by_the_next_run(
    tmp_path: Path, dest: Path
) -> None:
    """Outputs uploaded right after they were written (racy entries) are hashed and found the
    same as their blobs by the next upload, which gives their entries the blobs' provenance:
    the run after that skips them as unchanged since uploaded, hashing nothing. A file that
    changed is sent, never vouched for."""
    work = tmp_path / "work"
    files = {f"out/d{i % 3}/f{i:03d}.bin": bytes([i % 251]) * (i + 1) for i in range(60)}
    make(work, files)
    with Stores() as stores:
        with StatCache.open(tmp_path / "cache") as racy:  # recorded as they are written
            run([f"out/**=file://{dest}/"], work, stores, racy)
        (work / "out/d0/f000.bin").write_bytes(b"Z")  # same size, other byte
        texts = [parse_output(f"out/**=file://{dest}/")]
        with StatCache.open(tmp_path / "cache", clock=later_clock) as cache:
            found = plan(texts, workdir=work, stores=stores, cache=cache)
            reasons = {e.name: (e.action, e.reason) for e in found.entries}
            assert reasons.pop("d0/f000.bin")[0] == "send"
            assert set(reasons.values()) == {("skip", "same digest at the destination (hashed)")}
            execute(found, cache=cache)
            again = plan(texts, workdir=work, stores=stores, cache=cache)
    assert {(e.action, e.reason) for e in again.entries} == {
        ("skip", "unchanged since it was uploaded there")
    }
    assert (dest / "d0/f000.bin").read_bytes() == b"Z"


@pytest.mark.parametrize("leave", [False, True])
def test_a_file_gone_before_it_is_read_fails_the_upload_unless_left_out(
    tmp_path: Path, leave: bool
) -> None:
    """A file listed and then renamed away before it is sent (a write-then-rename's temporary
    file): the upload fails and publishes nothing; with leave_unsettled (a checkpoint sync)
    the file is left out of the manifest and the rest is published."""
    work = tmp_path / "work"
    work.mkdir()
    (work / "state.json").write_text("step 7")
    (work / ".state.json.tmp").write_text("step 8, half written")
    dest = tmp_path / "dest"
    with Stores() as stores:
        planned = plan([Output("**", f"file://{dest}/")], workdir=work, stores=stores)
        (work / ".state.json.tmp").unlink()
        summary = execute(planned, task={"job_id": "j"}, leave_unsettled=leave)
    if not leave:
        assert summary.failed == 1
        assert "vanished" in str(summary.problems[0].error)
        assert not (dest / MANIFEST_NAME).exists()
        return
    assert summary.problems == []
    manifest = json.loads((dest / MANIFEST_NAME).read_text())
    assert [f["name"] for f in manifest["files"]] == ["state.json"]
