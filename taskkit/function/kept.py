"""Where a call's result is kept, and how it is read back on a hit.

A result of up to :data:`INLINE_RESULT` bytes lives in the success record itself (JSON as its
text, a pickle as base64); a larger one in a blob of its own beside the journal,
``result-NNNNN.json`` (or ``.pickle``), one name per attempt so a later attempt never rewrites a
blob a record names, with its size and digest in the record.

Invariants: the blob is written before the success record that names it (the caller's order);
a blob is read back only if its digest is the recorded one, else :class:`DataError` says so.
"""

from __future__ import annotations

import base64
from typing import Any

import xxhash

from taskkit.exceptions import DataError
from taskkit.function.results import ResultFormat, decode_result
from taskkit.runner.journal import Journal

__all__ = ["INLINE_RESULT", "keep_result", "result_problem", "stored_result"]

#: Results up to this size live in the outcome record; larger ones in a blob of their own.
INLINE_RESULT = 64 * 1024


def _digest(data: bytes) -> str:
    return "xxh3-128:" + xxhash.xxh3_128_hexdigest(data)


def keep_result(journal: Journal, number: int, data: bytes, how: ResultFormat) -> dict[str, Any]:
    """Keep attempt ``number``'s result ``data``; what its success record says of it."""
    if len(data) <= INLINE_RESULT:
        text = base64.b64encode(data).decode() if how == "pickle" else data.decode()
        return {"format": how, "inline": text}
    name = f"result-{number:05d}.{'pickle' if how == 'pickle' else 'json'}"
    journal.store.put(journal.root + name, data, {})
    return {"format": how, "blob": name, "size": len(data), "digest": _digest(data)}


def stored_result(journal: Journal, kept: dict[str, Any], name: str, how: ResultFormat) -> object:
    """The result a success record says it ``kept``, decoded (``name`` says whose) in the
    task's own format ``how`` only: a record in another format is not read (a JSON task never
    unpickles what a writer of the state put there), :class:`DataError`."""
    if kept.get("format", "json") != how:
        raise DataError(f"{name}: the stored result is not in the task's format ({how})")
    if "inline" in kept:
        text = kept["inline"]
        data = base64.b64decode(text) if how == "pickle" else text.encode()
    else:
        found = journal.store.load(journal.root + kept["blob"])
        if found is None or _digest(found[0]) != kept.get("digest"):
            raise DataError(
                f"{name}: the stored result {journal.url(kept['blob'])} is missing or damaged"
            )
        data = found[0]
    return decode_result(data, how)


def result_problem(journal: Journal, kept: dict[str, Any], how: ResultFormat) -> str | None:
    """Why the result a success record names cannot be returned, or None (reads its blob:
    for a plan, which says what a call would do)."""
    try:
        stored_result(journal, kept, "", how)
    except DataError as exc:
        return str(exc).lstrip(": ")
    return None
