"""taskkit.storage.memory: MemoryStore keeps the store contract, with Azure's blob semantics.

The contract tests of ``test_conditional`` (loads, conditional writes and deletes) run here
again on a :class:`MemoryStore` mounted at ``fake://``: ``place`` and ``stores`` are this
module's own fixtures. The rest pins down what ``memory://`` lacks and Azure has: versions,
metadata in listings, reads of the listed version only, staged blocks, appends.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from test_conditional import (
    test_a_bad_condition_is_misuse_before_any_write,
    test_an_unconditional_put_still_overwrites,
    test_delete_if_match_removes_only_the_current_version,
    test_if_absent_on_an_existing_file_is_a_conflict_and_changes_nothing,
    test_if_match_on_a_missing_file_is_a_conflict,
    test_if_match_with_a_stale_version_is_a_conflict,
    test_if_match_with_the_current_version_writes_a_new_version,
    test_load_of_a_missing_file_is_none,
    test_put_and_load_agree_on_one_version_with_stat_and_list,
)

from taskkit.content.digest import hash_bytes
from taskkit.exceptions import Conflict, InputNotFound, MisuseError, SourceChanged
from taskkit.storage.base import file_metadata
from taskkit.storage.memory import MemoryStore
from taskkit.storage.retry import RetryBudget
from taskkit.storage.stores import Stores

#: The contract tests run here; named so that the imports read as used.
CONTRACT = (
    test_a_bad_condition_is_misuse_before_any_write,
    test_an_unconditional_put_still_overwrites,
    test_delete_if_match_removes_only_the_current_version,
    test_if_absent_on_an_existing_file_is_a_conflict_and_changes_nothing,
    test_if_match_on_a_missing_file_is_a_conflict,
    test_if_match_with_a_stale_version_is_a_conflict,
    test_if_match_with_the_current_version_writes_a_new_version,
    test_load_of_a_missing_file_is_none,
    test_put_and_load_agree_on_one_version_with_stat_and_list,
)


@pytest.fixture
def stores() -> Iterator[Stores]:
    """The contract tests' stores: a new MemoryStore at ``fake://``."""
    with Stores(RetryBudget(attempts=1), mounts={"fake://": MemoryStore("fake")}) as opened:
        yield opened


@pytest.fixture
def place() -> str:
    """The contract tests' directory for records, on the mounted MemoryStore."""
    return f"fake://journal-{uuid.uuid4().hex}"


@pytest.fixture
def memory() -> MemoryStore:
    return MemoryStore("az")


def test_each_write_is_a_new_version_listed_with_its_metadata(memory: MemoryStore) -> None:
    """A listing gives each blob's URL, size, version and the digest of its metadata; a
    rewrite with the same bytes is still a new version."""
    digest = hash_bytes(b"hello")
    first = memory.put("c/run/a.txt", b"hello", file_metadata(digest, 5))
    second = memory.put("c/run/a.txt", b"hello", file_metadata(digest, 5))
    memory.put("c/other.txt", b"x", {})
    assert first != second
    (listed,) = memory.list("c/run/")
    assert listed == ("az://c/run/a.txt", "c/run/a.txt", 5, second, digest)
    assert memory.stat("c/run/a.txt") == listed
    assert memory.metadata("c/run/a.txt") == file_metadata(digest, 5)


def test_listing_is_by_plain_prefix_in_name_order(memory: MemoryStore) -> None:
    """As Azure lists blobs: every name starting with the prefix, sorted; has_files agrees."""
    for name in ("c/b", "c/a/x", "c/ab", "d/a"):
        memory.put(name, b"", {})
    assert [f.key for f in memory.list("c/a")] == ["c/a/x", "c/ab"]
    assert [f.key for f in memory.list("")] == ["c/a/x", "c/ab", "c/b", "d/a"]
    assert memory.has_files("c/a")
    assert not memory.has_files("e/")
    assert memory.list("e/") == []


def test_a_missing_blob_is_input_not_found(memory: MemoryStore) -> None:
    """stat of a name that holds nothing: InputNotFound (66) naming the URL."""
    with pytest.raises(InputNotFound, match="az://c/none") as caught:
        memory.stat("c/none")
    assert caught.value.exit_code == 66


def test_reads_are_of_the_listed_version_only(memory: MemoryStore) -> None:
    """A range of the listed version is read; once the blob is rewritten, or when fewer
    bytes are there than asked for, the read is SourceChanged, as confirm() is."""
    memory.put("c/f", b"0123456789", {})
    file = memory.stat("c/f")
    assert memory.read(file, 2, 3) == b"234"
    memory.confirm(file)
    with pytest.raises(SourceChanged):
        memory.read(file, 8, 5)
    memory.put("c/f", b"0123456789", {})
    with pytest.raises(SourceChanged):
        memory.read(file, 0, 1)
    with pytest.raises(SourceChanged):
        memory.confirm(file)


def test_a_written_file_shows_only_when_its_blocks_are_committed(memory: MemoryStore) -> None:
    """Staged blocks are invisible; the commit makes the blob those blocks in the order
    named, with its metadata, and returns the version a listing reports."""
    writer = memory.writer("c/big")
    assert writer.parallel
    writer.write("b2", b"world")
    writer.write("b1", b"hello ")
    assert memory.load("c/big") is None
    assert memory.list("c/") == []
    version = writer.commit(["b1", "b2"], {"k": "v"})
    assert memory.load("c/big") == (b"hello world", version)
    assert memory.metadata("c/big") == {"k": "v"}


def test_staged_blocks_outlive_an_abort_and_a_commit_drops_the_rest(memory: MemoryStore) -> None:
    """After an abort a new writer knows the blocks already staged (to send only the
    missing ones); a commit keeps the blocks it names, as Azure does, and refuses one never
    written as a bug (MisuseError)."""
    first = memory.writer("c/big")
    first.write("b1", b"one")
    first.write("b9", b"stale")
    first.abort()
    second = memory.writer("c/big")
    assert second.known() == {"b1", "b9"}
    second.write("b2", b"two")
    with pytest.raises(MisuseError, match="b3"):
        second.commit(["b1", "b3"], {})
    second.commit(["b1", "b2"], {})
    assert memory.data("c/big") == b"onetwo"
    assert memory.writer("c/big").known() == {"b1", "b2"}


def test_an_append_goes_on_from_the_size_it_is_given(memory: MemoryStore) -> None:
    """Offset 0 starts the blob; each append adds at its offset; the same append again (an
    earlier try that landed) adds nothing; an append at another size is SourceChanged, and
    one to a missing blob InputNotFound."""
    memory.append("c/log", 0, b"ab")
    memory.append("c/log", 2, b"cd")
    memory.append("c/log", 2, b"cd")
    assert memory.data("c/log") == b"abcd"
    with pytest.raises(SourceChanged, match="holds 4 bytes, not 3"):
        memory.append("c/log", 3, b"x")
    with pytest.raises(InputNotFound):
        memory.append("c/none", 5, b"x")
    memory.append("c/log", 0, b"new")
    assert memory.data("c/log") == b"new"


def test_threads_racing_on_one_condition_have_one_winner(memory: MemoryStore) -> None:
    """Eight threads released together put(if_absent=True) on one name, thirty-two times:
    each time one wins and the blob holds its bytes at the version it was told."""
    for round_ in range(32):
        key = f"c/race-{round_}"
        barrier = threading.Barrier(8)

        def racer(n: int, key: str = key, barrier: threading.Barrier = barrier) -> str | None:
            barrier.wait()
            try:
                return memory.put(key, f"racer-{n}".encode(), {}, if_absent=True)
            except Conflict:
                return None

        with ThreadPoolExecutor(8) as pool:
            outcomes = list(pool.map(racer, range(8)))
        won = [n for n, version in enumerate(outcomes) if version is not None]
        assert len(won) == 1
        assert memory.load(key) == (f"racer-{won[0]}".encode(), outcomes[won[0]])


def test_it_is_shown_and_identified_by_its_protocol(memory: MemoryStore) -> None:
    """url() and identity() are ``protocol://key``; blobs is a copy, not the store's state."""
    assert memory.url("c/x") == memory.identity("c/x") == "az://c/x"
    memory.put("c/x", b"1", {})
    snapshot = memory.blobs
    snapshot.clear()
    assert list(memory.blobs) == ["c/x"]
