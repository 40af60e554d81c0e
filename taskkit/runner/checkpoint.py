"""Files that outlive an attempt: the checkpoint directory, and the outputs of finished steps.

Both are restored the same way: from a list of files (a manifest, a step record) staged back
into place, so a file already there with the same content is not fetched again, and a file the
list does not name is not brought back, whatever else lies under the prefix.

The checkpoint directory (``TASKKIT_CHECKPOINT_DIR`` for the command) is uploaded with a
manifest written last, periodically while the command runs and once more when it ends, so a
retry on any node resumes from the last complete sync. A sync names the fingerprint of the
work; a retry of different work starts with an empty directory.

Each attempt syncs into a folder of its own under the checkpoint's prefix (``00003/`` for
attempt 3), alternating between two slots there, ``a/`` and ``b/``; each manifest carries the
sync's number, which goes on from the sync an attempt restored. An upload takes its
destination's manifest away before it changes a file the manifest names, so a sync in
progress (or one stopped half-way: a preemption, a lost node) leaves its own slot without a
manifest and never touches another slot, which holds an earlier complete sync; and two copies
of one task running at once (a node thought lost) never write into the same slot. A restore
takes the manifest with the highest number (the later attempt's on a tie): always one complete
sync, the last one that finished, never a mix. (A checkpoint written before slots, a manifest at
the prefix itself, counts as sync 0.) The directory restored holds exactly that sync's files:
files the sync does not name are removed, so leftovers of a killed attempt on the same node do
not mix in. A sync whose files are not all there is passed over for the one before it.

Once an attempt holds a complete sync of its own, the folders of the attempts before it that
will not sync again (ended, or interrupted and gone: the caller's ``retired``) are removed,
manifests first: the store keeps two copies, not two per attempt.

A checkpoint directory the user names is a subdirectory of the working directory: relative,
without '..', not the working directory itself, and not leaving it through a link. Anything
else would sync files taskkit never produced and restore over them on a retry.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from pathlib import Path

from taskkit.content.walk import inside
from taskkit.exceptions import LinkOut, TaskFailure, UsageError
from taskkit.observer import NullObserver
from taskkit.periodic import Periodic
from taskkit.storage.stores import Stores
from taskkit.transfer.manifest import Manifest
from taskkit.transfer.patterns import Output
from taskkit.transfer.stage import stage
from taskkit.transfer.stage_plan import Input
from taskkit.transfer.summary import Summary
from taskkit.transfer.upload import upload
from taskkit.transfer.upload_plan import MANIFEST_NAME

__all__ = ["Checkpoint", "checkpoint_dir_problem", "confined", "restore"]

_MUST = "must be a subdirectory of the working directory"
#: Where an attempt's syncs go in turn, below its own folder (see the module docstring).
SLOTS = ("a/", "b/")
_SYNC = "sync"  # the manifest's task entry numbering the syncs


def checkpoint_dir_problem(name: str) -> str | None:
    """Why ``name`` cannot be a checkpoint directory (as given, before any path is known)."""
    if not name.strip():
        return f"an empty name is no directory; it {_MUST}"
    if os.path.isabs(name):
        return f"{name!r} is an absolute path; it {_MUST}"
    if ".." in name.replace("\\", "/").split("/"):
        return f"{name!r} holds a '..' segment; it {_MUST}"
    if os.path.normpath(name) == ".":
        return f"{name!r} is the working directory itself; it {_MUST}"
    return None


def confined(workdir: str, name: str) -> str:
    """The checkpoint directory ``name`` below ``workdir``, refused (:class:`UsageError`) if
    it is not a subdirectory of it, also when a link on the way leads elsewhere."""
    problem = checkpoint_dir_problem(name)
    path = os.path.join(workdir, name)
    if problem:
        raise UsageError(f"checkpoint directory {problem}")
    root = Path(os.path.realpath(workdir))
    real = Path(os.path.realpath(path))
    if real == root or not inside(root, real):
        raise LinkOut(
            f"checkpoint directory {name!r} leads to {str(real)!r} through a link; it {_MUST}"
        )
    return path


def restore(
    files: Sequence[tuple[str, str]],
    directory: str | os.PathLike[str],
    *,
    stores: Stores | None = None,
    environ: Mapping[str, str] | None = None,
) -> Summary:
    """Stage each ``(url, path)`` to ``path`` under ``directory``; files already there with
    the same content stay as they are (the stat-cache found in ``environ``). Through
    ``stores`` when given (left open), else through stores of its own. Silent: the caller
    says what the summary means."""
    inputs = [Input(url, path, literal=True) for url, path in files]  # names, never globs
    return stage(
        inputs,
        workdir=directory,
        allow_empty=True,
        stores=stores,
        environ=environ,
        observer=NullObserver(),
    )


class Checkpoint:
    """A local directory mirrored to ``url`` (a prefix) for the work with ``fingerprint``.

    Every restore and sync goes through ``stores`` when given (the run's: left open). Without
    them, the syncs of its ``with`` block share stores of its own, closed when the block ends;
    a restore or sync called outside it opens and closes its own."""

    def __init__(
        self,
        directory: str,
        url: str,
        fingerprint: str,
        *,
        task: dict[str, str | int],
        interval: float,
        warn: Callable[[str], None],
        environ: Mapping[str, str] | None = None,
        stores: Stores | None = None,
        retired: Collection[int] = (),
    ) -> None:
        self.directory = directory
        self.environ = environ  # where the stat-cache is found
        self.url = url if url.endswith("/") else url + "/"
        self.fingerprint = fingerprint
        self.task = {**task, "fingerprint": fingerprint}
        self.interval = interval
        self.warn = warn
        self.restored = 0
        self._lock = threading.Lock()
        self._every = Periodic(interval, self._periodic, "taskkit-checkpoint")
        self._given = stores
        self._own: Stores | None = None  # while the with-block lasts, without given stores
        self._newest: int | None = None  # the number of the last complete sync
        attempt = self.task.get("attempt", 0)
        self._folder = f"{attempt if isinstance(attempt, int) else 0:05d}/"  # this attempt's
        self._turn = 0  # the index in SLOTS of the slot the next sync writes
        self._passed = _OnceEach(warn)  # files a sync passes over, each said once
        self._synced: list[tuple[str, int, int, int, int]] | None = None  # what it held
        self._retired = sorted(set(retired))  # earlier attempts' folders, gone after a sync

    def __repr__(self) -> str:
        return f"Checkpoint({self.directory!r})"

    def restore(self, stores: Stores | None = None) -> int:
        """Bring back the last complete sync of this work, and only it: the directory then
        holds exactly its files. The number of files it holds (through ``stores`` when given,
        else the checkpoint's)."""
        with self._through(stores) as through:
            os.makedirs(self.directory, exist_ok=True)
            files: list[tuple[str, str]] = []
            failure: TaskFailure | None = None
            for (_, _, slot), manifest in self._find(through):
                files = [(self.url + slot + f.name, f.name) for f in manifest.files]
                failure = restore(
                    files, self.directory, stores=through, environ=self.environ
                ).exit_error()
                if failure is None:
                    break
                # A sync whose files are not all there (its folder pruned under it, say):
                # the one before it, which is complete too.
                self.warn(
                    f"checkpoint: sync in {slot!r} cannot be restored ({failure}); an earlier one"
                )
                files = []
            if failure is not None:
                raise failure
        self.restored = len(files)
        # The directory is the sync and nothing else: what a killed attempt wrote after it on
        # this node, or another work's files (none restored), would mix in.
        names = {os.path.join(self.directory, name) for _, name in files}
        kept = []
        for entry in _snapshot(self.directory):
            if entry[0] in names:
                kept.append(entry)
            else:
                with contextlib.suppress(FileNotFoundError):
                    os.remove(entry[0])
        if files:
            self._synced = kept  # the sync itself: nothing to send back
        return self.restored

    def _find(self, stores: Stores) -> list[tuple[tuple[int, int, str], Manifest]]:
        """The complete syncs of this work (number, attempt and slot, and the manifest), the
        last one first; the last one's number is remembered, so that the next sync numbers on
        from it, and its slot is never the next one written."""
        store, key = stores.open(self.url)
        base = key if not key or key.endswith("/") else key + "/"
        found: list[tuple[tuple[int, int, str], Manifest]] = []
        for entry in store.list(key):
            slot = entry.key[len(base) :].removesuffix(MANIFEST_NAME)
            named = entry.key.startswith(base) and entry.key.endswith(MANIFEST_NAME)
            if not named or slot.count("/") > 2:
                continue
            loaded = store.load(entry.key)
            if loaded is None:  # gone since the listing: a sync began there
                continue
            manifest = Manifest.parse(loaded[0], store.url(entry.key))
            if manifest.task.get("fingerprint") != self.fingerprint:
                continue
            number, attempt = manifest.task.get(_SYNC, 0), manifest.task.get("attempt", 0)
            ranked = (
                number if isinstance(number, int) else 0,
                attempt if isinstance(attempt, int) else 0,
                slot,
            )
            found.append((ranked, manifest))
        found.sort(key=lambda item: item[0], reverse=True)
        self._newest = found[0][0][0] if found else 0
        # Never write over the last complete sync: should it be in this attempt's own folder
        # (a run again under the same attempt number), the next sync goes to the other slot.
        self._turn = 1 if found and found[0][0][2] == self._folder + SLOTS[0] else 0
        return found

    def sync(self) -> None:
        """Upload what changed since the last sync into this attempt's slot that does not hold
        its last complete sync, and publish it there; a failure is a warning."""
        with self._lock:
            now = _snapshot(self.directory)  # before the upload: a change during it shows next
            if not now and not self.restored and self._synced is None:
                return  # nothing was ever there: no manifest to write either
            if now == self._synced:
                return  # unchanged since this process's last complete sync (or its restore)
            try:
                with self._through() as stores:
                    if self._newest is None:
                        self._find(stores)
                    assert self._newest is not None
                    target = self._folder + SLOTS[self._turn]
                    summary = upload(
                        [Output("**", self.url + target)],
                        workdir=self.directory,
                        allow_empty=True,
                        task={**self.task, _SYNC: self._newest + 1},
                        environ=self.environ,
                        stores=stores,
                        observer=self._passed,  # its failure is the one warning below
                        leave_out=True,  # an odd name, a file mid-write: not every sync
                    )
            except TaskFailure as exc:
                self.warn(f"cannot sync the checkpoint directory: {exc}")
                return
            error = summary.exit_error()
            if error is not None:
                self.warn(f"cannot sync the checkpoint directory: {error}")
                return
            self._newest += 1
            self._turn = 1 - self._turn  # the slot just written now holds the last sync
            self._synced = now
            self._prune()

    def _prune(self) -> None:
        """Remove the folders of the retired attempts (ended, or interrupted and gone), once
        this attempt holds a complete sync of its own: their syncs are older. Manifests
        first, so that no restore meanwhile takes a sync whose files are going. Best effort:
        what is left is removed by a later attempt."""
        retired, self._retired = self._retired, []
        if not retired:
            return
        with contextlib.suppress(TaskFailure), self._through() as stores:
            store, key = stores.open(self.url)
            base = key if not key or key.endswith("/") else key + "/"
            for number in retired:
                folder = f"{base}{number:05d}/"
                keys = [e.key for e in store.list(folder)]
                for name in sorted(keys, key=lambda k: not k.endswith(MANIFEST_NAME)):
                    store.delete(name)

    def __enter__(self) -> Checkpoint:
        if self._given is None:
            self._own = Stores()
        self._every.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._every.stop()
        try:
            self.sync()
        finally:
            own, self._own = self._own, None
            if own is not None:
                own.close()

    @contextlib.contextmanager
    def _through(self, stores: Stores | None = None) -> Iterator[Stores]:
        """``stores``, else the given ones, else the with-block's, else a set of its own for
        this one call (outside the block nothing would close a set kept for later)."""
        found = next((s for s in (stores, self._given, self._own) if s is not None), None)
        if found is not None:
            yield found
            return
        with Stores() as own:
            yield own

    def _periodic(self) -> None:
        with contextlib.suppress(Exception):  # sync() warns; nothing may end the thread
            self.sync()


class _OnceEach(NullObserver):
    """The warnings of a sync's upload (files it passes over: a name that cannot be published,
    a link out), each said once for the checkpoint's life, however often it syncs."""

    def __init__(self, warn: Callable[[str], None]) -> None:
        self._warn = warn
        self._said: set[str] = set()

    def warning(self, text: str) -> None:
        if text not in self._said:
            self._said.add(text)
            self._warn(f"checkpoint directory: {text}")


def _snapshot(directory: str) -> list[tuple[str, int, int, int, int]]:
    """Each file below ``directory`` with its size, inode and times: equal snapshots mean no
    file was written, added, removed or replaced in between."""
    found = []
    for root, _, names in os.walk(directory):
        for name in names:
            path = os.path.join(root, name)
            with contextlib.suppress(OSError):
                st = os.lstat(path)
                found.append((path, st.st_size, st.st_ino, st.st_mtime_ns, st.st_ctime_ns))
    return sorted(found)
