"""Output patterns: ``GLOB=DEST``, and the local files a GLOB matches with their names below DEST.

``*`` and ``?`` match within one path segment (also names starting with a dot), ``[abc]`` /
``[!abc]`` one character of a set, ``**`` any number of directories (also none). A file's name
is its path relative to the pattern's fixed leading directory (as Batch OutputFiles name
blobs): ``out/**`` names ``out/a/b.txt`` ``a/b.txt``. A pattern without wildcards naming a
directory, or ending in ``/``, means every file below it.

Invariants: no file outside the working directory is ever read (symbolic links are followed
only while they stay inside it, and a link leading out is reported, not followed); taskkit's own
partial files (``.taskkit-*``) are never matched; a link loop is never entered twice.
"""

from __future__ import annotations

import operator
import os
import re
import stat
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import NamedTuple

from taskkit.content.walk import Failed, Skipped, describe_mode, inside, path_error
from taskkit.exceptions import UsageError
from taskkit.redaction import SIGNED_QUERY, redact, signed
from taskkit.storage.urls import url_problem

__all__ = [
    "CONTROL",
    "OWN_PREFIX",
    "Match",
    "Output",
    "bad_dest_segment",
    "expand",
    "glob_regex",
    "has_wildcard",
    "own_segment",
    "parse_output",
    "shown",
]

#: A control character: no name holding one can be typed again, shown on one line, or published.
CONTROL = re.compile(r"[\x00-\x1f\x7f]")

_MAGIC = re.compile(r"[*?[]")
_URL_START = re.compile(r"=(?=[A-Za-z][A-Za-z0-9+.-]*://)")
#: How taskkit names its own files in a working directory (partials, ledgers, tombstones).
OWN_PREFIX = ".taskkit-"
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
    if re.match(r"(?i)https?://", dest):  # fsspec's HTTP filesystem only reads
        raise UsageError(
            f"output {text!r}: DEST cannot be an http(s) URL: taskkit writes blobs through "
            "az://CONTAINER/PATH (a SAS token goes in AZURE_STORAGE_SAS_TOKEN)"
        )
    if signed(dest):
        raise UsageError(f"output {redact(text)!r}: DEST {SIGNED_QUERY}")
    problem = url_problem(dest)
    if problem is not None:
        raise UsageError(f"output {redact(text)!r}: DEST {problem}")
    if _MAGIC.search(dest.split("://", 1)[-1]):
        raise UsageError(f"output {text!r}: DEST {dest!r} must be a prefix, without wildcards")
    segment = bad_dest_segment(dest)
    if segment is not None:
        raise UsageError(
            f"output {redact(text)!r}: DEST {redact(dest)!r} has {segment} in its path, which no "
            "published name may hold"
        )
    try:
        _regex(parts)
    except re.error as exc:
        raise UsageError(f"output {text!r}: GLOB is not a valid pattern ({exc})") from None
    return Output("/".join(parts), dest if dest.endswith("/") else dest + "/")


def bad_dest_segment(dest: str) -> str | None:
    """How a URL DEST's path goes wrong, in words (``"an empty segment ('//')"``), or None.

    Blob names are the DEST's path joined to each output's name as typed: ``x//y`` would be
    published as is (and then refused by ``stage``), and ``..`` is refused by the service only
    after a request. A local DEST (no ``scheme://``) is a path the filesystem resolves."""
    _scheme, sep, rest = dest.partition("://")
    if not sep:
        return None
    path = rest[1:] if rest.startswith("/") else rest  # file:///abs/path
    path = path[:-1] if path.endswith("/") else path  # the one '/' a prefix ends with
    if CONTROL.search(path):
        return "a control character"
    for segment in path.split("/") if path else ():  # '' is the root: file:///
        if segment == "":
            return "an empty segment ('//')"
        if segment in (".", ".."):
            return f"a {segment!r} segment"
    return None


# -- matching -----------------------------------------------------------------------------------


class Match(NamedTuple):
    """A regular file a pattern matched: where it is (``where``: its absolute path, as a
    string, the walk's own spelling), and its name below the pattern's base."""

    where: str
    name: str
    stat: os.stat_result

    @property
    def path(self) -> Path:
        return Path(self.where)


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


def own_segment(path: str) -> bool:
    """Whether a segment of the ``/``-separated ``path`` is named as taskkit names its own
    files (:data:`OWN_PREFIX`)."""
    return any(part.startswith(OWN_PREFIX) for part in path.split("/"))


def expand(workdir: Path, output: Output) -> Iterator[Match | Skipped | Failed]:
    """The files ``output`` matches below ``workdir`` (a real path), with what was passed over
    (not a regular file, a link leading out) and what could not be read. Each directory's
    files come sorted by name, before its subdirectories."""
    if own_segment(output.pattern):
        return  # taskkit's own partial files are never outputs, even named outright
    base = workdir / output.base if output.base else workdir
    if base.exists() and not inside(workdir, Path(os.path.realpath(base))):
        yield Skipped(shown(workdir, base), _LEADS_OUT)
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
        if not inside(workdir, Path(os.path.realpath(single))):
            yield Skipped(shown(workdir, single), _LEADS_OUT)
            return
        if stat.S_ISREG(st.st_mode):
            yield Match(str(single), rest[0], st)
            return
        if not stat.S_ISDIR(st.st_mode):
            yield Skipped(shown(workdir, single), f"{describe_mode(st.st_mode)}, not a file")
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
    directory twice on one path (link loops) nor one outside ``workdir``. Paths are strings
    (``scandir``'s own): a ``Path`` per entry cost more than its stat."""
    first_any = rest.index("**") if "**" in rest else len(rest)
    fixed = [re.compile(_segment_regex(s), re.DOTALL) for s in rest[:first_any]]
    root = os.stat(base)
    top = str(workdir)
    below = top.rstrip("/") + "/"
    full = regex.fullmatch
    # '**' alone matches every name: no pattern to match each file with.
    every = rest == ("**",)
    stack: list[tuple[str, str, int, frozenset[tuple[int, int]]]] = [
        (str(base), "", 0, frozenset({(root.st_dev, root.st_ino)}))
    ]
    while stack:
        directory, prefix, depth, seen = stack.pop()
        try:
            with os.scandir(directory) as it:
                entries = sorted(it, key=_NAME)
        except OSError as exc:
            yield _failed(workdir, directory, exc)
            continue
        subdirs = []
        pruned = fixed[depth].fullmatch if depth < len(fixed) else None
        for entry in entries:
            base_name = entry.name
            if base_name.startswith(OWN_PREFIX):
                continue
            if pruned is not None and not pruned(base_name):
                continue
            path = entry.path
            name = prefix + base_name
            try:
                linked = entry.is_symlink()  # from the directory entry: no call
                st = entry.stat()  # follows a link, as os.stat
            except OSError as exc:
                yield _failed(workdir, path, exc)
                continue
            if linked:
                real = os.path.realpath(path)
                if real != top and not real.startswith(below):
                    if full(name) or stat.S_ISDIR(st.st_mode):
                        yield Skipped(shown(workdir, path), _LEADS_OUT)
                    continue
            if stat.S_ISDIR(st.st_mode):
                ident = (st.st_dev, st.st_ino)
                if (bounded and depth + 1 >= len(rest)) or ident in seen:
                    continue
                subdirs.append((path, name + "/", depth + 1, seen | {ident}))
            elif every or full(name):
                if stat.S_ISREG(st.st_mode):
                    yield Match(path, name, st)
                else:
                    yield Skipped(shown(workdir, path), f"{describe_mode(st.st_mode)}, not a file")
        stack.extend(reversed(subdirs))


#: A directory entry's name, to sort by (in C: a lambda per entry cost as much as the sort).
_NAME = operator.attrgetter("name")


def _failed(workdir: Path, path: str | Path, exc: OSError) -> Failed:
    # The error is built from the absolute path: its link test must not depend on the cwd.
    return Failed(shown(workdir, path), path_error(exc, str(path)))


def shown(workdir: Path, path: str | Path) -> str:
    return os.path.relpath(path, workdir)


def has_wildcard(text: str) -> bool:
    """Whether ``text`` holds a wildcard (``*``, ``?`` or ``[``)."""
    return _MAGIC.search(text) is not None


def glob_regex(pattern: str) -> re.Pattern[str]:
    """The regular expression a relative ``/``-separated pattern matches names with, as
    output patterns do (:exc:`re.error` for a pattern that is not valid)."""
    return _regex(pattern.split("/"))
