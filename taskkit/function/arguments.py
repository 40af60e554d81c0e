"""A task's arguments: bound to its signature, keyed canonically, shown briefly, compared.

* :func:`bind` gives one mapping for every way of passing the same values (``f(2)``,
  ``f(x=2)`` and ``f(2, y=<default>)`` are one call), in the signature's order.
* :func:`hash_argument` keys one argument by :mod:`taskkit.function.canonical` (a ``Path`` by
  its content) and says how to show it; a value with no canonical form is an
  :class:`UnhashableArgument` that tells the user the way out (``ignore=`` or ``key=``).
* :func:`argument_changes` says, line by line, how two calls' arguments differ.

Invariant: what is shown of an argument is at most :data:`SHOWN_LIMIT` characters and never holds
a credential: the shown text is :func:`~taskkit.redaction.redact`-ed before it is cut (each
string in it is whole, so a cut can never leave part of a secret that redaction would no longer
recognise); ``bytes`` are shown by size only, text longer than 4096 characters by its length.
"""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import enum
import inspect
import pathlib
import sys
import uuid
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any, NamedTuple

from taskkit.content.statcache import StatCache
from taskkit.exceptions import BadTask, InputNotFound, IOFailure, PermissionDenied
from taskkit.function.canonical import Encoder, Unkeyable
from taskkit.function.pathcontent import PathContent
from taskkit.redaction import redact
from taskkit.transfer.summary import format_size

__all__ = [
    "SHOWN_LIMIT",
    "Hashed",
    "UnhashableArgument",
    "argument_changes",
    "bind",
    "check_names",
    "hash_argument",
    "show",
]

#: The longest an argument is shown (``explain``'s lines, the journal's record of a call).
SHOWN_LIMIT = 60
#: Longer text is shown by its length alone: redacting it first would cost too much.
_TEXT_SHOWN = 4096
#: Sets up to this size are shown sorted, the same in every process.
_SORTED_SHOWN = 32


class UnhashableArgument(BadTask):
    """An argument has no canonical form, so it cannot be part of a key."""


class Hashed(NamedTuple):
    """One argument keyed: its digest, how it is shown, and the local paths it named."""

    digest: str  # "xxh3-128:<hex>"
    shown: str  # "0.3", "'abc'", "<bytes, 100.0 MiB>", "<Path data/ref, 3 files>"
    paths: tuple[str, ...]  # absolute names of the files and directories it named


def check_names(
    signature: inspect.Signature, names: Collection[str], option: str = "ignore"
) -> None:
    """Refuse, at decoration, an ``option=`` naming something that is not a parameter."""
    unknown = [name for name in names if name not in signature.parameters]
    if unknown:
        known = ", ".join(signature.parameters) or "none"
        raise BadTask(
            f"{option}={sorted(names)!r}: {unknown[0]!r} is not a parameter of the function "
            f"(its parameters: {known})"
        )


def bind(
    signature: inspect.Signature,
    args: Sequence[object],
    kwargs: Mapping[str, object],
    *,
    ignore: Collection[str] = (),
) -> dict[str, object]:
    """Every parameter's value for this call, defaults applied, in the signature's order.

    ``*args`` is kept as a tuple under its name and ``**kwargs`` as a dict under its name; the
    names in ``ignore`` are left out. Arguments that do not fit the signature raise the
    ``TypeError`` that :meth:`inspect.Signature.bind` raises, the call's own error.
    """
    bound = signature.bind(*args, **kwargs)
    bound.apply_defaults()
    return {name: value for name, value in bound.arguments.items() if name not in ignore}


def hash_argument(
    name: str,
    value: object,
    *,
    cache: StatCache | None = None,
    keyer: Callable[[Any], object] | None = None,
    shown: bool = True,
) -> Hashed:
    """Key the argument ``name``: ``keyer(value)`` when the task gave one, else ``value``.
    Without ``shown`` its display is left empty (a hit never shows it: :func:`show` it when
    needed).

    A ``Path`` is read through ``cache``; one that does not exist is an
    :class:`~taskkit.exceptions.InputNotFound` naming the argument.
    """
    if keyer is not None:
        try:
            value = keyer(value)
        except Exception as exc:  # the task's key= function: the call never began
            raise BadTask(
                f"argument {name!r}: key={{{name!r}: ...}} raised {type(exc).__name__}: {exc}"
            ) from exc
    encoder = Encoder(cache=cache)
    try:
        encoder.encode(value)
    except Unkeyable as exc:
        at = f" (at {name}{exc.where})" if exc.where else ""
        raise UnhashableArgument(
            f"argument {name!r}: {exc.what}{at}; leave it out of the key with "
            f"ignore=[{name!r}] or give key={{{name!r}: ...}} a function that returns a value "
            "taskkit can key"
        ) from exc
    except (InputNotFound, IOFailure, PermissionDenied) as exc:  # say which argument
        raise type(exc)(
            f"argument {name!r}: {exc.message}", path=exc.filename, errno=exc.errno
        ) from exc
    paths = tuple(dict.fromkeys(content.abspath for content in encoder.paths.values()))
    return Hashed(str(encoder.digest()), show(value, encoder.paths) if shown else "", paths)


def show(value: object, paths: Mapping[int, PathContent] | None = None) -> str:
    """``value`` in at most :data:`SHOWN_LIMIT` characters, credentials hidden; ``paths`` is
    what :class:`~taskkit.function.canonical.Encoder` found for the ``Path`` values in it."""
    try:
        text = _render(value, SHOWN_LIMIT, paths or {}, set())
    except RecursionError:  # nested deeper than showing can follow: its type says enough
        text = f"<{type(value).__name__}>"
    if not (value is None or isinstance(value, (bool, int, float, complex))):
        # Once, on the whole text, before the cut (each part is whole in it): a secret cut
        # short would no longer be recognised.
        text = redact(text)
    return text if len(text) <= SHOWN_LIMIT else text[: SHOWN_LIMIT - 1] + "…"


def _render(value: object, room: int, paths: Mapping[int, PathContent], seen: set[int]) -> str:
    """``value`` as shown, stopping early once it is longer than ``room``."""
    if value is None or isinstance(value, (bool, float, complex)):
        return repr(value)
    if isinstance(value, enum.Enum):
        return f"{type(value).__name__}.{value.name}"
    if isinstance(value, int):
        return repr(value) if value.bit_length() < 128 else f"<int, {value.bit_length()} bits>"
    if isinstance(value, str):
        if len(value) > _TEXT_SHOWN:
            return f"<str, {len(value)} characters>"
        return repr(value)  # redacted by show(), with the rest
    if isinstance(value, (bytes, bytearray, memoryview)):
        return f"<{type(value).__name__}, {format_size(memoryview(value).nbytes)}>"
    if isinstance(value, pathlib.PurePath):
        return _render_path(value, paths.get(id(value)))
    if isinstance(value, (datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, (datetime.timedelta, decimal.Decimal, uuid.UUID)):
        return str(value)
    if id(value) in seen:
        return "..."
    seen.add(id(value))
    try:
        return _render_composite(value, room, paths, seen)
    finally:
        seen.discard(id(value))


def _render_composite(
    value: object, room: int, paths: Mapping[int, PathContent], seen: set[int]
) -> str:
    cls = type(value)
    if isinstance(value, tuple) and hasattr(cls, "_fields"):
        return _join(
            f"{cls.__name__}(", zip(cls._fields, value, strict=True), ")", room, paths, seen, "="
        )
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = ((f.name, getattr(value, f.name)) for f in dataclasses.fields(value))
        return _join(f"{cls.__name__}(", fields, ")", room, paths, seen, "=")
    pydantic = sys.modules.get("pydantic")
    if pydantic is not None and isinstance(value, pydantic.BaseModel):
        fields = ((name, getattr(value, name)) for name in type(value).model_fields)
        return _join(f"{cls.__name__}(", fields, ")", room, paths, seen, "=")
    if isinstance(value, dict):
        return _join("{", value.items(), "}", room, paths, seen, ": ")
    if isinstance(value, list):
        return _join("[", value, "]", room, paths, seen)
    if isinstance(value, tuple):
        return _join("(", value, ",)" if len(value) == 1 else ")", room, paths, seen)
    if isinstance(value, (set, frozenset)):
        if not value:
            return f"{cls.__name__}()"
        if len(value) <= _SORTED_SHOWN:  # a set's order differs from process to process
            shown = sorted(_render(item, room, paths, seen) for item in value)
            return "{" + ", ".join(shown) + "}"
        return _join("{", value, "}", room, paths, seen)
    shape = getattr(value, "shape", None)
    if isinstance(shape, tuple):  # a numpy array, a pandas object
        dtype = getattr(value, "dtype", None)
        described = f"{dtype}, " if dtype is not None else ""
        return f"<{cls.__name__}, {described}shape {shape}>"
    return f"<{cls.__name__}>"


def _join(
    opening: str,
    items: Any,
    closing: str,
    room: int,
    paths: Mapping[int, PathContent],
    seen: set[int],
    pairs: str = "",
) -> str:
    """Items between ``opening`` and ``closing``, stopping once they no longer fit in ``room``.
    With ``pairs="="`` the items are (field name, value), written ``a=1``; with ``pairs=": "``
    they are (key, value), written ``'a': 1``."""
    text = opening
    for n, item in enumerate(items):
        if len(text) > room:
            return text + "…"
        if n:
            text += ", "
        if pairs == "=":
            text += f"{item[0]}="
        elif pairs:
            text += _render(item[0], room - len(text), paths, seen) + pairs
        text += _render(item[1] if pairs else item, room - len(text), paths, seen)
    return text + closing


def _render_path(value: pathlib.PurePath, content: PathContent | None) -> str:
    name = redact(str(value))
    if content is None:
        detail = ""
    elif content.files is None:
        detail = f", {format_size(content.size)}"
    else:
        detail = f", {content.files} file{'' if content.files == 1 else 's'}"
    room = SHOWN_LIMIT - len("<Path >") - len(detail)
    if len(name) > room:  # the end of a path says more than its start
        name = "…" + name[len(name) - room + 1 :]
    return f"<Path {name}{detail}>"


def argument_changes(
    old: Mapping[str, tuple[str, str]], new: Mapping[str, tuple[str, str]]
) -> list[str]:
    """How the arguments of two calls differ, one line per argument, in ``new``'s order then
    the removed ones; each mapping is name -> (digest, shown)."""
    lines = []
    for name, (digest, shown) in new.items():
        if name not in old:
            lines.append(f"argument {name} added")
            continue
        old_digest, old_shown = old[name]
        if old_digest == digest:
            continue
        if old_shown == shown:
            lines.append(f"argument {name}: content changed ({shown})")
        else:
            lines.append(f"argument {name}: {old_shown} -> {shown}")
    lines.extend(f"argument {name} removed" for name in old if name not in new)
    return lines
