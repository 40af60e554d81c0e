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
    """__all__ is sorted as ruff orders it (constants, then classes, then the rest, each
    case-sensitive) and every name exists."""

    def ruff_order(name: str) -> tuple[int, str]:
        if name.isupper() and len(name) > 1:
            return (0, name)
        return (1, name) if name[:1].isupper() else (2, name)

    assert list(taskkit.__all__) == sorted(taskkit.__all__, key=ruff_order)
    for name in taskkit.__all__:
        assert hasattr(taskkit, name), name


def _modules() -> list[str]:
    """Every module of the taskkit package, by dotted name."""
    import pkgutil

    return [info.name for info in pkgutil.walk_packages(taskkit.__path__, "taskkit.")]


def _own_names(module: object) -> set[str]:
    """The names a module binds itself: its classes, functions and assignments, not its imports."""
    import ast
    import inspect

    tree = ast.parse(inspect.getsource(module))  # type: ignore[arg-type]
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names |= {target.id for target in targets if isinstance(target, ast.Name)}
    return names


def test_every_name_in_a_module_all_has_its_home_there() -> None:
    """One home per name: each module's __all__ lists only what that module defines (a class or
    function whose __module__ is that module, or a constant or type alias it assigns), never a
    re-export.
    Packages' __init__ (the public face, taskkit.cli's entry point) gather names on purpose."""
    import importlib
    import inspect

    strays = []
    for name in _modules():
        if name == "taskkit.__main__":
            continue
        module = importlib.import_module(name)
        if module.__file__ is not None and module.__file__.endswith("__init__.py"):
            continue
        own = _own_names(module)
        for exported in getattr(module, "__all__", ()):
            value = getattr(module, exported)
            if (inspect.isclass(value) or inspect.isfunction(value)) and value.__name__ == exported:
                home_ok = value.__module__ == name
            else:
                home_ok = exported in own
            if not home_ok:
                strays.append(f"{name}.{exported}")
    assert strays == []


def test_the_module_walk_sees_the_wings() -> None:
    """The walk behind the one-home test reaches every wing (it cannot pass by seeing nothing)."""
    found = set(_modules())
    for wing in ("content", "storage", "transfer", "runner", "batch", "cli"):
        assert any(name.startswith(f"taskkit.{wing}.") for name in found), wing
    assert "taskkit.exceptions" in found
