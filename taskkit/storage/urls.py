"""What a storage URL a user gives must look like, checked before anything is opened or written.

A URL that fsspec, adlfs, the Azure SDK or urllib cannot parse would otherwise fail deep inside
a request as a bare ``ValueError`` (an internal error, which Batch retries). :func:`url_problem`
says what is wrong with one in words, and callers at the edge (``-i``, ``-o``, ``--state``, and
:meth:`~taskkit.storage.stores.Stores.open` for everything else) refuse it as a usage error:

* ``http(s)://``: a host is named; brackets hold an IPv6 address and nothing else
  (``http://[::1]:8080/x``); the port is a number from 0 to 65535; the host holds no space or
  control character; and the URL is one yarl (fsspec's HTTP filesystem) can build.
* ``az://``, ``abfs://``, ``abfss://``: a container is named; when a store is opened, it is
  also a name Azure takes (:func:`container_problem`).

Other protocols are left to fsspec. Nothing here makes a request; messages never hold a
credential (the URL is shown without its query's token, and redacted).
"""

from __future__ import annotations

import ipaddress
import re
import urllib.parse
from collections.abc import Callable

from taskkit.redaction import public_url, redact

__all__ = [
    "AZURE_PROTOCOLS",
    "bad_url",
    "container_problem",
    "query_holds",
    "query_pads",
    "source_name",
    "url_problem",
]

AZURE_PROTOCOLS = frozenset({"az", "abfs", "abfss"})
_HTTP = frozenset({"http", "https"})
_CONTAINER_RE = re.compile(r"[a-z0-9](?:[a-z0-9]|-(?=[a-z0-9])){2,62}|\$root|\$web|\$logs")
_SPACE_OR_CONTROL = re.compile(r"[\s\x00-\x1f\x7f]")
_HTTP_URL = re.compile(r"(?i)https?://")


def url_problem(url: str) -> str | None:
    """What is wrong with ``url``, as words to follow it (``names no host (...)``), or None
    for a URL that parses (or one of a protocol this module does not check)."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return None
    protocol = scheme.lower()
    if protocol in _HTTP:
        return _http_problem(url)
    if protocol in AZURE_PROTOCOLS and not _container(rest):
        return f"names no container ({protocol}://CONTAINER/PATH)"
    return None


def container_problem(url: str) -> str | None:
    """What is wrong with the container name of the Azure URL ``url`` (one Azure would
    refuse), or None. Checked when a store is opened, not when a URL is read: a name is
    not a syntax."""
    scheme, sep, rest = url.partition("://")
    container = _container(rest)
    if sep and scheme.lower() in AZURE_PROTOCOLS and not container.strip():
        return f"names no container ({scheme}://CONTAINER/PATH)"
    if not (sep and scheme.lower() in AZURE_PROTOCOLS and container):
        return None
    if ":" in container:  # 'user:password@account': shown without its password
        container = container.split(":", 1)[0] + ":***"
    if _CONTAINER_RE.fullmatch(container):
        return None
    return (
        f"has {redact(container)!r}, which is not a valid container name (3-63 lowercase "
        "letters, digits and single hyphens, starting and ending with a letter or digit)"
    )


def bad_url(url: str, problem: Callable[[str], str | None] = url_problem) -> str | None:
    """``'URL' <what is wrong with it>`` (``problem``: :func:`url_problem`), the URL shown
    without a credential; None for a URL without that problem."""
    why = problem(url)
    return None if why is None else f"{redact(public_url(url))!r} {why}"


def _container(rest: str) -> str:
    return rest.split("/", 1)[0].split("@", 1)[0]


def _http_problem(url: str) -> str | None:
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:  # urllib says only "Invalid IPv6 URL"
        return (
            "has an invalid host: an IPv6 address goes between '[' and ']', as in "
            "http://[::1]:8080/PATH"
        )
    hostinfo = parts.netloc.rpartition("@")[2]
    if hostinfo.startswith("["):
        address, _, after = hostinfo[1:].partition("]")
        if after and not after.startswith(":"):
            return f"has text after the ']' of its host {hostinfo!r} (http://[ADDRESS]:PORT/PATH)"
        try:
            ipaddress.IPv6Address(address)
        except ValueError:
            return f"has a host '[{address}]' that is not an IPv6 address"
    else:
        after = hostinfo[hostinfo.find(":") :] if ":" in hostinfo else ""
    if not parts.hostname:
        return "names no host (http://HOST/PATH)"
    if _SPACE_OR_CONTROL.search(parts.hostname):
        return "has a space or a control character in its host"
    port = after[1:]
    if port and not (port.isascii() and port.isdigit() and int(port) <= 65535):
        return f"has a port {port!r} that is not a number from 0 to 65535"
    try:
        import yarl
    except ImportError:  # no aiohttp, so no HTTP filesystem: fsspec says so when it is opened
        return None
    try:
        yarl.URL(url)
    except (ValueError, TypeError) as exc:
        return f"is not a valid URL ({redact(str(exc))})"
    return None


def source_name(url: str) -> str:
    """The name of the file a source URL (or key) names: the last segment of its path. An
    http(s) URL's query string and fragment are not part of it (a SAS token is no file name)."""
    path = url
    if _HTTP_URL.match(url):
        try:
            path = urllib.parse.urlsplit(url).path
        except ValueError:  # a listed name no URL parser takes: its text is all there is
            path = re.split(r"[?#]", url.split("://", 1)[1], maxsplit=1)[0]
    return path.rstrip("/").rsplit("/", 1)[-1]


def query_pads(source: str) -> bool:
    """Whether an ``=`` right after the http(s) URL ``source`` ends the base64 of its last
    query value (``...&sig=dESc...iMg`` + ``=``: a signature written unencoded ends in one
    or two): then that ``=`` is the URL's own, not the one between ``SRC=DEST``."""
    if not _HTTP_URL.match(source) or "?" not in source:
        return False
    _, eq, value = re.split(r"[?&]", source)[-1].partition("=")
    value = urllib.parse.unquote(value)
    return bool(eq and re.fullmatch(r"[A-Za-z0-9+/]+=?", value)) and len(value) % 4 != 0


def query_holds(source: str) -> bool:
    """Whether the http(s) URL ``source`` ends inside its query string, at a parameter's name
    (``https://h/c/b?sv=1&sig``): then an ``=`` that followed it was the URL's own, not the
    one between ``SRC=DEST``."""
    if not _HTTP_URL.match(source) or "?" not in source:
        return False
    return "=" not in re.split(r"[?&]", source)[-1]
