"""Carrying out a staging plan: downloads, node-cache links, and what the next run needs to know.

Every file that arrives gets to its final path by one atomic rename (of a complete partial
file, or of a fresh hard link to a node-cache object), so a final path never holds a partial
file, whatever kills the process. Failures are per file: the other files are still staged.

The node cache never turns a file that could be staged into a failure: when it has no room
for a file (its disk fills while the file is reserved, written or added), the file is
downloaded straight into place instead. So a full disk that fails a file is DEST's, and its
message names DEST and DEST's filesystem, whether the file was being linked, copied (from the
node cache) or downloaded there.

Stale files the plan names are removed first, each only if it is still the very file that was
planned (same identity), and forgotten by the stat-cache. A missing working directory is
created before anything else.

At the end, each staged file is recorded in the stat-cache with its provenance (source identity
and etag), so the next run skips it without reading it. Records are written once for the whole
run, after a fresh ``stat`` taken after the recording time: a file whose identity moved since it
was written is not recorded, and one written within the racy window is recorded but re-hashed
once next time (see :mod:`taskkit.content.statcache`).
"""

from __future__ import annotations

import contextlib
import errno
import os
import queue
import re
import shutil
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from taskkit.content.digest import CHUNK_SIZE, Digest, hash_chunk
from taskkit.content.statcache import (
    CacheEntry,
    FileStat,
    PathKeys,
    Provenance,
    StatCache,
    path_key,
)
from taskkit.exceptions import (
    DataError,
    IOFailure,
    LinkOut,
    LocalPermissionDenied,
    SourceChanged,
    TaskFailure,
    from_os_error,
)
from taskkit.observer import Observer
from taskkit.storage.fsstore import name_nameless, open_nameless
from taskkit.storage.retry import RetryBudget
from taskkit.storage.stores import Stores
from taskkit.transfer.anchors import Anchors, Held, LeadsOut
from taskkit.transfer.download import (
    FULL_DISK,
    Fetched,
    Transfers,
    claim,
    drop_claimed,
    drop_unlocked,
    locked,
    open_partial,
    remove_journal,
    remove_partial,
    write_error,
)
from taskkit.transfer.nodecache import NodeCache
from taskkit.transfer.patterns import OWN_PREFIX
from taskkit.transfer.stage_plan import (
    ABSENT,
    SAME_CACHED,
    Input,
    Plan,
    PlanEntry,
    StageAction,
    default_workdir,
    parse_input,
    partial_name,
    plan,
)
from taskkit.transfer.summary import Problem, Summary, run_plan
from taskkit.transfer.telling import Telling

__all__ = ["DEFAULT_JOBS", "EVICT_EVERY", "execute", "planned", "stage"]

#: Requests in flight by default. Downloads wait on the network, not the CPU. Measured with
#: ``bench/stage_bench.py`` (section 5): many small blobs from Azurite reached the raw SDK's
#: best at 32 in flight and not at 8, with no more CPU; ranges of large files are held to
#: :data:`~taskkit.transfer.download.MEMORY_BUDGET` in flight whatever this is.
DEFAULT_JOBS = 32
#: Seconds between two records of the files staged so far: a ``kill -9`` loses at most the
#: provenance of the files that arrived in the last of them.
RECORD_EVERY = 0.5
#: Attempts at a file whose bytes do not match the digest its source declares.
DIGEST_ATTEMPTS = 2
#: Seconds between two checks of the node cache's bounds while files are linked from it.
EVICT_EVERY = 0.2
#: Node-cache objects larger than this are verified through the stat-cache; smaller ones hashed.
_VERIFY_BY_CACHE = 1 << 20


def planned(plan: Plan) -> Summary:
    """The summary a dry run reports: what the real run would do."""
    moving = [e for e in plan.entries if e.action in ("download", "resume")]
    return Summary(
        files=len(plan.entries),
        transferred=len(moving),
        resumed=plan.count("resume"),
        skipped=plan.count("skip"),
        linked=plan.count("link"),
        removed=len(plan.removals),
        failed=len(plan.problems),
        bytes_transferred=plan.bytes_to_move,
        dry_run=True,
        problems=list(plan.problems),
    )


class _Done(NamedTuple):
    """A file now at its final path, to be recorded with its provenance."""

    entry: PlanEntry
    stat: os.stat_result
    digest: Digest
    chunks: tuple[bytes, ...]
    transferred: int
    reused: int
    linked: bool

    @property
    def action(self) -> StageAction:
        """What was done, which may not be what was planned (a ``link`` whose object was
        gone is a download): as ``-v`` shows it and the summary counts it."""
        if self.linked:
            return "link"
        return "resume" if self.reused else "download"


class _Stale(Exception):
    """A node-cache object failed verification and was deleted."""


class _CacheFull(Exception):
    """The node cache's disk has no room for a file: it goes straight into place instead."""


def _full(exc: OSError | TaskFailure) -> bool:
    """Whether ``exc`` (or the :class:`TaskFailure` made from it) is a full disk or quota."""
    return getattr(exc, "errno", None) in FULL_DISK


def stage(
    inputs: Sequence[str | Input],
    *,
    workdir: str | os.PathLike[str] | None = None,
    jobs: int | None = None,
    cache: StatCache | None = None,
    node_cache: NodeCache | None = None,
    retry: RetryBudget | None = None,
    storage_options: Mapping[str, Any] | None = None,
    stores: Stores | None = None,
    allow_empty: bool = False,
    dry_run: bool = False,
    environ: Mapping[str, str] | None = None,
    observer: Observer | None = None,
) -> Summary:
    """Stage ``inputs`` (``"SRC=DEST"`` strings or :class:`Input`) into ``workdir``.

    Plans first (``observer`` sees the plan), then, unless ``dry_run``, carries it out,
    telling ``observer`` (default: the ``"taskkit"`` logger) its progress and problems. The
    stat-cache defaults to :meth:`StatCache.open` and the working directory to
    :func:`default_workdir`, both found in ``environ`` (default: this process's); failures
    of single files are in the summary (:meth:`Summary.exit_error`), not raised.

    Given ``stores`` (a run's) are used and left open, and ``retry`` and ``storage_options``
    then change nothing; without them the call opens its own, with those, and closes them.
    """
    requests = [parse_input(i) if isinstance(i, str) else i for i in inputs]
    telling = Telling(observer, "staging", dry_run=dry_run)
    return run_plan(
        lambda stores, cache: plan(
            requests,
            workdir=default_workdir(environ) if workdir is None else workdir,
            stores=stores,
            cache=cache,
            node_cache=node_cache,
            allow_empty=allow_empty,
            record=not dry_run,
            jobs=jobs,
        ),
        planned=planned,
        execute=telling.executing(
            lambda the_plan, cache: execute(
                the_plan,
                jobs=jobs,
                cache=cache,
                node_cache=node_cache,
                on_bytes=telling.moved,
                on_file=telling.staged,
            )
        ),
        cache=cache,
        retry=retry,
        storage_options=storage_options,
        stores=stores,
        dry_run=dry_run,
        on_plan=telling.staging_planned,
        environ=environ,
        warn=telling.observer.warning,
    )


def execute(
    plan: Plan,
    *,
    jobs: int | None = None,
    cache: StatCache | None = None,
    node_cache: NodeCache | None = None,
    on_bytes: Callable[[int, bool], None] | None = None,
    on_file: Callable[[PlanEntry, TaskFailure | None], None] | None = None,
    allocate: Callable[[int, int, int], None] | None = None,
) -> Summary:
    """Carry out ``plan``; per-file failures are collected in the summary, not raised.
    ``allocate`` reserves a file's blocks (default ``os.posix_fallocate``)."""
    started = time.perf_counter()
    summary = Summary(files=len(plan.entries), problems=list(plan.problems))
    summary.failed = len(plan.problems)
    if plan.create_workdir:
        try:
            plan.workdir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise write_error(exc, "cannot make the working directory") from exc
    summary.removed = _remove_stale(plan, cache, summary)
    transfers = Transfers(jobs or DEFAULT_JOBS, on_bytes, allocate=allocate)
    run = _Run(plan, transfers, cache, node_cache)
    work = [e for e in plan.entries if e.action != "skip"]
    summary.skipped = len(plan.entries) - len(work)
    summary.bytes_kept = sum(e.source.size for e in plan.entries if e.action == "skip")
    done: list[_Done] = []
    recorded_at = time.monotonic()
    results: queue.Queue[tuple[PlanEntry, _Done | BaseException]] = queue.Queue()
    parallel = _parallel(work, transfers.jobs)
    # One file at a time is staged by this thread: a worker would hand each file over, and the
    # two threads would trade the GIL at each of its dozen system calls.
    workers = _Workers(run.stage, work, results, parallel, transfers.stop) if parallel > 1 else None
    try:
        for planned in work:
            if workers is None:
                entry, result = planned, _outcome(run.stage, planned)
                if not isinstance(result, (_Done, Exception)):  # interrupted: Ctrl-C, SIGTERM
                    _drop_partial(run.current or planned)
            else:  # the next file to arrive, recording those arrived while none does
                while True:
                    try:
                        entry, result = results.get(timeout=RECORD_EVERY)
                        break
                    except queue.Empty:
                        if cache is not None and done:
                            recorded_at = _record_now(cache, done)
            _count(entry, result, summary, done, on_file)
            if cache is not None and done and time.monotonic() - recorded_at >= RECORD_EVERY:
                # What has arrived is known as staged even if this process is killed before
                # the end: the stale files of a later run are found by these records.
                recorded_at = _record_now(cache, done)
    finally:
        transfers.stop.set()
        if workers is not None:
            workers.join()
        transfers.close()
        run.anchors.close()
        # Files that arrived after an interruption are at their final paths: recorded too.
        while not results.empty():
            _, late = results.get()
            if isinstance(late, _Done):
                done.append(late)
        if cache is not None:
            _record(cache, done, [e for e in plan.entries if e.action == "skip"])
    summary.seconds = time.perf_counter() - started
    return summary


def _parallel(work: Sequence[PlanEntry], jobs: int) -> int:
    """Files staged at once: ``jobs``, unless every store of ``work`` takes fewer best
    (:attr:`~taskkit.storage.base.Store.parallel_files`). Ranges of large files are fetched
    ``jobs`` at a time either way."""
    caps = {entry.store.parallel_files for entry in work}
    return jobs if None in caps or not caps else min(jobs, max(c for c in caps if c))


def _record_now(cache: StatCache, done: list[_Done]) -> float:
    _record(cache, done, [])
    done.clear()
    return time.monotonic()


class _Workers:
    """``jobs`` threads taking the next file of ``work`` until there is none (or ``stop`` is
    set), each putting what became of it on ``results``: its :class:`_Done`, or what it
    raised. A file is taken only when a thread is free, so a plan of a million files costs
    no object per file waiting, and the caller hears of files one by one as they end."""

    def __init__(
        self,
        action: Callable[[PlanEntry], _Done],
        work: Sequence[PlanEntry],
        results: queue.Queue[tuple[PlanEntry, _Done | BaseException]],
        jobs: int,
        stop: threading.Event,
    ) -> None:
        self._action = action
        self._next = iter(work)
        self._lock = threading.Lock()
        self._results = results
        self._stop = stop
        self._threads = [
            threading.Thread(target=self._work, name=f"taskkit-stage-{n}", daemon=True)
            for n in range(min(jobs, len(work)))
        ]
        for thread in self._threads:
            thread.start()

    def _work(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                entry = next(self._next, None)
            if entry is None:
                return
            self._results.put((entry, _outcome(self._action, entry)))

    def join(self) -> None:
        for thread in self._threads:
            thread.join()


def _outcome(action: Callable[[PlanEntry], _Done], entry: PlanEntry) -> _Done | BaseException:
    """What became of ``entry``: its :class:`_Done`, or what staging it raised (which the
    caller raises unless it is a failure of that file alone)."""
    try:
        return action(entry)
    except BaseException as exc:  # an interruption too: the caller raises it at once
        return exc


def _count(
    entry: PlanEntry,
    result: _Done | BaseException,
    summary: Summary,
    done: list[_Done],
    on_file: Callable[[PlanEntry, TaskFailure | None], None] | None,
) -> None:
    """Count one finished file in ``summary`` (``done`` gets it when it arrived)."""
    if isinstance(result, BaseException):
        if not isinstance(result, TaskFailure):
            raise result
        summary.failed += 1
        summary.problems.append(Problem(entry.source.url, result))
        if on_file is not None:
            on_file(entry, result)
        return
    done.append(result)
    summary.linked += result.linked
    summary.bytes_kept += entry.source.size if result.linked else 0
    summary.transferred += not result.linked
    summary.resumed += result.reused > 0
    summary.bytes_transferred += result.transferred
    summary.bytes_reused += result.reused
    if on_file is not None:
        action = result.action
        on_file(entry if action == entry.action else entry._replace(action=action), None)


def _remove_stale(plan: Plan, cache: StatCache | None, summary: Summary) -> int:
    """Remove the stale files of ``plan`` that are still as planned; how many went."""
    removed: list[bytes] = []
    for entry in plan.removals:
        try:
            if FileStat.from_stat(os.lstat(entry.path)) != entry.local:
                continue  # changed (or gone) since it was planned: not ours to remove now
            entry.path.unlink()
        except FileNotFoundError:
            continue
        except OSError as exc:
            error = from_os_error(exc, "cannot remove the stale file")
            summary.failed += 1
            summary.problems.append(Problem(entry.dest, error))
            continue
        removed.append(path_key(entry.path))
    if cache is not None:
        cache.forget(removed)
    return len(removed)


class _Run:
    def __init__(
        self,
        plan: Plan,
        transfers: Transfers,
        cache: StatCache | None,
        node_cache: NodeCache | None,
    ) -> None:
        self.plan = plan
        self.transfers = transfers
        self.cache = cache
        self.node_cache = node_cache
        #: The directories written into, each reached without following a link out.
        self.anchors = Anchors(plan.workdir)
        self._swept: set[str] = set()  # directories whose temporary links were swept
        #: The file being staged, as written (through its directory's anchor).
        self.current: PlanEntry | None = None
        self._evict_lock = threading.Lock()
        self._evicted_at = -EVICT_EVERY
        #: The node-cache versions this run is about to fetch: their partials go last.
        self.wanted = frozenset(
            NodeCache.key(e.identity, e.source.version)
            for e in plan.entries
            if node_cache is not None and e.action != "skip"
        )

    def stage(self, entry: PlanEntry) -> _Done:
        """Stage one file, written into its directory as reached from the working directory
        when it starts (:mod:`taskkit.transfer.anchors`); errors name its path as planned."""
        directory, _, name = entry.where.rpartition("/")
        directory = directory or "/"
        self.current = entry  # until it is written through its anchor
        anchor, existed, held = self._anchor(entry, directory)
        try:
            if existed and self.node_cache is not None and directory not in self._swept:
                self._swept.add(directory)
                _sweep_link_temps(anchor)
            here = entry
            if anchor != directory:  # PlanEntry(...) with its where: __new__ is 3x cheaper
                here = tuple.__new__(PlanEntry, (*entry[:4], f"{anchor}/{name}", *entry[5:]))
            self.current = here
            try:
                done = self._stage_here(here)
            except TaskFailure as exc:
                _unanchor(exc, anchor, directory)
                raise
            if here is not entry:
                _still_there(entry, here.where, done.stat)
        finally:
            self.anchors.release(held)
        return done if here is entry else tuple.__new__(_Done, (entry, *done[1:]))

    def _anchor(self, entry: PlanEntry, directory: str) -> tuple[str, bool, Held]:
        try:
            return self.anchors.acquire(directory)
        except LeadsOut as exc:
            raise LinkOut(
                f"cannot stage {entry.source.url!r}: {entry.dest!r} leads out of the working "
                "directory through a link"
            ) from exc
        except OSError as exc:
            raise write_error(exc, f"cannot stage {entry.source.url!r}: cannot create") from exc

    def _stage_here(self, entry: PlanEntry) -> _Done:
        node = self.node_cache
        if node is not None and node.fits(entry.source.size):
            try:
                for _ in range(2):
                    with contextlib.suppress(_Stale):
                        return self._via_cache(entry, node)
                # An object that keeps failing its check (a task still writing into it): bypass.
            except _CacheFull:
                pass  # the cache's disk is full: DEST may have room
        return self._direct(entry)

    def _fetch(
        self, entry: PlanEntry, fd: int, partial: str | None, *, empty: bool = False
    ) -> Fetched:
        """Fill a partial file, held locked by the caller (or a nameless one: ``partial``
        None), with the entry's bytes, checked against any known digest. On a failure the
        partial goes when a retry cannot use it (a wrong digest, a permanent error, a file
        of one chunk) and stays to be resumed otherwise. The journal goes once the file is
        complete."""
        named = entry.where if partial is None else partial
        try:
            fetched = self.transfers.fetch(entry.store, entry.source, fd, named, empty=empty)
            if entry.expected is not None and fetched.digest != entry.expected:
                raise DataError(
                    f"cannot stage {entry.source.url!r}: its bytes have digest "
                    f"{fetched.digest}, but its source declares {entry.expected}"
                )
            if not entry.store.reads_confirmed:
                entry.store.confirm(entry.source)
        except TaskFailure as exc:
            if partial is not None and (not exc.retryable or entry.source.size <= CHUNK_SIZE):
                remove_partial(Path(partial))
            if isinstance(exc, IOFailure) and _full(exc):  # a full cache never gets here
                raise IOFailure(
                    f"cannot stage {entry.source.url!r} to {entry.dest!r}: {exc}",
                    path=exc.filename,
                    errno=exc.errno,
                ) from exc
            raise
        if not empty and partial is not None:
            remove_journal(Path(partial))
        return fetched

    @staticmethod
    def _attempts(action: Callable[[], _Done]) -> _Done:
        """``action``, once more after a digest mismatch (a corrupted transfer)."""
        for attempt in range(1, DIGEST_ATTEMPTS + 1):
            try:
                return action()
            except DataError:
                if attempt == DIGEST_ATTEMPTS:
                    raise
        raise AssertionError("unreachable")

    def _direct(self, entry: PlanEntry) -> _Done:
        partial = partial_name(entry.where)

        def once() -> _Done:
            if entry.source.size <= CHUNK_SIZE and entry.reason == ABSENT:
                done = self._nameless(entry)
                if done is not None:
                    return done
            fd = claim(partial) if entry.source.size <= CHUNK_SIZE else None
            if fd is not None:
                # A file of one request that nobody else is at: a new partial, one write, one
                # rename (no journal: a file of one chunk is never resumed).
                try:
                    fetched = self._fetch(entry, fd, partial, empty=True)
                    _rename(partial, entry.where, entry)
                    st = os.fstat(fd)
                except BaseException:
                    # Failed (a directory at the final path, say) or interrupted: a partial
                    # of one request is never resumed, so it would only be litter.
                    drop_claimed(partial, fd)
                    raise
                finally:
                    os.close(fd)
            else:
                with locked(Path(partial)) as fd:
                    fetched = self._fetch(entry, fd, partial)
                    _rename(partial, entry.where, entry)
                    st = os.fstat(fd)
            return _Done(
                entry,
                st,
                fetched.digest,
                fetched.chunks,
                fetched.transferred,
                fetched.reused,
                False,
            )

        try:
            return self._attempts(once)
        except LocalPermissionDenied as exc:
            if exc.filename != partial:
                raise
            # The partial file beside the DEST is taskkit's own, a name the user never gave.
            reason = os.strerror(exc.errno).lower() if exc.errno else "permission denied"
            raise LocalPermissionDenied(
                f"cannot write {str(entry.path)!r}: {reason}",
                path=entry.path,
                errno=exc.errno,
            ) from exc

    def _nameless(self, entry: PlanEntry) -> _Done | None:
        """A file of one request not at its destination, written without a name
        (:func:`~taskkit.storage.fsstore.open_nameless`) and named there once whole and
        checked: no partial, no lock and no rename, and nothing left behind by a kill. None
        where that cannot be done, or when another process has put a file there meanwhile:
        then the partial's way, which replaces it."""
        directory = entry.where.rpartition("/")[0] or "/"
        try:
            fd = open_nameless(directory, make=False)  # made, and checked, by stage()
        except PermissionError:
            return None  # the partial's way says so, naming the file
        except OSError as exc:
            exc.filename = entry.where
            raise write_error(exc, "cannot write") from exc
        if fd is None:
            return None
        try:
            fetched = self._fetch(entry, fd, None, empty=True)
            try:
                if not name_nameless(fd, entry.where):
                    return None
            except FileExistsError:
                return None
            except OSError as exc:
                raise write_error(exc, f"cannot stage {entry.source.url!r} to") from exc
            st = os.fstat(fd)
        finally:
            os.close(fd)
        return _Done(
            entry, st, fetched.digest, fetched.chunks, fetched.transferred, fetched.reused, False
        )

    def _via_cache(self, entry: PlanEntry, node: NodeCache) -> _Done:
        """Fetch into the node cache unless it holds this version, then link. Everything
        happens under the version's lock, so no other taskkit process downloads, links or
        verifies the same object meanwhile (a link moves the object's ctime)."""
        key = node.key(entry.identity, entry.source.version)

        def once() -> _Done:
            fetched: Fetched | None = None
            with locked(node.lock_name(key)):
                digest = node.lookup(key)
                if digest is None:
                    fetched = self._add(entry, node, key, node.partial(key))
                    digest = fetched.digest
                obj = node.object_name(digest)
                chunks = fetched.chunks if fetched is not None else self._verify(node, obj, digest)
                st = self._link(obj, entry)
            self._evict(node, obj)
            if fetched is None:
                return _Done(entry, st, digest, chunks, 0, 0, True)
            return _Done(entry, st, digest, chunks, fetched.transferred, fetched.reused, False)

        return self._attempts(once)

    def _add(self, entry: PlanEntry, node: NodeCache, key: str, partial: Path) -> Fetched:
        """Fetch the entry into the node cache (room is made first) and publish it. Raises
        :class:`_CacheFull`, leaving no partial, when the cache's disk cannot take it."""
        with node.adding(key, entry.source.size, self.wanted):
            try:
                fd = open_partial(partial)
                try:
                    fetched = self._fetch(entry, fd, str(partial))
                finally:
                    os.close(fd)
                node.publish(key, partial, fetched.digest)
            except (IOFailure, OSError) as exc:
                if not _full(exc):
                    if isinstance(exc, TaskFailure):
                        raise
                    raise write_error(exc, "cannot add to the node cache") from exc
                remove_partial(partial)
                raise _CacheFull from exc
        return fetched

    def _evict(self, node: NodeCache, obj: str) -> None:
        """Keep the node cache within its bounds as files are linked: checked at most every
        :data:`EVICT_EVERY` seconds (one statvfs, or a walk of the objects when over), not
        once per file, which made the threads of a run of small files queue on it."""
        now = time.monotonic()
        with self._evict_lock:
            if now - self._evicted_at < EVICT_EVERY:
                return
            self._evicted_at = now
        node.evict(keep=Path(obj), wanted=self.wanted)

    def _verify(self, node: NodeCache, obj: str, digest: Digest) -> tuple[bytes, ...]:
        """The chunks of a cache object whose content still matches its name."""
        try:
            found, chunks = self._hash_object(obj)
        except (OSError, TaskFailure) as exc:
            raise _Stale from exc
        if found != digest:
            node.discard(digest)
            raise _Stale
        return chunks

    def _hash_object(self, obj: str) -> tuple[Digest | None, tuple[bytes, ...]]:
        """A cache object's digest (None when it is not the size it was) and chunks. Small
        objects are read and hashed here, in one read: cheaper than a stat-cache read and
        write, and than the hashing machinery's pool for one file."""
        fd = os.open(obj, os.O_RDONLY | os.O_CLOEXEC)
        try:
            size = os.fstat(fd).st_size
            if size <= _VERIFY_BY_CACHE:
                data = os.pread(fd, size + 1, 0)
                value = hash_chunk(data)
                return (Digest(value) if len(data) == size else None), (value,)
        finally:
            os.close(fd)
        from taskkit.content.hashing import hash_file

        found = hash_file(obj, cache=self.cache)
        return found.digest, found.chunks

    def _link(self, obj: str, entry: PlanEntry) -> os.stat_result:
        """Put the cache object at the entry's path: a hard link, else a copy; atomically.
        Only DEST's filesystem is written here, so a full disk is DEST's (the errors of a
        link or a copy name the object first)."""
        own = partial_name(entry.where).removesuffix(".partial")
        temp = f"{own}.{os.getpid()}.{threading.get_ident()}"
        NodeCache.used(obj)  # before the stat below: it moves the ctime
        how = "link"
        try:
            try:
                try:
                    os.link(obj, temp)
                except FileExistsError:  # left by a process killed here: not a file of ours
                    os.unlink(temp)
                    os.link(obj, temp)
            except FileNotFoundError as exc:
                raise _Stale from exc  # evicted meanwhile: fetch it again
            except OSError as exc:
                if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP):
                    raise
                how = "copy"
                shutil.copyfile(obj, temp)
            _rename(temp, entry.where, entry)
            # A rename onto another name of the same file does nothing (the path already was
            # a link to this very object): the temporary name would stay behind.
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp)
            st = os.stat(entry.where)
        except OSError as exc:
            if _full(exc):
                # Measured before the partial copy goes, so the free space shown is the
                # space the copy found.
                exc.filename, exc.filename2 = str(entry.path), None
                full = write_error(exc, f"cannot {how} it from the node cache to")
                error: TaskFailure = IOFailure(
                    f"cannot stage {entry.source.url!r} to {entry.dest!r}: {full}",
                    path=entry.path,
                    errno=exc.errno,
                )
            else:
                error = write_error(exc, f"cannot stage {entry.source.url!r} to")
            with contextlib.suppress(OSError):
                os.unlink(temp)
            raise error from exc
        return st


#: A temporary link to a node-cache object (``_Run._link``): the writer's pid and thread.
_LINK_TEMP = re.compile(rf"{re.escape(OWN_PREFIX)}[0-9a-f]{{16}}\.(\d+)\.\d+")


def _sweep_link_temps(directory: str) -> None:
    """Remove from ``directory`` the temporary links a process killed while linking from the
    node cache left there (``.taskkit-<hash>.<pid>.<thread>``): those whose process is gone.
    Once per directory a run stages into; a name of that shape is taskkit's own."""
    try:
        names = os.listdir(directory)
    except OSError:
        return
    for name in names:
        found = _LINK_TEMP.fullmatch(name) if name.startswith(OWN_PREFIX) else None
        if found is None or _alive(int(found.group(1))):
            continue
        with contextlib.suppress(OSError):
            os.unlink(os.path.join(directory, name))


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # another user's: alive
    return True


def _still_there(entry: PlanEntry, written: str, st: os.stat_result) -> None:
    """Refuse a file named in its directory whose planned path no longer leads to it (the
    directory, or one above it, swapped while it was written): it is removed from where it
    went, and a new attempt stages it again."""
    try:
        there = os.stat(entry.where)
        if (there.st_dev, there.st_ino) == (st.st_dev, st.st_ino):
            return
    except OSError:
        pass
    with contextlib.suppress(OSError):
        went = os.stat(written)
        if (went.st_dev, went.st_ino) == (st.st_dev, st.st_ino):
            os.unlink(written)
    raise SourceChanged(
        f"cannot stage {entry.source.url!r}: {entry.dest!r} was moved while it was written; "
        "a new attempt will see it"
    )


def _unanchor(exc: TaskFailure, anchor: str, directory: str) -> None:
    """Name in ``exc`` the directory as planned, not the anchor it was written through."""
    if anchor == directory:
        return
    old, new = f"{anchor}/", f"{directory.rstrip('/')}/"
    exc.message = exc.message.replace(old, new)
    exc.args = (exc.message, *exc.args[1:])
    if isinstance(exc, OSError) and isinstance(exc.filename, str):  # a failure of one path
        exc.filename = exc.filename.replace(old, new)


def _drop_partial(entry: PlanEntry) -> None:
    """Remove the partial of a file of one request this thread was staging when it was
    interrupted, if nobody holds it locked: a signal landing between the partial's creation
    and the code that removes it on an interruption would leave it (it is never resumed)."""
    if entry.source.size <= CHUNK_SIZE:
        drop_unlocked(partial_name(entry.where))


def _identity(st: os.stat_result) -> tuple[int, int, int, int, int]:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _rename(temp: str | Path, final: str | Path, entry: PlanEntry) -> None:
    try:
        os.replace(temp, final)
    except IsADirectoryError as exc:
        raise IOFailure(
            f"cannot stage {entry.source.url!r}: {entry.dest!r} is a directory", path=final
        ) from exc


def _record(cache: StatCache, done: list[_Done], skipped: list[PlanEntry]) -> None:
    """Record staged files, and the provenance of files found current, in the stat-cache."""
    recorded_ns = cache.clock()
    rows = []
    keys = PathKeys()
    for item in done:
        try:
            st = os.stat(item.entry.where)
        except OSError:
            continue
        if _identity(st) != _identity(item.stat):
            continue  # touched since it was written: not ours to vouch for
        rows.append(
            CacheEntry.of(
                keys(item.entry.where),
                st,
                item.digest,
                item.chunks,
                recorded_ns,
                item.entry.identity,
                item.entry.source.version,
            )
        )
    cache.record(rows)
    # Files hashed while planning had their provenance recorded then (plan(record=True); a
    # plan made without it gets it when a later run hashes them again).
    cache.vouch(
        {
            keys(e.where): Provenance(e.identity, e.source.version, e.expected)
            for e in skipped
            if e.reason == SAME_CACHED and e.expected is not None
        }
    )
