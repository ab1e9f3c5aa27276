"""The shared key of the internal endpoints (services/common/internal_auth.py): matching's
internal API and the metrics endpoint refuse a non-loopback bind without it, and answer
401 to a request without it."""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Iterator

import aiohttp
import pytest
from aiohttp import web

from services.common import internal_auth, telemetry
from services.common.bind import UnsafeBind
from services.common.config import Settings
from services.matching import MatchingService

pytestmark = pytest.mark.timeout(20)
KEY = "internal-key-0123456789"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in ("KADENCE_INTERNAL_KEY", "KADENCE_INSECURE", "KADENCE_METRICS_HOST", "KADENCE_METRICS_PORT",
                 "OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_SDK_DISABLED"):
        monkeypatch.delenv(name, raising=False)
    yield
    telemetry.reset()


def test_bind_rules() -> None:
    internal_auth.check_bind("x", "127.0.0.1", key="", insecure=False)
    internal_auth.check_bind("x", "0.0.0.0", key=KEY, insecure=False)
    internal_auth.check_bind("x", "0.0.0.0", key="", insecure=True)
    for host in ("0.0.0.0", ""):
        with pytest.raises(UnsafeBind, match="KADENCE_INTERNAL_KEY"):
            internal_auth.check_bind("x", host, key="", insecure=False)
    with pytest.raises(ValueError, match="16"):
        internal_auth.check_bind("x", "127.0.0.1", key="short", insecure=False)


async def test_matching_refuses_an_open_bind_before_touching_anything() -> None:
    service = MatchingService(Settings(matching_host="0.0.0.0", database_url="postgresql://nowhere/none"))
    with pytest.raises(UnsafeBind, match="matching's internal API"):
        await service.start()


async def test_the_middleware_wants_the_key() -> None:
    async def ok(request: web.Request) -> web.Response:
        return web.json_response({})

    app = web.Application(middlewares=[internal_auth.middleware(KEY)])
    app.router.add_get("/internal/health", ok)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}/internal/health"
    try:
        async with aiohttp.ClientSession() as http:
            for headers in ({}, {"Authorization": "Bearer wrong-key-0123456789"}, {"Authorization": KEY}):
                async with http.get(url, headers=headers) as resp:
                    assert resp.status == 401
            async with http.get(url, headers=internal_auth.headers(KEY)) as resp:
                assert resp.status == 200
    finally:
        await runner.cleanup()


def _get(url: str, headers: dict[str, str]) -> int:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=5) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as err:
        return err.code


def test_metrics_endpoint_with_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KADENCE_METRICS_HOST", "0.0.0.0")
    with pytest.raises(UnsafeBind, match="metrics endpoint"):
        telemetry.setup_from_env("kadence-test", metrics_port=0)
    monkeypatch.setenv("KADENCE_METRICS_HOST", "127.0.0.1")
    monkeypatch.setenv("KADENCE_INTERNAL_KEY", KEY)
    signals = telemetry.setup_from_env("kadence-test", metrics_port=0)
    try:
        assert signals.metrics_url is not None
        assert _get(signals.metrics_url, {}) == 401
        assert _get(signals.metrics_url, internal_auth.headers(KEY)) == 200
    finally:
        signals.shutdown()
