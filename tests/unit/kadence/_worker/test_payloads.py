"""The payload codec leaves the search-attribute marker plain: the frontend checks its
details against the namespace's registry and the visibility projection indexes them, so
they must stay the JSON object workflow code gave (as a side effect's value does not)."""

from __future__ import annotations

import asyncio
import json

import pytest

from kadence._worker.payloads import decode_events, encode_commands
from kadence_protocol.markers import SEARCH_ATTRIBUTES_MARKER

pytestmark = pytest.mark.timeout(10)


class Reverse:
    """A codec anyone can undo by eye: the bytes reversed."""

    name = "reverse"

    async def encode(self, data: bytes) -> bytes:
        return data[::-1]

    async def decode(self, data: bytes) -> bytes:
        return data[::-1]


def _marker(name: str, details: str) -> dict[str, object]:
    return {"command_type": "RecordMarker", "attributes": {"marker_name": name, "details": details}}


def test_the_search_attribute_marker_is_sent_plain_and_a_side_effect_encoded() -> None:
    values = json.dumps({"CustomerId": "c-1"})
    sent = asyncio.run(encode_commands(Reverse(), [_marker(SEARCH_ATTRIBUTES_MARKER, values),
                                                   _marker("side_effect:1", "42")]))
    assert sent[0]["attributes"]["details"] == values
    assert sent[1]["attributes"]["details"] != "42"
    events = [{"event_type": "MarkerRecorded", "attributes": c["attributes"]} for c in sent]
    read = asyncio.run(decode_events(Reverse(), events))
    assert [e["attributes"]["details"] for e in read] == [values, "42"]
