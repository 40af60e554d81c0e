"""The user's source, parsed once per file, and the canonical digests of code and constants.

Three digests, each ``xxh3-128:<hex>`` over typed, length-prefixed bytes (so that no two
different things share their bytes):

* :func:`ast_digest`: an AST without positions, decorators, type comments or docstrings (of
  the module, and of every function and class inside the node). A field left empty is left out,
  so a field a newer Python adds to the AST (and leaves empty) does not change the digest of
  code that does not use it: the same source has the same digest on Pythons 3.10 to 3.13;
* :func:`bytecode_digest`: a code object's bytecode, constants (nested code objects the same
  way, the function's docstring left out) and names, for code without source; bytecode
  changes between Python versions;
* :func:`value_digest`: a constant (``None``, ``bool``, ``int``, ``float``, ``complex``,
  ``str``, ``bytes``, and tuples and frozensets of those), with its type: ``1``, ``1.0`` and
  ``True`` differ, and so do ``0.0`` and ``-0.0``; a frozenset's order does not count.

:func:`source_of` parses a file once per process, again only once its ``mtime_ns`` or size
changed, and indexes where its functions, classes and module-level assignments are.
"""

from __future__ import annotations

import ast
import functools
import linecache
import os
import tokenize
import types
from typing import Any

import xxhash

__all__ = [
    "SCHEMA",
    "Source",
    "ast_digest",
    "bytecode_digest",
    "dump_code",
    "dump_value",
    "encoded",
    "hex_digest",
    "source_of",
    "value_digest",
]

#: Starts the bytes of every digest here; another value when what goes into them changes.
SCHEMA = b"taskkit-code-v1"
_DEFS = (ast.FunctionDef, ast.AsyncFunctionDef)
_WITH_DOCSTRING = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
#: AST fields that are not code: decorators (a task's decorator carries its options, not its
#: code), type comments, and the ``u`` prefix of a string.
_SKIPPED_FIELDS = frozenset({"decorator_list", "type_comment", "kind"})
#: Module-level blocks whose statements still run at module level.
_BLOCKS = (
    ast.If,
    ast.Try,
    ast.With,
    ast.AsyncWith,
    *((ast.TryStar,) if hasattr(ast, "TryStar") else ()),
)


class Source:
    """A parsed source file and where its functions, classes and module globals are made."""

    def __init__(self, tree: ast.Module) -> None:
        self.tree = tree
        #: (first line, decorators included; name) -> the ``def`` statement
        self.functions: dict[tuple[int, str], ast.FunctionDef | ast.AsyncFunctionDef] = {}
        #: (first line, name) -> the function's qualified name
        self.qualnames: dict[tuple[int, str], str] = {}
        #: qualname -> the ``class`` statements of that qualname
        self.classes: dict[str, list[ast.ClassDef]] = {}
        #: module global -> the module-level statements that assign it, in order
        self.assignments: dict[str, list[ast.stmt]] = {}
        #: module global -> the ``from ... import`` that binds it: (module, level, name)
        self.imported: dict[str, tuple[str, int, str]] = {}
        self._index(tree, "")
        self._index_globals(tree.body)
        #: what :meth:`assignment` learned, by name
        self._assigned: dict[str, tuple[str, str, list[ast.expr]] | None] = {}

    def _index(self, tree: ast.AST, prefix: str) -> None:
        # A loop, not recursion: a long expression nests deeper than Python's recursion limit.
        pending = [(tree, prefix)]
        while pending:
            node, prefix = pending.pop()
            for child in ast.iter_child_nodes(node):
                if isinstance(child, _DEFS):
                    first = min([child.lineno, *(d.lineno for d in child.decorator_list)])
                    self.functions[(first, child.name)] = child
                    self.qualnames[(first, child.name)] = prefix + child.name
                    pending.append((child, f"{prefix}{child.name}.<locals>."))
                elif isinstance(child, ast.ClassDef):
                    self.classes.setdefault(prefix + child.name, []).append(child)
                    pending.append((child, f"{prefix}{child.name}."))
                else:
                    pending.append((child, prefix))
        for statements in self.classes.values():
            statements.sort(key=lambda statement: statement.lineno)

    def _index_globals(self, body: list[ast.stmt]) -> None:
        for statement in body:
            if isinstance(statement, _BLOCKS):
                for block in ("body", "orelse", "finalbody"):
                    self._index_globals(getattr(statement, block, []))
                for handler in getattr(statement, "handlers", []):
                    self._index_globals(handler.body)
            elif isinstance(statement, ast.ImportFrom):
                for alias in statement.names:
                    bound = alias.asname or alias.name
                    self.imported[bound] = (statement.module or "", statement.level, alias.name)
            elif isinstance(statement, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
                targets = (
                    statement.targets if isinstance(statement, ast.Assign) else [statement.target]
                )
                for target in targets:
                    for node in ast.walk(target):
                        if isinstance(node, ast.Name):
                            self.assignments.setdefault(node.id, []).append(statement)

    def assignment(self, name: str) -> tuple[str, str, list[ast.expr]] | None:
        """How the module global ``name`` is assigned at module level: the digest of the
        statements, the last value as source text, and the expressions that make it; None
        when no module-level assignment makes it."""
        if name not in self._assigned:
            statements = self.assignments.get(name)
            found = None
            if statements:
                out = [SCHEMA, b"assignment"]
                for statement in statements:
                    _dump_node(statement, out)
                last = statements[-1]
                value = getattr(last, "value", None)
                shown = ast.unparse(
                    last if isinstance(last, ast.AugAssign) or value is None else value
                )
                values = [
                    made for made in (getattr(each, "value", None) for each in statements) if made
                ]
                found = (hex_digest(b"".join(out)), shown, values)
            self._assigned[name] = found
        return self._assigned[name]

    @functools.cached_property
    def digest(self) -> str:
        """The digest of the whole module."""
        return ast_digest(self.tree)


#: path -> (what it was parsed from: (mtime_ns, size) of a file, else its text; the parse)
_SOURCES: dict[str, tuple[object, Source | None]] = {}


def source_of(filename: str, namespace: dict[str, Any] | None = None) -> Source | None:
    """The parsed source of ``filename``; None if there is none. Code without a file may
    still have lines in ``linecache`` (a notebook's cell, a module in a zip file), which
    ``namespace`` (the module's globals) helps find."""
    try:
        status = os.stat(filename)
    except (OSError, ValueError):
        status = None
    text: str | None = None
    if status is not None:
        stamp: object = (status.st_mtime_ns, status.st_size)
    else:
        text = "".join(linecache.getlines(filename, namespace))
        if not text:
            return None
        stamp = text
    cached = _SOURCES.get(filename)
    if cached is not None and cached[0] == stamp:
        return cached[1]
    try:
        if text is None:
            with tokenize.open(filename) as file:
                text = file.read()
        parsed: Source | None = Source(ast.parse(text, filename))
    except (OSError, SyntaxError, ValueError, RecursionError):
        parsed = None
    _SOURCES[filename] = (stamp, parsed)
    return parsed


def hex_digest(data: bytes) -> str:
    return f"xxh3-128:{xxhash.xxh3_128_hexdigest(data)}"


def value_digest(value: object) -> str:
    """The digest of a constant (see the module docstring)."""
    out = [SCHEMA, b"value"]
    dump_value(value, out)
    return hex_digest(b"".join(out))


def ast_digest(node: ast.AST) -> str:
    """The digest of an AST node (see the module docstring)."""
    out = [SCHEMA, b"ast"]
    _dump_node(node, out)
    return hex_digest(b"".join(out))


def bytecode_digest(code: types.CodeType, doc: str | None = None) -> str:
    """The digest of a code object, ``doc`` (its function's docstring) left out."""
    out = [SCHEMA, b"bytecode"]
    dump_code(code, out, doc)
    return hex_digest(b"".join(out))


def encoded(text: str) -> bytes:
    """A string's canonical bytes: length-prefixed UTF-8."""
    data = text.encode("utf-8", "surrogatepass")
    return b"s%d:" % len(data) + data


def dump_value(value: object, out: list[bytes]) -> None:
    """Append a constant's canonical bytes to ``out``."""
    if value is None:
        out.append(b"N")
    elif value is True or value is False:
        out.append(b"T" if value else b"F")
    elif type(value) is int:
        out.append(b"i%d;" % value)
    elif type(value) is float:
        out.append(b"f" + value.hex().encode() + b";")
    elif type(value) is complex:
        out.append(b"c" + value.real.hex().encode() + b"," + value.imag.hex().encode() + b";")
    elif type(value) is str:
        out.append(encoded(value))
    elif type(value) is bytes:
        out.append(b"b%d:" % len(value) + value)
    elif type(value) is tuple:
        out.append(b"(%d:" % len(value))
        for item in value:
            dump_value(item, out)
    elif type(value) is frozenset:
        items = []
        for item in value:
            parts: list[bytes] = []
            dump_value(item, parts)
            items.append(b"".join(parts))
        out.append(b"{%d:" % len(items) + b"".join(sorted(items)))
    elif value is Ellipsis:
        out.append(b"E")
    elif isinstance(value, types.CodeType):
        dump_code(value, out)
    else:  # no AST or code constant is anything else; keep the digest total all the same
        out.append(encoded(f"{type(value).__qualname__}:{value!r}"))


def dump_code(code: types.CodeType, out: list[bytes], doc: str | None = None) -> None:
    """Append a code object's canonical bytes to ``out``: no line numbers, no docstring."""
    consts = code.co_consts
    if doc is not None and consts and consts[0] == doc:
        # In its slot, None stands for "no docstring" (the bytecode indexes the slots).
        consts = (None, *consts[1:])
    counts = (code.co_argcount, code.co_posonlyargcount, code.co_kwonlyargcount, code.co_flags)
    out.append(b"code(%d,%d,%d,%d;" % counts)
    for data in (code.co_code, getattr(code, "co_exceptiontable", b"")):
        out.append(b"b%d:" % len(data) + data)
    for names in (code.co_names, code.co_varnames, code.co_freevars, code.co_cellvars):
        dump_value(names, out)
    out.append(b"(%d:" % len(consts))
    for const in consts:
        dump_value(const, out)
    out.append(b")")


class _Raw:
    """Bytes to append as they are (a constant's bytes are another thing: they get encoded)."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data


def _dump_node(root: ast.AST, out: list[bytes]) -> None:
    # A loop over a stack, not recursion: a long expression nests deeper than Python's
    # recursion limit.
    pending: list[object] = [root]
    while pending:
        item = pending.pop()
        if isinstance(item, _Raw):
            out.append(item.data)
        elif isinstance(item, ast.AST):
            out.append(encoded(type(item).__name__) + b"(")
            fields: list[object] = []
            for name in item._fields:
                value = getattr(item, name, None)
                if name in _SKIPPED_FIELDS or value is None or value == []:
                    continue
                if name == "body" and isinstance(item, _WITH_DOCSTRING) and _has_docstring(value):
                    value = value[1:]
                fields.append(_Raw(encoded(name) + b"="))
                if isinstance(value, list):
                    fields.append(_Raw(b"[%d:" % len(value)))
                    fields.extend(value)
                else:
                    fields.append(value)
            fields.append(_Raw(b")"))
            pending.extend(reversed(fields))
        else:
            dump_value(item, out)


def _has_docstring(body: list[ast.stmt]) -> bool:
    first = body[0]
    return (
        isinstance(first, ast.Expr)
        and isinstance(first.value, ast.Constant)
        and isinstance(first.value.value, str)
    )
