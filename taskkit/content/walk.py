"""Turning the paths a user names into the regular files behind them.

Directories are walked depth first. Entries are ordered by the bytes of their name, a directory's
name compared as if it ended in ``/`` (git's index order), so the files of one walk come out in
the byte order of their full paths: the stat-cache reads them back as ranges.

Symbolic links are followed, to files and to directories. A directory that is already being
walked higher up (a link loop) is skipped with a reason, never entered twice; a link that points
nowhere, or into a loop of links, is a failure of that path. FIFOs, sockets and devices are
skipped with a reason and never opened, so nothing here can block.

Nothing here raises for a bad path: each problem is yielded as :class:`Failed` or
:class:`Skipped` in its place, and the walk goes on.
"""

from __future__ import annotations

import os
import stat
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import NamedTuple

from taskkit.exceptions import MisuseError, TaskFailure, from_os_error

__all__ = [
    "FS_ENCODING",
    "FS_ERRORS",
    "Absolutes",
    "Failed",
    "FileEntry",
    "Skipped",
    "absolute",
    "describe_mode",
    "inside",
    "path_error",
    "walk",
]


#: ``name.encode(FS_ENCODING, FS_ERRORS)`` is ``os.fsencode(name)`` for a str, without its
#: Python-level checks: a third of a microsecond saved on each of the many files of a walk.
FS_ENCODING = sys.getfilesystemencoding()
FS_ERRORS = sys.getfilesystemencodeerrors()


class FileEntry(NamedTuple):
    """A regular file found by the walk. ``stat`` is set when the walk had to stat it anyway.

    ``abspath`` is :func:`absolute` of ``path``: the file the kernel opens, with one name however
    it was reached; ``root`` is the index of the argument it came from.
    """

    path: str
    abspath: str
    root: int
    stat: os.stat_result | None = None


class Skipped(NamedTuple):
    """A path that is not a regular file and was passed over, and why."""

    path: str
    reason: str


class Failed(NamedTuple):
    """A path that could not be read, and the error that says why."""

    path: str
    error: TaskFailure


def absolute(path: str) -> str:
    """The absolute name of the file the kernel opens for ``path``: its directory resolved
    (symbolic links and ``..``, which a textual ``os.path.abspath`` gets wrong after a link),
    its own name kept, so a link keeps a name of its own."""
    head, tail = os.path.split(path)
    return os.path.join(os.path.realpath(head or "."), tail)


class Absolutes:
    """:func:`absolute` for many paths in few directories: each directory is resolved once,
    so a list of 100,000 files costs 100,000 string joins instead of 100,000 ``realpath``
    calls (four ``lstat`` each). For the length of one walk: a link made meanwhile in place
    of a directory already resolved is not seen."""

    def __init__(self) -> None:
        self._resolved: dict[str, str] = {}

    def __call__(self, path: str) -> str:
        if os.altsep is not None:  # Windows: two separators; no fast path
            return absolute(path)
        head, sep, tail = path.rpartition(os.sep)
        head = head or sep  # "/name" is in the root, "name" in the current directory ("")
        real = self._resolved.get(head)
        if real is None:
            real = self._resolved[head] = os.path.realpath(head or ".")
        return real + tail if real.endswith(os.sep) else real + os.sep + tail


def inside(root: Path, path: Path) -> bool:
    """Whether ``path`` is ``root`` or below it (both absolute, compared as they are)."""
    return path == root or root in path.parents


def describe_mode(mode: int) -> str:
    """What kind of non-regular file ``mode`` describes, for messages."""
    for test, name in (
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISDIR, "a directory"),
    ):
        if test(mode):
            return name
    return "not a regular file"


def walk(
    paths: Iterable[str | os.PathLike[str]],
    *,
    recurse: bool = True,
) -> Iterator[FileEntry | Skipped | Failed]:
    """The regular files named by ``paths``, in order, directories expanded when ``recurse``."""
    if isinstance(paths, (str, bytes, os.PathLike)):
        raise MisuseError(f"pass a list of paths, not one path: [{paths!r}]")
    absolutes = Absolutes()
    new = tuple.__new__  # FileEntry(...) through its generated __new__ costs five times more
    for root, arg in enumerate(paths):
        path = arg if type(arg) is str else os.fsdecode(arg)
        try:
            st = os.stat(path)
        except (OSError, ValueError) as exc:
            yield Failed(path, path_error(exc, path))
            continue
        if stat.S_ISREG(st.st_mode):
            yield new(FileEntry, (path, absolutes(path), root, st))
        elif stat.S_ISDIR(st.st_mode) and recurse:
            yield from _walk_tree(path, os.path.realpath(path), root, (st.st_dev, st.st_ino))
        else:
            yield Skipped(path, f"{describe_mode(st.st_mode)}, not a regular file")


def path_error(exc: OSError | ValueError, path: str) -> TaskFailure:
    if isinstance(exc, ValueError):  # an embedded NUL byte
        exc = OSError(22, "invalid path (NUL byte)", path)
    exc.filename = path
    if isinstance(exc, FileNotFoundError) and os.path.islink(path):
        exc.strerror = "broken symbolic link"
    return from_os_error(exc, "cannot read")


def _order(entry: os.DirEntry[str]) -> bytes:
    name = entry.name.encode(FS_ENCODING, FS_ERRORS)
    try:
        return name + b"/" if entry.is_dir() else name
    except OSError:
        return name


def _listing(path: str, abspath: str) -> list[os.DirEntry[str]] | Failed:
    try:
        with os.scandir(abspath) as it:
            return sorted(it, key=_order)
    except OSError as exc:
        return Failed(path, path_error(exc, path))


def _walk_tree(
    path: str, abspath: str, root: int, ident: tuple[int, int]
) -> Iterator[FileEntry | Skipped | Failed]:
    """Depth first with a stack of its own, so that no depth of directories can exhaust
    Python's; a directory already on the stack (reached through a link) is not entered."""
    listing = _listing(path, abspath)
    if isinstance(listing, Failed):
        yield listing
        return
    new = tuple.__new__  # FileEntry(...) through its generated __new__ costs five times more
    on_stack = {ident}
    frames = [(os.path.join(path, ""), os.path.join(abspath, ""), iter(listing), ident)]
    while frames:
        prefix, abs_prefix, entries, ident = frames[-1]
        for entry in entries:
            name = entry.name
            try:
                if entry.is_file(follow_symlinks=False):
                    yield new(FileEntry, (prefix + name, abs_prefix + name, root, None))
                    continue
                linked = entry.is_symlink()
                st = entry.stat()  # through a link, to what it names
            except OSError as exc:
                yield Failed(prefix + name, path_error(exc, prefix + name))
                continue
            child = prefix + name
            kind = st.st_mode
            if stat.S_ISREG(kind):
                yield FileEntry(child, abs_prefix + name, root, st)
            elif stat.S_ISDIR(kind):
                child_ident = (st.st_dev, st.st_ino)
                if child_ident in on_stack:
                    yield Skipped(child, "a link back to a directory being walked (a loop)")
                    continue
                # A linked directory is entered under its real name, so that every file has
                # one absolute name (see absolute()) however the walk reached it.
                real = os.path.realpath(abs_prefix + name) if linked else abs_prefix + name
                sub = _listing(child, real)
                if isinstance(sub, Failed):
                    yield sub
                    continue
                on_stack.add(child_ident)
                frames.append((child + os.sep, real + os.sep, iter(sub), child_ident))
                break
            else:
                yield Skipped(child, f"{describe_mode(kind)}, not a regular file")
        else:
            frames.pop()
            on_stack.discard(ident)
