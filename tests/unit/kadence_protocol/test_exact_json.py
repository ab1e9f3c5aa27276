"""kadence_protocol/exact_json.py: an integer past 64 bits is read and written unchanged."""

from __future__ import annotations

import pytest

from kadence_protocol import exact_json


@pytest.mark.parametrize("value", [{"n": 10**30}, [-(10**19), 2**64], {"s": "1234567890123456789 in a string"},
                                   {"small": 2**63 - 1, "f": 1.5, "t": "é"}])
def test_values_come_back_as_they_were(value: object) -> None:
    text = exact_json.dumps(value)
    assert exact_json.loads(text) == value and exact_json.loads(text.decode()) == value
    assert type(exact_json.loads(exact_json.dumps({"n": 10**30}))["n"]) is int


def test_what_json_cannot_hold_is_still_refused() -> None:
    with pytest.raises(TypeError):
        exact_json.dumps({"x": object()})
    with pytest.raises(ValueError):
        exact_json.loads("{not json")
