"""The SDK transport (kadence/_http.py): its credential (given, from $KADENCE_API_KEY, or
none), and a closed transport that stays closed."""

from __future__ import annotations

import json

import pytest

from kadence import Client
from kadence._http import API_KEY_ENV, EncodedBody, HttpTransport, _encode


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
