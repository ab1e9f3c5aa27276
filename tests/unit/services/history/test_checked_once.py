"""A command this process's frontend checked (validation.check_command, under the limits
history runs with) is not checked again by history; every other command is: one fetched
from the broker, one noticed by a frontend elsewhere, or one checked under other limits
(services/history/runner.py ``_command``, docs/colocation.md)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka.structs import ConsumerRecord

from kadence_protocol import avro
from services.common import validation
from services.history import runner as runner_module
from services.history.neighbours import HandedCommand
from services.history.runner import Admission, BatchRunner
from services.history.service import HistoryService

pytestmark = pytest.mark.timeout(10)

LIMITS = validation.Limits(max_payload_bytes=4096)
SIGNAL = {"namespace": "default", "workflow_id": "wf", "run_id": None, "signal_name": "s", "input": "[1]",
          "request_id": "r1", "identity": "", "reply_to": ""}


def _value() -> bytes:
    return avro.encode("SignalWorkflowExecution", SIGNAL)


async def _run(record: Any, monkeypatch: pytest.MonkeyPatch) -> tuple[list[str], list[dict[str, Any]]]:
    """Run ``record`` through the runner's admission: the names checked and the commands run."""
    checked: list[str] = []
    ran: list[dict[str, Any]] = []
    real = validation.check_command

    def check(name: str, cmd: dict[str, Any], limits: validation.Limits) -> None:
        checked.append(name)
        real(name, cmd, limits)

    monkeypatch.setattr(runner_module.validation, "check_command", check)

    async def handler(ctx: Any, cmd: dict[str, Any]) -> None:
        ran.append(cmd)

    async def admit(ctx: Any, name: str, cmd: Any, offset: int) -> bool:
        return True

    fake = SimpleNamespace(admission=Admission({"SignalWorkflowExecution": handler}, LIMITS),
                           intake=SimpleNamespace(consumed=5), ledger=SimpleNamespace(admit=admit), shard_id=0)
    ctx = SimpleNamespace(headers=(), offset=0)
    assert await BatchRunner._command(fake, ctx, record) is None  # type: ignore[arg-type]
    return checked, ran


async def test_a_command_the_frontend_here_checked_under_the_same_limits_is_not_checked_again(
        monkeypatch: pytest.MonkeyPatch) -> None:
    handed = HandedCommand("kadence.requests", 0, 5, b"default/wf", _value(), (), validation.Limits(4096))
    checked, ran = await _run(handed, monkeypatch)
    assert checked == [] and ran[0]["signal_name"] == "s"


@pytest.mark.parametrize("record", [
    HandedCommand("kadence.requests", 0, 5, b"default/wf", _value()),  # noticed from elsewhere: not checked here
    HandedCommand("kadence.requests", 0, 5, b"default/wf", _value(), (), validation.Limits(1 << 20)),  # other limits
    ConsumerRecord("kadence.requests", 0, 5, 0, 0, b"default/wf", _value(), None, 0, 0, []),  # fetched
])
async def test_every_other_command_is_checked(record: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    checked, ran = await _run(record, monkeypatch)
    assert checked == ["SignalWorkflowExecution"] and len(ran) == 1


async def test_the_limits_a_command_was_checked_under_go_with_it_to_the_shard() -> None:
    offered: list[Any] = []
    shard = SimpleNamespace(stopped=False, offer_early=lambda command, acked: offered.append(command),
                            offer=offered.append, queued=lambda key: None, answered=lambda key, offset: None)
    service = HistoryService.__new__(HistoryService)
    service._gate = None
    service._consumer = None
    service._stopping = False
    service.shards = {0: shard}  # type: ignore[dict-item]
    acked: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    service.take_queued(0, b"k", b"v", (), acked, LIMITS)
    acked.set_result(SimpleNamespace(offset=9))
    await asyncio.sleep(0)
    assert [(c.offset, c.checked) for c in offered] == [(-1, LIMITS), (9, LIMITS)]
