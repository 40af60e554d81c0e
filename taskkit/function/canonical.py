"""The canonical encoding of a value: the bytes a task's key is made of.

The same value gives the same bytes, and so the same XXH3-128 digest, in every process, on every
Python version and platform: nothing here uses ``hash()``, ``pickle``, ``repr`` of a float or the
order a set happens to iterate in. The encoding is a stream of type-tagged, length-prefixed
pieces (one tag byte, then the payload; lengths and counts are unsigned 64-bit little-endian),
started by :data:`SCHEMA`. Changing any of it changes every key: bump :data:`SCHEMA` then.

What each kind of value contributes (two values of different types never share an encoding, so
``1``, ``1.0`` and ``True`` differ, as do a list and a tuple of the same items):

* ``None``, ``bool``; ``int`` as its minimal two's complement bytes; ``float`` as its IEEE 754
  bits, with every NaN one NaN (its payload is not observable from Python) and ``-0.0`` apart from
  ``0.0`` (``1 / x`` and ``math.copysign`` tell them apart); ``complex`` as two floats.
* ``str`` as UTF-8 (lone surrogates kept); ``bytes``, ``bytearray`` (a tag of its own: the type
  is observable) and ``memoryview`` (format and shape too) by their bytes, fed to the hasher
  without a copy, so a large buffer hashes at XXH3's speed.
* ``list``, ``tuple`` and ``range`` in order; ``dict``, ``set`` and ``frozenset`` order-free: the
  digests of the items (of key and value, for a dict) are sorted. An ``OrderedDict`` keeps its
  order (its equality does too).
* ``Enum`` members, named tuples, dataclasses and pydantic models by their class's module and
  qualified name and their values (pydantic's through ``model_dump(mode="python")``), field
  names included. A class is named by the module it was defined in: one defined in a script
  run as ``__main__`` keys apart from the same class imported from that file.
* ``datetime`` (ISO text, ``fold`` and the zone: a ``zoneinfo`` key, else the zone's class and
  name), ``date``, ``time``, ``timedelta``, ``Decimal`` (its text: ``1.0`` and ``1.00`` differ),
  ``UUID``.
* A concrete ``pathlib.Path`` by the **content** it names, through the stat-cache, never by its
  name (see :mod:`taskkit.function.pathcontent`). A ``PurePath`` that is no concrete path is a
  name.
* numpy arrays and scalars (dtype, shape, bytes; an array of objects by its items) and pandas
  ``Series``, ``DataFrame`` and ``Index`` objects (labels, each column's dtype and values,
  ``NA`` and ``NaT`` as themselves), only when numpy or pandas is already imported: this module
  never imports them.
* A subclass of a built-in type whose instances carry no state of their own (no instance
  attributes, no slots), by its class name and the built-in value. Anything else raises
  :class:`Unkeyable`.

A container met again inside itself raises :class:`Unkeyable` (a cycle); a value shared by two
places is encoded at each.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime
import decimal
import enum
import math
import os
import pathlib
import struct
import sys
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import xxhash

from taskkit.content.digest import Digest
from taskkit.content.statcache import StatCache
from taskkit.function.pathcontent import NoContent, PathContent, path_content

__all__ = ["SCHEMA", "Encoder", "Unkeyable", "class_name", "digest_of"]

#: Starts every encoding: the version of the encoding. A new one changes every key.
SCHEMA = b"taskkit-value-v1\x00"

#: Buffers at least this large go to the hasher as they are; smaller pieces are gathered first
#: (one ``update`` per piece would cost more than the copy).
_DIRECT = 64 * 1024
_U64 = struct.Struct("<Q")
_F64 = struct.Struct("<d")
_NAN = _F64.pack(math.nan)  # positive quiet NaN, the only one the encoding knows
_DIGEST_SIZE = 16


class Unkeyable(Exception):
    """A value that has no canonical encoding: ``what`` says why, ``where`` where inside the
    argument it was (``[2]['conn']``, empty for the argument itself)."""

    def __init__(self, what: str, kind: str, where: str = "") -> None:
        super().__init__(what)
        self.what = what
        self.kind = kind
        self.where = where

    def inside(self, step: str) -> Unkeyable:
        self.where = step + self.where
        return self


def class_name(cls: type) -> str:
    """``module.QualName`` of a class: the part of the key that names a type."""
    return f"{cls.__module__}.{cls.__qualname__}"


def _int_bytes(value: int) -> bytes:
    return value.to_bytes((value.bit_length() + 8) // 8, "little", signed=True)


class Encoder:
    """Streams the canonical encoding of values into one XXH3-128 hasher.

    ``cache`` is the stat-cache that file contents are looked up in and recorded to. After
    :meth:`encode`, ``paths`` maps each ``pathlib.Path`` met (by ``id``) to what it named.
    """

    def __init__(self, *, cache: StatCache | None = None) -> None:
        self.cache = cache
        self.paths: dict[int, PathContent] = {}
        self._buf = bytearray(SCHEMA)
        self._hasher: Any = None  # made when the first large buffer arrives
        self._open: set[int] = set()  # ids of the containers being encoded (cycle guard)

    def digest(self) -> Digest:
        """The digest of everything encoded so far (call once, at the end)."""
        return Digest(self._finish())

    def encode(self, value: object) -> None:
        try:
            self._value(value)
        except RecursionError:
            raise Unkeyable("it is nested too deeply to key", type(value).__name__) from None

    # -- the byte stream --------------------------------------------------------------------

    def _finish(self) -> bytes:
        if self._hasher is None:
            return xxhash.xxh3_128_digest(self._buf)
        self._hasher.update(self._buf)
        digest: bytes = self._hasher.digest()
        return digest

    def _blob(self, tag: bytes, data: bytes | bytearray | memoryview) -> None:
        """``tag``, the size in bytes, the bytes."""
        self._buf += tag
        self._buf += _U64.pack(data.nbytes if isinstance(data, memoryview) else len(data))
        self._piece(data)

    def _piece(self, data: bytes | bytearray | memoryview) -> None:
        """Bytes of the stream: a large buffer goes to the hasher as it is, with no copy."""
        if (data.nbytes if isinstance(data, memoryview) else len(data)) < _DIRECT:
            self._buf += data
            return
        if self._hasher is None:
            self._hasher = xxhash.xxh3_128()
        self._hasher.update(self._buf)
        self._buf.clear()
        self._hasher.update(data)

    def _text(self, tag: bytes, text: str) -> None:
        self._blob(tag, text.encode("utf-8", "surrogatepass"))

    def _count(self, tag: bytes, n: int) -> None:
        self._buf += tag
        self._buf += _U64.pack(n)

    def _sub_digest(self, value: object) -> bytes:
        """The 16-byte digest of ``value``'s encoding alone (an item of an order-free
        container); the cycle guard and the paths met are shared."""
        saved = self._buf, self._hasher
        self._buf, self._hasher = bytearray(), None
        try:
            self._value(value)
            return self._finish()
        finally:
            self._buf, self._hasher = saved

    # -- values -----------------------------------------------------------------------------

    def _value(self, value: object) -> None:
        handler = _EXACT.get(type(value))
        if handler is not None:
            handler(self, value)
        else:
            self._other(value)

    def _none(self, value: None) -> None:
        self._buf += b"N"

    def _bool(self, value: bool) -> None:
        self._buf += b"T" if value else b"F"

    def _int(self, value: int) -> None:
        self._blob(b"i", _int_bytes(value))

    def _float(self, value: float) -> None:
        self._buf += b"f"
        self._buf += _NAN if math.isnan(value) else _F64.pack(value)

    def _complex(self, value: complex) -> None:
        self._buf += b"j"
        for part in (value.real, value.imag):
            self._buf += _NAN if math.isnan(part) else _F64.pack(part)

    def _str(self, value: str) -> None:
        self._text(b"s", value)

    def _bytes(self, value: bytes) -> None:
        self._blob(b"y", value)

    def _bytearray(self, value: bytearray) -> None:
        self._blob(b"Y", value)

    def _memoryview(self, value: memoryview) -> None:
        self._text(b"m", value.format)
        self._sequence(b"m", value.shape or ())
        self._blob(b"m", value.cast("B") if value.c_contiguous else value.tobytes())

    def _list(self, value: list[object]) -> None:
        self._sequence(b"l", value)

    def _tuple(self, value: tuple[object, ...]) -> None:
        self._sequence(b"t", value)

    def _range(self, value: range) -> None:
        self._buf += b"r"
        for part in (value.start, value.stop, value.step):
            self._int(part)

    def _sequence(self, tag: bytes, items: Any) -> None:
        with self._guard(items):
            self._count(tag, len(items))
            for i, item in enumerate(items):
                try:
                    self._value(item)
                except Unkeyable as exc:
                    raise exc.inside(f"[{i}]") from exc.__cause__

    def _dict(self, value: dict[object, object]) -> None:
        self._mapping(b"d", value)

    def _mapping(self, tag: bytes, value: Any) -> None:
        with self._guard(value):
            pairs = []
            for key, item in value.items():
                try:
                    key_digest = self._sub_digest(key)
                except Unkeyable as exc:
                    raise exc.inside(".keys()") from exc.__cause__
                try:
                    pairs.append(key_digest + self._sub_digest(item))
                except Unkeyable as exc:
                    raise exc.inside(f"[{_short(key)}]") from exc.__cause__
            pairs.sort()
            self._count(tag, len(pairs))
            self._buf += b"".join(pairs)

    def _ordered_dict(self, value: collections.OrderedDict[object, object]) -> None:
        with self._guard(value):
            self._count(b"o", len(value))
            for key, item in value.items():
                try:
                    self._value(key)
                except Unkeyable as exc:
                    raise exc.inside(".keys()") from exc.__cause__
                try:
                    self._value(item)
                except Unkeyable as exc:
                    raise exc.inside(f"[{_short(key)}]") from exc.__cause__

    def _set(self, value: set[object]) -> None:
        self._unordered(b"S", value)

    def _frozenset(self, value: frozenset[object]) -> None:
        self._unordered(b"Z", value)

    def _unordered(self, tag: bytes, value: Any) -> None:
        with self._guard(value):
            try:
                digests = sorted(self._sub_digest(item) for item in value)
            except Unkeyable as exc:
                raise exc.inside("{...}") from exc.__cause__
            self._count(tag, len(digests))
            self._buf += b"".join(digests)

    def _fields(self, tag: bytes, cls: type, fields: Iterator[tuple[str, object]]) -> None:
        """A value made of named fields: its class, then each field's name and value."""
        items = list(fields)
        self._text(tag, class_name(cls))
        self._count(tag, len(items))
        for name, item in items:
            self._text(b"s", name)
            try:
                self._value(item)
            except Unkeyable as exc:
                raise exc.inside(f".{name}") from exc.__cause__

    def _datetime(self, value: datetime.datetime) -> None:
        self._text(b"D", value.isoformat())
        self._buf += bytes([value.fold])
        self._zone(value.tzinfo, value)

    def _date(self, value: datetime.date) -> None:
        self._text(b"a", value.isoformat())

    def _time(self, value: datetime.time) -> None:
        self._text(b"h", value.isoformat())
        self._buf += bytes([value.fold])
        self._zone(value.tzinfo, None)

    def _zone(self, zone: datetime.tzinfo | None, when: datetime.datetime | None) -> None:
        """A zone by its name: two zones with one offset now may differ on another date."""
        if zone is None:
            self._text(b"z", "")
        elif type(zone).__module__ == "zoneinfo":
            self._text(b"z", f"zoneinfo:{zone}")  # str() of a ZoneInfo is its key
        else:
            self._text(b"z", f"{class_name(type(zone))}:{zone.tzname(when)}")

    def _timedelta(self, value: datetime.timedelta) -> None:
        self._buf += b"e"
        for part in (value.days, value.seconds, value.microseconds):
            self._int(part)

    def _decimal(self, value: decimal.Decimal) -> None:
        self._text(b"q", str(value))

    def _uuid(self, value: uuid.UUID) -> None:
        self._buf += b"u"
        self._buf += value.bytes

    def _other(self, value: object) -> None:
        """Values whose type is not one of the exact built-ins: by what they are a kind of."""
        cls = type(value)
        if isinstance(value, enum.Enum):
            self._text(b"E", class_name(cls))
            try:
                self._value(value.value)
            except Unkeyable as exc:
                raise exc.inside(".value") from exc.__cause__
        elif isinstance(value, pathlib.Path):
            try:
                piece, content = path_content(os.fspath(value), cache=self.cache)
            except NoContent as exc:
                raise Unkeyable(str(exc), "Path") from None
            self._piece(piece)
            self.paths[id(value)] = content
        elif isinstance(value, pathlib.PurePath):
            self._text(b"p", f"{class_name(cls)}:{value}")
        elif isinstance(value, tuple) and hasattr(cls, "_fields"):
            with self._guard(value):
                self._fields(b"n", cls, zip(cls._fields, value, strict=True))
        elif dataclasses.is_dataclass(value) and not isinstance(value, type):
            with self._guard(value):
                self._fields(
                    b"C",
                    cls,
                    ((f.name, getattr(value, f.name)) for f in dataclasses.fields(value)),
                )
        elif isinstance(value, collections.OrderedDict):
            self._ordered_dict(value)
        elif not self._library_value(value):
            self._subclass(value)

    def _library_value(self, value: object) -> bool:
        """pydantic, numpy and pandas values, each only if its library is already loaded."""
        pydantic = sys.modules.get("pydantic")
        if pydantic is not None and isinstance(value, pydantic.BaseModel):
            with self._guard(value):
                self._text(b"M", class_name(type(value)))
                self._value(value.model_dump(mode="python"))
            return True
        pandas = sys.modules.get("pandas")
        if pandas is not None and (value is pandas.NA or value is pandas.NaT):
            self._text(b"W", repr(value))  # the missing-value markers inside pandas data
            return True
        if pandas is not None and isinstance(
            value, (pandas.Series, pandas.DataFrame, pandas.Index)
        ):
            self._pandas(value, pandas)
            return True
        numpy = sys.modules.get("numpy")
        if numpy is not None and isinstance(value, (numpy.ndarray, numpy.generic)):
            self._array(numpy.asarray(value), b"A" if isinstance(value, numpy.ndarray) else b"g")
            return True
        return False

    def _array(self, array: Any, tag: bytes) -> None:
        """A numpy array by dtype, shape and bytes; an array of objects by its items."""
        self._text(tag, str(array.dtype.descr if array.dtype.fields else array.dtype.str))
        self._sequence(tag, array.shape)
        if array.dtype.hasobject:
            self._sequence(tag, array.ravel().tolist())
        else:
            contiguous = array if array.flags.c_contiguous else array.copy(order="C")
            # Viewed as bytes: a buffer of datetime64 or of records is refused by memoryview.
            self._blob(tag, memoryview(contiguous.reshape(-1).view("u1")))

    def _pandas(self, value: Any, pandas: Any) -> None:
        """A pandas object by its class, labels and values (a frame's column by column)."""
        self._text(b"W", class_name(type(value)))
        if isinstance(value, pandas.DataFrame):
            self._pandas(value.columns, pandas)
            self._pandas(value.index, pandas)
            for column in range(value.shape[1]):
                self._pandas_values(value.iloc[:, column])
            return
        if isinstance(value, pandas.Series):
            self._value(value.name)
            self._pandas(value.index, pandas)
        self._pandas_values(value)

    def _pandas_values(self, values: Any) -> None:
        """One column's dtype (``category``, ``Int64``: more than numpy's) and values."""
        self._text(b"W", str(values.dtype))
        self._array(values.to_numpy(), b"A")

    def _subclass(self, value: object) -> None:
        """A subclass of a built-in that adds no state: its class, then the built-in value."""
        cls = type(value)
        base = next((b for b in cls.__mro__ if b in _EXACT), None)
        added = () if base is None else cls.__mro__[: cls.__mro__.index(base)]
        if base is None or getattr(value, "__dict__", None) or _slotted(added):
            raise Unkeyable(f"cannot key a value of type {_type_name(cls)}", _type_name(cls))
        self._text(b"x", class_name(cls))
        _EXACT[base](self, value)

    # -- the cycle guard --------------------------------------------------------------------

    def _guard(self, container: object) -> _Open:
        return _Open(self._open, container)


class _Open:
    """Marks a container as being encoded; meeting it again inside itself is a cycle."""

    __slots__ = ("container", "open")

    def __init__(self, open_ids: set[int], container: object) -> None:
        self.open = open_ids
        self.container = container

    def __enter__(self) -> None:
        key = id(self.container)
        if key in self.open:
            kind = _type_name(type(self.container))
            raise Unkeyable(f"cannot key a {kind} that contains itself", kind)
        self.open.add(key)

    def __exit__(self, *exc: object) -> None:
        self.open.discard(id(self.container))


def _slotted(classes: tuple[type, ...]) -> bool:
    """Whether any of ``classes`` declares slots: state the built-in value does not show."""
    return any(vars(cls).get("__slots__") not in (None, ()) for cls in classes)


def _type_name(cls: type) -> str:
    """A type as a user writes it: ``socket.socket``, ``function``, ``mymodule.Conn``."""
    if cls.__module__ == "builtins":
        return cls.__qualname__
    return class_name(cls)


def _short(key: object) -> str:
    text = repr(key) if isinstance(key, (str, int, float, bool, type(None))) else "..."
    return text if len(text) <= 30 else text[:29] + "…"


_EXACT: dict[type, Callable[[Encoder, Any], None]] = {
    type(None): Encoder._none,
    bool: Encoder._bool,
    int: Encoder._int,
    float: Encoder._float,
    complex: Encoder._complex,
    str: Encoder._str,
    bytes: Encoder._bytes,
    bytearray: Encoder._bytearray,
    memoryview: Encoder._memoryview,
    list: Encoder._list,
    tuple: Encoder._tuple,
    range: Encoder._range,
    dict: Encoder._dict,
    set: Encoder._set,
    frozenset: Encoder._frozenset,
    datetime.datetime: Encoder._datetime,
    datetime.date: Encoder._date,
    datetime.time: Encoder._time,
    datetime.timedelta: Encoder._timedelta,
    decimal.Decimal: Encoder._decimal,
    uuid.UUID: Encoder._uuid,
}


def digest_of(value: object, *, cache: StatCache | None = None) -> Digest:
    """The digest of ``value``'s canonical encoding (raises :class:`Unkeyable`)."""
    encoder = Encoder(cache=cache)
    encoder.encode(value)
    return encoder.digest()
