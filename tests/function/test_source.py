"""taskkit.function.source: the canonical digests of code and constants, and parsing once."""

from __future__ import annotations

import ast
import textwrap
import types
from pathlib import Path

import pytest
import xxhash
from hypothesis import given
from hypothesis import strategies as st

from taskkit.function.source import ast_digest, bytecode_digest, source_of, value_digest

SIMPLE = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text(max_size=8)
    | st.binary(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3).map(tuple)
        | st.frozensets(inner.filter(lambda v: not isinstance(v, float)), max_size=3)
    ),
    max_leaves=8,
)


def typed(value: object) -> object:
    """``value`` with the type of every piece spelled out (``1``, ``1.0``, ``True`` differ;
    ``0.0`` and ``-0.0`` too)."""
    if isinstance(value, tuple):
        return ("tuple", tuple(typed(item) for item in value))
    if isinstance(value, frozenset):
        return ("frozenset", frozenset(typed(item) for item in value))
    if isinstance(value, float):
        return ("float", value.hex())
    return (type(value).__name__, value)


@given(SIMPLE, SIMPLE)
def test_constants_are_equal_exactly_when_value_and_types_are(a: object, b: object) -> None:
    """Two constants have one digest exactly when they are the same value of the same types
    all through (a property over generated values)."""
    assert (value_digest(a) == value_digest(b)) == (typed(a) == typed(b))


@pytest.mark.parametrize(
    "values",
    [
        (1, 1.0, True, "1", b"1", (1,), frozenset({1})),
        (0, 0.0, -0.0, False, None, "", b"", (), frozenset()),
        (("a", "b"), ("ab",), ("a", ("b",)), frozenset({"a", "b"})),
    ],
)
def test_constants_of_different_types_differ(values: tuple[object, ...]) -> None:
    """``1``, ``1.0``, ``True`` and their likes are different constants."""
    assert len({value_digest(value) for value in values}) == len(values)


def test_a_constant_digest_is_fixed() -> None:
    """A constant's digest is a fixed function of its canonical bytes (no process state)."""
    expected = xxhash.xxh3_128_hexdigest(b"taskkit-code-v1value(2:i1;s1:a")
    assert value_digest((1, "a")) == f"xxh3-128:{expected}"


def digest_of(code: str) -> str:
    """The AST digest of a module's source."""
    return ast_digest(ast.parse(textwrap.dedent(code)))


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("x = 1\n", "x = 1  # why\n"),
        ('def f():\n    """Doc."""\n    return 1\n', "def f():\n    return 1\n"),
        ('class A:\n    """Doc."""\n    x = 1\n', "class A:\n    x = 1\n"),
        ('"""Module."""\nx = 1\n', "x = 1\n"),
        ("f(a, b)\n", "f(\n    a,\n    b,\n)\n"),
        ("x = 'a'\n", 'x = "a"\n'),
        ("x = u'a'\n", "x = 'a'\n"),
        ("@cache\ndef f():\n    return 1\n", "def f():\n    return 1\n"),
        ("x = (1)\n", "x = 1\n"),
    ],
    ids=[
        "comment",
        "function-docstring",
        "class-docstring",
        "module-docstring",
        "wrapping",
        "quotes",
        "u-prefix",
        "decorator",
        "parentheses",
    ],
)
def test_what_is_not_code_keeps_the_ast_digest(a: str, b: str) -> None:
    """Comments, docstrings, layout, quoting and decorators are not part of the digest."""
    assert digest_of(a) == digest_of(b)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("x = 1\n", "x = 1.0\n"),
        ("x = 1\n", "x = True\n"),
        ("x = 'a'\n", "x = b'a'\n"),
        ("def f():\n    return 1\n", "def g():\n    return 1\n"),
        ("def f(a, b):\n    return a\n", "def f(b, a):\n    return a\n"),
        ("def f():\n    x = 'doc'\n", "def f():\n    'doc'\n"),
        ("def f():\n    return 1\n    'not a docstring'\n", "def f():\n    return 1\n"),
        ("x = a.b\n", "x = a.c\n"),
        ("x = a + b\n", "x = a - b\n"),
        ("x = [a, b]\n", "x = [[a, b]]\n"),
    ],
)
def test_every_edit_of_code_changes_the_ast_digest(a: str, b: str) -> None:
    """Types of constants, names, argument order, nesting and a string that is no docstring
    count."""
    assert digest_of(a) != digest_of(b)


def test_the_ast_digest_is_fixed() -> None:
    """The digest is a fixed function of documented canonical bytes (no positions)."""
    expected = xxhash.xxh3_128_hexdigest(
        b"taskkit-code-v1asts6:Module(s4:body=[1:s4:Expr(s5:value=s8:Constant(s5:value=i1;)))"
    )
    assert digest_of("1\n") == f"xxh3-128:{expected}"


def made(source: str) -> types.FunctionType:
    """The function ``source`` defines, by ``exec`` (so it has no source file)."""
    namespace: dict[str, object] = {}
    exec(source, namespace)
    (fn,) = (value for value in namespace.values() if isinstance(value, types.FunctionType))
    return fn


def test_bytecode_digest_leaves_out_lines_and_the_docstring() -> None:
    """Two functions differing only by line numbers and docstring share a bytecode digest;
    another constant does not."""
    a = made('def a(x):\n    """Doc."""\n    return x + 1\n')
    b = made("\n\n\ndef a(x):\n    return x + 1\n")
    c = made("def a(x):\n    return x + 2\n")
    assert bytecode_digest(a.__code__, a.__doc__) == bytecode_digest(b.__code__, b.__doc__)
    assert bytecode_digest(a.__code__, a.__doc__) != bytecode_digest(c.__code__, c.__doc__)


def test_a_file_is_parsed_again_only_once_changed(tmp_path: Path) -> None:
    """A file is parsed once while its mtime and size stay; a change is parsed again."""
    path = tmp_path / "mod.py"
    path.write_text("def f():\n    return 1\n")
    first = source_of(str(path))
    assert first is not None
    assert source_of(str(path)) is first
    path.write_text("def f():\n    return 22\n")
    second = source_of(str(path))
    assert second is not None
    assert second is not first
    assert second.digest != first.digest


def test_no_source_is_none(tmp_path: Path) -> None:
    """A missing file, a pseudo-file and a file that does not parse have no source."""
    broken = tmp_path / "broken.py"
    broken.write_text("def f(:\n")
    assert source_of(str(tmp_path / "missing.py")) is None
    assert source_of("<string>") is None
    assert source_of(str(broken)) is None


INDEXED = """\
from .other import THING as alias
TABLE = {}
if True:
    TABLE = {"a": 1}
a, (b, c) = 1, (2, 3)
N: int = 3
N += 1

@decorator
def f():
    class Inner:
        def g(self):
            pass

class Outer:
    class Nested:
        pass
"""


def test_the_index_finds_functions_classes_and_assignments(tmp_path: Path) -> None:
    """Functions are found by their first line (decorators included) and name, classes by
    qualname, module globals by the statements that assign or import them."""
    path = tmp_path / "mod.py"
    path.write_text(INDEXED)
    found = source_of(str(path))
    assert found is not None
    assert (found.functions[(9, "f")].name, found.functions[(12, "g")].name) == ("f", "g")
    assert set(found.classes) == {"f.<locals>.Inner", "Outer", "Outer.Nested"}
    assert {name: len(statements) for name, statements in found.assignments.items()} == {
        "TABLE": 2,
        "a": 1,
        "b": 1,
        "c": 1,
        "N": 2,
    }
    assert found.imported == {"alias": ("other", 1, "THING")}
    table = found.assignment("TABLE")
    assert table is not None
    assert table[1] == "{'a': 1}"
    assert found.assignment("N") is not None
    assert found.assignment("N")[1] == "N += 1"  # type: ignore[index]
    assert found.assignment("missing") is None
