"""Every fsspec store other than Azure's: local files, ``memory://`` and the rest, called
synchronously (fsspec runs async ones on its own loop).

Writes go to a temporary name beside the key, then move into place: on a local filesystem that
is one rename, so a key never holds a partial file. An unconditional local write on Linux makes
the file without a name (``O_TMPFILE``) and names it when it is whole (``linkat``), where the
filesystem allows: nothing is ever left of a killed writer. Conditional writes on local files
hold an exclusive ``flock`` of the directory around check, write and rename, so they are atomic
across processes on one machine; on other fsspec stores a lock of this process only.

Stores that key files by their whole URL (``http://``, ``https://``, where a SAS token rides in
the query string and a password in the userinfo) show a file by that URL once, without its
token and with its password masked (:func:`~taskkit.redaction.shown_url`), and identify it by
the URL without either (:func:`~taskkit.redaction.public_url`); only the requests themselves
carry them.
"""

from __future__ import annotations

import builtins
import contextlib
import datetime
import errno
import os
import re
import stat as stat_module
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from taskkit.exceptions import (
    Conflict,
    InputNotFound,
    PermissionDenied,
    SourceChanged,
    TransientError,
)
from taskkit.redaction import public_url, shown_url
from taskkit.storage.base import (
    RemoteFile,
    Store,
    Writer,
    is_conditional,
    is_temporary,
    is_temporary_name,
    metadata_digest,
    temporary_key,
)
from taskkit.storage.errors import guarded
from taskkit.storage.retry import RetryBudget

if TYPE_CHECKING:
    from fsspec import AbstractFileSystem

__all__ = ["FsspecStore"]

_PROCESS_LOCK = threading.Lock()
#: A key that is a whole URL (fsspec's HTTP filesystem keys files by their URL, query and all).
_WHOLE_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")


class FsspecStore(Store):
    """Any other fsspec filesystem, called synchronously (fsspec runs async ones on its loop)."""

    def __init__(self, fs: AbstractFileSystem | None, protocol: str, retry: RetryBudget) -> None:
        """``fs`` None: the local filesystem, whose fsspec object (and fsspec, a tenth of a
        second of imports) is made only if a call needs more than the os module."""
        super().__init__(retry)
        self._fs = fs
        self.protocol = protocol
        #: Local files are listed, read and checked with the os module directly.
        if fs is None:
            self._local = True
        else:
            from fsspec.implementations.local import LocalFileSystem

            self._local = protocol == "file" and isinstance(fs, LocalFileSystem)
        self.reads_confirmed = self._local  # read() checks the version of the file it read
        self.parallel_files = 1 if self._local else None
        self.lists_a_tree = self._local

    def __repr__(self) -> str:
        return f"FsspecStore({self.protocol!r})"

    @property
    def fs(self) -> AbstractFileSystem:
        if self._fs is None:
            import fsspec

            self._fs = fsspec.filesystem("file")
        return self._fs

    def url(self, key: str) -> str:
        if _WHOLE_URL.match(key):  # http(s): the key is the URL itself, shown once
            return shown_url(key)
        return key if self.protocol == "file" else f"{self.protocol}://{key.lstrip('/')}"

    def identity(self, key: str) -> str:
        if self._local:  # an absolute path (asked once a file when 100,000 files are checked)
            return "file://" + key
        # Without the token or password its URL carries, so a rotated one names the same
        # source.
        return public_url(key) if _WHOLE_URL.match(key) else f"{self.protocol}://{key}"

    @staticmethod
    def _version(info: Mapping[str, Any]) -> str:
        """A change token from what a listing says: the store's etag if it has one, else
        size, modification time and file id. (Local files have theirs from a stat:
        :func:`_local_version`.)"""
        for name in ("etag", "ETag", "generation", "version_id", "VersionId"):
            if info.get(name):
                return str(info[name])
        stamp = next(
            (info[n] for n in ("mtime", "LastModified", "last_modified", "created") if n in info),
            None,
        )
        if isinstance(stamp, datetime.datetime):  # from info(); a listing gives a float
            stamp = stamp.timestamp()
        return f"{info.get('size')}-{stamp}-{info.get('ino', '')}"

    def _file(self, info: Mapping[str, Any]) -> RemoteFile:
        size = int(info.get("size") or 0)
        key = str(info["name"])
        metadata = info.get("metadata")
        digest = metadata_digest(metadata if isinstance(metadata, Mapping) else None, size)
        return RemoteFile(self.url(key), key, size, self._version(info), digest)

    def list(self, key: str) -> list[RemoteFile]:
        if self._local:
            return self.call(lambda: self._local_list(key), f"cannot list {self.url(key)}")
        found = self.call(
            lambda: self.fs.find(key, detail=True, withdirs=False), f"cannot list {self.url(key)}"
        )
        return [self._file(info) for name, info in sorted(found.items()) if not is_temporary(name)]

    def stat(self, key: str) -> RemoteFile:
        what = f"cannot read {self.url(key)}"
        if self._local:
            st = self.call(lambda: os.stat(key), what)
            if stat_module.S_ISDIR(st.st_mode):
                raise InputNotFound(f"{what}: it is a directory (end it with / to stage its files)")
            return self._local_file(key, st)
        info = self.call(lambda: self.fs.info(key), what)
        if info.get("type") == "directory":
            raise InputNotFound(f"{what}: it is a directory (end it with / to stage its files)")
        return self._file(info)

    def read(self, file: RemoteFile, offset: int, length: int) -> bytes:
        what = f"cannot read {file.url}"

        def ranged() -> bytes:
            data = bytes(self.fs.cat_file(file.key, start=offset, end=offset + length))
            if len(data) != length:
                raise SourceChanged(f"{what}: it changed while being read")
            return data

        def local() -> bytes:
            fd = os.open(file.key, os.O_RDONLY | os.O_CLOEXEC)
            try:
                data = os.pread(fd, length, offset)
                while len(data) < length:  # a short read is not yet the end of the file
                    more = os.pread(fd, length - len(data), offset + len(data))
                    if not more:
                        raise SourceChanged(f"{what}: it changed while being read")
                    data += more
                # The file read is still the version listed, after the read: what confirm()
                # would ask of the path, asked of the very file the bytes came from.
                if _local_version(os.fstat(fd)) != file.version:
                    raise SourceChanged(
                        f"{what}: it changed while being read; a new attempt will see it"
                    )
            finally:
                os.close(fd)
            return data

        if self._local:
            # Local I/O has nothing transient to wait out: translated, not retried.
            return guarded(local, what)
        return self.call(ranged, what)

    def confirm(self, file: RemoteFile) -> None:
        if self.stat(file.key).version != file.version:
            raise SourceChanged(
                f"cannot read {file.url}: it changed while being read; a new attempt will see it"
            )

    # -- local files, without fsspec's per-file dictionaries -------------------------------------
    # The same files, names, order and versions as fsspec's LocalFileSystem would give (a link
    # is listed as a file, its size and version those of its target: what a read of it sees),
    # at a fraction of the cost: a listing of 100,000 files builds no dictionary per file.

    def _local_file(self, key: str, st: os.stat_result) -> RemoteFile:
        version = _local_version(st)
        return RemoteFile(key, key, st.st_size, version, None)

    def _local_list(self, key: str) -> builtins.list[RemoteFile]:
        root = key.rstrip("/") or "/"
        try:
            top = os.stat(root)
        except FileNotFoundError:
            return []
        if not stat_module.S_ISDIR(top.st_mode):
            return [] if is_temporary(root) else [self._local_file(root, top)]
        found: builtins.list[RemoteFile] = []  # made at once: no stat result is kept per file
        pending = [root]
        while pending:
            directory = pending.pop()
            try:
                with os.scandir(directory) as entries:
                    for item in entries:
                        if item.is_dir(follow_symlinks=False):
                            pending.append(item.path)
                            continue
                        try:
                            st = item.stat()
                        except OSError:
                            # A dangling link, a loop of links: listed (as fsspec lists them),
                            # so that reading it fails for that file alone, naming it.
                            try:
                                st = item.stat(follow_symlinks=False)
                            except FileNotFoundError:
                                continue  # gone since the directory was read
                        if not is_temporary_name(item.name):
                            path, version = item.path, _local_version(st)
                            found.append(RemoteFile(path, path, st.st_size, version, None))
            except (FileNotFoundError, NotADirectoryError):
                continue  # gone (or replaced by a file) since its parent was read
            except PermissionError as exc:
                # A directory that cannot be read fails the whole listing: a prefix listed
                # without it would stage an input with files missing, and remove the files
                # staged from them as if their blobs were gone.
                raise PermissionDenied(
                    f"cannot list {self.url(key)}: {directory!r} may not be read",
                    path=directory,
                    errno=exc.errno,
                ) from exc
        found.sort()  # by key: a local file's url is its key, and keys are unique
        return found

    def load(self, key: str) -> tuple[bytes, str] | None:
        what = f"cannot read {self.url(key)}"

        def read() -> tuple[bytes, str] | None:
            try:
                if self.protocol == "file":  # the bytes and the version of one open file
                    with open(key, "rb") as handle:
                        st = os.fstat(handle.fileno())
                        data = handle.read()
                    return data, _local_version(st)
                before = self._version(self.fs.info(key))
                data = bytes(self.fs.cat_file(key))
                after = self._version(self.fs.info(key))
            except FileNotFoundError:
                return None
            if after != before:
                raise TransientError(f"{what}: it changed while being read")
            return data, after

        return self.call(read, what)

    # Writes go to a temporary name beside the key, then move into place: on a local
    # filesystem that is one rename, so the key never holds a partial file.

    def _published(self, temp: str, key: str) -> str:
        if self._local_key(key):
            os.rename(temp, key)
            return _local_version(os.stat(key))
        self.fs.mv(temp, key)
        return self._version(self.fs.info(key))

    def _local_key(self, key: str) -> bool:
        """Whether ``key`` is a local path the OS is called on directly: fsspec's local
        filesystem adds a dozen calls to each open, write and move, the cost of a small file."""
        return self._local and os.path.isabs(key)

    def _write(self, key: str, data: bytes, after: int | None = None) -> str:
        if self._local_key(key):
            if after is None:
                version = _write_nameless(key, data)
                if version is not None:
                    return version
            temp = temporary_key(key)
            _write_local(temp, key, data, after)
            return self._published(temp, key)
        temp = temporary_key(key)
        self.fs.makedirs(self.fs._parent(key), exist_ok=True)
        self.fs.pipe_file(temp, data)
        return self._published(temp, key)

    def _locked(self, key: str) -> contextlib.AbstractContextManager[object]:
        return _flocked(self.fs._parent(key)) if self.protocol == "file" else _PROCESS_LOCK

    def _check(self, key: str, if_match: str | None, if_absent: bool, what: str) -> int:
        """Raise :class:`Conflict` unless the file at ``key`` meets the condition; the
        modification time (ns) of the file there, 0 for none. Called under :meth:`_locked`."""
        try:
            if self._local_key(key):
                st = os.stat(key)
                version, mtime_ns = _local_version(st), st.st_mtime_ns
            else:
                info = self.fs.info(key)
                version = self._version(info)
                mtime_ns = int(float(info.get("mtime") or 0) * 1e9)
        except FileNotFoundError:
            if if_match is not None:
                raise Conflict(f"{what}: another writer changed it first (it is gone)") from None
            return 0
        if if_absent or version != if_match:
            shown = "it exists" if if_absent else f"it is version {version}, not {if_match}"
            raise Conflict(f"{what}: another writer changed it first ({shown})")
        return mtime_ns

    def put(
        self,
        key: str,
        data: bytes,
        metadata: Mapping[str, str],
        *,
        if_match: str | None = None,
        if_absent: bool = False,
    ) -> str:
        what = f"cannot write {self.url(key)}"
        if not is_conditional(if_match, if_absent):
            return self.call(lambda: self._write(key, data), what)

        def attempt() -> str:
            with self._locked(key):
                return self._write(key, data, self._check(key, if_match, if_absent, what))

        return self._settle(lambda a: self.call(a, what), attempt, lambda: self._holding(key, data))

    def writer(self, key: str) -> Writer:
        return _StreamWriter(self, key)

    def delete(self, key: str, *, if_match: str | None = None) -> None:
        what = f"cannot delete {self.url(key)}"
        if not is_conditional(if_match, False):

            def remove() -> None:
                with contextlib.suppress(FileNotFoundError):
                    self.fs.rm_file(key)

            return self.call(remove, what)

        def attempt() -> bool:
            with self._locked(key):
                self._check(key, if_match, False, what)
                self.fs.rm_file(key)
            return True

        self._settle(lambda a: self.call(a, what), attempt, lambda: self._gone(key))
        return None

    def append(self, key: str, offset: int, data: bytes) -> None:
        what = f"cannot write {self.url(key)}"

        def add() -> None:
            if offset == 0:
                self.fs.makedirs(self.fs._parent(key), exist_ok=True)
                self.fs.pipe_file(key, data)
                return
            size = self.fs.size(key)
            if size == offset + len(data):
                return  # an earlier try of this very append landed after all
            if size != offset:
                raise SourceChanged(f"{what}: it holds {size} bytes, not {offset}")
            with self.fs.open(key, "ab") as handle:
                handle.write(data)

        self.call(add, what)


class _StreamWriter(Writer):
    """Blocks written in order to one temporary file, moved into place by the commit."""

    def __init__(self, store: FsspecStore, key: str) -> None:
        self.store = store
        self.key = key
        self.temp = temporary_key(key)
        self.what = f"cannot write {store.url(key)}"
        self._handle: Any = None

    def _open(self) -> Any:
        if self._handle is None:
            fs = self.store.fs
            fs.makedirs(fs._parent(self.key), exist_ok=True)
            self._handle = fs.open(self.temp, "wb")
        return self._handle

    def write(self, block_id: str, data: bytes) -> None:
        # Not retried: a stream cannot take a block twice. The whole file is tried again.
        guarded(lambda: self._open().write(data), self.what)

    def commit(self, block_ids: Sequence[str], metadata: Mapping[str, str]) -> str:
        def publish() -> str:
            self._open().close()
            return self.store._published(self.temp, self.key)

        return guarded(publish, self.what)

    def abort(self) -> None:
        with contextlib.suppress(Exception):
            if self._handle is not None:
                self._handle.close()
            self.store.fs.rm_file(self.temp)


def _local_version(st: os.stat_result) -> str:
    """A local file's version: its size, mtime, inode and ctime (the times in nanoseconds:
    whole numbers print three times faster than floats, and are exact)."""
    return f"{st.st_size}-{st.st_mtime_ns}-{st.st_ino}-{st.st_ctime_ns}"


def _write_local(temp: str, key: str, data: bytes, after: int | None) -> None:
    """Write ``data`` to ``temp``, beside ``key`` (whose directory is made if need be): one
    open, write and close."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC
    try:
        fd = os.open(temp, flags, 0o666)
    except (FileNotFoundError, NotADirectoryError):
        os.makedirs(os.path.dirname(key), exist_ok=True)  # the first file of a directory
        fd = os.open(temp, flags, 0o666)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        if after is not None:
            # A local version is size, mtime and inode, and inodes are reused: with a coarse
            # clock, A -> B -> A' could show A's version again. A conditional write is
            # stamped later than the file it replaces, so its version is new.
            stamp = max(time.time_ns(), after + 1000)
            os.utime(fd, ns=(stamp, stamp))
    finally:
        os.close(fd)


#: Why making a nameless file (``O_TMPFILE``) or naming it through ``/proc`` may fail where
#: the filesystem, kernel or sandbox does not do it: then a temporary name is used instead.
_NAMELESS_UNSUPPORTED = frozenset(
    {
        errno.EOPNOTSUPP,
        errno.EISDIR,
        errno.EINVAL,
        errno.ENOENT,
        errno.ENOTDIR,
        errno.EXDEV,
        errno.EPERM,
    }
)


def open_nameless(directory: str, *, make: bool = True) -> int | None:
    """A new file without a name in ``directory`` (``O_TMPFILE``, the directory made if need
    be and ``make``), open for reading and writing; None where this cannot be done (see
    :data:`_NAMELESS_UNSUPPORTED`). A file that is never named (:func:`name_nameless`) is
    never seen, and a killed writer leaves nothing behind."""
    flags = getattr(os, "O_TMPFILE", 0)
    if not flags:
        return None
    flags |= os.O_RDWR | os.O_CLOEXEC
    try:
        try:
            return os.open(directory, flags, 0o666)
        except FileNotFoundError:
            if not make:
                raise
            os.makedirs(directory, exist_ok=True)  # the first file of a directory
            return os.open(directory, flags, 0o666)
    except OSError as exc:
        if exc.errno in _NAMELESS_UNSUPPORTED:
            return None
        raise


def name_nameless(fd: int, path: str) -> bool:
    """Give the nameless file ``fd`` the name ``path``, which must not be taken
    (``FileExistsError`` if it is); False where naming through ``/proc`` cannot be done."""
    # linkat(AT_SYMLINK_FOLLOW) of the descriptor's /proc link: os.link calls linkat only
    # when given a directory descriptor (ignored for an absolute path).
    try:
        os.link(f"/proc/self/fd/{fd}", path, src_dir_fd=fd, follow_symlinks=True)
    except FileExistsError:
        raise
    except OSError as exc:
        if exc.errno in _NAMELESS_UNSUPPORTED:
            return False
        raise
    return True


def _write_nameless(key: str, data: bytes) -> str | None:
    """Write ``data`` to a file without a name in ``key``'s directory (:func:`open_nameless`),
    then give it ``key``'s name (:func:`name_nameless`, or a link at its temporary name
    renamed over ``key`` when the name is taken); the version written. It costs a third less
    than a file created under a temporary name and renamed. None where this cannot be done:
    the caller writes through the temporary name."""
    fd = open_nameless(os.path.dirname(key))
    if fd is None:
        return None
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        try:
            if not name_nameless(fd, key):
                return None
        except FileExistsError:  # a new version of the file: replaced in one rename
            temp = temporary_key(key)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp)  # left by a killed writer
            if not name_nameless(fd, temp):
                return None
            try:
                os.rename(temp, key)
            except OSError as exc:
                if exc.errno in _NAMELESS_UNSUPPORTED:
                    return None
                raise
        return _local_version(os.fstat(fd))  # the file named, as it is now (its ctime too)
    finally:
        os.close(fd)


@contextlib.contextmanager
def _flocked(directory: str) -> Iterator[None]:
    """An exclusive ``flock`` of ``directory`` for the block: local conditional writes in it
    are serialized across processes (and threads: each holder opens it anew). The kernel drops
    it when the holder dies, so a crash leaves no stale lock. Not for network filesystems."""
    import fcntl

    os.makedirs(directory, exist_ok=True)
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock
