"""Carrying out an upload plan: files sent in parallel, then each DEST's manifest, last.

* **One read per file.** A file's digest is computed from the very bytes that are sent, so a
  blob's ``taskkit_digest`` always describes the blob. A file that changed while it was read
  (its size, mtime or ctime moved, or a read came up short) is not published: it is read and
  sent again, up to :data:`CHANGE_ATTEMPTS` times, then reported (exit 75).
* **Atomic files.** A file of up to one chunk (8 MiB) is one request; a larger one is sent in
  blocks of whole chunks, in parallel, and appears at its name only when its block list is
  committed. Blocks grow with the file so that none needs more than :data:`MAX_BLOCKS`. A block
  is named by its position and content digest, so blocks that an interrupted attempt (or the
  previous version of the blob) already holds are not sent again. Files of up to one chunk
  are handed to the threads in groups (:func:`_batches`), a task per group, not per file; to
  a store that takes files best one at a time (a local filesystem) the calling thread sends
  the groups itself, in turn (:func:`_one_by_one`).
* **Atomic sets.** A DEST is published by its manifest (:mod:`taskkit.transfer.manifest`), written
  after
  all of its files, and only when every file of the run arrived. A published DEST whose files
  are about to change is unpublished first (its manifest deleted); a manifest that would say the
  same again is not rewritten, so an unchanged upload sends no data at all.
* **Fenced manifests.** A ``fence`` given (``taskkit run``: "the publishing claim is still
  this attempt's") is called before each manifest write, and before any file of a DEST about
  to change is touched (its manifest deleted, its files sent); when it raises, nothing more is
  deleted or sent, that manifest and any later one are left as they are, and its failure is
  the upload's problem. Files sent before a refusal stay sent: only a store lease could stop a
  frozen caller's request in flight.
* **Nothing from outside the working directory.** The plan passes over links leading out; a
  file whose open descriptor turns out to lie outside anyway (a link that appeared after the
  plan) is refused, not sent.
* Files sent are recorded in the stat-cache with the blob's identity and version, so the next
  upload skips them without reading them.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import NamedTuple

from taskkit.content.digest import CHUNK_SIZE, Digest, combine_chunks, hash_bytes, hash_chunk
from taskkit.content.statcache import CacheEntry, Provenance, StatCache, path_keys
from taskkit.exceptions import (
    ConfigError,
    InputNotFound,
    LinkOut,
    TaskFailure,
    TransientError,
    from_os_error,
)
from taskkit.observer import Observer
from taskkit.storage.base import file_metadata
from taskkit.storage.retry import RetryBudget
from taskkit.storage.stores import Stores
from taskkit.transfer.download import Budget, gather
from taskkit.transfer.manifest import Manifest, ManifestFile, task_identity
from taskkit.transfer.patterns import Output, parse_output
from taskkit.transfer.stage_plan import default_workdir
from taskkit.transfer.summary import Problem, Published, Summary, run_plan
from taskkit.transfer.telling import Telling
from taskkit.transfer.upload_plan import (
    SAME_AT_DEST,
    Publication,
    UploadEntry,
    UploadPlan,
    plan,
)

__all__ = [
    "CHANGE_ATTEMPTS",
    "DEFAULT_JOBS",
    "MAX_BLOCKS",
    "MEMORY_BUDGET",
    "SMALL_BATCH",
    "SMALL_BATCH_BYTES",
    "block_size",
    "execute",
    "planned",
    "upload",
]

#: Requests in flight by default (as for staging).
DEFAULT_JOBS = 8
#: Blocks one blob may have (Azure's limit).
MAX_BLOCKS = 50_000
#: Reads of a file that keeps changing before it is reported.
CHANGE_ATTEMPTS = 3
#: Files of up to one chunk sent in turn by one thread, as one task of its pool.
SMALL_BATCH = 64
#: Bytes of a group of files sent in turn by one thread, at most (unless one file is more).
SMALL_BATCH_BYTES = 1024 * 1024
#: Bytes of blocks read and not yet sent, whatever ``jobs`` is: eight 8 MiB blocks, so that
#: the default ``-j 8`` keeps eight requests in flight (48 MiB, staging's budget, held six).
MEMORY_BUDGET = 64 * 1024 * 1024


def block_size(size: int) -> int:
    """Bytes per block for a file of ``size`` bytes: whole chunks, as few as keep the file
    within :data:`MAX_BLOCKS` blocks (8 MiB up to 390 GiB, 16 MiB up to 781 GiB, ...)."""
    return max(1, -(-size // (MAX_BLOCKS * CHUNK_SIZE))) * CHUNK_SIZE


class _Sent(NamedTuple):
    """A file now at its name, to be recorded with the blob's identity and version."""

    entry: UploadEntry
    stat: os.stat_result
    digest: Digest
    chunks: tuple[bytes, ...]
    version: str
    transferred: int
    reused: int


class _Changed(Exception):
    """The file changed while it was read."""


class _Stopped(Exception):
    """The run stopped (a fatal error elsewhere) before this file started."""


def upload(
    outputs: Sequence[str | Output],
    *,
    workdir: str | os.PathLike[str] | None = None,
    jobs: int | None = None,
    cache: StatCache | None = None,
    retry: RetryBudget | None = None,
    storage_options: Mapping[str, object] | None = None,
    stores: Stores | None = None,
    allow_empty: bool = False,
    dry_run: bool = False,
    task: Mapping[str, str | int] | None = None,
    observer: Observer | None = None,
    fence: Callable[[], None] | None = None,
    environ: Mapping[str, str] | None = None,
    leave_out: bool = False,
) -> Summary:
    """Upload ``outputs`` (``"GLOB=DEST"`` strings or :class:`Output`) from ``workdir`` and
    publish each DEST with a manifest naming ``task`` (default: from the environment
    ``environ``, default: this process's, where the working directory and the stat-cache are
    found too).

    Plans first (``observer`` sees the plan), then, unless ``dry_run``, carries it out,
    telling ``observer`` (default: the ``"taskkit"`` logger) its progress, each file done and
    a manifest that could not be changed. Failures of single files are in the summary
    (:meth:`Summary.exit_error`), not raised. ``fence`` is called before each manifest write
    or delete and may raise :class:`TaskFailure` to stop the publishing (see the module's
    docstring). With ``leave_out`` (what a checkpoint sync wants), a file whose name cannot be
    published is passed over with a warning, and one that vanishes or keeps changing while it
    is read (the temporary file of a write-then-rename) is left out of its DEST's manifest,
    instead of failing the upload.

    Given ``stores`` (a run's) are used and left open, and ``retry`` and ``storage_options``
    then change nothing; without them the call opens its own, with those, and closes them.
    """
    requests = [parse_output(o) if isinstance(o, str) else o for o in outputs]
    telling = Telling(observer, "uploading", dry_run=dry_run)
    return run_plan(
        lambda stores, cache: plan(
            requests,
            workdir=default_workdir(environ) if workdir is None else workdir,
            stores=stores,
            cache=cache,
            allow_empty=allow_empty,
            record=not dry_run,
            jobs=jobs,
            pass_unsendable=leave_out,
        ),
        planned=planned,
        execute=telling.executing(
            lambda the_plan, cache: execute(
                the_plan,
                jobs=jobs,
                cache=cache,
                task=task_identity(environ) if task is None else task,
                on_bytes=telling.moved,
                on_file=telling.uploaded,
                on_problem=telling.problem,
                fence=fence,
                leave_unsettled=leave_out,
            )
        ),
        cache=cache,
        retry=retry,
        storage_options=storage_options,
        stores=stores,
        dry_run=dry_run,
        on_plan=telling.upload_planned,
        environ=environ,
        warn=telling.observer.warning,
    )


def planned(plan: UploadPlan) -> Summary:
    """The summary a dry run reports: what the real run would do."""
    return Summary(
        files=len(plan.entries),
        transferred=plan.count("send"),
        skipped=plan.count("skip"),
        failed=len(plan.problems),
        bytes_transferred=plan.bytes_to_move,
        dry_run=True,
        problems=list(plan.problems),
    )


def execute(
    plan: UploadPlan,
    *,
    jobs: int | None = None,
    cache: StatCache | None = None,
    task: Mapping[str, str | int] | None = None,
    on_bytes: Callable[[int, bool], None] | None = None,
    on_file: Callable[[UploadEntry, TaskFailure | None], None] | None = None,
    on_problem: Callable[[Problem], None] | None = None,
    fence: Callable[[], None] | None = None,
    leave_unsettled: bool = False,
) -> Summary:
    """Carry out ``plan``; per-file failures are collected in the summary, not raised
    (``fence``: see :func:`upload`). ``leave_unsettled``: a file that vanished or kept
    changing while it was read is left out of its manifest, not a failure."""
    report = on_problem or (lambda problem: None)
    started = time.perf_counter()
    entries = plan.entries
    kept = [e for e in entries if e.action == "skip"]
    summary = Summary(
        files=len(entries),
        problems=list(plan.problems),
        failed=len(plan.problems),
        skipped=len(kept),
        bytes_kept=sum(e.size for e in kept),
    )
    refused = _unpublish(plan, fence)
    if refused is not None:
        summary.failed += summary.files - summary.skipped
        summary.problems.append(refused)
        report(refused)
        summary.seconds = time.perf_counter() - started
        return summary
    sending = [e for e in entries if e.action == "send"]
    # Taken before any file is read: a file written during its read is then racy (not trusted).
    recorded_ns = cache.clock() if cache is not None else 0
    run = _Run(jobs or DEFAULT_JOBS, on_bytes, plan.workdir)
    run.alone = _one_by_one(sending)
    sent: list[_Sent] = []
    unsettled: set[str] = set()  # keys of the files left out (leave_unsettled)
    try:
        for entry, result in run.outcomes(_batches(sending, run.jobs)):
            if isinstance(result, _Stopped):
                summary.failed += 1
                continue
            if leave_unsettled and isinstance(result, (_Vanished, _Unsettled)):
                unsettled.add(entry.key)
                summary.files -= 1
                continue
            if isinstance(result, TaskFailure):
                summary.failed += 1
                summary.problems.append(Problem(entry.local, result))
                if on_file is not None:
                    on_file(entry, result)
                continue
            sent.append(result)
            summary.transferred += 1
            summary.resumed += result.reused > 0
            summary.bytes_transferred += result.transferred
            summary.bytes_reused += result.reused
            if on_file is not None:
                on_file(entry, None)
    finally:
        run.close()
        if cache is not None:
            _record(cache, sent, recorded_ns)
            _vouch(cache, [e for e in entries if e.reason.startswith(SAME_AT_DEST)])
    if not summary.problems:
        digests = {s.entry.key: (s.digest, s.stat.st_size) for s in sent}
        _publish_all(_without(plan, unsettled), digests, task, fence, summary, report)
    summary.seconds = time.perf_counter() - started
    return summary


def _without(plan: UploadPlan, keys: set[str]) -> UploadPlan:
    """``plan`` with the files at ``keys`` left out of their manifests."""
    if not keys:
        return plan
    return plan._replace(
        publications=tuple(
            p._replace(entries=tuple(e for e in p.entries if e.key not in keys))
            for p in plan.publications
        )
    )


class _Vanished(InputNotFound):
    """A file listed for upload that was gone when it was opened."""


class _Unsettled(TransientError):
    """A file that changed each time it was read."""


def _one_by_one(entries: list[UploadEntry]) -> bool:
    """Whether the small files of ``entries`` are sent by the calling thread, in turn: when
    every store they go to takes files best one at a time (a local filesystem, where threads
    creating files in one directory only add kernel time), and there are several to send."""
    return len(entries) > 1 and all(e.store.parallel_files == 1 for e in entries)


def _batches(entries: list[UploadEntry], jobs: int) -> list[list[UploadEntry]]:
    """``entries`` in the groups one thread sends in turn: a file larger than a chunk alone
    (its blocks go in parallel), smaller ones together, so that the cost of a task and its
    result is paid per group, not per file, while every thread still gets several groups."""
    small = [e for e in entries if e.size <= CHUNK_SIZE]
    most = max(1, min(SMALL_BATCH, len(small) // (4 * jobs)))
    groups: list[list[UploadEntry]] = []
    held = 0
    for entry in small:
        # Bytes bound a group too: the last groups, sent while other threads may idle, stay
        # short, so files of a MiB or more still go one by one.
        if not groups or len(groups[-1]) >= most or held + entry.size > SMALL_BATCH_BYTES:
            groups.append([])
            held = 0
        groups[-1].append(entry)
        held += entry.size
    return [[e] for e in entries if e.size > CHUNK_SIZE] + groups


class _Fenced(Exception):
    """The fence refused a manifest write or delete: its failure."""

    def __init__(self, error: TaskFailure) -> None:
        super().__init__(str(error))
        self.error = error


def _pass(fence: Callable[[], None] | None) -> None:
    """Call ``fence``, if any; what it raises comes out as :class:`_Fenced`."""
    if fence is None:
        return
    try:
        fence()
    except TaskFailure as exc:
        raise _Fenced(exc) from exc


def _unpublish(plan: UploadPlan, fence: Callable[[], None] | None = None) -> Problem | None:
    """Delete the manifest of every published DEST whose files are about to change, so no
    reader trusts it meanwhile; the problem that prevents it, if any. The fence is passed
    before each such DEST, published or not, so that a caller that lost its right to publish
    before the upload began overwrites no file at all."""
    for publication in plan.publications:
        if not any(e.action == "send" for e in publication.entries):
            continue
        try:
            if fence is not None:
                fence()
            if publication.manifest is not None:
                publication.store.delete(publication.manifest_key)
        except TaskFailure as exc:
            return Problem(publication.manifest_url, exc)
    return None


def _publish_all(
    plan: UploadPlan,
    sent: Mapping[str, tuple[Digest, int]],
    task: Mapping[str, str | int] | None,
    fence: Callable[[], None] | None,
    summary: Summary,
    report: Callable[[Problem], None],
) -> None:
    """Write each DEST's manifest, the problems in ``summary``; a fence that refuses stops
    the publishing there: no later DEST is touched."""
    for publication in plan.publications:
        try:
            summary.published.append(_publish(publication, sent, task, fence))
        except _Fenced as fenced:
            summary.problems.append(Problem(publication.manifest_url, fenced.error))
            report(summary.problems[-1])
            return
        except TaskFailure as exc:
            summary.problems.append(Problem(publication.manifest_url, exc))
            report(summary.problems[-1])


def _publish(
    publication: Publication,
    sent: Mapping[str, tuple[Digest, int]],
    task: Mapping[str, str | int] | None,
    fence: Callable[[], None] | None = None,
) -> Published:
    """Write the manifest of a DEST whose files have all arrived, unless the one there
    already says the same; the manifest now published. A file sent names what was sent,
    which may have changed since the plan was made."""
    files = []
    for entry in publication.entries:
        digest, size = sent.get(entry.key) or (entry.digest, entry.size)
        assert digest is not None  # a skipped file's digest is known
        files.append(ManifestFile(entry.name, digest, size))
    manifest = Manifest.of(files, task)
    store, key = publication.store, publication.manifest_key
    existing = publication.manifest
    if existing is not None and all(e.action == "skip" for e in publication.entries):
        with contextlib.suppress(TaskFailure):
            there = store.read(existing, 0, existing.size)
            if manifest.said_by(there):
                return Published(publication.manifest_url, existing.version, there)
    data = manifest.to_bytes()
    _pass(fence)
    version = store.put(key, data, file_metadata(hash_bytes(data), len(data)))
    return Published(publication.manifest_url, version, data)


class _Run:
    """The threads and limits shared by the files of one upload."""

    def __init__(
        self, jobs: int, on_bytes: Callable[[int, bool], None] | None, workdir: Path
    ) -> None:
        self.on_bytes = on_bytes or (lambda n, reused: None)
        self.workdir = workdir
        self.jobs = jobs
        #: What a real path inside ``workdir`` starts with.
        self.inside = str(workdir).rstrip("/") + "/"
        self.files = ThreadPoolExecutor(jobs, thread_name_prefix="taskkit-upload")
        self.blocks = ThreadPoolExecutor(jobs, thread_name_prefix="taskkit-block")
        self._slots = threading.BoundedSemaphore(jobs)
        self._budget = Budget(MEMORY_BUDGET)
        #: Set after a fatal error: files not started yet are not started.
        self.stop = threading.Event()
        #: Files are sent one at a time by the calling thread (:func:`_one_by_one`): a file
        #: sent whole then holds no slot or budget (a large file's blocks still do, and it
        #: returns only when they are done).
        self.alone = False

    def outcomes(
        self, batches: list[list[UploadEntry]]
    ) -> Iterator[tuple[UploadEntry, _Sent | TaskFailure | _Stopped]]:
        """Each file of ``batches`` with what became of it, as the groups end: sent by this
        thread in turn when :attr:`alone`, else by the pool's threads."""
        if self.alone:
            done: Iterator[list[tuple[UploadEntry, _Sent | TaskFailure | _Stopped]]] = (
                self.send_all(batch) for batch in batches
            )
        else:
            futures = [self.files.submit(self.send_all, batch) for batch in batches]
            done = (future.result() for future in as_completed(futures))
        return (item for group in done for item in group)

    def close(self) -> None:
        self.stop.set()
        self.files.shutdown(wait=True, cancel_futures=True)
        self.blocks.shutdown(wait=True, cancel_futures=True)

    @contextlib.contextmanager
    def _hold(self, size: int) -> Iterator[None]:
        with self._slots, self._budget.hold(size):
            yield

    def send_all(
        self, entries: list[UploadEntry]
    ) -> list[tuple[UploadEntry, _Sent | TaskFailure | _Stopped]]:
        """Send ``entries`` in turn; what became of each."""
        done: list[tuple[UploadEntry, _Sent | TaskFailure | _Stopped]] = []
        for entry in entries:
            try:
                done.append((entry, self.send(entry)))
            except (TaskFailure, _Stopped) as exc:
                done.append((entry, exc))
        return done

    def send(self, entry: UploadEntry) -> _Sent:
        try:
            return self._send(entry)
        except ConfigError:
            self.stop.set()  # every other write would fail the same way: start no more
            raise

    def _send(self, entry: UploadEntry) -> _Sent:
        what = f"cannot upload {entry.local!r}"
        for _ in range(CHANGE_ATTEMPTS):
            if self.stop.is_set():
                raise _Stopped
            try:
                fd = os.open(entry.where, os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError as exc:
                raise _Vanished(
                    f"{what}: it vanished after it was listed", path=entry.where
                ) from exc
            except OSError as exc:
                raise from_os_error(exc, "cannot upload") from exc
            try:
                if _leads_out(fd, entry.where, self.inside):
                    raise LinkOut(f"{what}: it leads out of the working directory through a link")
                before = os.fstat(fd)
                if before.st_size <= CHUNK_SIZE:
                    return self._whole(entry, fd, before)
                return self._in_blocks(entry, fd, before)
            except _Changed:
                continue
            except OSError as exc:
                raise from_os_error(exc, "cannot upload") from exc
            finally:
                os.close(fd)
        raise _Unsettled(
            f"{what}: it kept changing while it was read ({CHANGE_ATTEMPTS} tries); "
            "is something still writing it?"
        )

    def _whole(self, entry: UploadEntry, fd: int, before: os.stat_result) -> _Sent:
        size = before.st_size
        if self.alone:  # nothing else is in flight: no slot or budget to share
            sent = self._put_whole(entry, fd, before)
        else:
            with self._hold(size):
                sent = self._put_whole(entry, fd, before)
        self.on_bytes(size, False)
        return sent

    @staticmethod
    def _put_whole(entry: UploadEntry, fd: int, before: os.stat_result) -> _Sent:
        size = before.st_size
        data = os.pread(fd, size + 1, 0)  # one byte more shows a file that grew
        # The whole file was read at once, so only a change before the read ended matters,
        # and that shows in the size or times: no byte past the end to look for again.
        _check(fd, before, len(data) == size, past_end=False)
        digest = Digest(hash_chunk(data))
        version = entry.store.put(entry.key, data, file_metadata(digest, size))
        return _Sent(entry, before, digest, (digest.value,), version, size, 0)

    def _in_blocks(self, entry: UploadEntry, fd: int, before: os.stat_result) -> _Sent:
        size = before.st_size
        step = block_size(size)
        count = -(-size // step)
        writer = entry.store.writer(entry.key)
        known = writer.known() if writer.parallel else frozenset()

        def one(index: int) -> tuple[tuple[bytes, ...], str, int]:
            offset = index * step
            length = min(step, size - offset)
            with self._hold(length):
                if self.stop.is_set():
                    raise _Stopped
                data = _read(fd, length, offset)
                view = memoryview(data)
                chunks = tuple(
                    hash_chunk(view[i : i + CHUNK_SIZE]) for i in range(0, length, CHUNK_SIZE)
                )
                block_id = f"{index:05d}-{_block_digest(chunks).hex()}"
                if block_id in known:
                    self.on_bytes(length, True)
                    return chunks, block_id, 0
                writer.write(block_id, data)
            self.on_bytes(length, False)
            return chunks, block_id, length

        try:
            if writer.parallel:
                results = gather(self.blocks, one, list(range(count)))
            else:
                results = [one(i) for i in range(count)]
            _check(fd, before, True)
        except BaseException:
            writer.abort()
            raise
        chunks = tuple(c for block, _, _ in results for c in block)
        digest = combine_chunks(size, chunks)
        version = writer.commit([b for _, b, _ in results], file_metadata(digest, size))
        transferred = sum(n for _, _, n in results)
        return _Sent(entry, before, digest, chunks, version, transferred, size - transferred)


def _block_digest(chunks: tuple[bytes, ...]) -> bytes:
    return chunks[0] if len(chunks) == 1 else hash_chunk(b"".join(chunks))


def _read(fd: int, length: int, offset: int) -> bytes:
    """``length`` bytes at ``offset``; fewer means the file shrank under the read."""
    data = os.pread(fd, length, offset)
    if len(data) == length:
        return data
    parts = [data]
    got = len(data)
    while got < length:
        more = os.pread(fd, length - got, offset + got)
        if not more:
            raise _Changed
        parts.append(more)
        got += len(more)
    return b"".join(parts)


def _leads_out(fd: int, path: str, inside: str) -> bool:
    """Whether the file open at ``fd`` lies outside the working directory, whose real path
    followed by ``/`` is ``inside``: the plan passed over links leading out, but one may have
    appeared since (a directory swapped for a link). A file is never the directory itself."""
    try:
        real = os.readlink(f"/proc/self/fd/{fd}")  # the very file opened, not a later lookup
    except OSError:
        real = os.path.realpath(path)
    return not real.startswith(inside)


def _check(fd: int, before: os.stat_result, complete: bool, *, past_end: bool = True) -> None:
    """Raise :class:`_Changed` unless the file is as it was when its read began (and, with
    ``past_end``, holds no byte past the end it had then)."""
    after = os.fstat(fd)
    if not complete or _identity(after) != _identity(before):
        raise _Changed
    if past_end and os.pread(fd, 1, before.st_size):  # grown within the same clock tick
        raise _Changed


def _identity(st: os.stat_result) -> tuple[int, int, int, int, int]:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _vouch(cache: StatCache, found_same: list[UploadEntry]) -> None:
    """Give the files skipped as the same as their blob (by its digest) that blob's provenance,
    so that the next run trusts them unread, without hashing the blob again."""
    keys = path_keys([e.where for e in found_same])
    cache.vouch(
        {
            key: Provenance(e.store.identity(e.key), e.remote.version, e.digest)
            for e, key in zip(found_same, keys, strict=True)
            if e.remote is not None and e.digest is not None
        }
    )


def _record(cache: StatCache, sent: list[_Sent], recorded_ns: int) -> None:
    """Record sent files with the blob they are now, if untouched since they were read, as of
    ``recorded_ns``: taken before any file was read, so that one written during its read (in
    the same clock tick, its stat unchanged) is racy, never trusted."""
    rows = []
    for item, key in zip(sent, path_keys([s.entry.where for s in sent]), strict=True):
        try:
            st = os.stat(item.entry.where)
        except OSError:
            continue
        if _identity(st) != _identity(item.stat):
            continue
        rows.append(
            CacheEntry.of(
                key,
                st,
                item.digest,
                item.chunks,
                recorded_ns,
                item.entry.store.identity(item.entry.key),
                item.version,
            )
        )
    cache.record(rows)
