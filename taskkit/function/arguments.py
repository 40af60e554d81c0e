"""STAND-IN (replaced by the args helper's module at merge)."""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any, NamedTuple

import xxhash

from taskkit.content.statcache import StatCache
from taskkit.exceptions import MisuseError

__all__ = [
    "Hashed",
    "UnhashableArgument",
    "argument_changes",
    "bind",
    "check_names",
    "hash_argument",
]


class UnhashableArgument(MisuseError):
    pass


class Hashed(NamedTuple):
    digest: str
    shown: str
    paths: tuple[str, ...]


def check_names(signature: inspect.Signature, names: Collection[str], option: str) -> None:
    for name in names:
        if name not in signature.parameters:
            raise MisuseError(f"{option}: {name!r} is no parameter")


def bind(
    signature: inspect.Signature,
    args: Sequence[object],
    kwargs: Mapping[str, object],
    *,
    ignore: Collection[str] = (),
) -> dict[str, object]:
    bound = signature.bind(*args, **kwargs)
    bound.apply_defaults()
    return {k: v for k, v in bound.arguments.items() if k not in ignore}


def hash_argument(
    name: str,
    value: object,
    *,
    cache: StatCache | None = None,
    keyer: Callable[[Any], object] | None = None,
) -> Hashed:
    if keyer is not None:
        value = keyer(value)
    try:
        text = json.dumps([type(value).__name__, value], sort_keys=True)
    except TypeError:
        raise UnhashableArgument(f"argument {name!r}: cannot key {type(value).__name__}") from None
    return Hashed("xxh3-128:" + xxhash.xxh3_128_hexdigest(text.encode()), repr(value)[:60], ())


def argument_changes(
    old: Mapping[str, tuple[str, str]], new: Mapping[str, tuple[str, str]]
) -> list[str]:
    lines = []
    for name in new:
        if name not in old:
            lines.append(f"argument {name} added")
        elif old[name][0] != new[name][0]:
            lines.append(f"argument {name}: {old[name][1]} -> {new[name][1]}")
    lines += [f"argument {name} removed" for name in old if name not in new]
    return lines
