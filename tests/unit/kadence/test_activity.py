"""kadence/_activity.py: an activity given as a bound method keeps its object."""

from __future__ import annotations

import asyncio

import pytest

from kadence import activity
from kadence._activity import ActivityDefinition

pytestmark = pytest.mark.timeout(10)


class Counter:
    def __init__(self) -> None:
        self.n = 0

    @activity.defn(name="bump")
    async def bump(self, by: int) -> int:
        self.n += by
        return self.n


def test_a_bound_method_is_called_on_its_object() -> None:
    counter = Counter()
    definition = ActivityDefinition.of(counter.bump)
    assert definition.name == "bump" and definition.is_async
    assert asyncio.run(definition.fn(2)) == 2 and counter.n == 2
    # The class's function stays what it was: named, unbound.
    assert ActivityDefinition.of(Counter.bump).fn is Counter.bump
