"""The directories a stage writes into, each reached from the working directory without
following a link out of it, and held open while files are written there.

A directory is walked to one component at a time from the working directory, each opened
with ``O_NOFOLLOW`` (a missing one is made there, with ``mkdir`` relative to its parent, which
never follows a link either). A link met on the way is followed only when it leads inside the
working directory, and the walk goes on from where it leads; one leading out is refused
(:class:`LeadsOut`). The directory found is held open (an ``O_PATH``
descriptor) and files are written through ``/proc/self/fd/N/NAME``: into that very
directory, even if its path is swapped for a link while a file is being written.

Before each file, the directory's path is checked to still lead to the directory held (one
``stat``); when it does not (swapped for a link, removed, made again), it is walked to again,
so a file is never reported staged at a path that does not lead to it, and a link out that
appears mid-run is refused from the next file on. Where ``/proc`` is not mounted, files are
written through the path checked just before.
"""

from __future__ import annotations

import errno
import os
import stat
import threading
from pathlib import Path

__all__ = ["Anchors", "LeadsOut"]

#: Directories held open at once; beyond, the least recently used ones nobody writes into
#: are closed (walked to again when needed).
HELD = 256
#: Links followed inside the working directory on the way to one directory, at most.
_HOPS = 40
_OPEN = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_PROC = "/proc/self/fd"


class LeadsOut(Exception):
    """The directory asked for is reached only through a link out of the working directory."""


class _Held:
    __slots__ = ("fd", "ident", "users")

    def __init__(self, fd: int, ident: tuple[int, int]) -> None:
        self.fd = fd
        self.ident = ident
        self.users = 0


class Anchors:
    """The directories of one run below ``root`` (the working directory, resolved). Walking
    to one raises :class:`LeadsOut` for a link out, and the ``OSError`` (naming the component)
    of one that cannot be made or opened."""

    def __init__(self, root: Path) -> None:
        self.root = str(root)
        self.through_proc = os.path.isdir(_PROC)
        self._held: dict[str, _Held] = {}
        self._lock = threading.Lock()

    def acquire(self, directory: str) -> tuple[str, bool, _Held]:
        """``directory`` as a path to write into (``/proc/self/fd/N`` where it can be) until
        :meth:`release`; whether it was there before this run walked to it (False: made)."""
        entry, existed = self._get(directory)
        return (f"{_PROC}/{entry.fd}" if self.through_proc else directory), existed, entry

    def release(self, held: _Held) -> None:
        with self._lock:
            held.users -= 1

    def close(self) -> None:
        with self._lock:
            for entry in self._held.values():
                os.close(entry.fd)
            self._held.clear()

    def _get(self, directory: str) -> tuple[_Held, bool]:
        with self._lock:
            entry = self._held.get(directory)
            if entry is not None:
                entry.users += 1
        if entry is not None:
            try:
                st = os.stat(directory)
                if (st.st_dev, st.st_ino) == entry.ident:
                    return entry, True
            except OSError:
                pass
            with self._lock:  # its path leads elsewhere now: walked to again
                entry.users -= 1
                if self._held.get(directory) is entry and entry.users == 0:
                    del self._held[directory]
                    os.close(entry.fd)
        fd, existed = self._walk(directory)
        st = os.fstat(fd)
        fresh = _Held(fd, (st.st_dev, st.st_ino))
        fresh.users = 1
        with self._lock:
            old = self._held.pop(directory, None)
            if old is not None and old.users == 0:
                os.close(old.fd)
            self._held[directory] = fresh
            if len(self._held) > HELD:
                self._trim()
        return fresh, existed

    def _trim(self) -> None:
        """Close the oldest held directories nobody is writing into (with the lock held)."""
        for name in list(self._held):
            if len(self._held) <= HELD // 2:
                return
            entry = self._held[name]
            if entry.users == 0:
                del self._held[name]
                os.close(entry.fd)

    def _walk(self, directory: str) -> tuple[int, bool]:
        """An ``O_PATH`` descriptor of ``directory``, reached from the root one component at a
        time; whether its last component was there already."""
        parts = _below(self.root, directory)
        if parts is None:
            raise LeadsOut
        fd = os.open(self.root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        path, i, hops = self.root, 0, 0
        just_made = last_made = False
        try:
            while i < len(parts):
                name = parts[i]
                try:
                    nxt = os.open(name, _OPEN, dir_fd=fd)
                except FileNotFoundError:
                    try:
                        os.mkdir(name, 0o777, dir_fd=fd)
                        just_made = True
                    except FileExistsError:
                        pass  # made meanwhile, or a link put there: the open tells
                    except OSError as exc:
                        exc.filename = f"{path}/{name}"
                        raise
                    continue
                except OSError as exc:
                    if exc.errno not in (errno.ENOTDIR, errno.ELOOP):
                        exc.filename = f"{path}/{name}"
                        raise
                    target = self._link_target(path, name, fd, exc)
                    hops += 1
                    just_made = False
                    if hops > _HOPS:
                        raise LeadsOut from exc
                    # On from where the link leads, inside the root: from the root again.
                    parts = target + parts[i + 1 :]
                    os.close(fd)
                    fd = os.open(self.root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
                    path, i = self.root, 0
                    continue
                last_made, just_made = just_made, False
                os.close(fd)
                fd, path, i = nxt, f"{path}/{name}", i + 1
        except BaseException:
            os.close(fd)
            raise
        return fd, not (parts and last_made)

    def _link_target(self, path: str, name: str, fd: int, exc: OSError) -> list[str]:
        """The components below the root where the link ``name`` (in ``path``) leads; a link
        out, or a component that is not a directory, is refused."""
        try:
            st = os.stat(name, dir_fd=fd, follow_symlinks=False)
        except OSError:
            st = None
        if st is None or not stat.S_ISLNK(st.st_mode):
            exc.filename = f"{path}/{name}"
            raise exc
        parts = _below(self.root, os.path.realpath(f"{path}/{name}"))
        if parts is None:
            raise LeadsOut from exc
        return parts


def _below(root: str, path: str) -> list[str] | None:
    """The components of ``path`` below ``root`` (none for the root itself); None when it
    is not below it."""
    if path == root:
        return []
    head = root.rstrip("/") + "/"
    if not path.startswith(head):
        return None
    return [part for part in path[len(head) :].split("/") if part]
