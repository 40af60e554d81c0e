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
    "AZ_BATCH_AUTHENTICATION_TOKEN",
)
#: The secret fields inside a connection string: their values are hidden on their own too
#: (a command may print the bare account key it was given).
_SECRET_FIELDS = re.compile(r"(?i)\b(?:AccountKey|SharedAccessSignature|SharedAccessKey)=([^;]+)")
_HIDDEN = "***"
_PATTERNS = (
    # Connection-string fields: up to the next ';' or the end.
    re.compile(r"(?i)\b(AccountKey|SharedAccessSignature|SharedAccessKey)=[^;\s'\"]*"),
    # SAS signatures in URLs and query strings, also percent-encoded inside another URL.
    re.compile(r"(?i)(?:^|(?<=[?&;/\s'\"])|(?<=%26)|(?<=%3F))(sig)(?:=|%3D)(?:(?!%26)[^&\s'\"])*"),
)


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
    for pattern in _PATTERNS:
        text = pattern.sub(lambda m: f"{m.group(1)}={_HIDDEN}", text)
    return text
