"""taskkit/testing/__init__.py: the face of the test tools gathers what its modules define.

That pytest registers the fixtures through the face is pinned down in test_azurite_server.py.
"""

from __future__ import annotations

import importlib
import types

import taskkit.testing

HOMES = ("taskkit.testing.azurite_server", "taskkit.testing.faults", "taskkit.testing.proxy")


def test_the_face_lists_exactly_what_its_modules_export() -> None:
    """__all__ of the face is the union of its modules' __all__, each name the same object as in
    its home (a name added to a module and forgotten here, or the reverse, fails)."""
    gathered: dict[str, object] = {}
    for home in HOMES:
        module = importlib.import_module(home)
        gathered |= {name: getattr(module, name) for name in module.__all__}
    assert set(taskkit.testing.__all__) == set(gathered)
    for name, value in gathered.items():
        assert getattr(taskkit.testing, name) is value, name


def test_no_exported_name_shadows_a_module_of_the_package() -> None:
    """``import taskkit.testing.<module>`` gives the module, not a same-named export of the face
    (the fixture ``azurite`` is why the server's module is ``azurite_server``)."""
    for home in HOMES:
        assert isinstance(getattr(taskkit.testing, home.rpartition(".")[2]), types.ModuleType)
        assert home.rpartition(".")[2] not in taskkit.testing.__all__
