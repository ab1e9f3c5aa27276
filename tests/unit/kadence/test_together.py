"""A client's concurrent calls sent together (kadence/_together.py) against a local aiohttp
server standing in for the frontend's start and result calls: a lone call goes alone,
concurrent ones go together and each gets its own answer as its line arrives, and an answer
cut short, refused or unknown never loses a start (the rest go alone, with the same request
id)."""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web

from kadence import Client
from kadence._http import MIN_RETRY_AFTER_S, HttpTransport
from kadence._retry import Backoff
from kadence._together import Batcher
from kadence.exceptions import ResourceExhaustedError, RPCError, WorkflowAlreadyStartedError

pytestmark = pytest.mark.timeout(30)

ROOT = "/api/v1/namespaces/default"


@dataclass
class Frontend:
    """Answers starts: each run id is "run-" + the workflow id; ids starting with "dup" are
    refused with 409. ``cut_after`` ends a batch answer after that many items, without its
    closing line; ``batch_status`` answers the whole batch call with that error."""

    cut_after: int | None = None
    batch_status: int | None = None
    batch_error: str = "NotFound"
    throttle_batches: int = 0  # batch calls answered 429 (over the namespace's limit) first
    retry_after_ms: int = 200  # what those 429s ask to wait
    throttle_results: int = 0  # result waits answered 429 (1.5 s) first
    busy_wait_ms: int | None = None  # the retry_after_ms of a "busy" item's 503 line
    alone_times: dict[str, float] = field(default_factory=dict)
    result_times: list[float] = field(default_factory=list)
    batch_times: list[float] = field(default_factory=list)
    alone: list[dict[str, Any]] = field(default_factory=list)
    batches: list[list[dict[str, Any]]] = field(default_factory=list)
    results_alone: list[str] = field(default_factory=list)
    result_batches: list[list[dict[str, Any]]] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)

    @staticmethod
    def answer(item: dict[str, Any], together: bool = False) -> tuple[int, dict[str, Any]]:
        """``together``: the item came in a batch call, where ids starting with "busy" meet an
        outage (503 on their own line); alone they start."""
        wid = item["workflow_id"]
        if wid.startswith("dup"):
            return 409, {"error": "WorkflowAlreadyStarted", "message": "running", "field": "workflow_id"}
        if together and wid.startswith("busy"):
            return 503, {"error": "Unavailable", "message": "the database is unavailable; retry later"}
        return 201, {"run_id": f"run-{wid}", "workflow_id": wid}

    async def start(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.alone.append(body)
        self.alone_times[body["workflow_id"]] = asyncio.get_running_loop().time()
        if body["workflow_id"].startswith("hold"):
            await self.release.wait()
        status, answer = self.answer(body)
        return web.json_response(answer, status=status)

    async def start_batch(self, request: web.Request) -> web.StreamResponse:
        starts = (await request.json())["starts"]
        self.batches.append(starts)
        self.batch_times.append(asyncio.get_running_loop().time())
        if len(self.batches) <= self.throttle_batches:
            return web.json_response({"error": "ResourceExhausted", "message": "over", "namespace": "default",
                                      "limit": "rps", "limit_value": 10, "retry_after_ms": self.retry_after_ms}, status=429,
                                     headers={"Retry-After": "1"})
        if self.batch_status is not None:
            return web.json_response({"error": self.batch_error, "message": "no"}, status=self.batch_status)
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        await response.write(b'{"results":[\n')
        # Answered last to first, as results come in the order they finish.
        for n, index in enumerate(reversed(range(len(starts)))):
            if self.cut_after is not None and n == self.cut_after:
                return response  # cut short: no closing line
            status, answer = self.answer(starts[index], together=True)
            if status == 503 and self.busy_wait_ms is not None:
                answer = {**answer, "retry_after_ms": self.busy_wait_ms}
            line = {"index": index, "status": status, **({"answer": answer} if status < 400 else answer)}
            await response.write((b"," if n else b"") + json.dumps(line).encode() + b"\n")
        await response.write(b"]}\n")
        return response


    async def result(self, request: web.Request) -> web.StreamResponse:
        wid = request.match_info["wid"]
        self.results_alone.append(wid)
        self.result_times.append(asyncio.get_running_loop().time())
        if len(self.results_alone) <= self.throttle_results:
            return web.json_response({"error": "ResourceExhausted", "message": "over", "namespace": "default",
                                      "limit": "rps", "limit_value": 1, "retry_after_ms": 1500}, status=429)
        return web.json_response({"status": "Completed", "result": json.dumps(wid)})

    async def result_batch(self, request: web.Request) -> web.StreamResponse:
        waits = (await request.json())["waits"]
        self.result_batches.append(waits)
        lines = [json.dumps({"index": i, "status": 200, "answer": {"status": "Completed",
                                                                    "result": json.dumps(w["workflow_id"])}})
                 for i, w in enumerate(waits)]
        return web.Response(body=("{\"results\":[\n" + "\n,".join(lines) + "\n]}\n").encode(),
                            content_type="application/json")


@pytest.fixture
async def frontend() -> AsyncIterator[tuple[Frontend, str]]:
    fe = Frontend()
    app = web.Application()
    app.router.add_post(ROOT + "/workflows", fe.start)
    app.router.add_post(ROOT + "/workflow-starts", fe.start_batch)
    app.router.add_get(ROOT + "/workflows/{wid}/result", fe.result)
    app.router.add_post(ROOT + "/workflow-results", fe.result_batch)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield fe, f"http://127.0.0.1:{port}"
    finally:
        fe.release.set()
        await runner.cleanup()


def _client(url: str) -> Client:
    return Client(HttpTransport(url, "default"), retry=Backoff(attempts=2, within=5, first=0.01, cap=0.05))


async def _start_many(client: Client, ids: list[str]) -> list[Any]:
    handles = await asyncio.gather(*(client.start_workflow("W", id=i, task_queue="q") for i in ids),
                                   return_exceptions=True)
    return [h if isinstance(h, BaseException) else h.run_id for h in handles]


async def test_a_lone_start_goes_alone(frontend: tuple[Frontend, str]) -> None:
    fe, url = frontend
    async with _client(url) as client:
        for i in range(3):
            handle = await client.start_workflow("W", id=f"w{i}", task_queue="q")
            assert handle.run_id == f"run-w{i}"
    assert [b["workflow_id"] for b in fe.alone] == ["w0", "w1", "w2"] and fe.batches == []


async def test_concurrent_starts_go_together_each_with_its_own_answer(frontend: tuple[Frontend, str]) -> None:
    fe, url = frontend
    async with _client(url) as client:
        got = await _start_many(client, ["w0", "w1", "dup2", "w3"])
    assert got[0] == "run-w0" and got[1] == "run-w1" and got[3] == "run-w3"
    assert isinstance(got[2], WorkflowAlreadyStartedError)
    assert [b["workflow_id"] for b in fe.alone] == ["w0"]  # the first, while nothing else was in flight
    assert [[s["workflow_id"] for s in b] for b in fe.batches] == [["w1", "dup2", "w3"]]


async def test_batches_hold_at_most_max_batch_items(frontend: tuple[Frontend, str]) -> None:
    fe, url = frontend
    client = _client(url)
    single = client._start_alone
    client._batchers["/workflow-starts"] = Batcher(client.transport, single, "/workflow-starts", "starts",  # type: ignore[arg-type]
                                                   max_batch=2)
    try:
        got = await _start_many(client, [f"w{i}" for i in range(6)])
    finally:
        await client.close()
    assert got == [f"run-w{i}" for i in range(6)]
    assert [len(b) for b in fe.batches] == [2, 2, 1]


async def test_an_answer_cut_short_sends_the_rest_alone_with_their_request_ids(
        frontend: tuple[Frontend, str]) -> None:
    fe, url = frontend
    fe.cut_after = 2
    async with _client(url) as client:
        got = await _start_many(client, [f"w{i}" for i in range(6)])
    assert got == [f"run-w{i}" for i in range(6)]
    (batch,) = fe.batches
    # w5 and w4 were answered in the batch; w1-w3 went again alone, each with the request id it had.
    again = {b["workflow_id"]: b["request_id"] for b in fe.alone[1:]}
    assert sorted(again) == ["w1", "w2", "w3"]
    assert all(again[s["workflow_id"]] == s["request_id"] for s in batch if s["workflow_id"] in again)


async def test_an_item_answered_unavailable_goes_again_alone_with_its_request_id(
        frontend: tuple[Frontend, str]) -> None:
    # An outage met by one item of a batch is as transient as one met by a lone start, which
    # the client retries; the batch's other answers stand.
    fe, url = frontend
    async with _client(url) as client:
        got = await _start_many(client, ["w0", "busy1", "w2", "busy3", "dup4"])
    assert got[:4] == ["run-w0", "run-busy1", "run-w2", "run-busy3"]
    assert isinstance(got[4], WorkflowAlreadyStartedError)
    (batch,) = fe.batches  # w0 went alone, the first call in flight; the rest together
    again = {b["workflow_id"]: b["request_id"] for b in fe.alone[1:]}
    assert sorted(again) == ["busy1", "busy3"]
    assert all(again[s["workflow_id"]] == s["request_id"] for s in batch if s["workflow_id"] in again)


async def test_an_item_answered_unavailable_goes_alone_after_the_wait_its_line_asks(
        frontend: tuple[Frontend, str]) -> None:
    # A line has no Retry-After header: its retry_after_ms says what the lone call's would.
    fe, url = frontend
    fe.busy_wait_ms = 300
    async with _client(url) as client:
        got = await _start_many(client, ["w0", "busy1", "w2"])
    assert got == ["run-w0", "run-busy1", "run-w2"]
    assert fe.alone_times["busy1"] - fe.batch_times[0] >= 0.3


@pytest.mark.parametrize(("status", "error", "stays"), [(404, "NotFound", False), (405, "MethodNotAllowed", False),
                                                        (503, "Unavailable", True),
                                                        (404, "NamespaceNotFound", True)])
async def test_a_refused_batch_call_sends_each_alone(frontend: tuple[Frontend, str], status: int, error: str,
                                                     stays: bool) -> None:
    """A frontend without the batch call (404/405) is not asked again; other refusals are
    answered by sending each start alone, which then answers for itself."""
    fe, url = frontend
    fe.batch_status, fe.batch_error = status, error
    async with _client(url) as client:
        assert await _start_many(client, ["w0", "w1", "w2"]) == ["run-w0", "run-w1", "run-w2"]
        assert sorted(b["workflow_id"] for b in fe.alone) == ["w0", "w1", "w2"]
        await _start_many(client, ["w3", "w4", "w5"])
    assert len(fe.batches) == (2 if stays else 1)


async def test_a_caller_that_stops_waiting_costs_the_others_nothing(frontend: tuple[Frontend, str]) -> None:
    fe, url = frontend
    async with _client(url) as client:
        first = asyncio.ensure_future(client.start_workflow("W", id="hold-0", task_queue="q"))
        await asyncio.sleep(0.05)  # in flight alone, held by the frontend
        others = [asyncio.ensure_future(client.start_workflow("W", id=f"w{i}", task_queue="q")) for i in range(3)]
        gone = asyncio.ensure_future(client.start_workflow("W", id="w-gone", task_queue="q"))
        await asyncio.sleep(0)
        gone.cancel()
        assert [h.run_id for h in await asyncio.gather(*others)] == ["run-w0", "run-w1", "run-w2"]
        fe.release.set()
        assert (await first).run_id == "run-hold-0"
        with pytest.raises(asyncio.CancelledError):
            await gone


async def test_a_bad_streamed_answer_is_not_taken(frontend: tuple[Frontend, str]) -> None:
    """A 200 answer that is not a streamed one (a proxy's page, say) is refused clearly."""
    _, url = frontend
    transport = HttpTransport(url, "default")
    try:
        with pytest.raises(RPCError) as err:
            async for _ in transport.stream("POST", "/workflows", body={"workflow_id": "w", "task_queue": "q"}):
                pass
        assert err.value.error_type == "BadResponse"
    finally:
        await transport.close()


async def test_concurrent_result_waits_go_together(frontend: tuple[Frontend, str]) -> None:
    fe, url = frontend
    async with _client(url) as client:
        assert await client.get_workflow_handle("r0").result() == "r0"
        handles = [client.get_workflow_handle(f"r{i}") for i in range(1, 6)]
        assert await asyncio.gather(*(h.result() for h in handles)) == [f"r{i}" for i in range(1, 6)]
    assert fe.results_alone == ["r0", "r1"]
    assert [[w["workflow_id"] for w in b] for b in fe.result_batches] == [["r2", "r3", "r4", "r5"]]
    assert all(w["wait_seconds"] > 0 and w["run_id"] is None for w in fe.result_batches[0])


async def test_batch_calls_off_sends_every_call_alone(frontend: tuple[Frontend, str]) -> None:
    fe, url = frontend
    client = Client(HttpTransport(url, "default"), batch_calls=False)
    async with client:
        await _start_many(client, ["w0", "w1", "w2"])
        await asyncio.gather(*(client.get_workflow_handle(f"r{i}").result() for i in range(3)))
    assert len(fe.alone) == 3 and fe.batches == [] and fe.result_batches == [] and len(fe.results_alone) == 3


async def test_a_throttled_batch_goes_again_together_after_the_frontends_wait(
        frontend: tuple[Frontend, str]) -> None:
    fe, url = frontend
    fe.throttle_batches = 2
    async with _client(url) as client:
        assert await _start_many(client, ["w0", "w1", "w2", "w3"]) == ["run-w0", "run-w1", "run-w2", "run-w3"]
    # Not three calls alone refused in turn: the same batch three times, 0.2 s apart at least.
    assert [[s["workflow_id"] for s in b] for b in fe.batches] == [["w1", "w2", "w3"]] * 3
    assert [b["workflow_id"] for b in fe.alone] == ["w0"]
    assert len({s["request_id"] for b in fe.batches for s in b}) == 3
    assert all(later - earlier >= 0.19 for earlier, later in itertools.pairwise(fe.batch_times))


async def _three_starts_throttled_within(url: str, seconds: float) -> list[Any]:
    """Three starts from a client whose batcher waits out refusals for ``seconds`` at most."""
    client = _client(url)
    client._batchers["/workflow-starts"] = Batcher(client.transport, client._start_alone,  # type: ignore[arg-type]
                                                   "/workflow-starts", "starts", throttled_within=seconds)
    try:
        return await _start_many(client, ["w0", "w1", "w2"])
    finally:
        await client.close()


async def test_a_batch_throttled_past_the_retry_budget_raises_the_refusal(frontend: tuple[Frontend, str]) -> None:
    fe, url = frontend
    fe.throttle_batches = 1000
    got = await _three_starts_throttled_within(url, 0.5)
    assert got[0] == "run-w0"
    assert all(isinstance(g, ResourceExhaustedError) and g.limit == "rps" for g in got[1:])
    assert 2 <= len(fe.batches) <= 4 and [b["workflow_id"] for b in fe.alone] == ["w0"]


async def test_a_429_asking_for_no_wait_does_not_make_the_client_resend_in_a_tight_loop(
        frontend: tuple[Frontend, str]) -> None:
    # A proxy, or a frontend whose bucket is a hair short of a token, may say 0 ms.
    fe, url = frontend
    fe.throttle_batches, fe.retry_after_ms = 1000, 0
    got = await _three_starts_throttled_within(url, 0.5)
    assert all(isinstance(g, ResourceExhaustedError) for g in got[1:])
    assert len(fe.batches) <= 0.5 / MIN_RETRY_AFTER_S + 2, len(fe.batches)


async def test_a_throttled_result_wait_asks_again_after_the_frontends_wait(frontend: tuple[Frontend, str]) -> None:
    fe, url = frontend
    fe.throttle_results = 1
    async with _client(url) as client:
        assert await client.get_workflow_handle("w").result() == "w"
    # Not every 0.5 s, each refused in turn: once, after the 1.5 s the 429 asked for.
    assert len(fe.result_times) == 2 and fe.result_times[1] - fe.result_times[0] >= 1.4
