"""The taskkit content digest: what it is, how it is written, how it is computed from bytes.

A digest is written ``xxh3-128:<32 lowercase hex digits>`` and its value is fixed forever:

* content of at most :data:`CHUNK_SIZE` bytes (8 MiB, the empty file included) has the plain
  XXH3-128 of the content as its digest, the same value ``xxhsum -H2`` prints;
* longer content is cut into 8 MiB chunks (the last one shorter), each chunk gets its XXH3-128,
  and the digest is the XXH3-128 of ``b"taskkit-tree-v1" + u64le(CHUNK_SIZE) + u64le(size)``
  followed by the 16-byte chunk digests in order.

The chunk tree lets one large file be hashed on every core and lets a download (or a resumed
download) check each chunk on its own. The chunk size was chosen by ``bench/chunk_size.py``: with
reads of :data:`READ_SIZE` inside a chunk, 8 MiB chunks gave the best parallel throughput here,
and it is small enough that a resumed download loses little.

Chunk digests are 16 bytes, big-endian, as ``xxhash.xxh3_128_digest`` returns them.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Sequence

import xxhash

from taskkit.exceptions import DataError, MisuseError

__all__ = [
    "ALGORITHM",
    "CHUNK_SIZE",
    "READ_SIZE",
    "Digest",
    "StreamHasher",
    "chunk_count",
    "combine_chunks",
    "hash_bytes",
    "hash_chunk",
]

ALGORITHM = "xxh3-128"
CHUNK_SIZE = 8 * 1024 * 1024
#: Reads inside a chunk are this large: big enough to amortise a syscall, small enough that the
#: bytes are still in the CPU cache when the hash reads them.
READ_SIZE = 512 * 1024

_TREE_PREFIX = b"taskkit-tree-v1"
_HEX_RE = re.compile(r"[0-9a-f]{32}")

hash_chunk = xxhash.xxh3_128_digest
"""The 16-byte XXH3-128 of one chunk's bytes (of any buffer)."""


class Digest:
    """A taskkit content digest. ``str(d)`` is ``xxh3-128:<hex>``; :meth:`parse` reads it back.

    An immutable value: equal digests compare and hash equal.
    """

    __slots__ = ("value",)
    value: bytes

    def __init__(self, value: bytes) -> None:
        if type(value) is not bytes or len(value) != 16:
            raise MisuseError(f"a digest is 16 bytes, not {value!r}")
        object.__setattr__(self, "value", value)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"Digest is immutable; cannot set {name!r}")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Digest) and other.value == self.value

    def __hash__(self) -> int:
        return hash(self.value)

    def __reduce__(self) -> tuple[type[Digest], tuple[bytes]]:
        return (Digest, (self.value,))

    @classmethod
    def parse(cls, text: str) -> Digest:
        """Read ``xxh3-128:<hex>``; anything else raises :class:`DataError`."""
        algorithm, sep, hexpart = text.partition(":")
        if not sep or algorithm != ALGORITHM or not _HEX_RE.fullmatch(hexpart):
            raise DataError(f"not a taskkit digest: {text[:80]!r} (expected {ALGORITHM}:<32 hex>)")
        return cls(bytes.fromhex(hexpart))

    @property
    def hex(self) -> str:
        return self.value.hex()

    def __str__(self) -> str:
        return f"{ALGORITHM}:{self.value.hex()}"

    def __repr__(self) -> str:
        return f"Digest('{self}')"


def chunk_count(size: int) -> int:
    """How many chunks content of ``size`` bytes has (the empty content has one)."""
    return max(1, -(-size // CHUNK_SIZE))


def combine_chunks(size: int, chunks: Sequence[bytes]) -> Digest:
    """The digest of content of ``size`` bytes whose chunk digests are ``chunks``."""
    if size <= CHUNK_SIZE and len(chunks) == 1:
        return Digest(bytes(chunks[0]))  # bytes() is free for bytes
    if len(chunks) != chunk_count(size):
        raise MisuseError(f"{size} bytes have {chunk_count(size)} chunks, not {len(chunks)}")
    header = _TREE_PREFIX + struct.pack("<QQ", CHUNK_SIZE, size)
    return Digest(xxhash.xxh3_128_digest(header + b"".join(chunks)))


def hash_bytes(data: bytes | bytearray | memoryview) -> Digest:
    """The digest of bytes held in memory."""
    view = memoryview(data).cast("B")
    size = len(view)
    if size <= CHUNK_SIZE:
        return Digest(hash_chunk(view))
    chunks = [hash_chunk(view[i : i + CHUNK_SIZE]) for i in range(0, size, CHUNK_SIZE)]
    return combine_chunks(size, chunks)


class StreamHasher:
    """Hashes bytes as they arrive (a download, an upload read), in pieces of any size.

    ``chunks`` are the digests of the chunks completed so far, so a download can record them as
    it goes. To resume, pass the digests of the complete chunks already on disk: the hasher
    then expects the bytes that follow them.
    """

    __slots__ = ("_chunks", "_current", "_filled", "_size")

    def __init__(self, chunks: Sequence[bytes] = ()) -> None:
        self._chunks: list[bytes] = [bytes(c) for c in chunks]
        self._size = len(self._chunks) * CHUNK_SIZE
        self._current = xxhash.xxh3_128()
        self._filled = 0

    @property
    def size(self) -> int:
        """How many bytes were hashed, resumed chunks included."""
        return self._size

    @property
    def chunks(self) -> tuple[bytes, ...]:
        """Digests of the chunks completed so far (a partial last chunk is not among them)."""
        if self._filled == CHUNK_SIZE:
            return (*self._chunks, self._current.digest())
        return tuple(self._chunks)

    def update(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data).cast("B")
        while view:
            room = CHUNK_SIZE - self._filled
            piece, view = view[:room], view[room:]
            self._current.update(piece)
            self._filled += len(piece)
            self._size += len(piece)
            if self._filled == CHUNK_SIZE and view:
                self._close_chunk()
        # A chunk that has just filled is closed lazily, on the next byte: until then the content
        # might end here, and content of exactly one chunk is hashed as a single pass.

    def _close_chunk(self) -> None:
        self._chunks.append(self._current.digest())
        self._current = xxhash.xxh3_128()
        self._filled = 0

    def all_chunks(self) -> tuple[bytes, ...]:
        """The digests of every chunk so far, a partial last chunk included: what
        :meth:`digest` combines."""
        if self._filled or not self._chunks:
            return (*self._chunks, self._current.digest())
        return tuple(self._chunks)

    def digest(self) -> Digest:
        """The digest of everything hashed so far; the hasher can go on being updated."""
        return combine_chunks(self._size, self.all_chunks())
