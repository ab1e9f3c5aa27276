"""The SDK transport (kadence/_http.py): its credential (given, from $KADENCE_API_KEY, or
none), a closed transport that stays closed, and the Retry-After an error answer carries."""

from __future__ import annotations

import datetime
import email.utils
import json

import pytest

from kadence import Client
from kadence._http import (
    API_KEY_ENV,
    MIN_RETRY_AFTER_S,
    EncodedBody,
    HttpTransport,
    _encode,
    error_from_response,
    retry_after_seconds,
)
from kadence.exceptions import ResourceExhaustedError


async def test_api_key_given_from_env_or_none(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(API_KEY_ENV, "from-env")
    assert HttpTransport("http://x", "ns").api_key == "from-env"
    assert HttpTransport("http://x", "ns", api_key="given")._auth == {"Authorization": "Bearer given"}
    assert HttpTransport("http://x", "ns", api_key="")._auth == {}  # "" turns the default off
    monkeypatch.delenv(API_KEY_ENV)
    client = await Client.connect("http://x", "ns")
    assert client.api_key is None
    client.api_key = "rotated"
    assert client.transport._auth == {"Authorization": "Bearer rotated"}  # type: ignore[attr-defined]
    # A key that would break the header is refused, and the good one stays.
    for bad in ("two words", "line\nbreak", " padded"):
        with pytest.raises(ValueError, match="API key"):
            client.api_key = bad
    assert client.api_key == "rotated"
    await client.close()


async def test_a_closed_client_refuses_calls_instead_of_opening_a_new_session() -> None:
    transport = HttpTransport("http://127.0.0.1:9", "ns", api_key="")
    session = transport._get_session()
    await transport.close()
    assert session.closed
    with pytest.raises(RuntimeError, match="client is closed"):
        await transport.call("GET", "/workflows")
    assert transport._session is session  # no second session was opened, none left unclosed


def test_a_body_holding_an_integer_past_64_bits_is_sent_as_json() -> None:
    # orjson refuses to write such an integer; JSON holds it and the frontend reads it (a
    # start's or a signal's arguments, a schedule's: README, "What an action holds").
    big = 10**30
    body = {"input": [big, "x"], "memo": {"n": -big}}
    assert json.loads(_encode(body)) == body
    assert json.loads(EncodedBody.of(body).encoded) == body
    assert json.loads(_encode(EncodedBody.of({"input": [1]}))) == {"input": [1]}
    with pytest.raises(TypeError):
        _encode({"input": [object()]})


@pytest.mark.parametrize(("header", "seconds"), [
    ("1", 1.0), (" 2 ", 2.0), ("0.5", 0.5), ("0", MIN_RETRY_AFTER_S), (None, None), ("", None), ("soon", None),
    ("-3", None), ("nan", None), ("3601", None), ("Wed, 21 Oct 2015 07:28:00 GMT", None)])
def test_retry_after_is_read_as_seconds_or_a_date_within_an_hour(header: str | None, seconds: float | None) -> None:
    assert retry_after_seconds(header) == seconds


def test_retry_after_as_an_http_date_is_the_seconds_until_it() -> None:
    when = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=30)
    assert 28 <= (retry_after_seconds(email.utils.format_datetime(when, usegmt=True)) or 0) <= 30


def test_a_503_carries_its_retry_after_and_a_429_prefers_the_bodys_exact_wait() -> None:
    busy = error_from_response(503, {"error": "Unavailable", "message": "busy"}, "1")
    assert (busy.status, busy.retry_after, busy.retryable) == (503, 1.0, True)
    assert error_from_response(503, {"error": "Unavailable"}).retry_after == 0.0  # not said
    throttled = error_from_response(429, {"error": "ResourceExhausted", "retry_after_ms": 250}, "1")
    assert isinstance(throttled, ResourceExhaustedError) and throttled.retry_after == 0.25
    assert error_from_response(429, {"error": "ResourceExhausted"}, "3").retry_after == 3.0
    assert error_from_response(429, {"error": "ResourceExhausted"}).retry_after == 1.0


@pytest.mark.parametrize(("body_ms", "wait"), [(1000, 1.0), (0, 0.05), (-5, 0.0), (True, 0.0), ("1000", 0.0),
                                               (3_600_001, 0.0)])
def test_a_503_without_the_header_takes_its_bodys_wait(body_ms: object, wait: float) -> None:
    # An item's 503 line of a call sent together has no header: its retry_after_ms says it.
    line = {"index": 3, "status": 503, "error": "Unavailable", "retry_after_ms": body_ms}
    assert error_from_response(503, line).retry_after == wait
    assert error_from_response(503, line, "2").retry_after == 2.0  # the header, when there is one, first
