"""New run ids (services/history/run_ids.py): time-ordered UUIDs, as hex."""

from __future__ import annotations

import uuid

from services.history import engine
from services.history.run_ids import new_run_id
from tests.unit import _answers as answers
from tests.unit.services.history.test_state import MemoryContext, _ref, _start


def test_a_run_id_is_a_version_7_uuid_carrying_its_creation_time() -> None:
    run_id = new_run_id(now_ms=lambda: 1_796_600_000_123)
    parsed = uuid.UUID(hex=run_id)
    assert len(run_id) == 32 and run_id == parsed.hex
    assert (parsed.version, parsed.variant) == (7, uuid.RFC_4122)
    assert parsed.int >> 80 == 1_796_600_000_123


def test_later_ids_sort_after_earlier_ones_and_ids_of_one_millisecond_differ() -> None:
    ids = [new_run_id(now_ms=lambda ms=ms: ms) for ms in range(1_000_000, 1_000_500)]
    assert ids == sorted(ids)
    same = {new_run_id(now_ms=lambda: 5) for _ in range(10_000)}
    assert len(same) == 10_000


def test_the_random_part_is_the_random_bytes_given() -> None:
    ones = uuid.UUID(hex=new_run_id(now_ms=lambda: 0, random_bytes=lambda n: b"\xff" * n))
    zeros = uuid.UUID(hex=new_run_id(now_ms=lambda: 0, random_bytes=lambda n: b"\x00" * n))
    assert ones.int - zeros.int == (0xFFF << 64) | ((1 << 62) - 1)  # 74 random bits, nothing else
    assert (ones.version, zeros.version) == (7, 7)


async def test_a_started_run_and_the_run_it_continues_as_get_time_ordered_ids() -> None:
    ctx = MemoryContext()
    await engine.start_workflow(ctx, _start())
    first = ctx.runs[ctx.current[("ns", "wf")]]
    await answers.workflow_task_completed(ctx, _ref(first, 2) | {"commands": [{
        "command_type": "ContinueAsNewWorkflowExecution",
        "attributes": {"workflow_type": "", "task_queue": "", "input": "[]"}}]})
    second = ctx.runs[ctx.current[("ns", "wf")]]
    assert second.run_id != first.run_id
    for run_id in (first.run_id, second.run_id):
        assert uuid.UUID(hex=run_id).version == 7
    assert first.run_id < second.run_id or first.run_id[:12] == second.run_id[:12]  # same ms: random order
