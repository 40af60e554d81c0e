"""The rows of a fan-out's parameter file (``taskkit batch tasks --params FILE``): one task's
values a row, each named by its column.

Two formats, told by the file's suffix:

* ``.csv``: a header row naming the columns, then one row a task (RFC 4180 quoting: a value
  may hold commas, quotes and newlines). Blank lines are skipped.
* ``.jsonl`` (or ``.ndjson``): one JSON object a line, its keys the columns (the first line's,
  in its order; every line has the same keys). A value is a string, a number (its text as
  written: ``1e3`` stays ``1e3``, ``0.10`` stays ``0.10``) or a boolean (``true``/``false``);
  ``null``, arrays and objects are refused, as no argument word can hold them unambiguously.

Invariants: every value handed out is text, exactly as the file holds it (a UTF-8 byte-order
mark at the start is dropped, nothing else is trimmed or normalised); a malformed file is a
:class:`~taskkit.exceptions.DataError` naming the file and the line, raised by
:func:`read_params` before any row is handed out (it reads the whole file once, to check it and
count its rows, holding one row at a time); :meth:`Params.rows` reads it again, one row at a
time, so a file of millions of rows costs no more memory than one of ten.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

from taskkit.exceptions import DataError, InputNotFound, UsageError, from_os_error

__all__ = ["MAX_VALUE", "Params", "read_params"]

Kind = Literal["csv", "jsonl"]
_SUFFIXES: dict[str, Kind] = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}
#: The longest value a row may hold, in characters: far beyond any argument worth a command
#: line; the csv module's own field limit, so both formats share it.
MAX_VALUE = 128 * 1024


@dataclass(frozen=True)
class Params:
    """A parameter file that was read whole and found well formed: its columns and how many
    rows it has."""

    path: str
    kind: Kind
    columns: tuple[str, ...]
    count: int

    def rows(self) -> Iterator[tuple[int, tuple[str, ...]]]:
        """``(line, values)`` of each row, in file order, the values in column order; a
        :class:`DataError` when the file changed since :func:`read_params` read it."""
        count = 0
        for line, values in _rows(self.path, self.kind, self.columns):
            count += 1
            if count > self.count:
                break
            yield line, values
        if count != self.count:
            raise DataError(f"{self.path}: changed while it was read (rows came and went)")


def read_params(path: str) -> Params:
    """The parameter file at ``path``, checked row by row (see the module docstring)."""
    suffix = os.path.splitext(path)[1].lower()
    kind = _SUFFIXES.get(suffix)
    if kind is None:
        raise UsageError(
            f"--params {path!r}: name a .csv or .jsonl file (the suffix tells the format)"
        )
    columns = _columns(path, kind)
    count = sum(1 for _ in _rows(path, kind, columns))
    if not count:
        raise DataError(f"{path}: no rows after the {'header' if kind == 'csv' else 'keys'}")
    return Params(path, kind, columns, count)


def _lines(path: str) -> Iterator[tuple[int, str]]:
    """``(number, text)`` of each line of ``path``, its line ending kept (the CSV reader needs
    it), decoded as UTF-8 one line at a time so that an undecodable byte is named by line."""
    try:
        file = open(path, "rb")  # noqa: SIM115  # closed below, after the generator ends
    except FileNotFoundError:
        raise InputNotFound(f"no parameter file {path!r}", path=path) from None
    except IsADirectoryError:
        raise InputNotFound(f"{path!r} is a directory, not a parameter file", path=path) from None
    except OSError as exc:
        raise from_os_error(exc, f"cannot read the parameter file {path!r}") from None
    with file:
        for number, raw in enumerate(file, 1):
            data = raw.removeprefix(b"\xef\xbb\xbf") if number == 1 else raw
            try:
                yield number, data.decode("utf-8")
            except UnicodeDecodeError:
                raise DataError(f"{path}: line {number} is not UTF-8 text") from None


def _columns(path: str, kind: Kind) -> tuple[str, ...]:
    """The column names: the CSV header, or the keys of the first JSON line."""
    if kind == "jsonl":
        for number, text in _lines(path):
            if text.strip():
                return tuple(_object(path, number, text))
        raise DataError(f"{path}: empty (no JSON object, so no columns)")
    for line, header in _csv_rows(path):
        seen: set[str] = set()
        for n, name in enumerate(header, 1):
            if not name:
                raise DataError(f"{path}: line {line}: column {n} of the header has no name")
            if name in seen:
                raise DataError(f"{path}: line {line}: the header names column {name!r} twice")
            seen.add(name)
        return tuple(header)
    raise DataError(f"{path}: empty (a header row naming the columns is needed)")


def _rows(path: str, kind: Kind, columns: tuple[str, ...]) -> Iterator[tuple[int, tuple[str, ...]]]:
    if kind == "jsonl":
        for number, text in _lines(path):
            if text.strip():
                yield number, _json_row(path, number, text, columns)
        return
    rows = _csv_rows(path)
    next(rows, None)  # the header
    for line, row in rows:
        if len(row) != len(columns):
            raise DataError(
                f"{path}: line {line}: {len(row)} values, but the header names "
                f"{len(columns)} columns"
            )
        for name, value in zip(columns, row, strict=True):
            _check_value(path, line, name, value)
        yield line, tuple(row)


def _csv_rows(path: str) -> Iterator[tuple[int, list[str]]]:
    """``(line, values)`` of each CSV row that is not blank, ``line`` where the row starts;
    a :class:`DataError` naming the line of a malformed one (a stray quote, a value past the
    csv module's field limit of 128 KiB, the mark of an unclosed quote)."""
    reader = csv.reader((text for _, text in _lines(path)), strict=True)
    while True:
        start = reader.line_num + 1
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise DataError(f"{path}: line {reader.line_num}: not CSV: {exc}") from None
        if row:
            yield start, row


def _object(path: str, number: int, text: str) -> dict[str, object]:
    """The JSON object on line ``number``, numbers kept as the text written."""

    def no_constant(name: str) -> object:
        raise DataError(f"{path}: line {number}: {name} is not a value JSON allows")

    from taskkit.runner.spec import unique_keys  # pydantic's module: only when JSON lines are read

    try:
        value = json.loads(
            text,
            object_pairs_hook=unique_keys,
            parse_int=str,
            parse_float=str,
            parse_constant=no_constant,
        )
    except json.JSONDecodeError as exc:
        raise DataError(
            f"{path}: line {number}: not JSON: {exc.msg} at column {exc.colno}"
        ) from None
    except DataError:
        raise
    except ValueError as exc:  # a key given twice
        raise DataError(f"{path}: line {number}: {exc}") from None
    if not isinstance(value, dict):
        raise DataError(f"{path}: line {number}: a JSON object is needed, one a line")
    if not value:
        raise DataError(f"{path}: line {number}: an empty object (no columns)")
    for key in value:
        if not key:
            raise DataError(f"{path}: line {number}: a key with no name")
    return value


def _json_row(path: str, number: int, text: str, columns: tuple[str, ...]) -> tuple[str, ...]:
    found = _object(path, number, text)
    if found.keys() != set(columns):
        missing = [c for c in columns if c not in found]
        extra = [k for k in found if k not in columns]
        what = f"no {missing[0]!r}" if missing else f"{extra[0]!r}, which the first line has not"
        raise DataError(f"{path}: line {number}: key {what} (every line needs the same keys)")
    values: list[str] = []
    for name in columns:
        value = found[name]
        if isinstance(value, bool):
            value = "true" if value else "false"
        elif not isinstance(value, str):  # numbers came as their text (parse_int/parse_float)
            kind = "an array" if isinstance(value, list) else "an object"
            kind = "null" if value is None else kind
            raise DataError(
                f"{path}: line {number}: {name!r} is {kind}; a string, number or boolean is needed"
            )
        _check_value(path, number, name, value)
        values.append(value)
    return tuple(values)


def _check_value(path: str, line: int, name: str, value: str) -> None:
    if "\0" in value:
        raise DataError(f"{path}: line {line}: {name!r} holds a NUL character, which no argv can")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate (JSON's "\ud800"): no text a program gets
        raise DataError(f"{path}: line {line}: {name!r} is not valid Unicode") from None
    if len(value) > MAX_VALUE:
        raise DataError(f"{path}: line {line}: {name!r} is longer than {MAX_VALUE} characters")
