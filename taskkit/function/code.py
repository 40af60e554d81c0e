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
every call of :func:`code_key`; a task asks for its code key once per process
(:meth:`~taskkit.function.spec.TaskSpec.code`), so a constant re-bound while a program runs
changes the keys of that program's later runs, not of its later calls.
"""

from __future__ import annotations

import ast
import functools
import importlib.util
import sys
import types
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import xxhash

from taskkit.exceptions import BadTask
from taskkit.function.facts import (
    Facts,
    Refs,
    facts_of_class,
    facts_of_function,
    is_code,
    is_made,
    is_simple,
    is_users,
    is_users_class,
    is_users_module,
    module_digest,
    module_name,
    qualname,
    refs_of_assignment,
    refs_of_function,
    unwrapped,
)
from taskkit.function.source import SCHEMA, ast_digest, encoded, source_of, value_digest
from taskkit.redaction import redact

__all__ = ["CodeKey", "CodeKind", "CodePart", "code_key", "describe_changes", "describe_part"]

CodeKind = Literal["function", "class", "constant", "module", "version", "bytecode"]

#: A constant's shown value is at most this long.
_SHOWN_LENGTH = 60


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

    @functools.cached_property
    def digest(self) -> str:
        """The xxh3-128 of the parts (their kinds, names and digests; not how they are shown);
        made once per key (a task asks for it at every call)."""
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


def _from_file(namespace: Mapping[str, object], name: str) -> bool:
    """Whether the module-level statements assigning ``name`` read ``__file__`` (a path of
    the checkout, which differs between a laptop and every Batch task's folder)."""
    filename = namespace.get("__file__")
    if not isinstance(filename, str):
        return False
    source = source_of(filename, namespace if isinstance(namespace, dict) else None)
    if source is None:
        return False
    return any(
        isinstance(node, ast.Name) and node.id == "__file__"
        for statement in source.assignments.get(name, ())
        for node in ast.walk(statement)
    )


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
            raise BadTask(f"version= takes a string, not {type(version).__name__}")
        shown = redact(version)
        return CodeKey((CodePart("version", "version", value_digest(version), shown),))
    walk = _Walk()
    if not any(is_code(item) for item in unwrapped(fn)):
        raise BadTask(f"a task is a Python function, not {type(fn).__name__}")
    # The task's own defaults are arguments of its calls (keyed there), not its constants.
    walk.roots = {id(found) for found in unwrapped(fn)}
    walk.reach(fn, forced=True)
    for item in depends:
        if not any(
            is_code(found) or isinstance(found, types.ModuleType) for found in unwrapped(item)
        ):
            raise BadTask(
                f"depends= takes functions, classes or modules, not {type(item).__name__}"
            )
        walk.reach(item, forced=True)
    return walk.run()


# -- the walk over what the code names ------------------------------------------------------


class _Walk:
    """One gathering of parts: a queue of objects to visit and what was found so far."""

    def __init__(self) -> None:
        self.roots: set[int] = set()
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
        for found in unwrapped(value):
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

    def _add(self, kind: CodeKind, name: str, facts: Facts) -> None:
        self.parts.add(
            CodePart(facts.kind if facts.kind == "bytecode" else kind, name, facts.digest)
        )
        if facts.note:
            self.notes[facts.note] = None

    def _function(self, fn: types.FunctionType, forced: bool) -> None:
        if not (forced or is_users(fn.__code__.co_filename, fn.__module__)):
            return
        facts = facts_of_function(fn)
        self._add("function", f"{module_name(fn.__globals__)}:{facts.name}", facts)
        if "." not in fn.__qualname__:  # `helper.factor = 3` at module level: its statement
            self._assigned(fn.__globals__, fn.__name__)
        self._follow_function(fn)

    def _follow_function(self, fn: types.FunctionType) -> None:
        """Reach what ``fn``'s code names: its globals, attribute chains and closure cells."""
        self._follow(refs_of_function(fn), fn.__globals__)
        names = fn.__code__.co_freevars
        for name, cell in zip(names, fn.__closure__ or (), strict=False):
            try:
                contents = cell.cell_contents
            except ValueError:  # a cell not filled yet
                continue
            if any(is_code(found) for found in unwrapped(contents)):
                self.reach(contents)
            else:  # a value the function captured is one of its constants
                where = f"{module_name(fn.__globals__)}:{qualname(fn)}.{name}"
                self._captured(where, contents)
        if id(fn) in self.roots or is_made(fn):  # a made __init__: its class holds them
            return
        # A helper's defaults are its constants too (`def add(x, n=n)` binds a factory's n).
        code = fn.__code__
        positional = code.co_varnames[: code.co_argcount]
        defaults = fn.__defaults__ or ()
        named = dict(zip(positional[len(positional) - len(defaults) :], defaults, strict=True))
        named.update(fn.__kwdefaults__ or {})
        for name, value in named.items():
            if any(is_code(found) for found in unwrapped(value)):
                self.reach(value)
            else:
                where = f"{module_name(fn.__globals__)}:{qualname(fn)}.{name} (default)"
                self._captured(where, value)

    def _captured(self, where: str, value: object) -> None:
        """A value code captured (a closure's cell, a partial's bound arguments): a constant
        part by its canonical digest; one that cannot be keyed is a note, never ignored
        silently."""
        from taskkit.function.canonical import Unkeyable, digest_of

        if is_simple(value):
            self.parts.add(CodePart("constant", where, value_digest(value), _shown(repr(value))))
            return
        try:
            digest = str(digest_of(value))
        except Unkeyable as exc:
            self.notes[
                f"{where.rpartition(':')[2]} holds a value the key cannot take ({exc.what}): "
                "a change of it does not run the call again; pass it as an argument"
            ] = None
            return
        self.parts.add(CodePart("constant", where, digest, _shown(repr(value))))

    def _class(self, cls: type, forced: bool) -> None:
        if not (forced or is_users_class(cls)):
            return
        module = sys.modules.get(cls.__module__)
        namespace = vars(module) if module is not None else {}
        facts = facts_of_class(cls)
        if facts.kind == "bytecode" and self._assigned(namespace, cls.__qualname__):
            return  # a class a call made (namedtuple, Enum("Color", ...)): known by that call
        name = f"{module_name(namespace, cls.__module__)}:{cls.__qualname__}"
        self._add("class", name, facts)
        if "." not in cls.__qualname__:  # `Config.LIMIT = 8` at module level: its statement
            self._assigned(namespace, cls.__qualname__)
        self._decorators(cls, namespace, name)
        for base in cls.__bases__:
            self.reach(base)
        self._follow_class(cls, namespace)

    def _decorators(self, cls: type, namespace: Mapping[str, object], name: str) -> None:
        """A class's decorators (``@dataclass(eq=False)``) change what the class does: their
        expressions are a constant part of it (the class's own digest leaves them out)."""
        filename = namespace.get("__file__")
        if not isinstance(filename, str):
            return
        source = source_of(filename, namespace if isinstance(namespace, dict) else None)
        nodes = source.classes.get(cls.__qualname__, []) if source is not None else []
        found = [d for node in nodes for d in node.decorator_list]
        if found:
            listed = ast.List(elts=found, ctx=ast.Load())
            shown = ", ".join("@" + ast.unparse(d) for d in found)
            self.parts.add(
                CodePart("constant", f"{name} decorators", ast_digest(listed), _shown(shown))
            )

    def _follow_class(self, cls: type, namespace: Mapping[str, object]) -> None:
        """Reach what the class body names and what its methods' code names; the methods and
        classes defined in the body are in the class's digest already, and so are those a
        library made for it (a dataclass's ``__init__``: code without source in its dict)."""
        self._follow(facts_of_class(cls).refs, namespace)
        inside = cls.__qualname__ + "."
        for value in list(vars(cls).values()):
            for found in unwrapped(value):
                if isinstance(found, types.FunctionType):
                    own = qualname(found).startswith(inside) or is_made(found)
                else:
                    own = getattr(found, "__qualname__", "").startswith(inside)
                if isinstance(found, types.FunctionType) and own:
                    self._follow_function(found)
                elif isinstance(found, type) and own and id(found) not in self.seen:
                    self.seen.add(id(found))
                    self._follow_class(found, namespace)
                elif is_code(found):
                    self._queue(found)  # unwrapped already: what it wraps is looked at here

    def _module(self, module: types.ModuleType) -> None:
        self.parts.add(CodePart("module", module_name(vars(module)), module_digest(module)))
        for value in list(vars(module).values()):
            if is_code(value) and getattr(value, "__module__", None) == module.__name__:
                self.reach(value)

    def _follow(self, refs: Refs, namespace: Mapping[str, object]) -> None:
        """Reach the globals ``refs`` names in ``namespace``, and through the user's modules
        the attributes its chains name."""
        for name in refs.names:
            if name in namespace and name not in refs.stored:
                self._value(namespace, name, namespace[name])
        for chain in refs.chains:
            value = namespace.get(chain[0])
            for attr in chain[1:]:
                if not (isinstance(value, types.ModuleType) and is_users_module(value)):
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
        if is_simple(value) and _from_file(namespace, name) and self._assigned(namespace, name):
            return  # a path made from __file__: its statement, not this checkout's path
        if is_simple(value):
            module = module_name(namespace)
            part = CodePart(
                "constant", f"{module}:{name}", value_digest(value), _shown(repr(value))
            )
            self.parts.add(part)
        elif isinstance(value, types.ModuleType):
            pass  # only what the code takes from a module counts (the chains)
        else:
            found = list(unwrapped(value))
            for each in found:
                self._queue(each)
            if isinstance(value, functools.partial):  # its bound arguments are constants too
                where = f"{module_name(namespace)}:{name}"
                self._captured(where, (value.args, dict(value.keywords)))
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
        if not is_users(filename, module if isinstance(module, str) else None):
            return False
        source = source_of(filename, namespace if isinstance(namespace, dict) else None)
        if source is None:
            return False
        found = source.assignment(name)
        if found is not None:
            digest, shown, _values = found
            part_name = f"{module_name(namespace)}:{name}"
            self.parts.add(CodePart("constant", part_name, digest, _shown(shown)))
            self._follow(refs_of_assignment(source, name), namespace)
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


@functools.lru_cache(maxsize=1024)
def _shown(text: str) -> str:
    """A constant's repr as a part shows it: credential-free, then shortened (in that order,
    so that a shortened credential cannot slip through)."""
    text = redact(text)
    return text if len(text) <= _SHOWN_LENGTH else text[: _SHOWN_LENGTH - 3] + "..."
