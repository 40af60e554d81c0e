"""Bare loops of the system calls a per-file protocol of taskkit makes, for the floor rows of
``many_files.py``: how near the anchor (``cp -r``, ``cp -al``) any program keeping the same
guarantees could come from Python, with no planning, no records and no progress.

Each loop walks SRC in sorted order (one ``scandir`` per directory) and, for each file:

* ``copy``: what ``cp -r`` does (open, read, close; create, write, close), for scale.
* ``stage``: a cold ``taskkit stage`` of a small file: the listing's stat of the source, the
  plan's stats of the destination and its partial name (both absent), then the source opened,
  read, stat'd and closed, its bytes hashed, a nameless file (``O_TMPFILE``) written and
  named (``linkat``) and stat'd, and the final path stat'd when it is recorded.
* ``link``: the second task on a node, the node cache on: the plan's stats, then under a
  per-version lock file (open, ``flock``, close) the ref read (open, read, close), the object
  read and hashed (its verification), a link at a temporary name, a rename onto the final
  path, a stat. The object stands for its ref too (its first 16 bytes are read as the ref).
* ``upload``: a cold ``taskkit upload`` to a local DEST: the walk's stat, the source opened,
  read, stat'd and closed, hashed, then a nameless file written and named in DEST and stat'd.

Run: ``python bench/floor_loops.py MODE SRC DST`` (DST must not exist).
"""

from __future__ import annotations

import fcntl
import os
import sys

import xxhash

hash_chunk = xxhash.xxh3_128_digest
_READ = os.O_RDONLY | os.O_CLOEXEC
_TMPFILE = getattr(os, "O_TMPFILE", 0) | os.O_RDWR | os.O_CLOEXEC


def files(root: str) -> list[tuple[str, str]]:
    """(directory below ``root``, name) of every file, sorted."""
    found: list[tuple[str, str]] = []
    stack = [""]
    while stack:
        rel = stack.pop()
        with os.scandir(os.path.join(root, rel)) as it:
            entries = sorted(it, key=lambda e: e.name)
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                stack.append(os.path.join(rel, entry.name))
            else:
                found.append((rel, entry.name))
    return sorted(found)


def absent(path: str) -> None:
    try:
        os.stat(path)
    except FileNotFoundError:
        return
    raise SystemExit(f"{path} is there")


def read_whole(path: str) -> bytes:
    fd = os.open(path, _READ)
    try:
        size = os.fstat(fd).st_size
        return os.pread(fd, size, 0)
    finally:
        os.close(fd)


def nameless(directory: str, final: str, data: bytes) -> None:
    fd = os.open(directory, _TMPFILE, 0o666)
    try:
        os.pwrite(fd, data, 0)
        os.link(f"/proc/self/fd/{fd}", final, src_dir_fd=fd, follow_symlinks=True)
        os.fstat(fd)
    finally:
        os.close(fd)


def copy_nameless(todo: list[tuple[str, str]], src: str, dst: str) -> None:
    """Each file read whole, hashed, written without a name and named (stage and upload)."""
    made: set[str] = set()
    for rel, name in todo:
        directory = os.path.join(dst, rel)
        if rel not in made:
            os.makedirs(directory, exist_ok=True)
            made.add(rel)
        data = read_whole(os.path.join(src, rel, name))
        hash_chunk(data)
        nameless(directory, os.path.join(directory, name), data)


def copy(src: str, dst: str) -> None:
    made: set[str] = set()
    for rel, name in files(src):
        if rel not in made:
            os.makedirs(os.path.join(dst, rel), exist_ok=True)
            made.add(rel)
        fd = os.open(os.path.join(src, rel, name), _READ)
        data = os.read(fd, 1 << 20)
        os.close(fd)
        out = os.open(os.path.join(dst, rel, name), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        os.write(out, data)
        os.close(out)


def stage(src: str, dst: str) -> None:
    todo = files(src)
    for rel, name in todo:  # the listing
        os.stat(os.path.join(src, rel, name), follow_symlinks=False)
    for rel, name in todo:  # the plan: not there, no partial
        absent(os.path.join(dst, rel, name))
        absent(os.path.join(dst, rel, f".taskkit-{name}.partial"))
    copy_nameless(todo, src, dst)
    for rel, name in todo:  # recorded: still the file written
        os.stat(os.path.join(dst, rel, name))


def link(src: str, dst: str) -> None:
    todo = files(src)
    locks = os.path.join(dst, ".locks")
    os.makedirs(locks)
    for rel, name in todo:  # the plan: not there, no partial
        absent(os.path.join(dst, rel, name))
        absent(os.path.join(dst, rel, f".taskkit-{name}.partial"))
    made: set[str] = set()
    for i, (rel, name) in enumerate(todo):
        directory = os.path.join(dst, rel)
        if rel not in made:
            os.makedirs(directory, exist_ok=True)
            made.add(rel)
        obj = os.path.join(src, rel, name)
        lock = os.open(os.path.join(locks, str(i)), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)
            ref = os.open(obj, _READ)  # the ref
            os.read(ref, 16)
            os.close(ref)
            hash_chunk(read_whole(obj))  # the verification
            temp = os.path.join(directory, f".taskkit-{name}.{os.getpid()}")
            os.link(obj, temp)
            os.rename(temp, os.path.join(directory, name))
            os.stat(os.path.join(directory, name))
        finally:
            os.close(lock)


def upload(src: str, dst: str) -> None:
    todo = files(src)
    for rel, name in todo:  # the walk
        os.stat(os.path.join(src, rel, name), follow_symlinks=False)
    copy_nameless(todo, src, dst)


MODES = {"copy": copy, "stage": stage, "link": link, "upload": upload}


def main(argv: list[str]) -> int:
    if len(argv) != 3 or argv[0] not in MODES:
        print(f"usage: floor_loops.py {{{','.join(MODES)}}} SRC DST", file=sys.stderr)
        return 2
    mode, src, dst = argv
    if os.path.lexists(dst):
        print(f"floor_loops.py: {dst} exists", file=sys.stderr)
        return 2
    os.makedirs(dst)
    MODES[mode](src, dst)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
