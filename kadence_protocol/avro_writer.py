"""A compiled Avro binary writer for the records Kadence encodes on every hot path.

fastavro's ``schemaless_writer`` walks the schema for every record it writes: it copies the
named types, resolves each nullable union by validating the value against every branch, and
looks a tuple-named union branch up by scanning the union. History encodes a dozen events
per workflow and the frontend a command per request, so that walk was the largest single
cost of the server process (issue 20). :func:`compile_writer` walks a parsed schema once and
returns a function that writes a record straight into a ``bytearray``: each record type's
writer is generated as straight-line code (its primitive and nullable primitive fields
inline, the others through their own writers).

It is an accelerator, not a second Avro implementation of record: it takes only values whose
encoding is unambiguous (exact Python types, ints in range, known enum symbols, unions that
are nullable or named by fastavro's ``(name, value)`` tuple notation) and raises
:class:`Unsupported` for anything else, so that the caller writes that record with fastavro,
which gives the same bytes or the same error it always gave. The bytes it writes are those
fastavro writes (unit tests compare both over every record type).
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping
from typing import Any

from kadence_protocol.avro_compile import SchemaCompiler

__all__ = ["Unsupported", "Writer", "compile_writer"]

# Appends the encoding of one value to the buffer.
Writer = Callable[[bytearray, Any], None]

_INT64_MIN = -(1 << 63)
_INT64_MAX = (1 << 63) - 1
_INT32_MIN = -(1 << 31)
_INT32_MAX = (1 << 31) - 1
_DOUBLE = struct.Struct("<d")
# The encodings of the small longs every record is full of (ids, attempts, zero defaults), by n + 64.
_SMALL = [bytes([(n << 1) ^ (n >> 63)]) for n in range(-64, 64)]
# A larger long (a millisecond time, a timeout) is written 14 bits of its zig-zag value at a
# time: _GROUPS holds the two bytes of a 14-bit group that more bytes follow (both with the
# continuation bit), _LAST the one or two bytes of the value's last group: half the steps of a
# byte at a time, each an index and an extend rather than arithmetic and a method call, for two
# lists of 16384 small bytes objects (about 1.4 MB).
_GROUPS = [bytes(((g & 0x7F) | 0x80, (g >> 7) | 0x80)) for g in range(1 << 14)]
_LAST = [bytes((g,)) if g < 0x80 else bytes(((g & 0x7F) | 0x80, g >> 7)) for g in range(1 << 14)]

# Inline code writing a value ``x`` of a primitive type (a record's writer, _Compiler._record);
# the same as _long_into, inline because record fields are where the large longs are.
_INLINE_LONG = ["if -64 <= x < 64:", "    out += _SMALL[x + 64]",
                f"elif {_INT64_MIN} <= x <= {_INT64_MAX}:",
                "    x = (x << 1) ^ (x >> 63)",  # zig-zag
                "    while x > 0x3FFF:", "        out += _GROUPS[x & 0x3FFF]", "        x >>= 14",
                "    out += _LAST[x]",
                "else:", "    raise Unsupported('long out of range')"]
_INLINE: dict[str, list[str]] = {
    "long": ["if type(x) is not int:", "    raise Unsupported('not an int')", *_INLINE_LONG],
    "int": ["if type(x) is not int or not -2147483648 <= x <= 2147483647:", "    raise Unsupported('not an int32')",
            *_INLINE_LONG],
    "string": ["if type(x) is not str and not isinstance(x, str):", "    raise Unsupported('not a str')",
               "x = x.encode()", "if len(x) < 64:", "    out.append(len(x) << 1)", "else:",
               "    _long_into(out, len(x))", "out += x"],
    "boolean": ["if x is True:", "    out.append(1)", "elif x is False:", "    out.append(0)", "else:",
                "    raise Unsupported('not a bool')"],
    "null": ["if x is not None:", "    raise Unsupported('not None')"],
}


class Unsupported(Exception):
    """A value the compiled writer does not take: write the record with fastavro instead."""


def _long_into(out: bytearray, n: int) -> None:
    """Append the Avro encoding of ``n`` (a zig-zag varint)."""
    if -64 <= n < 64:
        out += _SMALL[n + 64]
        return
    if not _INT64_MIN <= n <= _INT64_MAX:
        raise Unsupported("long out of range")
    z = (n << 1) ^ (n >> 63)  # zig-zag
    while z > 0x3FFF:
        out += _GROUPS[z & 0x3FFF]
        z >>= 14
    out += _LAST[z]


def _write_long(out: bytearray, v: Any) -> None:
    if type(v) is not int:
        raise Unsupported("not an int")
    _long_into(out, v)


def _write_int(out: bytearray, v: Any) -> None:
    if type(v) is not int or not _INT32_MIN <= v <= _INT32_MAX:
        raise Unsupported("not an int32")
    _long_into(out, v)


def _write_string(out: bytearray, v: Any) -> None:
    if type(v) is not str and not isinstance(v, str):  # a StrEnum's member is its value
        raise Unsupported("not a str")
    data = v.encode()
    _long_into(out, len(data))
    out += data


def _write_bytes(out: bytearray, v: Any) -> None:
    if type(v) is not bytes:
        raise Unsupported("not bytes")
    _long_into(out, len(v))
    out += v


def _write_boolean(out: bytearray, v: Any) -> None:
    if v is True:
        out.append(1)
    elif v is False:
        out.append(0)
    else:
        raise Unsupported("not a bool")


def _write_double(out: bytearray, v: Any) -> None:
    if type(v) is not float and type(v) is not int:
        raise Unsupported("not a float")
    out += _DOUBLE.pack(float(v))


def _write_null(out: bytearray, v: Any) -> None:
    if v is not None:
        raise Unsupported("not None")


_PRIMITIVES: dict[str, Writer] = {
    "null": _write_null, "boolean": _write_boolean, "int": _write_int, "long": _write_long,
    "double": _write_double, "bytes": _write_bytes, "string": _write_string,
}


class _Compiler(SchemaCompiler[Writer]):
    """Builds the writers of one schema; named types are compiled once and may refer to
    themselves (a record's writer is looked up when it runs, not when it is built)."""

    what = "writer"
    primitives = _PRIMITIVES

    def _placeholder(self, name: str) -> Writer:
        writers = self.built

        def pending(out: bytearray, v: Any) -> None:
            writers[name](out, v)

        return pending

    def _reference(self, name: str) -> Writer:
        return self.built[name]  # a record being built is its placeholder, which looks it up

    def _record(self, name: str, fields: list[Mapping[str, Any]]) -> Writer:
        """A record's writer as straight-line code: one block per field, primitives and nullable
        primitives written inline (most of a record's fields), the rest through their writers."""
        env: dict[str, Any] = {"Unsupported": Unsupported, "_long_into": _long_into, "_SMALL": _SMALL,
                               "_GROUPS": _GROUPS, "_LAST": _LAST}
        lines = ["def write_record(out, v):",
                 "    if type(v) is not dict:",
                 "        raise Unsupported('not a dict')",
                 "    get = v.get"]
        for i, f in enumerate(fields):
            env[f"d{i}"] = f.get("default")
            lines.append(f"    x = get({f['name']!r}, d{i})")
            lines += ["    " + line for line in self._inline(f["type"], i, env)]
        source = "\n".join(lines) + "\n"
        exec(compile(source, f"<avro writer of {name}>", "exec"), env)  # our schemas only; names repr-quoted
        writer: Writer = env["write_record"]
        return writer

    def _inline(self, schema: Any, i: int, env: dict[str, Any]) -> list[str]:
        """Lines writing the value ``x`` of field ``i``."""
        if isinstance(schema, str) and schema in _INLINE:
            return _INLINE[schema]
        if (isinstance(schema, list) and len(schema) == 2 and "null" in schema
                and isinstance(other := schema[1 - schema.index("null")], str) and other in _INLINE):
            env[f"n{i}"] = _varint(schema.index("null"))
            env[f"t{i}"] = _varint(schema.index(other))
            env[f"u{i}"] = self.compile(schema)  # the tuple notation (name, value)
            return ["if x is None:", f"    out += n{i}",
                    "elif type(x) is tuple:", f"    u{i}(out, x)",
                    "else:", f"    out += t{i}",
                    *("    " + line for line in _INLINE[other])]
        env[f"w{i}"] = self.compile(schema)
        return [f"w{i}(out, x)"]

    @staticmethod
    def _enum(symbols: list[str]) -> Writer:
        index = {s: _varint(i) for i, s in enumerate(symbols)}

        def write_enum(out: bytearray, v: Any) -> None:
            encoded = index.get(v) if isinstance(v, str) else None
            if encoded is None:
                raise Unsupported("not a symbol")
            out += encoded

        return write_enum

    @staticmethod
    def _array(item: Writer) -> Writer:
        def write_array(out: bytearray, v: Any) -> None:
            if type(v) is not list:
                raise Unsupported("not a list")
            if v:
                _long_into(out, len(v))
                for x in v:
                    item(out, x)
            out.append(0)

        return write_array

    @staticmethod
    def _map(value: Writer) -> Writer:
        def write_map(out: bytearray, v: Any) -> None:
            if type(v) is not dict:
                raise Unsupported("not a dict")
            if v:
                _long_into(out, len(v))
                for k, x in v.items():
                    _write_string(out, k)
                    value(out, x)
            out.append(0)

        return write_map

    def _union(self, branches: list[Any]) -> Writer:
        names = [_branch_name(b) for b in branches]
        writers = [self.compile(b) for b in branches]
        by_name = {n: (_varint(i), w) for i, (n, w) in enumerate(zip(names, writers, strict=True))}
        null = _varint(names.index("null")) if "null" in names else None
        others = [i for i, n in enumerate(names) if n != "null"]
        # ["null", T]: None is the null branch, anything else T's (as fastavro resolves it).
        only: tuple[bytes, Writer] | None = (
            (_varint(others[0]), writers[others[0]]) if null is not None and len(branches) == 2 else None)

        def write_union(out: bytearray, v: Any) -> None:
            if v is None:
                if null is None:
                    raise Unsupported("None for a union without null")
                out += null
                return
            if type(v) is tuple:
                # fastavro's tuple notation: (branch name, value)
                if len(v) != 2 or v[0] not in by_name:
                    raise Unsupported("unknown branch")
                tag, write = by_name[v[0]]
                out += tag
                write(out, v[1])
                return
            if only is None:
                raise Unsupported("unnamed branch of a union")  # fastavro picks by validating each
            out += only[0]
            only[1](out, v)

        return write_union


def _branch_name(branch: Any) -> str:
    """The name fastavro's tuple notation uses for a union branch."""
    if isinstance(branch, str):
        return branch
    if isinstance(branch, dict):
        kind = branch["type"]
        if kind in ("record", "error", "enum", "fixed"):
            return str(branch["name"])
        return str(kind)
    raise ValueError(f"a union nested in a union: {branch!r}")


def _varint(n: int) -> bytes:
    out = bytearray()
    _long_into(out, n)
    return bytes(out)


def compile_writer(schema: Any, named: Mapping[str, Any]) -> Writer:
    """The writer of ``schema`` (as fastavro's ``parse_schema`` gives it); ``named`` holds
    the named types it refers to by name (the ``named_schemas`` that parse_schema fills)."""
    return _Compiler(named).compile(schema)
