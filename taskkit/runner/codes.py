"""Sets of exit codes, as users write them (``2,5-9``) and as Azure Batch's exit conditions
want them (single codes and ranges).

Invariant: a :class:`CodeSet` holds only codes 0-255; :meth:`CodeSet.parse` refuses anything
else with one line naming what was being read.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Union

from taskkit.exceptions import ConfigError, MisuseError

__all__ = ["CodeSet", "CodesLike"]

_PART = re.compile(r"([0-9]{1,9})(?:\s*-\s*([0-9]{1,9}))?")


@dataclass(frozen=True, repr=False)
class CodeSet:
    """A frozen set of exit codes 0-255, written like ``2,5-9``.

    :meth:`parse` reads what users and spec files write and raises :class:`ConfigError`; the
    constructor takes a frozenset from code and raises :class:`MisuseError`.
    """

    codes: frozenset[int] = frozenset()

    def __post_init__(self) -> None:
        for code in self.codes:
            if isinstance(code, bool) or not isinstance(code, int) or not 0 <= code <= 255:
                raise MisuseError(f"a CodeSet holds exit codes 0-255, not {code!r}")

    @classmethod
    def parse(cls, codes: CodesLike, *, what: str = "exit codes") -> CodeSet:
        """Read ``"2,5-9"`` (``""`` is empty), a code, a list of codes or a CodeSet.

        Anything else raises :class:`ConfigError` with one line naming ``what`` and the bad part.
        """
        if isinstance(codes, CodeSet):
            return codes
        if isinstance(codes, str):
            return cls(frozenset(_parse_text(codes, what)))
        if isinstance(codes, Iterable) and not isinstance(codes, (bytes, bytearray)):
            return cls(frozenset(_checked(item, what) for item in codes))
        return cls(frozenset([_checked(codes, what)]))

    def __contains__(self, code: object) -> bool:
        return not isinstance(code, bool) and code in self.codes

    def __iter__(self) -> Iterator[int]:
        return iter(sorted(self.codes))

    def __len__(self) -> int:
        return len(self.codes)

    def __or__(self, other: CodeSet) -> CodeSet:
        return CodeSet(self.codes | other.codes) if isinstance(other, CodeSet) else NotImplemented

    def __and__(self, other: CodeSet) -> CodeSet:
        return CodeSet(self.codes & other.codes) if isinstance(other, CodeSet) else NotImplemented

    def ranges(self) -> tuple[tuple[int, int], ...]:
        """Merged inclusive ranges, sorted, as Azure Batch ``exitCodeRanges`` want them."""
        spans: list[tuple[int, int]] = []
        for code in sorted(self.codes):
            if spans and spans[-1][1] == code - 1:
                spans[-1] = (spans[-1][0], code)
            else:
                spans.append((code, code))
        return tuple(spans)

    def __str__(self) -> str:
        return ",".join(str(low) if low == high else f"{low}-{high}" for low, high in self.ranges())

    def __repr__(self) -> str:
        return f"CodeSet({str(self)!r})"


CodesLike = Union[str, int, Iterable[int], CodeSet]  # noqa: UP007 (a runtime alias, Python 3.10)


def _checked(code: object, what: str) -> int:
    if isinstance(code, bool) or not isinstance(code, int):
        raise ConfigError(f"{what}: {code!r} is not an exit code (a whole number 0-255)")
    if not 0 <= code <= 255:
        raise ConfigError(f"{what}: {code} is out of range 0-255")
    return code


def _parse_text(text: str, what: str) -> set[int]:
    codes: set[int] = set()
    if not text.strip():
        return codes
    for part in (item.strip() for item in text.split(",")):
        match = _PART.fullmatch(part)
        if not part:
            raise ConfigError(f"{what}: an empty item in {text!r}")
        if match is None:
            raise ConfigError(f"{what}: {part!r} is not an exit code 0-255 or a range like 5-9")
        low = int(match[1])
        high = low if match[2] is None else int(match[2])
        if low > high:
            raise ConfigError(f"{what}: {part!r} runs backwards; write {high}-{low}")
        if high > 255:
            raise ConfigError(f"{what}: {part!r} is out of range 0-255")
        codes.update(range(low, high + 1))
    return codes
