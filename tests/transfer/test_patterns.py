"""taskkit.transfer.patterns: GLOB=DEST parsed at the edge, patterns expanded inside the working
directory
only, names relative to the pattern's fixed leading directory."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from taskkit.content.walk import Failed, Skipped
from taskkit.exceptions import (
    InputNotFound,
    PermissionDenied,
    UsageError,
)
from taskkit.transfer.patterns import Match, Output, expand, parse_output

LEADS_OUT = "a link that leads out of the working directory"


def make(root: Path, files: dict[str, bytes]) -> None:
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)


def found(workdir: Path, pattern: str) -> list[Match | Skipped | Failed]:
    return list(expand(workdir, parse_output(f"{pattern}=memory://d/")))


def names(workdir: Path, pattern: str) -> list[str]:
    """The blob names ``pattern`` gives, in the order expand yields them."""
    return [m.name for m in found(workdir, pattern) if isinstance(m, Match)]


# -- parse_output -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "pattern", "dest"),
    [
        ("year=2024/*.csv=az://c/y=1/", "year=2024/*.csv", "az://c/y=1/"),
        ("out/**=az://results/run-42", "out/**", "az://results/run-42/"),
        ("model.bin=abfs://models/v3/", "model.bin", "abfs://models/v3/"),
        ("a=b/*.txt=file:///tmp/x=y", "a=b/*.txt", "file:///tmp/x=y/"),
        ("*.txt=results", "*.txt", "results/"),
        ("year=2024/*.csv=/tmp/dest", "year=2024/*.csv", "/tmp/dest/"),
        ("out/=memory://d/", "out/**", "memory://d/"),
        ("out/sub/=memory://d", "out/sub/**", "memory://d/"),
        ("./out//a/./*.txt=memory://d/", "out/a/*.txt", "memory://d/"),
        (".=memory://d/", "**", "memory://d/"),
        ("./=memory://d/", "**", "memory://d/"),
    ],
)
def test_parse_output_splits_before_the_url_else_at_the_last_equals(
    text: str, pattern: str, dest: str
) -> None:
    """Split before DEST's scheme:// (so '=' may be on both sides), else at the last '='; DEST
    ends in '/'; GLOB/ means dir/**; '.' and empty segments are dropped."""
    assert parse_output(text) == Output(pattern, dest)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("out/*.txt", "no destination"),
        ("=az://c/x/", "names no files"),
        ("=results", "names no files"),
        ("out/*=", "names no destination"),
        ("out/*==", "names no destination"),
        ("/etc/*=az://c/x/", "relative to the working directory"),
        ("../x=az://c/x/", "must not leave"),
        ("a/../../b=az://c/x/", "must not leave"),
        ("out/..=az://c/x/", "must not leave"),
        ("out/*=az://c/*/", "without wildcards"),
        ("out/*=az://c/x?/", "without wildcards"),
        ("out/*=/tmp/[ab]/", "without wildcards"),
        ("out/\0=az://c/x/", "NUL"),
        ("out/*=az://c/x\0/", "NUL"),
    ],
    ids=repr,
)
def test_bad_outputs_are_usage_errors(text: str, message: str) -> None:
    """No '=', an empty GLOB or DEST, an absolute GLOB, '..' in GLOB, a wildcard in DEST or a
    NUL: UsageError (64) naming the output."""
    with pytest.raises(UsageError, match=message) as info:
        parse_output(text)
    assert info.value.exit_code == 64
    assert repr(text) in str(info.value)


def test_a_reversed_range_in_glob_is_a_usage_error(workdir: Path) -> None:
    """'[z-a]' cannot match anything: the command line is refused (64), not crashed on."""
    with pytest.raises(UsageError):
        found(workdir, "[z-a].txt")


@pytest.mark.parametrize(
    ("pattern", "base", "rest"),
    [
        ("*.txt", "", ("*.txt",)),
        ("m.bin", "", ("m.bin",)),
        ("**", "", ("**",)),
        ("out/**", "out", ("**",)),
        ("out/m.bin", "out", ("m.bin",)),
        ("out/a/*.txt", "out/a", ("*.txt",)),
        ("a/b/c", "a/b", ("c",)),
        ("**/*.csv", "", ("**", "*.csv")),
        ("a/**/b/*.txt", "a", ("**", "b", "*.txt")),
        ("a/b?/c/d", "a", ("b?", "c", "d")),
        ("a/[xy]/z", "a", ("[xy]", "z")),
        ("[ab]/x", "", ("[ab]", "x")),
        ("year=2024/month=*/part-?.csv", "year=2024", ("month=*", "part-?.csv")),
    ],
)
def test_base_is_the_fixed_leading_directory_and_rest_the_segments_below(
    pattern: str, base: str, rest: tuple[str, ...]
) -> None:
    """base: the directories before the first wildcard (never the last segment); rest: the
    pattern below it."""
    output = Output(pattern, "memory://d/")
    assert (output.base, output.rest) == (base, rest)


# -- expand: names ------------------------------------------------------------------------------


def test_names_are_relative_to_the_fixed_leading_directory(workdir: Path) -> None:
    """out/** sends out/a/b.txt as a/b.txt; out/a/*.txt names x.txt; a literal file out/m.bin
    is m.bin; a literal directory (with or without '/') means every file below it."""
    make(workdir, {"out/a/b.txt": b"b", "out/a/x.txt": b"x", "out/m.bin": b"m", "top": b"t"})
    assert sorted(names(workdir, "out/**")) == ["a/b.txt", "a/x.txt", "m.bin"]
    assert names(workdir, "out/a/*.txt") == ["b.txt", "x.txt"]
    assert names(workdir, "out/m.bin") == ["m.bin"]
    assert sorted(names(workdir, "out")) == ["a/b.txt", "a/x.txt", "m.bin"]
    assert sorted(names(workdir, "out/a")) == ["b.txt", "x.txt"]
    assert sorted(names(workdir, "out/a/")) == ["b.txt", "x.txt"]
    assert sorted(names(workdir, ".")) == ["out/a/b.txt", "out/a/x.txt", "out/m.bin", "top"]


def test_a_match_carries_its_path_and_stat(workdir: Path) -> None:
    """Each Match has the absolute path below the workdir and the file's stat."""
    make(workdir, {"out/a.txt": b"12345"})
    (match,) = found(workdir, "out/*")
    assert isinstance(match, Match)
    assert match.path == workdir / "out" / "a.txt"
    assert match.stat.st_size == 5


TOP = [".hidden.txt", "]", "a.txt", "ab.txt", "abc.txt", "ac.txt", "b.csv", "x[y"]


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("*", TOP),
        ("*.txt", [".hidden.txt", "a.txt", "ab.txt", "abc.txt", "ac.txt"]),
        ("a?.txt", ["ab.txt", "ac.txt"]),
        ("a??.txt", ["abc.txt"]),
        ("a[bc].txt", ["ab.txt", "ac.txt"]),
        ("a[!b].txt", ["ac.txt"]),
        ("a[b-c]*", ["ab.txt", "abc.txt", "ac.txt"]),
        ("[]]", ["]"]),
        ("x[y", ["x[y"]),
        ("*/*.txt", ["d/e.txt"]),
        ("nothing*", []),
    ],
)
def test_single_segment_wildcards(workdir: Path, pattern: str, expected: list[str]) -> None:
    """'*' and '?' stay within one segment and match dotfiles; [abc], [!abc] and ranges are
    one character; an unclosed '[' is itself; ']' first in a set is a member."""
    make(workdir, dict.fromkeys([*TOP, "d/e.txt", "d/f/g.txt"], b"x"))
    assert sorted(names(workdir, pattern)) == expected


def test_a_bracket_inside_a_set_is_a_plain_character(workdir: Path) -> None:
    """'[[]x' matches a file named '[x' like any glob, without a warning."""
    make(workdir, {"[x": b"x"})
    assert names(workdir, "[[]x") == ["[x"]


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        (
            "**/*.csv",
            ["data/part-0.csv", "data/y=1/m=2/part-2.csv", "data/y=1/part-1.csv", "t.csv"],
        ),
        ("data/**/part-*.csv", ["part-0.csv", "y=1/m=2/part-2.csv", "y=1/part-1.csv"]),
        ("data/**/m=2/*.csv", ["y=1/m=2/part-2.csv"]),
        ("data/**", ["notes.txt", "part-0.csv", "y=1/m=2/part-2.csv", "y=1/part-1.csv"]),
        ("data/y=1/**/*", ["m=2/part-2.csv", "part-1.csv"]),
        ("**/notes.txt", ["data/notes.txt"]),
    ],
)
def test_double_star_matches_any_number_of_directories(
    workdir: Path, pattern: str, expected: list[str]
) -> None:
    """'**' at the start, in the middle or at the end spans zero or more directories."""
    make(
        workdir,
        {
            "t.csv": b"t",
            "data/part-0.csv": b"0",
            "data/notes.txt": b"n",
            "data/y=1/part-1.csv": b"1",
            "data/y=1/m=2/part-2.csv": b"2",
        },
    )
    assert sorted(names(workdir, pattern)) == expected


def test_the_order_is_the_same_every_time(workdir: Path) -> None:
    """Expansion order does not depend on the order the directory was written in."""
    make(workdir, {f"out/{n}": b"x" for n in ["c", "a/z", "b", "a/y", "d/e/f"]})
    first = names(workdir, "out/**")
    shutil.rmtree(workdir / "out")
    make(workdir, {f"out/{n}": b"x" for n in ["d/e/f", "a/y", "b", "a/z", "c"]})
    assert names(workdir, "out/**") == first
    assert sorted(first) == ["a/y", "a/z", "b", "c", "d/e/f"]


def test_taskkit_partial_files_are_never_matched(workdir: Path) -> None:
    """.taskkit-* files and directories are never outputs, whatever the pattern."""
    make(
        workdir,
        {
            "out/real.txt": b"r",
            "out/.taskkit-1234.partial": b"p",
            "out/sub/.taskkit-j.journal": b"j",
            "out/.taskkit-dir/inside.txt": b"i",
        },
    )
    assert names(workdir, "out/**") == ["real.txt"]
    assert names(workdir, "out/*") == ["real.txt"]
    assert names(workdir, "out/.taskkit-*") == []
    assert names(workdir, "**/.*") == []


def test_a_partial_file_named_outright_is_not_matched(workdir: Path) -> None:
    """Even out/.taskkit-1234.partial, named without wildcards, is never an output."""
    make(workdir, {"out/.taskkit-1234.partial": b"p"})
    assert names(workdir, "out/.taskkit-1234.partial") == []


def test_a_missing_literal_or_base_matches_nothing_without_failing(workdir: Path) -> None:
    """A name or a fixed directory that does not exist yields nothing (plan reports 66)."""
    assert found(workdir, "gone.txt") == []
    assert found(workdir, "no/such/dir/*.txt") == []
    assert found(workdir, "no/such/dir/") == []


# -- expand: links, FIFOs, unreadable directories -----------------------------------------------


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A directory beside the workdir, with a file nobody should upload."""
    place = tmp_path / "outside"
    make(place, {"secret.txt": b"secret", "deep/s2.txt": b"s2"})
    return place


def test_links_inside_the_workdir_are_followed(workdir: Path) -> None:
    """A link to a file or a directory of the workdir is an output under the link's name."""
    make(workdir, {"data/real.txt": b"real", "data/d/x": b"x"})
    (workdir / "out").mkdir()
    (workdir / "out" / "link.txt").symlink_to("../data/real.txt")
    (workdir / "out" / "alias").symlink_to(workdir / "data" / "d")
    results = found(workdir, "out/**")
    assert sorted(m.name for m in results if isinstance(m, Match)) == ["alias/x", "link.txt"]
    assert [m for m in results if not isinstance(m, Match)] == []
    assert names(workdir, "out/link.txt") == ["link.txt"]


def test_links_leading_out_are_skipped_with_a_reason(workdir: Path, outside: Path) -> None:
    """A link to a file or directory outside the workdir is passed over (Skipped, never
    read), by a wildcard or named outright; the other files are matched."""
    make(workdir, {"out/mine.txt": b"m"})
    (workdir / "out" / "secret.txt").symlink_to(outside / "secret.txt")
    (workdir / "out" / "ext").symlink_to(outside)
    (workdir / "out" / "sneaky").symlink_to("../../outside/deep")
    results = found(workdir, "out/**")
    assert [m.name for m in results if isinstance(m, Match)] == ["mine.txt"]
    assert sorted(s for s in results if isinstance(s, Skipped)) == [
        Skipped("out/ext", LEADS_OUT),
        Skipped("out/secret.txt", LEADS_OUT),
        Skipped("out/sneaky", LEADS_OUT),
    ]
    assert found(workdir, "out/secret.txt") == [Skipped("out/secret.txt", LEADS_OUT)]
    assert found(workdir, "out/ext") == [Skipped("out/ext", LEADS_OUT)]
    assert found(workdir, "out/ext/secret.txt") == [Skipped("out/ext", LEADS_OUT)]


def test_a_fixed_directory_that_leads_out_is_skipped(workdir: Path, outside: Path) -> None:
    """'ext/' and 'ext/*.txt' with ext -> a directory outside match nothing outside."""
    (workdir / "ext").symlink_to(outside)
    for pattern in ("ext/", "ext/*.txt", "ext/**/*.txt"):
        results = found(workdir, pattern)
        assert [m for m in results if isinstance(m, Match)] == [], pattern
        assert results == [Skipped("ext", LEADS_OUT)], pattern


def test_a_directory_link_loop_does_not_hang_and_each_file_appears_once(workdir: Path) -> None:
    """Links back to the directory itself or to a parent are not entered again."""
    make(workdir, {"out/a.txt": b"a", "out/sub/b.txt": b"b"})
    (workdir / "out" / "self").symlink_to(".")
    (workdir / "out" / "sub" / "up").symlink_to("..")
    results = found(workdir, "out/**")
    assert sorted(m.name for m in results if isinstance(m, Match)) == ["a.txt", "sub/b.txt"]


def test_a_loop_of_links_and_a_broken_link_are_failures(workdir: Path) -> None:
    """l1 -> l2 -> l1 (ELOOP) and a link to nothing are failures of those paths; the walk goes
    on and the other files are matched."""
    make(workdir, {"out/ok.txt": b"ok"})
    (workdir / "out" / "l1").symlink_to("l2")
    (workdir / "out" / "l2").symlink_to("l1")
    (workdir / "out" / "broken").symlink_to("nowhere")
    results = found(workdir, "out/*")
    assert [m.name for m in results if isinstance(m, Match)] == ["ok.txt"]
    failures = {f.path: f.error for f in results if isinstance(f, Failed)}
    assert sorted(failures) == ["out/broken", "out/l1", "out/l2"]
    assert isinstance(failures["out/broken"], InputNotFound)
    assert failures["out/broken"].exit_code == 66
    (failure,) = found(workdir, "out/broken")
    assert isinstance(failure, Failed)
    assert isinstance(failure.error, InputNotFound)


def test_a_broken_link_is_reported_as_one(workdir: Path) -> None:
    """The error for a link to nothing says so, by a wildcard or named outright."""
    make(workdir, {"out/ok.txt": b"ok"})
    (workdir / "out" / "broken").symlink_to("nowhere")
    for pattern in ("out/*", "out/broken"):
        (failure,) = [f for f in found(workdir, pattern) if isinstance(f, Failed)]
        assert "broken symbolic link" in str(failure.error), pattern


CHILD = """
import json, sys
from pathlib import Path
from taskkit.transfer.patterns import Match, expand, parse_output
from taskkit.content.walk import Skipped
for pattern in sys.argv[2:]:
    out = []
    for f in expand(Path(sys.argv[1]), parse_output(pattern + "=memory://d/")):
        if isinstance(f, Match):
            out.append(["match", f.name])
        elif isinstance(f, Skipped):
            out.append(["skipped", f.path, f.reason])
        else:
            out.append(["failed", f.path, f.error.exit_code, str(f.error)])
    print(json.dumps(out))
"""


def expand_in_child(
    workdir: Path, *patterns: str, prefix: tuple[str, ...] = ()
) -> list[list[list[object]]]:
    """expand() of each pattern in a real process, killed (failing the test) if it blocks."""
    proc = subprocess.run(
        [*prefix, sys.executable, "-c", CHILD, str(workdir), *patterns],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return [json.loads(line) for line in proc.stdout.splitlines()]


def test_a_fifo_is_skipped_and_never_opened(workdir: Path) -> None:
    """A FIFO matched by a wildcard or named outright is Skipped; opening it would block the
    child process forever (nobody writes it), so finishing proves it was never opened."""
    make(workdir, {"out/a.txt": b"a"})
    os.mkfifo(workdir / "out" / "pipe")
    assert expand_in_child(workdir, "out/*", "out/pipe") == [
        [["match", "a.txt"], ["skipped", "out/pipe", "a FIFO, not a file"]],
        [["skipped", "out/pipe", "a FIFO, not a file"]],
    ]


def test_an_unreadable_directory_is_a_failure(workdir: Path) -> None:
    """A directory that cannot be listed is Failed with PermissionDenied (77); the walk goes on.
    As root, the walk runs in a child without the capabilities that bypass permissions."""
    make(workdir, {"out/a.txt": b"a", "out/locked/hidden.txt": b"h"})
    locked = workdir / "out" / "locked"
    locked.chmod(0)
    try:
        if not os.access(locked, os.R_OK):
            results = found(workdir, "out/**")
            assert [m.name for m in results if isinstance(m, Match)] == ["a.txt"]
            (failure,) = [f for f in results if isinstance(f, Failed)]
            assert failure.path == "out/locked"
            assert isinstance(failure.error, PermissionDenied)
            assert failure.error.exit_code == 77
            return
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("running as root, and no setpriv to drop the permission override")
        prefix = (setpriv, "--bounding-set=-dac_override,-dac_read_search", "--")
        (results_in_child,) = expand_in_child(workdir, "out/**", prefix=prefix)
        assert results_in_child[0] == ["match", "a.txt"]
        assert results_in_child[1][:3] == ["failed", "out/locked", 77]
        assert len(results_in_child) == 2
    finally:
        locked.chmod(0o755)


@pytest.mark.parametrize(
    "dest",
    ["https://acct.blob.core.windows.net/c/run/?sv=1&sig=AbC%3D", "http://127.0.0.1:1/acct/c/run/"],
)
def test_an_http_dest_is_refused_with_its_own_reason(dest: str) -> None:
    """An http(s) DEST cannot be written: one usage line says so (not 'wildcards' for the '?'
    of a SAS) and shows no signature."""
    with pytest.raises(UsageError) as info:
        parse_output(f"out/*={dest}")
    assert "DEST cannot be an http(s) URL" in str(info.value)
    assert "AbC" not in str(info.value)
