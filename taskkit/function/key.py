"""The key of one call of a task function, and why two keys differ.

A call's key is the xxh3 digest of a canonical description: the key schema version, the task's
qualified name, its code (:mod:`taskkit.function.code`), its arguments bound and hashed
(:mod:`taskkit.function.arguments`), the contents of its ``inputs=`` as a listing tells them
(:func:`~taskkit.runner.fingerprint.describe`: a taskkit digest, else version and size) and its
output patterns. Calls with one key are one piece of work: its result is kept once.

The description is also what the journal stores of the most recent call of a function, so
:func:`changes` can say in plain words what differs: ``code of clean_rows() changed``,
``argument threshold: 0.3 -> 0.5``, ``input ref: new version of az://...``. Display values
(``shown``) are stored beside the digests and never enter the key.

Invariants: the description holds no credential (input URLs are public URLs, argument
displays are redacted); a change of the schema changes every key.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import xxhash

from taskkit.function.arguments import Hashed, argument_changes, show
from taskkit.function.code import CodeKey, describe_changes

__all__ = ["KEY_SCHEMA", "CallKey", "changes"]

#: Bumped when the description or any of its hashes changes meaning: every key changes.
KEY_SCHEMA = 2


@dataclass(frozen=True)
class CallKey:
    """What one call is, as its key sees it."""

    name: str
    code: CodeKey
    arguments: Mapping[str, Hashed]
    #: input name -> (public URL, {file name: content as a listing tells it})
    inputs: Mapping[str, tuple[str, Mapping[str, str]]]
    outputs: tuple[str, ...]
    #: The arguments' values, to show those hashed without their display (a hit's).
    values: Mapping[str, object] = field(default_factory=dict, compare=False, repr=False)
    #: The code of the user's classes the arguments are instances of, by class.
    classes: Mapping[str, CodeKey] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        """The description the journal stores (display values included); made once per key
        (a call that runs stores it several times): read it, do not change it."""
        return self._described

    @functools.cached_property
    def _described(self) -> dict[str, Any]:
        return {
            "schema": KEY_SCHEMA,
            "name": self.name,
            "code": self.code.as_json(),
            "arguments": {
                n: [h.digest, h.shown or show(self.values.get(n))]
                for n, h in self.arguments.items()
            },
            "inputs": self._inputs(),
            "outputs": list(self.outputs),
            "classes": {name: code.as_json() for name, code in sorted(self.classes.items())},
        }

    def _inputs(self) -> dict[str, Any]:
        return {n: {"url": url, "files": dict(files)} for n, (url, files) in self.inputs.items()}

    @functools.cached_property
    def digest(self) -> str:
        """The key: display values left out, so only what the call is counts."""
        data = {
            "schema": KEY_SCHEMA,
            "name": self.name,
            "code": self.code.digest,
            "arguments": {n: h.digest for n, h in self.arguments.items()},
            "inputs": self._inputs(),
            "outputs": list(self.outputs),
        }
        if self.classes:  # absent when empty: keys of calls without such arguments unchanged
            data["classes"] = {name: code.digest for name, code in sorted(self.classes.items())}
        text = json.dumps(data, sort_keys=True, separators=(",", ":"))
        return "xxh3-128:" + xxhash.xxh3_128_hexdigest(text.encode("utf-8", "surrogateescape"))

    @property
    def hex(self) -> str:
        """The key's hex digits: the name of its folder in the state."""
        return self.digest.partition(":")[2]


def _code_changes(before: Any, after: Any) -> tuple[str, ...]:
    try:
        return describe_changes(CodeKey.from_json(before), CodeKey.from_json(after))
    except (KeyError, TypeError, ValueError):  # a record of another form: say so, no more
        return ("the code changed",)


def changes(before: Mapping[str, Any], after: Mapping[str, Any]) -> list[str]:
    """Every part in which the call ``after`` differs from the recorded call ``before`` (both
    as :meth:`CallKey.as_json`), one line each; empty when they are the same call."""
    if before.get("schema") != after.get("schema"):
        return ["the key's schema changed (a taskkit upgrade): every call runs again once"]
    lines = list(_code_changes(before.get("code"), after.get("code")))
    old_args = {n: (d, s) for n, (d, s) in dict(before.get("arguments") or {}).items()}
    new_args = {n: (d, s) for n, (d, s) in dict(after.get("arguments") or {}).items()}
    lines += argument_changes(old_args, new_args)
    old_in, new_in = dict(before.get("inputs") or {}), dict(after.get("inputs") or {})
    for name in sorted(set(old_in) | set(new_in)):
        was, now = old_in.get(name), new_in.get(name)
        if was == now:
            continue
        if was is None:
            lines.append(f"input {name} added")
        elif now is None:
            lines.append(f"input {name} removed")
        elif was.get("url") != now.get("url"):
            lines.append(f"input {name}: {was.get('url')} -> {now.get('url')}")
        else:
            lines.append(f"input {name}: new version of {now.get('url')}")
    old_classes = dict(before.get("classes") or {})
    for name, code in sorted(dict(after.get("classes") or {}).items()):
        if name in old_classes and old_classes[name] != code:
            lines += [
                f"{line} (a class of an argument)"
                for line in _code_changes(old_classes[name], code)
            ]
    if list(before.get("outputs") or ()) != list(after.get("outputs") or ()):
        lines.append("the outputs changed")
    return lines
