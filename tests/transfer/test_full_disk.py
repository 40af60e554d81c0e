"""A full disk while staging is exit 74 with one line and nothing partial left, on any machine;
a full node cache is no failure when DEST has room.

``tests/transfer/test_stage.py`` fills a real 4 MiB tmpfs, which needs the right to mount (it skips
where that is refused, and says so). These tests stand in the full disk instead, so they run
everywhere: the block allocator that :mod:`taskkit.transfer.download` calls (``allocate``, default
``os.posix_fallocate``) refuses with ENOSPC in-process, and a real ``taskkit stage`` process
runs with ``posix_fallocate`` and ``pwrite`` refusing every file below its working directory,
as a full device refuses them.
"""

from __future__ import annotations

import errno
import json
import os
import random
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from taskkit.content.digest import CHUNK_SIZE
from taskkit.exceptions import IOFailure
from taskkit.storage.stores import Stores
from taskkit.transfer.nodecache import NodeCache
from taskkit.transfer.stage import execute
from taskkit.transfer.stage_plan import parse_input, plan

LARGE = 2 * CHUNK_SIZE + 5  # several ranges: its blocks are reserved before any download
SMALL = 1000  # one request: written straight away, nothing reserved


def refuse(fd: int, offset: int, length: int) -> None:
    """A disk with no free block left."""
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def lacking(fd: int, offset: int, length: int) -> None:
    """A filesystem that cannot reserve blocks at all (some network filesystems)."""
    raise OSError(errno.EOPNOTSUPP, os.strerror(errno.EOPNOTSUPP))


def write_source(src: Path, sizes: dict[str, int]) -> dict[str, bytes]:
    rng = random.Random(7)
    src.mkdir(parents=True, exist_ok=True)
    files = {name: rng.randbytes(size) for name, size in sizes.items()}
    for name, data in files.items():
        (src / name).write_bytes(data)
    return files


def taskkit_files(root: Path) -> list[Path]:
    """Partial files and chunk journals below ``root``."""
    return sorted(p for p in root.rglob("*") if p.name.startswith(".taskkit-"))


@pytest.mark.parametrize("node_cache", [False, True], ids=["direct", "node-cache"])
def test_a_refused_reservation_is_74_and_leaves_nothing_partial(
    tmp_path: Path, workdir: Path, stores: Stores, node_cache: bool
) -> None:
    """The allocator says ENOSPC: that file fails with IOFailure (74) saying 'no space', no
    file at its final path, no partial or journal anywhere (workdir, node cache); a file
    that needs no reservation is still staged."""
    src = tmp_path / "src"
    files = write_source(src, {"large.bin": LARGE, "small.bin": SMALL})
    node = NodeCache(tmp_path / "node") if node_cache else None
    the_plan = plan([parse_input(f"{src}/=in/")], workdir=workdir, stores=stores, node_cache=node)
    summary = execute(the_plan, node_cache=node, allocate=refuse)
    assert (summary.failed, summary.transferred + summary.linked) == (1, 1)
    (problem,) = summary.problems
    assert problem.what == str(src / "large.bin")
    assert isinstance(problem.error, IOFailure)
    assert problem.error.exit_code == 74
    assert "no space left on device" in str(problem.error)
    assert not (workdir / "in" / "large.bin").exists()
    assert (workdir / "in" / "small.bin").read_bytes() == files["small.bin"]
    assert taskkit_files(workdir) == []
    if node is not None:
        assert list((tmp_path / "node" / "partial").iterdir()) == []


def test_a_filesystem_that_cannot_reserve_is_not_a_full_disk(
    tmp_path: Path, workdir: Path, stores: Stores
) -> None:
    """EOPNOTSUPP from the allocator is no failure: the file is sized without a reservation
    and staged whole (only ENOSPC and its kind mean a full disk)."""
    src = tmp_path / "src"
    files = write_source(src, {"large.bin": LARGE})
    the_plan = plan([parse_input(f"{src}/=in/")], workdir=workdir, stores=stores)
    summary = execute(the_plan, allocate=lacking)
    assert summary.problems == []
    assert (workdir / "in" / "large.bin").read_bytes() == files["large.bin"]


#: Run before taskkit is imported in the child: every reservation and positioned write of a
#: file below FULL fails as on a full device; everything else (the stat-cache, the source)
#: works.
_FULL_DISK = textwrap.dedent(
    """
    import errno, os, sys

    full = os.path.realpath(os.environ["FULL"]) + os.sep
    real_fallocate, real_pwrite = os.posix_fallocate, os.pwrite

    def on_full_disk(fd):
        return os.readlink(f"/proc/self/fd/{fd}").startswith(full)

    def fallocate(fd, offset, length):
        if on_full_disk(fd):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_fallocate(fd, offset, length)

    def pwrite(fd, data, offset):
        if on_full_disk(fd):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_pwrite(fd, data, offset)

    os.posix_fallocate, os.pwrite = fallocate, pwrite
    from taskkit.cli import main
    main(sys.argv[1:])
    """
)


def stage_on_a_full_disk(
    tmp_path: Path, work: Path, node: Path | None, full: Path
) -> subprocess.CompletedProcess[str]:
    """A real ``taskkit stage`` of ``in/data.bin`` into ``work`` (through the node cache at
    ``node``, if any) whose every block below ``full`` is refused."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AZ_BATCH_", "TASKKIT_"))}
    env.update(FULL=str(full), TASKKIT_CACHE_DIR=str(tmp_path / "cache"))
    cache_options = ["--cache-dir", str(node)] if node is not None else ["--no-node-cache"]
    work.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            _FULL_DISK,
            "stage",
            "-i",
            f"{tmp_path / 'src'}/data.bin=in/data.bin",
            "--workdir",
            str(work),
            *cache_options,
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert "Traceback" not in proc.stdout + proc.stderr, proc.stderr
    return proc


@pytest.mark.parametrize(
    ("size", "node_cache"),
    [(LARGE, False), (SMALL, False), (LARGE, True), (SMALL, True)],
    ids=["large-direct", "small-direct", "large-node-cache", "small-node-cache"],
)
def test_taskkit_stage_on_a_full_disk_exits_74_with_one_line(
    tmp_path: Path, size: int, node_cache: bool
) -> None:
    """A real ``taskkit stage`` whose disk refuses every block (reserved or written), the
    node cache's too when there is one: exit 74, one ``taskkit: error:`` line saying 'no space
    left on device' and naming the DEST, no traceback, nothing at the final path and nothing
    partial left (in the workdir or the node cache)."""
    write_source(tmp_path / "src", {"data.bin": size})
    disk = tmp_path / "disk"
    work, node = disk / "work", disk / "node"
    proc = stage_on_a_full_disk(tmp_path, work, node if node_cache else None, disk)
    assert proc.returncode == 74, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("taskkit: error: ")
    assert "no space left on device" in lines[0]
    assert "to 'in/data.bin'" in lines[0]
    assert not (work / "in" / "data.bin").exists()
    assert taskkit_files(work) == []
    if node_cache:
        assert list((node / "partial").iterdir()) == []


@pytest.mark.parametrize("size", [LARGE, SMALL], ids=["large", "small"])
def test_a_full_node_cache_is_bypassed_when_the_dest_has_room(tmp_path: Path, size: int) -> None:
    """A real ``taskkit stage`` whose node cache's disk refuses every block, DEST's not: the
    file is downloaded straight into place (exit 0, counted as downloaded), and the cache
    keeps no object and no partial of it."""
    files = write_source(tmp_path / "src", {"data.bin": size})
    work, node = tmp_path / "work", tmp_path / "node"
    proc = stage_on_a_full_disk(tmp_path, work, node, node)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    assert "1 downloaded" in proc.stdout, proc.stdout
    assert "0 linked" in proc.stdout, proc.stdout
    assert (work / "in" / "data.bin").read_bytes() == files["data.bin"]
    assert taskkit_files(work) == []
    assert list((node / "partial").iterdir()) == []
    assert [p for p in node.rglob("objects/*/*") if p.is_file()] == []


# -- real small disks (a tmpfs: needs root, skipped where mounting is refused) -----------------


def taskkit_stage(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """A real ``taskkit stage`` with a stat-cache of its own and no Batch or taskkit settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AZ_BATCH_", "TASKKIT_"))}
    env["TASKKIT_CACHE_DIR"] = str(tmp_path / "statcache")
    proc = subprocess.run(
        [sys.executable, "-m", "taskkit", "stage", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert "Traceback" not in proc.stdout + proc.stderr, proc.stderr
    return proc


def cached_objects(node: Path) -> list[Path]:
    return [p for p in node.glob("objects/*/*") if p.is_file()]


def test_a_full_dest_behind_the_node_cache_is_named_as_dest(
    small_disk: Path, tmp_path: Path
) -> None:
    """Workdir on a full 4 MiB tmpfs, node cache on another disk, a 6 MB input: exit 74 with
    one line saying the file was going to its DEST and naming the tmpfs (its mount point, type
    and the free space the copy found), never the node cache's object or disk; nothing left
    in the workdir."""
    write_source(tmp_path / "src", {"six.bin": 6_000_000})
    node = tmp_path / "node"
    work = small_disk / "w"
    proc = taskkit_stage(
        tmp_path,
        *("--cache-dir", str(node), "--workdir", str(work)),
        *("-i", f"{tmp_path / 'src'}/six.bin=six.bin"),
    )
    assert proc.returncode == 74, proc.stderr
    (line,) = proc.stderr.splitlines()
    assert line.startswith("taskkit: error: cannot stage "), line
    assert " to 'six.bin': " in line
    # Measured as the copy found it (0 B free), not after its partial copy was removed.
    assert f"the filesystem {str(small_disk)!r} (tmpfs on tmpfs, 0 B free of " in line
    assert str(node) not in line
    assert list(work.iterdir()) == []


def test_concurrent_additions_to_a_small_node_cache_all_stage(
    small_disk: Path, tmp_path: Path
) -> None:
    """Node cache on a 4 MiB tmpfs, workdir on another disk, two distinct 3 MB inputs (each
    fits the cache alone, both do not) staged with the default -j 8: exit 0, both staged byte
    for byte, whatever order the additions ran in; nothing partial left in the cache."""
    files = write_source(tmp_path / "src", {"one.bin": 3_000_000, "two.bin": 3_000_000})
    node = small_disk / "cache"
    work = tmp_path / "w"
    proc = taskkit_stage(
        tmp_path,
        *("--cache-dir", str(node), "--workdir", str(work), "--json"),
        *("-i", f"{tmp_path / 'src'}/=in/"),
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    summary = json.loads(proc.stdout)
    assert (summary["transferred"], summary["failed"]) == (2, 0)
    for name, data in files.items():
        assert (work / "in" / name).read_bytes() == data
    assert list((node / "partial").iterdir()) == []
    assert len(cached_objects(node)) <= 1


def test_a_node_cache_without_room_never_fails_a_stage(small_disk: Path, tmp_path: Path) -> None:
    """The node cache's 4 MiB tmpfs half taken by a file no eviction may touch, a 3 MB input
    (within the share the cache may fill, more than is free): staged straight into place,
    exit 0; -v says it was downloaded; the cache keeps no object or partial of it."""
    files = write_source(tmp_path / "src", {"three.bin": 3_000_000})
    (small_disk / "other-task-output").write_bytes(b"\1" * (2 * 1024 * 1024))
    node = small_disk / "cache"
    work = tmp_path / "w"
    proc = taskkit_stage(
        tmp_path,
        *("--cache-dir", str(node), "--workdir", str(work), "-v"),
        *("-i", f"{tmp_path / 'src'}/three.bin=in/three.bin"),
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    told, closing = proc.stdout.splitlines()
    assert told == f"download {tmp_path / 'src' / 'three.bin'} -> in/three.bin"
    assert "1 downloaded" in closing, closing
    assert (work / "in" / "three.bin").read_bytes() == files["three.bin"]
    assert list((node / "partial").iterdir()) == []
    assert cached_objects(node) == []
