"""Outputs, planned: the files of each DEST, their blob names, and what each needs.

``taskkit upload`` first expands every pattern in the working directory and lists every DEST
once (with metadata), then decides per file (:func:`plan`); the :class:`UploadPlan` is what
``--dry-run`` prints. :mod:`taskkit.transfer.upload` carries it out. A file is

* **skipped** when the blob at its name already holds its content: the stat-cache says the file
  was uploaded to this very blob version and has not changed since, or the blob's taskkit digest
  (metadata) equals the file's digest (from the stat-cache, else hashed now);
* **sent** otherwise.

Which files a GLOB matches, and their names below DEST, is :mod:`taskkit.transfer.patterns`' job.

Invariants: every name is one that staging could write back; one blob gets one file, across
DESTs too; two spellings of one place are one DEST.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Literal, NamedTuple

from taskkit.content.digest import Digest
from taskkit.content.hashing import digests, hash_file
from taskkit.content.statcache import CacheEntry, StatCache, path_keys
from taskkit.content.walk import Skipped
from taskkit.exceptions import (
    ConfigError,
    DataError,
    InputNotFound,
    TaskFailure,
    UsageError,
)
from taskkit.storage.base import RemoteFile, Store
from taskkit.storage.stores import Stores
from taskkit.transfer.patterns import Match, Output, expand, shown
from taskkit.transfer.stage_plan import name_problem
from taskkit.transfer.summary import Problem, format_size

__all__ = [
    "MANIFEST_NAME",
    "SAME_AT_DEST",
    "Publication",
    "UploadAction",
    "UploadEntry",
    "UploadPlan",
    "plan",
]

#: The blob written last under each DEST: the published set of files.
MANIFEST_NAME = "_taskkit_manifest.json"


# -- the plan -----------------------------------------------------------------------------------


#: What uploading does for one file: send it, or leave it (the destination holds it already).
UploadAction = Literal["send", "skip"]


#: Why a file is skipped whose digest is its blob's (found by hashing, or in the stat-cache).
SAME_AT_DEST = "same digest at the destination"


class UploadEntry(NamedTuple):
    """What uploading will do for one file (``action``: send or skip), and why."""

    action: UploadAction
    reason: str
    where: str  # absolute
    local: str  # as shown: relative to the working directory
    name: str  # below DEST
    key: str  # the blob's key in its store
    url: str
    stat: os.stat_result  # as planned
    digest: Digest | None  # when known (a skipped file's)
    remote: RemoteFile | None  # what is at the name now
    store: Store

    @property
    def size(self) -> int:
        return self.stat.st_size

    @property
    def path(self) -> Path:
        return Path(self.where)

    def __repr__(self) -> str:
        return f"UploadEntry({self.action!r}, {self.local!r} -> {self.url!r}, {self.reason!r})"


class Publication(NamedTuple):
    """The files of one DEST, published together by the manifest written after them."""

    dest: str
    store: Store
    prefix: str  # DEST's key, ending in '/'
    entries: tuple[UploadEntry, ...]
    manifest: RemoteFile | None  # the manifest there now

    @property
    def manifest_key(self) -> str:
        return self.prefix + MANIFEST_NAME

    @property
    def manifest_url(self) -> str:
        return self.store.url(self.manifest_key)


class UploadPlan(NamedTuple):
    """Every DEST with its files and their actions, what could not be planned, and what the
    patterns met but do not upload (``passed``: links out of the working directory, FIFOs)."""

    publications: tuple[Publication, ...]
    problems: tuple[Problem, ...]
    passed: tuple[Skipped, ...]
    workdir: Path

    @property
    def entries(self) -> tuple[UploadEntry, ...]:
        return tuple(e for p in self.publications for e in p.entries)

    def count(self, action: UploadAction) -> int:
        return sum(1 for e in self.entries if e.action == action)

    @property
    def bytes_to_move(self) -> int:
        return sum(e.size for e in self.entries if e.action == "send")

    def lines(self) -> Iterator[str]:
        """The plan as ``--dry-run`` prints it: each file, then its DEST's manifest (URLs as
        given: whoever shows them redacts)."""
        for publication in self.publications:
            for entry in publication.entries:
                yield (
                    f"{entry.action:<5} {entry.local} -> {entry.url}  "
                    f"({format_size(entry.size)}; {entry.reason})"
                )
            if self.problems:
                yield f"{'keep':<5} {publication.manifest_url}  (not published: problems)"
            else:
                yield f"{'publish':<5} {publication.manifest_url}  (written last)"


def plan(
    outputs: Sequence[Output],
    *,
    workdir: str | os.PathLike[str],
    stores: Stores,
    cache: StatCache | None = None,
    allow_empty: bool = False,
    record: bool = True,
    jobs: int | None = None,
    pass_unsendable: bool = False,
) -> UploadPlan:
    """Expand every pattern, list every DEST once, and decide what each file needs. Reads
    only, except that files hashed to decide are recorded in ``cache`` when ``record``. A file
    whose name cannot be published (a control character, a backslash...) is a problem, or,
    with ``pass_unsendable``, passed over (in :attr:`UploadPlan.passed`, said as a warning)."""
    root = Path(os.path.realpath(workdir))
    if not root.is_dir():
        raise UsageError(f"working directory {str(workdir)!r} is not a directory")
    problems: list[Problem] = []
    groups: dict[str, list[Match]] = {}
    skipped: list[Skipped] = []
    for output in outputs:
        matched = 0
        failed = 0
        for found in expand(root, output):
            if isinstance(found, Match):
                matched += 1
                groups.setdefault(output.dest, []).append(found)
            elif isinstance(found, Skipped):
                skipped.append(found)
            else:
                failed += 1
                problems.append(Problem(found.path, found.error))
        groups.setdefault(output.dest, [])
        # A pattern whose every match failed (a broken link) has said so: "matches no file"
        # would be a second line, and not true.
        if not matched and not failed and not allow_empty:
            problems.append(
                Problem(
                    output.pattern,
                    InputNotFound(
                        f"output {output.pattern!r} matches no file in {str(root)!r} "
                        "(use --allow-empty if that is expected)"
                    ),
                )
            )
    # Two spellings of one place (a path and its file:// URL) are one DEST.
    places: dict[str, tuple[str, Store, str, list[Match]]] = {}
    for dest, matches in groups.items():
        try:
            store, prefix = stores.open(dest)
        except TaskFailure as exc:
            problems.append(Problem(dest, exc))
            continue
        prefix = prefix.rstrip("/") + "/"
        place = places.setdefault(store.identity(prefix), (dest, store, prefix, []))
        place[3].extend(matches)
    publications = []
    for dest, store, prefix, matches in places.values():
        try:
            publication, bad = _publication(
                dest,
                store,
                prefix,
                matches,
                root,
                cache,
                record,
                jobs,
                skipped if pass_unsendable else None,
            )
        except TaskFailure as exc:
            problems.append(Problem(dest, exc))
            continue
        publications.append(publication)
        problems += bad
    publications, clashes = _without_clashes(publications, root)
    problems += clashes
    return UploadPlan(tuple(publications), tuple(problems), tuple(skipped), root)


def _without_clashes(
    publications: list[Publication], root: Path
) -> tuple[list[Publication], list[Problem]]:
    """Refuse a second file for one blob across DESTs (nested prefixes: ``run/`` and
    ``run/logs/``)."""
    if len(publications) < 2:
        return publications, []  # one DEST's names are unique already
    taken: dict[str, UploadEntry] = {}
    kept, problems = [], []
    for publication in publications:
        entries = []
        for entry in publication.entries:
            where = entry.store.identity(entry.key)
            other = taken.setdefault(where, entry)
            if other is not entry and other.where != entry.where:
                problems.append(
                    Problem(
                        entry.local,
                        DataError(
                            f"cannot upload {entry.local!r} to {entry.url!r}: "
                            f"{other.local!r} goes there too"
                        ),
                    )
                )
                continue
            entries.append(entry)
        kept.append(publication._replace(entries=tuple(entries)))
    return kept, problems


def _publication(
    dest: str,
    store: Store,
    prefix: str,
    matches: list[Match],
    root: Path,
    cache: StatCache | None,
    record: bool,
    jobs: int | None,
    unsendable: list[Skipped] | None = None,
) -> tuple[Publication, list[Problem]]:
    try:
        listed = {f.key: f for f in store.list(prefix)}
    except InputNotFound as exc:
        raise ConfigError(f"cannot upload to {dest!r}: {exc}") from exc
    manifest = listed.pop(prefix + MANIFEST_NAME, None)
    problems: list[Problem] = []
    named: dict[str, tuple[Match, str]] = {}
    below = str(root).rstrip("/") + "/"
    checked: dict[str, bool] = {}
    for match in matches:
        local = _shown(root, below, match.where)
        clash = named.get(match.name)
        problem = _name_problem(match.name, checked)
        if problem is not None and unsendable is not None:
            unsendable.append(Skipped(local, f"its name cannot be published: {problem}"))
            continue
        if problem is None and clash is not None and clash[0].where != match.where:
            problem = f"{clash[1]!r} goes to the same name"
        if problem is not None:
            problems.append(
                Problem(local, DataError(f"cannot upload {local!r} to {dest!r}: {problem}"))
            )
            continue
        named.setdefault(match.name, (match, local))
    entries = _decide(store, prefix, named, listed, cache, record, jobs)
    return Publication(dest, store, prefix, tuple(entries), manifest), problems


def _shown(root: Path, below: str, path: str) -> str:
    """:func:`~taskkit.transfer.patterns.shown` for ``path``; ``below`` is ``root``'s name
    ending in ``/``. A path found under ``root`` starts with it, and then its rest is the
    relative path, unless a ``..`` or ``.`` segment or a doubled ``/`` in the rest needs the
    slow way (a dotted name such as ``.bench`` does not)."""
    if path.startswith(below):
        rest = path[len(below) :]
        if not _UNNORMAL.search(rest):
            return rest
    return shown(root, path)


#: A ``.`` or ``..`` segment, or an empty one (a leading, doubled or trailing ``/``), in a
#: relative ``/``-separated path.
_UNNORMAL = re.compile(r"(?:^|/)\.{1,2}(?:/|$)|//|^/|/$")


#: Names this long have their whole length checked: below it, a name whose directory and
#: file name pass :func:`~taskkit.transfer.stage_plan.name_problem` passes too (4 bytes a
#: character at most, well within its limit on a whole path).
_LONG_NAME = 900


def _name_problem(name: str, checked: dict[str, bool]) -> str | None:
    """Why ``name`` cannot be uploaded, or None; ``checked`` remembers the directories of
    earlier names found fine, so each is checked once, not once per file in it."""
    plain = len(name) < _LONG_NAME and name.isascii() and name != MANIFEST_NAME
    if plain and name_problem(name) is None:  # one pattern match: the common case
        return None
    head, slash, tail = name.rpartition("/")
    if slash and len(name) < _LONG_NAME:
        fine = checked.get(head)
        if fine is None:
            fine = checked[head] = name_problem(head) is None and _utf8(head)
        if fine and name_problem(tail) is None and _utf8(tail):
            return None

    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return "its name is not UTF-8, which blob names must be"
    if name == MANIFEST_NAME:
        return f"{MANIFEST_NAME} is the name of taskkit's manifest"
    problem = name_problem(name)
    return f"{problem}, so it could not be staged back" if problem else None


def _decide(
    store: Store,
    prefix: str,
    named: dict[str, tuple[Match, str]],
    listed: dict[str, RemoteFile],
    cache: StatCache | None,
    record: bool,
    jobs: int | None,
) -> list[UploadEntry]:
    """Each file's action. ``cache`` is consulted; what is hashed here is recorded in it
    only when ``record`` (a dry run writes nothing)."""
    writable = cache if record else None
    keys: list[bytes] = []
    known: dict[bytes, CacheEntry] = {}
    if cache is not None and named:
        keys = path_keys([m.where for m, _ in named.values()])
        known = cache.lookup(sorted(keys))
    fresh, identity, url = StatCache.fresh, store.identity, store.url
    entries: list[UploadEntry] = []
    to_hash: dict[int, Digest] = {}  # the index in ``entries`` of each file to hash
    for index, (name, (match, local)) in enumerate(named.items()):
        key = prefix + name
        remote = listed.get(key)
        entry = known.get(keys[index]) if keys else None
        action: UploadAction = "send"
        digest = None
        if remote is None:
            reason = "not at the destination"
        elif remote.size != match.stat.st_size:
            reason = "the destination differs (size)"
        else:
            if entry is not None and not fresh(entry, match.stat):
                entry = None  # the file changed since it was recorded
            if entry is not None and entry.came_from(identity(key), remote.version):
                action, digest = "skip", entry.digest
                reason = "unchanged since it was uploaded there"
            else:
                expected = remote.digest or _local_digest(store, remote, writable)
                if expected is None:
                    reason = "the destination has no taskkit digest"
                elif entry is None:
                    reason = "to hash"
                    to_hash[index] = expected
                elif entry.digest == expected:
                    action, reason, digest = "skip", SAME_AT_DEST, entry.digest
                else:
                    reason = "the destination differs"
        entries.append(
            UploadEntry(
                action,
                reason,
                match.where,
                local,
                name,
                key,
                url(key),
                match.stat,
                digest,
                remote,
                store,
            )
        )
    if to_hash:
        paths = [entries[i].path for i in to_hash]
        hashed = digests(paths, cache=writable, jobs=jobs)
        for (index, expected), path in zip(to_hash.items(), paths, strict=True):
            digest = hashed.get(path)
            if digest == expected:
                entries[index] = entries[index]._replace(
                    action="skip", reason=f"{SAME_AT_DEST} (hashed)", digest=digest
                )
            else:
                entries[index] = entries[index]._replace(reason="the destination differs")
    return entries


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _local_digest(store: Store, remote: RemoteFile, cache: StatCache | None) -> Digest | None:
    """The digest of a file in a store on the local filesystem (which keeps no metadata)."""

    if store.protocol != "file":
        return None
    try:
        return hash_file(remote.key, cache=cache).digest
    except TaskFailure:
        return None
