"""taskkit/cli/values.py: NAME=VALUE words read by the annotations of a function's parameters."""

from __future__ import annotations

import enum
import importlib.util
import inspect
import sys
import uuid
from collections.abc import Callable, Sequence
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, Union

import pydantic
import pytest

from taskkit.cli.values import parse_values, split_word
from taskkit.exceptions import UsageError


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


class Box(pydantic.BaseModel):
    width: int
    label: str = ""


def taking(annotation: object, *, default: object = inspect.Parameter.empty) -> Callable[..., Any]:
    """A function of one parameter ``x`` annotated ``annotation`` (an object, not a string)."""

    def fn(x):  # type: ignore[no-untyped-def]
        return x

    fn.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [inspect.Parameter("x", inspect.Parameter.KEYWORD_ONLY, default=default)]
    )
    if annotation is not inspect.Parameter.empty:
        fn.__annotations__ = {"x": annotation}
    return fn


def value_of(annotation: object, *words: str) -> object:
    args, kwargs = parse_values(taking(annotation), [f"x={word}" for word in words])
    assert args == ()
    return kwargs["x"]


GOOD: list[tuple[object, tuple[str, ...], object]] = [
    (inspect.Parameter.empty, ("plain",), "plain"),
    (str, ("a=b c",), "a=b c"),  # only the first = splits
    (str, ("",), ""),
    (Any, ("7",), "7"),
    (int, ("3",), 3),
    (int, ("-4",), -4),
    (int, ("+5",), 5),
    (float, ("0.5",), 0.5),
    (float, ("1e3",), 1000.0),
    (float, ("3",), 3.0),
    (bool, ("true",), True),
    (bool, ("TRUE",), True),
    (bool, ("yes",), True),
    (bool, ("1",), True),
    (bool, ("on",), True),
    (bool, ("false",), False),
    (bool, ("No",), False),
    (bool, ("0",), False),
    (bool, ("off",), False),
    (Path, ("data/rows.csv",), Path("data/rows.csv")),
    (Color, ("BLUE",), Color.BLUE),
    (Color, ("blue",), Color.BLUE),  # by value
    (Level, ("HIGH",), Level.HIGH),
    (Level, ("2",), Level.HIGH),
    (Literal["a", "b"], ("b",), "b"),
    (Literal[1, 2], ("2",), 2),
    (Literal[True, "auto"], ("true",), True),
    (Literal[Color.RED], ("RED",), Color.RED),
    (Optional[int], ("none",), None),  # noqa: UP045 - the typing spelling is read too
    (Optional[int], ("3",), 3),  # noqa: UP045
    (int | None, ("None",), None),
    (Union[int, str], ("x",), "x"),  # noqa: UP007
    (int | str, ("3",), 3),  # tried in the order written
    (int | float, ("1",), 1),
    (int | float, ("1.0",), 1.0),
    (list[int], ("1", "2"), [1, 2]),
    (list[int], ("5",), [5]),
    (list, ("a", "b"), ["a", "b"]),
    (tuple[str, ...], ("a", "b"), ("a", "b")),
    (set[int], ("1", "1", "2"), {1, 2}),
    (frozenset[Color], ("RED",), frozenset({Color.RED})),
    (Sequence[float], ("1", "2.5"), [1.0, 2.5]),
    (list[int] | None, ("none",), None),
    (list[int] | None, ("1", "2"), [1, 2]),
    (Box, ('{"width": 3}',), Box(width=3)),
    (Box | None, ('{"width": 3, "label": "a"}',), Box(width=3, label="a")),
    (date, ("2026-12-03",), date(2026, 12, 3)),
    (datetime, ("2026-12-03T10:00:00",), datetime(2026, 12, 3, 10)),
    (Decimal, ("1.10",), Decimal("1.10")),
    (
        uuid.UUID,
        ("12345678-1234-5678-1234-567812345678",),
        uuid.UUID(int=0x12345678123456781234567812345678),
    ),
    (Annotated[int, "units"], ("4",), 4),
]


@pytest.mark.parametrize(("annotation", "words", "expected"), GOOD)
def test_each_annotation_reads_its_words(
    annotation: object, words: tuple[str, ...], expected: object
) -> None:
    """Every supported annotation turns its words into the value, of exactly the right type."""
    found = value_of(annotation, *words)
    assert found == expected
    assert type(found) is type(expected)


BAD: list[tuple[object, str, str]] = [
    (int, "x", "an integer"),
    (int, "1.5", "an integer"),
    (int, "1_000", "an integer"),
    (int, " 3", "an integer"),
    (int, "", "an integer"),
    (int, "\u0663", "an integer"),  # an Arabic-Indic digit: int() would take it
    (float, "abc", "a number"),
    (float, "", "a number"),
    (bool, "maybe", "true or false"),
    (bool, "", "true or false"),
    (Path, "", "a path"),
    (Color, "GREEN", "one of RED, BLUE (Color)"),
    (Color, "red ", "one of RED, BLUE (Color)"),
    (Literal["a", "b"], "c", "one of a, b"),
    (Literal[1, 2], "01", "one of 1, 2"),
    (Optional[int], "x", "an integer or none"),  # noqa: UP045
    (int | float, "x", "an integer or a number"),
    (list[int], "x", "an integer"),
    (Box, "{}", "a JSON object for Box"),
    (Box, "not json", "a JSON object for Box"),
    (date, "yesterday", "ISO 8601 date"),
    (Decimal, "1,5", "a decimal number"),
    (uuid.UUID, "123", "a UUID"),
    (dict[str, int], "{}", "dict[str, int], a type taskkit call cannot read"),
    (tuple[int, str], "1", "a type taskkit call cannot read"),
    (list[int] | str, "1", "a type taskkit call cannot read"),
    (object.__new__, "1", "a type taskkit call cannot read"),
]


@pytest.mark.parametrize(("annotation", "word", "expected"), BAD)
def test_a_bad_value_is_one_line_naming_the_parameter_and_its_type(
    annotation: object, word: str, expected: str
) -> None:
    """Every value its type cannot read is a UsageError (exit 200 under taskkit call) whose one
    line names the parameter and the type expected."""
    with pytest.raises(UsageError) as info:
        value_of(annotation, word)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("parameter x")
    assert expected in message


def test_a_models_own_complaint_is_kept() -> None:
    """A pydantic model's validation error says what is wrong (the field), in the one line."""
    with pytest.raises(UsageError, match="width"):
        value_of(Box, '{"label": "a"}')
    with pytest.raises(UsageError, match="width"):
        value_of(Box | None, '{"label": "a"}')


def test_none_is_not_one_of_several_list_items() -> None:
    """``xs=none xs=1`` for ``list[int] | None`` is refused, not a list holding None."""
    with pytest.raises(UsageError, match="parameter x"):
        value_of(list[int] | None, "none", "1")


def clean(
    rows: int, threshold: float, *, mode: str = "fast", tags: list[str] | None = None
) -> None:
    """A function whose annotations are strings (this module has future annotations)."""


def test_string_annotations_are_resolved() -> None:
    """``from __future__ import annotations`` (strings) reads as the real types."""
    args, kwargs = parse_values(clean, ["rows=3", "threshold=0.5", "tags=a", "tags=b"])
    assert args == ()
    assert kwargs == {"rows": 3, "threshold": 0.5, "tags": ["a", "b"]}


def test_missing_required_parameters_are_named_with_their_types() -> None:
    """Every required parameter not given is named, with its type, in one line."""
    with pytest.raises(UsageError) as info:
        parse_values(clean, ["mode=slow"])
    message = str(info.value)
    assert "missing required parameters rows (an integer), threshold (a number)" in message
    assert "\n" not in message


def test_defaults_are_left_to_the_call() -> None:
    """A parameter not given is not passed: the function's default applies."""
    assert parse_values(clean, ["rows=1", "threshold=2"]) == ((), {"rows": 1, "threshold": 2.0})


def test_an_unknown_name_lists_the_parameters() -> None:
    """A NAME the function does not take is refused, naming those it does."""
    with pytest.raises(UsageError) as info:
        parse_values(clean, ["rows=1", "threshold=2", "treshold=3"])
    assert str(info.value) == (
        "unknown parameter treshold: the function takes rows, threshold, mode, tags"
    )


@pytest.mark.parametrize("name", ["rows", "mode"])
def test_a_name_given_twice_is_refused_unless_a_list(name: str) -> None:
    """Only a list parameter repeats: a second value is never silently the winner."""
    with pytest.raises(UsageError, match=f"parameter {name} is given 2 times"):
        parse_values(clean, ["threshold=2", f"{name}=3", f"{name}=4"])


@pytest.mark.parametrize("word", ["rows", "=3", "1x=3", "a b=3", "rows:3", "x.y=1"])
def test_a_word_that_is_not_name_equals_value_is_refused(word: str) -> None:
    """A word without ``=`` or whose NAME is no Python name is refused, quoting the word."""
    with pytest.raises(UsageError, match="expected NAME=VALUE") as info:
        parse_values(clean, [word])
    assert repr(word) in str(info.value)


def test_a_dash_in_a_name_is_an_underscore() -> None:
    """``max-rows=3`` gives ``max_rows``, as command lines spell names."""
    assert split_word("max-rows=3") == ("max_rows", "3")

    def f(max_rows: int) -> None: ...

    assert parse_values(f, ["max-rows=3"]) == ((), {"max_rows": 3})


def test_positional_only_parameters_are_passed_by_position() -> None:
    """A positional-only parameter given by NAME is passed by position, defaults filling the
    positions before it."""

    def f(a: int = 7, b: int = 8, /, c: int = 9) -> None: ...

    assert parse_values(f, ["b=2", "c=3"]) == ((7, 2), {"c": 3})


def test_star_args_take_repeated_values_and_move_the_rest_to_positions() -> None:
    """``*rest`` takes one value per word; the parameters before it then go by position."""

    def f(a: int, b: str = "b", *rest: float, **extra: int) -> None: ...

    assert parse_values(f, ["a=1", "rest=2", "rest=3.5"]) == ((1, "b", 2.0, 3.5), {})
    assert parse_values(f, ["a=1", "z=4"]) == ((), {"a": 1, "z": 4})
    with pytest.raises(UsageError, match="unknown parameter extra"):
        parse_values(f, ["a=1", "extra=4"])
    with pytest.raises(UsageError, match="parameter z: 'x' is not an integer"):
        parse_values(f, ["a=1", "z=x"])


def test_supplied_parameters_are_not_asked_for_nor_taken() -> None:
    """A parameter the task fills itself (a staged input) is not missing, and may not be
    given."""

    def f(n: int, reference: Path) -> None: ...

    assert parse_values(f, ["n=1"], supplied={"reference"}) == ((), {"n": 1})

    def g(a: int, reference: Path = Path("x"), *rest: int) -> None: ...

    # Positions are those of the signature without the input: no default lands on it.
    assert parse_values(g, ["a=1", "rest=2"], supplied={"reference"}) == ((1, 2), {})
    with pytest.raises(UsageError, match="parameter reference is an input"):
        parse_values(f, ["n=1", "reference=x"], supplied={"reference"})


def test_the_given_signature_wins_over_the_functions() -> None:
    """A wrapper's signature (the task's) decides the parameters, the wrapped function's
    annotations their types."""

    def f(*args: object, **kwargs: object) -> None: ...

    def real(n: int) -> None: ...

    f.__annotations__ = {"n": "int"}
    assert parse_values(f, ["n=2"], signature=inspect.signature(real)) == ((), {"n": 2})


def test_an_annotation_that_cannot_be_resolved_blames_only_its_parameter(tmp_path: Path) -> None:
    """A name imported only for type checkers breaks get_type_hints; the other parameters still
    read, and that one fails only when given, naming its annotation."""
    source = (
        "from __future__ import annotations\n"
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    from somewhere import Frame\n"
        "def f(n: int, frame: Frame | None = None) -> None: ...\n"
    )
    (tmp_path / "hinted_mod.py").write_text(source)
    spec = importlib.util.spec_from_file_location("hinted_mod", tmp_path / "hinted_mod.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["hinted_mod"] = module
    try:
        spec.loader.exec_module(module)
        assert parse_values(module.f, ["n=3"]) == ((), {"n": 3})
        with pytest.raises(UsageError) as info:
            parse_values(module.f, ["n=3", "frame=x"])
    finally:
        del sys.modules["hinted_mod"]
    assert "parameter frame" in str(info.value)
    assert "Frame | None" in str(info.value)
