"""taskkit.storage.errors: failures whose upstream class hides what happened (fsspec's HTTP
"not found" for any failure), and credentials that cannot be used: one line of taskkit's own,
naming the variables it reads, with the right code."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from types import SimpleNamespace

import aiohttp
import azure.core.exceptions as azure_errors
import pytest
from azure.storage.blob._shared.authentication import AzureSigningError
from http_fakes import http_server

from taskkit.exceptions import ConfigError, InputNotFound, TaskkitError, TransientError
from taskkit.redaction import SECRET_ENV_VARS
from taskkit.storage.errors import CREDENTIAL_SOURCES, credentials_problem, translate
from taskkit.storage.stores import Stores

SIG = "c2lnbmF0dXJlLXZhbHVl"
VARIABLES = (
    "AZURE_STORAGE_CONNECTION_STRING",
    "AZURE_STORAGE_ACCOUNT_NAME",
    "AZURE_STORAGE_ACCOUNT_KEY",
)


@pytest.fixture
def refusing_port() -> Iterator[int]:
    """A loopback port bound but not listening: connections to it are refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


@pytest.fixture
def server() -> Iterator[str]:
    with http_server() as (base, _):
        yield base


def _stat(stores: Stores, url: str) -> TaskkitError:
    store, key = stores.open(url)
    with pytest.raises(TaskkitError) as info:
        store.stat(key)
    return info.value


def test_a_refused_http_connection_is_transient(stores: Stores, refusing_port: int) -> None:
    """fsspec says FileNotFoundError when nothing listens; the refused connection under it
    makes it retryable (75), and the URL is shown once."""
    url = f"http://127.0.0.1:{refusing_port}/c/x.bin?sv=1&sig={SIG}"
    failure = _stat(stores, url)
    assert type(failure) is TransientError
    assert failure.exit_code == 75
    assert str(failure).startswith(f"cannot read http://127.0.0.1:{refusing_port}/c/x.bin: ")
    assert SIG not in str(failure)
    assert "not found" not in str(failure)


@pytest.mark.parametrize(
    ("status", "cls", "code", "said"),
    [
        (404, InputNotFound, 66, "not found"),
        (403, ConfigError, 78, "access denied (HTTP 403)"),
        (401, ConfigError, 78, "access denied (HTTP 401)"),
        (503, TransientError, 75, "HTTP 503"),
        (429, TransientError, 75, "HTTP 429"),
    ],
)
def test_an_http_answer_keeps_its_meaning(
    stores: Stores, server: str, status: int, cls: type[TaskkitError], code: int, said: str
) -> None:
    """Each status a server answers is translated by what it is, not by fsspec's wrapper."""
    failure = _stat(stores, f"{server}/status/{status}/x.bin?sig={SIG}")
    assert type(failure) is cls
    assert failure.exit_code == code
    assert said in str(failure)
    assert SIG not in str(failure)


def test_a_local_file_not_found_is_still_not_found() -> None:
    """A FileNotFoundError with no cause (a local file) keeps its rule."""
    assert type(translate(FileNotFoundError(2, "No such file"), "cannot read x")) is InputNotFound


def test_a_not_found_caused_by_a_bug_keeps_its_rule() -> None:
    """A cause that is no storage error (a bug) does not replace the not-found."""
    wrapped = FileNotFoundError("http://h/x")
    wrapped.__cause__ = KeyError("size")
    assert type(translate(wrapped, "cannot read http://h/x")) is InputNotFound


# -- credentials ------------------------------------------------------------------------------


def test_a_key_that_is_not_base64_is_named_as_such() -> None:
    """The SDK's signing error is taskkit's line: which setting holds the bad key."""
    failure = translate(
        AzureSigningError("Invalid base64-encoded string: x"), "cannot read az://c/x"
    )
    assert isinstance(failure, ConfigError)
    assert failure.exit_code == 78
    assert "the account key is not valid" in str(failure)
    assert "Invalid base64" not in str(failure)
    assert all(name in str(failure) for name in VARIABLES)


def test_no_credential_at_all_is_named_as_such() -> None:
    """DefaultAzureCredential finding nothing (no status: no request was answered) says no
    credential could be used, names the variables, and drops the SDK's page of text."""
    upstream = azure_errors.ClientAuthenticationError(
        "DefaultAzureCredential failed to retrieve a token from the included credentials.\n"
        "Attempted credentials:\n\tEnvironmentCredential: ..."
    )
    failure = translate(upstream, "cannot list az://c/")
    assert isinstance(failure, ConfigError)
    assert "no Azure credential could be used" in str(failure)
    assert "DefaultAzureCredential" not in str(failure)
    assert str(failure).endswith(CREDENTIAL_SOURCES)


def test_refused_credentials_name_the_code_and_the_variables() -> None:
    """A 403 from the service is access denied, with its error code and where credentials
    come from."""
    response = SimpleNamespace(status_code=403, reason="Forbidden", headers={}, text=lambda: "")
    upstream = azure_errors.ClientAuthenticationError("Server failed", response=response)
    upstream.error_code = "AuthenticationFailed"  # type: ignore[attr-defined]
    failure = translate(upstream, "cannot read az://c/x")
    assert "access denied (AuthenticationFailed)" in str(failure)
    assert all(name in str(failure) for name in VARIABLES)


def test_a_refused_token_of_an_http_url_points_at_the_url() -> None:
    """A 403 for a plain http(s) URL is about the URL's own token, not the variables."""
    info = SimpleNamespace(real_url="http://h/x", method="GET", url="http://h/x")
    upstream = aiohttp.ClientResponseError(info, (), status=403, message="Forbidden")  # type: ignore[arg-type]
    failure = translate(upstream, "cannot read http://h/x")
    assert str(failure) == (
        "cannot read http://h/x: access denied (HTTP 403); check the URL's access token "
        "(a SAS: its expiry and permissions)"
    )


@pytest.mark.parametrize(
    ("env", "options", "problem"),
    [
        ({"AZURE_STORAGE_CONNECTION_STRING": "garbage"}, {}, "is not a valid connection string"),
        ({}, {"connection_string": "garbage"}, "is not a valid connection string"),
        ({}, {}, "no Azure storage account is set"),
        ({"AZURE_STORAGE_ACCOUNT_NAME": "acct"}, {}, "credentials cannot be used"),
    ],
    ids=["env-connection-string", "option-connection-string", "nothing", "account-only"],
)
def test_credentials_adlfs_cannot_use_get_one_line(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], options: dict[str, str], problem: str
) -> None:
    """What is wrong, said from what is set, and every variable taskkit reads; exit 78."""
    for name in (*SECRET_ENV_VARS, "AZURE_STORAGE_ACCOUNT_NAME"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    failure = credentials_problem("cannot open az://c/x", options)
    assert failure.exit_code == 78
    assert str(failure).startswith("cannot open az://c/x: ")
    assert problem in str(failure)
    assert all(name in str(failure) for name in VARIABLES)
    assert "garbage" not in str(failure)
