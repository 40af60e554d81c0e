"""taskkit.function.pathcontent: a Path argument is keyed by the content it names, through the
stat-cache, never by its name."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import pytest

from taskkit.content.hashing import hash_file
from taskkit.content.statcache import StatCache
from taskkit.content.walk import absolute
from taskkit.exceptions import InputNotFound
from taskkit.function.canonical import Encoder, Unkeyable, digest_of
from taskkit.function.pathcontent import NoContent, PathContent, path_content


def key(value: object, cache: StatCache | None = None) -> str:
    return str(digest_of(value, cache=cache))


def tree(root: Path, files: dict[str, bytes]) -> Path:
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return root


def test_a_file_keys_by_its_content_not_its_name(tmp_path: Path) -> None:
    """Two names with the same bytes key alike; changing a byte changes the key."""
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    a.write_bytes(b"x,y\n1,2\n")
    b.write_bytes(b"x,y\n1,2\n")
    before = key(a)
    assert before == key(b)
    a.write_bytes(b"x,y\n1,3\n")
    assert key(a) != before


def test_a_directory_keys_by_its_tree(tmp_path: Path) -> None:
    """Renaming, moving, adding or editing a file inside changes the key; an empty directory
    added does not (trees are files, as in git); a link keys as its target's content."""
    root = tree(tmp_path / "ref", {"a.txt": b"1", "sub/b.txt": b"2", "sub/c.txt": b"3"})
    before = key(root)
    assert key(root) == before
    (root / "sub" / "c.txt").rename(root / "sub" / "d.txt")
    renamed = key(root)
    assert renamed != before
    (root / "sub" / "d.txt").rename(root / "d.txt")
    moved = key(root)
    assert moved not in (before, renamed)
    (root / "empty").mkdir()
    assert key(root) == moved
    (root / "a.txt").write_bytes(b"changed")
    edited = key(root)
    assert edited != moved
    (root / "e.txt").write_bytes(b"")
    assert key(root) != edited
    copy_root = tree(tmp_path / "copy", {"x": b"1"})
    dangling = tmp_path / "dangling"
    dangling.mkdir()
    (dangling / "gone").symlink_to(tmp_path / "nowhere")
    with pytest.raises(InputNotFound, match="broken symbolic link"):
        key(dangling)
    link_root = tmp_path / "links"
    link_root.mkdir()
    (link_root / "x").symlink_to(copy_root / "x")
    assert key(link_root) == key(copy_root)


def test_an_empty_file_and_an_empty_directory_differ(tmp_path: Path) -> None:
    """Kinds are part of the key."""
    (tmp_path / "f").write_bytes(b"")
    (tmp_path / "d").mkdir()
    assert key(tmp_path / "f") != key(tmp_path / "d")
    assert key(tmp_path / "f") != key(b"")


def test_a_touch_without_change_keeps_the_key_and_unchanged_files_are_not_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through the stat-cache: a second key of an unchanged tree reads no file; a touched file
    is read again and keys the same."""
    root = tree(tmp_path / "ref", {"a": b"1" * 1000, "sub/b": b"2" * 1000})
    reads: list[str] = []
    real = os.open

    def counting(path: str, flags: int, *args: int, **kwargs: int) -> int:
        if str(path).startswith(str(root)):  # a file of the tree opened to be read
            reads.append(str(path))
        return real(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", counting)
    with StatCache.open(tmp_path / "cache", clock=lambda: 2**62) as cache:
        first = key(root, cache)
        assert len(reads) == 2
        assert key(root, cache) == first
        assert len(reads) == 2  # both answered by the cache
        os.utime(root / "a", ns=(10**18, 10**18))
        assert key(root, cache) == first
        assert len(reads) == 3  # only the touched file was read


def test_paths_named_are_recorded(tmp_path: Path) -> None:
    """The encoder records each Path met, anywhere in the value: absolute name, files, size."""
    root = tree(tmp_path / "ref", {"a": b"12", "b/c": b"345"})
    encoder = Encoder()
    one = root / "a"
    encoder.encode({"inputs": [root, one]})
    found = sorted(encoder.paths.values())
    assert [(p.abspath, p.files, p.size) for p in found] == [
        (absolute(str(root)), 2, 5),
        (absolute(str(one)), None, 2),
    ]


def test_a_missing_path_is_input_not_found(tmp_path: Path) -> None:
    """A Path that names nothing is InputNotFound (a FileNotFoundError) naming it."""
    with pytest.raises(InputNotFound, match=r"nothing\.csv does not exist") as caught:
        key([tmp_path / "nothing.csv"])
    assert isinstance(caught.value, FileNotFoundError)


def test_a_fifo_path_is_refused(tmp_path: Path) -> None:
    """A Path to something that is neither a file nor a directory has no content to key."""
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(Unkeyable, match="a FIFO, not a file or directory"):
        key(fifo)


def test_the_pieces_are_as_specified(tmp_path: Path) -> None:
    """A file's piece is 'Pf' and its taskkit digest; a tree's is 'Pd', the count, then each
    sorted relative name and its content, length-prefixed."""
    root = tree(tmp_path / "ref", {"b": b"2", "a/c": b"3"})
    piece, content = path_content(str(root / "b"))
    assert piece == b"Pf" + hash_file(root / "b").digest.value
    assert content == PathContent(absolute(str(root / "b")), None, 1)
    piece, content = path_content(str(root))
    u64 = struct.Struct("<Q").pack
    expected = b"Pd" + u64(2)
    for name in ("a/c", "b"):
        digest = hash_file(root / name).digest.value
        expected += b"s" + u64(len(name)) + name.encode() + b"c" + u64(17) + b"f" + digest
    assert piece == expected
    assert content == PathContent(absolute(str(root)), 2, 2)


def test_what_is_neither_file_nor_directory_has_no_content(tmp_path: Path) -> None:
    """A FIFO named directly is NoContent; one inside a tree is there by name and kind."""
    os.mkfifo(tmp_path / "pipe")
    with pytest.raises(NoContent, match="a FIFO, not a file or directory"):
        path_content(str(tmp_path / "pipe"))
    piece, content = path_content(str(tmp_path))
    assert b"pipe" in piece
    assert b"oa FIFO" in piece
    assert content.files == 0
