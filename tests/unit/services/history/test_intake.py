"""The shard's intake (services/history/intake.py): each offset taken once and in order,
whether it was fetched or handed over, and the consumer told what it need not fetch."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from aiokafka.structs import ConsumerRecord

from kadence_protocol.topics import workflow_key
from services.common import kafka
from services.history.engine import TimerFiring
from services.history.intake import Early, Handed, Intake
from services.history.neighbours import HandedCommand
from tests.helpers import eventually

pytestmark = pytest.mark.timeout(10)


def _fetched(*offsets: int) -> list[ConsumerRecord[bytes, bytes]]:
    return [ConsumerRecord(kafka.REQUESTS, 0, o, 0, 0, b"ns/wf", b"v", None, 0, 0, []) for o in offsets]


def _handed(offset: int) -> HandedCommand:
    return HandedCommand(kafka.REQUESTS, 0, offset, b"ns/wf", b"v")


def _offsets(batch: list[Any]) -> list[Any]:
    return [r.offset if not isinstance(r, TimerFiring) else r.key
            for item in batch for r in (item if isinstance(item, list) else [item])]


class Consumer:
    """The consumer's controls the intake is given."""

    def __init__(self) -> None:
        self.skipped_to: list[int] = []
        self.fetches = 0

    def skip_to(self, offset: int) -> None:
        self.skipped_to.append(offset)

    def fetch_needed(self) -> None:
        self.fetches += 1


def _intake(offset: int = 10, **options: int) -> tuple[Intake, Consumer]:
    intake, consumer = Intake(**options), Consumer()
    intake.start_at(offset, skip_to=consumer.skip_to, fetch_needed=consumer.fetch_needed)
    return intake, consumer


async def test_fetched_records_below_the_offset_taken_are_dropped() -> None:
    intake, _ = _intake(10)
    await intake.feed(_fetched(8, 9, 10, 11))
    batch = intake.batch(await intake.next())
    assert _offsets(batch) == [10, 11] and intake.consumed == 12 and intake.fed == 12
    await intake.feed(_fetched(11))  # a copy fetched again
    assert intake.batch(await intake.next()) == []


async def test_a_handed_command_is_taken_only_as_the_next_offset_and_its_fetched_copy_is_skipped() -> None:
    intake, consumer = _intake(10)
    intake.offer(_handed(11))  # another producer's record 10 comes first
    assert intake.batch(await intake.next()) == [] and consumer.fetches == 1 and intake.consumed == 10
    intake.offer(_handed(10))
    assert _offsets(intake.batch(await intake.next())) == [10]
    intake.after_batch()
    assert consumer.skipped_to == [11]  # the consumer need not fetch it
    await intake.feed(_fetched(10, 11))  # fetched anyway: 10 is not taken twice
    assert _offsets(intake.batch(await intake.next())) == [11]


async def test_a_full_inbox_asks_for_the_fetch_instead_of_waiting() -> None:
    intake, consumer = _intake(0, inbox_size=1)
    await intake.feed(_fetched(0))
    intake.offer(_handed(1))
    assert consumer.fetches == 1


async def test_a_batch_holds_what_waits_up_to_its_size_in_order() -> None:
    intake, _ = _intake(0, max_batch=3)
    await intake.feed(_fetched(0, 1))
    firing = TimerFiring("run/timer/1", 0, "ns", "wf", "run", "timer", 1, 0)
    await intake.fire(firing)
    await intake.feed(_fetched(2, 3))
    assert _offsets(intake.batch(await intake.next())) == [0, 1, "run/timer/1"]
    assert _offsets(intake.batch(await intake.next())) == [2, 3]


async def test_a_command_is_taken_early_only_by_an_idle_loop_and_kept_only_as_the_next_offset() -> None:
    intake, _ = _intake(5)
    acked: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    intake.offer_early(_handed(-1), acked)  # the loop is not waiting: not taken early
    assert intake.empty()
    waiting = asyncio.create_task(intake.next())
    await eventually(intake.settled, what="the loop waiting")
    intake.offer_early(_handed(-1), acked)
    item = await waiting
    assert isinstance(item, Early)
    assert not intake.took_early(7) and intake.consumed == 5  # not the next: the usual path takes it
    assert intake.took_early(5) and intake.consumed == 6


async def test_a_stopped_shard_drains_its_inbox() -> None:
    intake, _ = _intake(0)
    await intake.feed(_fetched(0))
    intake.offer(_handed(1))
    intake.drain()
    assert intake.empty()


def test_handed_items_are_told_apart_from_fetched_ones() -> None:
    assert isinstance(Handed([_handed(1)]), list) and type(Handed()) is not list


async def test_commands_offered_while_one_waits_join_its_item_instead_of_the_fetch() -> None:
    """A burst of handed commands does not overflow the inbox into the fetch: each one that
    follows the last offered joins its item while the loop has not taken it."""
    intake, consumer = _intake(10, inbox_size=2)
    for offset in range(10, 110):
        intake.offer(_handed(offset))
    assert consumer.fetches == 0
    batch = intake.batch(await intake.next())
    assert _offsets(batch) == list(range(10, 110)) and intake.consumed == 110
    intake.offer(_handed(110))  # the item was taken: the next command starts one of its own
    intake.offer(_handed(112))  # not the next offset (another producer's record between): its own item
    batch = intake.batch(await intake.next())
    assert _offsets(batch) == [110] and consumer.fetches == 1  # 112 waits for 111, which the fetch brings


async def test_a_joined_item_is_at_most_a_batch_and_skips_what_was_fetched_first() -> None:
    intake, consumer = _intake(10, max_batch=5, inbox_size=8)
    for offset in range(10, 22):
        intake.offer(_handed(offset))
    await intake.feed(_fetched(22))
    first = await intake.next()
    assert _offsets([first]) == [10, 11, 12, 13, 14]  # an item holds at most max_batch
    assert _offsets(intake.batch(first)) == [10, 11, 12, 13, 14]
    assert _offsets(intake.batch(await intake.next())) == [15, 16, 17, 18, 19]  # a batch is max_batch too
    assert _offsets(intake.batch(await intake.next())) == [20, 21, 22]
    intake2, _ = _intake(10)
    await intake2.feed(_fetched(10, 11))
    intake2.offer(_handed(10))
    intake2.offer(_handed(11))
    intake2.offer(_handed(12))
    assert _offsets(intake2.batch(await intake2.next())) == [10, 11, 12]  # the fetched first, then 12 only
    assert consumer.fetches == 0


def _firing(key: str = "t") -> TimerFiring:
    return TimerFiring(key, 0, "ns", "wf", "run", "user_timer", 1, 0)


async def test_a_firing_is_held_only_while_known_offsets_wait_untaken() -> None:
    intake, _ = _intake(10)
    assert not intake.hold(_firing(), time.time() * 1000 + 10_000, time.time() * 1000 + 60_000)  # nothing on hand
    intake.offer(_handed(10))
    await intake.feed(_fetched(11, 12))
    assert intake.known == 13
    firing = _firing()
    assert intake.hold(firing, time.time() * 1000 + 10_000, time.time() * 1000 + 60_000)
    # Not before the records it waits for: they come first, the firing after.
    assert _offsets(intake.batch(await intake.next())) == [10, 11, 12, "t"]


async def test_a_held_firing_waits_for_offsets_known_after_it_was_held_too() -> None:
    # A burst: the worker's task for the timer reaches the broker after the firing was held,
    # behind the requests the firing waits for. Taken those, it waits for the newer ones too.
    intake, _ = _intake(10)
    await intake.feed(_fetched(10, 11))
    firing = _firing()
    assert intake.hold(firing, time.time() * 1000 + 10_000, time.time() * 1000 + 60_000)
    intake.offer(_handed(12))
    intake.offer(_handed(13))  # joins 12's inbox item
    await intake.feed(_fetched(14))
    assert _offsets(intake.batch(await intake.next())) == [10, 11, 12, 13, 14, "t"]


async def test_a_firing_is_held_for_the_records_after_it_in_its_own_batch() -> None:
    # The firing came in before the task that would take its timer; both in one batch: the
    # task counts as taken when the batch is made, but it has not run when the firing does.
    intake, _ = _intake(10)
    await intake.fire(_firing())
    intake.offer(_handed(10))
    batch = intake.batch(await intake.next())
    assert _offsets(batch) == ["t", 10] and intake.consumed == 11
    firing = batch[0]
    assert intake.hold(firing, time.time() * 1000 + 10_000, time.time() * 1000 + 60_000)  # run first, before 10
    intake.after_batch()
    assert await intake.next() is firing  # back once the batch with 10 has run
    intake.offer(_handed(11))
    await intake.fire(_firing("u"))
    batch = intake.batch(await intake.next())
    assert _offsets(batch) == [11, "u"]
    assert not intake.hold(batch[1], time.time() * 1000 + 10_000, time.time() * 1000 + 60_000)  # after the records: nothing to wait for


async def test_past_its_re_checks_a_held_firing_waits_only_for_what_came_before_it() -> None:
    # A shard that stays behind: past the re-check time, the firing waits for the offsets
    # known when it was last checked (however long they take), not for the newer ones.
    intake, _ = _intake(10)
    await intake.feed(_fetched(10))
    firing = _firing()
    recheck_until = time.time() * 1000 + 50
    assert intake.hold(firing, recheck_until, recheck_until + 60_000)
    await intake.feed(_fetched(11))
    assert _offsets(intake.batch(await intake.next())) == [10, 11, "t"]  # re-checked: 11 too
    await intake.feed(_fetched(12))
    await eventually(lambda: time.time() * 1000 >= recheck_until, what="the re-checks over")
    late = _firing("late")
    assert intake.hold(late, recheck_until, recheck_until + 60_000)  # still held for what came before it
    await intake.feed(_fetched(13))
    assert _offsets(intake.batch(await intake.next())) == [12, "late", 13]
    await intake.feed(_fetched(14))
    # Let go, it comes back to the engine, which asks again: it is not held a second time.
    assert not intake.hold(late, recheck_until, recheck_until + 60_000)
    intake.after_batch()
    assert intake.hold(_firing("another"), recheck_until, recheck_until + 60_000)


async def test_a_stopped_shard_forgets_its_held_firings() -> None:
    intake, _ = _intake(10)
    await intake.feed(_fetched(10))
    assert intake.hold(_firing(), time.time() * 1000 + 10_000, time.time() * 1000 + 60_000)
    intake.drain()
    await intake.feed(_fetched(11))
    assert _offsets(intake.batch(await intake.next())) == [11]
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(intake.next(), 0.1)


async def test_held_firings_come_back_together_in_one_batch() -> None:
    intake, _ = _intake(10)
    await intake.feed(_fetched(10))
    firings = [_firing(str(i)) for i in range(3)]
    for firing in firings:
        assert intake.hold(firing, time.time() * 1000 + 10_000, time.time() * 1000 + 60_000)
    assert _offsets(intake.batch(await intake.next())) == [10, "0", "1", "2"]


async def test_a_held_firing_comes_back_at_its_guard_whatever_it_waits_for() -> None:
    # 12 was acknowledged to the frontend here, but 11 (another producer's) has not been
    # fetched: 12 never comes in as an item the intake can take, and the firing waiting for
    # it comes back at its guard, not when the shard is rebuilt.
    intake, consumer = _intake(10)
    await intake.feed(_fetched(10))
    intake.offer(_handed(12))
    firing = _firing()
    now_ms = time.time() * 1000
    assert intake.hold(firing, now_ms + 10_000, now_ms + 100)
    assert _offsets(intake.batch(await intake.next())) == [10] and consumer.fetches == 1
    assert await asyncio.wait_for(intake.next(), 5) is firing
    assert time.time() * 1000 >= now_ms + 100  # not before it
    # Let go, it is not held again when it comes back to the engine; past its guard, nothing is.
    assert not intake.hold(firing, now_ms + 10_000, now_ms + 10_000)
    intake.after_batch()
    assert not intake.hold(_firing("late"), now_ms + 10_000, now_ms)
    assert intake.hold(_firing("other"), now_ms + 10_000, now_ms + 10_000)


async def test_a_guard_lets_a_firing_go_ahead_of_those_held_before_it() -> None:
    intake, _ = _intake(10)
    await intake.feed(_fetched(10))
    intake.offer(_handed(12))
    now_ms = time.time() * 1000
    assert intake.hold(_firing("first"), now_ms + 10_000, now_ms + 60_000)
    assert intake.hold(_firing("second"), now_ms + 10_000, now_ms + 50)
    assert _offsets(intake.batch(await intake.next())) == [10]
    assert _offsets(intake.batch(await asyncio.wait_for(intake.next(), 5))) == ["second"]
    intake.after_batch()
    with pytest.raises(TimeoutError):  # the first still waits for 11 and 12
        await asyncio.wait_for(intake.next(), 0.1)


def _run_key() -> bytes:
    return workflow_key("ns", "wf")  # the key of _firing()'s run


async def test_a_firing_waits_for_its_runs_commands_in_flight_to_the_broker() -> None:
    # A frontend here queued the worker's task for the timer; the broker has not answered it
    # yet, so no offset says so. The firing waits for the answer and the record taken.
    intake, _ = _intake(10)
    intake.queued(workflow_key("ns", "other"))
    assert not intake.hold(_firing(), time.time() * 1000 + 10_000, time.time() * 1000 + 60_000)  # not its run's
    intake.queued(_run_key())
    firing = _firing()
    assert intake.hold(firing, time.time() * 1000, time.time() * 1000 + 60_000)  # re-checks over already
    await intake.feed(_fetched(10))  # another run's request: taken, the firing still waits
    assert _offsets(intake.batch(await intake.next())) == [10]
    intake.after_batch()
    intake.answered(_run_key(), 12)  # acknowledged behind 11, which is not taken yet
    intake.offer(_handed(12))
    assert _offsets(intake.batch(await intake.next())) == []  # 11 comes first: fetched
    intake.after_batch()
    await intake.feed(_fetched(11, 12))
    assert _offsets(intake.batch(await intake.next())) == [11, 12, "t"]
    intake.after_batch()
    # Answered, the run has nothing in flight: its next firing is not held.
    assert not intake.hold(_firing("next"), time.time() * 1000, time.time() * 1000 + 60_000)


async def test_a_firing_held_for_a_refused_command_of_its_run_comes_back_once_answered() -> None:
    intake, _ = _intake(10)
    intake.queued(_run_key())
    intake.queued(_run_key())
    firing = _firing()
    assert intake.hold(firing, time.time() * 1000, time.time() * 1000 + 60_000)
    intake.answered(_run_key(), None)
    await intake.fire(_firing("other"))  # something for the loop: the firing still waits for the second
    assert _offsets(intake.batch(await intake.next())) == ["other"]
    intake.after_batch()
    waiting = asyncio.ensure_future(intake.next())
    await asyncio.sleep(0.01)
    assert not waiting.done()
    intake.answered(_run_key(), None)  # wakes the loop waiting for work
    assert _offsets(intake.batch(await asyncio.wait_for(waiting, 5))) == ["t"]
