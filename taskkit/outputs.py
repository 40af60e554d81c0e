"""Outputs, planned: which local files a ``GLOB=DEST`` names, their blob names, and what each needs.

``taskkit upload`` first expands every pattern in the working directory and lists every DEST
once (with metadata), then decides per file (:func:`plan`); the :class:`UploadPlan` is what
``--dry-run`` prints. :mod:`taskkit.upload` carries it out. A file is

* **skipped** when the blob at its name already holds its content: the stat-cache says the file
  was uploaded to this very blob version and has not changed since, or the blob's taskkit digest
  (metadata) equals the file's digest (from the stat-cache, else hashed now);
* **sent** otherwise.

Patterns: ``*`` and ``?`` match within one path segment (also names starting with a dot),
``[abc]`` / ``[!abc]`` one character of a set, ``**`` any number of directories. A blob's name
is the file's path relative to the pattern's fixed leading directory, under DEST (as Batch
OutputFiles do): ``out/**`` to ``az://c/run/`` sends ``out/a/b.txt`` to ``run/a/b.txt``. A
pattern without wildcards naming a directory means every file below it.

Invariants: no file outside the working directory is ever read (symbolic links are followed
only while they stay inside it); taskkit's own partial files (``.taskkit-*``) are never outputs;
every name is one that staging could write back.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import NamedTuple

from taskkit.digest import Digest
from taskkit.exceptions import (
    ConfigError,
    DataError,
    InputNotFound,
    TaskFailure,
    UsageError,
)
from taskkit.hashing import digests, hash_file
from taskkit.statcache import StatCache, path_key
from taskkit.storage import RemoteFile, Store, Stores
from taskkit.summary import Problem
from taskkit.walk import Failed, Skipped, describe_mode, path_error

__all__ = [
    "MANIFEST_NAME",
    "Match",
    "Output",
    "Publication",
    "UploadEntry",
    "UploadPlan",
    "expand",
    "parse_output",
    "plan",
]

#: The blob written last under each DEST: the published set of files.
MANIFEST_NAME = "_taskkit_manifest.json"
_MAGIC = re.compile(r"[*?[]")
_URL_START = re.compile(r"=(?=[A-Za-z][A-Za-z0-9+.-]*://)")
_OWN_FILES = ".taskkit-"
_LEADS_OUT = "a link that leads out of the working directory"


class Output(NamedTuple):
    """One ``GLOB=DEST``: a pattern relative to the working directory, and a URL prefix."""

    pattern: str
    dest: str

    @property
    def base(self) -> str:
        """The pattern's fixed leading directory ('' for the working directory itself)."""
        parts = self.pattern.split("/")
        fixed = []
        for part in parts[:-1]:
            if _MAGIC.search(part):
                break
            fixed.append(part)
        return "/".join(fixed)

    @property
    def rest(self) -> tuple[str, ...]:
        """The pattern's segments below :attr:`base`."""
        skip = len(self.base.split("/")) if self.base else 0
        return tuple(self.pattern.split("/")[skip:])


def parse_output(text: str) -> Output:
    """Read ``GLOB=DEST``. The split is before the DEST's ``scheme://`` when there is one (so
    ``year=2024/*.csv=az://c/run/`` works), else at the last ``=``."""
    found = _URL_START.search(text)
    if found is not None:
        pattern, dest = text[: found.start()], text[found.end() :]
    else:
        pattern, sep, dest = text.rpartition("=")
        if not sep:
            raise UsageError(f"output {text!r} has no destination (expected GLOB=DEST)")
    if not pattern:
        raise UsageError(f"output {text!r} names no files (expected GLOB=DEST)")
    if not dest or dest.endswith("="):
        raise UsageError(f"output {text!r} names no destination (expected GLOB=DEST)")
    if "\0" in text:
        raise UsageError(f"output {text!r} holds a NUL character")
    if pattern.startswith("/"):
        raise UsageError(f"output {text!r}: GLOB must be relative to the working directory")
    parts = [p for p in pattern.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise UsageError(f"output {text!r}: GLOB must not leave the working directory ('..')")
    if pattern.endswith("/"):
        parts.append("**")  # a directory: every file below it
    if not parts:
        parts = ["**"]
    if _MAGIC.search(dest.split("://", 1)[-1]):
        raise UsageError(f"output {text!r}: DEST {dest!r} must be a prefix, without wildcards")
    try:
        _regex(parts)
    except re.error as exc:
        raise UsageError(f"output {text!r}: GLOB is not a valid pattern ({exc})") from None
    return Output("/".join(parts), dest if dest.endswith("/") else dest + "/")


# -- matching -----------------------------------------------------------------------------------


class Match(NamedTuple):
    """A regular file a pattern matched: where it is, and its name below the pattern's base."""

    path: Path
    name: str
    stat: os.stat_result


def _segment_regex(segment: str) -> str:
    """A regular expression for one pattern segment: ``*``, ``?`` and ``[...]``."""
    out, i = [], 0
    while i < len(segment):
        c = segment[i]
        i += 1
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            j = i + (segment[i : i + 1] == "!")
            j += segment[j : j + 1] == "]"
            end = segment.find("]", j)
            if end < 0:
                out.append(re.escape(c))  # an unclosed '[' is itself
                continue
            body = segment[i:end]
            negated = body.startswith("!")
            # Characters special inside a regex set (or reserved for future set syntax).
            body = re.sub(r"([\\\[&~|^])", r"\\\1", body[negated:])
            body = ("^" if negated else "") + body
            out.append(f"(?!/)[{body}]")
            i = end + 1
        else:
            out.append(re.escape(c))
    return "".join(out)


def _regex(segments: Sequence[str]) -> re.Pattern[str]:
    parts = []
    for index, segment in enumerate(segments):
        last = index == len(segments) - 1
        if segment == "**":
            parts.append(".*" if last else "(?:[^/]+/)*")
        else:
            parts.append(_segment_regex(segment) + ("" if last else "/"))
    return re.compile("".join(parts), re.DOTALL)


def expand(workdir: Path, output: Output) -> Iterator[Match | Skipped | Failed]:
    """The files ``output`` matches below ``workdir`` (a real path), with what was passed over
    (not a regular file, a link leading out) and what could not be read. Each directory's
    files come sorted by name, before its subdirectories."""
    if any(part.startswith(_OWN_FILES) for part in output.pattern.split("/")):
        return  # taskkit's own partial files are never outputs, even named outright
    base = workdir / output.base if output.base else workdir
    if base.exists() and not _inside(workdir, Path(os.path.realpath(base))):
        yield Skipped(_shown(workdir, base), _LEADS_OUT)
        return
    rest = output.rest
    if len(rest) == 1 and not _MAGIC.search(rest[0]):
        # A literal name: a file, or a directory standing for every file below it.
        single = base / rest[0]
        try:
            st = os.stat(single)
        except OSError as exc:
            if not isinstance(exc, FileNotFoundError) or os.path.islink(single):
                yield _failed(workdir, single, exc)
            return
        if not _inside(workdir, Path(os.path.realpath(single))):
            yield Skipped(_shown(workdir, single), _LEADS_OUT)
            return
        if stat.S_ISREG(st.st_mode):
            yield Match(single, rest[0], st)
            return
        if not stat.S_ISDIR(st.st_mode):
            yield Skipped(_shown(workdir, single), f"{describe_mode(st.st_mode)}, not a file")
            return
        base, rest = single, ("**",)
    if not base.is_dir():
        return
    regex = _regex(rest)
    bounded = "**" not in rest
    yield from _walk(workdir, base, regex, rest, bounded)


def _walk(
    workdir: Path, base: Path, regex: re.Pattern[str], rest: tuple[str, ...], bounded: bool
) -> Iterator[Match | Skipped | Failed]:
    """Depth first below ``base``, pruned by the pattern's leading segments, never entering a
    directory twice on one path (link loops) nor one outside ``workdir``."""
    first_any = rest.index("**") if "**" in rest else len(rest)
    fixed = [re.compile(_segment_regex(s), re.DOTALL) for s in rest[:first_any]]
    root = os.stat(base)
    stack: list[tuple[Path, str, int, frozenset[tuple[int, int]]]] = [
        (base, "", 0, frozenset({(root.st_dev, root.st_ino)}))
    ]
    while stack:
        directory, prefix, depth, seen = stack.pop()
        try:
            with os.scandir(directory) as it:
                entries = sorted(it, key=lambda e: e.name, reverse=True)
        except OSError as exc:
            yield _failed(workdir, directory, exc)
            continue
        subdirs = []
        for entry in reversed(entries):
            name = prefix + entry.name
            path = directory / entry.name
            if entry.name.startswith(_OWN_FILES):
                continue
            if depth < len(fixed) and not fixed[depth].fullmatch(entry.name):
                continue
            try:
                linked = entry.is_symlink()
                st = os.stat(path)
            except OSError as exc:
                yield _failed(workdir, path, exc)
                continue
            if linked and not _inside(workdir, Path(os.path.realpath(path))):
                if regex.fullmatch(name) or stat.S_ISDIR(st.st_mode):
                    yield Skipped(_shown(workdir, path), _LEADS_OUT)
                continue
            if stat.S_ISDIR(st.st_mode):
                ident = (st.st_dev, st.st_ino)
                if (bounded and depth + 1 >= len(rest)) or ident in seen:
                    continue
                subdirs.append((path, name + "/", depth + 1, seen | {ident}))
            elif regex.fullmatch(name):
                if stat.S_ISREG(st.st_mode):
                    yield Match(path, name, st)
                else:
                    yield Skipped(_shown(workdir, path), f"{describe_mode(st.st_mode)}, not a file")
        stack.extend(reversed(subdirs))


def _failed(workdir: Path, path: Path, exc: OSError) -> Failed:
    # The error is built from the absolute path: its link test must not depend on the cwd.
    return Failed(_shown(workdir, path), path_error(exc, str(path)))


def _inside(root: Path, path: Path) -> bool:
    return path == root or root in path.parents


def _shown(workdir: Path, path: Path) -> str:
    return os.path.relpath(path, workdir)


# -- the plan -----------------------------------------------------------------------------------


class UploadEntry(NamedTuple):
    """What uploading will do for one file (``action``: send or skip), and why."""

    action: str
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

    def count(self, action: str) -> int:
        return sum(1 for e in self.entries if e.action == action)

    @property
    def bytes_to_move(self) -> int:
        return sum(e.size for e in self.entries if e.action == "send")


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
        for found in expand(root, output):
            if isinstance(found, Match):
                matched += 1
                groups.setdefault(output.dest, []).append(found)
            elif isinstance(found, Skipped):
                skipped.append(found)
            else:
                problems.append(Problem(found.path, found.error))
        groups.setdefault(output.dest, [])
        if not matched and not allow_empty:
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
    named: dict[str, Match] = {}
    for match in matches:
        local = _shown(root, match.path)
        clash = named.get(match.name)
        problem = _name_problem(match.name)
        if problem is None and clash is not None and clash.path != match.path:
            problem = f"{_shown(root, clash.path)!r} goes to the same name"
        if problem is not None:
            problems.append(
                Problem(local, DataError(f"cannot upload {local!r} to {dest!r}: {problem}"))
            )
            continue
        named.setdefault(match.name, match)
    entries = _decide(root, store, prefix, named, listed, cache, record, jobs)
    return Publication(dest, store, prefix, tuple(entries), manifest), problems


def _name_problem(name: str) -> str | None:
    from taskkit.staging import name_problem

    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return "its name is not UTF-8, which blob names must be"
    if name == MANIFEST_NAME:
        return f"{MANIFEST_NAME} is the name of taskkit's manifest"
    problem = name_problem(name)
    return f"{problem}, so it could not be staged back" if problem else None


def _decide(
    root: Path,
    store: Store,
    prefix: str,
    named: dict[str, Match],
    listed: dict[str, RemoteFile],
    cache: StatCache | None,
    record: bool,
    jobs: int | None,
) -> list[UploadEntry]:
    """Each file's action. ``cache`` is consulted; what is hashed here is recorded in it
    only when ``record`` (a dry run writes nothing)."""
    writable = cache if record else None
    keys = {name: path_key(m.path) for name, m in named.items()}
    known = cache.lookup(sorted(keys.values())) if cache is not None and keys else {}
    decided: dict[str, tuple[str, str, Digest | None]] = {}
    to_hash: dict[str, Digest] = {}
    for name, match in named.items():
        key = prefix + name
        remote = listed.get(key)
        if remote is None:
            decided[name] = ("send", "not at the destination", None)
            continue
        if remote.size != match.stat.st_size:
            decided[name] = ("send", "the destination differs (size)", None)
            continue
        entry = known.get(keys[name])
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
    hashed = digests([named[n].path for n in to_hash], cache=writable, jobs=jobs)
    for name, expected in to_hash.items():
        digest = hashed.get(named[name].path)
        if digest == expected:
            decided[name] = ("skip", "same digest at the destination (hashed)", digest)
        else:
            decided[name] = ("send", "the destination differs", digest)
    entries = []
    for name, match in named.items():
        action, reason, digest = decided[name]
        key = prefix + name
        entries.append(
            UploadEntry(
                action,
                reason,
                match.path,
                _shown(root, match.path),
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


def _local_digest(store: Store, remote: RemoteFile, cache: StatCache | None) -> Digest | None:
    """The digest of a file in a store on the local filesystem (which keeps no metadata)."""

    if store.protocol != "file":
        return None
    try:
        return hash_file(remote.key, cache=cache).digest
    except TaskFailure:
        return None
