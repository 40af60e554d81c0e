"""Keeping credentials out of every line taskkit prints or stores.

Two tools, for two kinds of text:

* :func:`public_url` is for a URL taskkit keeps or keys on (a source's identity, the work's
  fingerprint, a file's URL as shown): the credential its query string carries (a SAS token:
  ``sig`` and the parameters signed with it) is *removed*, so the same blob read with a rotated
  token has the same identity. :func:`without_credentials` does the same to every URL inside a
  text (a command line's argument), then :func:`redact`.
* :func:`redact` is for any text on its way out (a message, a log line, an upstream error that
  quotes what it was given): it *hides* ``***`` in place of

  - the secret fields of connection strings (``AccountKey=``, ``SharedAccessSignature=``),
  - the signature of signed query strings (``sig=``, also URL-encoded, and the signatures of
    S3 and GCS signed URLs),
  - a bare Azure account key (88 base64 characters ending in ``==``), whoever's it is,
  - the values of the credential environment variables adlfs reads, wherever they appear.

What is left (account names, container names, blob names) is what a user needs to act.
Invariant: both are idempotent, and text holding no credential comes back unchanged.
"""

from __future__ import annotations

import os
import re
import urllib.parse

__all__ = [
    "SECRET_ENV_VARS",
    "SIGNED_QUERY",
    "masked_url",
    "public_url",
    "redact",
    "signed",
    "without_credentials",
]

#: Environment variables whose values are credentials.
SECRET_ENV_VARS = (
    "AZURE_STORAGE_CONNECTION_STRING",
    "AZURE_STORAGE_ACCOUNT_KEY",
    "AZURE_STORAGE_SAS_TOKEN",
    "AZURE_CLIENT_SECRET",
    "AZURE_STORAGE_CLIENT_SECRET",
    "AZ_BATCH_AUTHENTICATION_TOKEN",
)
#: The secret fields inside a connection string: their values are hidden on their own too
#: (a command may print the bare account key it was given).
_SECRET_FIELDS = re.compile(r"(?i)\b(?:AccountKey|SharedAccessSignature|SharedAccessKey)=([^;]+)")
_HIDDEN = "***"
#: Query parameters that carry a signature: a query string holding one is a credential.
_SIGNATURES = frozenset({"sig", "x-amz-signature", "x-goog-signature"})
#: The parameters of an Azure SAS (service, account and user delegation): with the signature
#: gone they are of no use, and they change whenever the token is rotated.
_SAS_PARAMETERS = frozenset(
    {
        "sv", "ss", "srt", "sp", "se", "st", "spr", "sip", "si", "sr", "sig", "sdd", "ses",
        "skoid", "sktid", "skt", "ske", "sks", "skv", "saoid", "suoid", "scid", "sduoid",
        "rscc", "rscd", "rsce", "rscl", "rsct",
    }
)  # fmt: skip
#: S3 and GCS signed URLs: every parameter of their signature starts so.
_SIGNED_PREFIXES = ("x-amz-", "x-goog-")
#: (what must be in the lowercased text for the pattern to match, the pattern): the cheap
#: test first, so a log line without any of these words costs no regular expression.
_PATTERNS = (
    # Connection-string fields: up to the next ';' or the end.
    (
        ("accountkey=", "sharedaccess"),
        re.compile(r"(?i)\b(AccountKey|SharedAccessSignature|SharedAccessKey)=[^;\s'\"]*"),
    ),
    # Signatures in URLs and query strings, also percent-encoded inside another URL.
    (
        ("sig=", "sig%3d", "signature", "security-token"),
        re.compile(
            r"(?i)(?:^|(?<=[?&;/\s'\"])|(?<=%26)|(?<=%3F))"
            r"(sig|x-amz-signature|x-goog-signature|x-amz-security-token)"
            r"(?:=|%3D)(?:(?!%26)[\w+/=%.~*-])*"
        ),
    ),
)
#: A bare Azure account key: 64 random bytes in base64 (86 characters and '=='), alone.
_KEY_BODY = re.compile(r"[A-Za-z0-9+/]{86}")
_BASE64 = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")
_AFTER_KEY = _BASE64 | {"="}  # what would make the '==' part of something longer
#: A URL inside other text: up to whitespace or a quote.
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>]+")


def _secret_values() -> list[str]:
    """The credentials in the environment, longest first (a key inside a connection string
    is hidden with the string, not left behind by it)."""
    found = []
    for name in SECRET_ENV_VARS:
        value = os.environ.get(name)
        if value:
            found.append(value)
            found.extend(m.group(1).strip() for m in _SECRET_FIELDS.finditer(value))
    # Short values would blank out ordinary words.
    return sorted({v for v in found if len(v) >= 8}, key=len, reverse=True)


def redact(text: str) -> str:
    """``text`` with every credential taskkit knows of replaced by ``***``."""
    for value in _secret_values():
        text = text.replace(value, _HIDDEN)
    lowered = text.lower()
    for words, pattern in _PATTERNS:
        if any(word in lowered for word in words):
            text = pattern.sub(lambda m: f"{m.group(1)}={_HIDDEN}", text)
    return _without_account_keys(text)


def _without_account_keys(text: str) -> str:
    """``text`` with each run of exactly 86 base64 characters and '==' hidden. Found from its
    '==' (a regular expression would try every character of every base64 run), so logs full
    of base64 still pass at memory speed."""
    pieces, kept = [], 0
    end = text.find("==")
    while end != -1:
        start = end - 86
        if (
            start >= 0
            and _KEY_BODY.fullmatch(text, start, end)
            and (start == 0 or text[start - 1] not in _BASE64)
            and text[end + 2 : end + 3] not in _AFTER_KEY
        ):
            pieces += [text[kept:start], _HIDDEN]
            kept = end + 2
        end = text.find("==", end + 2)
    return "".join([*pieces, text[kept:]]) if pieces else text


def _parameter(item: str) -> str:
    return urllib.parse.unquote(item.split("=", 1)[0]).strip().lower()


def _signing(name: str) -> bool:
    return name in _SAS_PARAMETERS or name.startswith(_SIGNED_PREFIXES)


def public_url(url: str) -> str:
    """``url`` without the credential of its query string: when the query carries a signature
    (a SAS token, an S3 or GCS signed URL), the parameters of that signature are removed and
    the others (``snapshot=``, ``versionid=``) kept. Any other text (a local path, a URL
    without a signature) comes back unchanged."""
    base, mark, rest = url.partition("?")
    if not mark or "://" not in base:
        return url
    query, hash_mark, fragment = rest.partition("#")
    items = query.split("&")
    if not any("=" in item and _parameter(item) in _SIGNATURES for item in items):
        return url
    kept = [item for item in items if item and not _signing(_parameter(item))]
    return base + ("?" + "&".join(kept) if kept else "") + hash_mark + fragment


#: Why a storage URL other than http(s) is refused with a token in its query string.
SIGNED_QUERY = (
    "holds a credential in its query string (a SAS token): give the token in "
    "AZURE_STORAGE_SAS_TOKEN, not in the URL"
)


def signed(url: str) -> bool:
    """Whether ``url``'s query string carries a signature (a SAS token, a signed URL)."""
    return public_url(url) != url


def without_credentials(text: str) -> str:
    """``text`` with the value of every signing parameter of a signed URL in it replaced by
    ``***`` (:func:`masked_url`), then :func:`redact`-ed: what may be stored of a command
    line's argument, for instance. Nothing else of the text is left out, so two texts that
    differ elsewhere still differ (``...?sig=x;touch f`` and ``...?sig=x;rm f``), while one
    whose token was rotated reads the same."""
    return redact(_URL.sub(lambda m: masked_url(m.group(0)), text))


#: One ``name=value`` of a query inside other text: a value ends where a query's would, and
#: also at what a shell or a program would read as the end of the word (``;``, ``|``, ``)``).
_QUERY_ITEM = re.compile(r"(?<=[?&])([^=&#\s'\"<>;|`$()]+)=([^&#\s'\"<>;|`$()]*)")


def masked_url(url: str) -> str:
    """``url`` with the value of each parameter of its signature replaced by ``***`` when its
    query carries a signature; any other character kept where it was."""
    base, mark, rest = url.partition("?")
    if not mark or "://" not in base:
        return url
    items = re.split(r"[&#\s;|]", rest)
    if not any("=" in item and _parameter(item) in _SIGNATURES for item in items):
        return url

    def mask(match: re.Match[str]) -> str:
        if _signing(_parameter(match.group(1))):
            return f"{match.group(1)}={_HIDDEN}"
        return match.group(0)

    return base + _QUERY_ITEM.sub(mask, mark + rest)
