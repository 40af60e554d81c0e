"""Input globs: ``-i 'az://c/reads/*.fq=reads/'`` lists the fixed prefix once and stages the
matches, which keep their names below it; output patterns' wildcards (*, ?, [abc], **)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from observing import OnPlan
from runner_helpers import Task, opened_task, sh

from taskkit.content.statcache import RACY_WINDOW_NS, StatCache
from taskkit.exceptions import InputNotFound, UsageError
from taskkit.storage.stores import Stores
from taskkit.testing import Azurite
from taskkit.transfer.stage import stage
from taskkit.transfer.stage_plan import Input, Plan, parse_input, plan, split_glob

NAMES = ["a.fq", "b.fq", "c.txt", "x1.fq", "x22.fq", "sub/d.fq", "sub/deep/e.fq", "sub/f.txt"]


@pytest.fixture
def src(tmp_path: Path) -> Path:
    root = tmp_path / "src" / "reads"
    for name in NAMES:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(f"{name}\n")
    return root


def staged(workdir: Path) -> list[str]:
    return sorted(str(p.relative_to(workdir)) for p in workdir.rglob("*") if p.is_file())


# -- parsing -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("az://c/reads/*.fq", ("az://c/reads/", "*.fq")),
        ("az://c/*.fq", ("az://c/", "*.fq")),
        ("az://c/reads/**/*.fq", ("az://c/reads/", "**/*.fq")),
        ("az://c/reads/s?/x/[ab].fq", ("az://c/reads/", "s?/x/[ab].fq")),
        ("az://c/reads/run*/", ("az://c/reads/", "run*/**")),
        ("/data/in/*.csv", ("/data/in/", "*.csv")),
        ("file:///data/in/*.csv", ("file:///data/in/", "*.csv")),
        ("memory://src/**", ("memory://src/", "**")),
        ("az://c/reads/a.fq", None),
        ("az://c/reads/", None),
        ("https://acct.blob.core.windows.net/c/a.fq?sv=2024&sig=abc", None),
        ("http://127.0.0.1:10000/acct/c/*.fq", None),
    ],
)
def test_split_glob_finds_the_fixed_prefix(source: str, expected: tuple[str, str] | None) -> None:
    """The fixed prefix runs up to the first segment with a wildcard; a trailing '/' means
    everything below; http(s) URLs are never globs (their '?' starts a SAS query)."""
    assert split_glob(source) == expected


@pytest.mark.parametrize("text", ["*.fq", "az://*/x.fq", "az://c*/x", "az://c/reads/[z-a].fq"])
def test_a_glob_without_a_fixed_prefix_or_a_bad_set_is_a_usage_error(text: str) -> None:
    """A wildcard in the first segment (the container) or an invalid set is refused (64)."""
    with pytest.raises(UsageError) as info:
        parse_input(text)
    assert info.value.exit_code == 64


@pytest.mark.parametrize(
    ("text", "dest"),
    [
        ("az://c/reads/*.fq", "reads/"),
        ("az://c/reads/**/*.fq=r/", "r/"),
        ("az://c/t/year=2024/*.csv=", "year=2024/"),
    ],
)
def test_a_glob_without_dest_goes_to_its_fixed_prefixs_name(text: str, dest: str) -> None:
    """As a prefix does, a glob without DEST stages below the last name of its fixed part."""
    assert parse_input(text).dest == dest


# -- planning and staging --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("*.fq", ["a.fq", "b.fq", "x1.fq", "x22.fq"]),
        ("x?.fq", ["x1.fq"]),
        ("[ab].fq", ["a.fq", "b.fq"]),
        ("[!ab]*.fq", ["x1.fq", "x22.fq"]),
        ("**/*.fq", ["a.fq", "b.fq", "sub/d.fq", "sub/deep/e.fq", "x1.fq", "x22.fq"]),
        ("sub/*", ["d.fq", "f.txt"]),  # below the fixed prefix reads/sub/
        ("sub/**", ["d.fq", "deep/e.fq", "f.txt"]),
        ("s*/", ["sub/d.fq", "sub/deep/e.fq", "sub/f.txt"]),
    ],
)
def test_a_glob_stages_its_matches_below_dest(
    src: Path, workdir: Path, tmp_path: Path, pattern: str, expected: list[str]
) -> None:
    """Each wildcard matches as in output patterns; matches keep their path relative to the
    fixed prefix under DEST, and nothing else is staged."""
    summary = stage(
        [f"file://{src}/{pattern}=reads/"],
        workdir=workdir,
        cache=StatCache(tmp_path / "sc.sqlite3"),
    )
    assert summary.exit_error() is None
    assert staged(workdir) == [f"reads/{name}" for name in expected]
    for name in expected:
        assert (workdir / "reads" / name).read_text().endswith(f"{name}\n")


class CountingStores(Stores):
    """Stores whose stores count their listings and stats."""

    calls: list[tuple[str, str]]

    def open(self, url: str) -> tuple[object, str]:  # type: ignore[override]
        store, key = super().open(url)
        calls = self.calls
        if not getattr(store, "_counted", False):
            listing, stat = store.list, store.stat

            def counted_list(key: str) -> object:
                calls.append(("list", key))
                return listing(key)

            def counted_stat(key: str) -> object:
                calls.append(("stat", key))
                return stat(key)

            store.list, store.stat = counted_list, counted_stat  # type: ignore[method-assign,assignment]
            store._counted = True  # type: ignore[attr-defined]
        return store, key


def test_a_glob_lists_its_fixed_prefix_once(src: Path, workdir: Path) -> None:
    """One listing of the fixed prefix, no stat of any single file."""
    with CountingStores() as stores:
        stores.calls = []
        the_plan = plan(
            [parse_input(f"file://{src}/**/*.fq=reads/")], workdir=workdir, stores=stores
        )
    assert len(the_plan.entries) == 6
    assert stores.calls == [("list", f"{src}/")]


def test_a_glob_matching_nothing_is_66_unless_allowed(
    src: Path, workdir: Path, stores: Stores
) -> None:
    """No match: InputNotFound (66) saying it matches nothing; --allow-empty makes it fine."""
    inputs = [parse_input(f"file://{src}/*.bam=reads/")]
    the_plan = plan(inputs, workdir=workdir, stores=stores)
    (problem,) = the_plan.problems
    assert isinstance(problem.error, InputNotFound)
    assert problem.error.exit_code == 66
    assert "matches nothing" in str(problem.error)
    allowed = plan(inputs, workdir=workdir, stores=stores, allow_empty=True)
    assert (allowed.entries, allowed.problems) == ((), ())


def test_a_glob_and_a_file_for_one_path_refuse_the_request(
    src: Path, workdir: Path, stores: Stores
) -> None:
    """A glob's match and another input for the same path clash like any two inputs."""
    with pytest.raises(UsageError, match=r"would both be staged at 'reads/a\.fq'"):
        plan(
            [
                parse_input(f"file://{src}/*.fq=reads/"),
                parse_input(f"file://{src}/c.txt=reads/a.fq"),
            ],
            workdir=workdir,
            stores=stores,
        )


def test_stale_removal_stays_within_the_globs_matches(
    src: Path, workdir: Path, tmp_path: Path
) -> None:
    """Restaged with a glob after blobs are deleted: a stale file the glob matches goes; one
    staged from the same prefix that the glob does not match stays."""
    later = StatCache(tmp_path / "sc.sqlite3", clock=lambda: time.time_ns() + 10 * RACY_WINDOW_NS)
    stage([f"file://{src}/=reads/"], workdir=workdir, cache=later)
    (src / "a.fq").unlink()
    (src / "c.txt").unlink()
    plans: list[Plan] = []
    summary = stage(
        [Input(f"file://{src}/*.fq", "reads/")],
        workdir=workdir,
        cache=later,
        observer=OnPlan(plans.append),
    )
    assert [e.dest for e in plans[0].removals] == ["reads/a.fq"]
    assert summary.removed == 1
    assert not (workdir / "reads" / "a.fq").exists()
    assert (workdir / "reads" / "c.txt").exists()


@pytest.fixture
def task(tmp_path: Path) -> Iterator[Task]:
    with opened_task(tmp_path) as opened:
        yield opened


def test_taskkit_run_stages_a_glob_and_no_match_is_201(task: Task, src: Path) -> None:
    """`taskkit run -i GLOB` stages the matches for the command; a glob matching nothing is
    exit 201 (permanent, missing input) without running the command."""
    seen = task.box / "seen.txt"
    ok = task.run(sh(f"find reads -type f | sort > {seen}"), "-i", f"file://{src}/**/*.fq=reads/")
    assert ok.returncode == 0, ok.stderr
    assert seen.read_text().split() == [
        "reads/a.fq",
        "reads/b.fq",
        "reads/sub/d.fq",
        "reads/sub/deep/e.fq",
        "reads/x1.fq",
        "reads/x22.fq",
    ]
    task.job = "job-2"
    none = task.run(sh(f"echo ran > {task.box / 'ran'}"), "-i", f"file://{src}/*.bam=bam/")
    assert none.returncode == 201, none.stderr
    assert f"input file://{src}/*.bam matches no files" in none.stderr
    assert not (task.box / "ran").exists()


@pytest.mark.azurite
def test_an_azure_glob_lists_once_and_downloads_only_matches(
    azurite: Azurite, azurite_container: str, workdir: Path, tmp_path: Path
) -> None:
    """On Azure: one listing of the fixed prefix, one download per match, none for the rest."""
    with azurite.blob_service_client() as service:
        container = service.get_container_client(azurite_container)
        for name in NAMES:
            container.upload_blob(f"reads/{name}", f"{name}\n".encode())
        container.upload_blob("other/z.fq", b"z")
    since = azurite.log_offset()
    summary = stage(
        [f"az://{azurite_container}/reads/*.fq=reads/"],
        workdir=workdir,
        cache=StatCache(tmp_path / "sc.sqlite3"),
        storage_options=azurite.storage_options(),
    )
    ops = azurite.operations(since)
    assert summary.exit_error() is None
    assert staged(workdir) == ["reads/a.fq", "reads/b.fq", "reads/x1.fq", "reads/x22.fq"]
    assert ops.count("Container_ListBlobFlatSegment") == 1
    assert ops.count("Blob_Download") == 4
    assert len(ops) == 5, ops
