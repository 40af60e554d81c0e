"""Keeping credentials out of every line taskkit prints or stores.

Upstream errors quote what they were given: a connection string, a URL carrying a SAS token.
Every message built from such text passes through :func:`redact`, which removes

* the secret fields of connection strings (``AccountKey=``, ``SharedAccessSignature=``),
* the signature of SAS query strings (``sig=``, also URL-encoded),
* the values of the credential environment variables adlfs reads, wherever they appear.

What is left (account names, container names, blob names) is what a user needs to act.
"""

from __future__ import annotations

import os
import re

__all__ = ["SECRET_ENV_VARS", "redact"]

#: Environment variables whose values are credentials.
SECRET_ENV_VARS = (
    "AZURE_STORAGE_CONNECTION_STRING",
    "AZURE_STORAGE_ACCOUNT_KEY",
    "AZURE_STORAGE_SAS_TOKEN",
    "AZURE_CLIENT_SECRET",
)
_HIDDEN = "***"
_PATTERNS = (
    # Connection-string fields: up to the next ';' or the end.
    re.compile(r"(?i)\b(AccountKey|SharedAccessSignature|SharedAccessKey)=[^;\s'\"]*"),
    # SAS signatures in URLs and query strings, also percent-encoded inside another URL.
    re.compile(r"(?i)(?:^|(?<=[?&;/\s'\"])|(?<=%26)|(?<=%3F))(sig)(?:=|%3D)(?:(?!%26)[^&\s'\"])*"),
)


def redact(text: str) -> str:
    """``text`` with every credential taskkit knows of replaced by ``***``."""
    for name in SECRET_ENV_VARS:
        value = os.environ.get(name)
        if value and len(value) >= 8:  # short values would blank out ordinary words
            text = text.replace(value, _HIDDEN)
    for pattern in _PATTERNS:
        text = pattern.sub(lambda m: f"{m.group(1)}={_HIDDEN}", text)
    return text
