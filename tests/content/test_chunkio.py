"""taskkit.content.chunkio: chunk digests of a file on disk, and how chunks are shared out."""

from __future__ import annotations

from pathlib import Path

import pytest

from taskkit.content.chunkio import RUN_CHUNKS, check_jobs, hash_chunks, runs
from taskkit.content.digest import CHUNK_SIZE, hash_bytes
from taskkit.content.hashing import hash_file
from taskkit.exceptions import InputNotFound, MisuseError

C = CHUNK_SIZE


def pattern(n: int) -> bytes:
    return (bytes(range(253)) * (n // 253 + 1))[:n]


def test_hash_chunks_returns_the_chunk_digests_of_a_file(tmp_path: Path) -> None:
    """Per-chunk digests of a file on disk are those of its bytes, from any chunk on."""
    f = tmp_path / "f.bin"
    data = pattern(3 * C + 10)
    f.write_bytes(data)
    whole = hash_file(f).chunks
    assert len(whole) == 4
    assert hash_chunks(f) == list(whole)
    assert hash_chunks(f, 1, 2, jobs=1) == list(whole[1:3])
    assert hash_chunks(f, 3) == [hash_bytes(data[3 * C :]).value]
    assert hash_chunks(f, 9) == []


def test_hash_chunks_of_a_missing_file_is_input_not_found(tmp_path: Path) -> None:
    """The chunk API reports a missing file like every other."""
    with pytest.raises(InputNotFound):
        hash_chunks(tmp_path / "nope")


@pytest.mark.parametrize("chunks", [1, 2, 7, 8, 9, 75, 512, 12_800])
@pytest.mark.parametrize("jobs", [1, 2, 16])
def test_runs_cover_every_chunk_once_in_bounded_balanced_pieces(chunks: int, jobs: int) -> None:
    """Runs tile the chunks in order, none over RUN_CHUNKS, at least two per thread if possible."""
    work = runs(chunks, jobs)
    covered = [i for first, count in work for i in range(first, first + count)]
    assert covered == list(range(chunks))
    assert all(0 < count <= RUN_CHUNKS for _, count in work)
    if chunks <= RUN_CHUNKS * 4 * jobs:
        assert len(work) >= min(chunks, 2 * jobs)
    else:
        assert len(work) == -(-chunks // RUN_CHUNKS)
    assert runs(chunks, jobs, first=5)[0][0] == 5


@pytest.mark.parametrize("jobs", [0, -1, True, 1.5, "2"])
def test_check_jobs_refuses_anything_but_a_positive_int(jobs: object) -> None:
    """jobs must be a whole number >= 1; None means the CPUs this process may use."""
    with pytest.raises(MisuseError):
        check_jobs(jobs)  # type: ignore[arg-type]
    assert check_jobs(None) >= 1
