"""Bisection of a batch the store refuses (services/history/poison.py), with a fake commit."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.history import poison

pytestmark = pytest.mark.timeout(60)


class FakeStore:
    """Commits runs of units as one transaction: refused whole if any unit is poison."""

    def __init__(self, poisoned: set[int], error: type[Exception] = asyncpg.CharacterNotInRepertoireError) -> None:
        self.poisoned = poisoned
        self.error = error
        self.committed: list[int] = []  # in commit order
        self.dead: list[int] = []
        self.offset = 0  # the stored offset: the next unit to take
        self.attempts = 0

    async def commit(self, units: Sequence[int]) -> None:
        self.attempts += 1
        assert units[0] == self.offset, "a run must start where the stored offset stands"
        if any(u in self.poisoned for u in units):
            raise self.error("invalid byte sequence for encoding \"UTF8\": 0x00")
        self.committed.extend(units)
        self.offset = units[-1] + 1

    async def give_up(self, unit: int, exc: Exception) -> None:
        assert unit == self.offset and isinstance(exc, self.error)
        self.dead.append(unit)
        self.offset = unit + 1  # dead-lettered, and the offset committed past it


async def test_one_poison_command_is_isolated_and_the_rest_commit_in_order() -> None:
    store = FakeStore({5})
    await poison.bisect(list(range(10)), store.commit, store.give_up)
    assert store.dead == [5]
    assert store.committed == [0, 1, 2, 3, 4, 6, 7, 8, 9]
    assert store.offset == 10


async def test_a_batch_known_to_have_failed_is_not_committed_whole_again() -> None:
    store = FakeStore({0})
    await poison.bisect([0], store.commit, store.give_up, failed=asyncpg.CharacterNotInRepertoireError("x"))
    assert store.attempts == 0 and store.dead == [0] and store.offset == 1


@pytest.mark.parametrize("error", [asyncpg.NumericValueOutOfRangeError, asyncpg.UntranslatableCharacterError,
                                   asyncpg.ProgramLimitExceededError, asyncpg.UniqueViolationError,
                                   asyncpg.DataError])
async def test_content_errors_are_told_by_class(error: type[Exception]) -> None:
    store = FakeStore({1, 2}, error)
    await poison.bisect([0, 1, 2, 3], store.commit, store.give_up)
    assert store.dead == [1, 2] and store.committed == [0, 3]


@pytest.mark.parametrize("error", [ConnectionRefusedError, asyncpg.InterfaceError,
                                   asyncpg.CannotConnectNowError, asyncpg.AdminShutdownError])
async def test_outages_are_not_bisected_but_raised_to_the_retry(error: type[Exception]) -> None:
    store = FakeStore({1}, error)
    with pytest.raises(error):
        await poison.bisect([0, 1, 2], store.commit, store.give_up)
    assert store.dead == [] and store.committed == [] and store.attempts == 1
    assert not poison.is_content_error(error("x"))


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=1, max_value=64).flatmap(
    lambda n: st.tuples(st.just(n), st.sets(st.integers(min_value=0, max_value=n - 1)))))
async def test_any_poison_set_is_found_exactly_and_the_offset_only_moves_forward(case: tuple[int, set[int]]) -> None:
    n, poisoned = case
    store = FakeStore(poisoned)
    await poison.bisect(list(range(n)), store.commit, store.give_up)
    assert store.dead == sorted(poisoned)
    assert store.committed == [u for u in range(n) if u not in poisoned]
    assert store.offset == n


def test_units_split_a_batch_into_records_and_timer_firings() -> None:
    assert poison.units([[1, 2], "timer", [3]]) == [[1], [2], "timer", [3]]
