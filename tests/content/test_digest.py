"""taskkit.content.digest: the digest value is fixed forever, however the bytes arrive."""

from __future__ import annotations

import shutil
import struct
import subprocess
from pathlib import Path

import pytest
import xxhash

from taskkit.content.digest import (
    CHUNK_SIZE,
    Digest,
    StreamHasher,
    chunk_count,
    combine_chunks,
    hash_bytes,
)
from taskkit.exceptions import DataError, MisuseError

C = CHUNK_SIZE


def pattern(n: int) -> bytes:
    """Deterministic, non-repeating-per-chunk bytes of length n."""
    return (bytes(range(251)) * (n // 251 + 1))[:n]


# Pinned when the format was defined; a change here breaks every stored digest.
PINNED = {
    0: "xxh3-128:99aa06d3014798d86001c324468d497f",
    1: "xxh3-128:a6cd5e9392000f6ac44bdff4074eecdb",
    C: "xxh3-128:0bf4ab5a606dc48828f323b4c7075cbf",
    C + 1: "xxh3-128:f7c80ff3b043eb0ce5e191efb1d79a84",
    3 * C + 12345: "xxh3-128:bc8ea756cc1c21e1dca82373c9d0bad4",
}


@pytest.mark.parametrize("size", sorted(PINNED))
def test_pinned_digests(size: int) -> None:
    """The digests of fixed inputs never change (empty, 1 byte, one chunk, +1, several)."""
    assert str(hash_bytes(pattern(size))) == PINNED[size]


def test_chunk_size_is_the_documented_one() -> None:
    """The chunk size is part of the digest's definition and may never change."""
    assert CHUNK_SIZE == 8 * 1024 * 1024


@pytest.mark.parametrize("size", [C + 1, 2 * C, 3 * C + 12345])
def test_tree_follows_the_documented_formula(size: int) -> None:
    """Multi-chunk digests are XXH3-128 over prefix, sizes and chunk digests, as documented."""
    data = pattern(size)
    chunks = [xxhash.xxh3_128_digest(data[i : i + C]) for i in range(0, size, C)]
    expected = xxhash.xxh3_128_hexdigest(
        b"taskkit-tree-v1" + struct.pack("<QQ", C, size) + b"".join(chunks)
    )
    assert hash_bytes(data).hex == expected


@pytest.mark.parametrize("size", [0, 1, 4096, C - 1, C])
def test_single_chunk_equals_plain_xxh3_128(size: int) -> None:
    """Up to one chunk the digest is plain XXH3-128, the value xxhsum -H2 prints."""
    data = pattern(size)
    assert hash_bytes(data).hex == xxhash.xxh3_128_hexdigest(data)


@pytest.mark.skipif(shutil.which("xxhsum") is None, reason="xxhsum not installed")
def test_matches_xxhsum_for_small_files(tmp_path: Path) -> None:
    """The real xxhsum -H2 agrees with taskkit on a small file."""
    f = tmp_path / "f"
    f.write_bytes(pattern(100_000))
    out = subprocess.run(["xxhsum", "-H2", str(f)], capture_output=True, text=True, check=True)
    assert out.stdout.split()[0] == hash_bytes(pattern(100_000)).hex


@pytest.mark.parametrize("size", [0, 1, C - 1, C, C + 1, 2 * C, 2 * C + 1, 3 * C + 12345])
@pytest.mark.parametrize("piece", [1 << 16, C - 3, C, C + 7, 5 * C])
def test_stream_hasher_matches_one_shot_for_any_split(size: int, piece: int) -> None:
    """Feeding the bytes in pieces of any size gives the same digest and chunk digests."""
    data = pattern(size)
    hasher = StreamHasher()
    for i in range(0, size, piece):
        hasher.update(data[i : i + piece])
    assert hasher.size == size
    assert hasher.digest() == hash_bytes(data)
    full = size // C
    assert hasher.chunks[:full] == tuple(
        xxhash.xxh3_128_digest(data[i * C : (i + 1) * C]) for i in range(full)
    )


def test_stream_hasher_reports_a_chunk_as_soon_as_it_is_full() -> None:
    """A download that stops exactly at a chunk boundary can record that chunk."""
    hasher = StreamHasher()
    hasher.update(pattern(C))
    assert hasher.chunks == (xxhash.xxh3_128_digest(pattern(C)),)


def test_stream_hasher_resumes_after_complete_chunks() -> None:
    """Resuming from the digests of complete chunks gives the digest of the whole."""
    data = pattern(3 * C + 5)
    first = StreamHasher()
    first.update(data[: 2 * C])
    resumed = StreamHasher(first.chunks)
    resumed.update(data[2 * C :])
    assert resumed.size == len(data)
    assert resumed.digest() == hash_bytes(data)


def test_digest_is_a_hashable_immutable_value() -> None:
    """Digests compare by value, round-trip through their string, and cannot be changed."""
    d = hash_bytes(b"abc")
    assert Digest.parse(str(d)) == d
    assert {d, Digest(d.value)} == {d}
    assert repr(d) == f"Digest('{d}')"
    with pytest.raises(AttributeError):
        d.value = b"x" * 16  # type: ignore[misc]


@pytest.mark.parametrize(
    "text",
    [
        "",
        "xxh3-128:",
        "xxh3-128:" + "0" * 31,
        "xxh3-128:" + "G" * 32,
        "xxh3-128:" + "A" * 32,
        "md5:" + "0" * 32,
        "0" * 32,
        "xxh3-128:" + "0" * 32 + "\n",
    ],
)
def test_parse_rejects_malformed_digests(text: str) -> None:
    """Anything but xxh3-128:<32 lowercase hex> is a DataError."""
    with pytest.raises(DataError):
        Digest.parse(text)


def test_combine_chunks_checks_the_count() -> None:
    """A chunk list that does not fit the size is a programming error."""
    with pytest.raises(MisuseError):
        combine_chunks(2 * C + 1, [b"\0" * 16])
    assert chunk_count(0) == 1
    assert chunk_count(C) == 1
    assert chunk_count(C + 1) == 2
