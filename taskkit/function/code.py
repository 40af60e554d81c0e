"""STAND-IN (replaced by the code helper's module at merge)."""

from __future__ import annotations

import ast
import inspect
import textwrap
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import xxhash

__all__ = ["CodeKey", "CodeKind", "CodePart", "code_key", "describe_part"]

CodeKind = Literal["function", "class", "constant", "version", "bytecode"]


@dataclass(frozen=True)
class CodePart:
    kind: CodeKind
    name: str
    digest: str
    shown: str = ""


@dataclass(frozen=True)
class CodeKey:
    parts: tuple[CodePart, ...]
    notes: tuple[str, ...] = ()

    @property
    def digest(self) -> str:
        text = "\0".join(f"{p.kind}\0{p.name}\0{p.digest}" for p in self.parts)
        return "xxh3-128:" + xxhash.xxh3_128_hexdigest(text.encode())


def code_key(
    fn: Callable[..., object], *, depends: Sequence[object] = (), version: str | None = None
) -> CodeKey:
    if version is not None:
        digest = "xxh3-128:" + xxhash.xxh3_128_hexdigest(version.encode())
        return CodeKey((CodePart("version", "version", digest, version),))
    source = textwrap.dedent(inspect.getsource(fn))
    digest = "xxh3-128:" + xxhash.xxh3_128_hexdigest(ast.dump(ast.parse(source)).encode())
    return CodeKey((CodePart("function", f"{fn.__module__}:{fn.__qualname__}", digest),))


def describe_part(part: CodePart) -> str:
    short = part.name.rpartition(":")[2]
    if part.kind == "class":
        return f"class {short}"
    if part.kind == "constant":
        return f"constant {short}"
    return f"{short}()"
