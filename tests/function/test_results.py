"""taskkit.function.results: a stored result decodes to exactly the value that was returned,
or it is refused at the first call with what to do."""

from __future__ import annotations

import collections
import dataclasses
import decimal
import enum
import json
import math
import pickle
import struct
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from taskkit.exceptions import DataError, MisuseError
from taskkit.function.results import (
    PICKLE_PROTOCOL,
    ResultError,
    decode_result,
    encode_result,
)


class Level(enum.IntEnum):
    LOW = 1


class Name(str):
    pass


@dataclasses.dataclass
class Row:
    id: int
    tags: tuple[str, ...]


def same(a: object, b: object) -> bool:
    """Equal with the same types all the way down, float bits included."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return struct.pack("<d", a) == struct.pack("<d", b)  # type: ignore[arg-type]
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=False))  # type: ignore[arg-type]
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)  # type: ignore[index, call-overload]
    return a == b


def round_trip(value: object, how: Any = "json") -> object:
    return decode_result(encode_result(value, how, name="clean"), how)


@pytest.mark.parametrize(
    "value",
    [
        None,
        True,
        0,
        -(2**100),
        1.0,
        -0.0,
        0.1,
        1e308,
        5e-324,
        "",
        "héllo ☃",
        "\ud800 lone surrogate",
        [],
        {},
        [1, [2.5, [None, "x"]]],
        {"b": 1, "a": {"z": [], "y": {}}},
    ],
)
def test_json_results_come_back_exactly(value: object) -> None:
    """JSON-safe values decode to the same value with the same types, dict order kept."""
    assert same(round_trip(value), value)


def test_json_is_compact_and_keeps_insertion_order() -> None:
    """No spaces, keys in the order the function built them (a dict's order is data)."""
    assert encode_result({"b": 1, "a": [1, 2]}, "json", name="f") == b'{"b":1,"a":[1,2]}'
    assert encode_result("é", "json", name="f") == '"é"'.encode()


def test_a_tuple_is_refused_with_what_to_do() -> None:
    """The brief's message, word for word."""
    with pytest.raises(ResultError) as caught:
        encode_result((1, 2), "json", name="clean")
    assert str(caught.value) == (
        "result of clean(): a tuple does not survive JSON (it comes back a list); return a "
        "list, or use result='pickle'"
    )
    assert isinstance(caught.value, MisuseError)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"rows": [1, (2,)]}, r"a tuple at \['rows'\]\[1\] does not survive JSON"),
        ({1, 2}, r"a set has no JSON form; return a sorted list, or use result='pickle'$"),
        (frozenset(), r"a frozenset has no JSON form"),
        ({1: "a"}, r"the key 1 does not survive JSON \(a int key comes back a str\)"),
        ({"a": {None: 1}}, r"the key None at \['a'\] does not survive JSON"),
        ({(1, 2): 1}, r"the key \(1, 2\) does not survive"),
        (math.nan, r"the float nan has no JSON form"),
        ([math.inf], r"the float inf at \[0\] has no JSON form"),
        (Level.LOW, r"a Level does not survive JSON \(it comes back a plain int\)"),
        (Name("x"), r"a Name does not survive JSON \(it comes back a plain str\)"),
        (collections.OrderedDict(a=1), r"an OrderedDict does not survive JSON"),
        (b"raw", r"a bytes has no JSON form"),
        (decimal.Decimal("1.5"), r"a Decimal has no JSON form"),
        (Row(1, ()), r"a Row has no JSON form"),
        (object(), r"an object has no JSON form"),
    ],
)
def test_values_json_would_change_are_refused_naming_where(value: object, message: str) -> None:
    """Each kind of value JSON cannot give back exactly is refused, located and explained."""
    with pytest.raises(ResultError, match=message):
        encode_result(value, "json", name="clean")


def test_cycles_and_deep_nesting_are_refusals_not_crashes() -> None:
    """A list inside itself and nesting past the recursion limit are ResultErrors."""
    loop: list[object] = []
    loop.append(loop)
    with pytest.raises(ResultError, match=r"a list at \[0\] contains itself"):
        encode_result(loop, "json", name="clean")
    deep: list[object] = []
    for _ in range(100_000):
        deep = [deep]
    with pytest.raises(ResultError, match="nested too deeply"):
        encode_result(deep, "json", name="clean")


def test_an_int_too_long_for_text_is_a_refusal() -> None:
    """An int beyond the interpreter's digit limit is a ResultError, not a ValueError."""
    with pytest.raises(ResultError, match=r"result of clean\(\) cannot be written as JSON"):
        encode_result(10**5000, "json", name="clean")


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=4), children, max_size=4)
    ),
    max_leaves=15,
)
any_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text()
    | st.binary(max_size=4)
    | st.decimals(allow_nan=False),
    lambda children: (
        st.lists(children, max_size=4)
        | st.lists(children, max_size=4).map(tuple)
        | st.dictionaries(st.text(max_size=3) | st.integers(), children, max_size=4)
        | st.frozensets(st.integers(), max_size=3)
    ),
    max_leaves=15,
)


@given(json_values)
def test_json_safe_values_always_round_trip(value: Any) -> None:
    """Every value made only of JSON's types decodes to itself exactly."""
    assert same(round_trip(value), value)


@given(any_values)
def test_json_either_refuses_or_round_trips_exactly(value: Any) -> None:
    """Never a silent change: a value is refused, or it comes back the same, types included."""
    try:
        data = encode_result(value, "json", name="clean")
    except ResultError:
        return
    assert same(decode_result(data, "json"), value)


def test_pickle_results_keep_what_json_cannot() -> None:
    """Tuples, sets, non-str keys, NaN and dataclasses survive pickle."""
    value = {1: (2, {3}), "row": Row(1, ("a",)), "nan": [math.nan]}
    back: Any = round_trip(value, "pickle")
    assert back[1] == (2, {3})
    assert back["row"] == Row(1, ("a",))
    assert math.isnan(back["nan"][0])


def test_pickle_uses_a_fixed_protocol() -> None:
    """Protocol 5, whatever the interpreter's highest: older nodes must read it."""
    data = encode_result([1], "pickle", name="f")
    assert PICKLE_PROTOCOL == 5
    assert data[:2] == b"\x80\x05"


def test_what_pickle_cannot_write_is_a_result_error() -> None:
    """A lambda or a local class in the result is refused with the task's name."""

    class Local:
        pass

    for value in (lambda: 1, [Local()]):
        with pytest.raises(ResultError, match=r"^result of clean\(\) cannot be pickled: "):
            encode_result(value, "pickle", name="clean")


#: A pickle naming a class whose module no longer exists.
GONE_CLASS = pickle.dumps(Row(1, ())).replace(Row.__module__.encode(), b"x" * len(Row.__module__))


@pytest.mark.parametrize(
    ("data", "how"),
    [
        (b"{not json", "json"),
        (b"\xff\xfe", "json"),
        (b"not a pickle", "pickle"),
        (pickle.dumps([1])[:-3], "pickle"),
        (GONE_CLASS, "pickle"),
    ],
)
def test_stored_bytes_that_cannot_be_decoded_are_a_data_error(data: bytes, how: Any) -> None:
    """Corrupt or stale stored results (a class gone) are a DataError, the cause kept."""
    with pytest.raises(DataError) as caught:
        decode_result(data, how)
    assert caught.value.__cause__ is not None


def test_an_unknown_format_is_misuse() -> None:
    """result= must be json or pickle."""
    with pytest.raises(ResultError, match="not 'yaml'"):
        encode_result(1, "yaml", name="f")  # type: ignore[arg-type]
    with pytest.raises(ResultError, match="not 'yaml'"):
        decode_result(b"1", "yaml")  # type: ignore[arg-type]


def test_json_bytes_are_standard_json() -> None:
    """What is stored is plain JSON any reader can parse (no NaN extension)."""
    data = encode_result({"a": [1.5, None, "\ud800"]}, "json", name="f")
    assert json.loads(data.decode("ascii")) == {"a": [1.5, None, "\ud800"]}
