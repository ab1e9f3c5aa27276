"""Payload conversion: the one place that turns Python values into JSON text and back.

The protocol carries payloads as JSON text: ``input`` is an array of positional arguments,
``result`` and ``details`` one value. These functions use the default
:class:`kadence.converter.DataConverter` with no type hints (decoding gives plain JSON);
typed decoding and custom converters go through :mod:`kadence.converter` directly.

Payloads are strict JSON: NaN and +/-Infinity have no JSON form (Python's ``json`` would
write the non-standard tokens ``NaN``/``Infinity``, and orjson silently writes ``null``),
so encoding refuses them with a :class:`~kadence.exceptions.PayloadError` that names the
value's place, like Temporal's JSON converter, instead of letting them change on the way.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from kadence.converter import default_converter

__all__ = ["check_args", "decode_args", "decode_value", "encode_args", "encode_value"]


def encode_args(args: Sequence[Any], *, what: str = "the call") -> str:
    """Positional arguments as JSON text of an array (by the default
    :class:`~kadence.converter.DataConverter`, so dataclasses, enums, datetimes... are
    carried); PayloadError names the argument (``argument 2 of Greet.run``) when one has
    no JSON form."""
    return default_converter().encode_args(list(args), what=what)


def check_args(args: Sequence[Any], *, what: str = "the call") -> list[Any]:
    """``args`` as they will arrive: through strict JSON and back (PayloadError when they
    are not strict JSON), so what goes on the wire is plain lists, dicts with string keys,
    strings, numbers, booleans and nulls whatever serialiser sends it."""
    return decode_args(encode_args(args, what=what))


def decode_args(payload: str | Sequence[Any] | None) -> list[Any]:
    """JSON text of an array (or an already decoded array, or null) as a list of arguments."""
    if payload is None:
        return []
    value = json.loads(payload) if isinstance(payload, str) else payload
    if not isinstance(value, list):
        raise TypeError(f"arguments must be a JSON array, got {type(value).__name__}")
    return value


def encode_value(value: Any, *, what: str = "the value") -> str:
    """One value as JSON text; PayloadError names ``what`` when it has no JSON form."""
    return default_converter().encode_value(value, what=what)


def decode_value(payload: str | None) -> Any:
    """JSON text of one value; null (no payload) is None."""
    if payload is None or payload == "":
        return None
    return json.loads(payload)
