"""Payload conversion: the one place that turns Python values into JSON text and back.

The protocol carries payloads as JSON text: ``input`` is an array of positional arguments,
``result`` and ``details`` one value. Keeping this behind two pairs of functions is the seam
where a richer converter (dataclasses, pydantic) can be plugged in later.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

__all__ = ["decode_args", "decode_value", "encode_args", "encode_value"]


def encode_args(args: Sequence[Any]) -> str:
    """Positional arguments as JSON text of an array."""
    return json.dumps(list(args), separators=(",", ":"))


def decode_args(payload: str | Sequence[Any] | None) -> list[Any]:
    """JSON text of an array (or an already decoded array, or null) as a list of arguments."""
    if payload is None:
        return []
    value = json.loads(payload) if isinstance(payload, str) else payload
    if not isinstance(value, list):
        raise TypeError(f"arguments must be a JSON array, got {type(value).__name__}")
    return value


def encode_value(value: Any) -> str:
    """One value as JSON text."""
    return json.dumps(value, separators=(",", ":"))


def decode_value(payload: str | None) -> Any:
    """JSON text of one value; null (no payload) is None."""
    if payload is None or payload == "":
        return None
    return json.loads(payload)
