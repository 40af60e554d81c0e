"""taskkit.function.code: which code a call depends on, and what changes its digest.

The user's code is a real package written under tmp_path and imported under a name of its own
per test. An edit is a new version of the files imported afresh (the package's modules are
dropped from ``sys.modules`` first, as a new process would start), so what each test compares
is two loads of the same program, before and after the edit.
"""

from __future__ import annotations

import ast
import importlib
import json
import linecache
import os
import subprocess
import sys
import textwrap
import time
import types
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from taskkit.exceptions import MisuseError
from taskkit.function import code as code_module
from taskkit.function.code import CodeKey, CodePart, code_key, describe_changes, describe_part


class Package:
    """A user's package under tmp_path: write its modules, import them afresh."""

    def __init__(self, root: Path, name: str) -> None:
        self.root = root
        self.name = name
        self.writes = 0
        (root / name).mkdir()
        (root / name / "__init__.py").write_text("")

    def write(self, **modules: str) -> None:
        """Write each ``module=source`` (dedented). Each write gets a later mtime than the one
        before, as an edit made a moment later would, however fast the test runs."""
        for module, source in modules.items():
            path = self.root / self.name / f"{module}.py"
            path.write_text(textwrap.dedent(source))
            self.writes += 1
            stamp = 1_700_000_000_000_000_000 + self.writes * 1_000_000_000
            os.utime(path, ns=(stamp, stamp))

    def load(self, module: str) -> types.ModuleType:
        """``module`` of the package as a new process would import it now."""
        self.forget()
        importlib.invalidate_caches()
        return importlib.import_module(f"{self.name}.{module}")

    def key(self, module: str = "main", function: str = "run", **options: Any) -> CodeKey:
        """The code key of ``module.function`` as the files are now."""
        return code_key(getattr(self.load(module), function), **options)

    def forget(self) -> None:
        for name in list(sys.modules):
            if name == self.name or name.startswith(self.name + "."):
                del sys.modules[name]


@pytest.fixture
def package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Package]:
    """An empty user package, importable, with no bytecode cache (an edit within one second
    of the last must not load the stale ``.pyc``)."""
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    monkeypatch.syspath_prepend(str(tmp_path))
    made = Package(tmp_path, f"userpkg_{uuid.uuid4().hex[:12]}")
    yield made
    made.forget()


def by_name(key: CodeKey) -> dict[str, CodePart]:
    """The parts of ``key`` by their name without the package (``main:run``)."""
    parts = {part.name.partition(".")[2] or part.name: part for part in key.parts}
    assert len(parts) == len(key.parts)
    return parts


def changed(before: CodeKey, after: CodeKey) -> set[str]:
    """The names of the parts that differ (added, removed or another digest)."""
    old, new = by_name(before), by_name(after)
    return {name for name in old.keys() | new.keys() if old.get(name) != new.get(name)}


MAIN = textwrap.dedent("""
    import json

    from . import helpers
    from .helpers import Shard

    THRESHOLD = 0.5


    def run(rows):
        '''Clean the rows.'''
        kept = helpers.clean_rows(rows)
        return json.dumps([Shard(row).size() for row in kept if len(row) > THRESHOLD])
""")
HELPERS = textwrap.dedent("""
    LIMIT = 3


    def clean_rows(rows):
        return [row.strip() for row in rows][:LIMIT]


    def unused():
        return 1


    class Shard:
        def __init__(self, row):
            self.row = row

        def size(self):
            return measure(self.row)


    def measure(text):
        return len(text)
""")


def test_parts_are_the_function_its_helpers_and_constants(package: Package) -> None:
    """The key holds the function, each user function and class it reaches (also through a
    method), and each constant read; not what it does not name nor the library it calls."""
    package.write(main=MAIN, helpers=HELPERS)
    key = package.key()
    assert {name: part.kind for name, part in by_name(key).items()} == {
        "main:run": "function",
        "main:THRESHOLD": "constant",
        "helpers:clean_rows": "function",
        "helpers:LIMIT": "constant",
        "helpers:Shard": "class",
        "helpers:measure": "function",
    }
    assert by_name(key)["main:THRESHOLD"].shown == "0.5"
    assert key.notes == ()
    assert list(key.parts) == sorted(key.parts, key=lambda part: (part.kind, part.name))


def test_editing_the_function_changes_its_part_only(package: Package) -> None:
    """An edited statement of the function changes its part and the key, nothing else."""
    package.write(main=MAIN, helpers=HELPERS)
    before = package.key()
    package.write(main=MAIN.replace("len(row) > THRESHOLD", "len(row) >= THRESHOLD"))
    after = package.key()
    assert changed(before, after) == {"main:run"}
    assert before.digest != after.digest


@pytest.mark.parametrize(
    ("old", "new", "part"),
    [
        ("[:LIMIT]", "[: LIMIT - 1]", "helpers:clean_rows"),
        ("return len(text)", "return len(text) * 2", "helpers:measure"),
        ("self.row = row", "self.row = row.lower()", "helpers:Shard"),
        ("LIMIT = 3", "LIMIT = 4", "helpers:LIMIT"),
    ],
)
def test_editing_another_module_names_that_part(
    package: Package, old: str, new: str, part: str
) -> None:
    """A helper edited in another module of the package (a function reached by attribute, one
    reached only through a method, a class, a constant) changes that part alone."""
    package.write(main=MAIN, helpers=HELPERS)
    before = package.key()
    package.write(helpers=HELPERS.replace(old, new))
    after = package.key()
    assert changed(before, after) == {part}
    assert before.digest != after.digest


def test_a_constant_part_shows_its_value(package: Package) -> None:
    """A changed constant shows both values (short and credential-free) and the change."""
    package.write(
        main="""
        from . import config
        NAME = "x" * 100
        SECRET = "AccountName=a;AccountKey=c2VjcmV0;"
        def run():
            return config.RATE, NAME, SECRET
        """,
        config="RATE = 0.3\n",
    )
    before = by_name(package.key())
    package.write(config="RATE = 0.5\n")
    after = by_name(package.key())
    assert (before["config:RATE"].shown, after["config:RATE"].shown) == ("0.3", "0.5")
    assert describe_part(after["config:RATE"]) == "constant RATE"
    assert len(after["main:NAME"].shown) <= 60
    assert "c2VjcmV0" not in after["main:SECRET"].shown
    assert "AccountKey=***" in after["main:SECRET"].shown


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("    kept = helpers", "    # keep the clean ones\n    kept = helpers"),
        ("'''Clean the rows.'''", "'''Clean the rows, and say so at length.'''"),
        ("    '''Clean the rows.'''\n", ""),
        (
            "    return json.dumps([Shard(row).size() for row in kept if len(row) > THRESHOLD])",
            "    return json.dumps(\n        [\n            Shard(row).size()\n"
            "            for row in kept\n            if len(row) > THRESHOLD\n"
            "        ]\n    )  # re-wrapped",
        ),
        ("def run(rows):", "\n\ndef run(rows) :"),
        ("from .helpers import Shard", "from .helpers import Shard  # noqa"),
    ],
    ids=["comment", "docstring-edited", "docstring-removed", "rewrapped", "spacing", "import"],
)
def test_cosmetic_edits_of_the_function_keep_the_key(package: Package, old: str, new: str) -> None:
    """Comments, docstrings, line wrapping and spacing do not change the key."""
    package.write(main=MAIN, helpers=HELPERS)
    before = package.key()
    edited = MAIN.replace(old, new)
    assert edited != MAIN
    package.write(main=edited)
    assert package.key() == before


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("    def size(self):\n", '    def size(self):\n        """How long the row is."""\n'),
        ("class Shard:\n", 'class Shard:\n    """A shard."""\n\n'),
        ("LIMIT = 3\n", '"""Helpers."""\n\nLIMIT = (\n    3\n)\n'),
        ("    return len(text)", "    return len(\n        text,\n    )"),
    ],
    ids=["method-docstring", "class-docstring", "module-docstring-and-wrap", "trailing-comma"],
)
def test_cosmetic_edits_of_helpers_keep_the_key(package: Package, old: str, new: str) -> None:
    """The same holds for the helpers: a class's and a method's docstrings, wrapping."""
    package.write(main=MAIN, helpers=HELPERS)
    before = package.key()
    package.write(helpers=HELPERS.replace(old, new))
    assert package.key() == before


def test_nested_functions_and_their_docstrings(package: Package) -> None:
    """A nested function is part of the function's digest (its docstring is not), and what
    only a nested function, a lambda or a comprehension names is reached."""
    source = """
        from . import helpers

        def run(rows):
            def inner(row):
                '''Inner.'''
                return helpers.shout(row)
            pick = lambda row: helpers.keep(row)
            return [inner(row) for row in rows if pick(row)] + [helpers.tail(r) for r in rows]
    """
    package.write(
        main=source,
        helpers="".join(f"def {name}(x):\n    return x\n" for name in ("shout", "keep", "tail")),
    )
    before = package.key()
    assert {"helpers:shout", "helpers:keep", "helpers:tail"} <= by_name(before).keys()
    package.write(main=source.replace("'''Inner.'''", "'''Inner, documented.'''"))
    assert package.key() == before
    package.write(main=source.replace("return helpers.shout(row)", "return row"))
    assert "main:run" in changed(before, package.key())


def test_library_helpers_are_not_parts(package: Package) -> None:
    """Functions and classes of the standard library and of installed packages (xxhash,
    pytest) are not parts, however they are named."""
    package.write(
        main="""
        import json
        import os.path
        from json import dumps
        from collections import OrderedDict
        import xxhash
        import pytest

        def run(data):
            path = os.path.join("a", "b")
            raw = dumps(json.loads(data))
            pytest.approx(1)
            return xxhash.xxh3_64_hexdigest(raw), OrderedDict(), path
        """
    )
    assert [part.name for part in package.key().parts] == [f"{package.name}.main:run"]


def test_recursion_and_cycles_end(package: Package) -> None:
    """Recursion, mutual recursion across modules and a class naming itself end the walk,
    each part once."""
    package.write(
        main="""
        from . import other

        def run(n):
            return 0 if n == 0 else run(n - 1) + other.back(n)

        def forth(n):
            return other.back(n - 1) if n else Node()

        class Node:
            def copy(self):
                return Node()
        """,
        other="""
        from . import main

        def back(n):
            return main.forth(n)
        """,
    )
    names = set(by_name(package.key()))
    assert names == {"main:run", "main:forth", "main:Node", "other:back"}


def test_a_class_reaches_its_bases_and_its_methods_helpers(package: Package) -> None:
    """A class helper brings its user-defined bases and what its methods (static, class,
    property) and its body name."""
    package.write(
        main="""
        from .shapes import Square

        def run():
            return Square(2).area
        """,
        shapes="""
        from . import maths

        class Shape:
            def describe(self):
                return maths.label(self)

        class Square(Shape):
            SIDES = maths.SIDES
            @property
            def area(self):
                return maths.square(self.side)
            @staticmethod
            def make():
                return maths.build()
            @classmethod
            def unit(cls):
                return maths.unit()
            def __init__(self, side):
                self.side = side
        """,
        maths="""
        SIDES = 4
        def label(x): return str(x)
        def square(x): return x * x
        def build(): return 1
        def unit(): return 1
        """,
    )
    names = set(by_name(package.key()))
    assert names == {
        "main:run",
        "shapes:Square",
        "shapes:Shape",
        "maths:SIDES",
        "maths:label",
        "maths:square",
        "maths:build",
        "maths:unit",
    }


def test_closures_and_wrappers_are_followed(package: Package) -> None:
    """A function made by a factory reaches the function in its closure; a
    ``functools.wraps`` decorator's wrapper and the wrapped function are both parts."""
    package.write(
        main="""
        from .deco import logged, make

        def double(x):
            return 2 * x

        run_made = make(double)

        @logged
        def run(x):
            return x
        """,
        deco="""
        import functools

        def make(fn):
            def made(x):
                return fn(x)
            return made

        def logged(fn):
            @functools.wraps(fn)
            def wrapper(*args):
                return fn(*args)
            return wrapper
        """,
    )
    assert set(by_name(package.key(function="run_made"))) == {
        "deco:make.<locals>.made",
        "main:double",
    }
    assert set(by_name(package.key())) == {"deco:logged.<locals>.wrapper", "main:run"}


def test_a_task_object_stands_for_the_function_it_wraps(package: Package) -> None:
    """A helper that is a taskkit task (``__taskkit_task__``, ``__wrapped__``) is hashed as
    the function it wraps, and the task object itself is no part."""
    package.write(
        main="""
        from .tasks import shard

        def run(x):
            return shard(x)
        """,
        tasks="""
        class Task:
            __taskkit_task__ = True
            def __init__(self, fn):
                self.__wrapped__ = fn
            def __call__(self, *args):
                return self.__wrapped__(*args)

        def _shard(x):
            return x + 1

        shard = Task(_shard)
        """,
    )
    assert set(by_name(package.key())) == {"main:run", "tasks:_shard"}


def test_dunders_and_assigned_globals_are_not_constants(package: Package) -> None:
    """``__file__`` (which differs between checkouts) and a global the code assigns (state,
    not a constant) are left out of the key."""
    package.write(
        main="""
        COUNT = 0

        def run():
            global COUNT
            COUNT += 1
            return __file__, __name__, COUNT
        """
    )
    assert set(by_name(package.key())) == {"main:run"}


def test_depends_adds_code_the_analysis_cannot_see(package: Package) -> None:
    """``depends=`` adds a module (by its whole source, and its functions followed) and a
    function; an edit anywhere in a depended-on module changes the key."""
    package.write(
        main="""
        import importlib

        def run(name):
            return importlib.import_module(name).apply()
        """,
        plugin="""
        FACTOR = 2
        def apply():
            return FACTOR * other()
        def other():
            return 1
        REGISTRY = {"a": 1}
        """,
    )
    main = package.load("main")
    plugin = importlib.import_module(f"{package.name}.plugin")
    assert set(by_name(code_key(main.run))) == {"main:run"}
    key = code_key(main.run, depends=[plugin])
    assert set(by_name(key)) == {
        "main:run",
        "plugin",
        "plugin:apply",
        "plugin:other",
        "plugin:FACTOR",
    }
    assert describe_part(by_name(key)["plugin"]) == f"module {package.name}.plugin"
    assert set(by_name(code_key(main.run, depends=[plugin.other]))) == {"main:run", "plugin:other"}
    package.write(
        plugin=(package.root / package.name / "plugin.py").read_text().replace("1}", "2}")
    )
    main = package.load("main")
    plugin = importlib.import_module(f"{package.name}.plugin")
    assert changed(key, code_key(main.run, depends=[plugin])) == {"plugin"}


def test_depends_refuses_what_is_no_code() -> None:
    """``depends=`` takes functions, classes and modules; a string is a clear error."""
    with pytest.raises(MisuseError, match="depends= takes functions, classes or modules, not str"):
        code_key(test_depends_refuses_what_is_no_code, depends=["helpers"])


def test_version_pins_the_code_part(package: Package) -> None:
    """``version=`` makes the code part that string alone: edits do not change it, another
    version does."""
    package.write(main=MAIN, helpers=HELPERS)
    pinned = package.key(version="2024-1")
    assert pinned.parts == (CodePart("version", "version", pinned.parts[0].digest, "2024-1"),)
    package.write(
        main=MAIN.replace("> THRESHOLD", "< THRESHOLD"), helpers=HELPERS.replace("3", "4")
    )
    assert package.key(version="2024-1") == pinned
    assert package.key(version="2024-2").digest != pinned.digest
    assert package.key().digest != pinned.digest


def test_a_function_without_source_falls_back_to_bytecode() -> None:
    """A function defined by ``exec`` is hashed by its bytecode and constants, with one note;
    its helpers are still followed, and an edit of its code changes the digest."""

    def made(body: str) -> CodeKey:
        namespace: dict[str, Any] = {"__name__": "scratch", "helper": _helper}
        exec(f"def run(x):\n    '''Doc.'''\n    return helper(x) + {body}\n", namespace)
        return code_key(namespace["run"])

    key = made("1")
    assert [(part.kind, part.name) for part in key.parts] == [
        ("bytecode", "scratch:run"),
        ("function", f"{__name__}:_helper"),
    ]
    assert key.notes == (
        "run() has no source (defined in a REPL or exec); its bytecode and constants are"
        " hashed, which change with Python's version",
    )
    assert made("1") == key
    assert made("2").digest != key.digest
    assert made("1.0").digest != key.digest


def _helper(x: int) -> int:
    return x


def test_a_class_without_source_falls_back_to_bytecode() -> None:
    """A class defined by ``exec`` is hashed by its methods' bytecode and its constants."""

    def made(body: str) -> CodeKey:
        namespace: dict[str, Any] = {"__name__": "scratch"}
        exec(f"class Box:\n    SIZE = {body}\n    def get(self):\n        return 1\n", namespace)
        return code_key(namespace["Box"])

    key = made("1")
    assert [(part.kind, part.name) for part in key.parts] == [("bytecode", "scratch:Box")]
    assert len(key.notes) == 1
    assert "class Box has no source" in key.notes[0]
    assert made("1") == key
    assert made("2") != key


def test_a_lambda_is_hashed_by_its_bytecode() -> None:
    """A lambda (its source line may hold others) is hashed by its bytecode, with a note."""
    key = code_key(lambda x: x + 1)
    assert [part.kind for part in key.parts] == ["bytecode"]
    assert key.notes[0].startswith(f"the lambda of {__name__} line ")
    assert code_key(lambda x: x + 1).digest == key.digest
    assert code_key(lambda x: x + 2).digest != key.digest


def test_a_function_moved_in_its_file_since_import_falls_back(package: Package) -> None:
    """A source file edited after the import (the function's lines moved) is not hashed as
    if it were the loaded code: the function falls back to its bytecode, with a note."""
    package.write(main="def run():\n    return 1\n")
    run = package.load("main").run
    package.write(main="\n\n\ndef run():\n    return 2\n")
    key = code_key(run)
    assert [part.kind for part in key.parts] == ["bytecode"]
    assert "the file changed since import" in key.notes[0]


def test_a_task_must_be_a_function() -> None:
    """Something that is no Python function or class is a clear error."""
    with pytest.raises(MisuseError, match="a task is a Python function, not builtin_function"):
        code_key(len)


def test_version_must_be_a_string() -> None:
    """``version=`` takes a string."""
    with pytest.raises(MisuseError, match="version= takes a string, not int"):
        code_key(_helper, version=2)  # type: ignore[arg-type]


def test_the_key_is_the_same_in_another_process(package: Package) -> None:
    """The key (parts, notes and digest) computed in a fresh interpreter is the one computed
    here: nothing in it depends on the process (ids, hash seeds, set order)."""
    package.write(main=MAIN, helpers=HELPERS)
    here = package.key()
    code = (
        "import importlib, json, sys; from taskkit.function.code import code_key; "
        f"key = code_key(importlib.import_module('{package.name}.main').run); "
        "print(json.dumps([key.digest, key.as_json()]))"
    )
    worktree = Path(code_module.__file__).parents[2]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(worktree), str(package.root)])}
    env["PYTHONHASHSEED"] = "12345"
    done = subprocess.run(
        [sys.executable, "-B", "-c", code], capture_output=True, text=True, env=env, check=False
    )
    assert done.returncode == 0, done.stderr
    digest, data = json.loads(done.stdout)
    assert (digest, CodeKey.from_json(data)) == (here.digest, here)


def test_json_round_trip_and_descriptions() -> None:
    """``as_json``/``from_json`` give the key back; each kind of part reads as a user would
    name it."""
    key = CodeKey(
        (
            CodePart("function", "pkg.mod:Shard.load", "xxh3-128:" + "0" * 32),
            CodePart("function", "pkg.mod:outer.<locals>.inner", "xxh3-128:" + "1" * 32),
            CodePart("class", "pkg.mod:Shard", "xxh3-128:" + "2" * 32),
            CodePart("constant", "pkg.mod:LIMIT", "xxh3-128:" + "3" * 32, "3"),
            CodePart("module", "pkg.plugins", "xxh3-128:" + "4" * 32),
            CodePart("version", "version", "xxh3-128:" + "5" * 32, "v2"),
            CodePart("bytecode", "scratch:run", "xxh3-128:" + "6" * 32),
        ),
        ("a note",),
    )
    assert CodeKey.from_json(json.loads(json.dumps(key.as_json()))) == key
    assert [describe_part(part) for part in key.parts] == [
        "Shard.load()",
        "outer.inner()",
        "class Shard",
        "constant LIMIT",
        "module pkg.plugins",
        "version 'v2'",
        "run (by its bytecode)",
    ]


def test_the_key_digest_covers_every_part() -> None:
    """The key's digest changes with any part's kind, name or digest, and with a part added."""
    part = CodePart("function", "m:f", "xxh3-128:" + "0" * 32)
    base = CodeKey((part,)).digest
    variants = [
        CodeKey((CodePart("bytecode", "m:f", part.digest),)),
        CodeKey((CodePart("function", "m:g", part.digest),)),
        CodeKey((CodePart("function", "m:f", "xxh3-128:" + "1" * 32),)),
        CodeKey((part, CodePart("constant", "m:X", part.digest, "1"))),
    ]
    digests = {base, *(variant.digest for variant in variants)}
    assert len(digests) == 1 + len(variants)
    assert CodeKey((part,), ("a note",)).digest == base  # notes say why, they are no code


def test_a_warm_key_is_quick(package: Package) -> None:
    """With five helpers, a second key of the same function takes well under a millisecond
    (what is learned of each function is kept; the fastest of several runs is compared, as
    the machine is shared)."""
    package.write(
        main="""
        from . import helpers as h
        LIMIT = 3
        def run(x):
            return h.a(x) + h.b(x) + h.c(x) + h.d(x) + h.e(x) + LIMIT
        """,
        helpers="".join(f"def {name}(x):\n    return x\n" for name in "abcde"),
    )
    run = package.load("main").run
    assert len(code_key(run).parts) == 7
    timings = []
    for _ in range(20):
        started = time.perf_counter()
        code_key(run)
        timings.append(time.perf_counter() - started)
    assert min(timings) < 0.001


def test_a_key_is_memoised_per_function_but_sees_rebound_globals(package: Package) -> None:
    """A global re-bound at run time is seen on the next key (globals are read every time)."""
    package.write(main="LIMIT = 1\ndef run():\n    return LIMIT\n")
    main = package.load("main")
    before = code_key(main.run)
    main.LIMIT = 2
    after = code_key(main.run)
    assert changed(before, after) == {"main:LIMIT"}
    assert by_name(after)["main:LIMIT"].shown == "2"


def test_a_file_is_parsed_once(package: Package, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keys of several functions of one unchanged file parse it once."""
    package.write(
        main="def run():\n    return two()\ndef two():\n    return 2\ndef three():\n    return 3\n"
    )
    main = package.load("main")
    parses: list[str] = []
    real_parse = ast.parse

    def counting_parse(source: str, filename: str = "<unknown>") -> Any:
        parses.append(filename)
        return real_parse(source, filename)

    monkeypatch.setattr(ast, "parse", counting_parse)
    code_key(main.run)
    code_key(main.three)
    assert len(parses) == 1


def test_functools_wrappers_of_library_code_are_unwrapped(package: Package) -> None:
    """A helper cached with ``functools.lru_cache`` (a C object) is followed to the user's
    function inside it."""
    package.write(
        main="""
        import functools

        @functools.lru_cache(maxsize=None)
        def cached(x):
            return x

        def run(x):
            return cached(x)
        """
    )
    assert set(by_name(package.key())) == {"main:run", "main:cached"}


def test_callable_objects_in_globals_do_not_break_the_walk(package: Package) -> None:
    """An object whose ``__getattr__`` raises or answers anything is no code and no error."""
    package.write(
        main="""
        class Odd:
            def __getattr__(self, name):
                raise RuntimeError(name)
            def __call__(self):
                return 1

        class Yes:
            def __getattr__(self, name):
                return self
            def __call__(self):
                return 1

        odd, yes = Odd(), Yes()

        def run():
            return odd() + yes()
        """
    )
    kinds = {name: part.kind for name, part in by_name(package.key()).items()}
    assert kinds == {
        "main:run": "function",
        "main:odd": "constant",  # by the statement that makes it
        "main:yes": "constant",
        "main:Odd": "class",  # named by that statement
        "main:Yes": "class",
    }


CONFIG = """
import enum

from .settings import Settings


class Mode(enum.Enum):
    FAST = 1
    SLOW = 2


ALPHA = 0.3
TABLE = {"a": 1, "b": [1, 2]}
MODE = Mode.FAST
SETTINGS = Settings(alpha=ALPHA)
_cache = {}
"""


@pytest.mark.parametrize(
    ("old", "new", "part", "shown"),
    [
        ('"a": 1', '"a": 2', "config:TABLE", "{'a': 2, 'b': [1, 2]}"),
        ("MODE = Mode.FAST", "MODE = Mode.SLOW", "config:MODE", "Mode.SLOW"),
        ("FAST = 1", "FAST = 3", "config:Mode", ""),
        ("ALPHA = 0.3", "ALPHA = 0.4", "config:ALPHA", "0.4"),
        ("Settings(alpha=ALPHA)", "Settings(alpha=ALPHA, beta=1)", "config:SETTINGS", None),
    ],
)
def test_other_globals_are_known_by_their_assignment(
    package: Package, old: str, new: str, part: str, shown: str | None
) -> None:
    """A global that is neither code nor a simple value (a dict, an enum member, an object)
    is a constant part by the module-level statement that makes it, shown as its source;
    what that statement names (a class, a constant) is followed, also through an import
    from another of the user's modules."""
    package.write(
        main="""
        from . import config
        from .config import TABLE

        def run():
            return TABLE, config.MODE, config.SETTINGS, config._cache
        """,
        config=CONFIG,
        settings="class Settings:\n    def __init__(self, **kw):\n        self.kw = kw\n",
    )
    before = package.key()
    names = set(by_name(before))
    assert {"config:TABLE", "config:MODE", "config:Mode", "config:SETTINGS"} <= names
    assert {"config:ALPHA", "settings:Settings", "config:_cache"} <= names
    package.write(config=CONFIG.replace(old, new))
    after = package.key()
    assert changed(before, after) == {part}
    if shown is not None:
        assert by_name(after)[part].shown == shown


def test_a_global_filled_at_run_time_keeps_the_key(package: Package) -> None:
    """A cache dict that the function fills keeps the key: it is its statement that counts,
    not its value at the time."""
    package.write(
        main="""
        _cache = {}

        def run(x):
            _cache[x] = x
            return _cache
        """
    )
    main = package.load("main")
    before = code_key(main.run)
    main.run(1)
    assert code_key(main.run) == before
    assert by_name(before)["main:_cache"].shown == "{}"


def test_deeply_nested_code_is_hashed_from_its_source(package: Package) -> None:
    """An expression nested deeper than Python's recursion limit (a long sum) is still
    hashed from its source, in a function and in a class body."""
    total = " + ".join(["x"] * 1200)
    package.write(
        main=f"x = 1\nclass Big:\n    TOTAL = {total}\ndef run():\n    return {total}, Big\n"
    )
    key = package.key()
    assert {name: part.kind for name, part in by_name(key).items()} == {
        "main:run": "function",
        "main:Big": "class",
        "main:x": "constant",
    }
    assert key.notes == ()


def test_changes_are_described_as_a_user_reads_them(package: Package) -> None:
    """``describe_changes`` names each differing part: an edited function or class, a
    constant with both values, a helper newly used or no longer used, a version."""
    package.write(main=MAIN, helpers=HELPERS)
    before = package.key()
    assert describe_changes(before, before) == ()
    package.write(
        main=MAIN.replace("THRESHOLD = 0.5", "THRESHOLD = 0.7").replace(
            "helpers.clean_rows(rows)", "helpers.unused() and rows"
        ),
        helpers=HELPERS.replace("self.row = row", "self.row = row.upper()"),
    )
    after = package.key()
    assert set(describe_changes(before, after)) == {
        "code of class Shard changed",
        "clean_rows() is no longer used",
        "code of run() changed",
        "constant LIMIT is no longer used",
        "constant THRESHOLD: 0.5 -> 0.7",
        "unused() is new",
    }
    v1, v2 = package.key(version="1"), package.key(version="2")
    assert describe_changes(v1, v2) == ("version '1' -> '2'",)


def test_async_functions_dataclasses_and_pydantic_models(package: Package) -> None:
    """An ``async def`` task, a dataclass and a pydantic model are read from their source
    like any function and class (no note), and what their methods use is followed."""
    package.write(
        main="""
        import dataclasses

        import pydantic

        from . import helpers

        @dataclasses.dataclass(frozen=True)
        class Row:
            name: str = "x"
            def clean(self):
                return helpers.tidy(self.name)

        class Settings(pydantic.BaseModel):
            alpha: float = 0.3
            def scaled(self):
                return helpers.scale(self.alpha)

        async def run():
            return Row().clean(), Settings().scaled()
        """,
        helpers="def tidy(x):\n    return x\ndef scale(x):\n    return x\n",
    )
    key = package.key()
    assert {name: part.kind for name, part in by_name(key).items()} == {
        "main:run": "function",
        "main:Row": "class",
        "main:Row decorators": "constant",
        "main:Settings": "class",
        "helpers:tidy": "function",
        "helpers:scale": "function",
    }
    assert key.notes == ()


def test_code_of_a_notebook_cell_is_read_from_linecache() -> None:
    """A function and a class (a dataclass, whose made methods have no source) whose lines
    only ``linecache`` holds (a notebook's cell) are read from there, not hashed by their
    bytecode."""
    filename = f"<ipython-input-{uuid.uuid4().hex}>"
    text = (
        "import dataclasses\n"
        "@dataclasses.dataclass\n"
        "class Cell:\n    x: int = 1\n    def get(self):\n        return self.x\n\n"
        "def run():\n    return Cell().get()\n"
    )
    lines = text.splitlines(keepends=True)
    linecache.cache[filename] = (len(text), None, lines, filename)
    try:
        namespace: dict[str, Any] = {"__name__": f"notebook_{uuid.uuid4().hex}"}
        exec(compile(text, filename, "exec", dont_inherit=True), namespace)
        key = code_key(namespace["run"])
    finally:
        del linecache.cache[filename]
    assert [part.kind for part in key.parts] == ["class", "function"]
    assert key.notes == ()


def test_classes_made_by_a_call_and_decorators_in_a_class(package: Package) -> None:
    """A class made by a call (``namedtuple``, ``Enum("Color", ...)``) is known by that
    statement, without a note; a user's decorator on a method or on the class is reached."""
    source = """
        import collections
        import enum

        from . import deco

        Point = collections.namedtuple("Point", "x y")
        Color = enum.Enum("Color", "RED GREEN")

        @deco.register
        class Shape:
            @deco.traced
            def area(self):
                return 1

        def run():
            return Point(1, 2), Color.RED, Shape().area()
    """
    package.write(
        main=source,
        deco="""
        import functools

        def register(cls):
            return cls

        def traced(fn):
            @functools.wraps(fn)
            def wrapper(*args):
                return fn(*args)
            return wrapper
        """,
    )
    key = package.key()
    assert {name: part.kind for name, part in by_name(key).items()} == {
        "main:run": "function",
        "main:Point": "constant",
        "main:Color": "constant",
        "main:Shape": "class",
        "main:Shape decorators": "constant",
        "deco:register": "function",
        "deco:traced": "function",
        "deco:traced.<locals>.wrapper": "function",
        "main:Shape.area": "function",  # what the wrapper's closure holds
    }
    assert key.notes == ()
    package.write(main=source.replace('"x y"', '"x y z"'))
    assert changed(key, package.key()) == {"main:Point"}


def test_a_module_run_with_python_m_has_the_key_it_has_when_imported(package: Package) -> None:
    """``python -m pkg.main`` names its parts ``pkg.main:...`` as an import does (not
    ``__main__``), so the key is the same either way."""
    package.write(
        helpers=HELPERS,
        main=MAIN
        + textwrap.dedent(
            """
            if __name__ == "__main__":
                from taskkit.function.code import code_key
                print(code_key(run).digest)
            """
        ),
    )
    imported = package.key()
    worktree = Path(code_module.__file__).parents[2]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(worktree), str(package.root)])}
    done = subprocess.run(
        [sys.executable, "-B", "-m", f"{package.name}.main"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == imported.digest


def test_a_version_is_shown_without_credentials() -> None:
    """A version string is shown as given, with any credential in it hidden (it is stored
    with the journal); its digest is still that of the string as given."""
    key = code_key(_helper, version="AccountName=a;AccountKey=c2VjcmV0;")
    (part,) = key.parts
    assert "c2VjcmV0" not in part.shown
    assert part.shown == "AccountName=a;AccountKey=***;"
    assert part.digest != code_key(_helper, version=part.shown).parts[0].digest


def test_the_bound_arguments_of_a_partial_global_are_part_of_the_key(package: Package) -> None:
    """`part = functools.partial(helper, 5)` read by the function: editing 5 changes the key,
    and so does the helper's code."""
    source = """
        import functools
        from . import helpers
        part = functools.partial(helpers.clean, {n})
        def run():
            return part()
        """
    package.write(main=source.format(n=5), helpers="def clean(x):\n    return x + 1\n")
    first = package.key()
    package.write(main=source.format(n=6))
    second = package.key()
    assert first.digest != second.digest
    assert any("constant part" in line for line in describe_changes(first, second))
    package.write(helpers="def clean(x):\n    return x + 2\n")
    assert package.key().digest != second.digest


def test_a_file_edited_after_import_does_not_key_the_running_code_by_the_new_source(
    package: Package,
) -> None:
    """The running function is the old code: its key is its bytecode (with a note), never the
    edited file's AST, so a fresh process running the new code gets another key."""
    package.write(main="def run(x):\n    return x + 1\n")
    running = package.load("main").run
    package.write(main="def run(x):\n    return x + 2\n")
    stale = code_key(running)
    fresh = package.key()
    assert [part.kind for part in stale.parts] == ["bytecode"]
    assert any("changed since import" in note for note in stale.notes)
    assert stale.digest != fresh.digest
    assert [part.kind for part in fresh.parts] == ["function"]


def test_a_path_made_from_file_is_keyed_by_its_statement_not_the_checkouts_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`HERE = os.path.dirname(__file__)` in two checkouts: one key (a laptop and a Batch
    task's folder differ only in where the code sits)."""
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    digests = []
    for folder in ("a", "b"):
        root = tmp_path / folder
        root.mkdir()
        (root / "hm.py").write_text(
            "import os\nHERE = os.path.dirname(os.path.abspath(__file__))\n"
            "def run():\n    return HERE\n"
        )
        monkeypatch.syspath_prepend(str(root))
        sys.modules.pop("hm", None)
        importlib.invalidate_caches()
        module = importlib.import_module("hm")
        assert str(root) == module.HERE
        digests.append(code_key(module.run).digest)
        sys.modules.pop("hm", None)
    assert digests[0] == digests[1]


def test_an_attribute_set_on_a_class_or_function_outside_its_body_is_keyed(
    package: Package,
) -> None:
    """`Config.LIMIT = 7` and `helper.factor = 3` at module level change what the code does:
    editing either changes the key."""
    source = """
        class Config:
            LIMIT = 5
        Config.LIMIT = {limit}
        def helper():
            return 1
        helper.factor = {factor}
        def run(x):
            return x + Config.LIMIT + helper.factor
        """
    package.write(main=source.format(limit=7, factor=3))
    first = package.key()
    package.write(main=source.format(limit=8, factor=3))
    second = package.key()
    package.write(main=source.format(limit=8, factor=4))
    third = package.key()
    assert len({first.digest, second.digest, third.digest}) == 3


def test_a_class_decorators_arguments_are_keyed(package: Package) -> None:
    """`@dataclass(eq=True)` -> `@dataclass(eq=False)` changes what the class does: the key
    changes, and explain shows the decorators."""
    source = """
        from dataclasses import dataclass
        @dataclass(eq={eq})
        class Row:
            a: int
        def run():
            return Row(1) == Row(1)
        """
    package.write(main=source.format(eq=True))
    first = package.key()
    package.write(main=source.format(eq=False))
    second = package.key()
    assert first.digest != second.digest
    assert any("@dataclass(eq=False)" in line for line in describe_changes(first, second))
