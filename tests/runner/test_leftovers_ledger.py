"""The ledger of outputs (taskkit/runner/leftovers_ledger.py): its file, its name, its
tombstones."""

from __future__ import annotations

from pathlib import Path

import pytest

from taskkit.runner.leftovers_ledger import LEDGER_PREFIX, Ledger, Opened, Product, tombstone_path
from taskkit.transfer.patterns import Match, Output, expand

A, B = "xxh3-128:" + "a" * 32, "xxh3-128:" + "b" * 32


def opened(work: str, before: dict[str, tuple[int, int, int]], *patterns: str) -> Opened:
    return Opened(1, work, patterns or ("out/**",), "host/boot", 4242, "77", before)


def test_a_tombstone_is_named_for_the_task_and_attempt_and_is_never_matched(
    tmp_path: Path,
) -> None:
    """Beside the ledger, one per attempt, a ``.taskkit-`` name that is not a ledger (not
    ``.json``), and no output pattern reaches it, however wide or however named."""
    ledger = tmp_path / f"{LEDGER_PREFIX}0123456789abcdef.json"
    first, second = tombstone_path(ledger, 1), tombstone_path(ledger, 2)
    assert first.parent == ledger.parent
    assert first != second
    assert first.name.startswith(".taskkit-")
    assert first.suffix != ".json"
    first.touch()
    for pattern in ("**", "*", ".*", ".taskkit-*", first.name, f"**/{first.name}"):
        found = [m for m in expand(tmp_path, Output(pattern, "")) if isinstance(m, Match)]
        assert found == [], pattern


def test_the_ledger_reads_back_what_it_wrote_and_refuses_anything_else() -> None:
    """Round trip of products and open entries (odd names too); a damaged or foreign file,
    or one naming a path or pattern that leaves the working directory, is a ValueError,
    never a wrong ledger."""
    ledger = Ledger(
        {"out/a b\u00e9.csv": Product(A, (1, 2, 3)), "out/\udcff.csv": Product(A, (4, 5, 6))},
        (opened(B, {"out/u.txt": (4, 5, 6)}, "out/*", "x/**"),),
    )
    assert Ledger.from_bytes(ledger.to_bytes()) == ledger
    for damaged in (
        b"",
        b"{",
        b"[]",
        b'{"version": 2, "products": {}, "opened": []}',
        b'{"version": 1, "products": {"a": ["w", 1]}, "opened": []}',
        b'{"version": 1, "products": {}}',
        b'{"version": 1, "products": {"../x": ["w", 1, 2, 3]}, "opened": []}',
        b'{"version": 1, "products": {"/etc/x": ["w", 1, 2, 3]}, "opened": []}',
        b'{"version": 1, "products": {"out//x": ["w", 1, 2, 3]}, "opened": []}',
        ledger.to_bytes().replace(b'"out/u.txt"', b'"out/./u.txt"'),
        ledger.to_bytes().replace(b'"x/**"', b'"../**"'),
        ledger.to_bytes()[:-5],
    ):
        with pytest.raises(ValueError, match="not a ledger"):
            Ledger.from_bytes(damaged)
