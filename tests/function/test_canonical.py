"""taskkit.function.canonical: one value, one digest, in every process; different values (types
included) never share one; a Path is keyed by its content."""

from __future__ import annotations

import collections
import copy
import dataclasses
import datetime
import decimal
import enum
import json
import math
import os
import pathlib
import pickle
import socket
import struct
import subprocess
import sys
import tracemalloc
import uuid
import zoneinfo
from pathlib import Path
from typing import Any, NamedTuple

import pytest
import xxhash
from hypothesis import given, settings
from hypothesis import strategies as st

from taskkit.content.digest import Digest
from taskkit.content.statcache import StatCache
from taskkit.function.canonical import _DIRECT as DIRECT
from taskkit.function.canonical import SCHEMA, Unkeyable, digest_of


def key(value: object, cache: StatCache | None = None) -> str:
    return str(digest_of(value, cache=cache))


class Color(enum.Enum):
    RED = 1
    BLUE = "blue"


class Level(enum.IntEnum):
    LOW = 1


class Pair(NamedTuple):
    a: object
    b: object


class OtherPair(NamedTuple):
    a: object
    b: object


@dataclasses.dataclass(frozen=True)
class Config:
    threshold: float
    names: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class OtherConfig:
    threshold: float
    names: tuple[str, ...] = ()


class Name(str):
    """A subclass of str that adds no state: keyable, apart from a plain str."""


class Tagged(int):
    """A subclass of int whose instances carry an attribute the key could not see."""


def tagged(value: int) -> Tagged:
    made = Tagged(value)
    made.note = "x"  # type: ignore[attr-defined]
    return made


UTC = datetime.timezone.utc
PARIS = zoneinfo.ZoneInfo("Europe/Paris")
OTHER_NAN = struct.unpack("<d", struct.pack("<Q", 0x7FF8000000000123))[0]

#: Pairs Python may call equal (or near enough) that must key differently: a key that merged
#: them would return one's stored result for the other.
DIFFERENT = [
    (1, 1.0),
    (1, True),
    (0, False),
    (1.0, True),
    (0.0, -0.0),
    (1, "1"),
    ("a", b"a"),
    (b"a", bytearray(b"a")),
    (b"ab", memoryview(b"ab")),
    ([1, 2], (1, 2)),
    ({1, 2}, frozenset({1, 2})),
    ({1: 2}, collections.OrderedDict({1: 2})),
    ([], ()),
    ((), None),
    ("", None),
    ({}, set()),
    (Level.LOW, 1),
    (Color.RED, 1),
    (Pair(1, 2), (1, 2)),
    (Pair(1, 2), OtherPair(1, 2)),
    (Config(0.5), OtherConfig(0.5)),
    (Config(0.5), Config(0.5, ("a",))),
    (Name("a"), "a"),
    (decimal.Decimal("1.0"), decimal.Decimal("1.00")),
    (decimal.Decimal(1), 1),
    (datetime.date(2024, 1, 2), datetime.datetime(2024, 1, 2)),
    (datetime.datetime(2024, 1, 2), datetime.datetime(2024, 1, 2, tzinfo=UTC)),
    (
        datetime.datetime(2024, 1, 2, 12, tzinfo=UTC),
        datetime.datetime(2024, 1, 2, 13, tzinfo=PARIS),  # the same instant, another zone
    ),
    (
        datetime.datetime(2024, 1, 2, 13, tzinfo=PARIS),
        datetime.datetime(2024, 1, 2, 13, tzinfo=datetime.timezone(datetime.timedelta(hours=1))),
    ),
    (datetime.time(1, 2), datetime.timedelta(hours=1, minutes=2)),
    (uuid.UUID(int=1), uuid.UUID(int=2)),
    (range(3), [0, 1, 2]),
    (1j, complex(0, -1)),
    (pathlib.PurePosixPath("a"), "a"),
    (pathlib.PurePosixPath("a"), pathlib.PureWindowsPath("a")),
    # length prefixes: the same bytes cut differently
    (["ab", "c"], ["a", "bc"]),
    ([[1], [2]], [[1, 2]]),
    ([[], []], [[[]]]),
    ({"a": "bc"}, {"ab": "c"}),
    ({"a": 1, "b": 2}, {"a": 2, "b": 1}),
    (2**64, 2**64 + 1),
    (-1, 255),
    (2**63, -(2**63)),
]


def _shown(value: object) -> str:
    """A test id part, the same in every process (a memoryview's repr holds its address)."""
    return f"memoryview({bytes(value)!r})" if isinstance(value, memoryview) else repr(value)


@pytest.mark.parametrize(
    ("a", "b"), DIFFERENT, ids=[f"{_shown(a)}-vs-{_shown(b)}"[:50] for a, b in DIFFERENT]
)
def test_different_values_and_types_key_differently(a: object, b: object) -> None:
    """Values that differ in type, in float bits, in order where order counts, or only in how
    their bytes are cut, never share a digest."""
    assert key(a) != key(b)


def test_every_kind_keys_differently_from_every_other() -> None:
    """Across one sample of each supported kind, all digests are distinct (no two tags meet)."""
    samples = [left for left, _ in DIFFERENT] + [right for _, right in DIFFERENT]
    distinct = {repr(v) + type(v).__qualname__: v for v in samples}
    digests = {key(v) for v in distinct.values()}
    assert len(digests) == len(distinct)


def test_order_free_containers_ignore_order_and_ordered_ones_keep_it() -> None:
    """A dict and a set key the same in any order; a list and an OrderedDict do not."""
    assert key({"a": 1, "b": [2, 3]}) == key({"b": [2, 3], "a": 1})
    assert key({"x", "y", "z"}) == key({"z", "y", "x"})
    assert key(frozenset({1, "a", (2,)})) == key(frozenset({(2,), "a", 1}))
    assert key([1, 2]) != key([2, 1])
    ordered = collections.OrderedDict
    assert key(ordered(a=1, b=2)) != key(ordered(b=2, a=1))


def test_nan_is_one_value_and_negative_zero_is_its_own() -> None:
    """Every NaN keys alike (its payload is unobservable); -0.0 stays apart from 0.0."""
    assert math.isnan(OTHER_NAN)
    assert key(math.nan) == key(OTHER_NAN) == key(float("-nan"))
    assert key([math.nan]) == key([OTHER_NAN])
    assert key(complex(math.nan, 1)) == key(complex(OTHER_NAN, 1))
    assert key(-0.0) != key(0.0)


class Shade(enum.Enum):
    BLUE = "blue"


@dataclasses.dataclass(frozen=True)
class Setting:
    threshold: float
    names: tuple[str, ...] = ()


# Pinned digests must not depend on how pytest names this module.
Shade.__module__ = Setting.__module__ = "golden"

#: Digests pinned once: a failure here means the encoding changed, and with it every key users
#: have recorded. That is a schema change: bump SCHEMA on purpose, then update these.
GOLDEN = {
    "None": (None, "xxh3-128:15f5c7a343114b15a9e2bd1bd402c414"),
    "True": (True, "xxh3-128:85b9ab142a5321295c908355df525144"),
    "1": (1, "xxh3-128:2a8bc30e46f7592dbf31d7659a863e78"),
    "1.0": (1.0, "xxh3-128:ffdf0959fb21fbcc5cec1b772957e2f4"),
    "0.3": (0.3, "xxh3-128:f20a747260746568549fdf8a10047903"),
    "-2**70": (-(2**70), "xxh3-128:eee1d76dc17d885ca2124f118030da56"),
    "'abc'": ("abc", "xxh3-128:30ed0886493130c955c3ccd2eeae2a4b"),
    "b'abc'": (b"abc", "xxh3-128:c96d5db28a818df84046bb2c01e9a8f4"),
    "list": ([1, "a", None], "xxh3-128:9897fb654c6f7ec1431d3d25fd845539"),
    "tuple": ((1, "a", None), "xxh3-128:22768b0355e71f2d42fae527cde1ae40"),
    "dict": ({"b": 2, "a": [1.5]}, "xxh3-128:1d04b9dd9279055a6c7c9924297bc844"),
    "set": ({"x", "y"}, "xxh3-128:9b0b5c2501f848b8a340c2568d0e4a79"),
    "enum": (Shade.BLUE, "xxh3-128:b530125ce9fd52f40127981027ca9a33"),
    "dataclass": (Setting(0.5, ("a",)), "xxh3-128:ad23eb46641dea0a4d7de861c0c7a7d3"),
    "datetime": (
        datetime.datetime(2024, 1, 2, 3, 4, 5, 6, tzinfo=PARIS),
        "xxh3-128:a7c70a022bd332513ed69101c4d9c6f8",
    ),
    "decimal": (decimal.Decimal("1.50"), "xxh3-128:fc74699b36ec52c5c5e287e55c376dbb"),
    "uuid": (uuid.UUID(int=7), "xxh3-128:db901f30fee2f9d3a0e82f151ce1fd1c"),
}


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_digests_of_simple_values_are_pinned(name: str) -> None:
    """The encoding of simple values is fixed forever (a change is a schema change)."""
    value, expected = GOLDEN[name]
    assert key(value) == expected


#: Types defined in a module both processes import by one name (a class's module is part of its
#: key).
TYPES = """
import dataclasses, enum

class Color(enum.Enum):
    BLUE = "blue"

@dataclasses.dataclass
class Config:
    threshold: float
    names: tuple = ()
"""
#: Values whose digests another process must reproduce: sets and dicts of str (iteration order
#: depends on PYTHONHASHSEED), an enum, a dataclass, dates with zones.
RICH = (
    "{'sets': [{'alpha', 'beta', 'gamma', 'delta'}, frozenset({'x', 'y'})], "
    "'d': {'k%d' % i: i for i in range(50)}, 'e': Color.BLUE, 'c': Config(0.25, ('a', 'b')), "
    "'when': datetime.datetime(2024, 3, 31, 2, 30, tzinfo=zoneinfo.ZoneInfo('Europe/Paris')), "
    "'t': datetime.time(1, 2, tzinfo=datetime.timezone.utc), 'dec': decimal.Decimal('-0.10'), "
    "'u': uuid.UUID(int=99), 'r': range(1, 9, 2), 'n': [math.nan, -0.0, 1e300, 2**200], "
    "'p': urllib.parse.urlparse('https://example.org/a?b'), 'b': [b'raw', bytearray(b'buf')]}"
)
IMPORTS = "import sys, datetime, decimal, math, urllib.parse, uuid, zoneinfo\n"


@pytest.mark.parametrize("seed", ["0", "1", "12345"])
def test_digest_is_the_same_in_another_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, seed: str
) -> None:
    """A fresh interpreter with another hash seed computes the same digest for the same value
    (nothing depends on hash(), id() or a set's iteration order)."""
    (tmp_path / "keyed_types.py").write_text(TYPES)
    code = (
        IMPORTS
        + f"sys.path.insert(0, {str(tmp_path)!r})\n"
        + "from keyed_types import Color, Config\n"
        + "from taskkit.function.canonical import digest_of\n"
        + f"print(digest_of({RICH}))\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "keyed_types", raising=False)
    namespace: dict[str, Any] = {}
    exec(code.replace("print(", "result = str("), namespace)
    env = {**os.environ, "PYTHONHASHSEED": seed}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == namespace["result"]
    assert namespace["result"].startswith("xxh3-128:")


@pytest.mark.parametrize(
    ("value", "kind"),
    [
        (object(), "object"),
        (lambda: 1, "function"),
        (print, "builtin_function_or_method"),
        (iter([1]), "list_iterator"),
        (tagged(3), "test_canonical.Tagged"),
        ([1, {"a": (2, object())}], "object"),
        ({frozenset({1}): object()}, "object"),
        (Config(0.5, (1, object())), "object"),  # type: ignore[arg-type]
        (Color, "enum.EnumType" if sys.version_info >= (3, 11) else "enum.EnumMeta"),
    ],
)
def test_values_with_no_canonical_form_are_refused_with_their_type(
    value: object, kind: str
) -> None:
    """An object, a function, an iterator, a built-in subclass carrying state, anywhere inside
    a container, is refused naming its type: never keyed by identity or repr."""
    with pytest.raises(Unkeyable) as caught:
        key(value)
    assert caught.value.kind == kind
    assert f"cannot key a value of type {kind}" == caught.value.what


def test_a_socket_is_refused() -> None:
    """The brief's example: a connection has no canonical form."""
    with socket.socket() as conn, pytest.raises(Unkeyable, match=r"type socket\.socket$"):
        key(conn)


def test_where_inside_the_value_the_refusal_is_is_told() -> None:
    """The path to the offending part is given, through lists, dicts, sets and fields."""
    cases = {
        "[1]['a'][1]": [1, {"a": (2, object())}],
        ".names[1]": Config(0.5, (1, object())),  # type: ignore[arg-type]
        "{...}{...}": {frozenset({object()})},
        ".keys()[1]": {(1, object()): 2},
    }
    for where, value in cases.items():
        with pytest.raises(Unkeyable) as caught:
            key(value)
        assert caught.value.where == where


def test_cycles_are_refused_and_shared_parts_are_not() -> None:
    """A container inside itself is a clear refusal; a value met twice without a cycle is fine."""
    loop: list[object] = [1]
    loop.append(loop)
    mapping: dict[str, object] = {}
    mapping["self"] = [mapping]
    for value in (loop, mapping, {"deep": [[loop]]}):
        with pytest.raises(Unkeyable, match="contains itself"):
            key(value)
    shared = [1, 2]
    assert key([shared, shared]) == key([[1, 2], [1, 2]])


def test_deep_nesting_is_a_refusal_not_a_crash() -> None:
    """Nesting beyond the interpreter's recursion limit is refused, not a RecursionError."""
    value: list[object] = []
    for _ in range(sys.getrecursionlimit() + 10):
        value = [value]
    with pytest.raises(Unkeyable, match="nested too deeply"):
        key(value)


class Slotted(list):  # type: ignore[type-arg]
    """A list subclass whose instances carry a slot the list's items do not show."""

    __slots__ = ("label",)


def test_a_subclass_with_slots_is_refused() -> None:
    """Slots are state the key cannot see: refused, like an instance with attributes."""
    with pytest.raises(Unkeyable, match=r"type .*Slotted$"):
        key(Slotted([1]))


def test_subclass_without_state_is_keyed_by_its_class() -> None:
    """A stateless subclass of a built-in keys by class and value: stable, apart from the base."""
    assert key(Name("a")) == key(Name("a"))
    assert key(collections.Counter("aab")) != key({"a": 2, "b": 1})
    assert key(collections.Counter("aab")) == key(collections.Counter("aba"))


def test_memoryview_keys_by_bytes_format_and_shape() -> None:
    """A memoryview's digest is its format, shape and bytes; a strided view needs no copy trick."""
    raw = bytes(range(8))
    view = memoryview(raw)
    assert key(view) == key(memoryview(bytearray(raw)))
    assert key(view.cast("H")) != key(view)
    assert key(view.cast("B", (2, 4))) != key(view)
    assert key(view[::2]) == key(memoryview(raw[::2]))


@pytest.mark.parametrize("size", [0, 1, DIRECT - 1, DIRECT, DIRECT + 1, 3 * DIRECT + 5])
def test_bytes_encoding_is_as_specified_whether_gathered_or_fed_whole(size: int) -> None:
    """Small pieces are gathered, large buffers fed to the hasher as they are: either way the
    digest is that of the specified stream (schema, tags, length prefixes, bytes)."""
    data = bytes(i % 251 for i in range(size))
    u64 = struct.Struct("<Q").pack
    stream = SCHEMA + b"l" + u64(2) + b"y" + u64(size) + data + b"i" + u64(1) + b"\x07"
    assert key([data, 7]) == str(Digest(xxhash.xxh3_128_digest(stream)))


def test_a_large_buffer_is_hashed_without_a_copy() -> None:
    """64 MiB of bytes, alone or inside a dict, hash with well under 1 MiB of extra memory."""
    data = bytes(64 * 1024 * 1024)
    tracemalloc.start()
    try:
        key(data)
        key({"payload": data, "n": 1})
        key(memoryview(data))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1024 * 1024


def test_a_pure_path_is_a_name_and_touches_no_file(tmp_path: Path) -> None:
    """PurePath values that are not concrete paths key by their text; nothing is read."""
    missing = pathlib.PurePosixPath(tmp_path / "nothing")
    assert key(missing) == key(pathlib.PurePosixPath(str(tmp_path / "nothing")))
    assert key(missing) != key(pathlib.PurePosixPath(tmp_path / "other"))


# -- library values ---------------------------------------------------------------------------


def test_pydantic_models_key_by_class_and_fields() -> None:
    """Equal models key alike; a field or the class changes the key."""
    import pydantic

    class Settings(pydantic.BaseModel):
        threshold: float
        tags: list[str] = []

    class Other(pydantic.BaseModel):
        threshold: float
        tags: list[str] = []

    assert key(Settings(threshold=0.5)) == key(Settings(threshold=0.5, tags=[]))
    assert key(Settings(threshold=0.5)) != key(Settings(threshold=0.6))
    assert key(Settings(threshold=0.5)) != key(Other(threshold=0.5))


def test_numpy_arrays_key_by_dtype_shape_and_bytes() -> None:
    """Only with numpy installed: equal arrays key alike, dtype and shape count, views work."""
    np = pytest.importorskip("numpy")
    a = np.arange(12, dtype="int64")
    assert key(a) == key(np.arange(12, dtype="int64"))
    assert key(a) != key(a.astype("int32"))
    assert key(a) != key(a.reshape(3, 4))
    assert key(a[::2]) == key(np.ascontiguousarray(a[::2]))
    assert key(np.array(["a", None], dtype=object)) != key(np.array(["a", "b"], dtype=object))
    assert key(np.arange(3).astype("datetime64[s]")) != key(np.arange(3, dtype="int64"))
    assert key(np.float64(1.0)) != key(1.0)
    with pytest.raises(Unkeyable):
        key(np.array([object()], dtype=object))


def test_pandas_objects_key_by_labels_dtypes_and_values() -> None:
    """Only with pandas installed: equal frames key alike; a value, a label, an index or a
    dtype changes the key; a Series is not a one-column frame."""
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame({"a": [1, 2], "b": ["x", "y"]})
    assert key(frame) == key(pd.DataFrame({"a": [1, 2], "b": ["x", "y"]}))
    assert key(frame) != key(pd.DataFrame({"a": [1, 3], "b": ["x", "y"]}))
    assert key(frame) != key(pd.DataFrame({"a": [1, 2], "c": ["x", "y"]}))
    assert key(frame) != key(frame.set_axis([5, 6]))
    assert key(frame) != key(frame.astype({"a": "float64"}))
    assert key(frame["a"]) != key(frame[["a"]])
    assert key(frame["a"]) == key(pd.Series([1, 2], name="a"))
    assert key(pd.Index(["x"])) != key(pd.Index(["y"]))
    with_na = pd.Series(["a", None], dtype="string")
    assert key(with_na) == key(pd.Series(["a", None], dtype="string"))
    assert key(with_na) != key(pd.Series(["a", "b"], dtype="string"))
    assert key(pd.NaT) != key(pd.NA)


def test_numpy_and_pandas_are_never_imported() -> None:
    """Keying values does not import numpy or pandas (only their objects, if loaded, are
    keyed)."""
    code = (
        "import sys, pathlib\n"
        "from taskkit.function.canonical import digest_of\n"
        "digest_of([1, 'a', {'b': 2.5}, pathlib.PurePosixPath('x')])\n"
        "assert 'numpy' not in sys.modules and 'pandas' not in sys.modules, 'imported'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr


# -- properties -------------------------------------------------------------------------------

scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True)
    | st.text()
    | st.binary()
    | st.decimals(allow_nan=False)
    | st.datetimes()
    | st.uuids()
)
values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=5)
        | st.lists(children, max_size=5).map(tuple)
        | st.dictionaries(st.text(max_size=5), children, max_size=5)
        | st.frozensets(st.text(max_size=5) | st.integers(), max_size=5)
    ),
    max_leaves=20,
)


@given(values)
def test_a_rebuilt_value_keys_alike(value: Any) -> None:
    """A value copied and rebuilt from pickle (new objects, same content) keys the same."""
    assert key(value) == key(copy.deepcopy(value)) == key(pickle.loads(pickle.dumps(value)))


@given(st.dictionaries(st.text(max_size=8), values, max_size=8), st.randoms())
def test_a_dict_in_any_order_keys_alike(mapping: dict[str, Any], rnd: Any) -> None:
    """Permuting a dict's insertion order never changes its key."""
    items = list(mapping.items())
    rnd.shuffle(items)
    assert key(dict(items)) == key(mapping)


def same(a: object, b: object) -> bool:
    """Equal in the strictest sense: same types everywhere, same float bits (NaNs alike)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return struct.pack("<d", a) == struct.pack("<d", b) or (math.isnan(a) and math.isnan(b))  # type: ignore[arg-type]
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=False))  # type: ignore[arg-type]
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)  # type: ignore[attr-defined,index]
    if isinstance(a, frozenset):
        return {json.dumps(repr(x)) + type(x).__name__ for x in a} == {
            json.dumps(repr(x)) + type(x).__name__
            for x in b  # type: ignore[attr-defined]
        }
    if isinstance(a, datetime.datetime):
        return a.isoformat() == b.isoformat() and a.fold == b.fold  # type: ignore[attr-defined]
    if isinstance(a, decimal.Decimal):
        return str(a) == str(b)
    return a == b


@settings(max_examples=300)
@given(values, st.data())
def test_two_values_share_a_key_only_if_strictly_equal(a: Any, data: st.DataObject) -> None:
    """The encoding is injective on the kinds it knows: a shared digest means same types, same
    float bits, same content (b is sometimes a copy of a, so both branches are exercised)."""
    b = data.draw(values | st.just(copy.deepcopy(a)))
    if key(a) == key(b):
        assert same(a, b)
    else:
        assert not same(a, b)
