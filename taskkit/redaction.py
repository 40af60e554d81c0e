"""Keeping credentials out of every line taskkit prints or stores.

A URL carries a credential in two places: its query string (a SAS token: ``sig`` and the
parameters signed with it; S3 and GCS signed URLs) and its userinfo (``scheme://user:password@``:
a colon makes it a password; ``abfs://container@account...`` names a container, no credential).
Three tools, for three kinds of text:

* :func:`public_url` is for a URL taskkit keeps or keys on (a source's identity, the work's
  fingerprint, the stat-cache's and node cache's records): the token is *removed* (the
  parameters that select content, ``snapshot=``, ``versionid=``, are kept) and so is the
  password (``user@`` is kept), so the same blob read with a rotated token or password has the
  same identity. :func:`without_credentials` masks every URL inside a text (a command line's
  argument) instead, then :func:`redact`.
* :func:`shown_url` is for a URL taskkit prints: the token removed (it is shown once, without
  it), the password masked (``user:***@``: a password was given), the rest :func:`redact`-ed.
* :func:`redact` is for any text on its way out (a message, a log line, an upstream error that
  quotes what it was given): it *hides* ``***`` in place of

  - the secret fields of connection strings (``AccountKey=``, ``SharedAccessSignature=``),
  - the signature of signed query strings (``sig=`` wherever it starts a word, also
    URL-encoded, and the signatures of S3 and GCS signed URLs),
  - the password of a URL's userinfo (``scheme://user:***@``),
  - a bare Azure account key (88 base64 characters ending in ``==``, also URL-encoded:
    ``%2B``, ``%2F``, ``%3D%3D``), whoever's it is,
  - the values of the credential environment variables adlfs reads, wherever they appear.

What is left (account names, container names, blob names, user names) is what a user needs to
act. Invariant: all are idempotent, and text holding no credential comes back unchanged.
Speed: each pattern runs only on text holding one of its cheap words, and account keys are
found from their padding, so plain log text passes at memory speed.
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
    "shown_url",
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
    "AZURE_BATCH_ACCESS_KEY",
    "AZURE_STORAGE_KEY",
    "AZURE_STORAGE_ACCESS_KEY",
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
#: (what must be in the lowercased text for the pattern to match, the pattern, what replaces
#: a match): the cheap test first, so a log line without any of these words costs no regular
#: expression.
_PATTERNS = (
    # Connection-string fields: up to the next ';' or the end.
    (
        ("accountkey=", "sharedaccess"),
        re.compile(r"(?i)\b(AccountKey|SharedAccessSignature|SharedAccessKey)=[^;\s'\"]*"),
        rf"\1={_HIDDEN}",
    ),
    # Signatures in URLs, query strings and settings (``X=sig=...``): the name is not the
    # end of a longer one (``assig=``, ``my-sig=``); a percent-encoded character before it
    # ('%26' for '&', '%3F' for '?') is a separator of a URL quoted inside another one.
    (
        ("sig=", "sig%3d", "signature", "security-token"),
        re.compile(
            r"(?i)(?:(?<![\w-])|(?<=%[0-9a-f]{2}))"
            r"(sig|x-amz-signature|x-goog-signature|x-amz-security-token)"
            r"(?:=|%3D)(?:(?!%26)[\w+/=%.~*-])*"
        ),
        rf"\1={_HIDDEN}",
    ),
    # A URL's userinfo password: ``scheme://user:password@``. The user has no ':' (the first
    # one ends it); the password runs to the last '@' before the path, as a URL parser reads
    # it. ``abfs://container@account...:443/`` has no '@' after its ':': nothing is hidden.
    # The word is '@' alone: one character is found at memory speed, '://' is not.
    (
        ("@",),
        re.compile(r"://([^\s/?#:'\"<>]*):[^\s/?#'\"<>]+@"),
        rf"://\1:{_HIDDEN}@",
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
    for words, pattern, hidden in _PATTERNS:
        for word in words:
            if word in lowered:
                text = pattern.sub(hidden, text)
                break
    return _without_account_keys(text)


def _without_account_keys(text: str) -> str:
    """``text`` with each account key hidden: exactly 86 base64 characters and '==', also
    URL-encoded ('%2B', '%2F' in the body, '%3D%3D' for the padding). Found from its padding
    (a regular expression would try every character of every base64 run), so logs full of
    base64 still pass at memory speed."""
    encoded = "%" in text
    paddings = []
    end = text.find("==")
    while end != -1:
        paddings.append((end, end + 2))
        end = text.find("==", end + 2)
    if encoded:
        paddings = sorted([*paddings, *(m.span() for m in _ENCODED_PADDING.finditer(text))])
    pieces, kept = [], 0
    for end, after in paddings:
        start = _key_start(text, end, encoded)
        if start is not None and start >= kept and not _continues(text, after):
            pieces += [text[kept:start], _HIDDEN]
            kept = after
    return "".join([*pieces, text[kept:]]) if pieces else text


_ENCODED_PADDING = re.compile(r"%3[dD]%3[dD]")
_ENCODED_BASE64 = ("%2B", "%2F")  # '+' and '/' in a URL's query
_KEY_LENGTH = 86


def _escaped(text: str, end: int) -> bool:
    """Whether an encoded base64 character ('%2B', '%2F') ends at ``end``."""
    return end >= 3 and text[end - 3 : end].upper() in _ENCODED_BASE64


def _key_start(text: str, end: int, encoded: bool) -> int | None:
    """Where an account key's body that ends at ``end`` starts: 86 base64 characters, each
    maybe URL-encoded (only looked for when ``text`` holds a '%'), not the end of a longer
    base64 run; ``None`` when there is none."""
    start = end - _KEY_LENGTH
    plain = start >= 0 and _KEY_BODY.fullmatch(text, start, end)  # the common case, in C
    if plain and not _base64_before(text, start):
        return start
    if not encoded or "%" not in text[max(0, start - 2 * _KEY_LENGTH) : end]:
        return None
    start = end
    for _ in range(_KEY_LENGTH):
        if _escaped(text, start):
            start -= 3
        elif start > 0 and text[start - 1] in _BASE64:
            start -= 1
        else:
            return None
    return None if _base64_before(text, start) else start


def _base64_before(text: str, start: int) -> bool:
    """Whether a base64 character, maybe encoded, ends at ``start``."""
    if start >= 3 and text[start - 3] == "%":  # an escape: base64 only if '+' or '/'
        return _escaped(text, start)
    return start > 0 and text[start - 1] in _BASE64


def _continues(text: str, end: int) -> bool:
    """Whether base64 or padding goes on at ``end``: then what ended there is no key."""
    after = text[end : end + 1]
    return after in _AFTER_KEY or (
        after == "%" and text[end : end + 3].upper() in ("%3D", *_ENCODED_BASE64)
    )


def _parameter(item: str) -> str:
    return urllib.parse.unquote(item.split("=", 1)[0]).strip().lower()


def _signing(name: str) -> bool:
    return name in _SAS_PARAMETERS or name.startswith(_SIGNED_PREFIXES)


def public_url(url: str) -> str:
    """``url`` without its credentials, for what taskkit keeps or keys on: when the query
    carries a signature (a SAS token, an S3 or GCS signed URL), the parameters of that
    signature are removed and the others (``snapshot=``, ``versionid=``) kept; a password in
    the userinfo is removed, the user kept (``scheme://user@host``). Any other text (a local
    path, a URL without a credential) comes back unchanged."""
    return _without_password(_without_token(url))


def shown_url(url: str) -> str:
    """``url`` as taskkit prints it: without the token of its query string (shown once,
    without it), its password masked (``scheme://user:***@host``), and any other credential
    hidden (:func:`redact`)."""
    return redact(_without_token(url))


def _without_token(url: str) -> str:
    """``url`` without the parameters of the signature its query string carries, if any."""
    base, mark, rest = url.partition("?")
    if not mark or "://" not in base:
        return url
    query, hash_mark, fragment = rest.partition("#")
    items = query.split("&")
    if not any("=" in item and _parameter(item) in _SIGNATURES for item in items):
        return url
    kept = [item for item in items if item and not _signing(_parameter(item))]
    return base + ("?" + "&".join(kept) if kept else "") + hash_mark + fragment


#: A URL's scheme and authority (``user:password@host:port``): up to the path, query or
#: fragment.
_AUTHORITY = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://)([^/?#]*)")


def _without_password(url: str) -> str:
    """``url`` without the password of its userinfo: the user is kept (an empty one goes with
    its '@'), and so is a userinfo without ':' (``abfs://container@account...`` names a
    container)."""
    found = _AUTHORITY.match(url)
    if found is None:
        return url
    userinfo, at, host = found.group(2).rpartition("@")
    user, colon, _ = userinfo.partition(":")
    if not at or not colon:
        return url
    return f"{found.group(1)}{user}{'@' if user else ''}{host}{url[found.end() :]}"


#: Why a storage URL other than http(s) is refused with a token in its query string.
SIGNED_QUERY = (
    "holds a credential in its query string (a SAS token): give the token in "
    "AZURE_STORAGE_SAS_TOKEN, not in the URL"
)


def signed(url: str) -> bool:
    """Whether ``url``'s query string carries a signature (a SAS token, a signed URL)."""
    return _without_token(url) != url


def without_credentials(text: str) -> str:
    """``text`` with the value of every signing parameter of a signed URL in it replaced by
    ``***`` (:func:`masked_url`), then :func:`redact`-ed (a URL's password becomes
    ``user:***@``): what may be stored of a command line's argument, for instance. Nothing
    else of the text is left out, so two texts that differ elsewhere still differ
    (``...?sig=x;touch f`` and ``...?sig=x;rm f``), while one whose token or password was
    rotated reads the same."""
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
