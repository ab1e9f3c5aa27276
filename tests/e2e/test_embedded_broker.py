"""The embedded broker's start (services/common/embedded.py) when another process takes the
free port it picked before the broker binds it: it starts on another free port."""

from __future__ import annotations

import socket

import pytest

from services.common import embedded, kafka
from services.common.embedded import EmbeddedBroker

pytestmark = pytest.mark.timeout(60)


@pytest.mark.parametrize("listening", [True, False], ids=["taken-and-listening", "taken"])
async def test_a_port_taken_before_the_broker_binds_it_is_picked_again(
        listening: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        if listening:
            taken.listen()  # another server, answering connections on it
        picks = [taken.getsockname()[1]]  # the first pick, taken once picked
        free_port = embedded.free_port
        monkeypatch.setattr(embedded, "free_port", lambda: picks.pop() if picks else free_port())
        broker = await EmbeddedBroker.start()
        try:
            assert broker.port != taken.getsockname()[1] and broker.process.poll() is None
            await kafka.ensure_topics(broker.bootstrap, 1, 1, None)  # a Kafka broker answers there
        finally:
            broker.stop()
