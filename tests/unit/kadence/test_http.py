"""The SDK transport's credential (kadence/_http.py): given, from $KADENCE_API_KEY, or none."""

from __future__ import annotations

import pytest

from kadence import Client
from kadence._http import API_KEY_ENV, HttpTransport


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
