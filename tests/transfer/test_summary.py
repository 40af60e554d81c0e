"""taskkit.transfer.summary: how sizes are shown in every line a transfer says, and the
collector spared while a plan is made and carried out."""

from __future__ import annotations

import contextlib

import pytest

from taskkit.transfer.summary import format_size


@pytest.mark.parametrize(
    ("n", "text"),
    [
        (0, "0 B"),
        (1, "1 B"),
        (1023, "1023 B"),
        (1024, "1.0 KiB"),
        (1536, "1.5 KiB"),
        (1024 * 1024 - 1, "1024.0 KiB"),
        (int(1.5 * 1024 * 1024), "1.5 MiB"),
        (3 * 1024**3, "3.0 GiB"),
        (2 * 1024**4, "2.0 TiB"),
        (5 * 1024**5, "5120.0 TiB"),
        (512.7, "512 B"),
    ],
)
def test_format_size_uses_binary_units(n: float, text: str) -> None:
    """Whole bytes below 1 KiB, one decimal above, TiB at most."""
    assert format_size(n) == text


@pytest.mark.parametrize("enabled", [True, False])
@pytest.mark.parametrize("raised", [False, True])
def test_collecting_less_leaves_the_collector_as_it_found_it(enabled: bool, raised: bool) -> None:
    """While planning no collection runs; after it the objects made so far are set aside
    (frozen) until the block ends, and then the collector is as it was, on an error too."""
    import gc

    from taskkit.transfer.summary import collecting_less

    was = gc.isenabled()
    (gc.enable if enabled else gc.disable)()
    try:
        with contextlib.suppress(RuntimeError), collecting_less() as resume:
            assert not gc.isenabled()
            made = [object() for _ in range(10)]
            resume()
            assert gc.isenabled() is enabled
            assert gc.get_freeze_count() >= len(made)
            if raised:
                raise RuntimeError
        assert gc.isenabled() is enabled
        assert gc.get_freeze_count() == 0
    finally:
        (gc.enable if was else gc.disable)()


def test_collecting_less_keeps_what_the_program_set_aside_itself() -> None:
    """A program that froze its own objects (before forking, say) finds them still frozen."""
    import gc

    from taskkit.transfer.summary import collecting_less

    gc.freeze()
    try:
        frozen = gc.get_freeze_count()
        with collecting_less() as resume:
            resume()
        assert gc.get_freeze_count() == frozen
    finally:
        gc.unfreeze()
