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
from taskkit.transfer.summary import Problem, format_size

__all__ = [
    "MANIFEST_NAME",
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


class UploadEntry(NamedTuple):
    """What uploading will do for one file (``action``: send or skip), and why."""

    action: UploadAction
    reason: str
    path: Path  # absolute
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
) -> UploadPlan:
    """Expand every pattern, list every DEST once, and decide what each file needs. Reads
    only, except that files hashed to decide are recorded in ``cache`` when ``record``."""
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
            publication, bad = _publication(dest, store, prefix, matches, root, cache, record, jobs)
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
            if other is not entry and other.path != entry.path:
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
        local = _shown(root, below, match.path)
        clash = named.get(match.name)
        problem = _name_problem(match.name, checked)
        if problem is None and clash is not None and clash[0].path != match.path:
            problem = f"{clash[1]!r} goes to the same name"
        if problem is not None:
            problems.append(
                Problem(local, DataError(f"cannot upload {local!r} to {dest!r}: {problem}"))
            )
            continue
        named.setdefault(match.name, (match, local))
    entries = _decide(store, prefix, named, listed, cache, record, jobs)
    return Publication(dest, store, prefix, tuple(entries), manifest), problems


def _shown(root: Path, below: str, path: Path) -> str:
    """:func:`~taskkit.transfer.patterns.shown` for ``path``; ``below`` is ``root``'s name
    ending in ``/``. A path found under ``root`` starts with it, and then its rest is the
    relative path, unless a ``..`` (which pathlib keeps) needs the slow way."""
    text = str(path)
    if text.startswith(below) and "/.." not in text:
        return text[len(below) :]
    return shown(root, path)


#: Names this long have their whole length checked: below it, a name whose directory and
#: file name pass :func:`~taskkit.transfer.stage_plan.name_problem` passes too (4 bytes a
#: character at most, well within its limit on a whole path).
_LONG_NAME = 900


def _name_problem(name: str, checked: dict[str, bool]) -> str | None:
    """Why ``name`` cannot be uploaded, or None; ``checked`` remembers the directories of
    earlier names found fine, so each is checked once, not once per file in it."""
    from taskkit.transfer.stage_plan import name_problem

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
    keys: dict[str, bytes] = {}
    known: dict[bytes, CacheEntry] = {}
    if cache is not None and named:
        keys = dict(zip(named, path_keys([m.path for m, _ in named.values()]), strict=True))
        known = cache.lookup(sorted(keys.values()))
    decided: dict[str, tuple[UploadAction, str, Digest | None]] = {}
    to_hash: dict[str, Digest] = {}
    for name, (match, _) in named.items():
        key = prefix + name
        remote = listed.get(key)
        if remote is None:
            decided[name] = ("send", "not at the destination", None)
            continue
        if remote.size != match.stat.st_size:
            decided[name] = ("send", "the destination differs (size)", None)
            continue
        entry = known.get(keys[name]) if keys else None
        if entry is not None and not StatCache.fresh(entry, match.stat):
            entry = None  # the file changed since it was recorded
        if entry is not None and (entry.source, entry.etag) == (
            store.identity(key),
            remote.version,
        ):
            decided[name] = ("skip", "unchanged since it was uploaded there", entry.digest)
            continue
        expected = remote.digest or _local_digest(store, remote, writable)
        if expected is None:
            decided[name] = ("send", "the destination has no taskkit digest", None)
            continue
        if entry is not None:
            if entry.digest == expected:
                decided[name] = ("skip", "same digest at the destination", entry.digest)
            else:
                decided[name] = ("send", "the destination differs", entry.digest)
            continue
        to_hash[name] = expected
    hashed = digests([named[n][0].path for n in to_hash], cache=writable, jobs=jobs)
    for name, expected in to_hash.items():
        digest = hashed.get(named[name][0].path)
        if digest == expected:
            decided[name] = ("skip", "same digest at the destination (hashed)", digest)
        else:
            decided[name] = ("send", "the destination differs", digest)
    entries = []
    for name, (match, local) in named.items():
        action, reason, digest = decided[name]
        key = prefix + name
        entries.append(
            UploadEntry(
                action,
                reason,
                match.path,
                local,
                name,
                key,
                store.url(key),
                match.stat,
                digest if action == "skip" else None,
                listed.get(key),
                store,
            )
        )
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
