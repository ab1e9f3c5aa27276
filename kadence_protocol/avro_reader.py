"""A compiled Avro binary reader: the counterpart of avro_writer.py for decoding.

fastavro's ``schemaless_reader`` parses the schema and wraps the bytes in a file object for
every record; history decodes each command it takes and the visibility projection each
history record, so that walk is a cost per workflow. :func:`compile_reader` walks a parsed
schema once and returns a function reading a record straight out of ``bytes``, each record
type's reader generated as straight-line code as the writer's is.

It reads only what a writer of that exact schema writes, and raises :class:`Unreadable` at
the first byte it does not expect (a truncated body, an out-of-range union index or enum
symbol, a boolean that is neither 0 nor 1, an over-long varint), so that the caller reads the
record with fastavro, which gives the same value or the same error it always gave. Schema
resolution (a record written by an older version) is left to fastavro too.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping
from typing import Any

from kadence_protocol.avro_compile import SchemaCompiler

__all__ = ["Reader", "Unreadable", "compile_reader"]

# Reads one value at a position of the buffer: (value, the position after it).
Reader = Callable[[bytes, int], tuple[Any, int]]

_DOUBLE = struct.Struct("<d").unpack_from


class Unreadable(Exception):
    """Bytes the compiled reader does not take: read the record with fastavro instead."""


def _read_long(data: bytes, pos: int) -> tuple[int, int]:
    b = data[pos]
    if b < 0x80:
        return (b >> 1) ^ -(b & 1), pos + 1
    n = b & 0x7F
    shift = 7
    pos += 1
    while True:
        b = data[pos]
        pos += 1
        n |= (b & 0x7F) << shift
        if b < 0x80:
            break
        shift += 7
        if shift > 63:
            raise Unreadable("varint longer than 10 bytes")
    if n >> 64:
        raise Unreadable("varint past 64 bits")  # fastavro wraps it; leave that to fastavro
    return (n >> 1) ^ -(n & 1), pos


def _length(data: bytes, pos: int) -> tuple[int, int]:
    n, pos = _read_long(data, pos)
    if n < 0 or pos + n > len(data):
        raise Unreadable("a length past the end of the record")
    return n, pos


def _read_string(data: bytes, pos: int) -> tuple[str, int]:
    n, pos = _length(data, pos)
    end = pos + n
    return data[pos:end].decode(), end


def _read_bytes(data: bytes, pos: int) -> tuple[bytes, int]:
    n, pos = _length(data, pos)
    end = pos + n
    return bytes(data[pos:end]), end


def _read_boolean(data: bytes, pos: int) -> tuple[bool, int]:
    b = data[pos]
    if b > 1:
        raise Unreadable("a boolean neither 0 nor 1")
    return b == 1, pos + 1


def _read_double(data: bytes, pos: int) -> tuple[float, int]:
    if pos + 8 > len(data):
        raise Unreadable("a double past the end of the record")
    return _DOUBLE(data, pos)[0], pos + 8


def _read_null(data: bytes, pos: int) -> tuple[None, int]:
    return None, pos


_PRIMITIVES: dict[str, Reader] = {
    "null": _read_null, "boolean": _read_boolean, "int": _read_long, "long": _read_long,
    "double": _read_double, "bytes": _read_bytes, "string": _read_string,
}


# Inline code reading a value of a primitive type into X at p of d (len(d) is end), for a
# record's reader (_Compiler._record). A one-byte varint is read in place.
_INLINE_LONG = ["b = d[p]", "if b < 128:", "    X = (b >> 1) ^ -(b & 1)", "    p += 1", "else:",
                "    X, p = _read_long(d, p)"]
_INLINE: dict[str, list[str]] = {
    "long": _INLINE_LONG,
    "int": _INLINE_LONG,
    "string": ["b = d[p]", "if b < 128 and not b & 1:", "    e = p + 1 + (b >> 1)", "    p += 1", "else:",
               "    n, p = _length(d, p)", "    e = p + n",
               "if e > end:", "    raise Unreadable('a length past the end of the record')",
               "X = d[p:e].decode()", "p = e"],
    "boolean": ["b = d[p]", "if b > 1:", "    raise Unreadable('a boolean neither 0 nor 1')", "X = b == 1", "p += 1"],
    "null": ["X = None"],
}


def _count(data: bytes, pos: int) -> tuple[int, int]:
    """An array or map block's item count (a negative one is followed by the block's size)."""
    n, pos = _read_long(data, pos)
    if n < 0:
        n = -n
        _, pos = _read_long(data, pos)
    return n, pos


class _Compiler(SchemaCompiler[Reader]):
    what = "reader"
    primitives = _PRIMITIVES

    def _placeholder(self, name: str) -> Reader:
        return _BUILDING

    def _reference(self, name: str) -> Reader:
        readers = self.built

        def deferred(data: bytes, pos: int) -> tuple[Any, int]:  # may still be being built
            return readers[name](data, pos)

        reader = readers[name]
        return deferred if reader is _BUILDING else reader

    def _record(self, name: str, fields: list[Mapping[str, Any]]) -> Reader:
        """A record's reader as straight-line code: one block per field, primitives and nullable
        primitives read inline (most of a record's fields), the rest through their readers."""
        env: dict[str, Any] = {"Unreadable": Unreadable, "_read_long": _read_long, "_length": _length}
        lines = ["def read_record(d, p):", "    end = len(d)"]
        for i, f in enumerate(fields):
            lines += ["    " + line for line in self._inline(f["type"], f"x{i}", i, env)]
        values = ", ".join(f"{f['name']!r}: x{i}" for i, f in enumerate(fields))
        lines.append(f"    return {{{values}}}, p")
        source = "\n".join(lines) + "\n"
        exec(compile(source, f"<avro reader of {name}>", "exec"), env)  # our schemas only; names repr-quoted
        reader: Reader = env["read_record"]
        return reader

    def _inline(self, schema: Any, x: str, i: int, env: dict[str, Any]) -> list[str]:
        """Lines reading field ``i`` into the variable ``x``."""
        if isinstance(schema, str) and schema in _INLINE:
            return [line.replace("X", x) for line in _INLINE[schema]]
        if (isinstance(schema, list) and len(schema) == 2 and "null" in schema
                and isinstance(other := schema[1 - schema.index("null")], str) and other in _INLINE):
            null, value = 2 * schema.index("null"), 2 * schema.index(other)  # zig-zag: one byte each
            return ["b = d[p]", "p += 1", f"if b == {null}:", f"    {x} = None", f"elif b == {value}:",
                    *("    " + line.replace("X", x) for line in _INLINE[other]),
                    "else:", "    raise Unreadable('a union index out of range')"]
        env[f"r{i}"] = self.compile(schema)
        return [f"{x}, p = r{i}(d, p)"]

    @staticmethod
    def _enum(symbols: list[str]) -> Reader:
        def read_enum(data: bytes, pos: int) -> tuple[str, int]:
            i, pos = _read_long(data, pos)
            if not 0 <= i < len(symbols):
                raise Unreadable("an enum index out of range")
            return symbols[i], pos

        return read_enum

    @staticmethod
    def _array(item: Reader) -> Reader:
        def read_array(data: bytes, pos: int) -> tuple[list[Any], int]:
            out: list[Any] = []
            while True:
                n, pos = _count(data, pos)
                if n == 0:
                    return out, pos
                for _ in range(n):
                    value, pos = item(data, pos)
                    out.append(value)

        return read_array

    @staticmethod
    def _map(value: Reader) -> Reader:
        def read_map(data: bytes, pos: int) -> tuple[dict[str, Any], int]:
            out: dict[str, Any] = {}
            while True:
                n, pos = _count(data, pos)
                if n == 0:
                    return out, pos
                for _ in range(n):
                    key, pos = _read_string(data, pos)
                    out[key], pos = value(data, pos)

        return read_map

    def _union(self, branches: list[Any]) -> Reader:
        readers = tuple(self.compile(b) for b in branches)
        count = len(readers)

        def read_union(data: bytes, pos: int) -> tuple[Any, int]:
            b = data[pos]
            if b < 0x80:
                i, pos = (b >> 1) ^ -(b & 1), pos + 1
            else:
                i, pos = _read_long(data, pos)
            if not 0 <= i < count:
                raise Unreadable("a union index out of range")
            return readers[i](data, pos)

        return read_union


def _building(data: bytes, pos: int) -> tuple[Any, int]:
    raise AssertionError("a record's reader ran before it was built")


_BUILDING: Reader = _building


def compile_reader(schema: Any, named: Mapping[str, Any]) -> Reader:
    """The reader of ``schema`` (as fastavro's ``parse_schema`` gives it); ``named`` holds the
    named types it refers to by name (the ``named_schemas`` that parse_schema fills)."""
    return _Compiler(named).compile(schema)
