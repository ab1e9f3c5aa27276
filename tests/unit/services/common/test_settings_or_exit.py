"""A service started with a ``KADENCE_*`` variable it cannot read says which, in one line."""

from __future__ import annotations

import pytest

from services.common.config import Settings, settings_or_exit


@pytest.mark.parametrize("name", ["KADENCE_STALL_AFTER_MS", "KADENCE_HISTORY_HEALTH_PORT"])
def test_an_unreadable_integer_ends_the_program_naming_it(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(name, "x")
    with pytest.raises(SystemExit) as exited:
        settings_or_exit("history")
    assert str(exited.value.code) == f"history: {name} must be an integer, got 'x'"


def test_readable_settings_are_returned(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KADENCE_HISTORY_HEALTH_PORT", "0")
    assert settings_or_exit("history").history_health_port == 0
    monkeypatch.delenv("KADENCE_HISTORY_HEALTH_PORT")
    assert Settings.from_env().history_health_port is None
