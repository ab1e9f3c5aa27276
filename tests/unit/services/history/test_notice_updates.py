"""A task notice carries the update requests of its run as of the commit that wrote it
(services/history/relay.py, notices.py), so that the frontend handing a noticed workflow task
to a waiting poll between processes need not read them (docs/colocation.md)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
from collections.abc import Sequence
from typing import Any

import pytest

from services.common import kafka, outage
from services.common.kafka import Published, Record
from services.common.matching.notices import UNPUBLISHED, TaskNotice, notices_from_json, notices_to_json
from services.common.matching.tasks import WORKFLOW, MatchedTask
from services.common.reply_notices import NO_UPDATES, TaskUpdates
from services.history import relay
from services.history.builder import OutboxMessage
from services.history.notices import MatchingNotices
from services.history.relay import OutboxRelay
from tests.helpers import eventually
from tests.unit.services.history.test_notices import FakeClient
from tests.unit.services.history.test_shard_units import Store, _state

pytestmark = pytest.mark.timeout(15)
log = logging.getLogger(__name__)


class Recorder:
    """Task notices as the relay tells them (notices.TaskNotices)."""

    def __init__(self) -> None:
        self.told: list[tuple[list[Record], TaskUpdates]] = []

    def committed(self, records: Sequence[Record], updates: TaskUpdates = NO_UPDATES) -> None:
        self.told.append((list(records), updates))

    def covers(self, topic: str, key: bytes | None) -> bool:
        return topic == kafka.TASKS

    async def close(self) -> None:
        pass


@dataclasses.dataclass
class Mut:
    outbox: tuple[OutboxMessage, ...]
    state: Any


async def test_the_relay_tells_each_committed_task_with_its_runs_update_requests_before_publishing(
        monkeypatch: pytest.MonkeyPatch) -> None:
    published: list[list[bytes]] = []
    broker_answers = asyncio.Event()

    async def publish(producer: Any, records: Any) -> list[Published]:
        await broker_answers.wait()  # the produce round trip has not ended
        published.append([v for _, _, v, _ in records])
        return [Published(t, 0, i) for i, (t, _, _, _) in enumerate(records)]

    monkeypatch.setattr(kafka, "publish", publish)
    state = await _state()
    waiting = [{"update_id": "u1", "name": "set", "input": "[1]"}]
    monkeypatch.setattr(relay, "waiting_updates", lambda s: waiting if s is state else [])
    store = Store()
    store.pending = [(1, OutboxMessage(kafka.TASKS, b"k", b"recovered"))]  # left by the previous owner
    notices = Recorder()
    r = OutboxRelay(0, store, None, outage.Backoff("relay", log), at_commit=notices)
    await r.recover()
    # The recovered task's commit is not known here: its poll reads them.
    assert notices.told == [([(kafka.TASKS, b"k", b"recovered", ())], NO_UPDATES)]
    task, reply = OutboxMessage(kafka.TASKS, b"k", b"task"), OutboxMessage(kafka.REPLIES, b"f", b"reply")
    rows = r.number([Mut((task,), state)], [reply])  # type: ignore[list-item]
    running = asyncio.create_task(r.run())
    try:
        await asyncio.sleep(0)
        r.committed(rows, [Mut((task,), state)])  # type: ignore[list-item]
        # Told at the commit, while the broker has yet to answer the publication: only the task.
        assert notices.told[1] == ([(kafka.TASKS, b"k", b"task", ())], {b"task": waiting})
        assert published == []
        broker_answers.set()
        await eventually(lambda: published, what="the publication")
        assert len(notices.told) == 2  # and not told again once published
    finally:
        running.cancel()


async def test_matching_notices_carry_them_per_task() -> None:
    client = FakeClient()
    notices = MatchingNotices(client)  # type: ignore[arg-type]
    records: list[Record] = [(kafka.TASKS, b"k", b"wt", ()), (kafka.TASKS, b"k", b"old", ())]
    notices.committed(records, {b"wt": []})
    await asyncio.sleep(0)
    await notices.close()
    p = kafka.partition_for(b"k", 4)
    assert client.sent == [(p, [TaskNotice(UNPUBLISHED, b"wt", (), []), TaskNotice(UNPUBLISHED, b"old")])]


def test_a_notice_and_a_task_keep_them_across_the_internal_api() -> None:
    waiting = [{"update_id": "u1", "name": "set", "input": "[1]"}]
    notice = TaskNotice(3, b"v", (), waiting)
    _, back = notices_from_json(json.loads(json.dumps(notices_to_json(0, [notice, TaskNotice(4, b"w")]))))
    assert back == [notice, TaskNotice(4, b"w")] and back[1].updates is None
    task = MatchedTask(WORKFLOW, "t", {"run_id": "r"}, updates=waiting)
    assert MatchedTask.from_json(json.loads(json.dumps(task.to_json()))).updates == waiting
    assert MatchedTask.from_json(json.loads(json.dumps(MatchedTask(WORKFLOW, "t", {}).to_json()))).updates is None
    with pytest.raises(TypeError):
        notices_from_json({"partition": 0, "tasks": [{"offset": 1, "value": "", "updates": "no"}]})
