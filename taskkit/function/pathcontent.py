"""What a ``pathlib.Path`` argument is keyed by: the content it names, never its name.

A regular file is its taskkit digest. A directory is its tree: the relative names (``/``
separated, sorted by their UTF-8 bytes) of the files under it, each with its digest. Links are
followed as :func:`taskkit.content.walk.walk` follows them, so a link is keyed as what it points
to; a FIFO, a socket or a link back up the tree is in the tree by its name and kind, without
content; empty directories are not part of a tree (as in git). Every file is read through the
stat-cache, so an unchanged file is not read again and a touched one is read and keys the same.

The bytes :func:`path_content` returns are a piece of :mod:`taskkit.function.canonical`'s
encoding (``Pf`` + the 16-byte digest, or ``Pd`` + the count + each name and content, length
prefixed): changing them changes every key holding a path.
"""

from __future__ import annotations

import os
import stat
import struct
from typing import NamedTuple

from taskkit.content.hashing import FileDigest, hash_file, hash_paths
from taskkit.content.statcache import StatCache
from taskkit.content.walk import Failed, absolute, describe_mode
from taskkit.exceptions import InputNotFound, from_os_error

__all__ = ["NoContent", "PathContent", "path_content"]

_U64 = struct.Struct("<Q")


class NoContent(Exception):
    """The path names something that is neither a file nor a directory (a FIFO, a device)."""


class PathContent(NamedTuple):
    """What a ``pathlib.Path`` value named: its absolute name and how much it held."""

    abspath: str
    files: int | None  # None for a file, the number of files in a directory's tree
    size: int


def path_content(name: str, *, cache: StatCache | None = None) -> tuple[bytes, PathContent]:
    """The encoded content of the file or directory ``name``, and what it held.

    A missing path is :class:`~taskkit.exceptions.InputNotFound`; one that cannot be read is
    the :class:`~taskkit.exceptions.TaskFailure` the content wing gives; one that is neither a
    file nor a directory is :class:`NoContent`.
    """
    abspath = os.path.normpath(absolute(name))  # "." and ".." after the resolved head
    try:
        mode = os.stat(name).st_mode
    except OSError as exc:
        if isinstance(exc, FileNotFoundError):
            raise InputNotFound(f"{name} does not exist", path=name, errno=exc.errno) from exc
        exc.filename = name
        raise from_os_error(exc, "cannot read") from exc
    except ValueError:  # a NUL byte in the name
        raise NoContent("a path with a NUL byte names nothing") from None
    if stat.S_ISREG(mode):
        found = hash_file(name, cache=cache)
        return b"Pf" + found.digest.value, PathContent(abspath, None, found.size)
    if stat.S_ISDIR(mode):
        return _tree(name, abspath, cache)
    raise NoContent(f"{name} is {describe_mode(mode)}, not a file or directory")


def _tree(name: str, abspath: str, cache: StatCache | None) -> tuple[bytes, PathContent]:
    entries: list[tuple[bytes, bytes]] = []
    files = size = 0
    prefix = len(os.path.join(name, ""))  # the walk names each file prefix + relative name
    for result in hash_paths([name], cache=cache):
        if isinstance(result, Failed):
            raise result.error
        relative = result.path[prefix:].replace(os.sep, "/")
        encoded = relative.encode("utf-8", "surrogatepass")
        if isinstance(result, FileDigest):
            files += 1
            size += result.size
            entries.append((encoded, b"f" + result.digest.value))
        else:  # a FIFO, a socket, a link back up the tree: there, but no content
            entries.append((encoded, b"o" + result.reason.encode()))
    entries.sort()
    pieces = [b"Pd", _U64.pack(len(entries))]
    for encoded, content in entries:
        pieces += [b"s", _U64.pack(len(encoded)), encoded, b"c", _U64.pack(len(content)), content]
    return b"".join(pieces), PathContent(abspath, files, size)
