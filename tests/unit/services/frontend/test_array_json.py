"""``validation.array_json`` writes an array argument as JSON text without parsing that text
again: the same text, and the same refusals, as writing it with json.dumps and running
common.payload's checks on it."""

from __future__ import annotations

import json
from typing import Any

import pytest

from services.common import validation as common
from services.frontend import validation as v
from services.frontend.errors import InvalidArgument

CAP = common.DEFAULT_LIMITS.max_payload_bytes


def _before(value: Any) -> str | None:
    """array_json without its fast path: json.dumps (characters as they are; a value holding a
    lone surrogate, which has no UTF-8 form, escaped), then the full payload check (which
    parses it)."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    if common.has_surrogate(text):
        text = json.dumps(value, separators=(",", ":"))
    return v.checked(common.payload, text, "input", array=True)


@pytest.mark.parametrize("value", [
    [], [1, "a", None, True, 1.5, {"k": [1, 2]}], ["é", "日本", "\U0001F600"], ["\x00", "\ud800", "\u2028"],
    ["é" * (CAP // 2 - 3)], ["é" * (CAP // 2 - 2)], ["\u2028\x7f\x1f"],
    [10**30, -(10**30)], [1e300, 1e-300, 0.1], ["x" * (CAP - 10)], [[[[[]]]]], ['"\\/\b\f\n\r\t'],
])
def test_the_text_is_the_same(value: list[Any]) -> None:
    assert v.array_json({"input": value}, "input") == _before(value)


@pytest.mark.parametrize("value", [[float("nan")], [float("inf")], [{"x": -float("inf")}], ["x" * CAP], ["é" * CAP]])
def test_the_refusals_are_the_same(value: list[Any]) -> None:
    with pytest.raises(InvalidArgument) as before:
        _before(value)
    with pytest.raises(InvalidArgument) as now:
        v.array_json({"input": value}, "input")
    assert (now.value.field, str(now.value)) == (before.value.field, str(before.value))


def test_absent_and_not_an_array() -> None:
    assert v.array_json({}, "input") is None
    with pytest.raises(InvalidArgument, match="must be an array"):
        v.array_json({"input": "[1]"}, "input")
