"""The fetch waits of consumers whose hop notices carry (services/common/fetch_waits.py)."""

from __future__ import annotations

import dataclasses

import pytest

from services.cluster import IN_PROCESS_FETCH_WAITS_MS
from services.common.config import Settings
from services.common.fetch_waits import NOTICED_WAITS_MS, Consumer, fetch_wait_ms


@pytest.mark.parametrize("consumer", list(Consumer))
def test_a_noticed_hop_takes_the_longer_wait_of_one_process(consumer: Consumer) -> None:
    settings = Settings()
    assert fetch_wait_ms(settings, consumer, noticed=True) == NOTICED_WAITS_MS[consumer]
    assert NOTICED_WAITS_MS[consumer] == IN_PROCESS_FETCH_WAITS_MS[consumer.value]
    assert NOTICED_WAITS_MS[consumer] > getattr(settings, consumer.value)


@pytest.mark.parametrize("consumer", list(Consumer))
def test_a_hop_without_notices_keeps_the_short_wait(consumer: Consumer) -> None:
    settings = Settings()
    assert fetch_wait_ms(settings, consumer, noticed=False) == getattr(settings, consumer.value)


@pytest.mark.parametrize("consumer", list(Consumer))
def test_a_wait_chosen_otherwise_is_kept(consumer: Consumer) -> None:
    settings = dataclasses.replace(Settings(), **{consumer.value: 7})
    assert fetch_wait_ms(settings, consumer, noticed=True) == 7
    settings = Settings.from_env()
    assert fetch_wait_ms(dataclasses.replace(settings, **{consumer.value: 500}), consumer, noticed=True) == 500
