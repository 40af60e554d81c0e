"""Staging's error lines: two inputs for one path refuse the request with nothing written; a
missing working directory is planned as created; ``az://c/prefix`` without its ``/`` asks
whether the prefix was meant; a full disk names the filesystem that is full."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import fsspec
import pytest
from runner_helpers import Task, one_error, opened_task, sh, snapshot

from taskkit.content.statcache import StatCache
from taskkit.exceptions import InputNotFound, IOFailure, UsageError
from taskkit.storage.retry import RetryBudget
from taskkit.storage.stores import Stores
from taskkit.testing import Azurite
from taskkit.transfer.download import filesystem
from taskkit.transfer.nodecache import NodeCache
from taskkit.transfer.stage import execute, stage
from taskkit.transfer.stage_plan import parse_input, plan

MiB = 1024 * 1024
STAGE = [sys.executable, "-m", "taskkit", "stage"]


def taskkit_stage(
    *args: str, tmp_path: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    environment = {
        k: v for k, v in os.environ.items() if not k.startswith(("AZ_BATCH_", "AZURE_", "TASKKIT_"))
    }
    environment["TASKKIT_CACHE_DIR"] = str(tmp_path / "statcache")
    proc = subprocess.run(
        [*STAGE, *args],
        capture_output=True,
        text=True,
        env={**environment, **(env or {})},
        check=False,
        timeout=60,
    )
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


@pytest.fixture
def src(tmp_path: Path) -> Path:
    root = tmp_path / "src"
    (root / "p" / "sub").mkdir(parents=True)
    for name in ("p/a.txt", "p/b.txt", "p/sub/c.txt", "x.txt"):
        (root / name).write_text(f"{name}\n")
    return root


@pytest.fixture
def task(tmp_path: Path) -> Iterator[Task]:
    with opened_task(tmp_path) as opened:
        yield opened


# -- two inputs, one path -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("inputs", "clashing"),
    [
        (("p/=in/", "x.txt=in/b.txt"), ("p/b.txt", "x.txt")),  # a prefix's file and a file
        (("p/=in/", "x.txt=in/a.txt/x"), ("p/a.txt", "x.txt")),  # a file where a dir must be
        (("x.txt=in/sub", "p/=in/"), ("p/sub/c.txt", "x.txt")),  # a prefix needs a dir there
        (("p/*.txt=in/", "p/a.txt=in/a.txt"), ("p/a.txt", "p/a.txt")),  # a glob's match
    ],
)
def test_a_clash_refuses_the_whole_stage_with_nothing_written(
    src: Path, tmp_path: Path, inputs: tuple[str, str], clashing: tuple[str, str]
) -> None:
    """`taskkit stage`: exit 64, one line naming the clash, and not a single file staged (the
    files that do not clash included), no stat-cache made, however the clash arises."""
    workdir = tmp_path / "wd"
    workdir.mkdir()
    args = [a for i in inputs for a in ("-i", f"file://{src}/{i}")]
    proc = taskkit_stage("--workdir", str(workdir), *args, tmp_path=tmp_path)
    assert proc.returncode == 64, proc.stderr
    one_error(proc.stderr, "nothing was staged", *(f"'{src}/{name}'" for name in clashing))
    assert list(workdir.iterdir()) == []
    assert not (tmp_path / "statcache").exists() or not any((tmp_path / "statcache").iterdir())


def test_a_clash_in_taskkit_run_is_200_and_the_command_does_not_run(task: Task, src: Path) -> None:
    """`taskkit run`: the same clash is exit 200 (permanent) before the command runs."""
    before = snapshot(task.workdir)
    proc = task.run(
        sh(f"echo ran > {task.box / 'ran'}"),
        "-i",
        f"file://{src}/p/=in/",
        "-i",
        f"file://{src}/x.txt=in/a.txt",
    )
    assert proc.returncode == 200, proc.stderr
    assert "would both be staged at 'in/a.txt'" in proc.stderr
    assert not (task.box / "ran").exists()
    assert snapshot(task.workdir) == before


# -- a working directory that does not exist yet ---------------------------------------------------


def test_stage_dry_run_says_it_would_create_the_workdir_and_plans_downloads(
    src: Path, tmp_path: Path
) -> None:
    """A dry run into a missing workdir: 'would create the working directory DIR', every
    input a download, exit 0, nothing created; the real run then creates it and stages."""
    workdir = tmp_path / "new" / "wd"
    dry = taskkit_stage(
        "--workdir", str(workdir), "-i", f"file://{src}/p/=in/", "--dry-run", tmp_path=tmp_path
    )
    assert dry.returncode == 0, dry.stderr
    lines = dry.stdout.splitlines()
    assert lines[0] == f"would create the working directory {workdir}"
    assert [line.split()[0] for line in lines[1:-1]] == ["download"] * 3
    assert not (tmp_path / "new").exists()
    real = taskkit_stage("--workdir", str(workdir), "-i", f"file://{src}/p/=in/", tmp_path=tmp_path)
    assert real.returncode == 0, real.stderr
    assert (workdir / "in" / "sub" / "c.txt").read_text() == "p/sub/c.txt\n"


def test_a_workdir_that_is_a_file_is_local_io(src: Path, tmp_path: Path) -> None:
    """An existing path that is not a directory is local I/O (74, as run's 203), dry run or
    not."""
    workdir = tmp_path / "file"
    workdir.write_text("x")
    for extra in ((), ("--dry-run",)):
        proc = taskkit_stage(
            "--workdir", str(workdir), "-i", f"file://{src}/x.txt", *extra, tmp_path=tmp_path
        )
        assert proc.returncode == 74, proc.stderr
        one_error(proc.stderr, str(workdir), "not a directory")


@pytest.mark.parametrize("with_inputs", [True, False], ids=["inputs", "no-inputs"])
def test_run_dry_run_with_a_missing_workdir_says_it_would_create_it(
    task: Task, src: Path, with_inputs: bool
) -> None:
    """`taskkit run --dry-run` into a missing workdir: one 'would create the working
    directory' line (not an error), inputs shown as downloads, nothing created."""
    workdir = task.root / "missing" / "wd"
    inputs = ("-i", f"file://{src}/p/=in/") if with_inputs else ()
    proc = task.run(["true"], *inputs, "--dry-run", workdir=workdir)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("would create the working directory") == 1, proc.stdout
    assert str(workdir) in proc.stdout
    if with_inputs:
        assert proc.stdout.count("\ndownload ") == 3, proc.stdout
    assert "error" not in proc.stderr
    assert not (task.root / "missing").exists()


# -- did you mean the prefix? ----------------------------------------------------------------------


def test_a_prefix_without_its_slash_asks_did_you_mean_on_memory(
    stores: Stores, tmp_path: Path
) -> None:
    """memory://x/prefix where only memory://x/prefix/... exist: 66 asking about the prefix;
    a name that is nothing at all gets no such question."""
    fs = fsspec.filesystem("memory")
    fs.pipe("/tk-dym/prefix/a.txt", b"a")
    workdir = tmp_path / "wd"
    workdir.mkdir()
    try:
        the_plan = plan([parse_input("memory://tk-dym/prefix=x")], workdir=workdir, stores=stores)
        (problem,) = the_plan.problems
        assert isinstance(problem.error, InputNotFound)
        assert problem.error.exit_code == 66
        assert str(problem.error).endswith("did you mean memory://tk-dym/prefix/?")
        the_plan = plan([parse_input("memory://tk-dym/nothing=x")], workdir=workdir, stores=stores)
        (problem,) = the_plan.problems
        assert "did you mean" not in str(problem.error)
    finally:
        fs.rm("/tk-dym", recursive=True)


@pytest.mark.azurite
def test_a_prefix_without_its_slash_asks_did_you_mean_on_azurite(
    azurite: Azurite, azurite_container: str, tmp_path: Path
) -> None:
    """az://c/prefix holding blobs below prefix/: `taskkit stage` exits 66 with one line
    ending 'did you mean az://c/prefix/?', at the cost of one listing of one name; a blob
    that exists costs no listing; a name with nothing below it gets no question."""
    with azurite.blob_service_client() as service:
        container = service.get_container_client(azurite_container)
        for i in range(3):
            container.upload_blob(f"prefix/{i}.txt", b"x")
        container.upload_blob("single.txt", b"x")
    env = {"AZURE_STORAGE_CONNECTION_STRING": azurite.connection_string}
    workdir = tmp_path / "wd"
    workdir.mkdir()

    def counted(url: str) -> tuple[subprocess.CompletedProcess[str], list[str]]:
        since = azurite.log_offset()
        proc = taskkit_stage("--workdir", str(workdir), "-i", url, tmp_path=tmp_path, env=env)
        return proc, azurite.operations(since)

    proc, ops = counted(f"az://{azurite_container}/prefix=p")
    assert proc.returncode == 66, proc.stderr
    line = one_error(proc.stderr)
    assert line.endswith(f"; did you mean az://{azurite_container}/prefix/?"), line
    assert ops == ["Blob_GetProperties", "Container_ListBlobFlatSegment"], ops
    proc, ops = counted(f"az://{azurite_container}/nothing=n")
    assert proc.returncode == 66, proc.stderr
    assert "did you mean" not in one_error(proc.stderr)
    proc, ops = counted(f"az://{azurite_container}/single.txt=s")
    assert proc.returncode == 0, proc.stderr
    assert "Container_ListBlobFlatSegment" not in ops, ops
    assert list(workdir.iterdir()) == [workdir / "s"]


# -- a full disk names the filesystem --------------------------------------------------------------


def big_source(tmp_path: Path, size: int = 10 * MiB) -> Path:
    src = tmp_path / "big-src"
    src.mkdir(exist_ok=True)
    with (src / "big.bin").open("wb") as handle:
        handle.write(os.urandom(size))
    return src / "big.bin"


def test_a_full_destination_names_its_filesystem_not_the_node_caches(
    small_disk: Path, tmp_path: Path, stores: Stores
) -> None:
    """Downloading straight into a full workdir: 74, naming the tmpfs mount (its device and
    free space) and the destination, not the node cache's filesystem."""
    source = big_source(tmp_path)
    the_plan = plan([parse_input(f"{source}=big.bin")], workdir=small_disk, stores=stores)
    summary = execute(the_plan, node_cache=NodeCache(tmp_path / "node", max_bytes=MiB))
    (problem,) = summary.problems
    error = problem.error
    assert isinstance(error, IOFailure)
    assert error.exit_code == 74
    message = str(error)
    assert f"the filesystem {str(small_disk)!r} (tmpfs on tmpfs, " in message
    assert "to 'big.bin'" in message
    assert "node cache" not in message
    assert list(small_disk.iterdir()) == []


def test_a_full_node_cache_is_bypassed_for_a_destination_with_room(
    small_disk: Path, tmp_path: Path, stores: Stores, workdir: Path
) -> None:
    """A node cache on a full filesystem, while the workdir's has room: no failure, the file
    is downloaded straight into place, and the cache keeps nothing partial of it."""
    source = big_source(tmp_path)
    the_plan = plan([parse_input(f"{source}=big.bin")], workdir=workdir, stores=stores)
    # A bound by size that the small filesystem cannot hold: the download meets the full disk.
    summary = execute(the_plan, node_cache=NodeCache(small_disk / "cache", 100 * MiB))
    assert summary.problems == []
    assert (summary.transferred, summary.linked) == (1, 0)
    assert (workdir / "big.bin").read_bytes() == source.read_bytes()
    assert list((small_disk / "cache" / "partial").iterdir()) == []


def test_a_full_disk_in_taskkit_stage_is_one_line_and_74(small_disk: Path, tmp_path: Path) -> None:
    """The CLI: exit 74, one line naming the full filesystem's mount point."""
    source = big_source(tmp_path)
    proc = taskkit_stage(
        "--workdir",
        str(small_disk),
        "--no-node-cache",
        "-i",
        f"{source}=big.bin",
        tmp_path=tmp_path,
    )
    assert proc.returncode == 74, proc.stderr
    one_error(proc.stderr, "no space left on device", f"the filesystem {str(small_disk)!r}")


def test_a_refused_allocation_names_the_filesystem_everywhere(
    tmp_path: Path, stores: Stores, workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where no tmpfs can be mounted: a stand-in posix_fallocate refusing with ENOSPC gives
    the same 74 naming the destination's filesystem (mount point as its st_dev says), and
    no partial file."""
    source = big_source(tmp_path)

    def refuse(fd: int, offset: int, length: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "posix_fallocate", refuse)
    the_plan = plan([parse_input(f"{source}=big.bin")], workdir=workdir, stores=stores)
    summary = execute(the_plan)
    (problem,) = summary.problems
    assert problem.error.exit_code == 74
    mount = str(workdir)
    while (
        os.path.dirname(mount) != mount
        and os.stat(os.path.dirname(mount)).st_dev == os.stat(workdir).st_dev
    ):
        mount = os.path.dirname(mount)
    assert f"no space left on device: the filesystem {mount!r} (" in str(problem.error)
    assert list(workdir.iterdir()) == []


def test_filesystem_names_mount_point_type_device_and_space(small_disk: Path) -> None:
    """filesystem(): the mount point of a path (even one not made yet), its type and device
    from the mount table, and its free and total space."""
    assert filesystem(small_disk / "not" / "yet") == filesystem(small_disk)
    text = filesystem(small_disk)
    assert text.startswith(f"{str(small_disk)!r} (tmpfs on tmpfs, ")
    assert text.endswith(" free of 4.0 MiB)")


def test_the_same_input_given_twice_is_staged_once(tmp_path: Path) -> None:
    """``-i X=s -i X=s`` is one input, not a clash with itself: staged once, exit 0."""
    source = tmp_path / "a.txt"
    source.write_text("a\n")
    work = tmp_path / "w"
    given = f"file://{source}=s"
    with StatCache.open(tmp_path / "cache") as cache:
        summary = stage([given, given], workdir=work, cache=cache)
    assert summary.exit_error() is None
    assert summary.files == 1
    assert (work / "s").read_text() == "a\n"


@pytest.mark.azurite
def test_a_blob_named_like_taskkits_own_files_is_refused_not_staged_over_another(
    azurite: Azurite, azurite_container: str, tmp_path: Path
) -> None:
    """A blob named as taskkit names the partial file of another blob of the prefix
    (``big/.taskkit-<hash>.partial`` beside ``big/six.bin``): it is refused on its own (65,
    one line), and ``six.bin`` is staged with its own bytes, straight into place."""
    from taskkit.transfer.stage_plan import partial_path

    data = bytes(range(256)) * 4096
    partial = partial_path(Path("big") / "six.bin").name
    with azurite.blob_service_client() as service:
        container = service.get_container_client(azurite_container)
        container.upload_blob("pc/big/six.bin", data)
        container.upload_blob(f"pc/big/{partial}", b"not six.bin's bytes")
    env = {"AZURE_STORAGE_CONNECTION_STRING": azurite.connection_string}
    workdir = tmp_path / "wd"
    proc = taskkit_stage(
        "--no-node-cache", "--workdir", str(workdir), "-i", f"az://{azurite_container}/pc/=x/",
        tmp_path=tmp_path, env=env,
    )  # fmt: skip
    assert proc.returncode == 65, proc.stderr
    assert "taskkit keeps for its own files" in one_error(proc.stderr)
    assert (workdir / "x" / "big" / "six.bin").read_bytes() == data
    assert sorted(p.name for p in (workdir / "x" / "big").iterdir()) == ["six.bin"]


# -- a file where another blob of the same input needs a directory ---------------------------------


@pytest.mark.azurite
@pytest.mark.parametrize(
    ("blobs", "refused", "staged"),
    [
        (("x", "x/y", "z"), "x", {"x/y", "z"}),  # a file where one blob needs its parent
        (("a", "a/b/c", "a/d"), "a", {"a/b/c", "a/d"}),  # needed as a grandparent, twice
        (("q/r", "q/r/s", "q/t"), "q/r", {"q/r/s", "q/t"}),  # below the prefix's top
    ],
)
def test_a_blob_another_blob_of_its_input_needs_as_a_directory_is_refused_alone(
    azurite: Azurite,
    azurite_container: str,
    tmp_path: Path,
    blobs: tuple[str, ...],
    refused: str,
    staged: set[str],
) -> None:
    """Within one prefix, a blob where another needs a directory is a 65 problem of its own
    naming it; every other blob is planned. No usage error of the whole request."""
    with azurite.blob_service_client() as service:
        container = service.get_container_client(azurite_container)
        for name in blobs:
            container.upload_blob(f"p/{name}", name.encode())
    source = f"az://{azurite_container}/p/"
    with Stores(RetryBudget(attempts=1), azurite.storage_options()) as stores:
        the_plan = plan([parse_input(f"{source}=in/")], workdir=tmp_path, stores=stores)
    (problem,) = the_plan.problems
    assert problem.error.exit_code == 65
    assert f"{source}{refused}'" in str(problem.error)
    assert "another blob needs it to be a directory" in str(problem.error)
    assert {entry.dest for entry in the_plan.entries} == {f"in/{name}" for name in staged}


def test_two_inputs_clashing_file_and_directory_stay_a_usage_error(
    stores: Stores, tmp_path: Path
) -> None:
    """The same file/directory clash between two DIFFERENT inputs is the command line's:
    the whole request is refused (64)."""
    from taskkit.exceptions import UsageError

    fs = fsspec.filesystem("memory")
    fs.pipe("/tk-fd2/p/x/y", b"y")
    fs.pipe("/tk-fd2/one", b"1")
    try:
        inputs = [parse_input("memory://tk-fd2/p/=in/"), parse_input("memory://tk-fd2/one=in/x")]
        with pytest.raises(UsageError, match="nothing was staged") as info:
            plan(inputs, workdir=tmp_path, stores=stores)
        assert info.value.exit_code == 64
    finally:
        fs.rm("/tk-fd2", recursive=True)


@pytest.mark.azurite
def test_stage_and_run_refuse_only_the_blob_that_cannot_be_a_file(
    azurite: Azurite, azurite_container: str, tmp_path: Path
) -> None:
    """Blobs ``p/x`` and ``p/x/y`` (and ``p/z``): ``taskkit stage`` exits 65 with one line
    naming ``p/x``, and stages ``x/y`` and ``z``; ``taskkit run`` is 202 (bad data), not the
    usage 200, and the same one line."""
    with azurite.blob_service_client() as service:
        container = service.get_container_client(azurite_container)
        for name in ("p/x", "p/x/y", "p/z"):
            container.upload_blob(name, name.encode())
    env = {"AZURE_STORAGE_CONNECTION_STRING": azurite.connection_string}
    source = f"az://{azurite_container}/p/"
    workdir = tmp_path / "wd"
    proc = taskkit_stage(
        "--workdir", str(workdir), "-i", f"{source}=in/", tmp_path=tmp_path, env=env
    )
    assert proc.returncode == 65, proc.stderr
    line = one_error(proc.stderr, f"{source}x'", "another blob needs it to be a directory")
    assert "p/x/y" not in line
    assert (workdir / "in" / "x" / "y").read_bytes() == b"p/x/y"
    assert (workdir / "in" / "z").read_bytes() == b"p/z"
    (tmp_path / "run").mkdir()
    with opened_task(tmp_path / "run") as task:
        ran = task.box / "ran"
        proc = task.run(sh(f"touch {ran}"), "-i", f"{source}=in/", env=env)
        assert proc.returncode == 202, proc.stderr
        assert "another blob needs it to be a directory" in proc.stderr
        assert "usage" not in proc.stderr.lower()


@pytest.mark.parametrize(
    "text",
    [
        "az://data/big/six.bin=big/.taskkit-0738b8891f2d3201.partial",
        "az://data/y/.taskkit-0738b8891f2d3201.partial",
        "az://data/x/evil.txt=.taskkit-outputs-0123456789abcdef.json",
        "az://data/x/=.taskkit-dir/",
        "az://data/x/*.txt=d/.taskkit-q/",
    ],
)
def test_a_dest_named_like_taskkits_own_files_is_refused(text: str) -> None:
    """A DEST (typed, or a single blob's own name) with a segment starting '.taskkit-' is
    refused before anything is read: it would be taken for, or written over, the partial file
    of another input, a ledger or a tombstone."""
    with pytest.raises(UsageError, match="taskkit keeps for its own files"):
        parse_input(text)
