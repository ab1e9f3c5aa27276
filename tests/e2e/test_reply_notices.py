"""Reply notices (services/common/reply_notices.py): history tells the frontend in another
process of the replies a commit addressed to it, and a command is answered without waiting
for the reply consumer's fetch. Only a hint: with notices lost, off, or the frontend's
internal endpoint down, every command is still answered through the fetch."""

from __future__ import annotations

import asyncio

import pytest

from kadence import Client
from services.cluster import Cluster
from services.common import kafka
from services.common.command_notices import owner_address
from services.common.kafka import Record
from services.common.reply_notices import ReplyNotices
from tests.helpers import eventually

from .test_command_notices import _run_workflows, separate
from .workflows import EchoWorkflow

__all__ = ["separate"]  # the fixture, shared with test_command_notices

pytestmark = pytest.mark.timeout(120)


def _reply_notices(cluster: Cluster) -> ReplyNotices:
    notices = cluster.history.reply_notices
    assert notices is not None
    return notices


async def test_a_command_is_answered_by_the_notice_with_the_reply_fetch_paused(separate: Cluster) -> None:
    await eventually(lambda: len(separate.history.owned()) == 2, timeout=20, what="history owning both shards")
    router = separate.frontend._replies
    assert router is not None
    consumer = router._consumer
    tps = list(consumer.assignment())
    assert tps and all(tp.topic == kafka.REPLIES for tp in tps)
    consumer.pause(*tps)  # the fetch cannot deliver: only the notice can
    client = await Client.connect(separate.url, namespace="default")
    try:
        for i in range(3):
            handle = await asyncio.wait_for(
                client.start_workflow(EchoWorkflow.run, "x", id=f"reply-noticed-{i}", task_queue="q-reply"), 10)
            assert handle.run_id
    finally:
        consumer.resume(*tps)
        await client.close()
    assert _reply_notices(separate).counts.sent >= 3
    reply_notices = separate.frontend.reply_notices
    assert reply_notices is not None and reply_notices.received >= 3


async def test_with_reply_notices_workflows_complete(separate: Cluster) -> None:
    await _run_workflows(separate.url, "q-reply-on")
    counts = _reply_notices(separate).counts
    assert counts.sent > 0 and counts.failed == 0


async def test_with_every_reply_notice_lost_commands_are_answered_through_the_fetch(
        separate: Cluster, monkeypatch: pytest.MonkeyPatch) -> None:
    def lost(self: ReplyNotices, records: list[Record], updates: object = None) -> None:
        pass

    monkeypatch.setattr(ReplyNotices, "committed", lost)
    await _run_workflows(separate.url, "q-reply-lost")
    reply_notices = separate.frontend.reply_notices
    assert reply_notices is not None and reply_notices.received == 0


async def test_with_the_frontend_endpoint_down_commands_are_answered_through_the_fetch(separate: Cluster) -> None:
    server = separate.frontend.reply_notices
    assert server is not None
    await server.stop()  # reply_to still names its address: every notice fails
    await _run_workflows(separate.url, "q-reply-down")
    counts = _reply_notices(separate).counts
    assert counts.failed > 0 and counts.sent == 0


@pytest.mark.parametrize("separate", [{"reply_notices": False}], indirect=True, ids=["reply-notices-off"])
async def test_with_reply_notices_off_commands_are_answered_through_the_fetch(separate: Cluster) -> None:
    assert separate.history.reply_notices is None and separate.frontend.reply_notices is None
    router = separate.frontend._replies
    assert router is not None and owner_address(router._instance_id) is None  # reply_to is the instance id
    await _run_workflows(separate.url, "q-reply-off")

