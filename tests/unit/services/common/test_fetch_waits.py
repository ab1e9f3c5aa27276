"""The fetch waits of consumers whose hop notices carry (services/common/fetch_waits.py)."""

from __future__ import annotations

import dataclasses

import pytest

from services.cluster import _in_process
from services.common.config import Settings
from services.common.fetch_waits import NOTICED_WAITS_MS, SEPARATE_WAITS_MS, Consumer, fetch_wait_ms


@pytest.mark.parametrize("consumer", list(Consumer))
def test_a_noticed_hop_takes_the_longer_wait_of_one_process(consumer: Consumer) -> None:
    settings = Settings()
    assert fetch_wait_ms(settings, consumer, noticed=True) == NOTICED_WAITS_MS[consumer]
    assert getattr(_in_process(settings), consumer.value) == NOTICED_WAITS_MS[consumer]
    assert NOTICED_WAITS_MS[consumer] > SEPARATE_WAITS_MS[consumer]


@pytest.mark.parametrize("consumer", list(Consumer))
def test_a_hop_without_notices_keeps_the_short_wait(consumer: Consumer) -> None:
    assert fetch_wait_ms(Settings(), consumer, noticed=False) == SEPARATE_WAITS_MS[consumer]
    separate = _in_process(dataclasses.replace(Settings(), colocate=False))
    assert fetch_wait_ms(separate, consumer, noticed=False) == SEPARATE_WAITS_MS[consumer]


@pytest.mark.parametrize("consumer", list(Consumer))
def test_a_wait_chosen_otherwise_is_kept(consumer: Consumer) -> None:
    settings = dataclasses.replace(Settings(), **{consumer.value: 7})
    assert fetch_wait_ms(settings, consumer, noticed=True) == 7
    assert getattr(_in_process(settings), consumer.value) == 7


@pytest.mark.parametrize("consumer", list(Consumer))
def test_a_wait_chosen_equal_to_the_short_default_is_kept(consumer: Consumer,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    # Setting the environment variable to the separate-process default is a choice too: it
    # must not be lengthened as if unset.
    short = SEPARATE_WAITS_MS[consumer]
    monkeypatch.setenv(f"KADENCE_{consumer.name}_FETCH_WAIT_MS", str(short))
    settings = Settings.from_env()
    assert fetch_wait_ms(settings, consumer, noticed=True) == short
    assert getattr(_in_process(settings), consumer.value) == short
    monkeypatch.setenv(f"KADENCE_{consumer.name}_FETCH_WAIT_MS", "")
    assert fetch_wait_ms(Settings.from_env(), consumer, noticed=True) == NOTICED_WAITS_MS[consumer]


def test_a_wait_that_is_not_a_number_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KADENCE_MATCHING_FETCH_WAIT_MS", "soon")
    with pytest.raises(ValueError, match="KADENCE_MATCHING_FETCH_WAIT_MS must be an integer"):
        Settings.from_env()
