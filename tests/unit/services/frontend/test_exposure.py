"""The frontend's bind check (services/frontend/exposure.py) and the loopback defaults."""

from __future__ import annotations

import pytest

from services.common.config import Settings
from services.frontend.exposure import UnsafeBind, check_bind, is_loopback


def test_loopback_addresses_are_recognised() -> None:
    for host in ("127.0.0.1", "127.0.0.53", "::1", "localhost"):
        assert is_loopback(host), host
    for host in ("0.0.0.0", "::", "", "10.1.2.3", "192.0.2.7", "no-such-host.invalid"):
        assert not is_loopback(host), host


def test_non_loopback_bind_is_refused_without_auth_or_insecure() -> None:
    check_bind("127.0.0.1", auth_configured=False, insecure=False)
    with pytest.raises(UnsafeBind, match=r"0\.0\.0\.0 without authentication.*--insecure"):
        check_bind("0.0.0.0", auth_configured=False, insecure=False)
    check_bind("0.0.0.0", auth_configured=False, insecure=True)
    check_bind("0.0.0.0", auth_configured=True, insecure=False)


def test_internal_endpoints_default_to_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("KADENCE_FRONTEND_HOST", "KADENCE_MATCHING_HOST", "KADENCE_INSECURE", "KADENCE_AUTH_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    s = Settings.from_env()
    assert (s.frontend_host, s.matching_host, s.insecure, s.auth_config) == ("127.0.0.1", "127.0.0.1", False, "")
    monkeypatch.setenv("KADENCE_INSECURE", "1")
    assert Settings.from_env().insecure
    monkeypatch.setenv("KADENCE_INSECURE", "0")
    assert not Settings.from_env().insecure
