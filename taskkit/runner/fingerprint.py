"""The fingerprint of a task's work: what it runs, on which input contents, to which outputs.

A recorded outcome holds only for the work it was recorded for. The fingerprint is the xxh3
digest of a canonical description (:class:`Work`): the command line, the inputs as given and,
for every remote input file, its taskkit digest when an upload wrote one, else its version and
size, and the output patterns. Settings that change how the work is run but not what it makes
(retries, deadline, log interval, exit codes, working directory) are not part of it.

Describing the inputs costs one listing per input and reads no file, so checking that a goal is
met stays a few storage requests.

No credential is part of the work: a token in a URL's query string (a SAS) and a password in
its userinfo are left out of the description (:func:`~taskkit.redaction.public_url` for the
inputs, :func:`~taskkit.redaction.without_credentials` for the command and outputs), which is
what the journal stores and what the fingerprint digests. So a rotated SAS token or password is
the same work, and the journal never holds either.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import xxhash

from taskkit.exceptions import InputNotFound
from taskkit.redaction import public_url, redact, shown_url, without_credentials
from taskkit.storage.base import RemoteFile
from taskkit.storage.stores import Stores
from taskkit.storage.urls import query_holds
from taskkit.transfer.stage_plan import Input, list_input, parse_input

__all__ = ["Work", "changes", "describe"]


class Work(NamedTuple):
    """What a run does, as the fingerprint sees it."""

    command: tuple[str, ...]
    inputs: tuple[tuple[str, tuple[tuple[str, str], ...]], ...]
    outputs: tuple[str, ...]

    @property
    def fingerprint(self) -> str:
        return "xxh3-128:" + xxhash.xxh3_128_hexdigest(
            json.dumps(self.as_json(), sort_keys=True).encode("utf-8", "surrogateescape")
        )

    def as_json(self) -> dict[str, Any]:
        """The description the journal stores and the fingerprint digests: credential-free,
        however the work was built."""
        return {
            "command": [without_credentials(item) for item in self.command],
            "inputs": {_public_input(given): dict(files) for given, files in self.inputs},
            "outputs": [without_credentials(output) for output in self.outputs],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Work:
        inputs = data.get("inputs") or {}
        return cls(
            tuple(data.get("command") or ()),
            tuple((str(k), tuple(sorted(dict(v).items()))) for k, v in dict(inputs).items()),
            tuple(data.get("outputs") or ()),
        )


def describe(
    command: Sequence[str],
    inputs: Sequence[str | Input],
    outputs: Sequence[str],
    stores: Stores,
) -> Work:
    """The work of a run; lists each input once (a missing input raises ``InputNotFound``)."""
    described = []
    for given in inputs:
        request = parse_input(given) if isinstance(given, str) else given
        _, _, found = list_input(request, stores)  # a prefix or glob listed as staging lists it
        if not found:
            verb = "lists" if request.glob is None else "matches"
            raise InputNotFound(f"input {shown_url(request.source)} {verb} no files")
        files = tuple(sorted((name, _content(f)) for name, f in found))
        described.append((f"{public_url(request.source)}={request.dest}", files))
    return Work.from_json(Work(tuple(command), tuple(described), tuple(outputs)).as_json())


def _public_input(given: str) -> str:
    """``SRC=DEST`` (or a bare SRC) with the credential of SRC's URL left out."""
    source, sep, dest = given.rpartition("=")
    if not sep or query_holds(source):
        return redact(public_url(given))
    return f"{redact(public_url(source))}={dest}"


def _content(file: RemoteFile) -> str:
    """What a file holds, as far as a listing tells: its digest, else version and size."""
    if file.digest is not None:
        return str(file.digest)
    return f"version {file.version}, {file.size} bytes"


def changes(before: Work, after: Work) -> str:
    """Why ``after`` is not the work ``before`` was: one short line."""
    # Compared as stored: a work read back from the journal is credential-free.
    before, after = Work.from_json(before.as_json()), Work.from_json(after.as_json())
    reasons = []
    if before.command != after.command:
        reasons.append("the command changed")
    old, new = dict(before.inputs), dict(after.inputs)
    if set(old) != set(new):
        reasons.append("the inputs given changed")
    for given in sorted(set(old) & set(new)):
        if old[given] == new[given]:
            continue
        was, now = dict(old[given]), dict(new[given])
        source = given.rsplit("=", 1)[0]
        for how, names in (
            ("changed", sorted(n for n in set(was) & set(now) if was[n] != now[n])),
            ("gone", sorted(set(was) - set(now))),
            ("new", sorted(set(now) - set(was))),
        ):
            if names:
                shown = ", ".join(source + n for n in names[:3])
                verb = "" if how == "changed" else ("is " if len(names) == 1 else "are ")
                reasons.append(f"input {shown}{' ...' if len(names) > 3 else ''} {verb}{how}")
    if before.outputs != after.outputs:
        reasons.append("the outputs changed")
    return "; ".join(reasons) or "the work changed"
