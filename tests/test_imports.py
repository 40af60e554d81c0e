"""The house's import order: a lower wing never imports a higher one, and the library no click.

The floors, lowest first: the bottom modules (exceptions, redaction, periodic, _version, signals,
observer), then content < storage < transfer < runner < batch < cli; ``testing`` stands on
storage's floor and may use it; the package face (``taskkit/__init__.py``) may use every wing
but the command line, and no module imports the face. Only ``taskkit.cli`` imports click.

Checked two ways. Statically: every module's source is parsed and every import counts,
function-level lazy ones and those under ``TYPE_CHECKING`` too (a type a lower wing names from a
higher one is a dependency all the same). At run time: a fresh interpreter imports a whole
wing and the test reads its ``sys.modules``; the package face is stubbed out there, since it
imports every wing by design, so what loads is the wing's own doing.
"""

from __future__ import annotations

import ast
import functools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import taskkit

PACKAGE = Path(taskkit.__file__).parent
WINGS = ("content", "storage", "transfer", "runner", "function", "batch", "cli")
BOTTOM = ("exceptions", "redaction", "periodic", "_version", "observer", "envnames", "signals")
#: The floor of each place a module can live; a module may import its own floor and lower ones.
FLOOR = {"bottom": 0, **{wing: n + 1 for n, wing in enumerate(WINGS)}}
FLOOR.update(testing=FLOOR["storage"], face=FLOOR["batch"], __main__=FLOOR["cli"])


def module_name(path: Path) -> str:
    """The dotted name of the module at ``path`` under the package."""
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def is_module(name: str) -> bool:
    """Whether ``name`` (``taskkit.x.y``) is a module or package of taskkit."""
    if name.split(".", maxsplit=1)[0] != "taskkit":
        return False
    base = PACKAGE.parent.joinpath(*name.split("."))
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def imports_of(source: str, name: str, is_package: bool = False) -> set[str]:
    """Every module ``source`` (the module ``name``) imports, wherever the import statement is;
    ``from taskkit.x import y`` counts as ``taskkit.x.y`` when ``y`` is a module."""
    package = name if is_package else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([node.module] if node.module else [])])
            subs = [f"{base}.{alias.name}" for alias in node.names]
            found.update(sub for sub in subs if is_module(sub))
            if not all(is_module(sub) for sub in subs):
                found.add(base)
    return found


def floor_of(name: str) -> str:
    """Where the module ``name`` lives: a wing, ``bottom``, ``testing``, ``face``, ``__main__``."""
    parts = name.split(".")
    if len(parts) == 1:
        return "face"
    if parts[1] in WINGS:
        return parts[1]
    if parts[1] in BOTTOM:
        return "bottom"
    if parts[1] in ("testing", "__main__"):
        return parts[1]
    raise AssertionError(f"{name} is in no wing: move it into one or add it to BOTTOM")


@functools.cache
def graph() -> dict[str, set[str]]:
    """Each taskkit module and the taskkit modules (and click) it imports."""
    edges: dict[str, set[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        name = module_name(path)
        found = imports_of(path.read_text(), name, path.name == "__init__.py")
        edges[name] = {
            imported
            for imported in found
            if imported.split(".")[0] in ("taskkit", "click") and imported != name
        }
    return edges


def breaches(name: str) -> set[str]:
    """The imports of the module ``name`` that break the order."""
    floor = FLOOR[floor_of(name)]
    found = set()
    for imported in graph()[name]:
        if imported.split(".")[0] == "click":
            if floor_of(name) not in ("cli", "__main__"):
                found.add(imported)
        elif imported == "taskkit":
            found.add(imported)  # the face imports every wing: below it, a circle
        elif FLOOR[floor_of(imported)] > floor:
            found.add(imported)
    return found


@pytest.mark.parametrize("name", sorted(graph()))
def test_module_imports_only_its_floor_and_below(name: str) -> None:
    """No module imports a higher wing, the face or (outside the CLI) click."""
    found = breaches(name)
    assert not found, f"{name} ({floor_of(name)}) imports {sorted(found)}"


def test_every_wing_and_bottom_module_exists() -> None:
    """The wings and the bottom modules named here are the ones under taskkit/ (no stale name)."""
    assert {name.split(".")[1] for name in graph() if "." in name} >= set(WINGS)
    present = {name.split(".")[1] for name in graph() if name.count(".") == 1}
    assert set(BOTTOM) <= present


def test_scanner_sees_every_kind_of_import(tmp_path: Path) -> None:
    """The parse counts lazy, TYPE_CHECKING, relative and from-package imports (not vacuous)."""
    source = (
        "from typing import TYPE_CHECKING\n"
        "import taskkit.exceptions\n"
        "from . import digest\n"
        "from ..storage import base\n"
        "from taskkit.runner.spec import RunSpec\n"
        "if TYPE_CHECKING:\n"
        "    from taskkit.cli.progress import Progress\n"
        "def f():\n"
        "    import click\n"
        "    from taskkit import transfer\n"
    )
    found = imports_of(source, "taskkit.content.walk")
    assert found >= {
        "taskkit.exceptions",
        "taskkit.content.digest",
        "taskkit.storage.base",
        "taskkit.runner.spec",
        "taskkit.cli.progress",
        "click",
        "taskkit.transfer",
    }


# -- at run time: what a fresh interpreter loads --------------------------------------------

#: Imports the modules named on the command line with the package face stubbed out (it imports
#: every wing by design), and prints what got loaded.
CHILD = """
import importlib, json, sys, types
face = types.ModuleType("taskkit")
face.__path__ = [sys.argv[1]]
sys.modules["taskkit"] = face
for name in sys.argv[2:]:
    importlib.import_module(name)
print(json.dumps(sorted(sys.modules)))
"""


def run_child(code: str, *args: str) -> set[str]:
    """The ``sys.modules`` of a fresh interpreter once ``code`` has run."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(PACKAGE.parent), *sys.path])}
    done = subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        check=False,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return set(json.loads(done.stdout.splitlines()[-1]))


@functools.cache
def loaded_by_wing(wing: str) -> frozenset[str]:
    """What importing every module of ``wing`` loads, the face stubbed out."""
    names = sorted(name for name in graph() if floor_of(name) == wing and "." in name)
    return frozenset(run_child(CHILD, str(PACKAGE), *names))


def top_names(loaded: frozenset[str] | set[str], prefix: str) -> list[str]:
    """The loaded modules that are ``prefix`` or inside it."""
    return sorted(name for name in loaded if name == prefix or name.startswith(prefix + "."))


def wing_cases() -> list[object]:
    """(wing, what it must not load): click and every higher wing, for each wing below cli."""
    return [
        pytest.param(wing, forbidden, id=f"{wing}-{forbidden}")
        for n, wing in enumerate(WINGS[:-1])
        for forbidden in ["click", *(f"taskkit.{higher}" for higher in WINGS[n + 1 :])]
    ]


@pytest.mark.parametrize(("wing", "forbidden"), wing_cases())
def test_wing_loads_nothing_above_it(wing: str, forbidden: str) -> None:
    """Importing a whole wing (in a fresh interpreter) loads neither click nor a higher wing."""
    loaded = loaded_by_wing(wing)
    assert f"taskkit.{wing}" in loaded  # the child did import the wing
    assert not top_names(loaded, forbidden)


def test_child_sees_what_a_wing_loads() -> None:
    """The child reports a wing's own imports (the check is not vacuous): content loads digest
    and xxhash, and the stubbed face loads none of the other wings."""
    loaded = loaded_by_wing("content")
    assert {"taskkit.content.digest", "xxhash"} <= loaded
    assert not top_names(loaded, "taskkit.runner")


@functools.cache
def face_loads() -> frozenset[str]:
    """What ``import taskkit`` loads in a fresh interpreter (the real face)."""
    code = "import json, sys, taskkit; print(json.dumps(sorted(sys.modules)))"
    return frozenset(run_child(code))


@pytest.mark.parametrize(
    "heavy",
    ["click", "pydantic", "adlfs", "azure", "taskkit.cli", "sqlite3"]
    + [f"taskkit.{wing}" for wing in WINGS],
)
def test_import_taskkit_stays_light(heavy: str) -> None:
    """``import taskkit`` loads no wing, no CLI toolkit, no pydantic, no Azure SDK and no
    SQLite: each public name is imported on its first use, so a command starts light."""
    loaded = face_loads()
    assert "taskkit.exceptions" in loaded  # the real face ran
    assert not top_names(loaded, heavy)
