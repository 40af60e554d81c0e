"""taskkit/__init__.py: __all__ is exactly the public API, sorted."""

from __future__ import annotations

import taskkit


def test_all_lists_exactly_the_public_names() -> None:
    """Every public attribute is in __all__, and __all__ names nothing else or private."""
    public = {
        name
        for name, value in vars(taskkit).items()
        if not name.startswith("_") and getattr(value, "__module__", "").startswith("taskkit")
    } | {"__version__", "HashResult", "CHUNK_SIZE"}
    assert set(taskkit.__all__) == public | set(taskkit._LAZY)


def test_lazy_names_resolve_on_first_use_only() -> None:
    """The runner's names are not imported by ``import taskkit``, and resolve when used."""
    import subprocess
    import sys

    code = (
        "import sys, taskkit; assert 'pydantic' not in sys.modules, 'eager'; "
        "assert taskkit.ExitPolicy.__module__ == 'taskkit.runner.policy'; "
        "print(sorted(taskkit._LAZY))"
    )
    done = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "nonexistent" not in dir(taskkit)
    assert set(taskkit._LAZY) <= set(dir(taskkit))


def test_all_is_sorted_and_resolvable() -> None:
    """__all__ is sorted (case-sensitive, as ruff orders it) and every name exists."""
    assert list(taskkit.__all__) == sorted(taskkit.__all__)
    for name in taskkit.__all__:
        assert hasattr(taskkit, name), name
