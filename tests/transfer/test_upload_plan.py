"""taskkit.transfer.upload_plan: a plan that lists each DEST once and decides per file, send or
skip."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from upload_fakes import FakeStores, clear_memory

import taskkit.content.hashing
from taskkit.content.digest import hash_bytes
from taskkit.content.statcache import RACY_WINDOW_NS, CacheEntry, StatCache, path_key, path_keys
from taskkit.content.walk import Skipped
from taskkit.exceptions import (
    ConfigError,
    DataError,
    InputNotFound,
    UsageError,
)
from taskkit.storage.base import RemoteFile, file_metadata
from taskkit.storage.memory import MemoryStore
from taskkit.storage.stores import Stores
from taskkit.transfer.patterns import Output, parse_output
from taskkit.transfer.upload_plan import (
    MANIFEST_NAME,
    UploadPlan,
    _name_problem,
    plan,
)

LEADS_OUT = "a link that leads out of the working directory"


def later_clock() -> int:
    """A stat-cache clock past the racy window of every file written by the test."""
    return time.time_ns() + 10 * RACY_WINDOW_NS


def make(root: Path, files: dict[str, bytes]) -> None:
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)


@pytest.fixture
def memory() -> Iterator[None]:
    """fsspec's process-wide memory filesystem, empty before and after the test."""
    clear_memory()
    yield
    clear_memory()


@pytest.fixture
def cache(tmp_path: Path) -> Iterator[StatCache]:
    with StatCache.open(tmp_path / "cache", clock=later_clock) as opened:
        yield opened


# -- plan ---------------------------------------------------------------------------------------


def outputs(*texts: str) -> list[Output]:
    return [parse_output(t) for t in texts]


def actions(the_plan: UploadPlan) -> list[tuple[str, str, str]]:
    return [(e.name, e.action, e.reason) for e in the_plan.entries]


def test_files_not_at_the_destination_are_sent(memory: None, stores: Stores, workdir: Path) -> None:
    """A new DEST: every file is a send, with its key, URL and size; planning writes nothing."""
    make(workdir, {"out/a.txt": b"aaa", "out/sub/b.txt": b"b"})
    the_plan = plan(outputs("out/**=memory://dest/run"), workdir=workdir, stores=stores)
    assert actions(the_plan) == [
        ("a.txt", "send", "not at the destination"),
        ("sub/b.txt", "send", "not at the destination"),
    ]
    entry = the_plan.entries[0]
    assert (entry.path, entry.local, entry.key) == (
        workdir / "out" / "a.txt",
        "out/a.txt",
        "/dest/run/a.txt",
    )
    assert (entry.url, entry.size, entry.digest, entry.remote) == (
        "memory://dest/run/a.txt",
        3,
        None,
        None,
    )
    assert repr(entry) == (
        "UploadEntry('send', 'out/a.txt' -> 'memory://dest/run/a.txt', 'not at the destination')"
    )
    (publication,) = the_plan.publications
    assert (publication.dest, publication.prefix, publication.manifest) == (
        "memory://dest/run/",
        "/dest/run/",
        None,
    )
    assert publication.manifest_url == f"memory://dest/run/{MANIFEST_NAME}"
    assert (the_plan.count("send"), the_plan.count("skip"), the_plan.bytes_to_move) == (2, 0, 4)
    assert (the_plan.problems, the_plan.passed, the_plan.workdir) == ((), (), workdir)
    assert stores.open("memory://dest/")[0].list("/dest/") == []


def test_a_different_size_is_sent_and_no_digest_on_memory_is_sent(
    memory: None, stores: Stores, workdir: Path
) -> None:
    """memory:// keeps no metadata: a blob of another size differs; one of the same size has
    no taskkit digest to compare, so it is sent too."""
    make(workdir, {"a.txt": b"aaa", "b.txt": b"bbb"})
    store, _ = stores.open("memory://dest/")
    store.put("/dest/a.txt", b"a", {})
    store.put("/dest/b.txt", b"bbb", file_metadata(hash_bytes(b"bbb"), 3))
    the_plan = plan(outputs("*.txt=memory://dest/"), workdir=workdir, stores=stores)
    assert actions(the_plan) == [
        ("a.txt", "send", "the destination differs (size)"),
        ("b.txt", "send", "the destination has no taskkit digest"),
    ]
    assert the_plan.entries[0].remote is not None
    assert the_plan.entries[0].remote.size == 1


def test_a_local_destination_is_hashed_to_decide(
    stores: Stores, workdir: Path, tmp_path: Path
) -> None:
    """file:// keeps no metadata either, but its files can be hashed: the same content is a
    skip (with the digest known), other content of the same size a send."""
    make(workdir, {"same.txt": b"same", "other.txt": b"abcd"})
    dest = tmp_path / "dest"
    make(dest, {"same.txt": b"same", "other.txt": b"wxyz"})
    the_plan = plan(outputs(f"*.txt=file://{dest}"), workdir=workdir, stores=stores)
    assert actions(the_plan) == [
        ("other.txt", "send", "the destination differs"),
        ("same.txt", "skip", "same digest at the destination (hashed)"),
    ]
    assert the_plan.entries[1].digest == hash_bytes(b"same")
    assert the_plan.entries[0].digest is None
    assert the_plan.bytes_to_move == 4


def test_a_dry_plan_records_nothing_in_the_stat_cache(
    stores: Stores, workdir: Path, tmp_path: Path, cache: StatCache
) -> None:
    """Files hashed to decide (the local file and the file:// copy) are recorded by a real
    plan, never by a dry one (record=False); both decide the same."""
    make(workdir, {"f.txt": b"content"})
    dest = tmp_path / "dest"
    make(dest, {"f.txt": b"content"})
    keys = [path_key(workdir / "f.txt"), path_key(dest / "f.txt")]
    request = outputs(f"f.txt=file://{dest}")
    dry = plan(request, workdir=workdir, stores=stores, cache=cache, record=False)
    assert actions(dry) == [("f.txt", "skip", "same digest at the destination (hashed)")]
    assert cache.lookup(keys) == {}
    real = plan(request, workdir=workdir, stores=stores, cache=cache)
    assert actions(real) == actions(dry)
    assert sorted(cache.lookup(keys)) == sorted(keys)


@pytest.fixture
def no_hashing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to hash a file fails the test."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"hashed {args!r}")

    monkeypatch.setattr(taskkit.content.hashing, "hash_paths", refuse)


def remember(
    cache: StatCache, path: Path, data: bytes, source: str | None = None, etag: str | None = None
) -> None:
    """A trusted stat-cache entry for ``path`` (as hashing or an upload records it)."""
    digest = hash_bytes(data)
    cache.record(
        [
            CacheEntry.of(
                path_key(path), os.stat(path), digest, (digest.value,), later_clock(), source, etag
            )
        ]
    )


def test_provenance_in_the_stat_cache_skips_without_hashing(
    workdir: Path, cache: StatCache, no_hashing: None
) -> None:
    """A file recorded as uploaded to this very blob version is skipped unread."""
    make(workdir, {"a.txt": b"alpha"})
    fake = MemoryStore("fake")
    etag = fake.put("c/run/a.txt", b"alpha", file_metadata(hash_bytes(b"alpha"), 5))
    remember(cache, workdir / "a.txt", b"alpha", "fake://c/run/a.txt", etag)
    the_plan = plan(
        outputs("a.txt=fake://c/run/"), workdir=workdir, stores=FakeStores(fake), cache=cache
    )
    assert actions(the_plan) == [("a.txt", "skip", "unchanged since it was uploaded there")]
    assert the_plan.entries[0].digest == hash_bytes(b"alpha")


def test_a_cached_digest_decides_without_hashing(
    workdir: Path, cache: StatCache, no_hashing: None
) -> None:
    """Without matching provenance, a trusted cached digest is compared with the blob's
    taskkit digest: equal is a skip, different a send; nothing is read."""
    make(workdir, {"same.txt": b"same", "diff.txt": b"mine"})
    fake = MemoryStore("fake")
    fake.put("c/same.txt", b"same", file_metadata(hash_bytes(b"same"), 4))
    fake.put("c/diff.txt", b"them", file_metadata(hash_bytes(b"them"), 4))
    remember(cache, workdir / "same.txt", b"same", "fake://c/same.txt", "an-older-etag")
    remember(cache, workdir / "diff.txt", b"mine")
    the_plan = plan(outputs("*=fake://c/"), workdir=workdir, stores=FakeStores(fake), cache=cache)
    assert actions(the_plan) == [
        ("diff.txt", "send", "the destination differs"),
        ("same.txt", "skip", "same digest at the destination"),
    ]


def test_without_a_trusted_entry_the_file_is_hashed(workdir: Path, cache: StatCache) -> None:
    """A file changed since its entry was recorded is hashed again: same content as the blob's
    digest is a skip, and the new digest is recorded."""
    make(workdir, {"a.txt": b"old!"})
    remember(cache, workdir / "a.txt", b"old!")
    (workdir / "a.txt").write_bytes(b"new!")
    fake = MemoryStore("fake")
    fake.put("c/a.txt", b"new!", file_metadata(hash_bytes(b"new!"), 4))
    the_plan = plan(
        outputs("a.txt=fake://c/"), workdir=workdir, stores=FakeStores(fake), cache=cache
    )
    assert actions(the_plan) == [("a.txt", "skip", "same digest at the destination (hashed)")]
    entry = cache.get(workdir / "a.txt", os.stat(workdir / "a.txt"))
    assert entry is not None
    assert entry.digest == hash_bytes(b"new!")


def test_a_digest_for_another_size_is_not_trusted(workdir: Path) -> None:
    """Metadata whose taskkit_size disagrees with the blob is ignored: no digest, send."""
    make(workdir, {"a.txt": b"abc"})
    fake = MemoryStore("fake")
    fake.put("c/a.txt", b"abc", file_metadata(hash_bytes(b"abc"), 99))
    the_plan = plan(outputs("a.txt=fake://c/"), workdir=workdir, stores=FakeStores(fake))
    assert actions(the_plan) == [("a.txt", "send", "the destination has no taskkit digest")]


def test_the_manifest_at_dest_is_known_and_not_an_entry(
    memory: None, stores: Stores, workdir: Path
) -> None:
    """The manifest listed under DEST is the publication's, not a file to compare."""
    make(workdir, {"a.txt": b"a"})
    store, _ = stores.open("memory://dest/")
    store.put(f"/dest/{MANIFEST_NAME}", b"{}", {})
    the_plan = plan(outputs("a.txt=memory://dest/"), workdir=workdir, stores=stores)
    (publication,) = the_plan.publications
    assert isinstance(publication.manifest, RemoteFile)
    assert publication.manifest.key == f"/dest/{MANIFEST_NAME}"
    assert [e.name for e in publication.entries] == ["a.txt"]


def test_one_file_named_twice_for_one_dest_is_one_entry(
    memory: None, stores: Stores, workdir: Path
) -> None:
    """Overlapping patterns that give a file the same name under one DEST plan it once."""
    make(workdir, {"out/a.txt": b"a", "out/b.txt": b"b"})
    the_plan = plan(
        outputs("out/*.txt=memory://d/", "out/a.txt=memory://d/", "out/=memory://d/"),
        workdir=workdir,
        stores=stores,
    )
    assert [e.name for e in the_plan.entries] == ["a.txt", "b.txt"]
    assert the_plan.problems == ()


def test_two_files_for_one_name_are_a_problem(memory: None, stores: Stores, workdir: Path) -> None:
    """a/x.txt and b/x.txt both to x.txt: the first is planned, the second is a DataError."""
    make(workdir, {"a/x.txt": b"a", "b/x.txt": b"b"})
    the_plan = plan(
        outputs("a/*.txt=memory://d/", "b/*.txt=memory://d/"), workdir=workdir, stores=stores
    )
    assert [e.local for e in the_plan.entries] == ["a/x.txt"]
    (problem,) = the_plan.problems
    assert problem.what == "b/x.txt"
    assert isinstance(problem.error, DataError)
    assert "'a/x.txt' goes to the same name" in str(problem.error)


def test_one_file_to_two_dests_is_planned_for_each(
    memory: None, stores: Stores, workdir: Path
) -> None:
    """Each DEST is its own publication, with its own entries."""
    make(workdir, {"a.txt": b"a"})
    the_plan = plan(
        outputs("a.txt=memory://one/", "*.txt=memory://two/"), workdir=workdir, stores=stores
    )
    assert [p.dest for p in the_plan.publications] == ["memory://one/", "memory://two/"]
    assert [e.url for e in the_plan.entries] == ["memory://one/a.txt", "memory://two/a.txt"]


def test_a_file_with_the_manifest_name_at_the_root_of_dest_is_a_problem(
    memory: None, stores: Stores, workdir: Path
) -> None:
    """A local _taskkit_manifest.json cannot go where the manifest goes; one deeper can."""
    make(workdir, {f"out/{MANIFEST_NAME}": b"{}", f"out/sub/{MANIFEST_NAME}": b"{}"})
    the_plan = plan(outputs("out/**=memory://d/"), workdir=workdir, stores=stores)
    assert [e.name for e in the_plan.entries] == [f"sub/{MANIFEST_NAME}"]
    (problem,) = the_plan.problems
    assert problem.what == f"out/{MANIFEST_NAME}"
    assert isinstance(problem.error, DataError)
    assert "taskkit's manifest" in str(problem.error)


def test_hostile_names_that_staging_could_not_write_back_are_problems(
    memory: None, stores: Stores, workdir: Path
) -> None:
    """A newline, a backslash or bytes that are not UTF-8 in a name: DataError (65), one each;
    spaces, unicode, '#', '%', '?' and '=' are fine."""
    fine = ["with space.txt", "ünï 数据.txt", "hash#1.txt", "100%.txt", "what?.txt", "k=v.txt"]
    make(workdir, {f"out/{n}": n.encode() for n in fine})
    make(workdir, {"out/new\nline.txt": b"n", "out/back\\slash.txt": b"b"})
    with open(os.fsencode(workdir / "out") + b"/bad\xff.txt", "wb") as handle:
        handle.write(b"x")
    the_plan = plan(outputs("out/**=memory://d/"), workdir=workdir, stores=stores)
    assert sorted(e.name for e in the_plan.entries) == sorted(fine)
    problems = {p.what: p.error for p in the_plan.problems}
    assert sorted(problems) == sorted(
        ["out/new\nline.txt", "out/back\\slash.txt", os.fsdecode(b"out/bad\xff.txt")]
    )
    for error in problems.values():
        assert isinstance(error, DataError)
        assert error.exit_code == 65
    assert "not UTF-8" in str(problems[os.fsdecode(b"out/bad\xff.txt")])
    assert "control character" in str(problems["out/new\nline.txt"])
    assert "backslash" in str(problems["out/back\\slash.txt"])


def test_a_glob_matching_nothing_is_input_not_found_unless_allowed(
    memory: None, stores: Stores, workdir: Path
) -> None:
    """No match: InputNotFound (66) mentioning --allow-empty, and still a publication (its
    manifest would list nothing); with allow_empty, no problem."""
    make(workdir, {"other.csv": b"x"})
    request = outputs("*.txt=memory://d/")
    the_plan = plan(request, workdir=workdir, stores=stores)
    (problem,) = the_plan.problems
    assert problem.what == "*.txt"
    assert isinstance(problem.error, InputNotFound)
    assert problem.error.exit_code == 66
    assert "--allow-empty" in str(problem.error)
    allowed = plan(request, workdir=workdir, stores=stores, allow_empty=True)
    assert allowed.problems == ()
    assert [(p.dest, p.entries) for p in allowed.publications] == [("memory://d/", ())]


def test_a_glob_whose_matches_all_failed_says_so_once(
    memory: None, stores: Stores, workdir: Path
) -> None:
    """A pattern that matched only what cannot be read (a broken link) has one problem, that
    one, and not also "matches no file", which would be a second line and not true."""
    (workdir / "out").mkdir()
    (workdir / "out" / "b.txt").symlink_to("gone")
    (problem,) = plan(outputs("out/*=memory://d/"), workdir=workdir, stores=stores).problems
    assert isinstance(problem.error, InputNotFound)
    assert "broken symbolic link" in str(problem.error)


def test_a_missing_workdir_is_a_usage_error(stores: Stores, tmp_path: Path) -> None:
    """A working directory that does not exist, or is a file, is refused (64)."""
    (tmp_path / "file").write_bytes(b"x")
    for bad in (tmp_path / "nope", tmp_path / "file"):
        with pytest.raises(UsageError, match="not a directory") as info:
            plan(outputs("*=memory://d/"), workdir=bad, stores=stores)
        assert info.value.exit_code == 64


def test_the_workdir_is_resolved_through_links(
    memory: None, stores: Stores, workdir: Path, tmp_path: Path
) -> None:
    """A workdir given through a link plans as its real path."""
    make(workdir, {"a.txt": b"a"})
    (tmp_path / "via").symlink_to(workdir)
    the_plan = plan(outputs("a.txt=memory://d/"), workdir=tmp_path / "via", stores=stores)
    assert the_plan.workdir == workdir
    assert [e.path for e in the_plan.entries] == [workdir / "a.txt"]


def test_passed_over_paths_are_in_the_plan(
    memory: None, stores: Stores, workdir: Path, tmp_path: Path
) -> None:
    """Links leading out and FIFOs are listed as passed, not as problems or entries."""
    make(workdir, {"out/a.txt": b"a"})
    make(tmp_path, {"elsewhere.txt": b"e"})
    (workdir / "out" / "ext.txt").symlink_to(tmp_path / "elsewhere.txt")
    os.mkfifo(workdir / "out" / "pipe")
    the_plan = plan(outputs("out/*=memory://d/"), workdir=workdir, stores=stores)
    assert [e.name for e in the_plan.entries] == ["a.txt"]
    assert the_plan.problems == ()
    assert sorted(the_plan.passed) == [
        Skipped("out/ext.txt", LEADS_OUT),
        Skipped("out/pipe", "a FIFO, not a file"),
    ]


def test_a_dest_that_cannot_be_opened_or_listed_is_a_problem_of_that_dest(
    memory: None, workdir: Path
) -> None:
    """A container name Azure would refuse is a UsageError before any request; a DEST whose
    listing finds no container is a ConfigError; other DESTs are still planned."""

    class NoContainer(MemoryStore):
        def list(self, key: str) -> list[RemoteFile]:
            raise InputNotFound("the container does not exist")

    make(workdir, {"a.txt": b"a"})
    the_plan = plan(
        outputs("a.txt=az://Bad_Name/x/", "a.txt=fake://gone/", "a.txt=memory://ok/"),
        workdir=workdir,
        stores=FakeStores(NoContainer("fake")),
    )
    assert [p.dest for p in the_plan.publications] == ["memory://ok/"]
    problems = {p.what: p.error for p in the_plan.problems}
    assert isinstance(problems["az://Bad_Name/x/"], UsageError)
    assert "not a valid container name" in str(problems["az://Bad_Name/x/"])
    assert isinstance(problems["fake://gone/"], ConfigError)
    assert problems["fake://gone/"].exit_code == 78
    assert "cannot upload to 'fake://gone/'" in str(problems["fake://gone/"])


def test_path_keys_are_the_stat_caches_keys_and_each_its_own_paths(tmp_path: Path) -> None:
    """The batched keys equal path_key one by one, in order: a directory reached through a
    link resolves (once per directory, never leaking into a neighbour's files of the same
    name), a file that is itself a link keeps its own name, a relative path is absolute."""
    real = tmp_path / "real"
    other = tmp_path / "other"
    make(real, {"a.bin": b"1", "b.bin": b"2"})
    make(other, {"a.bin": b"3"})
    (tmp_path / "via").symlink_to(real)
    (real / "link.bin").symlink_to(real / "a.bin")
    paths = [
        tmp_path / "via" / "a.bin",
        other / "a.bin",
        real / "b.bin",
        tmp_path / "via" / "link.bin",
        real / "a.bin",
        Path(os.path.relpath(other / "a.bin")),
    ]
    keys = path_keys(paths)
    assert keys == [path_key(p) for p in paths]
    assert keys[0] == keys[4] != keys[1]
    assert keys[3].endswith(b"/real/link.bin")


def test_a_plans_shown_names_are_relative_to_the_working_directory(
    memory: None, stores: Stores, workdir: Path
) -> None:
    """Every entry's local name is its path relative to the working directory, as
    os.path.relpath says: for a literal file, files at any depth, and files reached through a
    link to a directory inside it (named by the link, not by its target)."""
    make(workdir, {"out/a.txt": b"a", "out/sub/b.txt": b"b", "c.txt": b"c"})
    (workdir / "out" / "link").symlink_to(workdir / "out" / "sub")
    the_plan = plan(
        outputs("out/**=memory://bucket/x/", "./c.txt=memory://bucket/y/"),
        workdir=workdir,
        stores=stores,
    )
    for entry in the_plan.entries:
        assert entry.local == os.path.relpath(entry.path, workdir)
    assert sorted(e.local for e in the_plan.entries) == [
        "c.txt",
        "out/a.txt",
        "out/link/b.txt",
        "out/sub/b.txt",
    ]


def whole_name_problem(name: str) -> str | None:
    """What _name_problem says, checking the whole name every time (as it did before)."""
    from taskkit.transfer.stage_plan import name_problem

    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return "its name is not UTF-8, which blob names must be"
    if name == MANIFEST_NAME:
        return f"{MANIFEST_NAME} is the name of taskkit's manifest"
    problem = name_problem(name)
    return f"{problem}, so it could not be staged back" if problem else None


def test_names_checked_a_directory_at_a_time_get_the_whole_names_verdict() -> None:
    """Directories remembered as fine never hide a bad file name in them, nor a bad directory
    a fine one: for every name, in any order, the verdict (and its words) is that of checking
    the whole name: slashes, dots, control characters, taskkit's own names, surrogates,
    over-long segments and over-long whole names."""
    seg = "s" * 200
    names = [
        "a/b.txt", "a/b\x01.txt", "a/.taskkit-x", "a/..", "a/.", "a/", "/a/b", "a//b",
        "a\\b/c", "a/b\\c", "a/\udcff", "\udcff/a", "a/" + "n" * 256, "n" * 256 + "/a",
        "x/.taskkit-d/a", "x/.taskkit-d/b", "sub/" + MANIFEST_NAME, MANIFEST_NAME, "plain",
        "/".join([seg] * 4), "/".join([seg] * 19), "/".join([seg] * 20), "é/" + "é" * 100,
        "a/b/c/d.txt", "a/b/c/\x7f", "./a", "../a", "a/../b",
    ]  # fmt: skip
    for order in (names, names[::-1], sorted(names)):
        checked: dict[str, bool] = {}
        for name in order:
            assert _name_problem(name, checked) == whole_name_problem(name), name
    assert whole_name_problem("/".join([seg] * 20)) is not None  # the long case is covered


@pytest.mark.parametrize(
    "rest",
    ["a/b", ".x/b", "a/./b", "a/../b", "a//b", "..", ".", "a/..b", "a/.", "/a", "a/", "...",
     "a/.../b", "b..", ".taskkit/x"],
)  # fmt: skip
@pytest.mark.parametrize("root", ["/w/.bench/data", "/w/data", "/"])
def test_a_shown_name_is_the_relative_path_below_any_working_directory(
    rest: str, root: str
) -> None:
    """The fast way of showing a file below the working directory gives os.path.relpath's
    answer, in a working directory with a dotted name too (which once sent every file the
    slow way) and for rests with '.', '..' or empty segments."""
    from taskkit.transfer.patterns import shown
    from taskkit.transfer.upload_plan import _shown

    below = root.rstrip("/") + "/"
    assert _shown(Path(root), below, below + rest) == shown(Path(root), below + rest)
