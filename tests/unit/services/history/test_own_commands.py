"""The relay's own records to kadence.requests, offered to the shards of this process
(services/history/notices.py OwnCommands)."""

from __future__ import annotations

from services.common.command_notices import CommandNotice
from services.common.kafka import REPLIES, REQUESTS, TASKS, Published, Record
from services.history.notices import OwnCommands


def test_only_commands_are_offered_per_partition_with_their_offsets() -> None:
    offered: list[tuple[int, list[CommandNotice]]] = []
    own = OwnCommands(lambda partition, notices: offered.append((partition, notices)))
    records: list[Record] = [(REQUESTS, b"ns/child", b"start", (("traceparent", b"x"),)), (TASKS, b"q", b"task", ()),
                             (REQUESTS, b"ns/other", b"signal", ()), (REPLIES, b"fe", b"reply", ()),
                             (REQUESTS, b"ns/child", b"cancel", ())]
    where = [Published(REQUESTS, 1, 40), Published(TASKS, 0, 3), Published(REQUESTS, 0, 7), Published(REPLIES, 0, 1),
             Published(REQUESTS, 1, 41)]
    own.published(records, where)
    assert sorted(offered, key=lambda o: o[0]) == [
        (0, [CommandNotice(7, b"ns/other", b"signal")]),
        (1, [CommandNotice(40, b"ns/child", b"start", (("traceparent", b"x"),)),
             CommandNotice(41, b"ns/child", b"cancel")])]
