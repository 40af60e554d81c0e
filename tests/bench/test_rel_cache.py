"""R4 node cache under load (bench/rel_cache.py): at its CI size eight tasks on one emulated node
download the blob once and hold eight correct files; and the suite's own counts (Azurite's log,
the stage notes, the disk) count what they claim."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import rel_cache

SIZE = 100


def logged(request: str, op: str, path: str, status: int, **headers: str) -> list[str]:
    """The three lines Azurite's debug log has for one request."""
    at = "2026-12-03T15:40:19.882Z"
    return [
        f"{at} {request} info: BlobStorageContextMiddleware: RequestMethod=GET "
        f"RequestURL=http://127.0.0.1{path} RequestHeaders:{json.dumps(headers)} ClientIP=1",
        f"{at} {request} info: DispatchMiddleware: Operation={op}",
        f"{at} {request} info: EndMiddleware: End response. TotalTimeInMS=1 StatusCode={status}",
    ]


@pytest.mark.azurite
def test_eight_tasks_on_one_node_download_the_blob_once(tmp_path: Path) -> None:
    """The suite at its CI size: one download by Azurite's count and by the journals', eight
    files equal to the source, no second copy on disk, every task succeeded."""
    result = rel_cache.suite("ci", tmp_path)
    assert result["problems"] == []
    rows = dict(result["rows"])  # type: ignore[arg-type]
    assert rows["downloads"].startswith("1.00 ")


def test_the_bytes_served_are_counted_from_ranges_and_answers() -> None:
    """Ranged GETs count their range (an open range to the end), a GET without one the whole
    blob, a refused GET nothing, and other blobs and operations are not counted."""
    path = "/acct/r4data/big.bin"
    log = [
        *logged("a", "Blob_Download", path, 206, **{"x-ms-range": "bytes=0-39"}),
        *logged("b", "Blob_Download", path, 206, range="bytes=40-"),
        *logged("c", "Blob_Download", path, 200),
        *logged("d", "Blob_Download", path, 412, **{"x-ms-range": "bytes=0-39"}),
        *logged("e", "Blob_Download", "/acct/r4data/other.bin", 200),
        *logged("f", "Blob_GetProperties", path, 200),
    ]
    found = rel_cache.fetched("\n".join(log), "r4data", "big.bin", SIZE)
    assert found == rel_cache.Fetched(requests=3, bytes=40 + 60 + SIZE, failed=1)


def test_a_stage_note_is_read_for_its_counts_and_seconds() -> None:
    """The stage note's counts and seconds, among the other lines of an attempt's log; a log
    without one is None."""
    text = (
        "taskkit: note: attempt 1 of 1 (the last) (xxh3-128:9b4a)\n"
        "taskkit: note: staged 1 files in 0.60 s: 0 downloaded (0 B, 0 resumed), 1 linked from "
        "the node cache, 0 already present, 0 failed\n"
    )
    assert rel_cache.stage_note("t", text) == rel_cache.Staged("t", 0, 1, 0, 0.6)
    assert rel_cache.stage_note("t", "taskkit: note: attempt 1 of 1\n") is None


def test_the_disk_peak_counts_each_inode_once(tmp_path: Path) -> None:
    """Hard links to one file are one file's blocks; a second file is counted too."""
    one = tmp_path / "cache" / "object"
    one.parent.mkdir()
    one.write_bytes(os.urandom(64 * 1024))
    for n in range(4):
        os.link(one, tmp_path / f"link-{n}")
    peak = rel_cache.DiskPeak(tmp_path)
    single = peak.allocated()
    assert single >= 64 * 1024
    (tmp_path / "copy").write_bytes(one.read_bytes())
    assert peak.allocated() == 2 * single
