"""``NAME=VALUE`` words of ``taskkit call``, read by the annotations of the function's parameters.

:func:`parse_values` turns the words into the positional and keyword arguments of one call.
Each value is read by its parameter's annotation (:func:`typing.get_type_hints` on the wrapped
function, so ``from __future__ import annotations`` works): ``str`` (and no annotation), ``int``,
``float``, ``bool`` (``true``/``false``, ``yes``/``no``, ``on``/``off``, ``1``/``0``),
:class:`~pathlib.Path`, :class:`~enum.Enum` (by name, else by value), ``Literal[...]``,
``Decimal``, ``UUID``, ``date``/``datetime`` (ISO 8601), pydantic models (JSON), unions tried in
the order written, and ``X | None``, where the word ``none`` is ``None``. A list parameter
(``list[X]``, ``tuple[X, ...]``, ``set[X]``, ``Sequence[X]``) takes one ``NAME=VALUE`` per item.

Invariant: every bad word raises :class:`~taskkit.exceptions.UsageError` whose one line names
the parameter and the type it expects; nothing here prints, imports click, or runs user code
other than the annotations' own parsers (an Enum's lookup, a pydantic model's validation).
"""

from __future__ import annotations

import enum
import inspect
import re
import types
import typing
import uuid
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from pathlib import PurePath

from taskkit.exceptions import UsageError

__all__ = ["Kind", "kind_of", "parse_values", "split_word"]

_TRUE = frozenset({"true", "yes", "on", "1"})
_FALSE = frozenset({"false", "no", "off", "0"})
#: What ``X | None`` reads as ``None``. Written lower case, as in ``NAME=none``; ``None`` too.
_NONE = frozenset({"none", "None"})
_INT = re.compile(r"[+-]?[0-9]+")
#: A list parameter's type (or its origin: typing.List's is list) and what builds its value.
_COLLECTIONS: Mapping[object, Callable[[list[object]], object]] = {
    list: list,
    tuple: tuple,
    set: set,
    frozenset: frozenset,
    Sequence: list,
}


class _Refused(ValueError):
    """A word its kind cannot read; the caller names the parameter."""


@dataclass(frozen=True)
class Kind:
    """How the words of one parameter become its value: ``expected`` says what a word must be
    (for the error line), ``read`` reads one word, ``gather`` (a list parameter) builds the
    value from every word given for it; a kind without ``gather`` takes exactly one word.
    ``unreadable`` is set for a type no word can give."""

    expected: str
    read: Callable[[str], object]
    gather: Callable[[list[object]], object] | None = None
    unreadable: bool = False


def kind_of(annotation: object) -> Kind:
    """The :class:`Kind` of a parameter annotated ``annotation`` (``inspect.Parameter.empty``
    or ``typing.Any``: a string)."""
    if annotation in (inspect.Parameter.empty, typing.Any, str, object):
        return Kind("a string", str)
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Annotated:
        return kind_of(args[0])
    if origin is typing.Union or isinstance(annotation, types.UnionType):
        return _union(args)
    if origin is typing.Literal:
        return _literal(args)
    if annotation in _COLLECTIONS or origin in _COLLECTIONS:
        if origin is tuple and args and (len(args) != 2 or args[1] is not Ellipsis):
            return _unreadable(_shown(annotation))  # a fixed-length tuple: no one item type
        item = kind_of(args[0] if args else str)
        gather = _COLLECTIONS[origin if origin is not None else annotation]
        return Kind(item.expected, item.read, gather)
    if isinstance(annotation, type):
        return _class_kind(annotation)
    return _unreadable(_shown(annotation))


def _class_kind(cls: type) -> Kind:
    if issubclass(cls, enum.Enum):
        return _enum(cls)
    if cls is bool:
        return Kind("true or false", _bool)
    if cls is int:
        return Kind("an integer", _int)
    if cls is float:
        return Kind("a number", _float)
    if issubclass(cls, PurePath):
        return Kind("a path", lambda word: _path(cls, word))
    if cls is Decimal:
        return Kind("a decimal number", _decimal)
    if cls is uuid.UUID:
        return Kind("a UUID", _parsed(uuid.UUID))
    if cls is datetime:  # before date: a datetime is a date
        return Kind("an ISO 8601 date and time", _parsed(datetime.fromisoformat))
    if cls is date:
        return Kind("an ISO 8601 date (2026-12-03)", _parsed(date.fromisoformat))
    if callable(getattr(cls, "model_validate_json", None)):  # a pydantic model
        return Kind(f"a JSON object for {cls.__name__}", lambda word: _model(cls, word))
    return _unreadable(_shown(cls))


def _union(members: tuple[object, ...]) -> Kind:
    optional = type(None) in members
    kinds = [kind_of(member) for member in members if member is not type(None)]
    if len(kinds) == 1 and kinds[0].gather is not None:  # list[X] | None: items, or none
        inner = kinds[0]

        def item_or_none(word: str) -> object:
            return None if word in _NONE else inner.read(word)

        return Kind(f"{inner.expected} or none", item_or_none, inner.gather)
    if any(kind.gather is not None or kind.unreadable for kind in kinds):
        return _unreadable(" | ".join(_shown(member) for member in members))
    expected = " or ".join([kind.expected for kind in kinds] + (["none"] if optional else []))

    def read(word: str) -> object:
        if optional and word in _NONE:
            return None
        refusals = []
        for kind in kinds:
            try:
                return kind.read(word)
            except _Refused as exc:
                refusals.append(exc)
        raise refusals[0] if len(refusals) == 1 else _Refused(word)  # one type: its own detail

    return Kind(expected, read)


def _literal(choices: tuple[object, ...]) -> Kind:
    shown = ", ".join(_word_of(choice) for choice in choices)

    def read(word: str) -> object:
        for choice in choices:
            if choice is None and word in _NONE:
                return None
            if choice is not None and _word_of(choice) == word:
                return choice
        raise _Refused(word)

    return Kind(f"one of {shown}", read)


def _word_of(choice: object) -> str:
    """How a Literal's value is written on the command line."""
    if isinstance(choice, bool):
        return "true" if choice else "false"
    if isinstance(choice, enum.Enum):
        return choice.name
    if choice is None:
        return "none"
    return str(choice)


def _enum(cls: type[enum.Enum]) -> Kind:
    members = list(cls)
    names = ", ".join(member.name for member in members)

    def read(word: str) -> object:
        if word in cls.__members__:
            return cls.__members__[word]
        for member in members:  # by value, as written: Color.RED = "red" reads "red"
            if _word_of(member.value) == word:
                return member
        raise _Refused(word)

    return Kind(f"one of {names} ({cls.__name__})", read)


def _unreadable(shown: str) -> Kind:
    def read(word: str) -> object:
        raise _Refused(word)

    return Kind(f"{shown}, a type taskkit call cannot read from a word", read, unreadable=True)


def _shown(annotation: object) -> str:
    """``dict[str, int]``, ``Frame``: an annotation as its source would write it."""
    if isinstance(annotation, type) and not typing.get_args(annotation):
        return annotation.__name__
    if annotation is type(None):
        return "None"
    return str(annotation).replace("typing.", "")


def _bool(word: str) -> bool:
    lowered = word.lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise _Refused(word)


def _int(word: str) -> int:
    # int() would also take "1_000", " 7" and Unicode digits: a typo should not become a key.
    if _INT.fullmatch(word) is None:
        raise _Refused(word)
    try:
        return int(word)
    except ValueError:  # longer than Python converts (sys.get_int_max_str_digits)
        raise _Refused(f"{len(word)} digits: more than Python reads") from None


def _float(word: str) -> float:
    try:
        return float(word)
    except ValueError:
        raise _Refused(word) from None


def _decimal(word: str) -> Decimal:
    try:
        return Decimal(word)
    except InvalidOperation:
        raise _Refused(word) from None


def _path(cls: type, word: str) -> object:
    if not word or "\0" in word:
        raise _Refused(word)
    return cls(word)


def _parsed(parse: Callable[[str], object]) -> Callable[[str], object]:
    def read(word: str) -> object:
        try:
            return parse(word)
        except ValueError:
            raise _Refused(word) from None

    return read


def _model(cls: type, word: str) -> object:
    try:
        return cls.model_validate_json(word)  # type: ignore[attr-defined]
    except ValueError as exc:  # pydantic's ValidationError is a ValueError
        raise _Refused(_complaint(exc) or word) from None


def _complaint(exc: ValueError) -> str:
    """``width: Field required`` of a pydantic validation error (its first problem, and how
    many more), as one line."""
    errors = getattr(exc, "errors", None)
    found = errors() if callable(errors) else []
    if not found:
        lines = str(exc).splitlines()
        return lines[0] if lines else ""
    first = found[0]
    where = ".".join(str(part) for part in first.get("loc", ()))
    said = f"{where}: {first.get('msg', '')}" if where else str(first.get("msg", ""))
    more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
    return said.replace("\n", " ") + more


def split_word(word: str) -> tuple[str, str]:
    """``("max_rows", "3")`` of ``"max-rows=3"``: a dash in NAME is an underscore. Raises
    :class:`UsageError` for a word that is not ``NAME=VALUE`` with NAME a Python name."""
    name, sep, value = word.partition("=")
    name = name.replace("-", "_")
    if not sep or not name.isidentifier():
        raise UsageError(f"expected NAME=VALUE (NAME a parameter of the function), not {word!r}")
    return name, value


def parse_values(
    fn: Callable[..., object],
    words: Sequence[str],
    *,
    signature: inspect.Signature | None = None,
    supplied: Collection[str] = (),
) -> tuple[tuple[object, ...], dict[str, object]]:
    """The ``(args, kwargs)`` of calling ``fn`` with ``words`` (``NAME=VALUE`` each).

    ``signature`` is ``fn``'s unless given (a wrapper's); ``supplied`` names parameters the
    caller fills itself (a task's staged inputs), which the words may not give. Defaults are
    left to the call. Raises :class:`UsageError`, one line naming the parameter and the type
    it expects, for a word that is not NAME=VALUE, an unknown or supplied NAME, a NAME given
    twice that is not a list, a value its type cannot read, and missing required parameters.
    """
    signature = signature or inspect.signature(fn)
    hints = _hints(fn, signature)
    params = signature.parameters
    var_keyword = next((p for p in params.values() if p.kind is p.VAR_KEYWORD), None)
    given: dict[str, list[str]] = {}
    for word in words:
        name, value = split_word(word)
        param = params.get(name)
        if name in supplied:
            raise UsageError(f"parameter {name} is an input the task stages itself; drop {word!r}")
        if (param is None and var_keyword is None) or param is var_keyword:
            raise UsageError(f"unknown parameter {name}: {_known(params, supplied)}")
        given.setdefault(name, []).append(value)
    values: dict[str, object] = {}
    for name, texts in given.items():
        param = params.get(name)
        owner = name if param is not None or var_keyword is None else var_keyword.name
        kind = _kind_for(name, hints.get(owner, str))
        if param is not None and param.kind is param.VAR_POSITIONAL:
            kind = Kind(kind.expected, kind.read, kind.gather or tuple)
        if kind.gather is None and len(texts) > 1:
            raise UsageError(f"parameter {name} is given {len(texts)} times; it takes one value")
        values[name] = _value(name, kind, texts)
    missing = [
        name
        for name, param in params.items()
        if param.default is param.empty
        and param.kind not in (param.VAR_POSITIONAL, param.VAR_KEYWORD)
        and name not in values
        and name not in supplied
    ]
    if missing:
        shown = ", ".join(
            f"{name} ({_kind_for(name, hints.get(name, str)).expected})" for name in missing
        )
        plural = "s" if len(missing) > 1 else ""
        raise UsageError(f"missing required parameter{plural} {shown}: give NAME=VALUE")
    return _arrange(params, values, supplied)


def _value(name: str, kind: Kind, texts: list[str]) -> object:
    if kind.unreadable:
        raise UsageError(f"parameter {name} is of type {kind.expected}")
    items = []
    for text in texts:
        try:
            items.append(kind.read(text))
        except _Refused as exc:
            said = str(exc)
            detail = f" ({said})" if said != text else ""
            shown = text if len(text) <= 80 else f"{text[:60]}... ({len(text)} characters)"
            raise UsageError(
                f"parameter {name}: {shown!r} is not {kind.expected}{detail}"
            ) from None
    if kind.gather is None:
        return items[0]
    if len(items) == 1 and items[0] is None:  # list[X] | None given as NAME=none
        return None
    if any(item is None for item in items):
        raise UsageError(f"parameter {name}: none cannot be one of several values")
    return kind.gather(items)


def _arrange(
    params: Mapping[str, inspect.Parameter], values: dict[str, object], supplied: Collection[str]
) -> tuple[tuple[object, ...], dict[str, object]]:
    """Positional-only parameters (and all before ``*args`` when it is given) by position,
    defaults filling the gaps; the rest by keyword. A supplied parameter takes no place: the
    arguments are those of a signature without it."""
    extra = values.pop(next((n for n, p in params.items() if p.kind is p.VAR_POSITIONAL), ""), None)
    args: list[object] = []
    kwargs: dict[str, object] = {}
    for name, param in params.items():
        if name in supplied:
            continue
        by_position = param.kind is param.POSITIONAL_ONLY or (
            extra is not None and param.kind is param.POSITIONAL_OR_KEYWORD
        )
        if by_position:
            if name in values:
                args.append(values.pop(name))
            elif param.default is not param.empty:
                args.append(param.default)
        elif param.kind is param.VAR_POSITIONAL:
            args.extend(typing.cast("Sequence[object]", extra or ()))
    kwargs.update(values)
    return tuple(args), kwargs


def _kind_for(name: str, annotation: object) -> Kind:
    if isinstance(annotation, _Unresolved):
        return Kind(
            f"{annotation.text}, an annotation that names nothing known ({annotation.why})",
            _unreadable(annotation.text).read,
            unreadable=True,
        )
    return kind_of(annotation)


@dataclass(frozen=True)
class _Unresolved:
    """An annotation string that names nothing the function's module defines."""

    text: str
    why: str


def _hints(fn: Callable[..., object], signature: inspect.Signature) -> dict[str, object]:
    """Each parameter's annotation, resolved; one that cannot be (a name imported only under
    TYPE_CHECKING) is :class:`_Unresolved`, an error only when its parameter is given."""
    try:
        return typing.get_type_hints(fn)
    except Exception:  # resolved one by one below, to blame only the bad one
        pass
    namespace = dict(getattr(inspect.unwrap(fn), "__globals__", {}))
    hints: dict[str, object] = {}
    for name, param in signature.parameters.items():
        annotation = param.annotation
        if isinstance(annotation, str):
            try:
                annotation = eval(annotation, namespace)  # the text of the module that defines fn
            except Exception as exc:  # whatever went wrong: unreadable
                annotation = _Unresolved(param.annotation, f"{type(exc).__name__}: {exc}")
        hints[name] = annotation
    return hints


def _known(params: Mapping[str, inspect.Parameter], supplied: Collection[str]) -> str:
    names = [
        name
        for name, param in params.items()
        if name not in supplied and param.kind is not param.VAR_KEYWORD
    ]
    return f"the function takes {', '.join(names)}" if names else "the function takes none"
