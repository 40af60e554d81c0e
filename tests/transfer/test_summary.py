"""taskkit.transfer.summary: how sizes are shown in every line a transfer says."""

from __future__ import annotations

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
