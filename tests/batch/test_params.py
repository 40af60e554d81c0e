"""taskkit.batch.params: the rows of a fan-out's CSV or JSON-lines parameter file, read as
written, and one error naming the line for a malformed one."""

from __future__ import annotations

from pathlib import Path

import pytest

from taskkit.batch.params import MAX_VALUE, read_params
from taskkit.exceptions import DataError, InputNotFound, UsageError


def write(tmp_path: Path, name: str, data: str | bytes) -> str:
    path = tmp_path / name
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return str(path)


def rows(path: str) -> list[tuple[int, tuple[str, ...]]]:
    return list(read_params(path).rows())


def test_csv_values_keep_commas_quotes_newlines_and_spaces(tmp_path: Path) -> None:
    """RFC 4180 quoting is undone and nothing else: values keep their spaces and newlines,
    and a row's line is where it starts."""
    path = write(
        tmp_path,
        "p.csv",
        'name,text\r\na,"x, y"\r\nb,"say ""hi"""\r\nc,"two\nlines"\r\nd,  padded  \r\n',
    )
    params = read_params(path)
    assert (params.kind, params.columns, params.count) == ("csv", ("name", "text"), 4)
    assert rows(path) == [
        (2, ("a", "x, y")),
        (3, ("b", 'say "hi"')),
        (4, ("c", "two\nlines")),
        (6, ("d", "  padded  ")),
    ]


def test_a_byte_order_mark_is_dropped_and_blank_lines_skipped(tmp_path: Path) -> None:
    """An editor's BOM does not become part of the first column's name; blank lines are no
    rows."""
    path = write(tmp_path, "p.csv", b"\xef\xbb\xbfsample\n\ns1\n\ns2\n")
    assert read_params(path).columns == ("sample",)
    assert rows(path) == [(3, ("s1",)), (5, ("s2",))]


def test_non_ascii_values_pass_unchanged(tmp_path: Path) -> None:
    """UTF-8 values come back as the same text."""
    path = write(tmp_path, "p.csv", "k\nhéllo 日本語 🎉\n")
    assert rows(path) == [(2, ("héllo 日本語 🎉",))]


@pytest.mark.parametrize(
    ("data", "words"),
    [
        ("", "empty"),
        ("a,b\n", "no rows"),
        ("a,b\n1,2\n3\n", "line 3: 1 values, but the header names 2"),
        ("a,b\n1,2,3\n", "line 2: 3 values"),
        ("a,a\n1,2\n", "names column 'a' twice"),
        ("a,,c\n1,2,3\n", "column 2 of the header has no name"),
        ('a\n"x"y\n', "line 2: not CSV"),
        ("a\nx\0y\n", "line 2"),
        (b"a\n\xff\xfe\n", "line 2 is not UTF-8"),
        ('a\n"' + "x" * (MAX_VALUE + 10) + '"\n', "field larger"),
        ('a\n"never closed\n1\n', "not CSV"),
    ],
)
def test_a_malformed_csv_is_one_data_error_naming_the_line(
    tmp_path: Path, data: str | bytes, words: str
) -> None:
    """Empty, header only, ragged rows, header faults, bad quoting, NUL, bad UTF-8, a value
    past the field limit, an unclosed quote: a DataError saying where."""
    path = write(tmp_path, "p.csv", data)
    with pytest.raises(DataError) as info:
        read_params(path)
    assert words in str(info.value)
    assert str(info.value).startswith(path)


def test_jsonl_numbers_keep_their_text_and_booleans_are_words(tmp_path: Path) -> None:
    """1e3 stays 1e3, 0.10 stays 0.10, big integers keep every digit; true/false are words;
    the first line's key order is the column order, later lines may order keys otherwise."""
    path = write(
        tmp_path,
        "p.jsonl",
        '{"n": 1e3, "x": 0.10, "big": 123456789012345678901234567890, "ok": true, "s": "a b"}\n'
        "\n"
        '{"s": "\\u00e9\\n", "ok": false, "big": -0, "x": 2, "n": 3}\n',
    )
    params = read_params(path)
    assert (params.kind, params.columns) == ("jsonl", ("n", "x", "big", "ok", "s"))
    assert rows(path) == [
        (1, ("1e3", "0.10", "123456789012345678901234567890", "true", "a b")),
        (3, ("3", "2", "-0", "false", "é\n")),
    ]


@pytest.mark.parametrize(
    ("data", "words"),
    [
        ("", "empty"),
        ('{"a": 1}\n{"a": null}\n', "line 2: 'a' is null"),
        ('{"a": [1]}\n', "line 1: 'a' is an array"),
        ('{"a": {"b": 1}}\n', "line 1: 'a' is an object"),
        ('{"a": 1}\n{"b": 1}\n', "line 2: key no 'a'"),
        ('{"a": 1}\n{"a": 1, "b": 2}\n', "line 2: key 'b', which the first line has not"),
        ('{"a": 1, "a": 2}\n', "line 1: the key 'a' is given twice"),
        ("[1, 2]\n", "line 1: a JSON object is needed"),
        ('{"a": NaN}\n', "line 1: NaN"),
        ('{"a": 1}\n{"a": \n', "line 2: not JSON"),
        ("{}\n", "empty object"),
        ('{"a": "x\\u0000y"}\n', "NUL"),
    ],
)
def test_a_malformed_jsonl_file_is_one_data_error_naming_the_line(
    tmp_path: Path, data: str, words: str
) -> None:
    """null, arrays, objects, missing or extra keys, repeated keys, non-objects, NaN, broken
    JSON, NUL: a DataError saying where."""
    path = write(tmp_path, "p.jsonl", data)
    with pytest.raises(DataError) as info:
        read_params(path)
    assert words in str(info.value)


def test_the_suffix_tells_the_format(tmp_path: Path) -> None:
    """.ndjson is JSON lines; a suffix that tells nothing is a usage error, before reading."""
    assert read_params(write(tmp_path, "p.ndjson", '{"a": 1}\n')).kind == "jsonl"
    with pytest.raises(UsageError, match=r"\.csv or \.jsonl"):
        read_params(str(tmp_path / "missing.txt"))


def test_a_missing_file_or_a_directory_is_input_not_found(tmp_path: Path) -> None:
    """No file there (or a folder): InputNotFound naming it."""
    with pytest.raises(InputNotFound, match="no parameter file"):
        read_params(str(tmp_path / "nothing.csv"))
    (tmp_path / "dir.csv").mkdir()
    with pytest.raises(InputNotFound, match="is a directory"):
        read_params(str(tmp_path / "dir.csv"))


def test_a_file_that_changes_between_the_reads_is_refused(tmp_path: Path) -> None:
    """Rows added after the counting read are not handed out silently."""
    path = write(tmp_path, "p.csv", "a\n1\n2\n")
    params = read_params(path)
    Path(path).write_text("a\n1\n2\n3\n")
    with pytest.raises(DataError, match="changed while it was read"):
        list(params.rows())
