"""The directories a stage writes into, each reached from the working directory without
following a link out of it, and held open while files are written there.

A directory is walked to one component at a time from the working directory, each opened
with ``O_NOFOLLOW`` (a missing one is made there, with ``mkdir`` relative to its parent, which
never follows a link either). A link met on the way is followed only when it leads inside the
working directory, and the walk goes on from where it leads; one leading out is refused
(:class:`LeadsOut`). The directory found is held open (an ``O_PATH``
descriptor) and files are written through ``/proc/self/fd/N/NAME``: into that very
directory, even if its path is swapped for a link while a file is being written.

The working directory itself is opened once, when the first directory is walked to, and
every walk starts from that descriptor: a working directory swapped for a link mid-run is
never followed. Before each file, the directory's path is checked to still lead to the
directory held (one ``stat``), and the directory held to still be below the working directory
held (where the kernel says each is now, ``/proc/self/fd``): a directory moved out of the
working directory, even with a link to its new place left behind, is walked to again and
refused. When the path does not lead to the directory a walk finds (a link out, or the
working directory swapped), the file is refused too. Where ``/proc`` is not mounted, files are
written through the path checked just before, and the kernel's view is not consulted.
"""

from __future__ import annotations

import errno
import os
import stat
import threading
from pathlib import Path

__all__ = ["Anchors", "Held", "LeadsOut"]

#: Directories held open at once; beyond, the oldest ones nobody writes into are closed (walked
#: to again when needed).
HELD = 256
#: Links followed inside the working directory on the way to one directory, at most.
_HOPS = 40
_OPEN = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_PROC = "/proc/self/fd"


class LeadsOut(Exception):
    """The directory asked for is reached only through a link out of the working directory."""


class Held:
    """A directory held open (``O_PATH``), its identity, and how many files are being
    written into it now."""

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
        self._held: dict[str, Held] = {}
        self._lock = threading.Lock()
        self._root_fd: int | None = None  # opened at the first walk, held until close()
        self._root_seen = ""  # where the kernel saw it then (/proc/self/fd/N)

    def acquire(self, directory: str) -> tuple[str, bool, Held]:
        """``directory`` as a path to write into (``/proc/self/fd/N`` where it can be) until
        :meth:`release`; whether it was there before this run walked to it (False: made)."""
        entry, existed = self._get(directory)
        return (f"{_PROC}/{entry.fd}" if self.through_proc else directory), existed, entry

    def release(self, held: Held) -> None:
        with self._lock:
            held.users -= 1

    def close(self) -> None:
        with self._lock:
            for entry in self._held.values():
                os.close(entry.fd)
            self._held.clear()
            if self._root_fd is not None:
                os.close(self._root_fd)
                self._root_fd = None

    def _below_root(self, fd: int) -> bool:
        """Whether the directory open at ``fd`` is, as the kernel sees it now, the working
        directory held or below it (True where ``/proc`` cannot tell)."""
        if not self.through_proc or self._root_fd is None:
            return True
        try:
            here = os.readlink(f"{_PROC}/{fd}")
        except OSError:
            return False
        # Where the working directory was when it was opened: if it has moved since, so has
        # every directory below it, and none is there any more.
        seen = self._root_seen
        return here == seen or here.startswith(seen.rstrip("/") + "/")

    def _leads_to(self, directory: str, ident: tuple[int, int]) -> bool:
        try:
            st = os.stat(directory)
        except OSError:
            return False
        return (st.st_dev, st.st_ino) == ident

    def _get(self, directory: str) -> tuple[Held, bool]:
        with self._lock:
            entry = self._held.get(directory)
            if entry is not None:
                entry.users += 1
        if entry is not None:
            if self._leads_to(directory, entry.ident) and self._below_root(entry.fd):
                return entry, True
            with self._lock:  # its path leads elsewhere now: walked to again
                entry.users -= 1
                if self._held.get(directory) is entry and entry.users == 0:
                    del self._held[directory]
                    os.close(entry.fd)
        fd, existed = self._walk(directory)
        st = os.fstat(fd)
        ident = (st.st_dev, st.st_ino)
        if not (self._leads_to(directory, ident) and self._below_root(fd)):
            os.close(fd)  # its path leads elsewhere: a link out, or the root swapped
            raise LeadsOut
        fresh = Held(fd, ident)
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
        fd = self._from_root()
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
                    fd = self._from_root()
                    path, i = self.root, 0
                    continue
                last_made, just_made = just_made, False
                os.close(fd)
                fd, path, i = nxt, f"{path}/{name}", i + 1
        except BaseException:
            os.close(fd)
            raise
        return fd, not (parts and last_made)

    def _from_root(self) -> int:
        """A new descriptor of the working directory held (opened by its path the first
        time only)."""
        with self._lock:
            if self._root_fd is None:
                self._root_fd = os.open(self.root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
                if self.through_proc:
                    try:
                        self._root_seen = os.readlink(f"{_PROC}/{self._root_fd}")
                    except OSError:
                        self.through_proc = False
            return os.open(".", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=self._root_fd)

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
