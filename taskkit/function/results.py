"""STAND-IN (replaced by the args helper's module at merge)."""

from __future__ import annotations

import json
import pickle
from typing import Literal

from taskkit.exceptions import MisuseError

__all__ = ["ResultError", "ResultFormat", "decode_result", "encode_result"]

ResultFormat = Literal["json", "pickle"]


class ResultError(MisuseError):
    pass


def encode_result(value: object, how: ResultFormat, *, name: str) -> bytes:
    if how == "pickle":
        return pickle.dumps(value, protocol=5)
    data = json.dumps(value).encode()
    if json.loads(data) != value:
        raise ResultError(f"result of {name}: does not survive JSON")
    return data


def decode_result(data: bytes, how: ResultFormat) -> object:
    return pickle.loads(data) if how == "pickle" else json.loads(data)
