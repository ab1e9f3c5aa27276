"""Retries against a real local HTTP server that fails on purpose: the client's starts and
signals (same request id, bounded), the worker's task answers, a result wait bounded by its
timeout, and a worker that cannot reach its frontend saying so."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web

from kadence import Client, Worker, workflow
from kadence._http import HttpTransport
from kadence._retry import retrying
from kadence._worker.answers import AnswerBatcher
from kadence._worker.poller import REFUSALS_BEFORE_STOPPING, Reachability
from kadence.common import Backoff
from kadence.exceptions import ResourceExhaustedError, RPCError
from tests.helpers import eventually

pytestmark = pytest.mark.timeout(60)

ROOT = "/api/v1/namespaces/default"
FAST = Backoff(attempts=5, first=0.01, cap=0.05)


@dataclass
class Flaky:
    """A frontend stand-in: answers ``fail_first`` requests to each path with ``status``
    (0: drops the connection), then ``reply``; records every body it got."""

    fail_first: int = 0
    status: int = 503
    bodies: dict[str, list[Any]] = field(default_factory=dict)

    def reply(self, path: str, body: Any) -> dict[str, Any]:
        if path.endswith("/task-answers"):
            return {"results": [{"status": 200, "answer": {"n": i}} for i, _ in enumerate(body["answers"])]}
        return {"run_id": "run-1", "ok": path}

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.json() if request.method == "POST" else None
        seen = self.bodies.setdefault(request.path, [])
        seen.append(body)
        if len(seen) <= self.fail_first:
            if self.status == 0:
                assert request.transport is not None
                request.transport.close()  # the connection drops, as when the frontend is killed
                return web.Response()
            return web.json_response({"error": "Unavailable", "message": "try later"}, status=self.status)
        return web.json_response(self.reply(request.path, body))


async def _serve(handler: Callable[[web.Request], Any], *, port: int = 0,
                 max_size: int = 1 << 20) -> tuple[web.AppRunner, str]:
    app = web.Application(client_max_size=max_size)
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    bound = runner.addresses[0][1]
    return runner, f"http://127.0.0.1:{bound}"


@pytest.fixture
async def flaky() -> AsyncIterator[tuple[Flaky, str]]:
    server = Flaky()
    runner, url = await _serve(server.handle)
    try:
        yield server, url
    finally:
        await runner.cleanup()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("status", [503, 504, 0])
async def test_start_is_retried_with_the_same_request_id(flaky: tuple[Flaky, str], status: int) -> None:
    server, url = flaky
    server.fail_first, server.status = 3, status
    async with Client(HttpTransport(url, "default"), retry=FAST) as client:
        handle = await client.start_workflow("Greet", "x", id="w1", task_queue="q")
    assert handle.run_id == "run-1"
    bodies = server.bodies[f"{ROOT}/workflows"]
    assert len(bodies) == 4
    assert len({b["request_id"] for b in bodies}) == 1


async def test_signal_is_retried_with_the_same_request_id(flaky: tuple[Flaky, str]) -> None:
    server, url = flaky
    server.fail_first = 2
    async with Client(HttpTransport(url, "default"), retry=FAST) as client:
        await client.get_workflow_handle("w1").signal("poke", 1)
    bodies = server.bodies[f"{ROOT}/workflows/w1/signal"]
    assert len(bodies) == 3 and len({b["request_id"] for b in bodies}) == 1


async def test_retries_are_bounded(flaky: tuple[Flaky, str]) -> None:
    server, url = flaky
    server.fail_first = 100
    async with Client(HttpTransport(url, "default"), retry=FAST) as client:
        with pytest.raises(RPCError) as caught:
            await client.start_workflow("Greet", id="w1", task_queue="q")
    assert caught.value.status == 503
    assert len(server.bodies[f"{ROOT}/workflows"]) == 5


async def test_connect_takes_the_retry_bound(flaky: tuple[Flaky, str]) -> None:
    """README's "Retries": the bound is a setting of the client every example makes with
    Client.connect, not only of the constructor that takes a transport."""
    server, url = flaky
    server.fail_first = 100
    async with await Client.connect(url, retry=FAST) as client:
        assert client.retry == FAST
        with pytest.raises(RPCError):
            await client.start_workflow("Greet", id="w1", task_queue="q")
    assert len(server.bodies[f"{ROOT}/workflows"]) == 5


async def test_a_refusal_is_not_retried(flaky: tuple[Flaky, str]) -> None:
    server, url = flaky
    server.fail_first, server.status = 100, 400
    async with Client(HttpTransport(url, "default"), retry=FAST) as client:
        with pytest.raises(RPCError):
            await client.start_workflow("Greet", id="w1", task_queue="q")
    assert len(server.bodies[f"{ROOT}/workflows"]) == 1


async def test_start_waits_for_a_frontend_that_comes_up(caplog: pytest.LogCaptureFixture) -> None:
    port = _free_port()
    server = Flaky()
    caplog.set_level(logging.WARNING, logger="kadence.retry")
    async with Client(HttpTransport(f"http://127.0.0.1:{port}", "default"),
                      retry=Backoff(attempts=5, first=0.2, cap=1.0)) as client:
        start = asyncio.ensure_future(client.start_workflow("Greet", id="w1", task_queue="q"))
        await eventually(lambda: any("retrying" in r.getMessage() for r in caplog.records), timeout=5)
        runner, _ = await _serve(server.handle, port=port)  # connection refused until now
        try:
            handle = await asyncio.wait_for(start, 10)
        finally:
            await runner.cleanup()
    assert handle.run_id == "run-1" and len(server.bodies[f"{ROOT}/workflows"]) == 1


@pytest.mark.parametrize("status", [502, 503, 0])
async def test_a_worker_answer_is_sent_again(flaky: tuple[Flaky, str], status: int) -> None:
    server, url = flaky
    server.fail_first, server.status = 3, status
    transport = HttpTransport(url, "default")
    batcher = AnswerBatcher(transport, retry=Backoff(attempts=0, within=10, first=0.01, cap=0.05))
    try:
        answer = await batcher.call("POST", "/activity-tasks/complete", body={"task_token": "t", "result": "1"})
    finally:
        await transport.close()
    assert answer == {"run_id": "run-1", "ok": f"{ROOT}/activity-tasks/complete"}
    assert len(server.bodies[f"{ROOT}/activity-tasks/complete"]) == 4


async def test_a_batch_of_answers_is_sent_again(flaky: tuple[Flaky, str]) -> None:
    server, url = flaky
    server.fail_first = 2
    transport = HttpTransport(url, "default")
    batcher = AnswerBatcher(transport, max_in_flight=1, retry=Backoff(attempts=0, within=10, first=0.01, cap=0.05))
    try:
        answers = await asyncio.gather(*(
            batcher.call("POST", "/activity-tasks/complete", body={"task_token": f"t{i}", "result": "1"})
            for i in range(5)))
    finally:
        await transport.close()
    assert len(answers) == 5
    batches = server.bodies[f"{ROOT}/task-answers"]
    assert len(batches) == 3 and len(batches[-1]["answers"]) == 4  # the first went alone


async def test_result_timeout_holds_against_a_silent_frontend() -> None:
    released = asyncio.Event()

    async def hang(request: web.Request) -> web.StreamResponse:
        await released.wait()  # answers nothing (a frontend stopped with SIGSTOP) until the test ends
        return web.json_response({})

    runner, url = await _serve(hang)
    loop = asyncio.get_running_loop()
    try:
        async with Client(HttpTransport(url, "default")) as client:
            began = loop.time()
            with pytest.raises(TimeoutError):
                await client.get_workflow_handle("w1").result(timeout=0.5)
            assert loop.time() - began < 5
    finally:
        released.set()
        await runner.cleanup()


async def test_result_timeout_holds_against_an_unreachable_frontend() -> None:
    loop = asyncio.get_running_loop()
    async with Client(HttpTransport(f"http://127.0.0.1:{_free_port()}", "default")) as client:
        began = loop.time()
        with pytest.raises(TimeoutError, match="no result within"):
            await client.get_workflow_handle("w1").result(timeout=1)
    assert loop.time() - began < 5


@workflow.defn
class Nothing:
    @workflow.run
    async def run(self) -> None:
        return None


async def test_worker_at_a_wrong_address_warns_at_once(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="kadence._worker.poller")
    async with Client(HttpTransport(f"http://127.0.0.1:{_free_port()}", "default")) as client:
        async with Worker(client, task_queue="q", workflows=[Nothing]):
            record = await eventually(
                lambda: next((r for r in caplog.records if "cannot poll" in r.getMessage()), None), timeout=5)
    assert record.levelno == logging.WARNING and "task queue 'q'" in record.getMessage()


def test_unreachable_warnings_back_off(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="kadence._worker.poller")
    reach = Reachability()
    for _ in range(20):
        reach.failed("/poll", RuntimeError("refused"), 1.0)
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert [m.split("(")[1].split(" ")[0] for m in warned] == ["1", "2", "4", "8", "16"]
    reach.succeeded()
    assert any(r.levelno == logging.INFO and "works again" in r.getMessage() for r in caplog.records)


async def test_retries_stop_at_the_time_bound() -> None:
    calls = 0

    async def down() -> None:
        nonlocal calls
        calls += 1
        raise RPCError(0, "Unavailable", "connection refused")

    loop = asyncio.get_running_loop()
    began = loop.time()
    with pytest.raises(RPCError):
        await retrying(down, backoff=Backoff(attempts=0, within=0.3, first=0.05, cap=0.1),
                       retry_if=lambda err: err.retryable, what="test")
    assert loop.time() - began < 1.0 and 2 <= calls <= 6


@dataclass
class Throttling:
    """A frontend stand-in over a namespace's limit: answers the first ``refuse`` requests to
    each path 429 as the frontend does (quotas.py), then as Flaky would."""

    refuse: int = 0
    retry_after_ms: int = 300
    seen: dict[str, list[tuple[float, Any]]] = field(default_factory=dict)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.json() if request.method == "POST" else None
        seen = self.seen.setdefault(request.path, [])
        seen.append((asyncio.get_running_loop().time(), body))
        if len(seen) <= self.refuse:
            return web.json_response(
                {"error": "ResourceExhausted", "message": "namespace 'default' is over its limit", "field": None,
                 "namespace": "default", "limit": "rps", "limit_value": 5, "retry_after_ms": self.retry_after_ms},
                status=429, headers={"Retry-After": "1"})
        if request.path.endswith("/poll"):
            await asyncio.sleep(0.05)
            return web.json_response({"tasks": []})
        return web.json_response({"run_id": "run-1", "status": "Running"})


@pytest.fixture
async def throttling() -> AsyncIterator[tuple[Throttling, str]]:
    server = Throttling()
    runner, url = await _serve(server.handle)
    try:
        yield server, url
    finally:
        await runner.cleanup()


async def test_a_throttled_start_goes_again_after_retry_after_with_its_request_id(
        throttling: tuple[Throttling, str]) -> None:
    server, url = throttling
    server.refuse = 2
    async with Client(HttpTransport(url, "default"), retry=FAST, batch_calls=False) as client:
        handle = await client.start_workflow("Greet", "x", id="w1", task_queue="q")
    assert handle.run_id == "run-1"
    sent = server.seen[f"{ROOT}/workflows"]
    assert len(sent) == 3 and len({body["request_id"] for _, body in sent}) == 1
    # Each retry waited the frontend's retry_after_ms (0.3 s), not the client's 0.01 s backoff.
    assert all(later - earlier >= 0.29 for (earlier, _), (later, _) in itertools.pairwise(sent))


async def test_a_throttled_start_gives_up_within_its_retry_budget(throttling: tuple[Throttling, str]) -> None:
    server, url = throttling
    server.refuse, server.retry_after_ms = 100, 50
    async with Client(HttpTransport(url, "default"), retry=FAST, batch_calls=False) as client:
        with pytest.raises(ResourceExhaustedError):
            await client.start_workflow("Greet", id="w1", task_queue="q")
    assert len(server.seen[f"{ROOT}/workflows"]) == FAST.attempts


async def test_a_throttled_read_is_retried_within_the_budget_then_raises_a_typed_error(
        throttling: tuple[Throttling, str]) -> None:
    server, url = throttling
    server.refuse, server.retry_after_ms = 100, 50
    async with Client(HttpTransport(url, "default"), retry=FAST) as client:
        with pytest.raises(ResourceExhaustedError) as caught:
            await client.get_workflow_handle("w1").describe()
    err = caught.value
    assert (err.status, err.namespace, err.limit, err.limit_value, err.retry_after) == (429, "default", "rps", 5, 0.05)
    assert isinstance(err, RPCError) and err.retryable
    assert len(server.seen[f"{ROOT}/workflows/w1"]) == FAST.attempts


async def test_describe_and_history_ride_out_a_busy_frontend(busy: tuple[BusyFrontend, str]) -> None:
    server, url = busy
    server.refuse, server.retry_after = 1, "0.1"
    async with Client(HttpTransport(url, "default"), retry=FAST) as client:
        handle = client.get_workflow_handle("w1")
        assert (await handle.describe())["run_id"] == "run-1"
        assert await handle.history() == []
    assert len(server.seen[f"{ROOT}/workflows/w1"]) == 2
    assert len(server.seen[f"{ROOT}/workflows/w1/history"]) == 2


@workflow.defn(name="Idle")
class Idle:
    """A workflow for workers whose polls are all that is looked at."""

    @workflow.run
    async def run(self) -> None:
        return None


async def test_a_worker_backs_off_on_throttled_polls_and_is_not_refused(
        throttling: tuple[Throttling, str]) -> None:
    server, url = throttling
    # One more than REFUSALS_BEFORE_STOPPING polls, each waiting the asked 100 ms (the poller's
    # floor), doubling.
    server.refuse, server.retry_after_ms = REFUSALS_BEFORE_STOPPING + 1, 100

    async with Client(HttpTransport(url, "default")) as client:
        worker = Worker(client, task_queue="q", workflows=[Idle], workflow_pollers=1)
        running = asyncio.ensure_future(worker.run())
        path = f"{ROOT}/task-queues/q/workflow-tasks/poll"
        await eventually(lambda: len(server.seen.get(path, ())) > server.refuse, timeout=20)
        assert not running.done()  # no WorkerRefusedError: a 429 is not a refusal
        refused = server.seen[path][:server.refuse]
        # The poller waited the frontend's retry_after_ms, doubling while the throttling lasted.
        gaps = [later - earlier for (earlier, _), (later, _) in itertools.pairwise(refused)]
        assert all(gap >= 0.1 * 2 ** i - 0.01 for i, gap in enumerate(gaps)), gaps
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running


@pytest.mark.parametrize(("field", "value"), [
    ("first", -1.0), ("first", 0.0), ("first", float("nan")), ("factor", 0.5), ("factor", float("inf")),
    ("cap", 0.01), ("within", 0.0), ("within", -5.0), ("attempts", -1), ("attempts", 1.5), ("attempts", True)])
def test_a_backoff_that_would_retry_in_a_tight_loop_is_refused_naming_its_field(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=f"Backoff.{field} must be"):
        Backoff(**{field: value})  # type: ignore[arg-type]


@dataclass
class Slow:
    """A frontend stand-in that holds the first ``slow_first`` requests longer than the
    client waits (as a loaded frontend did), then answers at once."""

    slow_first: int = 1
    hold: float = 1.0
    bodies: list[Any] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.bodies.append(await request.json())
        if len(self.bodies) <= self.slow_first:
            await asyncio.sleep(self.hold)
        return web.json_response({"run_id": "run-1"})


async def test_an_attempt_that_timed_out_past_the_budget_is_tried_once_more_with_its_request_id() -> None:
    # One attempt (0.3 s) outlasts the whole budget (0.1 s): a slow frontend, not a dead one,
    # and the request id makes the second try safe.
    server = Slow(slow_first=1)
    runner, url = await _serve(server.handle)
    try:
        async with Client(HttpTransport(url, "default"),
                          retry=Backoff(attempts=0, within=0.1, first=0.01, cap=0.05)) as client:
            answer = await client._idempotent("/workflows", {"request_id": "r-1"}, timeout=0.3, what="test")
    finally:
        await runner.cleanup()
    assert answer == {"run_id": "run-1"}
    assert [b["request_id"] for b in server.bodies] == ["r-1", "r-1"]


async def test_the_try_an_attempt_earned_past_the_budget_is_its_last() -> None:
    server = Slow(slow_first=100)
    runner, url = await _serve(server.handle)
    try:
        async with Client(HttpTransport(url, "default"),
                          retry=Backoff(attempts=0, within=0.1, first=0.01, cap=0.05)) as client:
            with pytest.raises(RPCError) as caught:
                await client._idempotent("/workflows", {"request_id": "r-1"}, timeout=0.3, what="test")
    finally:
        await runner.cleanup()
    assert caught.value.status == 0 and isinstance(caught.value.__cause__, TimeoutError)
    assert len(server.bodies) == 2  # the first, and the one more it earned: no more past the budget


@dataclass
class BusyFrontend:
    """A frontend stand-in answering 503 with ``retry_after`` (as engine.Busy does) to every
    request until ``refuse`` of them to a path were refused or ``busy_for`` seconds have
    passed since the first (whichever is set), then as Flaky would; an update is answered
    completed. Records each request's time and body."""

    retry_after: str | None = "1"
    refuse: int | None = None
    busy_for: float | None = None
    seen: dict[str, list[tuple[float, Any]]] = field(default_factory=dict)
    began: float | None = None

    def busy(self, path: str) -> bool:
        now = asyncio.get_running_loop().time()
        self.began = now if self.began is None else self.began
        if self.refuse is not None:
            return len(self.seen[path]) <= self.refuse
        return self.busy_for is not None and now - self.began < self.busy_for

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.json() if request.method == "POST" else None
        self.seen.setdefault(request.path, []).append((asyncio.get_running_loop().time(), body))
        if self.busy(request.path):
            headers = {"Retry-After": self.retry_after} if self.retry_after is not None else None
            return web.json_response({"error": "Unavailable", "message": "history did not answer"}, status=503,
                                     headers=headers)
        if request.path.endswith("/poll"):
            await asyncio.sleep(0.05)
            return web.json_response({"tasks": []})
        if request.path.endswith("/update"):
            return web.json_response({"stage": "completed", "result": '"done"', "run_id": "run-1"})
        return web.json_response({"run_id": "run-1"})


@pytest.fixture
async def busy() -> AsyncIterator[tuple[BusyFrontend, str]]:
    server = BusyFrontend()
    runner, url = await _serve(server.handle)
    try:
        yield server, url
    finally:
        await runner.cleanup()


def _gaps(seen: list[tuple[float, Any]]) -> list[float]:
    return [later - earlier for (earlier, _), (later, _) in itertools.pairwise(seen)]


async def test_a_busy_frontends_retry_after_is_waited_on_a_503(busy: tuple[BusyFrontend, str]) -> None:
    server, url = busy
    server.refuse, server.retry_after = 2, "0.3"
    async with Client(HttpTransport(url, "default"), retry=FAST, batch_calls=False) as client:
        await client.get_workflow_handle("w1").signal("poke")
    sent = server.seen[f"{ROOT}/workflows/w1/signal"]
    assert len(sent) == 3 and len({body["request_id"] for _, body in sent}) == 1
    # Each retry waited the frontend's Retry-After (0.3 s), not the client's 0.01-0.05 s backoff.
    assert all(gap >= 0.29 for gap in _gaps(sent)), _gaps(sent)


@pytest.mark.parametrize("retry_after", ["3600", "Retry-After-ms"])
async def test_a_retry_after_longer_than_the_budget_is_capped_at_what_is_left_of_it(
        busy: tuple[BusyFrontend, str], retry_after: str) -> None:
    """A broken or hostile server asking an hour must not park the client: it waits what is
    left of its budget and tries once more at its end, then gives up."""
    server, url = busy
    server.refuse = 100
    loop = asyncio.get_running_loop()
    began = loop.time()
    retry = Backoff(attempts=0, within=1.5, first=0.01, cap=0.05)  # the first try well within it, however loaded
    async with Client(HttpTransport(url, "default"), retry=retry, batch_calls=False) as client:
        if retry_after == "3600":
            server.retry_after = "3600"
            with pytest.raises(RPCError) as caught:
                await client.get_workflow_handle("w1").signal("poke")
            assert caught.value.status == 503 and caught.value.retry_after == 3600
        else:  # a 429 whose body asks 50 minutes
            throttled = Throttling(refuse=100, retry_after_ms=3_000_000)
            runner, other = await _serve(throttled.handle)
            try:
                async with Client(HttpTransport(other, "default"), retry=retry, batch_calls=False) as slowed:
                    with pytest.raises(ResourceExhaustedError):
                        await slowed.get_workflow_handle("w1").signal("poke")
            finally:
                await runner.cleanup()
            server.seen[f"{ROOT}/workflows/w1/signal"] = throttled.seen[f"{ROOT}/workflows/w1/signal"]
    assert 1.4 <= loop.time() - began < 5
    assert len(server.seen[f"{ROOT}/workflows/w1/signal"]) == 2  # the first, and one at the budget's end


async def test_a_busy_answer_without_retry_after_keeps_the_clients_backoff(busy: tuple[BusyFrontend, str]) -> None:
    server, url = busy
    server.refuse, server.retry_after = 3, None
    async with Client(HttpTransport(url, "default"), retry=FAST, batch_calls=False) as client:
        await client.get_workflow_handle("w1").signal("poke")
    assert all(gap < 0.5 for gap in _gaps(server.seen[f"{ROOT}/workflows/w1/signal"]))


@pytest.mark.parametrize("status", [503, 0])
async def test_terminate_is_retried_with_one_request_id_drawn_per_call(flaky: tuple[Flaky, str], status: int) -> None:
    server, url = flaky
    server.fail_first, server.status = 2, status
    async with Client(HttpTransport(url, "default"), retry=FAST) as client:
        handle = client.get_workflow_handle("w1")
        await handle.terminate("done")
        await handle.terminate("again", request_id="mine")
    bodies = server.bodies[f"{ROOT}/workflows/w1/terminate"]
    assert len(bodies) == 4
    assert len({b["request_id"] for b in bodies[:3]}) == 1 and bodies[3]["request_id"] == "mine"
    assert bodies[0]["request_id"] != "mine"


async def test_a_worker_waits_a_busy_frontends_retry_after_between_polls(busy: tuple[BusyFrontend, str]) -> None:
    server, url = busy
    # 0.5 s: past the poller's own first waits (0.1 s, 0.2 s, jittered by up to a fifth).
    server.refuse = refused = 2
    server.retry_after = "0.5"

    async with Client(HttpTransport(url, "default")) as client:
        worker = Worker(client, task_queue="q", workflows=[Idle], workflow_pollers=1)
        running = asyncio.ensure_future(worker.run())
        path = f"{ROOT}/task-queues/q/workflow-tasks/poll"
        await eventually(lambda: len(server.seen.get(path, ())) > refused, timeout=20)
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running
    gaps = _gaps(server.seen[path][:refused + 1])
    assert all(gap >= 0.49 for gap in gaps), gaps  # not the poller's own 0.1 s, 0.2 s


async def test_an_update_wait_without_a_timeout_outlasts_the_retry_budget(busy: tuple[BusyFrontend, str]) -> None:
    """result() and an update's wait follow one rule: without a timeout, they wait for the
    outcome through an outage however long, not the client's retry budget."""
    server, url = busy
    server.busy_for, server.retry_after = 0.75, None  # five times the budget
    async with Client(HttpTransport(url, "default"), retry=Backoff(attempts=0, within=0.15, first=0.01, cap=0.05),
                      batch_calls=False) as client:
        update = client.get_workflow_handle("w1").get_update_handle("u-1")
        assert await asyncio.wait_for(update.result(), 20) == "done"
    asks = server.seen[f"{ROOT}/workflows/w1/update"]
    assert asks[-1][0] - asks[0][0] >= 0.7
    assert {body["update_id"] for _, body in asks} == {"u-1"}


async def test_an_update_wait_with_a_timeout_ends_at_it_through_an_outage(busy: tuple[BusyFrontend, str]) -> None:
    server, url = busy
    server.busy_for = 60
    loop = asyncio.get_running_loop()
    async with Client(HttpTransport(url, "default"), batch_calls=False) as client:
        began = loop.time()
        with pytest.raises(TimeoutError):
            await client.get_workflow_handle("w1").get_update_handle("u-1").result(timeout=0.5)
    assert loop.time() - began < 3


async def test_cancelling_an_update_wait_through_an_outage_ends_it_at_once(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="kadence._client")
    loop = asyncio.get_running_loop()
    async with Client(HttpTransport(f"http://127.0.0.1:{_free_port()}", "default"),
                      retry=Backoff(attempts=0, within=0.2, first=0.01, cap=0.05)) as client:
        waiting = asyncio.ensure_future(client.get_workflow_handle("w1").get_update_handle("u-1").result())
        # Past the client's retry budget: the wait goes on, asking again.
        await eventually(lambda: any("waiting for the completed outcome" in r.getMessage() for r in caplog.records),
                         timeout=10)
        assert not waiting.done()
        began = loop.time()
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        assert loop.time() - began < 0.5
