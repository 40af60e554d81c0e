"""Translating upstream storage errors (Azure SDK, aiohttp, fsspec, the OS) into taskkit's.

Part of the storage boundary (:mod:`taskkit.storage.base`): every error a store meets leaves it as a
:class:`~taskkit.exceptions.TaskkitError` chosen here. :data:`RULES` maps an upstream class
(``module.qualname``, so nothing is imported to build it) to a rule; :func:`translate` walks the
exception's MRO, so the most specific entry wins. ``tests/storage/test_stores.py`` fails when an
upstream class has no entry, so a new SDK error type is a decision, not an accident. Messages
pass through :func:`~taskkit.redaction.redact`: no credential leaves this module.

One question the class cannot answer: whether a failed precondition means "the source changed
under a read" (:class:`SourceChanged`) or "another writer won" (:class:`Conflict`). Only the
caller knows that its request carried a condition of its own on the file's version, so it says
so (``conditional=True``), and that one decision is taken before the table. Another: fsspec's
HTTP filesystem reports every failure to reach a URL as ``FileNotFoundError``; its cause (a
refused connection, a 403) is translated instead, so an unreachable server is retryable.

Credentials that are missing, garbled or refused get taskkit's own line naming the variables
it reads (:data:`CREDENTIAL_SOURCES`), never the SDK's or adlfs's text.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable, Mapping
from typing import TypeVar

from taskkit.exceptions import (
    ConfigError,
    Conflict,
    InputNotFound,
    IOFailure,
    MisuseError,
    PermissionDenied,
    SourceChanged,
    TaskkitError,
    TransientError,
)
from taskkit.redaction import redact

__all__ = [
    "CREDENTIAL_SOURCES",
    "RULES",
    "Rule",
    "credentials_problem",
    "guarded",
    "reason",
    "translate",
]

_T = TypeVar("_T")

Rule = Callable[[BaseException, str], TaskkitError]


def reason(exc: BaseException) -> str:
    """The first line of what ``exc`` says, credentials hidden."""
    text = str(exc).strip().splitlines()
    return redact(text[0] if text else type(exc).__name__)


def _not_found(exc: BaseException, what: str) -> TaskkitError:
    code = _code(exc)
    return InputNotFound(f"{what}: not found" + (f" ({code})" if code else ""), errno=errno.ENOENT)


#: Where taskkit (through adlfs) finds Azure credentials: named by every credential error.
CREDENTIAL_SOURCES = (
    "taskkit reads AZURE_STORAGE_CONNECTION_STRING, or AZURE_STORAGE_ACCOUNT_NAME with "
    "AZURE_STORAGE_ACCOUNT_KEY or AZURE_STORAGE_SAS_TOKEN, else the node's managed identity"
)


def _auth(exc: BaseException, what: str) -> TaskkitError:
    """Refused credentials, or none to be had; never the upstream text, which can run to a
    page (DefaultAzureCredential lists every way it tried)."""
    status = _status(exc)
    if type(exc).__module__.startswith("aiohttp"):  # a plain http(s) URL: its token is in it
        return ConfigError(
            f"{what}: access denied (HTTP {status}); check the URL's access token (a SAS: "
            "its expiry and permissions)"
        )
    if not status:  # no request was answered: no credential could be had at all
        return ConfigError(
            f"{what}: access denied: no Azure credential could be used (none is set, or the "
            f"managed identity did not answer); {CREDENTIAL_SOURCES}"
        )
    return ConfigError(
        f"{what}: access denied ({_code(exc) or _label(exc)}); check the credentials "
        f"and their permissions ({CREDENTIAL_SOURCES})"
    )


def _bad_key(exc: BaseException, what: str) -> TaskkitError:
    """The SDK cannot sign a request: the account key is not a key (base64)."""
    return ConfigError(
        f"{what}: the account key is not valid (AZURE_STORAGE_ACCOUNT_KEY, or the AccountKey "
        f"field of AZURE_STORAGE_CONNECTION_STRING, is 88 base64 characters); {CREDENTIAL_SOURCES}"
    )


def credentials_problem(what: str, options: Mapping[str, object] | None = None) -> ConfigError:
    """taskkit's own line for Azure credentials adlfs could not even build a client from,
    naming the variables it reads (``options``: the storage options given instead)."""
    given = {k: v for k, v in (options or {}).items() if v}
    if given.get("connection_string") or os.environ.get("AZURE_STORAGE_CONNECTION_STRING"):
        problem = "AZURE_STORAGE_CONNECTION_STRING is not a valid connection string"
    elif not (given.get("account_name") or os.environ.get("AZURE_STORAGE_ACCOUNT_NAME")):
        problem = "no Azure storage account is set"
    else:
        problem = "the Azure storage credentials cannot be used"
    return ConfigError(f"{what}: {problem}; {CREDENTIAL_SOURCES}")


def _transient(exc: BaseException, what: str) -> TaskkitError:
    return TransientError(f"{what}: {reason(exc)}")


def _changed(exc: BaseException, what: str) -> TaskkitError:
    return SourceChanged(f"{what}: it changed while being read; a new attempt will see it")


def _config(exc: BaseException, what: str) -> TaskkitError:
    return ConfigError(f"{what}: {reason(exc)}")


def _bug(exc: BaseException, what: str) -> TaskkitError:
    return MisuseError(f"{what}: {type(exc).__name__}: {reason(exc)}")


def _code(exc: BaseException) -> str | None:
    code = getattr(exc, "error_code", None)
    code = getattr(code, "value", code)  # the SDK's StorageErrorCode enum, or a plain string
    return str(code) if code else None


def _status(exc: BaseException) -> int:
    status = getattr(exc, "status_code", None) or getattr(exc, "status", None) or 0
    return status if isinstance(status, int) else 0


def _label(exc: BaseException) -> str:
    return f"HTTP {_status(exc)}" + (f" {_code(exc)}" if _code(exc) else "")


def _conflict(exc: BaseException, what: str) -> TaskkitError | None:
    """A request conditional on the file's version that failed because another version (or
    no file, or a file where none was wanted) was there: 412 ConditionNotMet for If-Match,
    409 BlobAlreadyExists for If-None-Match: * (what Azure and Azurite answer), 404
    BlobNotFound when the service checks existence before the condition. A missing container
    (404 ContainerNotFound) is not a conflict: the caller's settings are wrong."""
    status, code = _status(exc), _code(exc)
    if status == 412 or (status, code) in {(409, "BlobAlreadyExists"), (404, "BlobNotFound")}:
        return Conflict(f"{what}: another writer changed it first ({_label(exc)})")
    return None


def _by_status(exc: BaseException, what: str) -> TaskkitError:
    """An HTTP error whose class says less than its status code."""
    status = _status(exc)
    label = _label(exc)
    if status in (401, 403):
        return _auth(exc, what)
    if status == 404:
        return _not_found(exc, what)
    if status in (304, 412, 416):
        return _changed(exc, what)
    if status in (408, 409, 429) or status >= 500:
        return TransientError(f"{what}: the service answered {label}")
    return ConfigError(f"{what}: the service refused the request ({label})")


def _os_error(exc: BaseException, what: str) -> TaskkitError:
    assert isinstance(exc, OSError)
    text = (exc.strerror or str(exc) or type(exc).__name__).lower()
    if isinstance(exc, FileNotFoundError):
        return InputNotFound(f"{what}: not found", errno=exc.errno)
    if isinstance(exc, PermissionError):
        return PermissionDenied(f"{what}: {text}", errno=exc.errno)
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return TransientError(f"{what}: {text}")
    return IOFailure(f"{what}: {text}", errno=exc.errno)


_AZ = "azure.core.exceptions."
_AIO = "aiohttp.client_exceptions."

#: Upstream exception class (module.qualname) -> how it is translated. Looked up along the MRO,
#: so the most specific entry wins. ``tests/storage/test_stores.py`` fails when an upstream class is
#: missing here, so a new SDK error is a decision, not an accident.
RULES: Mapping[str, Rule] = {
    # azure-core: the SDK's own tree
    f"{_AZ}AzureError": _transient,
    f"{_AZ}ServiceRequestError": _transient,  # the request never reached the service
    f"{_AZ}ServiceRequestTimeoutError": _transient,
    f"{_AZ}ServiceResponseError": _transient,  # the connection broke during the response
    f"{_AZ}ServiceResponseTimeoutError": _transient,
    f"{_AZ}HttpResponseError": _by_status,
    f"{_AZ}DecodeError": _transient,
    f"{_AZ}IncompleteReadError": _transient,
    f"{_AZ}ResourceExistsError": _by_status,
    f"{_AZ}ResourceNotFoundError": _not_found,
    f"{_AZ}ClientAuthenticationError": _auth,
    f"{_AZ}ResourceModifiedError": _changed,
    f"{_AZ}ResourceNotModifiedError": _changed,
    f"{_AZ}TooManyRedirectsError": _config,
    f"{_AZ}ODataV4Error": _by_status,
    f"{_AZ}StreamConsumedError": _bug,
    f"{_AZ}StreamClosedError": _bug,
    f"{_AZ}ResponseNotReadError": _bug,
    # azure-identity (managed identity on a node, or the developer's login)
    "azure.identity._exceptions.CredentialUnavailableError": _auth,
    "azure.identity._exceptions.AuthenticationRequiredError": _auth,
    "azure.storage.blob._shared.response_handlers.PartialBatchErrorException": _by_status,
    "azure.storage.blob._shared.authentication.AzureSigningError": _bad_key,
    # aiohttp, should one escape the SDK's wrapping
    f"{_AIO}ClientError": _transient,
    f"{_AIO}ClientResponseError": _by_status,
    f"{_AIO}ContentTypeError": _transient,
    f"{_AIO}WSServerHandshakeError": _transient,
    f"{_AIO}ClientHttpProxyError": _by_status,
    f"{_AIO}TooManyRedirects": _config,
    f"{_AIO}ClientConnectionError": _transient,
    f"{_AIO}ClientConnectionResetError": _transient,
    f"{_AIO}ClientOSError": _transient,
    f"{_AIO}ClientConnectorError": _transient,
    f"{_AIO}ClientConnectorDNSError": _transient,
    f"{_AIO}ClientProxyConnectionError": _transient,
    f"{_AIO}UnixClientConnectorError": _transient,
    f"{_AIO}ClientSSLError": _config,
    f"{_AIO}ClientConnectorSSLError": _config,
    f"{_AIO}ClientConnectorCertificateError": _config,
    f"{_AIO}ServerConnectionError": _transient,
    f"{_AIO}ServerDisconnectedError": _transient,
    f"{_AIO}ServerTimeoutError": _transient,
    f"{_AIO}ConnectionTimeoutError": _transient,
    f"{_AIO}SocketTimeoutError": _transient,
    f"{_AIO}ServerFingerprintMismatch": _config,
    f"{_AIO}ClientPayloadError": _transient,
    f"{_AIO}UploadAbortedError": _transient,
    f"{_AIO}InvalidURL": _config,
    f"{_AIO}InvalidUrlClientError": _config,
    f"{_AIO}InvalidUrlRedirectClientError": _config,
    f"{_AIO}RedirectClientError": _config,
    f"{_AIO}NonHttpUrlRedirectClientError": _config,
    f"{_AIO}NonHttpUrlClientError": _config,
    # fsspec
    "fsspec.exceptions.FSTimeoutError": _transient,
    "fsspec.exceptions.BlocksizeMismatchError": _bug,
    # the built-ins that stores raise (local files, sockets, timeouts)
    "builtins.OSError": _os_error,
    "asyncio.exceptions.TimeoutError": _transient,  # Python 3.10; an alias of TimeoutError later
    "concurrent.futures._base.TimeoutError": _transient,
}


def translate(exc: BaseException, what: str, *, conditional: bool = False) -> TaskkitError | None:
    """The taskkit error for an upstream ``exc`` met while doing ``what`` (e.g.
    ``"cannot read az://c/x"``); None when ``exc`` is not a storage error. ``conditional``:
    the request was a write or delete conditional on the file's version, so a failed
    precondition is a :class:`Conflict`, whatever class the SDK gave it."""
    if isinstance(exc, TaskkitError):
        return exc
    if conditional and (conflict := _conflict(exc, redact(what))) is not None:
        return conflict
    if isinstance(exc, FileNotFoundError) and exc.__cause__ is not None:
        # fsspec's HTTP filesystem calls any failure to reach a URL "not found"; its cause
        # (a refused connection, a 403, a 503) says what it really was.
        underlying = translate(exc.__cause__, what, conditional=conditional)
        if underlying is not None:
            return underlying
    for cls in type(exc).__mro__:
        rule = RULES.get(f"{cls.__module__}.{cls.__qualname__}")
        if rule is not None:
            return rule(exc, redact(what))
    return None


def guarded(action: Callable[[], _T], what: str, *, conditional: bool = False) -> _T:
    """``action()`` with upstream errors translated (see :func:`translate`)."""
    try:
        return action()
    except Exception as exc:
        failure = translate(exc, what, conditional=conditional)
        if failure is None or failure is exc:
            raise
        raise failure from exc
