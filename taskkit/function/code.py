"""The code part of a function task's key: which code a call's result depends on, as digests.

:func:`code_key` starts from the task's function and gathers :class:`CodePart` s:

* the function itself, by the digest of its AST: ``ast`` nodes without positions, docstrings
  dropped (of the function, of the functions and classes inside it) and decorators left out (a
  task's decorator carries options such as retries, not code; a wrapper a decorator makes is
  followed as a function of its own). So comments, docstrings and re-formatting do not change
  a digest, and any edit of a statement does;
* every function and class *defined in the user's own modules* that its code names, found
  through the names its code objects load (nested code objects too: inner functions, lambdas,
  comprehensions), resolved in its globals, through attribute chains of the user's modules
  (``helpers.clean_rows(...)``) and through its closure's cells; followed recursively through
  their own globals, cycle-safe. A class is its body's AST (methods included); what its body,
  its methods and their decorators name is followed too, and so are its bases. Code a library
  made for a class (a dataclass's ``__init__``) is the class's; a class made by a call
  (``namedtuple``, ``Enum("Color", ...)``) is known by that statement, as below. A taskkit task
  stands for the function it wraps;
* the value of every simple module global it reads (``int``, ``float``, ``str``, ``bytes``,
  ``bool``, ``None`` and tuples and frozensets of those), hashed canonically with its type, so
  ``1``, ``1.0`` and ``True`` differ. Any other global it reads that is not code (a dict, an
  enum member, a configuration object) is known by the module-level statements of the user's
  module that assign it, by their AST, and what they name is followed: editing ``TABLE = {...}``
  changes the key, a cache the function fills at run time does not. A global the code itself
  assigns (``global n``) is state, not a constant, and is left out; so are dunder names
  (``__file__`` differs between checkouts). All of these are ``constant`` parts.

A user's own module is one whose file is neither under a ``site-packages`` or
``dist-packages`` directory nor in the standard library, and which is not taskkit; code
without a file (a REPL, ``exec``) counts as the user's unless its module is a standard one.
Functions from installed libraries are not hashed: upgrading a library does not invalidate a
key (``depends=`` names one on purpose). Code reached only in ways the names do not show
(``getattr``, an import inside a function body, a registry) is not seen either: ``depends=``
adds functions, classes or whole modules (a module by its whole source's AST), followed like
the function's own helpers. ``version="..."`` pins the code part by hand: the key's code part is
then that string alone and edits do not change it.

A function or class without source (defined in a REPL or by ``exec``; a notebook's cells are
found through ``linecache``) and every lambda are hashed by their bytecode, constants and names
instead (``kind="bytecode"``), with one note each. Bytecode changes between Python versions, so
such a key does not survive an upgrade of Python; a key read from source does (see
:mod:`taskkit.function.source`). The source is read from the file on disk: a module edited
after it was imported is hashed as it is now (a function whose definition moved is noticed and
falls back to its bytecode, with a note).

Parts are named ``pkg.mod:qualname`` where the code was defined (``python -m pkg.mod`` names
``pkg.mod``, not ``__main__``); :func:`describe_part` and :func:`describe_changes` say them the
way a user reads them.

Speed: a source file is parsed once per process (cached by path, ``mtime_ns`` and size), and
what is learned of each function and class (its digest, the names it loads) once per object:
their code does not change while the process runs. Globals and closures are read again on
every call, so a constant re-bound at run time and a re-loaded module are seen.
"""

from __future__ import annotations

import ast
import dis
import functools
import importlib.util
import os
import sys
import sysconfig
import types
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import xxhash

from taskkit.exceptions import MisuseError
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
    value_digest,
)
from taskkit.redaction import redact

__all__ = ["CodeKey", "CodeKind", "CodePart", "code_key", "describe_changes", "describe_part"]

CodeKind = Literal["function", "class", "constant", "module", "version", "bytecode"]

#: A constant's shown value is at most this long.
_SHOWN_LENGTH = 60
_SIMPLE_TYPES = (int, float, str, bytes, bool, type(None))
_LOAD_GLOBAL = frozenset({"LOAD_GLOBAL", "LOAD_NAME", "LOAD_FROM_DICT_OR_GLOBALS"})
_LOAD_ATTR = frozenset({"LOAD_ATTR", "LOAD_METHOD"})
_STORE_GLOBAL = frozenset({"STORE_GLOBAL", "DELETE_GLOBAL"})
_DEFS = (ast.FunctionDef, ast.AsyncFunctionDef)


@dataclass(frozen=True)
class CodePart:
    """One piece of code (or one constant) a call depends on, by digest."""

    kind: CodeKind
    #: ``pkg.mod:qualname`` (function, class, bytecode), ``pkg.mod:NAME`` (constant),
    #: ``pkg.mod`` (module), ``version``.
    name: str
    #: ``xxh3-128:<hex>``
    digest: str
    #: Constants and versions only: a short, credential-free repr of the value.
    shown: str = ""


@dataclass(frozen=True)
class CodeKey:
    """The code part of a call's key: its parts, sorted, and what the analysis could not do."""

    parts: tuple[CodePart, ...]
    notes: tuple[str, ...] = ()

    @property
    def digest(self) -> str:
        """The xxh3-128 of the parts (their kinds, names and digests; not how they are shown)."""
        hasher = xxhash.xxh3_128(SCHEMA)
        for part in self.parts:
            for text in (part.kind, part.name, part.digest):
                hasher.update(encoded(text))
        return f"xxh3-128:{hasher.hexdigest()}"

    def as_json(self) -> dict[str, Any]:
        """The key as JSON data, for a record to compare a later call's key against."""
        return {
            "parts": [
                {"kind": part.kind, "name": part.name, "digest": part.digest, "shown": part.shown}
                for part in self.parts
            ],
            "notes": list(self.notes),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> CodeKey:
        """Read back what :meth:`as_json` wrote."""
        parts = tuple(
            CodePart(part["kind"], part["name"], part["digest"], part.get("shown", ""))
            for part in data["parts"]
        )
        return cls(parts, tuple(data.get("notes", ())))


def describe_part(part: CodePart) -> str:
    """How a part is named to a user: ``clean_rows()``, ``class Shard``, ``constant LIMIT``."""
    tail = part.name.rpartition(":")[2].replace(".<locals>", "")
    if part.kind == "function":
        return f"{tail}()"
    if part.kind == "class":
        return f"class {tail}"
    if part.kind == "constant":
        return f"constant {tail}"
    if part.kind == "module":
        return f"module {part.name}"
    if part.kind == "version":
        return f"version {part.shown!r}"
    return f"{tail} (by its bytecode)"


def describe_changes(before: CodeKey, after: CodeKey) -> tuple[str, ...]:
    """What differs between two code keys of one function, one line a part, as a user reads
    it: ``code of clean_rows() changed``, ``constant LIMIT: 3 -> 4``, ``class Shard is new``,
    ``helper() is no longer used``; nothing when the keys are equal."""
    old = {part.name: part for part in before.parts}
    new = {part.name: part for part in after.parts}
    lines = []
    for name, part in new.items():
        was = old.get(name)
        if was is None:
            lines.append(f"{describe_part(part)} is new")
        elif (was.kind, was.digest) == (part.kind, part.digest):
            pass
        elif part.kind == "version":
            lines.append(f"version {was.shown!r} -> {part.shown!r}")
        elif was.kind == part.kind == "constant" and was.shown != part.shown:
            lines.append(f"{describe_part(part)}: {was.shown} -> {part.shown}")
        elif part.kind == "constant":
            lines.append(f"{describe_part(part)} changed")
        else:
            lines.append(f"code of {describe_part(part)} changed")
    lines.extend(
        f"{describe_part(part)} is no longer used" for name, part in old.items() if name not in new
    )
    return tuple(lines)


def code_key(
    fn: Callable[..., object], *, depends: Sequence[object] = (), version: str | None = None
) -> CodeKey:
    """The code part of the key of calls of ``fn`` (see the module docstring).

    ``depends`` adds functions, classes or modules the analysis cannot see; ``version`` pins
    the code part to that string instead of any code.
    """
    if version is not None:
        if not isinstance(version, str):
            raise MisuseError(f"version= takes a string, not {type(version).__name__}")
        shown = redact(version)
        return CodeKey((CodePart("version", "version", value_digest(version), shown),))
    walk = _Walk()
    if not any(_is_code(item) for item in _unwrapped(fn)):
        raise MisuseError(f"a task is a Python function, not {type(fn).__name__}")
    walk.reach(fn, forced=True)
    for item in depends:
        if not any(
            _is_code(found) or isinstance(found, types.ModuleType) for found in _unwrapped(item)
        ):
            raise MisuseError(
                f"depends= takes functions, classes or modules, not {type(item).__name__}"
            )
        walk.reach(item, forced=True)
    return walk.run()


# -- the walk over what the code names ------------------------------------------------------


class _Walk:
    """One gathering of parts: a queue of objects to visit and what was found so far."""

    def __init__(self) -> None:
        self.parts: set[CodePart] = set()
        self.notes: dict[str, None] = {}
        self.seen: set[int] = set()
        #: (object, hashed even if not the user's)
        self.queue: list[tuple[object, bool]] = []
        #: every object queued, kept alive until the walk ends so that the ids in ``seen``
        #: stay unique
        self.visited: list[object] = []
        #: (id of a module's globals, name): the globals looked up by their assignments
        self.seen_globals: set[tuple[int, str]] = set()

    def reach(self, value: object, *, forced: bool = False) -> None:
        for found in _unwrapped(value):
            self._queue(found, forced)

    def _queue(self, found: object, forced: bool = False) -> None:
        if id(found) not in self.seen:
            self.seen.add(id(found))
            self.visited.append(found)
            self.queue.append((found, forced))

    def run(self) -> CodeKey:
        while self.queue:
            found, forced = self.queue.pop()
            if isinstance(found, types.FunctionType):
                self._function(found, forced)
            elif isinstance(found, type):
                self._class(found, forced)
            elif isinstance(found, types.ModuleType) and forced:
                self._module(found)
        parts = sorted(self.parts, key=lambda part: (part.kind, part.name, part.digest))
        return CodeKey(tuple(parts), tuple(self.notes))

    def _add(self, kind: CodeKind, name: str, facts: _Facts) -> None:
        self.parts.add(
            CodePart(facts.kind if facts.kind == "bytecode" else kind, name, facts.digest)
        )
        if facts.note:
            self.notes[facts.note] = None

    def _function(self, fn: types.FunctionType, forced: bool) -> None:
        if not (forced or _is_users(fn.__code__.co_filename, fn.__module__)):
            return
        facts = _facts_of_function(fn)
        self._add("function", f"{_module_name(fn.__globals__)}:{facts.name}", facts)
        self._follow_function(fn)

    def _follow_function(self, fn: types.FunctionType) -> None:
        """Reach what ``fn``'s code names: its globals, attribute chains and closure cells."""
        self._follow(_refs_of_function(fn), fn.__globals__)
        for cell in fn.__closure__ or ():
            try:
                contents = cell.cell_contents
            except ValueError:  # a cell not filled yet
                continue
            if any(_is_code(found) for found in _unwrapped(contents)):
                self.reach(contents)

    def _class(self, cls: type, forced: bool) -> None:
        if not (forced or _is_users_class(cls)):
            return
        module = sys.modules.get(cls.__module__)
        namespace = vars(module) if module is not None else {}
        facts = _facts_of_class(cls)
        if facts.kind == "bytecode" and self._assigned(namespace, cls.__qualname__):
            return  # a class a call made (namedtuple, Enum("Color", ...)): known by that call
        name = f"{_module_name(namespace, cls.__module__)}:{cls.__qualname__}"
        self._add("class", name, facts)
        for base in cls.__bases__:
            self.reach(base)
        self._follow_class(cls, namespace)

    def _follow_class(self, cls: type, namespace: Mapping[str, object]) -> None:
        """Reach what the class body names and what its methods' code names; the methods and
        classes defined in the body are in the class's digest already, and so are those a
        library made for it (a dataclass's ``__init__``: code without source in its dict)."""
        self._follow(_facts_of_class(cls).refs, namespace)
        inside = cls.__qualname__ + "."
        for value in list(vars(cls).values()):
            for found in _unwrapped(value):
                if isinstance(found, types.FunctionType):
                    own = _qualname(found).startswith(inside) or _is_made(found)
                else:
                    own = getattr(found, "__qualname__", "").startswith(inside)
                if isinstance(found, types.FunctionType) and own:
                    self._follow_function(found)
                elif isinstance(found, type) and own and id(found) not in self.seen:
                    self.seen.add(id(found))
                    self._follow_class(found, namespace)
                elif _is_code(found):
                    self._queue(found)  # unwrapped already: what it wraps is looked at here

    def _module(self, module: types.ModuleType) -> None:
        self.parts.add(CodePart("module", _module_name(vars(module)), _facts_of_module(module)))
        for value in list(vars(module).values()):
            if _is_code(value) and getattr(value, "__module__", None) == module.__name__:
                self.reach(value)

    def _follow(self, refs: _Refs, namespace: Mapping[str, object]) -> None:
        """Reach the globals ``refs`` names in ``namespace``, and through the user's modules
        the attributes its chains name."""
        for name in refs.names:
            if name in namespace and name not in refs.stored:
                self._value(namespace, name, namespace[name])
        for chain in refs.chains:
            value = namespace.get(chain[0])
            for attr in chain[1:]:
                if not (isinstance(value, types.ModuleType) and _is_users_module(value)):
                    break
                owner = vars(value)
                value = owner.get(attr, _MISSING)  # not getattr: a module's __getattr__ may import
                if value is _MISSING:
                    break
                self._value(owner, attr, value)

    def _value(self, namespace: Mapping[str, object], name: str, value: object) -> None:
        """A global ``name`` of ``namespace``: code is queued, a simple value is a constant
        part, anything else is known by the statements that assign it."""
        if name.startswith("__") and name.endswith("__"):
            return
        if _is_simple(value):
            module = _module_name(namespace)
            part = CodePart(
                "constant", f"{module}:{name}", value_digest(value), _shown(repr(value))
            )
            self.parts.add(part)
        elif isinstance(value, types.ModuleType):
            pass  # only what the code takes from a module counts (the chains)
        else:
            found = list(_unwrapped(value))
            for each in found:
                self._queue(each)
            if not found:
                self._assigned(namespace, name)

    def _assigned(self, namespace: Mapping[str, object], name: str, depth: int = 0) -> bool:
        """A global that is neither code nor a simple value (a dict, an enum member, a
        configuration object) is a constant part by the module-level statements that assign
        it in the user's module (which a change at run time, such as a cache filling up, does
        not change); what they name is followed. A name imported from another of the user's
        modules is looked up there. Whether a part was found."""
        if (id(namespace), name) in self.seen_globals or depth > 8:
            return True  # found already, or being looked up
        self.seen_globals.add((id(namespace), name))
        filename, module = namespace.get("__file__"), namespace.get("__name__")
        if not isinstance(filename, str):
            return False
        if not _is_users(filename, module if isinstance(module, str) else None):
            return False
        source = source_of(filename, namespace if isinstance(namespace, dict) else None)
        if source is None:
            return False
        found = source.assignment(name)
        if found is not None:
            digest, shown, _values = found
            part_name = f"{_module_name(namespace)}:{name}"
            self.parts.add(CodePart("constant", part_name, digest, _shown(shown)))
            self._follow(_refs_of_assignment(source, name), namespace)
            return True
        if name in source.imported:
            origin, level, original = source.imported[name]
            package = namespace.get("__package__")
            try:
                target = importlib.util.resolve_name(
                    "." * level + origin, package if isinstance(package, str) else None
                )
            except (ImportError, ValueError):
                return False
            imported = sys.modules.get(target)  # looked up, never imported
            if imported is not None:
                return self._assigned(vars(imported), original, depth + 1)
        return False


_MISSING = object()


def _unwrapped(value: object, depth: int = 0) -> Iterator[object]:
    """The functions, classes and modules ``value`` stands for: a taskkit task stands for the
    function it wraps, a ``functools.wraps`` wrapper for itself and what it wraps, a method
    for its function, a ``functools.partial`` for its function."""
    if depth > 50 or _is_simple(value):
        return
    if isinstance(value, (type, types.ModuleType)):
        yield value
        return
    try:
        task = getattr(value, "__taskkit_task__", False) is True
    except Exception:  # an object's __getattr__ may raise anything: then it is no task
        task = False
    if task:  # the task object is taskkit's; the code is what it wraps
        yield from _unwrapped(getattr(value, "__wrapped__", None), depth + 1)
        return
    if isinstance(value, types.FunctionType):
        yield value
    if isinstance(value, (types.MethodType, staticmethod, classmethod)):
        yield from _unwrapped(value.__func__, depth + 1)
    elif isinstance(value, property):
        for accessor in (value.fget, value.fset, value.fdel):
            yield from _unwrapped(accessor, depth + 1)
    elif isinstance(value, functools.partial):
        yield from _unwrapped(value.func, depth + 1)
    elif callable(value):
        try:
            wrapped = getattr(value, "__wrapped__", None)
        except Exception:  # as above: then it is no wrapper
            return
        if wrapped is not None and wrapped is not value:
            yield from _unwrapped(wrapped, depth + 1)


def _is_code(value: object) -> bool:
    return isinstance(value, (types.FunctionType, type))


def _is_simple(value: object) -> bool:
    """Whether ``value`` is a constant whose value is part of the key."""
    kind = type(value)
    if kind in _SIMPLE_TYPES:
        return True
    if kind is tuple or kind is frozenset:
        return all(_is_simple(item) for item in value)  # type: ignore[attr-defined]
    return False


def _qualname(fn: types.FunctionType) -> str:
    """Where ``fn`` was defined: its code's name, which ``functools.wraps`` does not copy
    onto a wrapper as it does ``__qualname__`` (before Python 3.11, with no source to tell,
    the latter)."""
    return getattr(fn.__code__, "co_qualname", fn.__qualname__)


@functools.lru_cache(maxsize=1024)
def _shown(text: str) -> str:
    """A constant's repr as a part shows it: credential-free, then shortened (in that order,
    so that a shortened credential cannot slip through)."""
    text = redact(text)
    return text if len(text) <= _SHOWN_LENGTH else text[: _SHOWN_LENGTH - 3] + "..."


def _module_name(namespace: Mapping[str, object], default: str | None = None) -> str:
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
def _is_users(filename: str | None, module: str | None) -> bool:
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


def _is_made(fn: types.FunctionType) -> bool:
    """Whether ``fn`` has no source because a library made it (found in a class's dict)."""
    filename = fn.__code__.co_filename
    return filename.startswith("<") and source_of(filename, fn.__globals__) is None


def _is_users_module(module: types.ModuleType) -> bool:
    return _is_users(getattr(module, "__file__", None), module.__name__)


def _is_users_class(cls: type) -> bool:
    known = _CLASS_IS_USERS.get(cls)
    if known is None:
        builtin = cls.__module__ in sys.builtin_module_names
        known = _CLASS_IS_USERS[cls] = not builtin and _is_users(
            _file_of_class(cls), cls.__module__
        )
    return known


def _file_of_class(cls: type) -> str | None:
    """The file a class was defined in: its module's, else one of its methods' (a class
    defined in a notebook's ``__main__``, which has no file)."""
    module = sys.modules.get(cls.__module__)
    filename = getattr(module, "__file__", None)
    if isinstance(filename, str):
        return filename
    for method in _own_functions(cls):
        if source_of(method.__code__.co_filename, method.__globals__) is not None:
            return method.__code__.co_filename
    return None


def _own_functions(cls: type) -> Iterator[types.FunctionType]:
    inside = cls.__qualname__ + "."
    for value in vars(cls).values():
        for found in _unwrapped(value):
            if isinstance(found, types.FunctionType) and found.__qualname__.startswith(inside):
                yield found


# -- what is learned once per object --------------------------------------------------------


@dataclass(frozen=True)
class _Refs:
    """The globals a piece of code loads, the attribute chains it loads from them
    (``("helpers", "clean_rows")``) and the globals it assigns."""

    names: tuple[str, ...] = ()
    chains: tuple[tuple[str, ...], ...] = ()
    stored: frozenset[str] = frozenset()


@dataclass(frozen=True)
class _Facts:
    """What is learned once of a function or class: its digest and, for a class, what its
    body names outside its methods."""

    kind: CodeKind
    digest: str
    note: str = ""
    refs: _Refs = field(default_factory=_Refs)
    #: a function's qualified name, where it was defined
    name: str = ""


_FUNCTION_FACTS: weakref.WeakKeyDictionary[types.FunctionType, tuple[types.CodeType, _Facts]]
_FUNCTION_FACTS = weakref.WeakKeyDictionary()
_FUNCTION_REFS: weakref.WeakKeyDictionary[types.FunctionType, tuple[types.CodeType, _Refs]]
_FUNCTION_REFS = weakref.WeakKeyDictionary()
_CLASS_FACTS: weakref.WeakKeyDictionary[type, _Facts] = weakref.WeakKeyDictionary()
_CLASS_IS_USERS: weakref.WeakKeyDictionary[type, bool] = weakref.WeakKeyDictionary()


def _facts_of_function(fn: types.FunctionType) -> _Facts:
    code = fn.__code__
    cached = _FUNCTION_FACTS.get(fn)
    if cached is not None and cached[0] is code:  # __code__ can be re-assigned
        return cached[1]
    source = None if code.co_name == "<lambda>" else source_of(code.co_filename, fn.__globals__)
    node = source.functions.get((code.co_firstlineno, code.co_name)) if source else None
    qualname = _qualname(fn)
    if source is not None and node is not None:
        qualname = source.qualnames[(code.co_firstlineno, code.co_name)]
    what = f"{qualname.replace('.<locals>', '')}()"
    digest = _digest_or_none(node) if node is not None else None
    if digest is not None:
        facts = _Facts("function", digest, name=qualname)
    else:
        if code.co_name == "<lambda>":
            where = f"{_module_name(fn.__globals__)} line {code.co_firstlineno}"
            why = f"the lambda of {where} is not read from its source (its line may hold others)"
        elif source is None:
            why = f"{what} has no source (defined in a REPL or exec)"
        elif node is None:
            why = f"{what} is not where its source file says (the file changed since import)"
        else:
            why = f"{what} is nested too deeply to hash its source"
        note = f"{why}; its bytecode and constants are hashed, which change with Python's version"
        facts = _Facts("bytecode", bytecode_digest(code, fn.__doc__), note, name=qualname)
    _FUNCTION_FACTS[fn] = (code, facts)
    return facts


def _refs_of_function(fn: types.FunctionType) -> _Refs:
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
    refs = _Refs(tuple(names), tuple(chains), frozenset(stored))
    _FUNCTION_REFS[fn] = (code, refs)
    return refs


def _facts_of_class(cls: type) -> _Facts:
    cached = _CLASS_FACTS.get(cls)
    if cached is not None:
        return cached
    module = sys.modules.get(cls.__module__)
    filename = _file_of_class(cls)
    source = source_of(filename, vars(module) if module else None) if filename else None
    node = _find_class(source, filename, cls) if source and filename else None
    digest = _digest_or_none(node) if node is not None else None
    if node is not None and digest is not None:
        facts = _Facts("class", digest, refs=_refs_of_nodes([*node.decorator_list, *node.body]))
    else:
        # Its methods' bytecode and its simple attributes stand for the body nobody can read.
        out = [SCHEMA, b"class"]
        for name, value in sorted(vars(cls).items()):
            functions = [
                found for found in _unwrapped(value) if isinstance(found, types.FunctionType)
            ]
            if functions:
                out.append(encoded(name))
                for function in functions:
                    dump_code(function.__code__, out, function.__doc__)
            elif _is_simple(value) and name not in ("__module__", "__doc__", "__qualname__"):
                out.append(encoded(name))
                dump_value(value, out)
        note = (
            f"class {cls.__qualname__} has no source (defined in a REPL or exec); its methods'"
            " bytecode and its constants are hashed, which change with Python's version"
        )
        facts = _Facts("bytecode", hex_digest(b"".join(out)), note)
    _CLASS_FACTS[cls] = facts
    return facts


def _digest_or_none(node: ast.AST) -> str | None:
    """The AST digest of ``node``; None for code nested deeper than the recursion limit."""
    try:
        return ast_digest(node)
    except RecursionError:
        return None


def _facts_of_module(module: types.ModuleType) -> str:
    filename = getattr(module, "__file__", None)
    source = source_of(filename, vars(module)) if filename else None
    if source is None:
        raise MisuseError(f"depends=: module {module.__name__} has no Python source to hash")
    return source.digest


def _find_class(source: Source, filename: str, cls: type) -> ast.ClassDef | None:
    """The ``class`` statement that made ``cls``: the one its methods' lines fall in (those
    written in that file: a dataclass's ``__init__`` is not)."""
    candidates = source.classes.get(cls.__qualname__, [])
    lines = [
        fn.__code__.co_firstlineno
        for fn in _own_functions(cls)
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


def _refs_of_nodes(nodes: Sequence[ast.AST]) -> _Refs:
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
    return _Refs(tuple(names), tuple(chains))


_ASSIGNMENT_REFS: weakref.WeakKeyDictionary[Source, dict[str, _Refs]] = weakref.WeakKeyDictionary()


def _refs_of_assignment(source: Source, name: str) -> _Refs:
    known = _ASSIGNMENT_REFS.setdefault(source, {})
    if name not in known:
        found = source.assignment(name)
        known[name] = _refs_of_nodes(found[2]) if found else _Refs()
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
