"""A link leading out of the working directory that appears between plan and execute is
refused at execute time: staging writes nothing through it, upload sends nothing read
through it (taskkit.transfer.stage ``_make_parent``, taskkit.transfer.upload ``_leads_out``).

The plan already refuses (staging) or passes over (upload) links that are there when it is
made; these tests make the link appear after the plan, through the observer's ``plan``, as a
process still running in the working directory could.
"""

from __future__ import annotations

import os
import random
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from observing import OnPlan

from taskkit.content.digest import CHUNK_SIZE
from taskkit.content.statcache import StatCache
from taskkit.exceptions import UsageError
from taskkit.storage.stores import Stores
from taskkit.transfer.nodecache import NodeCache
from taskkit.transfer.stage import execute, stage
from taskkit.transfer.stage_plan import PlanEntry, parse_input, plan
from taskkit.transfer.upload import upload
from taskkit.transfer.upload_plan import MANIFEST_NAME

LEADS_OUT = "leads out of the working directory through a link"
#: One file of one request, one of several ranges (or blocks): both paths of each transfer.
SIZES = {"small.bin": 100, "large.bin": CHUNK_SIZE + 1000}


def tree(root: Path) -> dict[str, tuple[str, bytes]]:
    """Every entry below ``root`` (not following links): kind and content."""
    found: dict[str, tuple[str, bytes]] = {}
    for path in sorted(root.rglob("*")):
        name = str(path.relative_to(root))
        if path.is_symlink():
            found[name] = ("link", os.readlink(path).encode())
        elif path.is_dir():
            found[name] = ("dir", b"")
        else:
            found[name] = ("file", path.read_bytes())
    return found


def write(root: Path, files: dict[str, bytes]) -> None:
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)


def contents(seed: int) -> dict[str, bytes]:
    rng = random.Random(seed)
    return {name: rng.randbytes(size) for name, size in SIZES.items()}


def swap_for_link(path: Path, target: Path) -> None:
    """Replace the directory (or file) at ``path`` with a symbolic link to ``target``."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()
    os.symlink(target, path)


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A directory beside the working directory, holding a decoy of every file."""
    place = tmp_path / "outside"
    write(place, {f"sub/{n}": b"decoy " + d for n, d in contents(9).items()})
    write(place, {n: b"decoy " + d for n, d in contents(9).items()})
    return Path(os.path.realpath(place))


# -- staging ------------------------------------------------------------------------------------

#: Which directory above the staged files becomes a link out, and where the files go: their
#: own parent; one higher up (the link is crossed on the way down); one higher up with a
#: directory below it that exists nowhere yet (it must not be made outside either).
STAGE_SWAPS = {
    "parent": ("in/sub", "sub", "in/sub/"),
    "ancestor": ("in", "", "in/sub/"),
    "ancestor-of-a-new-directory": ("in", "", "in/new/deeper/"),
}


@pytest.mark.parametrize("node_cache", [False, True], ids=["direct", "node-cache"])
@pytest.mark.parametrize("swapped", sorted(STAGE_SWAPS))
def test_staging_through_a_link_out_that_appeared_after_the_plan_is_refused(
    tmp_path: Path, workdir: Path, outside: Path, swapped: str, node_cache: bool
) -> None:
    """A directory the plan saw inside, swapped for a link out before execute: every file
    under it is refused (UsageError, 64, naming the link), nothing outside changes (not even
    a new directory), and no partial file is left anywhere."""
    src = tmp_path / "src"
    write(src, contents(1))
    (workdir / "in" / "sub").mkdir(parents=True)
    link, target, dest = STAGE_SWAPS[swapped]
    before = tree(outside)
    node = NodeCache(tmp_path / "node") if node_cache else None
    planned: list[object] = []

    def swap(plan: object) -> None:
        planned.append(plan)
        swap_for_link(workdir / link, outside / target)

    with StatCache.open(tmp_path / "cache") as cache:
        summary = stage(
            [f"{src}/={dest}"],
            workdir=workdir,
            cache=cache,
            node_cache=node,
            jobs=2,
            observer=OnPlan(swap),
        )
    assert planned, "the plan was made before the swap"
    assert (summary.transferred, summary.linked, summary.failed) == (0, 0, len(SIZES))
    for problem in summary.problems:
        assert isinstance(problem.error, UsageError)
        assert problem.error.exit_code == 64
        assert LEADS_OUT in str(problem.error)
    assert tree(outside) == before
    assert [p for p in tmp_path.rglob("*") if p.name.startswith(".taskkit-")] == []


@pytest.mark.parametrize("node_cache", [False, True], ids=["direct", "node-cache"])
@pytest.mark.parametrize("swapped", ["parent", "ancestor"])
def test_a_directory_swapped_for_a_link_out_while_its_files_are_staged_gets_nothing_more(
    tmp_path: Path, workdir: Path, outside: Path, swapped: str, node_cache: bool
) -> None:
    """A directory moved aside and replaced by a link out after its first file was staged:
    nothing is written behind the link (the files of a directory are written into the very
    directory reached from the working directory, not through its path), the later files of
    it are refused (64) instead of being reported staged where their path does not lead, and
    no partial is left anywhere."""
    src = tmp_path / "src"
    names = [f"sub/f{i}.bin" for i in range(6)]
    write(src, {name: bytes([i]) * (100 + i) for i, name in enumerate(names)})
    (workdir / "in" / "sub").mkdir(parents=True)
    link, target = {"parent": ("in/sub", "sub"), "ancestor": ("in", "")}[swapped]
    before = tree(outside)
    node = NodeCache(tmp_path / "node") if node_cache else None
    done: list[tuple[str, object]] = []

    def on_file(entry: PlanEntry, error: object) -> None:
        if not done:
            os.rename(workdir / link, workdir / "aside")  # kept: its files are no one's
            os.symlink(outside / target, workdir / link)
        done.append((entry.dest, error))

    with StatCache.open(tmp_path / "cache") as cache:
        planned = plan([parse_input(f"{src}/=in/")], workdir=workdir, stores=Stores(), cache=cache)
        summary = execute(planned, cache=cache, node_cache=node, on_file=on_file)
    assert tree(outside) == before
    assert len(done) == len(names)
    assert summary.transferred + summary.linked == 1
    assert summary.failed == len(names) - 1
    for problem in summary.problems:
        assert isinstance(problem.error, UsageError)
        assert problem.error.exit_code == 64
        assert LEADS_OUT in str(problem.error)
    assert [p for p in tmp_path.rglob("*") if p.name.startswith(".taskkit-")] == []


@pytest.mark.parametrize("node_cache", [False, True], ids=["direct", "node-cache"])
@pytest.mark.parametrize("moved", ["directory", "working directory"])
def test_a_directory_moved_out_with_a_link_to_its_new_place_gets_nothing_more(
    tmp_path: Path, outside: Path, moved: str, node_cache: bool
) -> None:
    """A directory being staged into (or the working directory itself) moved out of the
    working directory after the first file, a link to its new place left behind: the link
    leads to the very directory held, but it is no longer below the working directory, so
    nothing more is written into it; the later files are refused (64)."""
    workdir = tmp_path / "w"
    src = tmp_path / "src"
    names = [f"sub/f{i}.bin" for i in range(6)]
    write(src, {name: bytes([i]) * (100 + i) for i, name in enumerate(names)})
    (workdir / "in" / "sub").mkdir(parents=True)
    node = NodeCache(tmp_path / "node") if node_cache else None
    away = outside / "moved"
    here = workdir / "in" / "sub" if moved == "directory" else workdir
    done: list[object] = []

    def on_file(entry: PlanEntry, error: object) -> None:
        if not done:
            os.rename(here, away)
            os.symlink(away, here)
        done.append(error)

    with StatCache.open(tmp_path / "cache") as cache:
        planned = plan([parse_input(f"{src}/=in/")], workdir=workdir, stores=Stores(), cache=cache)
        summary = execute(planned, cache=cache, node_cache=node, on_file=on_file)
    assert len(done) == len(names)
    assert summary.transferred + summary.linked == 1
    assert summary.failed == len(names) - 1
    for problem in summary.problems:
        assert isinstance(problem.error, UsageError)
        assert LEADS_OUT in str(problem.error)
    moved_files = list(away.rglob("*.bin"))
    assert len(moved_files) == 1  # the one staged before the move, and no other
    assert [p for p in tmp_path.rglob("*") if p.name.startswith(".taskkit-")] == []


@pytest.mark.parametrize("node_cache", [False, True], ids=["direct", "node-cache"])
def test_a_file_whose_directory_was_swapped_while_it_was_written_is_failed_not_misplaced(
    tmp_path: Path, workdir: Path, monkeypatch: pytest.MonkeyPatch, node_cache: bool
) -> None:
    """A directory swapped for a link to another directory inside the working directory just
    before a file is staged, and swapped back right after it is named there: the file is not
    reported staged at a path that does not hold it (75, retryable), and it is not left in
    the other directory."""
    import taskkit.transfer.stage as stage_module

    src = tmp_path / "src"
    write(src, {"a/x.bin": b"x" * 100, "b/y.bin": b"y" * 100})
    (workdir / "in" / "a").mkdir(parents=True)
    (workdir / "in" / "b").mkdir(parents=True)
    a, b = workdir / "in" / "a", workdir / "in" / "b"
    real_stage_here = stage_module._Run._stage_here

    def swapped(self: object, entry: PlanEntry) -> object:
        if entry.where.endswith("/x.bin"):  # named in b through the link, then a is back
            try:
                return real_stage_here(self, entry)  # type: ignore[arg-type]
            finally:
                os.unlink(a)
                os.rename(workdir / "in" / "a-real", a)
        return real_stage_here(self, entry)  # type: ignore[arg-type]

    def swap(plan: object) -> None:
        os.rename(a, workdir / "in" / "a-real")
        os.symlink(b, a)

    monkeypatch.setattr(stage_module._Run, "_stage_here", swapped)
    node = NodeCache(tmp_path / "node") if node_cache else None
    with StatCache.open(tmp_path / "cache") as cache:
        summary = stage(
            [f"{src}/=in/"], workdir=workdir, cache=cache, node_cache=node, observer=OnPlan(swap)
        )
    assert (summary.transferred + summary.linked, summary.failed) == (1, 1)
    (problem,) = summary.problems
    assert problem.error.exit_code == 75
    assert "was moved while it was written" in str(problem.error)
    assert sorted(p.name for p in b.iterdir()) == ["y.bin"]  # no stray x.bin
    assert not (a / "x.bin").exists()


@pytest.mark.parametrize("node_cache", [False, True], ids=["direct", "node-cache"])
def test_a_link_out_at_the_files_own_path_is_replaced_never_written_through(
    tmp_path: Path, workdir: Path, outside: Path, node_cache: bool
) -> None:
    """A link to an outside file put at a staged file's own path after the plan: the staged
    file replaces the link (a rename does not follow it); the outside file keeps its bytes."""
    src = tmp_path / "src"
    files = contents(2)
    write(src, files)
    before = tree(outside)
    node = NodeCache(tmp_path / "node") if node_cache else None

    def plant(plan: object) -> None:
        for name in SIZES:
            os.symlink(outside / name, workdir / "in" / name)

    (workdir / "in").mkdir()
    with StatCache.open(tmp_path / "cache") as cache:
        summary = stage(
            [f"{src}/=in/"], workdir=workdir, cache=cache, node_cache=node, observer=OnPlan(plant)
        )
    assert summary.problems == []
    for name, data in files.items():
        staged = workdir / "in" / name
        assert not staged.is_symlink()
        assert staged.read_bytes() == data
    assert tree(outside) == before


# -- upload -------------------------------------------------------------------------------------


def _dir_swap(level: str) -> Callable[[Path, Path], None]:
    def swap(workdir: Path, outside: Path) -> None:
        if level == "parent":
            swap_for_link(workdir / "out" / "sub", outside / "sub")
        else:
            swap_for_link(workdir / "out", outside)

    return swap


def _file_swap(workdir: Path, outside: Path) -> None:
    for name in SIZES:
        swap_for_link(workdir / "out" / "sub" / name, outside / "sub" / name)


UPLOAD_SWAPS: dict[str, Callable[[Path, Path], None]] = {
    "parent": _dir_swap("parent"),
    "ancestor": _dir_swap("ancestor"),
    "file": _file_swap,
}


@pytest.mark.parametrize("swapped", sorted(UPLOAD_SWAPS))
def test_upload_through_a_link_out_that_appeared_after_the_plan_is_refused(
    tmp_path: Path, workdir: Path, outside: Path, swapped: str
) -> None:
    """An output (or a directory above it) swapped for a link out after the plan: the file is
    refused (UsageError, 64, naming the link), no byte of the outside file reaches the
    destination, and the DEST is not published."""
    write(workdir / "out" / "sub", contents(3))
    dest = tmp_path / "dest"
    dest.mkdir()
    with StatCache.open(tmp_path / "cache") as cache:
        summary = upload(
            ["out/**=" + str(dest) + "/"],
            workdir=workdir,
            cache=cache,
            task={},
            observer=OnPlan(lambda plan: UPLOAD_SWAPS[swapped](workdir, outside)),
        )
    assert len(summary.problems) == len(SIZES)
    for problem in summary.problems:
        assert isinstance(problem.error, UsageError)
        assert problem.error.exit_code == 64
        assert LEADS_OUT in str(problem.error)
    assert summary.transferred == 0
    sent = tree(dest)
    assert not (dest / MANIFEST_NAME).exists()
    assert not any(b"decoy" in data for _, data in sent.values())
