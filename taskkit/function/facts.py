"""What is learned once of each piece of the user's code, and whose code it is.

For a function: the digest of its source's AST (else of its bytecode, with a note saying why),
the name it was defined under, and the globals, attribute chains and assigned globals its code
objects name (:func:`refs_of_function`, from the bytecode, nested code objects included). For a
class: the digest of its ``class`` statement and what its body names outside its methods. All
of it is kept per object (a function, a class) for the life of the process, in weak
dictionaries: the code of an object does not change while it lives (a function's ``__code__``
re-assigned is noticed). What its globals hold is not kept here: the walk reads them each time.

Whose code it is (:func:`is_users`): not a file under ``site-packages`` or ``dist-packages``,
not the standard library, not taskkit; code without a file is the user's unless its module is a
standard one. :func:`unwrapped` says which functions, classes and modules a value stands for.
"""

from __future__ import annotations

import ast
import dis
import functools
import os
import sys
import sysconfig
import types
import weakref
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from taskkit.exceptions import BadTask
from taskkit.function.source import (
    SCHEMA,
    Source,
    ast_digest,
    bytecode_digest,
    dump_code,
    dump_value,
    encoded,
    hex_digest,
    source_of,
)

__all__ = [
    "FactKind",
    "Facts",
    "Refs",
    "facts_of_class",
    "facts_of_function",
    "is_code",
    "is_made",
    "is_simple",
    "is_users",
    "is_users_class",
    "is_users_module",
    "module_digest",
    "module_name",
    "own_functions",
    "qualname",
    "refs_of_assignment",
    "refs_of_function",
    "unwrapped",
]

#: How a function or class is known: by its source's AST, or by its bytecode.
FactKind = Literal["function", "class", "bytecode"]
_SIMPLE_TYPES = (int, float, str, bytes, bool, type(None))
_LOAD_GLOBAL = frozenset({"LOAD_GLOBAL", "LOAD_NAME", "LOAD_FROM_DICT_OR_GLOBALS"})
_LOAD_ATTR = frozenset({"LOAD_ATTR", "LOAD_METHOD"})
_STORE_GLOBAL = frozenset({"STORE_GLOBAL", "DELETE_GLOBAL"})
_DEFS = (ast.FunctionDef, ast.AsyncFunctionDef)


def unwrapped(value: object, depth: int = 0) -> Iterator[object]:
    """The functions, classes and modules ``value`` stands for: a taskkit task stands for the
    function it wraps, a ``functools.wraps`` wrapper for itself and what it wraps, a method
    for its function, a ``functools.partial`` for its function."""
    if depth > 50 or is_simple(value):
        return
    if isinstance(value, (type, types.ModuleType)):
        yield value
        return
    try:
        task = getattr(value, "__taskkit_task__", False) is True
    except Exception:  # an object's __getattr__ may raise anything: then it is no task
        task = False
    if task:  # the task object is taskkit's; the code is what it wraps
        yield from unwrapped(getattr(value, "__wrapped__", None), depth + 1)
        return
    if isinstance(value, types.FunctionType):
        yield value
    if isinstance(value, (types.MethodType, staticmethod, classmethod)):
        yield from unwrapped(value.__func__, depth + 1)
    elif isinstance(value, property):
        for accessor in (value.fget, value.fset, value.fdel):
            yield from unwrapped(accessor, depth + 1)
    elif isinstance(value, functools.partial):
        yield from unwrapped(value.func, depth + 1)
    elif callable(value):
        try:
            wrapped = getattr(value, "__wrapped__", None)
        except Exception:  # as above: then it is no wrapper
            return
        if wrapped is not None and wrapped is not value:
            yield from unwrapped(wrapped, depth + 1)


def is_code(value: object) -> bool:
    """Whether ``value`` is a Python function or a class."""
    return isinstance(value, (types.FunctionType, type))


def is_simple(value: object) -> bool:
    """Whether ``value`` is a constant whose value is part of the key."""
    kind = type(value)
    if kind in _SIMPLE_TYPES:
        return True
    if kind is tuple or kind is frozenset:
        return all(is_simple(item) for item in value)  # type: ignore[attr-defined]
    return False


def qualname(fn: types.FunctionType) -> str:
    """Where ``fn`` was defined: its code's name, which ``functools.wraps`` does not copy
    onto a wrapper as it does ``__qualname__`` (before Python 3.11, with no source to tell,
    the latter)."""
    return getattr(fn.__code__, "co_qualname", fn.__qualname__)


def module_name(namespace: Mapping[str, object], default: str | None = None) -> str:
    """The module's name a part is named by: a script run as ``python -m pkg.mod`` is
    ``pkg.mod``, as it is when imported."""
    name = namespace.get("__name__", default)
    if name == "__main__":
        spec = namespace.get("__spec__")
        name = getattr(spec, "name", None) or name
    return name if isinstance(name, str) else "<exec>"


# -- whose code it is -----------------------------------------------------------------------


@functools.cache
def _library_roots() -> tuple[str, ...]:
    """Directories whose files are never the user's: the standard library and taskkit."""
    paths = sysconfig.get_paths()
    roots = {paths["stdlib"], paths["platstdlib"], str(Path(__file__).parents[1])}
    return tuple(os.path.join(os.path.realpath(root), "") for root in roots)


@functools.lru_cache(maxsize=4096)
def is_users(filename: str | None, module: str | None) -> bool:
    """Whether code from ``filename`` (module ``module``) is the user's own."""
    top = (module or "").partition(".")[0]
    if top == "taskkit":
        return False
    if filename and not filename.startswith("<"):
        path = os.path.realpath(filename)
        parts = Path(path).parts
        if "site-packages" in parts or "dist-packages" in parts:
            return False
        return not path.startswith(_library_roots())
    return top not in sys.stdlib_module_names and top not in sys.builtin_module_names


def is_made(fn: types.FunctionType) -> bool:
    """Whether ``fn`` has no source because a library made it (found in a class's dict)."""
    filename = fn.__code__.co_filename
    return filename.startswith("<") and source_of(filename, fn.__globals__) is None


def is_users_module(module: types.ModuleType) -> bool:
    """Whether ``module`` is one of the user's own."""
    return is_users(getattr(module, "__file__", None), module.__name__)


def is_users_class(cls: type) -> bool:
    """Whether ``cls`` was defined in the user's own code (learned once per class)."""
    known = _CLASS_IS_USERS.get(cls)
    if known is None:
        builtin = cls.__module__ in sys.builtin_module_names
        known = _CLASS_IS_USERS[cls] = not builtin and is_users(_file_of_class(cls), cls.__module__)
    return known


def _file_of_class(cls: type) -> str | None:
    """The file a class was defined in: its module's, else one of its methods' (a class
    defined in a notebook's ``__main__``, which has no file)."""
    module = sys.modules.get(cls.__module__)
    filename = getattr(module, "__file__", None)
    if isinstance(filename, str):
        return filename
    for method in own_functions(cls):
        if source_of(method.__code__.co_filename, method.__globals__) is not None:
            return method.__code__.co_filename
    return None


def own_functions(cls: type) -> Iterator[types.FunctionType]:
    """The functions defined in the body of ``cls`` (methods, static and class methods,
    properties' accessors), as its dict holds them."""
    inside = cls.__qualname__ + "."
    for value in vars(cls).values():
        for found in unwrapped(value):
            if isinstance(found, types.FunctionType) and found.__qualname__.startswith(inside):
                yield found


# -- what is learned once per object --------------------------------------------------------


@dataclass(frozen=True)
class Refs:
    """The globals a piece of code loads, the attribute chains it loads from them
    (``("helpers", "clean_rows")``) and the globals it assigns."""

    names: tuple[str, ...] = ()
    chains: tuple[tuple[str, ...], ...] = ()
    stored: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Facts:
    """What is learned once of a function or class: its digest and, for a class, what its
    body names outside its methods."""

    kind: FactKind
    digest: str
    note: str = ""
    refs: Refs = field(default_factory=Refs)
    #: a function's qualified name, where it was defined
    name: str = ""


_FUNCTION_FACTS: weakref.WeakKeyDictionary[types.FunctionType, tuple[types.CodeType, Facts]]
_FUNCTION_FACTS = weakref.WeakKeyDictionary()
_FUNCTION_REFS: weakref.WeakKeyDictionary[types.FunctionType, tuple[types.CodeType, Refs]]
_FUNCTION_REFS = weakref.WeakKeyDictionary()
_CLASS_FACTS: weakref.WeakKeyDictionary[type, Facts] = weakref.WeakKeyDictionary()
_CLASS_IS_USERS: weakref.WeakKeyDictionary[type, bool] = weakref.WeakKeyDictionary()


def facts_of_function(fn: types.FunctionType) -> Facts:
    code = fn.__code__
    cached = _FUNCTION_FACTS.get(fn)
    if cached is not None and cached[0] is code:  # __code__ can be re-assigned
        return cached[1]
    source = None if code.co_name == "<lambda>" else source_of(code.co_filename, fn.__globals__)
    node = source.functions.get((code.co_firstlineno, code.co_name)) if source else None
    name = qualname(fn)
    if source is not None and node is not None:
        name = source.qualnames[(code.co_firstlineno, code.co_name)]
    what = f"{name.replace('.<locals>', '')}()"
    digest = _digest_or_none(node) if node is not None else None
    stale = node is not None and source is not None and not _runs_as_written(code, node)
    if digest is not None and not stale:
        facts = Facts("function", digest, name=name)
    else:
        if code.co_name == "<lambda>":
            where = f"{module_name(fn.__globals__)} line {code.co_firstlineno}"
            why = f"the lambda of {where} is not read from its source (its line may hold others)"
        elif source is None:
            why = f"{what} has no source (defined in a REPL or exec)"
        elif node is None or stale:
            why = f"{what} is not what its source file says (the file changed since import)"
        else:
            why = f"{what} is nested too deeply to hash its source"
        note = f"{why}; its bytecode and constants are hashed, which change with Python's version"
        facts = Facts("bytecode", bytecode_digest(code, fn.__doc__), note, name=name)
    _FUNCTION_FACTS[fn] = (code, facts)
    return facts


#: The ``__future__`` flags a function's compiled code records (they change how it compiles).
_FUTURE_FLAGS = functools.reduce(
    lambda flags, name: flags | getattr(__import__("__future__"), name).compiler_flag,
    __import__("__future__").all_feature_names,
    0,
)


def _runs_as_written(code: types.CodeType, node: ast.AST) -> bool:
    """Whether ``code`` (running) is what the source file says now: a file edited after
    import, its lines where they were, must not key the running old code by the new source.
    The whole file is compiled (once per version of it), as an import compiles it; source that
    cannot be compiled is taken as written."""
    del node  # found by its place in the compiled file instead
    built = _compiled(code.co_filename, code.co_flags & _FUTURE_FLAGS).get(
        (code.co_firstlineno, code.co_name)
    )
    return built is None or _same_code(built, code)


@functools.lru_cache(maxsize=256)
def _compiled_version(
    filename: str, flags: int, version: tuple[int, int]
) -> dict[tuple[int, str], types.CodeType]:
    try:
        with open(filename, "rb") as file:
            text = file.read()
        module = compile(text, filename, "exec", flags=flags, dont_inherit=True)
    except (OSError, SyntaxError, ValueError):
        return {}
    found: dict[tuple[int, str], types.CodeType] = {}
    pending = [module]
    while pending:
        current = pending.pop()
        for const in current.co_consts:
            if isinstance(const, types.CodeType):
                found.setdefault((const.co_firstlineno, const.co_name), const)
                pending.append(const)
    return found


def _compiled(filename: str, flags: int) -> dict[tuple[int, str], types.CodeType]:
    try:
        stat = os.stat(filename)
    except OSError:
        return {}
    return _compiled_version(filename, flags, (stat.st_mtime_ns, stat.st_size))


def _same_code(a: types.CodeType, b: types.CodeType) -> bool:
    """Same instructions, names and constants, nested code included (line numbers aside)."""
    if (a.co_code, a.co_names, a.co_varnames) != (b.co_code, b.co_names, b.co_varnames):
        return False
    nested_a = [c for c in a.co_consts if isinstance(c, types.CodeType)]
    nested_b = [c for c in b.co_consts if isinstance(c, types.CodeType)]
    plain_a = [c for c in a.co_consts if not isinstance(c, types.CodeType)]
    plain_b = [c for c in b.co_consts if not isinstance(c, types.CodeType)]
    if len(nested_a) != len(nested_b) or plain_a != plain_b:
        return False
    return all(_same_code(x, y) for x, y in zip(nested_a, nested_b, strict=True))


def refs_of_function(fn: types.FunctionType) -> Refs:
    code = fn.__code__
    cached = _FUNCTION_REFS.get(fn)
    if cached is not None and cached[0] is code:
        return cached[1]
    names: dict[str, None] = {}
    chains: dict[tuple[str, ...], None] = {}
    stored: set[str] = set()
    pending = [code]
    while pending:
        current = pending.pop()
        chain: list[str] = []
        for instruction in dis.get_instructions(current):
            if instruction.opname in _LOAD_ATTR and chain:
                chain.append(instruction.argval)
                continue
            if len(chain) > 1:
                chains[tuple(chain)] = None
            chain = []
            if instruction.opname in _LOAD_GLOBAL:
                names[instruction.argval] = None
                chain = [instruction.argval]
            elif instruction.opname in _STORE_GLOBAL:
                stored.add(instruction.argval)
        if len(chain) > 1:
            chains[tuple(chain)] = None
        pending.extend(const for const in current.co_consts if isinstance(const, types.CodeType))
    refs = Refs(tuple(names), tuple(chains), frozenset(stored))
    _FUNCTION_REFS[fn] = (code, refs)
    return refs


def facts_of_class(cls: type) -> Facts:
    cached = _CLASS_FACTS.get(cls)
    if cached is not None:
        return cached
    module = sys.modules.get(cls.__module__)
    filename = _file_of_class(cls)
    source = source_of(filename, vars(module) if module else None) if filename else None
    node = _find_class(source, filename, cls) if source and filename else None
    digest = _digest_or_none(node) if node is not None else None
    if node is not None and digest is not None:
        facts = Facts("class", digest, refs=_refs_of_nodes([*node.decorator_list, *node.body]))
    else:
        # Its methods' bytecode and its simple attributes stand for the body nobody can read.
        out = [SCHEMA, b"class"]
        for name, value in sorted(vars(cls).items()):
            functions = [
                found for found in unwrapped(value) if isinstance(found, types.FunctionType)
            ]
            if functions:
                out.append(encoded(name))
                for function in functions:
                    dump_code(function.__code__, out, function.__doc__)
            elif is_simple(value) and name not in ("__module__", "__doc__", "__qualname__"):
                out.append(encoded(name))
                dump_value(value, out)
        note = (
            f"class {cls.__qualname__} has no source (defined in a REPL or exec); its methods'"
            " bytecode and its constants are hashed, which change with Python's version"
        )
        facts = Facts("bytecode", hex_digest(b"".join(out)), note)
    _CLASS_FACTS[cls] = facts
    return facts


def _digest_or_none(node: ast.AST) -> str | None:
    """The AST digest of ``node``; None for code nested deeper than the recursion limit."""
    try:
        return ast_digest(node)
    except RecursionError:
        return None


def module_digest(module: types.ModuleType) -> str:
    filename = getattr(module, "__file__", None)
    source = source_of(filename, vars(module)) if filename else None
    if source is None:
        raise BadTask(f"depends=: module {module.__name__} has no Python source to hash")
    return source.digest


def _find_class(source: Source, filename: str, cls: type) -> ast.ClassDef | None:
    """The ``class`` statement that made ``cls``: the one its methods' lines fall in (those
    written in that file: a dataclass's ``__init__`` is not)."""
    candidates = source.classes.get(cls.__qualname__, [])
    lines = [
        fn.__code__.co_firstlineno
        for fn in own_functions(cls)
        if fn.__code__.co_filename == filename
    ]
    first = getattr(cls, "__firstlineno__", None)  # Python 3.13
    for node in candidates:
        start = min([node.lineno, *(d.lineno for d in node.decorator_list)])
        end = node.end_lineno or node.lineno
        if first is not None:
            if first in (start, node.lineno):
                return node
        elif lines and all(start <= line <= end for line in lines):
            return node
    if first is None and not lines and candidates:
        return candidates[-1]  # nothing tells them apart: the last one ran last
    return None


def _refs_of_nodes(nodes: Sequence[ast.AST]) -> Refs:
    """What statements or expressions run at module or class level name, outside the bodies
    of the functions they define (which their code objects tell): a class's attributes'
    values, its methods' defaults, a nested class's body, an assignment's value."""
    names: dict[str, None] = {}
    chains: dict[tuple[str, ...], None] = {}
    pending = list(reversed(nodes))  # a loop, not recursion, as in source.py
    while pending:
        current = pending.pop()
        if isinstance(current, ast.Attribute):
            chain = _chain_of(current)
            if chain is not None:
                chains[chain] = None
                names[chain[0]] = None
                continue
        if isinstance(current, ast.Name) and isinstance(current.ctx, ast.Load):
            names[current.id] = None
        elif isinstance(current, _DEFS):
            # what runs where the function is defined: its decorators and defaults
            pending.extend([*current.decorator_list, current.args])
            continue
        pending.extend(reversed(list(ast.iter_child_nodes(current))))
    return Refs(tuple(names), tuple(chains))


_ASSIGNMENT_REFS: weakref.WeakKeyDictionary[Source, dict[str, Refs]] = weakref.WeakKeyDictionary()


def refs_of_assignment(source: Source, name: str) -> Refs:
    known = _ASSIGNMENT_REFS.setdefault(source, {})
    if name not in known:
        found = source.assignment(name)
        known[name] = _refs_of_nodes(found[2]) if found else Refs()
    return known[name]


def _chain_of(node: ast.Attribute) -> tuple[str, ...] | None:
    attrs = []
    current: ast.expr = node
    while isinstance(current, ast.Attribute):
        attrs.append(current.attr)
        current = current.value
    if not isinstance(current, ast.Name):
        return None
    return (current.id, *reversed(attrs))
