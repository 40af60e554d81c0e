"""What a success published, and whether it is still there: the goal check behind "goal met".

A success records, for each DEST of the work's outputs, the manifest's URL (never a
credential), its version in the store, and the name of the journal's copy of it (written
before the success record). The journal alone cannot tell that someone deleted the outputs
since, so:

* **Still published?** (:func:`gone`) One stat request per DEST: each manifest must be at its
  recorded version. The manifest is opened from the work's own outputs (the same work has the
  same outputs), never from the URL stored, which may have been shown without its credential.
* **Republish or run again?** (:func:`unmatched`) When a manifest is gone or changed, the
  working directory may still hold the very files it named: each file's name, size and digest
  (through the stat-cache, so an unchanged file is not read) are checked against the
  journal's copy. Only then are they published again without running the command.

Invariants: read only (a dry run calls the same functions); a record written before versions
were kept is checked for presence only, and is never republished (no copy was kept).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

from taskkit.content.digest import Digest
from taskkit.exceptions import InputNotFound, TaskFailure
from taskkit.runner.journal import Journal, Outcome, PublishedManifest
from taskkit.storage.base import Store
from taskkit.storage.stores import Stores
from taskkit.transfer.patterns import Output, parse_output
from taskkit.transfer.summary import Published
from taskkit.transfer.upload_plan import MANIFEST_NAME

__all__ = ["Destination", "Gone", "copy_name", "destinations", "gone", "recorded", "unmatched"]


class Destination(NamedTuple):
    """Where one DEST's manifest is: its store and key, opened from the work's outputs."""

    store: Store
    key: str

    @property
    def url(self) -> str:
        return self.store.url(self.key)


class Gone(NamedTuple):
    """Published outputs of this work that are no longer there: why, the attempt that had
    published them, and whether the working directory still holds them (then they are
    republished, and the command is not run) or why not."""

    why: str
    attempt: int
    republish: bool
    detail: str

    @property
    def line(self) -> str:
        if self.republish:
            return (
                f"{self.why}; republishing them from the working directory (the command is not run)"
            )
        return f"{self.why}; {self.detail}: running the command again"


def destinations(stores: Stores, outputs: Sequence[Output]) -> list[Destination]:
    """One manifest per DEST of ``outputs``, in their order; two spellings of one place are
    one DEST, as for an upload."""
    found: dict[str, Destination] = {}
    for output in outputs:
        place = _place(stores, output.dest)
        found.setdefault(place.store.identity(place.key), place)
    return list(found.values())


def _place(stores: Stores, dest: str) -> Destination:
    store, key = stores.open(dest if dest.endswith("/") else dest + "/")
    return Destination(store, key.rstrip("/") + "/" + MANIFEST_NAME)


def copy_name(attempt: int, index: int) -> str:
    """The journal's copy of the ``index``-th (from 1) manifest ``attempt`` published, one
    name per attempt, so a later publisher never rewrites a copy a record names."""
    return f"published/{attempt:05d}/{index}.json"


def recorded(
    journal: Journal, attempt: int, places: Sequence[Destination], manifests: Sequence[Published]
) -> tuple[PublishedManifest, ...]:
    """Keep a copy of each manifest an upload published, in the order of ``places``; the
    records the success outcome lists. Call before the success is recorded."""
    by_url = {m.url: m for m in manifests}
    kept = []
    for index, place in enumerate(places, 1):
        manifest = by_url[place.url]
        name = copy_name(attempt, index)
        journal.store.put(journal.root + name, manifest.data, {})
        kept.append(PublishedManifest(url=place.url, version=manifest.version, kept=name))
    return tuple(kept)


def gone(stores: Stores, outputs: Sequence[str], outcome: Outcome) -> str | None:
    """Why the outputs ``outcome`` recorded as published are not there as published, or
    None when every manifest is still at its recorded version (one request per DEST).
    ``outputs``: a work's, as its fingerprint names them (``GLOB=DEST``)."""
    places = destinations(stores, [parse_output(output) for output in outputs])
    if outcome.published and len(outcome.published) != len(places):
        return "published outputs are gone: the record names other destinations"
    for index, place in enumerate(places):
        try:
            version = place.store.stat(place.key).version
        except InputNotFound:
            return f"published outputs are gone: {place.url} is missing"
        if outcome.published and version != outcome.published[index].version:
            return (
                f"published outputs are gone: {place.url} changed since attempt "
                f"{outcome.attempt} published it"
            )
    return None


def unmatched(
    stores: Stores,
    journal: Journal,
    outputs: Sequence[Output],
    outcome: Outcome,
    workdir: str | os.PathLike[str],
    *,
    dry_run: bool = False,
    environ: Mapping[str, str] | None = None,
) -> str | None:
    """Why the working directory does not hold the files ``outcome``'s manifests name
    (checked against the journal's copies), or None when it does, every one with its
    recorded size and digest (through the stat-cache found in ``environ``). Reads only; a dry
    run does not even create the stat-cache."""
    from taskkit.content.hashing import digests
    from taskkit.content.statcache import StatCache
    from taskkit.transfer.manifest import Manifest
    from taskkit.transfer.patterns import Match, expand

    if not outcome.published:
        return "no copy of its manifests was kept"
    root = Path(os.path.realpath(workdir))
    if not root.is_dir():
        return "the working directory is gone"
    places = destinations(stores, outputs)
    index = {d.store.identity(d.key): i for i, d in enumerate(places)}
    files: list[dict[str, Match]] = [{} for _ in places]
    for output in outputs:
        place = _place(stores, output.dest)
        into = files[index[place.store.identity(place.key)]]
        for found in expand(root, output):
            if isinstance(found, Match):
                into.setdefault(found.name, found)
    wanted: list[tuple[Match, str, Digest]] = []
    for place, record, there in zip(places, outcome.published, files, strict=True):
        try:
            loaded = journal.store.load(journal.root + record.kept)
            if loaded is None:
                return f"the journal's copy of {place.url} is missing"
            manifest = Manifest.parse(loaded[0], journal.url(record.kept))
        except TaskFailure as exc:
            return f"the journal's copy of {place.url} cannot be read ({exc})"
        names = {f.name for f in manifest.files}
        if set(there) - names:
            extra = sorted(set(there) - names)[0]
            return f"the working directory holds {extra!r}, which {place.url} did not name"
        for file in manifest.files:
            match = there.get(file.name)
            if match is None:
                return f"the working directory no longer holds {file.name!r}"
            if match.stat.st_size != file.size:
                return f"{file.name!r} in the working directory is not the file published"
            wanted.append((match, file.name, file.digest))
    cache = StatCache.for_run(dry_run=dry_run, environ=environ)
    try:
        hashed = digests([m.path for m, _, _ in wanted], cache=cache)
    finally:
        if cache is not None:
            cache.close()
    for match, name, digest in wanted:
        if hashed.get(match.path) != digest:
            return f"{name!r} in the working directory is not the file published"
    return None
