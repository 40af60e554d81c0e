"""taskkit.runner.codes: sets of exit codes as users write them and as Batch wants them."""

from __future__ import annotations

import pytest

from taskkit.exceptions import ConfigError, MisuseError
from taskkit.runner.codes import CodeSet


@pytest.mark.parametrize(
    ("given", "codes"),
    [
        ("2,5-9", {2, 5, 6, 7, 8, 9}),
        (" 1 , 3-4 ", {1, 3, 4}),
        ("5 - 6", {5, 6}),
        ("", set()),
        ("  ", set()),
        ("0-255", set(range(256))),
        (7, {7}),
        ([1, 3, 2], {1, 2, 3}),
        ((), set()),
    ],
)
def test_codeset_parses_the_written_forms(given: str | int | list[int], codes: set[int]) -> None:
    """Text with ranges and spaces, a single int and a list of ints all parse."""
    assert set(CodeSet.parse(given)) == codes


def test_codeset_parse_returns_a_codeset_unchanged() -> None:
    """A CodeSet given to parse is returned as is."""
    codes = CodeSet.parse("1-3")
    assert CodeSet.parse(codes) is codes


@pytest.mark.parametrize(
    ("given", "bad"),
    [
        ("9-5", "9-5"),
        ("256", "256"),
        ("250-300", "250-300"),
        ("-1", "-1"),
        ("a", "'a'"),
        ("1,,2", "1,,2"),
        ("1-", "1-"),
        ("1-2-3", "1-2-3"),
        ("1.5", "1.5"),
        (True, "True"),
        (False, "False"),
        (1.5, "1.5"),
        (256, "256"),
        (-1, "-1"),
        ([1, True], "True"),
        ([1, 2.0], "2.0"),
        (["3"], "'3'"),
        ([300], "300"),
    ],
)
def test_codeset_rejects_bad_input_in_one_line(given: object, bad: str) -> None:
    """Each bad form raises ConfigError naming what was parsed and the bad part, on one line."""
    with pytest.raises(ConfigError) as caught:
        CodeSet.parse(given, what="permanent exit codes")  # type: ignore[arg-type]
    message = str(caught.value)
    assert message.startswith("permanent exit codes: ")
    assert bad in message
    assert "\n" not in message


def test_codeset_constructor_rejects_codes_out_of_range() -> None:
    """The constructor is for code: a bad value there is misuse, not configuration."""
    with pytest.raises(MisuseError, match="256"):
        CodeSet(frozenset([256]))


@pytest.mark.parametrize(
    ("given", "text", "ranges"),
    [
        ("5-9,2,3", "2-3,5-9", ((2, 3), (5, 9))),
        ("1-5,3-8,10", "1-8,10", ((1, 8), (10, 10))),
        ("7", "7", ((7, 7),)),
        ("3,2,1,5", "1-3,5", ((1, 3), (5, 5))),
        ("", "", ()),
    ],
)
def test_codeset_str_and_ranges_are_merged_and_sorted(
    given: str, text: str, ranges: tuple[tuple[int, int], ...]
) -> None:
    """str() is the canonical text and ranges() the merged inclusive spans, both sorted."""
    codes = CodeSet.parse(given)
    assert str(codes) == text
    assert codes.ranges() == ranges
    assert repr(codes) == f"CodeSet({text!r})"
    assert CodeSet.parse(str(codes)) == codes


def test_codeset_membership_size_and_order() -> None:
    """Membership holds for ints only (not bools or text); iteration is sorted."""
    codes = CodeSet.parse("9,2-3")
    assert 2 in codes
    assert 9 in codes
    assert 4 not in codes
    assert "2" not in codes
    assert True not in CodeSet.parse("1")
    assert list(codes) == [2, 3, 9]
    assert len(codes) == 3
    assert codes
    assert not CodeSet.parse("")


def test_codeset_equality_and_hash_ignore_how_it_was_written() -> None:
    """Sets with the same codes are equal and hash alike, however they were written."""
    assert CodeSet.parse("1,2") == CodeSet.parse([2, 1]) == CodeSet(frozenset({1, 2}))
    assert hash(CodeSet.parse("1-2")) == hash(CodeSet.parse("2,1"))
    assert CodeSet.parse("1") != CodeSet.parse("1-2")
    assert CodeSet.parse("1") != frozenset({1})  # type: ignore[comparison-overlap]
    assert {CodeSet.parse("1-2"): "x"}[CodeSet.parse([1, 2])] == "x"


def test_codeset_union_and_intersection() -> None:
    """| and & combine two sets."""
    assert CodeSet.parse("1-3") | CodeSet.parse("5") == CodeSet.parse("1-3,5")
    assert CodeSet.parse("1-3") & CodeSet.parse("2-5") == CodeSet.parse("2-3")


def test_codeset_is_frozen() -> None:
    """A CodeSet cannot be changed after it is made."""
    codes = CodeSet.parse("1")
    with pytest.raises(AttributeError):
        codes.codes = frozenset({2})  # type: ignore[misc]
