"""A task's result as stored bytes, and back.

Invariant: a call returns the same value on its first run and on every hit, so a result is
stored only if decoding gives it back exactly, types included all the way down.

* ``"json"`` (the default) takes ``None``, ``bool``, ``int``, finite ``float``, ``str``, and
  ``list`` and ``dict`` with ``str`` keys of those: nothing else comes back as it went in (a tuple
  comes back a list, an ``int`` key a ``str``, an ``IntEnum`` an ``int``, a set and NaN have no
  JSON form), so anything else is refused with a :class:`ResultError` at the first call, naming
  where in the result it is and what to do. Written compact, ASCII when the text holds a lone
  surrogate (else UTF-8), keys in insertion order (a dict's order is data).
* ``"pickle"`` takes whatever pickle can, protocol 5 (Python 3.8 and later read it). Reading a
  pickle runs code named in it: use it only with a state store that nobody untrusted can write.

A stored result that cannot be decoded is a :class:`~taskkit.exceptions.DataError`.
"""

from __future__ import annotations

import json
import math
import pickle
from typing import Literal

from taskkit.exceptions import EX_DATAERR, EX_RUN_DATA, DataError, MisuseError

__all__ = ["PICKLE_PROTOCOL", "ResultError", "ResultFormat", "decode_result", "encode_result"]

ResultFormat = Literal["json", "pickle"]
#: Fixed, not ``pickle.HIGHEST_PROTOCOL``: a newer Python's highest would be unreadable by the
#: older Pythons of other nodes sharing the state.
PICKLE_PROTOCOL = 5
_FORMATS = ("json", "pickle")


class ResultError(MisuseError):
    """A task's result cannot be stored in its format without changing: permanent, as bad
    data is (the same code would return it again)."""

    exit_code = EX_DATAERR
    run_code = EX_RUN_DATA


def encode_result(value: object, how: ResultFormat, *, name: str) -> bytes:
    """The bytes that store ``value``, the result of the task ``name``, in the format ``how``."""
    if how == "json":
        return _encode_json(value, name)
    if how == "pickle":
        try:
            return pickle.dumps(value, protocol=PICKLE_PROTOCOL)
        except (pickle.PicklingError, TypeError, AttributeError, RecursionError) as exc:
            raise ResultError(f"result of {name}() cannot be pickled: {exc}") from exc
    raise ResultError(f"result= is one of {_FORMATS}, not {how!r}")


def decode_result(data: bytes, how: ResultFormat) -> object:
    """The value stored as ``data`` in the format ``how``."""
    if how == "json":
        try:
            return json.loads(data)
        except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError alike
            raise DataError(f"a stored result is not valid JSON: {exc}") from exc
    if how == "pickle":
        try:
            return pickle.loads(data)  # trusted stores only (module docstring)
        except Exception as exc:  # unpickling can fail in any way the pickled classes can
            raise DataError(
                f"a stored result cannot be unpickled: {type(exc).__name__}: {exc}"
            ) from exc
    raise ResultError(f"result= is one of {_FORMATS}, not {how!r}")


def _encode_json(value: object, name: str) -> bytes:
    try:
        problem = _json_problem(value, "", set())
    except RecursionError:
        problem = ("it", "", "is nested too deeply for JSON", "return a flatter value")
    if problem is not None:
        thing, where, why, fix = problem
        at = f" at {where}" if where else ""
        raise ResultError(f"result of {name}(): {thing}{at} {why}; {fix}, or use result='pickle'")
    try:
        text = json.dumps(
            value, ensure_ascii=False, allow_nan=False, check_circular=False, separators=(",", ":")
        )
    except ValueError as exc:  # an int beyond the interpreter's limit on digits
        raise ResultError(f"result of {name}() cannot be written as JSON: {exc}") from exc
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: JSON's \\u escapes carry it
        return json.dumps(value, allow_nan=False, separators=(",", ":")).encode("ascii")


_SCALARS = (type(None), bool, int, str)
#: What JSON would not give back: (what it is, where, why not, what to do instead).
_Problem = tuple[str, str, str, str]


def _json_problem(value: object, where: str, open_ids: set[int]) -> _Problem | None:
    """The first part of ``value`` that JSON would not give back as it is: (what it is, where,
    why not, what to do), or None when all of it would come back exactly."""
    cls = type(value)
    if cls in _SCALARS:
        return None
    if cls is float:
        if math.isfinite(value):  # type: ignore[arg-type]
            return None
        return (f"the float {value!r}", where, "has no JSON form", "return None or a string")
    if cls is list or cls is dict:
        if id(value) in open_ids:
            return (_a(cls.__name__), where, "contains itself", "return a tree")
        open_ids.add(id(value))
        try:
            return _json_items(value, where, open_ids)  # type: ignore[arg-type]
        finally:
            open_ids.discard(id(value))
    if cls is tuple:
        return ("a tuple", where, "does not survive JSON (it comes back a list)", "return a list")
    if cls in (set, frozenset):
        return (_a(cls.__name__), where, "has no JSON form", "return a sorted list")
    base = next((b for b in (bool, int, float, str, list, dict) if isinstance(value, b)), None)
    if base is not None:
        return (
            _a(cls.__qualname__),
            where,
            f"does not survive JSON (it comes back a plain {base.__name__})",
            f"return a plain {base.__name__}",
        )
    return (_a(cls.__qualname__), where, "has no JSON form", "return plain data")


def _json_items(
    value: list[object] | dict[object, object], where: str, open_ids: set[int]
) -> _Problem | None:
    if isinstance(value, list):
        for i, item in enumerate(value):
            problem = _json_problem(item, f"{where}[{i}]", open_ids)
            if problem is not None:
                return problem
        return None
    for key, item in value.items():
        if type(key) is not str:
            return (
                f"the key {key!r}"[:60],
                where,
                f"does not survive JSON (a {type(key).__qualname__} key comes back a str)",
                "use str keys",
            )
        problem = _json_problem(item, f"{where}[{key!r}]", open_ids)
        if problem is not None:
            return problem
    return None


def _a(name: str) -> str:
    """``a list``, ``an ellipsis``: a type named as a sentence names it."""
    return ("an " if name[:1].lower() in "aeiou" else "a ") + name
