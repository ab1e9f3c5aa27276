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


@pytest.mark.parametrize(("name", "value", "says"), [
    ("KADENCE_SHARDS", "0", "KADENCE_SHARDS must be at least 1, got 0"),
    ("KADENCE_TASK_PARTITIONS", "-2", "KADENCE_TASK_PARTITIONS must be at least 1, got -2"),
    ("KADENCE_SCHEDULER_INTERVAL_MS", "0", "KADENCE_SCHEDULER_INTERVAL_MS must be at least 1, got 0"),
    ("KADENCE_HISTORY_FETCH_WAIT_MS", "-5", "KADENCE_HISTORY_FETCH_WAIT_MS must be at least 0, got -5"),
    ("KADENCE_STALL_AFTER_MS", "-1", "KADENCE_STALL_AFTER_MS must be at least 0, got -1"),
    ("KADENCE_HEALTH_UNANSWERED_MS", "0", "KADENCE_HEALTH_UNANSWERED_MS must be at least 1, got 0"),
    ("KADENCE_FRONTEND_PORT", "99999", "KADENCE_FRONTEND_PORT must be between 0 and 65535, got 99999"),
    ("KADENCE_REPLY_TIMEOUT_MS", "999", "KADENCE_REPLY_TIMEOUT_MS must be between 1000 and 20000, got 999"),
    ("KADENCE_REPLY_TIMEOUT_MS", "20001", "KADENCE_REPLY_TIMEOUT_MS must be between 1000 and 20000, got 20001"),
    ("KADENCE_HEALTH_UNANSWERED_MS", "9" * 400,
     "KADENCE_HEALTH_UNANSWERED_MS must be at most 9007199254740992, got a number of 400 digits"),
])
def test_a_value_out_of_its_range_ends_the_program_naming_it(name: str, value: str, says: str,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    # A count of 0 or a negative wait started a service that could not work (history with no
    # shard to own, a frontend dividing by its shard count, a busy scheduler loop).
    monkeypatch.setenv(name, value)
    with pytest.raises(SystemExit) as exited:
        settings_or_exit("history")
    assert str(exited.value.code) == f"history: {says}"


def test_the_bounds_themselves_are_taken(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in [("KADENCE_SHARDS", "1"), ("KADENCE_HISTORY_FETCH_WAIT_MS", "0"),
                        ("KADENCE_FRONTEND_PORT", "65535"), ("KADENCE_MATCHING_PORT", "0")]:
        monkeypatch.setenv(name, value)
    settings = settings_or_exit("history")
    assert (settings.shards, settings.history_fetch_wait_ms, settings.frontend_port, settings.matching_port) == \
        (1, 0, 65535, 0)


@pytest.mark.parametrize("value", ["1000", "20000"])
def test_the_reply_timeout_is_read_within_its_bounds(value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings.from_env().reply_timeout_ms == 15_000  # unset: the 15 s of decision 0018
    monkeypatch.setenv("KADENCE_REPLY_TIMEOUT_MS", value)
    assert settings_or_exit("frontend").reply_timeout_ms == int(value)


def test_a_short_internal_key_ends_the_program_naming_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KADENCE_INTERNAL_KEY", "short")
    with pytest.raises(SystemExit) as exited:
        settings_or_exit("matching")
    assert str(exited.value.code) == "matching: KADENCE_INTERNAL_KEY must have at least 16 characters"
    monkeypatch.setenv("KADENCE_INTERNAL_KEY", "k" * 16)
    assert settings_or_exit("matching").internal_key == "k" * 16


@pytest.mark.parametrize("key", ["k" * 16 + "\n", "k" * 16 + " ", " " + "k" * 16, "k" * 8 + " " + "k" * 8,
                                 "k" * 16 + "é", "k" * 8 + "\t" + "k" * 8])
def test_an_internal_key_a_header_cannot_carry_as_is_ends_the_program_naming_it(
        key: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # With a trailing space every internal call was refused 401; with a newline the client
    # refused to send it: the services started and then could not reach each other.
    monkeypatch.setenv("KADENCE_INTERNAL_KEY", key)
    with pytest.raises(SystemExit) as exited:
        settings_or_exit("matching")
    assert str(exited.value.code).startswith("matching: KADENCE_INTERNAL_KEY must be printable ASCII")
