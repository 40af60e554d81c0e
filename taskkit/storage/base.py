"""The one boundary between taskkit and remote storage: open a URL, list, stat, read ranges.

Any fsspec URL opens: ``az://`` and ``abfs://`` through adlfs, ``file://`` and plain paths,
``memory://``, and whatever other fsspec protocols are installed. Azure credentials are resolved
exactly as adlfs resolves them (``AZURE_STORAGE_CONNECTION_STRING``; ``AZURE_STORAGE_ACCOUNT_NAME``
with ``AZURE_STORAGE_ACCOUNT_KEY`` or ``AZURE_STORAGE_SAS_TOKEN``; else DefaultAzureCredential,
i.e. the node's managed identity), then taskkit talks to the Azure SDK directly, so that

* a prefix is listed with its metadata in one request per 5,000 blobs;
* every read of a blob is conditional on the etag that was listed, so the bytes of one file
  all come from one version, even across a resumed download;
* retries are taskkit's (:class:`~taskkit.storage.retry.RetryBudget`), not the SDK's own
  minutes-long
  defaults, and a streak of failures is told of once for the whole run
  (:class:`~taskkit.storage.retry.Outages`), not once per try;
* a small file is read with its version in one request (:meth:`Store.load`), and written or
  deleted on the condition that it is still a given version, or absent (:meth:`Store.put`):
  of writers racing on one condition exactly one wins, the others get
  :class:`~taskkit.exceptions.Conflict`.

Invariants:

* Every upstream error leaves this module as a :class:`~taskkit.exceptions.TaskkitError`,
  translated by :func:`~taskkit.storage.errors.translate` (most specific class first, by the table
  :data:`~taskkit.storage.errors.RULES`) and raised ``from`` the original. Errors that are not
  storage errors (bugs) pass unchanged.
* No message, URL or identity built here contains a credential: a token in a URL's query
  string and a password in its userinfo are removed (:func:`~taskkit.redaction.public_url`:
  identities and fingerprints key on the URL without them, so a rotated SAS or password names
  the same source); a URL shown has its token removed and its password masked
  (:func:`~taskkit.redaction.shown_url`), any other credential hidden
  (:func:`~taskkit.redaction.redact`). Missing or garbled Azure credentials are taskkit's own
  line naming the variables it reads.
* A conditional write is atomic where the store can make it so: on Azure the service checks
  the condition; local files are checked and replaced under an exclusive ``flock`` of their
  directory (across processes, on a local disk); other fsspec stores under a lock of this
  process only.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import NamedTuple, TypeVar

import xxhash

from taskkit.content.digest import Digest
from taskkit.exceptions import (
    Conflict,
    DataError,
    MisuseError,
    SourceChanged,
)
from taskkit.storage.errors import (
    guarded,
)
from taskkit.storage.retry import RetryBudget

__all__ = [
    "DIGEST_METADATA",
    "SIZE_METADATA",
    "RemoteFile",
    "Store",
    "Writer",
    "file_metadata",
    "is_conditional",
    "is_temporary",
    "is_temporary_name",
    "metadata_digest",
    "temporary_key",
]

_T = TypeVar("_T")

#: Blob metadata written by taskkit uploads: the content digest and size.
DIGEST_METADATA = "taskkit_digest"
SIZE_METADATA = "taskkit_size"
_TEMP_PREFIX = ".taskkit-"
_TEMP_SUFFIX = ".partial"
#: Serializes conditional writes to fsspec stores that have no atomic condition of their own
#: (``memory://`` and the like): atomic within this process only.


class RemoteFile(NamedTuple):
    """One file in a store, as a listing describes it.

    ``url`` is how taskkit shows it (``az://container/name``, never a credential), ``key`` is the
    store's path for it, ``version`` an etag (or, for stores without one, a change token made
    from the listing), ``digest`` the taskkit digest from its metadata when a taskkit upload
    wrote one.
    """

    url: str
    key: str
    size: int
    version: str
    digest: Digest | None


# -- stores -------------------------------------------------------------------------------------


class Store:
    """A place files are read from, with its retry budget. Subclasses talk to one kind of
    storage; every method raises only :class:`TaskkitError` for storage failures."""

    protocol: str

    def __init__(self, retry: RetryBudget) -> None:
        self.retry = retry

    def url(self, key: str) -> str:
        """How the file at ``key`` is shown to users."""
        return f"{self.protocol}://{key}"

    def identity(self, key: str) -> str:
        """Where the bytes of ``key`` come from, stable and credential-free: recorded as the
        provenance of staged files and keyed on by the node cache."""
        raise NotImplementedError

    def call(self, action: Callable[[], _T], what: str, *, conditional: bool = False) -> _T:
        """``action`` with upstream errors translated and transient ones retried; never a
        :class:`SourceChanged` or a :class:`Conflict`, which the same request would meet
        again. ``conditional``: the request carries a condition on the file's version, so a
        failed precondition is a :class:`Conflict` (:func:`~taskkit.storage.errors.translate`).
        Failing tries are told of through the budget's :class:`~taskkit.storage.retry.Outages`, the
        run's (:class:`Stores`): one line per streak, not one per try."""
        return self.retry.call(
            lambda: guarded(action, what, conditional=conditional),
            what,
            lambda exc: not isinstance(exc, (SourceChanged, Conflict)),
        )

    def list(self, key: str) -> list[RemoteFile]:
        """Every file under the prefix ``key`` (a directory of a filesystem), in one pass."""
        raise NotImplementedError

    def stat(self, key: str) -> RemoteFile:
        """The one file at ``key``; :class:`InputNotFound` if there is none."""
        raise NotImplementedError

    def has_files(self, key: str) -> bool:
        """Whether any file is under the prefix ``key`` (Azure: one request for one name)."""
        return bool(self.list(key))

    def read(self, file: RemoteFile, offset: int, length: int) -> bytes:
        """``length`` bytes of ``file`` from ``offset``, from the version that was listed."""
        raise NotImplementedError

    #: Whether every :meth:`read` already fails when the file read is not the version listed
    #: (a conditional request, or a check of the very file read), so :meth:`confirm` after
    #: the reads of a file would ask again what they answered.
    reads_confirmed = False
    #: How many files of this store are worth staging at once (None: as many as asked). A
    #: local disk takes small files fastest one at a time: measured on 20,000 files of 4 KiB,
    #: every thread added raised the kernel time of creating them (bench/many_files.py).
    parallel_files: int | None = None
    #: Whether a listing is a tree, as a filesystem's is: no name is both a file and a
    #: directory of files (a blob store may hold ``p/x`` beside ``p/x/y``).
    lists_a_tree = False

    def confirm(self, file: RemoteFile) -> None:
        """Raise :class:`TransientError` if ``file`` is no longer the version that was listed
        (for stores whose reads cannot be made conditional)."""

    def load(self, key: str) -> tuple[bytes, str] | None:
        """The whole (small) file at ``key`` and its version, the one :meth:`stat` and
        :meth:`list` report, read together so the bytes are that version's; None when there is
        no file. On Azure one request (two for an empty blob); a missing container is a
        :class:`ConfigError`, as for writes."""
        raise NotImplementedError

    def put(
        self,
        key: str,
        data: bytes,
        metadata: Mapping[str, str],
        *,
        if_match: str | None = None,
        if_absent: bool = False,
    ) -> str:
        """Write ``data`` at ``key`` with ``metadata`` in one atomic step; the new version.

        ``if_absent``: only if no file is at ``key``; ``if_match``: only if the file there is
        that version (a missing file does not match); both at once is a :class:`MisuseError`.
        Otherwise :class:`Conflict`, never retried, the file unchanged: of writers racing on
        one condition exactly one wins. A retry must not lose to its own earlier try (which
        may have landed although its reply was lost), so a conflict met on a retry, not on
        the first try, is a success when ``key`` now holds exactly ``data`` (were they another
        writer's identical bytes, the record is the same either way).
        """
        raise NotImplementedError

    def writer(self, key: str) -> Writer:
        """Write the file at ``key`` in blocks; nothing shows at ``key`` until the commit."""
        raise NotImplementedError

    def delete(self, key: str, *, if_match: str | None = None) -> None:
        """Remove the file at ``key``, if there is one. With ``if_match``, only if it is that
        version: :class:`Conflict` if it is another one or none (but not when a retry finds
        it gone: that is taken as the earlier try's work, see :meth:`put`)."""
        raise NotImplementedError

    def append(self, key: str, offset: int, data: bytes) -> None:
        """Add ``data`` to the file at ``key``, which holds ``offset`` bytes (0: a new file).
        Readers may see the file grow; used for logs, which are never read back by taskkit."""
        raise NotImplementedError

    def close(self) -> None:
        """Release connections."""

    def _settle(
        self,
        run: Callable[[Callable[[], _T]], _T],
        attempt: Callable[[], _T],
        landed: Callable[[], _T | None],
    ) -> _T:
        """``run(attempt)``, a conditional request with its retries. A :class:`Conflict` met
        on a retry may be with the request's own earlier try: ``landed()`` then says whether
        the store shows that try's result (and returns it), else the conflict stands."""
        tries = 0

        def counted() -> _T:
            nonlocal tries
            tries += 1
            return attempt()

        try:
            return run(counted)
        except Conflict:
            outcome = landed() if tries > 1 else None
            if outcome is None:
                raise
            return outcome

    def _holding(self, key: str, data: bytes) -> str | None:
        """The version at ``key`` if it holds exactly ``data``."""
        found = self.load(key)
        return found[1] if found is not None and found[0] == data else None

    def _gone(self, key: str) -> bool | None:
        return True if self.load(key) is None else None


class Writer:
    """A file being written in blocks, each named by an id (the same length for all the
    blocks of one file). Nothing is visible at its key until :meth:`commit`, which makes the
    file the given blocks in the given order.

    ``parallel`` writers take blocks from several threads in any order and keep them across a
    crash (:meth:`known` lists them for a later attempt); others take them in order, once.
    """

    parallel = False

    def known(self) -> frozenset[str]:
        """Ids of blocks the store already holds for this key, committed or not: a block
        with one of these ids need not be sent again."""
        return frozenset()

    def write(self, block_id: str, data: bytes) -> None:
        raise NotImplementedError

    def commit(self, block_ids: Sequence[str], metadata: Mapping[str, str]) -> str:
        """Publish the file; its new version."""
        raise NotImplementedError

    def abort(self) -> None:
        """Give up: nothing is published (a parallel writer's blocks stay for a later try)."""


def is_conditional(if_match: str | None, if_absent: bool) -> bool:
    """Whether a write carries a condition; :class:`MisuseError` for both at once."""
    if if_match is not None and if_absent:
        raise MisuseError("if_match and if_absent=True: a file cannot be both; give one")
    if if_match is not None and not (isinstance(if_match, str) and if_match):
        raise MisuseError(f"if_match must be a version string, not {if_match!r}")
    return if_absent or if_match is not None


def file_metadata(digest: Digest, size: int) -> dict[str, str]:
    """The metadata a taskkit upload writes: what staging reads back to skip the file."""
    return {DIGEST_METADATA: str(digest), SIZE_METADATA: str(size)}


def is_temporary(key: str) -> bool:
    """Whether ``key`` names a file taskkit is writing (never a file to list or read)."""
    return is_temporary_name(key.rsplit("/", 1)[-1])


def is_temporary_name(name: str) -> bool:
    """:func:`is_temporary` of a name without its directory."""
    return name.startswith(_TEMP_PREFIX) and name.endswith(_TEMP_SUFFIX)


def temporary_key(key: str) -> str:
    """Where a store without atomic writes holds a file being written, beside ``key``: one
    name per key, so a crashed write is replaced by the next one, not left to pile up."""
    parent, _, name = key.rpartition("/")
    tag = xxhash.xxh3_64_hexdigest(name.encode("utf-8", "surrogateescape"))
    return f"{parent}/{_TEMP_PREFIX}{tag}{_TEMP_SUFFIX}"


def metadata_digest(metadata: Mapping[str, str] | None, size: int) -> Digest | None:
    """The digest a taskkit upload stored, if it is there, well-formed, and for this size."""
    if not metadata:
        return None
    lowered = {k.lower(): v for k, v in metadata.items()}
    text = lowered.get(DIGEST_METADATA)
    if text is None or lowered.get(SIZE_METADATA, str(size)) != str(size):
        return None
    try:
        return Digest.parse(text)
    except DataError:
        return None
