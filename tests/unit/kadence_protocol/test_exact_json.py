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


@pytest.mark.parametrize("value", [{"ahead_id": 5719547640277183504}, [2**64 - 1, -(2**63)],
                                   {"n": 10**18, "m": -(10**18)}])
def test_integers_within_64_bits_are_read_by_orjson(value: object, monkeypatch: pytest.MonkeyPatch) -> None:
    # A 63-bit random id (19 digits) in a worker's answer: orjson reads it exactly, json need not.
    text = exact_json.dumps(value)

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("json read a text orjson reads exactly")

    monkeypatch.setattr(exact_json.json, "loads", refuse)
    assert exact_json.loads(text) == value and exact_json.loads(text.decode()) == value


@pytest.mark.parametrize("text", ['{"n": 18446744073709551616}', '[-9223372036854775809]',
                                  '{"x": [1, 99999999999999999999]}', '{"s": "99999999999999999999", "n": 1}'])
def test_orjson_exact_says_no_past_64_bits(text: str) -> None:
    assert not exact_json.orjson_exact(text) and not exact_json.orjson_exact(text.encode())
    assert exact_json.loads(text) == __import__("json").loads(text)


@pytest.mark.parametrize("digits", [21, 4_301, 100_000])
def test_a_long_run_of_digits_is_left_to_json_without_reading_it_as_a_number(digits: int) -> None:
    """A run past 20 digits is past 64 bits whatever it holds: the check says no before int(),
    which refuses more than 4,300 digits (the frontend answered 500 to a long string of
    zeros in a reason or a description)."""
    for text in ('{"reason": "%s"}' % ("0" * digits), '{"n": -%s}' % ("9" * digits)):
        assert not exact_json.orjson_exact(text) and not exact_json.orjson_exact(text.encode())
    text = '{"reason": "%s"}' % ("0" * digits)
    assert exact_json.loads(text) == {"reason": "0" * digits}
