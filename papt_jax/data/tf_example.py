"""`tf.train.Example` bytes for flat TFDS features, written without protobuf objects.

TFDS serializes an example by building `tf.train.Example` protobuf objects field by field.
For audio stored as `Tensor(shape=(None,), dtype=int16)` (an int64 list on the wire) that
turns every sample into a Python integer: about 3 ms per second of 16 kHz audio, most of
the cost of preparing a corpus. Here the wire format is written directly: scalars with a few
bytes of framing, int16 vectors through a table holding the varint of each of the 65536
possible values, so a whole waveform is two NumPy gathers.

The bytes parse to the same `tf.train.Example` as the output of TFDS's `ExampleSerializer`
and have the same length (tests/data/test_prepare.py checks both); they can differ only in
the order of the feature map's entries, which protobuf leaves open and TFDS's own
serializer varies from one process to the next. Here the order is that of the features.

Wire format (proto3): Example {features = 1: Features}; Features {feature = 1:
map<string, Feature>}, each map entry a message {key = 1: string, value = 2: Feature};
Feature is one of bytes_list = 1, float_list = 2, int64_list = 3, each a message
{value = 1: repeated}, numbers packed. A negative int64 is the varint of its 64-bit two's
complement (no zigzag), so it always takes 10 bytes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, Literal

import numpy as np

Kind = Literal["bytes", "float", "int"]

# Field numbers of the `Feature` oneof (tag byte = field number << 3 | wire type 2).
_LIST_TAGS = {"bytes": b"\x0a", "float": b"\x12", "int": b"\x1a"}
_TAG_1 = b"\x0a"  # field 1, length-delimited: Example.features, Features.feature, map key,
# and the `value` field of every list
_TAG_2 = b"\x12"  # field 2, length-delimited: map value


@dataclasses.dataclass(frozen=True)
class Field:
    """One feature as it is serialized.

    Attributes:
      name: the feature's key in the example.
      kind: which list of `tf.train.Feature` holds it.
      dtype: NumPy dtype the value is converted to first (as TFDS does), e.g. "int32".
      vector: True for shape (None,), False for a scalar.
    """

    name: str
    kind: Kind
    dtype: str
    vector: bool


def fields_from_features(serialized_info: Mapping[str, Any]) -> tuple[Field, ...]:
    """The `Field`s of a flat TFDS feature spec.

    Args:
      serialized_info: `FeaturesDict.get_serialized_info()`: name -> `TensorInfo`.

    Raises:
      ValueError: a feature this writer does not handle (nested, optional, boolean, or of a
        shape other than () and (None,)).
    """
    fields = []
    for name, info in serialized_info.items():
        shape = tuple(getattr(info, "shape", ("nested",)))
        dtype = np.dtype(info.np_dtype)
        if shape not in ((), (None,)) or getattr(info, "optional", False):
            raise ValueError(f"feature {name!r}: only required scalars and 1-D vectors")
        if dtype == np.bool_:
            raise ValueError(f"feature {name!r}: boolean features are not handled")
        if dtype.kind in "OSU":
            kind = "bytes"
        elif dtype.kind in "iu":
            kind = "int"
        elif dtype.kind == "f":
            kind = "float"
        else:
            raise ValueError(f"feature {name!r}: dtype {dtype} is not handled")
        fields.append(Field(name, kind, dtype.name, shape == (None,)))
    return tuple(fields)


def _varint(value: int) -> bytes:
    """Protobuf varint of an int64 (negative values as their 64-bit two's complement)."""
    value &= (1 << 64) - 1
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _int16_varint_table() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The varint of every int16 value, in the row given by the value's 16 bits as unsigned.

    Returns:
      rows: (65536,) void-10 records, each the varint zero-padded to 10 bytes.
      keep: (65536,) void-10 records of booleans, True on the varint's bytes (a prefix).
      lengths: (65536,) int64 varint lengths (1 to 3 for values >= 0, 10 below).
    """
    values = np.arange(65536, dtype=np.uint16).view(np.int16).astype(np.int64).view(np.uint64)
    groups = np.stack([(values >> np.uint64(7 * i)) & np.uint64(0x7F) for i in range(10)], 1)
    shifts = np.uint64(7) * np.arange(1, 10, dtype=np.uint64)
    lengths = 1 + np.count_nonzero(values[:, None] >> shifts[None, :], axis=1)
    position = np.arange(10)[None, :]
    keep = position < lengths[:, None]
    table = groups.astype(np.uint8) | np.where(position < lengths[:, None] - 1, 0x80, 0)
    table = np.where(keep, table, 0).astype(np.uint8)
    return table.view("V10").ravel(), keep.view("V10").ravel(), lengths


_INT16_ROWS, _INT16_KEEP, _INT16_LENGTHS = _int16_varint_table()


def _int16_rows(samples: np.ndarray) -> np.ndarray:
    """Table rows of int16 `samples`: their bits read as uint16 (no copy when contiguous)."""
    return np.ascontiguousarray(samples, np.int16).view(np.uint16)


def _packed_int16(samples: np.ndarray) -> bytes:
    """The varints of int16 `samples`, concatenated: each padded row cut to its prefix."""
    rows = _int16_rows(samples)
    padded = _INT16_ROWS.take(rows).view(np.uint8)
    return padded[_INT16_KEEP.take(rows).view(np.bool_)].tobytes()


@dataclasses.dataclass
class _Message:
    """A message being built: its pieces in order and their total size in bytes.

    A piece is bytes or, for a vector only measured, the number of bytes it would take.
    Nested messages are framed piece by piece, so the samples are copied once, by the final
    join, and sizes are added up as pieces are appended rather than recounted per level.
    """

    pieces: list[bytes | int] = dataclasses.field(default_factory=list)
    size: int = 0

    def add(self, piece: bytes | int) -> _Message:
        self.pieces.append(piece)
        self.size += piece if isinstance(piece, int) else len(piece)
        return self

    def add_field(self, tag: bytes, body: _Message) -> _Message:
        """Appends a length-delimited field: its tag, the size of `body`, then `body`."""
        self.add(tag + _varint(body.size))
        self.pieces += body.pieces
        self.size += body.size
        return self


def _as_bytes(field: Field, value: Any) -> bytes:
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, bytes | bytearray):
        return bytes(value)
    raise TypeError(f"feature {field.name!r}: expected str or bytes, got {type(value).__name__}")


def _value_list(field: Field, value: Any, materialize: bool) -> _Message:
    """The BytesList, FloatList or Int64List message holding `value`."""
    array = np.asarray(value, dtype=field.dtype)
    if array.ndim != int(field.vector):
        shape = "(None,)" if field.vector else "()"
        raise ValueError(f"feature {field.name!r}: shape {array.shape}, expected {shape}")
    flat = array.reshape(-1)
    message = _Message()
    if field.kind == "bytes":
        for v in flat.tolist():
            message.add_field(_TAG_1, _Message().add(_as_bytes(field, v)))
        return message
    if flat.size == 0:  # an empty packed field is left out altogether
        return message
    if field.kind == "float":
        packed: bytes | int = flat.astype("<f4").tobytes()
    elif field.dtype != "int16":
        packed = b"".join(_varint(int(v)) for v in flat.tolist())
    elif materialize:
        packed = _packed_int16(flat)
    else:
        packed = int(_INT16_LENGTHS.take(_int16_rows(flat)).sum())
    return message.add_field(_TAG_1, _Message().add(packed))


def _example(fields: tuple[Field, ...], example: Mapping[str, Any], materialize: bool) -> _Message:
    features = _Message()
    for field in fields:
        feature = _Message().add_field(
            _LIST_TAGS[field.kind], _value_list(field, example[field.name], materialize)
        )
        entry = _Message().add_field(_TAG_1, _Message().add(field.name.encode("utf-8")))
        features.add_field(_TAG_1, entry.add_field(_TAG_2, feature))
    return _Message().add_field(_TAG_1, features)


def serialize(fields: tuple[Field, ...], example: Mapping[str, Any]) -> bytes:
    """The serialized `tf.train.Example` of `example` (feature name -> value)."""
    return b"".join(_example(fields, example, materialize=True).pieces)


def serialized_size(fields: tuple[Field, ...], example: Mapping[str, Any]) -> int:
    """len(serialize(fields, example)), without building the bytes of vectors."""
    return _example(fields, example, materialize=False).size
