"""Checks a request body against its schema in the OpenAPI document (openapi.py).

Each operation's body is declared once, as a JSON Schema in ``openapi._OPS``; the
transport runs this check on every body before the handler sees it, so the document and
what the server accepts cannot drift apart: a wrong type, a missing field, an unknown
field, a string too long or a number out of range is refused with a 400 naming the field
(dotted path) before any handler code runs. The handlers' parsers (validation.py) then do
only what a schema cannot say: JSON text, UTF-8 byte limits, command attributes against
the Avro schema.

Only the subset of JSON Schema the document uses is understood; ``supported`` refuses any
other keyword, so a new route cannot declare a constraint that is silently not enforced
(tests/unit/services/frontend/test_openapi_bodies.py runs it over the whole document).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping
from functools import lru_cache
from typing import Any

from .errors import InvalidArgument

Schema = Mapping[str, Any]

# Keywords that constrain a value and are enforced below; the others only annotate.
ENFORCED = frozenset({"type", "properties", "required", "additionalProperties", "minLength", "maxLength",
                      "pattern", "minimum", "maximum", "enum", "items", "minItems", "maxItems", "$ref"})
ANNOTATIONS = frozenset({"description", "default", "title", "examples", "format", "contentMediaType"})
_TYPES = frozenset({"object", "array", "string", "integer", "number", "boolean", "null"})


@lru_cache(maxsize=256)
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def _is(value: object, kind: str) -> bool:
    if kind == "object":
        return isinstance(value, dict)
    if kind == "array":
        return isinstance(value, list)
    if kind == "string":
        return isinstance(value, str)
    if kind == "boolean":
        return isinstance(value, bool)
    if kind == "null":
        return value is None
    if isinstance(value, bool):  # JSON true is no number
        return False
    if kind == "integer":
        return isinstance(value, int) or (isinstance(value, float) and value.is_integer())
    return isinstance(value, int | float) and math.isfinite(value)  # number


def _label(where: str) -> str:
    return where or "the request body"


def _type_text(types: list[str]) -> str:
    return " or ".join("an " + t if t[0] in "aeiou" else "a " + t for t in types)


def _enum_text(values: list[Any]) -> str:
    """The allowed values, with "" and null (the default) said in words, not as a bare comma."""
    named = ", ".join(str(v) for v in values if v not in ("", None))
    return named + " (or empty for the default)" if any(v in ("", None) for v in values) else named


def check(schema: Schema, value: Any, components: Mapping[str, Schema], where: str = "") -> None:
    """Raise InvalidArgument naming the first part of ``value`` that ``schema`` refuses."""
    ref = schema.get("$ref")
    if ref is not None:
        schema = components[ref.rsplit("/", 1)[-1]]
    label = _label(where)
    types = schema.get("type")
    if types is not None:
        types = [types] if isinstance(types, str) else list(types)
        if not any(_is(value, t) for t in types):
            raise InvalidArgument(f"{label} must be {_type_text(types)}", field=where or None)
    if "enum" in schema and value not in schema["enum"]:
        raise InvalidArgument(f"{label} must be one of {_enum_text(schema['enum'])}", field=where or None)
    if isinstance(value, str):
        _check_string(schema, value, label, where)
    elif isinstance(value, int | float) and not isinstance(value, bool):
        low, high = schema.get("minimum"), schema.get("maximum")
        if (low is not None and value < low) or (high is not None and value > high):
            bounds = f"between {low} and {high}" if low is not None and high is not None else (
                f"at least {low}" if low is not None else f"at most {high}")
            raise InvalidArgument(f"{label} must be {bounds}", field=where or None)
    elif isinstance(value, list):
        _check_array(schema, value, components, label, where)
    elif isinstance(value, dict):
        _check_object(schema, value, components, where)


def _check_string(schema: Schema, value: str, label: str, where: str) -> None:
    low, high = schema.get("minLength", 0), schema.get("maxLength")
    if len(value) < low or (high is not None and len(value) > high):
        size = f"of at most {high} characters" if low == 0 else f"of {low} to {high} characters"
        raise InvalidArgument(f"{label} must be a string {size}", field=where or None)
    pattern = schema.get("pattern")
    if pattern is not None and not _compiled(pattern).search(value):
        raise InvalidArgument(f"{label} must match {pattern}", field=where or None)


def _check_array(schema: Schema, value: list[Any], components: Mapping[str, Schema], label: str,
                 where: str) -> None:
    low, high = schema.get("minItems", 0), schema.get("maxItems")
    if len(value) < low or (high is not None and len(value) > high):
        raise InvalidArgument(f"{label} must hold {low} to {high if high is not None else 'any number of'} items",
                              field=where or None)
    items = schema.get("items")
    if items:
        for i, item in enumerate(value):
            check(items, item, components, f"{where}[{i}]")


def _check_object(schema: Schema, value: dict[str, Any], components: Mapping[str, Schema], where: str) -> None:
    prefix = where + "." if where else ""
    for field in schema.get("required", ()):
        if field not in value:
            raise InvalidArgument(f"{prefix}{field} is required", field=prefix + field)
    props: Mapping[str, Schema] = schema.get("properties", {})
    if schema.get("additionalProperties", True) is False:
        for field in value:
            if field not in props:
                known = ", ".join(sorted(props)) or "none"
                raise InvalidArgument(f"{prefix}{field} is not a field of this request (known: {known})",
                                      field=prefix + field)
    for field, sub in props.items():
        if field in value:
            check(sub, value[field], components, prefix + field)


def unsupported(schema: Any, path: str = "#") -> Iterator[str]:
    """Every keyword of ``schema`` (recursively) that ``check`` neither enforces nor may ignore."""
    if isinstance(schema, Mapping):
        for key, sub in schema.items():
            if key not in ENFORCED and key not in ANNOTATIONS:
                yield f"{path}/{key}"
            elif key == "type":
                kinds = [sub] if isinstance(sub, str) else sub
                yield from (f"{path}/type={k}" for k in kinds if k not in _TYPES)
            elif key == "properties":
                for name, prop in sub.items():
                    yield from unsupported(prop, f"{path}/properties/{name}")
            elif key == "items":
                yield from unsupported(sub, f"{path}/items")
