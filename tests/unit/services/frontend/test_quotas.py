"""Per-namespace limits of one frontend (services/frontend/quotas.py), on a hand-driven clock."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

import pytest

from services.common.namespaces import NamespaceLimits as Limits
from services.frontend.errors import ResourceExhausted
from services.frontend.quotas import BURST_S, Kind, Quotas, TokenBucket

pytestmark = pytest.mark.timeout(10)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_bucket_passes_its_burst_then_its_rate() -> None:
    bucket = TokenBucket(10.0, now=0.0)
    assert all(bucket.take(0.0, 1) == 0.0 for _ in range(int(10 * BURST_S)))
    assert bucket.take(0.0, 1) == pytest.approx(0.1)
    assert bucket.take(0.1, 1) == 0.0  # one token back after 1/rate
    assert bucket.take(0.1, 1) > 0


def test_a_batch_larger_than_the_burst_passes_and_its_debt_is_waited_out() -> None:
    bucket = TokenBucket(100.0, now=0.0)
    assert bucket.take(0.0, 1000) == 0.0
    wait = bucket.take(0.0, 1)
    assert wait == pytest.approx((1 - (200 - 1000)) / 100)  # 8.01 s: the batch's cost beyond the burst
    assert bucket.take(wait, 1) == 0.0


def test_one_namespace_over_its_rate_is_refused_and_another_is_not() -> None:
    clock = Clock()
    quotas = Quotas(Limits(rps=5.0), clock=clock)
    for _ in range(10):
        quotas.admit("flood", Kind.API)
    with pytest.raises(ResourceExhausted) as refused:
        quotas.admit("flood", Kind.API)
    body = refused.value.body()
    assert (refused.value.status, body["error"], body["namespace"], body["limit"], body["limit_value"]) == (
        429, "ResourceExhausted", "flood", "rps", 5)
    assert body["retry_after_ms"] == 200
    assert refused.value.headers() == {"Retry-After": "1"}
    assert "'flood'" in body["message"] and "5 requests a second" in body["message"]
    quotas.admit("quiet", Kind.API)  # a bucket of its own
    assert quotas.refused == {("flood", Kind.API): 1}
    clock.now += 0.2
    quotas.admit("flood", Kind.API)


def test_visibility_has_its_own_bucket() -> None:
    quotas = Quotas(Limits(rps=1.0, visibility_rps=1.0), clock=Clock())
    quotas.admit("ns", Kind.API)
    quotas.admit("ns", Kind.API)
    quotas.admit("ns", Kind.VISIBILITY)  # the API's bucket is empty, not this one
    quotas.admit("ns", Kind.VISIBILITY)
    with pytest.raises(ResourceExhausted) as refused:
        quotas.admit("ns", Kind.VISIBILITY)
    assert refused.value.body()["limit"] == "visibility_rps"


def test_no_default_means_no_limit() -> None:
    quotas = Quotas(Limits(), clock=Clock())
    for _ in range(10_000):
        quotas.admit("ns", Kind.API)
        quotas.poll_opened("ns")
    assert quotas.refused == {}


def test_open_polls_are_capped_per_namespace_and_freed_when_they_end() -> None:
    quotas = Quotas(Limits(concurrent_polls=2), clock=Clock())
    quotas.poll_opened("ns")
    quotas.poll_opened("ns")
    with pytest.raises(ResourceExhausted) as refused:
        quotas.poll_opened("ns")
    assert (refused.value.body()["limit"], refused.value.body()["limit_value"]) == ("concurrent_polls", 2)
    quotas.poll_opened("other")
    quotas.poll_closed("ns")
    quotas.poll_opened("ns")
    assert (quotas.open_polls("ns"), quotas.open_polls("other")) == (2, 1)
    for _ in range(2):
        quotas.poll_closed("ns")
    assert quotas.open_polls("ns") == 0


def test_an_override_replaces_the_default_for_its_namespace_alone() -> None:
    quotas = Quotas(Limits(rps=1000.0, concurrent_polls=10), clock=Clock())
    quotas.set_override("small", Limits(rps=1.0))
    assert quotas.limits("small") == Limits(rps=1.0, concurrent_polls=10)
    assert quotas.limits("big") == Limits(rps=1000.0, concurrent_polls=10)
    quotas.admit("small", Kind.API)
    quotas.admit("small", Kind.API)
    with pytest.raises(ResourceExhausted):
        quotas.admit("small", Kind.API)
    quotas.set_override("small", Limits())  # back to the default: a fresh, larger bucket
    quotas.admit("small", Kind.API)


async def test_overrides_are_read_in_the_background_at_most_once_per_refresh() -> None:
    clock = Clock()
    reads: list[float] = []
    stored: dict[str, Limits] = {}

    async def read() -> Mapping[str, Limits]:
        reads.append(clock.now)
        return dict(stored)

    quotas = Quotas(Limits(rps=1000.0), read, refresh_s=5.0, clock=clock)
    quotas.admit("ns", Kind.API)  # the first call starts a read and does not wait for it
    await asyncio.sleep(0)
    assert reads == [100.0]
    stored["ns"] = Limits(rps=1.0)  # another frontend changed it
    clock.now += 1
    quotas.admit("ns", Kind.API)
    await asyncio.sleep(0)
    assert reads == [100.0] and quotas.limits("ns").rps == 1000.0
    clock.now += 5
    quotas.admit("ns", Kind.API)
    for _ in range(3):
        await asyncio.sleep(0)
    assert reads == [100.0, 106.0] and quotas.limits("ns").rps == 1.0
    await quotas.close()


async def test_a_failed_read_keeps_the_limits_in_force() -> None:
    clock = Clock()

    async def read() -> Mapping[str, Limits]:
        raise OSError("database down")

    quotas = Quotas(Limits(rps=3.0), read, clock=clock)
    quotas.set_override("ns", Limits(rps=1.0))
    quotas.admit("ns", Kind.API)
    for _ in range(3):
        await asyncio.sleep(0)
    assert quotas.limits("ns").rps == 1.0
    await quotas.close()


def test_a_call_whose_cost_is_known_later_passes_with_any_token_and_then_pays_it() -> None:
    clock = Clock()
    quotas = Quotas(Limits(rps=10.0), clock=clock)
    quotas.admit("ns", Kind.API, 0.0)  # a batch of starts, before its body is read
    quotas.charge("ns", Kind.API, 500)  # ...which held 500
    with pytest.raises(ResourceExhausted) as refused:
        quotas.admit("ns", Kind.API, 0.0)  # the next batch is refused before its body is read
    assert refused.value.body()["retry_after_ms"] == (1 - (20 - 500)) * 100
    clock.now += 48.2
    quotas.admit("ns", Kind.API, 0.0)


async def test_a_read_that_began_before_a_change_made_here_does_not_undo_it() -> None:
    clock = Clock()
    stored: dict[str, Limits] = {}
    reading, release = asyncio.Event(), asyncio.Event()

    async def read() -> Mapping[str, Limits]:
        before = dict(stored)  # what the SELECT saw: the row before the PATCH below
        reading.set()
        await release.wait()
        return before

    quotas = Quotas(Limits(rps=1000.0), read, refresh_s=5.0, clock=clock)
    quotas.admit("ns", Kind.API)  # starts a background read
    await reading.wait()
    stored["ns"] = Limits(rps=1.0)  # the PATCH commits ...
    quotas.set_override("ns", Limits(rps=1.0))  # ... and this frontend applies it at once
    release.set()
    for _ in range(3):
        await asyncio.sleep(0)
    assert quotas.limits("ns").rps == 1.0  # not the stale read's default, for up to refresh_s
    clock.now += 6  # the next read sees the row
    quotas.admit("ns", Kind.API)
    for _ in range(3):
        await asyncio.sleep(0)
    assert quotas.limits("ns").rps == 1.0
    await quotas.close()


def test_worker_answers_have_a_bucket_of_their_own_at_the_clusters_rate() -> None:
    quotas = Quotas(Limits(rps=1.0, answer_rps=5.0), clock=Clock())
    quotas.set_override("ns", Limits(rps=1.0))
    for _ in range(2):
        quotas.admit("ns", Kind.API)
    with pytest.raises(ResourceExhausted):
        quotas.admit("ns", Kind.API)
    for _ in range(10):  # the API's bucket is empty; the answers' holds 2 s of 5 a second
        quotas.admit("ns", Kind.ANSWERS)
    with pytest.raises(ResourceExhausted) as refused:
        quotas.admit("ns", Kind.ANSWERS)
    assert refused.value.body()["limit"] == "answer_rps" and "worker answers a second" in str(refused.value)
    unlimited = Quotas(Limits(rps=1.0), clock=Clock())
    for _ in range(1000):
        unlimited.admit("ns", Kind.ANSWERS)


def test_a_namespace_may_have_its_own_answer_rate_and_a_change_takes_effect_at_once() -> None:
    quotas = Quotas(Limits(answer_rps=1.0), clock=Clock())
    quotas.set_override("busy", Limits(answer_rps=50.0))
    for _ in range(100):  # 2 s of 50 a second
        quotas.admit("busy", Kind.ANSWERS)
    with pytest.raises(ResourceExhausted) as refused:
        quotas.admit("busy", Kind.ANSWERS)
    assert refused.value.body()["limit_value"] == 50
    for _ in range(2):  # the others keep the cluster's 1 a second
        quotas.admit("other", Kind.ANSWERS)
    with pytest.raises(ResourceExhausted):
        quotas.admit("other", Kind.ANSWERS)
    quotas.set_override("other", Limits(answer_rps=10.0))  # raised: a bucket of the new size now
    for _ in range(20):
        quotas.admit("other", Kind.ANSWERS)
    quotas.set_override("busy", Limits())  # back to the default
    assert quotas.limits("busy").answer_rps == 1.0
