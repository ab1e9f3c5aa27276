"""The schema walk the compiled Avro reader and writer share (avro_reader.py, avro_writer.py).

Both turn a parsed schema into one callable per type: primitives from a table, arrays, maps
and unions built around their parts' callables, and each named type (record, error, enum)
built once and looked up by name. A record may refer to itself, so its name is taken, with
a placeholder, before its fields are compiled. What a callable is and how it is generated
is each side's own: this module only decides which builder a schema goes to.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Generic, TypeVar

__all__ = ["SchemaCompiler"]

F = TypeVar("F", bound=Callable[..., Any])


class SchemaCompiler(Generic[F]):
    """Builds the callables of one schema; ``named`` holds the named types it refers to by
    name (the ``named_schemas`` that fastavro's ``parse_schema`` fills)."""

    #: "reader" or "writer", for the errors.
    what: ClassVar[str]
    #: The callable of each primitive type.
    primitives: ClassVar[Mapping[str, Any]]

    def __init__(self, named: Mapping[str, Any]) -> None:
        self.named = named
        self.built: dict[str, F] = {}

    def compile(self, schema: Any) -> F:
        if isinstance(schema, str):
            primitive: F | None = self.primitives.get(schema)
            return primitive if primitive is not None else self._named(schema)
        if isinstance(schema, list):
            return self._union(schema)
        kind = schema["type"]
        if kind in ("record", "error", "enum", "fixed"):
            if schema["name"] not in self.built:
                self._define(schema["name"], schema)
            return self._named(schema["name"])
        if kind == "array":
            return self._array(self.compile(schema["items"]))
        if kind == "map":
            return self._map(self.compile(schema["values"]))
        if isinstance(kind, str) and kind in self.primitives and "logicalType" not in schema:
            found: F = self.primitives[kind]
            return found
        raise ValueError(f"the compiled {self.what} does not support {schema!r}")

    def _named(self, name: str) -> F:
        if name not in self.built:
            if name not in self.named:
                raise ValueError(f"unknown named type {name}")
            self._define(name, self.named[name])
        return self._reference(name)

    def _define(self, name: str, schema: Mapping[str, Any]) -> None:
        kind = schema["type"]
        if kind == "enum":
            self.built[name] = self._enum(list(schema["symbols"]))
            return
        if kind not in ("record", "error") or "logicalType" in schema:
            raise ValueError(f"the compiled {self.what} does not support {kind} {name}")
        self.built[name] = self._placeholder(name)  # the record's own fields may name it
        self.built[name] = self._record(name, schema["fields"])

    # -- each side's builders --------------------------------------------------------------

    def _placeholder(self, name: str) -> F:
        """What stands for the record ``name`` while its fields are compiled."""
        raise NotImplementedError

    def _reference(self, name: str) -> F:
        """The callable a reference to the named type ``name`` uses (it may still be built)."""
        raise NotImplementedError

    def _record(self, name: str, fields: list[Mapping[str, Any]]) -> F:
        raise NotImplementedError

    def _enum(self, symbols: list[str]) -> F:
        raise NotImplementedError

    def _array(self, item: F) -> F:
        raise NotImplementedError

    def _map(self, value: F) -> F:
        raise NotImplementedError

    def _union(self, branches: list[Any]) -> F:
        raise NotImplementedError
