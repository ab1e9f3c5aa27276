"""Payload conversion: the one place that turns Python values into JSON text and back.

The protocol carries payloads as JSON text: ``input`` is an array of positional arguments,
``result`` and ``details`` one value. Keeping this behind two pairs of functions is the seam
where a richer converter (dataclasses, pydantic) can be plugged in later.

Payloads are strict JSON: NaN and +/-Infinity have no JSON form (Python's ``json`` would
write the non-standard tokens ``NaN``/``Infinity``, and orjson silently writes ``null``),
so encoding refuses them with a :class:`~kadence.exceptions.PayloadError` that names the
value's place, like Temporal's JSON converter, instead of letting them change on the way.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Sequence
from typing import Any

from kadence.exceptions import PayloadError

__all__ = ["check_args", "decode_args", "decode_value", "encode_args", "encode_value"]


def encode_args(args: Sequence[Any], *, what: str = "the call") -> str:
    """Positional arguments as JSON text of an array; PayloadError names the argument
    (``argument 2 of Greet.run``) when one is not strict JSON."""
    args = list(args)
    try:
        return json.dumps(args, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as err:
        for i, arg in enumerate(args, start=1):
            problem = _problem(arg, f"argument {i} of {what}")
            if problem is not None:
                raise PayloadError(problem) from err
        raise PayloadError(f"arguments of {what}: {err}") from err


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
    """One value as JSON text; PayloadError names ``what`` when it is not strict JSON."""
    try:
        return json.dumps(value, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as err:
        raise PayloadError(_problem(value, what) or f"{what}: {err}") from err


def decode_value(payload: str | None) -> Any:
    """JSON text of one value; null (no payload) is None."""
    if payload is None or payload == "":
        return None
    return json.loads(payload)


def _problem(value: Any, where: str) -> str | None:
    """What makes ``value`` not strict JSON, with its place inside, or None when it is."""
    for path, bad in _walk(value, ""):
        place = f"{where}{' at ' + path if path else ''}"
        if isinstance(bad, float):
            return f"{place}: {bad!r} is not JSON (NaN and infinities cannot be sent)"
        return f"{place}: {type(bad).__name__} {_short(bad)} is not JSON"
    return None


def _walk(value: Any, path: str) -> Iterator[tuple[str, Any]]:
    """Every value in ``value`` that JSON cannot carry, with its path (``[0]['x']``)."""
    if value is None or isinstance(value, str | bool | int):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            yield path, value
        return
    if isinstance(value, list | tuple):
        for i, item in enumerate(value):
            yield from _walk(item, f"{path}[{i}]")
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str | int | float | bool) and key is not None:
                yield f"{path} key", key
                return
            yield from _walk(item, f"{path}[{key!r}]")
        return
    yield path, value


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
