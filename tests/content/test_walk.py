"""taskkit.content.walk: every regular file once, in path order; nothing blocks, nothing loops."""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

import pytest

from taskkit.content.walk import Failed, FileEntry, Skipped, walk
from taskkit.exceptions import InputNotFound, MisuseError


def names(results: list[FileEntry | Skipped | Failed]) -> list[str]:
    return [r.path for r in results]


def test_directories_are_walked_in_full_path_byte_order(tmp_path: Path) -> None:
    """A directory sorts as if its name ended in '/', so files come out in full-path order."""
    for rel in ["a/x", "a-b", "a0", "b/c/d", "B", "a/\u00e9"]:
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(rel)
    results = list(walk([tmp_path]))
    got = names(results)
    assert got == sorted(got, key=lambda s: s.encode())
    assert [os.path.relpath(p, tmp_path) for p in got] == [
        "B",
        "a-b",
        "a/x",
        "a/\u00e9",
        "a0",
        "b/c/d",
    ]
    assert all(isinstance(r, FileEntry) and r.root == 0 for r in results)


def test_explicit_paths_keep_their_order_and_spelling(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Named files come out as named, each tagged with its argument's index."""
    for n in "zab":
        (tmp_path / n).write_text(n)
    monkeypatch.chdir(tmp_path)
    results = list(walk(["z", "./a", "b"]))
    assert names(results) == ["z", "./a", "b"]
    assert [r.root for r in results if isinstance(r, FileEntry)] == [0, 1, 2]
    assert all(os.path.isabs(r.abspath) for r in results if isinstance(r, FileEntry))


def test_special_files_are_skipped_without_opening_them(tmp_path: Path) -> None:
    """A FIFO (which would block on open), a socket and a device are skipped with a reason."""
    os.mkfifo(tmp_path / "fifo")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(tmp_path / "sock"))
    try:
        results = list(walk([tmp_path, "/dev/null"]))
    finally:
        sock.close()
    reasons = {r.path: r.reason for r in results if isinstance(r, Skipped)}
    assert "FIFO" in reasons[str(tmp_path / "fifo")]
    assert "socket" in reasons[str(tmp_path / "sock")]
    assert "character device" in reasons["/dev/null"]


def test_symlink_loops_do_not_hang(tmp_path: Path) -> None:
    """Links to an ancestor are skipped; a cycle of links is a failure of that path."""
    (tmp_path / "d" / "sub").mkdir(parents=True)
    (tmp_path / "d" / "sub" / "f").write_text("f")
    (tmp_path / "d" / "sub" / "up").symlink_to("..")
    (tmp_path / "d" / "self").symlink_to("self")
    (tmp_path / "d" / "l1").symlink_to("l2")
    (tmp_path / "d" / "l2").symlink_to("l1")
    results = list(walk([tmp_path / "d"]))
    by_path = {os.path.relpath(r.path, tmp_path): r for r in results}
    assert isinstance(by_path["d/sub/f"], FileEntry)
    assert isinstance(by_path["d/sub/up"], Skipped)
    for loop in ("d/self", "d/l1", "d/l2"):
        failure = by_path[loop]
        assert isinstance(failure, Failed)
        assert "symbolic links" in str(failure.error)


def test_links_to_files_and_directories_are_followed(tmp_path: Path) -> None:
    """A link to a file is that file; a link to a directory elsewhere is walked."""
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "x").write_text("x")
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "to_other").symlink_to(tmp_path / "other")
    (tmp_path / "d" / "to_x").symlink_to(tmp_path / "other" / "x")
    got = [os.path.relpath(p, tmp_path) for p in names(list(walk([tmp_path / "d"])))]
    assert got == ["d/to_other/x", "d/to_x"]


def test_broken_link_and_missing_path_are_failures(tmp_path: Path) -> None:
    """A dangling link says so; a missing path is InputNotFound."""
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    results = list(walk([tmp_path / "missing", tmp_path]))
    assert isinstance(results[0], Failed)
    assert isinstance(results[0].error, InputNotFound)
    assert isinstance(results[1], Failed)
    assert "broken symbolic link" in str(results[1].error)


def test_nul_in_a_path_is_a_failure_not_a_crash() -> None:
    """A path with a NUL byte cannot exist; it is reported, not raised."""
    (result,) = walk(["a\0b"])
    assert isinstance(result, Failed)


def test_names_that_are_not_utf8_are_walked(tmp_path: Path) -> None:
    """Any byte string a filesystem allows is a file like another."""
    raw = os.fsencode(str(tmp_path)) + b"/bad\xff\nname"
    with open(raw, "wb") as f:
        f.write(b"x")
    (result,) = walk([tmp_path])
    assert isinstance(result, FileEntry)
    assert os.fsencode(result.path) == raw


def test_non_utf8_names_sort_in_byte_order(tmp_path: Path) -> None:
    """Order is by the bytes of the names, as `LC_ALL=C sort` gives it, whatever they encode."""
    base = os.fsencode(str(tmp_path))
    raw_names = [b"\xff", "\ue000".encode(), "\U0001f600".encode(), b"a", b"\xc3\xa9"]
    for raw in raw_names:
        with open(base + b"/" + raw, "wb") as f:
            f.write(raw)
    got = [os.fsencode(r.path)[len(base) + 1 :] for r in walk([tmp_path])]
    assert got == sorted(raw_names)


def test_a_tree_deeper_than_the_recursion_limit_is_walked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Depth is bounded by the filesystem, not by Python's stack."""
    depth = sys.getrecursionlimit() + 100
    monkeypatch.chdir(tmp_path)
    for _ in range(depth):  # relative steps: the full path may exceed PATH_MAX
        os.mkdir("d")
        os.chdir("d")
    with open("leaf", "wb") as f:
        f.write(b"leaf")
    os.chdir(tmp_path)
    try:
        results = list(walk(["d"]))
    finally:
        remove_deep_tree(tmp_path, depth)
    assert len(results) == 1
    assert isinstance(results[0], FileEntry)
    assert results[0].path.count("d/") == depth


def remove_deep_tree(top: Path, depth: int) -> None:
    """Remove top/d/d/.../leaf without recursion (shutil.rmtree, and pytest's cleanup, recurse)."""
    os.chdir(top)
    for _ in range(depth):
        os.chdir("d")
    os.unlink("leaf")
    for _ in range(depth):
        os.chdir("..")
        os.rmdir("d")


def test_one_path_instead_of_a_list_is_a_misuse() -> None:
    """walk("data") would walk d, a, t, a; it is refused instead."""
    with pytest.raises(MisuseError):
        list(walk("data"))  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["plain", "é-accent", "bad-\udcff-byte", "nul\\back", "a\nb"])
def test_fs_encoding_encodes_exactly_as_os_fsencode(name: str) -> None:
    """The fast encoding the hot loops use is os.fsencode's, undecodable bytes included."""
    from taskkit.content.walk import FS_ENCODING, FS_ERRORS

    assert name.encode(FS_ENCODING, FS_ERRORS) == os.fsencode(name)


def test_absolutes_names_each_file_as_absolute_does_resolving_each_directory_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Absolutes gives absolute()'s name for every spelling (relative, ./, .., //, a linked
    directory, the root, an undecodable byte) and calls realpath once per directory."""
    from taskkit.content import walk as walk_module
    from taskkit.content.walk import Absolutes, absolute

    real = tmp_path / "real"
    (real / "sub").mkdir(parents=True)
    (tmp_path / "link").symlink_to(real)
    monkeypatch.chdir(real / "sub")
    spellings = [
        "f",
        "./f",
        "../g",
        "../sub/f",
        str(real) + "//sub//f",
        str(tmp_path / "link" / "sub" / "f"),
        str(tmp_path / "link" / "sub" / ".." / "g"),
        "/etc",
        "/",
        os.fsdecode(b"bad-\xff-name"),
        "link-to-f",
    ]
    os.symlink("f", "link-to-f")  # a link keeps its own name: only its directory resolves
    calls: list[str] = []
    realpath = os.path.realpath

    def counting(path: str) -> str:
        calls.append(path)
        return realpath(path)

    expected = [absolute(p) for p in spellings]
    monkeypatch.setattr(walk_module.os.path, "realpath", counting)
    absolutes = Absolutes()
    assert [absolutes(p) for p in spellings] == expected
    first = len(calls)
    assert first < len(spellings)  # the spellings with one directory shared its realpath
    assert [absolutes(p) for p in spellings * 2] == expected * 2
    assert len(calls) == first  # every directory was resolved once only


def test_a_long_list_of_files_resolves_each_directory_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """walk() of 300 files named one by one in 3 directories resolves 3 directories, and names
    each file as absolute() does."""
    from taskkit.content import walk as walk_module
    from taskkit.content.walk import absolute

    paths = []
    for d in "abc":
        (tmp_path / d).mkdir()
        for i in range(100):
            (tmp_path / d / f"{i}").write_bytes(b"x")
            paths.append(str(tmp_path / d / f"{i}"))
    calls: list[str] = []
    realpath = os.path.realpath
    monkeypatch.setattr(walk_module.os.path, "realpath", lambda p: calls.append(p) or realpath(p))
    results = list(walk(paths, recurse=False))
    assert len(calls) == 3
    monkeypatch.undo()
    assert [r.abspath for r in results if isinstance(r, FileEntry)] == [absolute(p) for p in paths]
