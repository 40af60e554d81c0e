"""The Azure store's HTTP transport consults the environment (proxies, netrc) on each request
only when the environment holds something that could change a request (taskkit.storage.azure
``_environment_matters``): leaving it out otherwise saves two thread hops per read and changes
nothing sent."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import pytest

from taskkit.storage import azure
from taskkit.storage.retry import RetryBudget
from taskkit.storage.stores import Stores
from taskkit.testing import Azurite

PROXY_VARIABLES = ["http_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY", "HTTP_PROXY"]


@pytest.fixture
def bare(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """An environment with no proxy variable, no NETRC and a home without a .netrc."""
    import os

    for name in list(os.environ):
        if name.lower().endswith("_proxy") or name == "NETRC":
            monkeypatch.delenv(name)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    return home


def session_trusts_environment() -> bool:
    """Whether the session of a fresh transport reads proxies and netrc from the environment."""

    async def opened() -> bool:
        transport = azure._transport()
        await transport.open()
        try:
            return bool(transport.session.trust_env)
        finally:
            await transport.close()

    return asyncio.run(opened())


def test_nothing_in_the_environment_means_it_is_not_consulted(bare: Path) -> None:
    """No proxy variable and no netrc file: the session does not look them up per request."""
    assert azure._environment_matters() is False
    assert session_trusts_environment() is False


@pytest.mark.parametrize("name", PROXY_VARIABLES)
def test_any_proxy_variable_keeps_the_environment(
    bare: Path, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    """Every spelling of a proxy variable aiohttp honours keeps the session trusting the
    environment, so a task behind a proxy still goes through it."""
    monkeypatch.setenv(name, "http://proxy.invalid:3128")
    assert azure._environment_matters() is True
    assert session_trusts_environment() is True


def test_a_netrc_file_keeps_the_environment(bare: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A ~/.netrc, or a file NETRC names, may hold credentials aiohttp would send: kept."""
    (bare / ".netrc").write_text("machine proxy.invalid login u password p\n")
    assert azure._environment_matters() is True
    (bare / ".netrc").unlink()
    named = bare / "elsewhere"
    named.write_text("machine proxy.invalid login u password p\n")
    monkeypatch.setenv("NETRC", str(named))
    assert azure._environment_matters() is True
    monkeypatch.setenv("NETRC", str(bare / "absent"))
    assert azure._environment_matters() is False


@pytest.mark.azurite
def test_a_body_is_taken_in_the_steps_it_arrives_in_not_4_kib_ones(
    azurite: Azurite, azurite_container: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A read of 2 MiB asks aiohttp for the body in steps of READ_BLOCK (what has arrived),
    never the SDK's default 4 KiB (512 steps, each costing the SDK's stream wrapper CPU),
    and still returns the exact bytes."""
    import aiohttp

    data = random.Random(7).randbytes(2 * 1024 * 1024)
    with azurite.blob_service_client() as service:
        service.get_blob_client(azurite_container, "b.bin").upload_blob(data)
    asked: list[int] = []
    original = aiohttp.StreamReader.read

    async def counted(self: aiohttp.StreamReader, n: int = -1) -> bytes:
        asked.append(n)
        return await original(self, n)

    with Stores(RetryBudget(attempts=1), azurite.storage_options()) as stores:
        store, key = stores.open(f"az://{azurite_container}/b.bin")
        (file,) = store.list(key)
        monkeypatch.setattr(aiohttp.StreamReader, "read", counted)
        assert store.read(file, 0, file.size) == data
    assert asked
    assert set(asked) == {azure.READ_BLOCK}
    assert len(asked) < 64, f"{len(asked)} steps for 2 MiB"
