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

Every body of every request goes through this, so the transport calls ``check_fast``: a
predicate compiled once per schema (``accepts``) answers "valid?" without building field
paths or looking keywords up, and only a body it refuses goes through ``check``, which
names the field. ``check`` stays the one definition of what is refused: a body the
predicate refuses but ``check`` takes is taken.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator, Mapping
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


# ---- the compiled predicate (the fast path of valid bodies) -------------------------------------

Predicate = Callable[[Any], bool]
# id(schema) -> (schema, predicate); the schema is kept so that its id is never reused.
_PREDICATES: dict[tuple[int, int], tuple[Schema, Mapping[str, Schema], Predicate]] = {}


def check_fast(schema: Schema, value: Any, components: Mapping[str, Schema]) -> None:
    """``check``, faster for a valid ``value``: the compiled predicate accepts it, or ``check``
    names what it refuses."""
    try:
        ok = accepts(schema, components)(value)
    except Exception:  # noqa: BLE001 - such as a huge integer for a number: check decides
        ok = False
    if not ok:
        check(schema, value, components)


def accepts(schema: Schema, components: Mapping[str, Schema]) -> Predicate:
    """The predicate of ``schema``: true exactly for the values ``check`` takes (compiled once)."""
    key = (id(schema), id(components))
    known = _PREDICATES.get(key)
    if known is None:
        known = _PREDICATES[key] = (schema, components, _compile(schema, components, {}))
    return known[2]


# The JSON types that one isinstance test decides (integer and number need _is: no bool,
# an integral float is an integer, a number is finite).
_PY_TYPES: dict[str, type] = {"object": dict, "array": list, "string": str, "boolean": bool, "null": type(None)}


def _compile(schema: Schema, components: Mapping[str, Schema], done: dict[int, Predicate]) -> Predicate:
    """A predicate of ``schema`` that applies every constraint ``check`` applies (their order
    does not matter for a yes or no). ``done`` holds the ones compiled so far, by id, so that
    a schema that refers to itself is compiled once."""
    ref = schema.get("$ref")
    if ref is not None:
        schema = components[ref.rsplit("/", 1)[-1]]
    found = done.get(id(schema))
    if found is not None:
        return found
    cell: list[Predicate] = []
    done[id(schema)] = lambda v: cell[0](v)  # a reference to itself, resolved once built
    types = schema.get("type")
    kinds = None if types is None else [types] if isinstance(types, str) else list(types)
    # The isinstance tuple when it decides the type alone; else the kinds _is asks about.
    simple = None if kinds is None or any(k not in _PY_TYPES for k in kinds) else tuple(
        _PY_TYPES[k] for k in kinds)
    enum = schema.get("enum")
    string = _string_test(schema)
    number = _number_test(schema)
    array = _array_test(schema, components, done)
    obj = _object_test(schema, components, done)

    def pred(v: Any) -> bool:
        if simple is not None:
            if not isinstance(v, simple):
                return False
        elif kinds is not None and not any(_is(v, k) for k in kinds):
            return False
        if enum is not None and v not in enum:
            return False
        # The branches of check: a string, a number (no bool), an array, an object.
        if isinstance(v, str):
            return string is None or string(v)
        if isinstance(v, dict):
            return obj is None or obj(v)
        if isinstance(v, list):
            return array is None or array(v)
        if isinstance(v, bool):
            return True
        if isinstance(v, int | float):
            return number is None or number(v)
        return True

    cell.append(pred)
    done[id(schema)] = pred
    return pred


def _string_test(schema: Schema) -> Predicate | None:
    low, high, pattern = schema.get("minLength", 0), schema.get("maxLength"), schema.get("pattern")
    if not low and high is None and pattern is None:
        return None
    compiled = None if pattern is None else _compiled(pattern)
    top = high if high is not None else math.inf
    return lambda v: low <= len(v) <= top and (compiled is None or compiled.search(v) is not None)


def _number_test(schema: Schema) -> Predicate | None:
    low, high = schema.get("minimum"), schema.get("maximum")
    if low is None and high is None:
        return None
    return lambda v: (low is None or not v < low) and (high is None or not v > high)


def _array_test(schema: Schema, components: Mapping[str, Schema], done: dict[int, Predicate]) -> Predicate | None:
    low, high, items = schema.get("minItems", 0), schema.get("maxItems"), schema.get("items")
    item = _compile(items, components, done) if items else None
    if not low and high is None and item is None:
        return None
    top = high if high is not None else math.inf

    def test(v: list[Any]) -> bool:
        if not low <= len(v) <= top:
            return False
        return item is None or all(item(x) for x in v)
    return test


def _object_test(schema: Schema, components: Mapping[str, Schema], done: dict[int, Predicate]) -> Predicate | None:
    required = tuple(schema.get("required", ()))
    props = {name: _compile(sub, components, done) for name, sub in schema.get("properties", {}).items()}
    strict = schema.get("additionalProperties", True) is False
    if not required and not props and not strict:
        return None

    def test(v: dict[str, Any]) -> bool:
        for field in required:
            if field not in v:
                return False
        for field, sub in v.items():
            prop = props.get(field)
            if prop is None:
                if strict:
                    return False
            elif not prop(sub):
                return False
        return True
    return test
