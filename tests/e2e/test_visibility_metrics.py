"""The visibility projection's lag and delay, scraped from the Prometheus endpoint."""

from __future__ import annotations

import uuid

import aiohttp
import pytest

from kadence import Client, Worker
from tests.helpers import eventually

from .test_metrics import _value
from .test_visibility import VisOrder

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(autouse=True)
def _meter_first(metrics_url: str) -> None:
    """The meter provider is installed before the cluster fixture starts the services."""


async def test_visibility_lag_and_delay_are_metrics(client: Client, metrics_url: str) -> None:
    tag = uuid.uuid4().hex[:6]
    async with Worker(client, task_queue=f"vm-{tag}", workflows=[VisOrder]):
        await client.execute_workflow(VisOrder.run, 1, id=f"vm-{tag}", task_queue=f"vm-{tag}")

    async def scraped() -> str:
        async with aiohttp.ClientSession() as http, http.get(metrics_url) as resp:
            text = await resp.text()
        # Every event of the run projected (the delay observed per run and fetch), nothing behind.
        done = "kadence_visibility_lag{" in text and _value(text, "kadence_visibility_lag") == 0 and \
            _value(text, "kadence_visibility_delay_seconds_count") >= 1
        return text if done else ""
    text = await eventually(scraped, timeout=30, what="the visibility metrics")
    assert _value(text, "kadence_visibility_delay_seconds_sum") < 30
