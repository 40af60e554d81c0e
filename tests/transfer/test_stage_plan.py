"""taskkit.transfer.stage_plan: inputs are parsed, remote names are never trusted as paths, plans
decide."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import fsspec
import pytest

from taskkit.content.statcache import RACY_WINDOW_NS, StatCache, path_key
from taskkit.exceptions import DataError, InputNotFound, UsageError
from taskkit.storage.stores import Stores
from taskkit.transfer.nodecache import NodeCache
from taskkit.transfer.stage import execute
from taskkit.transfer.stage_plan import Input, check_name, parse_input, plan, resolve_dest


@pytest.fixture
def memory() -> Iterator[fsspec.AbstractFileSystem]:
    """fsspec's process-wide memory filesystem, empty before and after the test."""
    fs = fsspec.filesystem("memory")

    def clear() -> None:
        fs.store.clear()
        fs.pseudo_dirs.clear()
        fs.pseudo_dirs.append("")

    clear()
    yield fs
    clear()


def later_clock() -> int:
    """A stat-cache clock past the racy window of every file written by the test."""
    return time.time_ns() + 10 * RACY_WINDOW_NS


# -- parse_input -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "source", "dest"),
    [
        ("az://c/x.csv=in/x.csv", "az://c/x.csv", "in/x.csv"),
        ("az://c/x.csv", "az://c/x.csv", "x.csv"),
        ("az://c/pre/", "az://c/pre/", "pre/"),
        ("az://c/pre/=data/", "az://c/pre/", "data/"),
        ("az://c/a=b/c=data/", "az://c/a=b/c", "data/"),
        ("az://c/t/year=2024/=data/", "az://c/t/year=2024/", "data/"),
        ("/local/dir/f.txt", "/local/dir/f.txt", "f.txt"),
    ],
)
def test_parse_input_splits_at_the_last_equals_sign(text: str, source: str, dest: str) -> None:
    """SRC=DEST splits at the last '=', so '=' inside blob names (hive-style year=2024/)
    works; SRC alone stages to its own last name (a prefix keeps its '/')."""
    parsed = parse_input(text)
    assert parsed == Input(source, dest)
    assert parsed.is_prefix == source.endswith("/")


@pytest.mark.parametrize("text", ["", "=", "=x", "/", "=data/", "az://c/x=az://c/y"])
def test_an_input_without_a_source_or_with_a_url_as_dest_is_a_usage_error(text: str) -> None:
    """Nothing before the '=' (e.g. an empty shell variable in "$SRC=x") names no source, and
    a DEST is a local path, never a URL."""
    with pytest.raises(UsageError) as info:
        parse_input(text)
    assert info.value.exit_code == 64


@pytest.mark.parametrize("dest", ["a\nb", "a\x01b", "dir/\tname", "x\x7f", "d/\r/"])
@pytest.mark.parametrize("source", ["az://c/f1.txt", "az://c/p/", "az://c/p/*.txt"])
def test_a_typed_dest_with_a_control_character_is_a_usage_error(source: str, dest: str) -> None:
    """A DEST typed with a control character (a stray newline or tab in a shell variable) is
    refused before anything is read, as a blob name holding one is: no name is made that no
    output pattern could publish."""
    with pytest.raises(UsageError, match="control character") as info:
        parse_input(f"{source}={dest}")
    assert info.value.exit_code == 64
    assert "\n" not in str(info.value)  # shown escaped, on one line


@pytest.mark.parametrize("dest", ["a\\b", "dir\\", "d/x\\y/"])
@pytest.mark.parametrize("source", ["az://c/f1.txt", "az://c/p/", "az://c/p/*.txt"])
def test_a_typed_dest_with_a_backslash_is_a_usage_error(source: str, dest: str) -> None:
    """A DEST typed with a backslash is refused before anything is read, as a control
    character is: taskkit upload could never publish a file of that name."""
    with pytest.raises(UsageError, match="backslash") as info:
        parse_input(f"{source}={dest}")
    assert info.value.exit_code == 64


# -- check_name --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "/etc/passwd",
        "a\\b",
        "..\\..\\evil",
        "x\x01y",
        "tab\there",
        "new\nline",
        "del\x7f",
        "nul\x00byte",
        "../escape",
        "a/../b",
        "a/./b",
        ".",
        "..",
        "a//b",
        "trailing/",
        "",
        "n" * 256,
        "ok/" + "é" * 128,  # 256 bytes in UTF-8
        "/".join(["d" * 200] * 20),
    ],
    ids=repr,
)
def test_check_name_refuses_names_that_are_not_safe_paths(name: str) -> None:
    """Absolute, backslash, control characters, NUL, '.', '..', empty segments, a segment over
    255 bytes or a path too long for the local filesystem: DataError (65)."""
    with pytest.raises(DataError, match="left alone") as info:
        check_name(name, f"az://c/{name}")
    assert info.value.exit_code == 65


@pytest.mark.parametrize(
    "name",
    [
        "plain.txt",
        "dir/sub/file",
        "with space/and more.txt",
        "year=2024/month=01/part-0.parquet",
        "ümlaut/数据/файл",
        "..hidden/.dotfile",
        "n" * 255,
        "/".join(["d" * 200] * 18),
    ],
    ids=lambda n: repr(n)[:40],
)
def test_check_name_accepts_ordinary_names(name: str) -> None:
    """Unicode, spaces, '=', dotfiles and long-but-legal names are fine."""
    check_name(name, f"az://c/{name}")


# -- resolve_dest ------------------------------------------------------------------------------


def test_resolve_dest_accepts_paths_inside_the_workdir(workdir: Path) -> None:
    """Nested relative paths and absolute paths inside the workdir resolve to absolute paths."""
    assert resolve_dest(workdir, "a/b/c.txt") == workdir / "a" / "b" / "c.txt"
    assert resolve_dest(workdir, "a/../b") == workdir / "b"
    assert resolve_dest(workdir, str(workdir / "abs" / "f")) == workdir / "abs" / "f"
    assert resolve_dest(workdir, ".") == workdir


@pytest.mark.parametrize("dest", ["../x", "a/../../x", "/etc/passwd", "/tmp"])
def test_resolve_dest_refuses_paths_outside_the_workdir(workdir: Path, dest: str) -> None:
    """'..' out of the workdir or an absolute path elsewhere is a UsageError."""
    with pytest.raises(UsageError, match="outside the working directory"):
        resolve_dest(workdir, dest)


def test_resolve_dest_refuses_a_path_through_a_link_to_outside(
    workdir: Path, tmp_path: Path
) -> None:
    """A symlink inside the workdir pointing outside does not lead staging out."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (workdir / "link").symlink_to(outside)
    with pytest.raises(UsageError, match="outside the working directory"):
        resolve_dest(workdir, "link/x")
    with pytest.raises(UsageError):
        resolve_dest(workdir, "link/deeper/x")
    assert list(outside.iterdir()) == []


def test_resolve_dest_allows_a_link_that_stays_inside(workdir: Path) -> None:
    """A symlink to another directory of the workdir is fine."""
    (workdir / "real").mkdir()
    (workdir / "alias").symlink_to(workdir / "real")
    assert resolve_dest(workdir, "alias/x") == workdir / "alias" / "x"


# -- plan on memory:// -------------------------------------------------------------------------


def test_hostile_names_are_problems_and_the_other_files_are_planned(
    memory: fsspec.AbstractFileSystem, stores: Stores, workdir: Path
) -> None:
    """Names that are not safe paths are DataError problems (65), one each; the normal files
    of the same prefix are planned for download."""
    memory.pipe("/src/good.txt", b"good")
    memory.pipe("/src/sub/also good=1.txt", b"fine")
    hostile = ["a\\b", "x\x01y", "n" * 300]
    for name in hostile:
        memory.pipe(f"/src/{name}", b"evil")
    the_plan = plan([parse_input("memory://src/=out/")], workdir=workdir, stores=stores)
    assert sorted(p.what for p in the_plan.problems) == sorted(f"memory://src/{n}" for n in hostile)
    for problem in the_plan.problems:
        assert isinstance(problem.error, DataError)
        assert problem.error.exit_code == 65
    assert [(e.action, e.dest, e.path) for e in the_plan.entries] == [
        ("download", "out/good.txt", workdir / "out" / "good.txt"),
        ("download", "out/sub/also good=1.txt", workdir / "out" / "sub" / "also good=1.txt"),
    ]
    assert the_plan.bytes_to_move == 8
    assert list(workdir.iterdir()) == []  # planning writes nothing


def test_two_inputs_for_one_path_refuse_the_whole_request(
    memory: fsspec.AbstractFileSystem, stores: Stores, workdir: Path
) -> None:
    """A second file for a path refuses the request (64), naming both sources and the path."""
    memory.pipe("/src/a.txt", b"a")
    memory.pipe("/src/b.txt", b"b")
    with pytest.raises(UsageError) as info:
        plan(
            [parse_input("memory://src/a.txt=same"), parse_input("memory://src/b.txt=same")],
            workdir=workdir,
            stores=stores,
        )
    assert info.value.exit_code == 64
    message = str(info.value)
    assert "memory://src/a.txt" in message
    assert "memory://src/b.txt" in message
    assert "'same'" in message


def test_a_file_where_another_needs_a_directory_refuses_the_request(
    memory: fsspec.AbstractFileSystem, stores: Stores, workdir: Path
) -> None:
    """'d' as a file and 'd/b.txt' below it cannot both be staged, in either order."""
    memory.pipe("/src/a.txt", b"a")
    memory.pipe("/src/b.txt", b"b")
    for inputs in (
        ["memory://src/a.txt=d", "memory://src/b.txt=d/b.txt"],
        ["memory://src/b.txt=d/b.txt", "memory://src/a.txt=d"],
    ):
        with pytest.raises(UsageError, match=r"need.* a directory"):
            plan([parse_input(i) for i in inputs], workdir=workdir, stores=stores)


def test_an_empty_prefix_is_input_not_found_unless_allowed(
    memory: fsspec.AbstractFileSystem, stores: Stores, workdir: Path
) -> None:
    """A prefix that lists nothing is a problem (66) unless allow_empty."""
    memory.pipe("/other/x", b"x")
    inputs = [parse_input("memory://empty/")]
    the_plan = plan(inputs, workdir=workdir, stores=stores)
    assert the_plan.entries == ()
    (problem,) = the_plan.problems
    assert isinstance(problem.error, InputNotFound)
    assert problem.error.exit_code == 66
    assert "allow-empty" in str(problem.error)
    allowed = plan(inputs, workdir=workdir, stores=stores, allow_empty=True)
    assert (allowed.entries, allowed.problems) == ((), ())


def test_a_missing_single_file_is_a_problem_of_its_input(
    memory: fsspec.AbstractFileSystem, stores: Stores, workdir: Path
) -> None:
    """A named file that does not exist: InputNotFound for that input, the others planned."""
    memory.pipe("/src/here", b"x")
    the_plan = plan(
        [parse_input("memory://src/gone"), parse_input("memory://src/here")],
        workdir=workdir,
        stores=stores,
    )
    assert [e.dest for e in the_plan.entries] == ["here"]
    (problem,) = the_plan.problems
    assert problem.what == "memory://src/gone"
    assert isinstance(problem.error, InputNotFound)


def test_a_destination_outside_the_workdir_is_a_problem(
    memory: fsspec.AbstractFileSystem, stores: Stores, workdir: Path
) -> None:
    """DEST leading out of the workdir is refused for that input alone."""
    memory.pipe("/src/f", b"x")
    the_plan = plan([parse_input("memory://src/f=../f")], workdir=workdir, stores=stores)
    assert the_plan.entries == ()
    (problem,) = the_plan.problems
    assert isinstance(problem.error, UsageError)


def test_a_file_into_an_existing_directory_keeps_its_name(
    memory: fsspec.AbstractFileSystem, stores: Stores, workdir: Path
) -> None:
    """SRC=DIR/ (or an existing directory) puts the file inside it under its own name."""
    memory.pipe("/src/f.txt", b"x")
    (workdir / "existing").mkdir()
    the_plan = plan(
        [parse_input("memory://src/f.txt=new/"), parse_input("memory://src/f.txt=existing")],
        workdir=workdir,
        stores=stores,
    )
    assert [e.dest for e in the_plan.entries] == ["new/f.txt", "existing/f.txt"]


def test_staging_from_memory_writes_the_files(
    memory: fsspec.AbstractFileSystem, stores: Stores, workdir: Path
) -> None:
    """A memory:// prefix stages: every listed file arrives with its bytes."""
    memory.pipe("/src/a.txt", b"aaaa")
    memory.pipe("/src/sub/b.txt", b"bb")
    the_plan = plan([parse_input("memory://src/=in/")], workdir=workdir, stores=stores)
    summary = execute(the_plan)
    assert summary.problems == []
    assert (workdir / "in" / "a.txt").read_bytes() == b"aaaa"
    assert (workdir / "in" / "sub" / "b.txt").read_bytes() == b"bb"


# -- plan decisions with the stat-cache ----------------------------------------------------------


@pytest.fixture
def source_dir(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a.txt").write_bytes(b"alpha")
    (src / "sub" / "b.bin").write_bytes(os.urandom(1000))
    return src


def test_a_file_staged_from_this_version_is_skipped(
    source_dir: Path, stores: Stores, workdir: Path, tmp_path: Path
) -> None:
    """After staging, a fresh stat-cache entry with matching provenance means 'skip'."""
    inputs = [parse_input(f"{source_dir}/=in/")]
    with StatCache.open(tmp_path / "cache", clock=later_clock) as cache:
        first = plan(inputs, workdir=workdir, stores=stores, cache=cache)
        assert [e.action for e in first.entries] == ["download", "download"]
        summary = execute(first, cache=cache)
        assert summary.failed == 0
        assert summary.transferred == 2
        second = plan(inputs, workdir=workdir, stores=stores, cache=cache)
    assert [e.action for e in second.entries] == ["skip", "skip"]
    assert {e.reason for e in second.entries} == {"unchanged since it was staged from this version"}
    assert second.bytes_to_move == 0


def test_a_local_file_changed_after_staging_is_downloaded_again(
    source_dir: Path, stores: Stores, workdir: Path, tmp_path: Path
) -> None:
    """A staged file edited locally no longer matches its entry: it is planned again."""
    inputs = [parse_input(f"{source_dir}/a.txt=a.txt")]
    with StatCache.open(tmp_path / "cache", clock=later_clock) as cache:
        execute(plan(inputs, workdir=workdir, stores=stores, cache=cache), cache=cache)
        (workdir / "a.txt").write_bytes(b"edited")
        again = plan(inputs, workdir=workdir, stores=stores, cache=cache)
    (entry,) = again.entries
    assert entry.action == "download"
    assert entry.reason == "the local file differs"


def test_a_file_staged_from_another_version_is_not_skipped(
    source_dir: Path, stores: Stores, workdir: Path, tmp_path: Path
) -> None:
    """The source changed since staging: the entry's provenance no longer matches."""
    inputs = [parse_input(f"{source_dir}/a.txt=a.txt")]
    with StatCache.open(tmp_path / "cache", clock=later_clock) as cache:
        execute(plan(inputs, workdir=workdir, stores=stores, cache=cache), cache=cache)
        (source_dir / "a.txt").write_bytes(b"alpha, version two")
        again = plan(inputs, workdir=workdir, stores=stores, cache=cache)
    (entry,) = again.entries
    assert entry.action == "download"


def test_a_dry_plan_records_nothing_in_the_stat_cache(
    source_dir: Path, stores: Stores, workdir: Path, tmp_path: Path
) -> None:
    """A local file hashed to decide (its expected digest known from the node cache) is
    recorded by a real plan, never by a dry one (record=False); both decide 'skip'."""
    node = NodeCache(tmp_path / "node")
    inputs = [parse_input(f"{source_dir}/a.txt=a.txt")]
    execute(plan(inputs, workdir=workdir, stores=stores, node_cache=node), node_cache=node)
    key = path_key(workdir / "a.txt")
    with StatCache.open(tmp_path / "fresh-cache", clock=later_clock) as cache:
        dry = plan(
            inputs, workdir=workdir, stores=stores, cache=cache, node_cache=node, record=False
        )
        assert [e.action for e in dry.entries] == ["skip"]
        assert dry.entries[0].reason == "same digest as the source (hashed)"
        assert cache.lookup([key]) == {}
        real = plan(inputs, workdir=workdir, stores=stores, cache=cache, node_cache=node)
        assert [e.action for e in real.entries] == ["skip"]
        assert list(cache.lookup([key])) == [key]


def test_a_partial_download_is_planned_as_resume(
    source_dir: Path, stores: Stores, workdir: Path
) -> None:
    """A partial file left by an interrupted download makes the action 'resume'."""
    from taskkit.transfer.stage_plan import partial_path

    inputs = [parse_input(f"{source_dir}/a.txt=a.txt")]
    partial_path(workdir / "a.txt").write_bytes(b"al")
    (entry,) = plan(inputs, workdir=workdir, stores=stores).entries
    assert entry.action == "resume"


# -- http(s) sources with a SAS token -------------------------------------------------------------

_SAS_URL = "https://acct.blob.core.windows.net/c/dir/a.txt?sv=2026-10-06&sr=b&sig=Ab/cD%2Be%3D"


@pytest.mark.parametrize(
    ("text", "source", "dest"),
    [
        (_SAS_URL, _SAS_URL, "a.txt"),
        (f"{_SAS_URL}=in/x.txt", _SAS_URL, "in/x.txt"),
        (f"{_SAS_URL}=", _SAS_URL, "a.txt"),
        ("https://h/c/a.txt?sig=AbC", "https://h/c/a.txt?sig=AbC", "a.txt"),
        ("https://h/c/a.txt?sv=1&sig=AbC=", "https://h/c/a.txt?sv=1&sig=AbC=", "a.txt"),
        ("https://h/c/a.txt?sv=1&sig=Ab==", "https://h/c/a.txt?sv=1&sig=Ab==", "a.txt"),
        ("https://h/c/a.txt?sv=1&sig=AbC==x", "https://h/c/a.txt?sv=1&sig=AbC=", "x"),
        ("https://h/c/a.txt?sv=1&sig=AbCd=", "https://h/c/a.txt?sv=1&sig=AbCd", "a.txt"),
    ],
    ids=[
        "bare",
        "with-dest",
        "trailing-equals",
        "sig-alone",
        "unencoded-padding",
        "two-paddings",
        "padding-then-dest",
        "complete-then-trailing-equals",
    ],
)
def test_a_signed_url_is_split_after_its_query_and_named_by_its_path(
    text: str, source: str, dest: str
) -> None:
    """The '=' of the query string is the URL's own: a bare SAS URL is the whole SRC, and its
    default DEST is its path's last name, never a piece of its signature; an unencoded
    signature keeps the '=' padding its base64 needs, and an '=' after a complete one splits."""
    assert parse_input(text) == Input(source, dest)
