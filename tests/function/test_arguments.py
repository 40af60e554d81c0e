"""taskkit.function.arguments: one binding per call however it is written, arguments keyed with
a way out when they cannot be, shown briefly without credentials, changes told line by line."""

from __future__ import annotations

import inspect
import os
import re
import socket
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from taskkit.exceptions import InputNotFound, LocalPermissionDenied, MisuseError
from taskkit.function.arguments import (
    SHOWN_LIMIT,
    Hashed,
    UnhashableArgument,
    argument_changes,
    bind,
    check_names,
    hash_argument,
    show,
)


def clean(rows: list[int], threshold: float = 0.3, *, mode: str = "fast") -> None:
    """A task's signature: positional-or-keyword with a default, keyword-only."""


def gather(first: int, /, *rest: int, scale: int = 1, **options: str) -> None:
    """Positional-only, *args, keyword-only and **kwargs."""


CLEAN = inspect.signature(clean)
GATHER = inspect.signature(gather)


# -- binding ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [
        (([1],), {}),
        ((), {"rows": [1]}),
        (([1], 0.3), {}),
        (([1],), {"threshold": 0.3}),
        ((), {"threshold": 0.3, "rows": [1]}),
        (([1],), {"mode": "fast"}),
        (([1], 0.3), {"mode": "fast"}),
    ],
)
def test_every_way_of_passing_the_same_values_binds_alike(
    args: tuple[object, ...], kwargs: dict[str, object]
) -> None:
    """Positional or keyword, defaults given or left out: one mapping, in signature order."""
    bound = bind(CLEAN, args, kwargs)
    assert bound == {"rows": [1], "threshold": 0.3, "mode": "fast"}
    assert list(bound) == ["rows", "threshold", "mode"]


def test_a_value_other_than_the_default_binds_differently() -> None:
    """Defaults are applied, not assumed: another value is another mapping."""
    assert bind(CLEAN, ([1], 0.5), {}) != bind(CLEAN, ([1],), {})


def test_star_args_and_star_kwargs_are_kept_under_their_names() -> None:
    """*rest is a tuple and **options a dict under their own names, empty when not given."""
    assert bind(GATHER, (1, 2, 3), {"x": "y"}) == {
        "first": 1,
        "rest": (2, 3),
        "scale": 1,
        "options": {"x": "y"},
    }
    assert bind(GATHER, (1,), {}) == {"first": 1, "rest": (), "scale": 1, "options": {}}


def test_ignored_names_are_left_out() -> None:
    """Names in ignore= are dropped, whether passed or defaulted."""
    assert bind(CLEAN, ([1],), {"mode": "slow"}, ignore=["mode", "threshold"]) == {"rows": [1]}


@pytest.mark.parametrize(
    ("signature", "args", "kwargs"),
    [
        (CLEAN, (), {}),
        (CLEAN, ([1], 0.3, "fast"), {}),
        (CLEAN, ([1],), {"nope": 1}),
        (CLEAN, ([1],), {"rows": [2]}),
        (GATHER, (), {"first": 1}),
    ],
)
def test_arguments_that_do_not_fit_raise_the_type_error_of_binding(
    signature: inspect.Signature, args: tuple[object, ...], kwargs: dict[str, object]
) -> None:
    """A call that does not fit is a TypeError with Python's own message, as the call raises."""
    with pytest.raises(TypeError) as caught:
        bind(signature, args, kwargs)
    with pytest.raises(TypeError) as expected:
        signature.bind(*args, **kwargs)
    assert str(caught.value) == str(expected.value)
    assert not isinstance(caught.value, MisuseError)


def test_an_option_naming_no_parameter_is_refused() -> None:
    """ignore= (or another option) naming something that is not a parameter is misuse, named."""
    check_names(CLEAN, ["rows", "mode"])
    with pytest.raises(MisuseError, match=r"ignore=\['conn', 'rows'\]: 'conn' is not a param"):
        check_names(CLEAN, ["rows", "conn"])
    with pytest.raises(MisuseError, match=r"^key=\['x'\]: 'x' is not a parameter.*first, rest"):
        check_names(GATHER, ["x"], option="key")


# -- keying one argument -----------------------------------------------------------------------


def test_a_keyed_argument_has_a_digest_a_shown_form_and_no_paths() -> None:
    """The digest is written as taskkit digests are; a plain value names no path."""
    hashed = hash_argument("threshold", 0.3)
    assert isinstance(hashed, Hashed)
    assert re.fullmatch(r"xxh3-128:[0-9a-f]{32}", hashed.digest)
    assert hashed.shown == "0.3"
    assert hashed.paths == ()
    assert hash_argument("other_name", 0.3).digest == hashed.digest  # the value, not the name


def test_one_int_float_and_bool_are_three_keys() -> None:
    """1, 1.0 and True key differently."""
    assert len({hash_argument("x", v).digest for v in (1, 1.0, True)}) == 3


def test_an_unkeyable_argument_says_the_way_out() -> None:
    """The brief's message, word for word: the argument, its type, ignore= and key=."""
    with socket.socket() as conn, pytest.raises(UnhashableArgument) as caught:
        hash_argument("conn", conn)
    assert str(caught.value) == (
        "argument 'conn': cannot key a value of type socket.socket; leave it out of the key "
        "with ignore=['conn'] or give key={'conn': ...} a function that returns a value "
        "taskkit can key"
    )
    assert isinstance(caught.value, MisuseError)


def test_an_unkeyable_part_deep_inside_is_located() -> None:
    """A value nested in containers is refused with where it is, and cycles clearly."""
    with pytest.raises(UnhashableArgument, match=r"type object \(at rows\[2\]\['x'\]\);"):
        hash_argument("rows", [1, 2, {"x": object()}])
    loop: list[object] = []
    loop.append(loop)
    with pytest.raises(UnhashableArgument, match=r"^argument 'loop': cannot key a list that co"):
        hash_argument("loop", loop)


def test_the_key_function_is_applied_first() -> None:
    """key= turns an unkeyable value into one taskkit can key; its result is what is keyed."""

    class Connection:
        def __init__(self, url: str) -> None:
            self.url = url

    def by_url(conn: Any) -> object:
        return conn.url

    a = hash_argument("conn", Connection("db://one"), keyer=by_url)
    b = hash_argument("conn", Connection("db://one"), keyer=by_url)
    c = hash_argument("conn", Connection("db://two"), keyer=by_url)
    assert a.digest == b.digest != c.digest
    assert a.digest == hash_argument("conn", "db://one").digest
    assert a.shown == "'db://one'"


def test_a_path_argument_is_keyed_by_content_and_names_its_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Path's key follows its content, it is shown with its file count, and its absolute
    name is reported."""
    ref = tmp_path / "ref"
    ref.mkdir()
    for name in ("a", "b", "c"):
        (ref / name).write_text(name)
    monkeypatch.chdir(tmp_path)
    hashed = hash_argument("data", Path("ref"))
    assert hashed.shown == "<Path ref, 3 files>"
    assert hashed.paths == (os.path.join(os.path.realpath(tmp_path), "ref"),)
    (ref / "c").rename(ref / "d")
    renamed = hash_argument("data", Path("ref"))
    assert renamed.digest != hashed.digest
    assert renamed.shown == hashed.shown
    assert argument_changes(
        {"data": (hashed.digest, hashed.shown)}, {"data": (renamed.digest, renamed.shown)}
    ) == ["argument data: content changed (<Path ref, 3 files>)"]


def test_paths_in_a_container_are_all_reported(tmp_path: Path) -> None:
    """Every Path inside a list is an input, once each."""
    (tmp_path / "a").write_text("1")
    (tmp_path / "b").write_text("22")
    real = os.path.realpath(tmp_path)
    hashed = hash_argument("files", [tmp_path / "a", tmp_path / "b", tmp_path / "a"])
    assert hashed.paths == (os.path.join(real, "a"), os.path.join(real, "b"))


def test_a_missing_path_is_input_not_found_naming_the_argument(tmp_path: Path) -> None:
    """A Path that names nothing: InputNotFound with the argument's name and the path."""
    with pytest.raises(InputNotFound, match=r"^argument 'data': .*gone\.csv does not exist$"):
        hash_argument("data", tmp_path / "gone.csv")


def test_an_unreadable_path_keeps_its_kind_and_names_the_argument(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Other path failures keep their class (permission stays permission) with the name."""
    secret = tmp_path / "secret"
    secret.write_text("x")
    real_stat = os.stat

    def refuse(path: Any, *args: Any, **kwargs: Any) -> os.stat_result:
        if os.fspath(path) == str(secret):
            raise PermissionError(13, "Permission denied", str(secret))
        return real_stat(path, *args, **kwargs)

    monkeypatch.setattr(os, "stat", refuse)
    with pytest.raises(LocalPermissionDenied, match=r"^argument 'data': .*permission denied"):
        hash_argument("data", secret)


def test_a_large_bytes_argument_is_keyed_without_a_copy() -> None:
    """100 MB of bytes: keyed with well under 1 MiB of extra memory, shown by size only."""
    data = b"\x01" * 100_000_000
    tracemalloc.start()
    try:
        hashed = hash_argument("blob", data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1024 * 1024
    assert hashed.shown == "<bytes, 95.4 MiB>"


# -- showing ---------------------------------------------------------------------------------

ACCOUNT_KEY = "Zm9v" * 21 + "YQ=="  # 86 characters of base64 and '==': an account key
CONNECTION = (
    "DefaultEndpointsProtocol=https;AccountName=acct;"
    f"AccountKey={ACCOUNT_KEY};EndpointSuffix=core.windows.net"
)


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (0.3, "0.3"),
        ("abc", "'abc'"),
        (None, "None"),
        (True, "True"),
        (2**200, "<int, 201 bits>"),
        (b"abc", "<bytes, 3 B>"),
        (bytearray(2048), "<bytearray, 2.0 KiB>"),
        ([1, 2, (3,)], "[1, 2, (3,)]"),
        ({"a": 1, "b": [2]}, "{'a': 1, 'b': [2]}"),
        ({"b", "a", "c"}, "{'a', 'b', 'c'}"),
        (frozenset(), "frozenset()"),
        (list(range(100)), "[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, …"),
        ("x" * 100, "'" + "x" * 58 + "…"),
        ("y" * 5000, "<str, 5000 characters>"),
    ],
)
def test_values_are_shown_briefly(value: object, shown: str) -> None:
    """Scalars as Python writes them, bytes by size, containers cut at the limit, sets sorted."""
    assert hash_argument("x", value).shown == shown


def test_credentials_are_never_shown() -> None:
    """A connection string, a SAS URL or a bare account key inside any argument is hidden, even
    where the text is cut: redaction comes before the cut."""
    sas = "https://acct.blob.core.windows.net/c/b?sv=2024&sig=SECRETSIGNATURE"
    for value in (
        CONNECTION,
        sas,
        ACCOUNT_KEY,
        [CONNECTION],
        {"url": sas},
        ["pad", ACCOUNT_KEY],
        ("x " * 10 + ACCOUNT_KEY,),  # cut at the limit inside the key
    ):
        shown = hash_argument("x", value).shown
        assert ACCOUNT_KEY[:20] not in shown, shown
        assert "SECRETSIGNATURE" not in shown
        assert len(shown) <= SHOWN_LIMIT


@given(st.recursive(st.none() | st.integers() | st.floats() | st.text() | st.binary(), st.lists))
def test_shown_is_never_longer_than_the_limit(value: Any) -> None:
    """Whatever the value, what is shown fits the limit."""
    assert len(show(value)) <= SHOWN_LIMIT


# -- changes ---------------------------------------------------------------------------------


def test_changes_are_told_one_line_per_argument() -> None:
    """Changed values, changed content under the same shown form, added and removed
    arguments; an unchanged argument says nothing."""
    old = {
        "threshold": ("xxh3-128:" + "1" * 32, "0.3"),
        "data": ("xxh3-128:" + "2" * 32, "<Path data/ref, 3 files>"),
        "same": ("xxh3-128:" + "3" * 32, "'a'"),
        "y": ("xxh3-128:" + "4" * 32, "1"),
    }
    new = {
        "threshold": ("xxh3-128:" + "5" * 32, "0.5"),
        "data": ("xxh3-128:" + "6" * 32, "<Path data/ref, 3 files>"),
        "same": ("xxh3-128:" + "3" * 32, "'a'"),
        "x": ("xxh3-128:" + "7" * 32, "2"),
    }
    assert argument_changes(old, new) == [
        "argument threshold: 0.3 -> 0.5",
        "argument data: content changed (<Path data/ref, 3 files>)",
        "argument x added",
        "argument y removed",
    ]
    assert argument_changes(new, new) == []


def test_changes_between_two_real_calls() -> None:
    """Keyed for real: a changed threshold is told with its old and new values."""

    def keyed(threshold: float) -> dict[str, tuple[str, str]]:
        hashed = hash_argument("threshold", threshold)
        return {"threshold": (hashed.digest, hashed.shown)}

    assert argument_changes(keyed(0.3), keyed(0.5)) == ["argument threshold: 0.3 -> 0.5"]
    assert argument_changes(keyed(0.3), keyed(0.3)) == []


def test_deep_nesting_is_keyed_and_shown_or_refused_never_a_crash() -> None:
    """At every depth around the recursion limit, keying (showing included) either succeeds
    with a bounded shown form or refuses clearly: never a RecursionError."""
    import sys

    outcomes = set()
    value: list[object] = []
    made = 0
    for depth in range(100, sys.getrecursionlimit() + 50, 37):
        while made < depth:
            value = [value]
            made += 1
        try:
            hashed = hash_argument("x", value)
        except UnhashableArgument:
            outcomes.add("refused")
        else:
            outcomes.add("keyed")
            assert len(hashed.shown) <= SHOWN_LIMIT
    assert outcomes == {"keyed", "refused"}


def test_a_path_given_as_dot_is_named_by_its_absolute_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Path('.') and Path('sub/..') name the directory itself, without a trailing '.'."""
    (tmp_path / "sub").mkdir()
    (tmp_path / "f").write_text("x")
    monkeypatch.chdir(tmp_path)
    real = os.path.realpath(tmp_path)
    assert hash_argument("d", Path(".")).paths == (real,)
    assert hash_argument("d", Path("sub/..")).paths == (real,)
    assert hash_argument("d", Path(".")).digest == hash_argument("d", Path("sub/..")).digest
